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
