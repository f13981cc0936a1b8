//! What an attacker (or a careless script) sent from outside, and what it now gets: each
//! case found by driving the hub with a Python grpcio client, kept here so it stays fixed.

use efa_proto::v1 as pb;
use efa_tests::*;
use tonic::Code;

fn service(id: &str, title: &str, parameters: Vec<pb::ParameterSpec>) -> pb::RegisterServiceRequest {
    pb::RegisterServiceRequest {
        id: id.into(),
        ozg_id: "10092".into(),
        leistungsschluessel: String::new(),
        title: title.into(),
        description: String::new(),
        parameters,
        adoption_public: false,
        more_leistungsschluessel: vec![],
    }
}

fn refused<T: std::fmt::Debug>(what: &str, r: Result<tonic::Response<T>, tonic::Status>, code: Code, needle: &str) {
    let status = r.expect_err(what);
    assert_eq!(status.code(), code, "{what}: {}", status.message());
    assert!(status.message().contains(needle), "{what}: {:?} should mention {needle:?}", status.message());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_characters_unbounded_schemas_and_unknown_filters_are_refused() {
    let w = World::new().await;
    let mut catalog = CatalogServiceClient::new(w.channel(&land(NRW)).await);

    // A NUL or an escape sequence in a title breaks terminals and CSV exports; a bidi
    // override makes it display as something else.
    for (title, needle) in
        [("Wohn\0geld", "U+0000"), ("Wohngeld\x1b[2J", "U+001B"), ("Wohngeld \u{202E}dlegnhoW", "U+202E")]
    {
        refused(
            title,
            catalog.register_service(service("wohngeld-nrw", title, vec![])).await,
            Code::InvalidArgument,
            needle,
        );
    }
    // A parameter schema is bounded: 10,000 parameters were accepted before.
    let many: Vec<pb::ParameterSpec> = (0..65)
        .map(|i| pb::ParameterSpec {
            name: format!("p{i}"),
            kind: pb::ParameterKind::Text as i32,
            ..Default::default()
        })
        .collect();
    refused(
        "65 parameters",
        catalog.register_service(service("wohngeld-nrw", "Wohngeld", many)).await,
        Code::InvalidArgument,
        "limit of 64",
    );
    let huge = vec![pb::ParameterSpec {
        name: "purpose".into(),
        kind: pb::ParameterKind::Text as i32,
        max_length: u32::MAX,
        ..Default::default()
    }];
    refused(
        "max_length 2^32-1",
        catalog.register_service(service("wohngeld-nrw", "Wohngeld", huge)).await,
        Code::InvalidArgument,
        "limit of 10000",
    );
    // Further Leistungsschlüssel: each from LeiKa, none twice, at most 16.
    for (keys, needle) in [
        (vec!["99107023000001".to_string()], "not in the LeiKa catalogue"),
        (vec!["99107023017002".into(), "99107023017002".into()], "listed twice"),
        (vec!["99107023017002".to_string(); 17], "more than 16"),
        (vec!["0123".into()], "Leistungsschlüssel"),
    ] {
        let mut req = service("wohngeld-nrw", "Wohngeld", vec![]);
        req.more_leistungsschluessel = keys;
        refused(needle, catalog.register_service(req).await, Code::InvalidArgument, needle);
    }
    w.register(NRW, "wohngeld-nrw", "10092").await.unwrap();

    // A filter that matches nothing because of a typo is refused, not answered with [].
    let r = catalog
        .list_services(pb::ListServicesRequest { land_code: String::new(), themenfeld: "Famile & Kind".into() })
        .await;
    refused("unknown Themenfeld", r, Code::InvalidArgument, "not a Themenfeld");
    let r = catalog.list_services(pb::ListServicesRequest { land_code: "17".into(), themenfeld: String::new() }).await;
    refused("unknown Land", r, Code::NotFound, "Land 17");
    let r = ReportServiceClient::new(w.channel(&operator()).await)
        .coverage(pb::CoverageRequest { service_id: "wohngeld-nrw".into(), land_code: "99".into() })
        .await;
    refused("coverage of Land 99", r, Code::NotFound, "Land 99");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_that_cannot_be_told_apart_and_snapshots_from_the_future_are_refused() {
    let w = World::new().await;
    w.register(NRW, "wohngeld-nrw", "10092").await.unwrap();
    w.publish(NRW, "wohngeld-nrw", "1.0.0", &w.standard_bundle("1.0.0")).await.unwrap();

    // 1.0.0+evil has the same precedence as 1.0.0: two releases no node could tell apart.
    // `efa publish` refuses it locally; the hub refuses it from any other client too.
    let local = w.publish(NRW, "wohngeld-nrw", "1.0.0+evil", &w.standard_bundle("1.0.0+evil")).await.unwrap_err();
    assert!(local.to_string().contains("build metadata"), "{local}");
    let bundle = w.bundle("evil", &[("a.txt", "hello")]);
    let manifest = serde_json::to_vec(&serde_json::json!({
        "format": 1, "service_id": "wohngeld-nrw", "version": "1.0.0+evil", "channel": "stable", "land": NRW,
        "created_at_ms": 0,
        "files": [{"path": "a.txt", "size": 5, "digest": efa_domain::bundle::Digest::of(b"hello").to_string()}],
    }))
    .unwrap();
    let key = w.fed.signing_key(&NRW.parse().unwrap()).unwrap();
    let sig = key.sign(&manifest);
    let files = vec![bundle.join("a.txt")];
    let err =
        efa_cli::publish::publish_raw(w.channel(&land(NRW)).await, manifest, sig, String::new(), files, |_, _| {})
            .await
            .unwrap_err();
    let status = hub_status(err);
    assert_eq!(status.code(), Code::InvalidArgument, "{}", status.message());
    assert!(status.message().contains("build metadata"), "{}", status.message());

    // A snapshot issued far in the future would make every honest one after it "older".
    let mut releases = ReleaseServiceClient::new(w.channel(&land(NRW)).await);
    let future = serde_json::to_vec(&serde_json::json!({
        "format": 1, "land": NRW, "issued_at_ms": 1i64 << 62, "expires_at_ms": i64::MAX,
        "latest": {"wohngeld-nrw": {"stable": "1.0.0"}},
    }))
    .unwrap();
    let r = releases.publish_snapshot(pb::SignedSnapshot { signature: key.sign(&future), snapshot: future }).await;
    refused("snapshot from the future", r, Code::InvalidArgument, "check the publisher's clock");
    // An honest snapshot still goes through afterwards.
    efa_cli::publish::publish_snapshot(
        w.channel(&land(NRW)).await,
        &NRW.parse().unwrap(),
        &key,
        std::time::Duration::from_secs(3600),
    )
    .await
    .unwrap();
}
