//! The hub's TLS edge: revoked certificates are refused on new connections and their open
//! streams are closed; reflection answers authenticated callers only.

use efa_domain::model::release::UpdatePolicy;
use efa_proto::v1 as pb;
use efa_tests::*;
use std::time::Duration;
use tokio_stream::StreamExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_certificate_is_refused_and_its_streams_are_closed() {
    let mut w = World::new().await;
    // A CRL exists from the start (revoking a certificate nobody uses any more), so the hub
    // is restarted with --crl.
    let pki = w.fed.pki_dir();
    let old = w.fed.client_tls(&kommune(ESSEN)).unwrap();
    efa_hub::pki::revoke(&pki, &old.cert).unwrap();
    w.fed.restart_hub().await.unwrap();
    let essen = async {
        let ch = w.fed.channel(&kommune(ESSEN)).await.map_err(|e| e.to_string())?;
        CatalogServiceClient::new(ch).who_am_i(pb::WhoAmIRequest {}).await.map_err(|e| e.to_string())
    };
    assert!(essen.await.is_err(), "a certificate in the CRL is refused");

    w.register(NRW, "wohngeld-nrw", "10092").await.unwrap();
    let node = w.node(DORTMUND, &[Sub { service: "wohngeld-nrw", policy: UpdatePolicy::Auto }]);
    node.register_subscriptions().await.unwrap();
    let dortmund = w.channel(&kommune(DORTMUND)).await;
    let mut stream = SubscriptionServiceClient::new(dortmund.clone())
        .watch_events(pb::WatchEventsRequest { after_seq: 0 })
        .await
        .unwrap()
        .into_inner();
    // Caught up: the stream is live.
    loop {
        let e = stream.next().await.unwrap().unwrap();
        if matches!(e.kind, Some(pb::event::Kind::CaughtUp(_))) {
            break;
        }
    }

    // Dortmund's certificate is stolen and revoked.
    let cert = w.fed.client_tls(&kommune(DORTMUND)).unwrap().cert;
    efa_hub::pki::revoke(&pki, &cert).unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match stream.next().await {
                None | Some(Err(_)) => return,
                Some(Ok(_)) => continue,
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the open stream of a revoked certificate is closed within seconds");
    let again = async {
        let ch = w.fed.channel(&kommune(DORTMUND)).await.map_err(|e| e.to_string())?;
        CatalogServiceClient::new(ch).who_am_i(pb::WhoAmIRequest {}).await.map_err(|e| e.to_string())
    };
    assert!(again.await.is_err(), "a new connection with the revoked certificate is refused");
    // Everyone else carries on.
    let me = CatalogServiceClient::new(w.channel(&operator()).await)
        .who_am_i(pb::WhoAmIRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(me.role, "operator");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_answers_authenticated_callers_and_lists_health() {
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    let w = World::new().await;
    let list = || {
        tokio_stream::iter(vec![ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        }])
    };
    // Without a client certificate: refused.
    let no_cert = tonic::transport::Endpoint::from_shared(w.fed.url())
        .unwrap()
        .tls_config(
            tonic::transport::ClientTlsConfig::new()
                .ca_certificate(tonic::transport::Certificate::from_pem(
                    std::fs::read(w.fed.pki_dir().join("ca.pem")).unwrap(),
                ))
                .domain_name("localhost"),
        )
        .unwrap()
        .connect()
        .await
        .unwrap();
    let refused = ServerReflectionClient::new(no_cert.clone()).server_reflection_info(list()).await;
    let refused = match refused {
        Err(s) => s,
        Ok(r) => r.into_inner().next().await.unwrap().unwrap_err(),
    };
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);
    // Health still answers without a certificate.
    let health = tonic_health::pb::health_client::HealthClient::new(no_cert)
        .check(tonic_health::pb::HealthCheckRequest { service: String::new() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(health.status, tonic_health::pb::health_check_response::ServingStatus::Serving as i32);

    // With one: the EfA services and health are listed.
    let mut answers = ServerReflectionClient::new(w.channel(&kommune(DORTMUND)).await)
        .server_reflection_info(list())
        .await
        .unwrap()
        .into_inner();
    let Some(MessageResponse::ListServicesResponse(services)) = answers.next().await.unwrap().unwrap().message_response
    else {
        panic!("expected a service list")
    };
    let names: Vec<String> = services.service.into_iter().map(|s| s.name).collect();
    for expected in ["efa.v1.CatalogService", "efa.v1.ReportService", "grpc.health.v1.Health"] {
        assert!(names.iter().any(|n| n == expected), "{expected} missing in {names:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_says_in_words_what_is_wrong_with_a_certificate() {
    use efa_cli::doctor::{check_connection, check_files};
    use efa_proto::tls::ClientTlsFiles;
    let w = World::new().await;
    let pki = w.fed.pki_dir();
    let good = w.fed.client_tls(&kommune(DORTMUND)).unwrap();
    let fails = |files: &ClientTlsFiles| -> Vec<String> {
        check_files(files).into_iter().filter(|f| !f.ok).map(|f| f.text).collect()
    };
    assert!(fails(&good).is_empty(), "{:?}", fails(&good));
    let ok = check_connection(&w.fed.url(), &good).await;
    assert!(ok.ok && ok.text.contains("kommune 05913000"), "{}", ok.text);

    // A key of another pair.
    let essen = w.fed.client_tls(&kommune(ESSEN)).unwrap();
    let mixed = ClientTlsFiles { key: essen.key.clone(), ..good.clone() };
    assert!(fails(&mixed).iter().any(|f| f.contains("does not belong to the certificate")), "{:?}", fails(&mixed));

    // A certificate from another CA.
    let other = w.dir.path().join("other-pki");
    efa_hub::pki::init(&other, &[]).unwrap();
    let foreign = efa_hub::pki::issue(&other, &kommune(DORTMUND), "Dortmund").unwrap();
    let foreign = ClientTlsFiles { cert: foreign.cert, key: foreign.key, ca: good.ca.clone() };
    assert!(fails(&foreign).iter().any(|f| f.contains("comes from another CA")), "{:?}", fails(&foreign));

    // The CA certificate itself used as a client certificate.
    let ca_as_client = ClientTlsFiles { cert: pki.join("ca.pem"), key: pki.join("ca.key"), ca: good.ca.clone() };
    let f = fails(&ca_as_client);
    assert!(f.iter().any(|f| f.contains("is a CA certificate")), "{f:?}");
    assert!(f.iter().any(|f| f.contains("no efa:// identity")), "{f:?}");

    // A CA file the hub's certificate does not chain to.
    let wrong_ca = ClientTlsFiles { ca: other.join("ca.pem"), ..good.clone() };
    let c = check_connection(&w.fed.url(), &wrong_ca).await;
    assert!(!c.ok && c.text.contains("not issued by the CA"), "{}", c.text);

    // Nothing there at all.
    let missing = ClientTlsFiles { cert: pki.join("nope.pem"), ..good };
    assert!(fails(&missing)[0].contains("cannot be read"));
}

/// Connections that never finish their TLS handshake each hold a slot for the handshake
/// timeout (10 s). From one address they get at most 32 slots (the rest wait), so a flood
/// of 700 from 127.0.0.2 leaves a Kommune at 127.0.0.1 served at once instead of after the
/// flood's handshakes time out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unfinished_handshakes_from_one_address_do_not_lock_others_out() {
    let w = World::new().await;
    let hub: std::net::SocketAddr = w.fed.url().trim_start_matches("https://").parse().unwrap();
    let mut idle = Vec::new();
    for _ in 0..700 {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
        // Beyond the per-address bound the hub closes at once; connecting still succeeds.
        if let Ok(Ok(s)) = tokio::time::timeout(Duration::from_secs(1), socket.connect(hub)).await {
            idle.push(s);
        }
    }
    // More than the hub's 512 handshake slots and the kernel's accept queue together: the
    // hub keeps accepting, because waiting connections hold no slot.
    assert_eq!(idle.len(), 700, "the hub stopped accepting during the flood");
    let whoami = tokio::time::timeout(Duration::from_secs(5), async {
        CatalogServiceClient::new(w.channel(&kommune(DORTMUND)).await).who_am_i(pb::WhoAmIRequest {}).await
    })
    .await
    .expect("a Kommune at another address is served while the flood's handshakes are pending")
    .unwrap()
    .into_inner();
    assert_eq!(whoami.key, DORTMUND);
    drop(idle);
}
