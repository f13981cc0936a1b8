//! Publishing: bad input gets a precise status and nothing is stored half.

use efa_cli::publish::{build_signed_manifest, publish_raw, PublishError, PublishSpec};
use efa_domain::signing::SigningKey;
use efa_proto::v1 as pb;
use efa_tests::*;
use std::path::PathBuf;
use tonic::Code;

fn code(e: PublishError) -> (Code, String) {
    let s = hub_status(e);
    (s.code(), s.message().to_string())
}

async fn publish_manifest(w: &World, manifest: serde_json::Value, files: Vec<PathBuf>) -> (Code, String) {
    let bytes = serde_json::to_vec(&manifest).unwrap();
    let key = w.fed.signing_key(&NRW.parse().unwrap()).unwrap();
    let sig = key.sign(&bytes);
    code(publish_raw(w.channel(&land(NRW)).await, bytes, sig, String::new(), files, |_, _| {}).await.unwrap_err())
}

fn manifest(version: &str, files: serde_json::Value) -> serde_json::Value {
    serde_json::json!({
        "format": 1, "service_id": "wohngeld-nrw", "version": version, "channel": "stable",
        "land": "05", "created_at_ms": 0, "files": files,
    })
}

async fn releases(w: &World) -> usize {
    ReleaseServiceClient::new(w.channel(&operator()).await)
        .list_releases(pb::ListReleasesRequest { service_id: "wohngeld-nrw".into(), channel: String::new() })
        .await
        .unwrap()
        .into_inner()
        .releases
        .len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_versions_are_refused_and_releases_stay_immutable() {
    let w = World::new().await;
    w.register(NRW, "wohngeld-nrw", "10092").await.unwrap();
    let first = w.publish(NRW, "wohngeld-nrw", "1.0.0", &w.standard_bundle("1.0.0")).await.unwrap();
    let other = w.bundle("other", &[("index.html", "different content")]);
    let (c, msg) = code(w.publish(NRW, "wohngeld-nrw", "1.0.0", &other).await.unwrap_err());
    assert_eq!(c, Code::AlreadyExists, "{msg}");
    let detail = ReleaseServiceClient::new(w.channel(&operator()).await)
        .get_release(pb::GetReleaseRequest { service_id: "wohngeld-nrw".into(), version: "1.0.0".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(detail.info.unwrap().content_digest, first.content_digest);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_releases_get_precise_errors_and_store_nothing() {
    let w = World::new().await;
    w.register(NRW, "wohngeld-nrw", "10092").await.unwrap();
    let bundle = w.bundle("b", &[("a.txt", "hello")]);
    let file = bundle.join("a.txt");
    let entry = |path: &str, size: u64, content: &[u8]| serde_json::json!({"path": path, "size": size, "digest": efa_domain::bundle::Digest::of(content).to_string()});
    let ok = entry("a.txt", 5, b"hello");

    let cases: Vec<(&str, serde_json::Value, Vec<PathBuf>, &str)> = vec![
        ("bad semver", manifest("1.0", serde_json::json!([ok])), vec![file.clone()], "semantic version"),
        (
            "escaping path",
            manifest("1.0.0", serde_json::json!([entry("../etc/passwd", 5, b"hello")])),
            vec![file.clone()],
            "..",
        ),
        (
            "absolute path",
            manifest("1.0.0", serde_json::json!([entry("/etc/passwd", 5, b"hello")])),
            vec![file.clone()],
            "absolute",
        ),
        ("duplicate path", manifest("1.0.0", serde_json::json!([ok, ok])), vec![file.clone(), file.clone()], "twice"),
        ("empty bundle", manifest("1.0.0", serde_json::json!([])), vec![], "empty"),
        (
            "oversized bundle",
            manifest("1.0.0", serde_json::json!([entry("a.txt", 1 << 40, b"hello")])),
            vec![file.clone()],
            "limit",
        ),
        (
            "declared size larger than content",
            manifest("1.0.0", serde_json::json!([entry("a.txt", 6, b"hello")])),
            vec![file.clone()],
            "ended after",
        ),
        (
            "content longer than declared",
            manifest("1.0.0", serde_json::json!([entry("a.txt", 4, b"hell")])),
            vec![file.clone()],
            "more data",
        ),
        (
            "digest mismatch",
            manifest("1.0.0", serde_json::json!([entry("a.txt", 5, b"HELLO")])),
            vec![file.clone()],
            "digest",
        ),
        (
            "deep nesting",
            manifest("1.0.0", serde_json::json!([entry(&format!("{}x", "d/".repeat(20)), 5, b"hello")])),
            vec![file.clone()],
            "deeper",
        ),
    ];
    for (name, m, files, needle) in cases {
        let (c, msg) = publish_manifest(&w, m, files).await;
        assert_eq!(c, Code::InvalidArgument, "{name}: {msg}");
        assert!(msg.contains(needle), "{name}: {msg:?} should mention {needle:?}");
    }
    assert_eq!(releases(&w).await, 0, "nothing may be stored by a refused publish");

    // Unknown services and foreign Länder.
    let m = serde_json::json!({"format": 1, "service_id": "gibt-es-nicht", "version": "1.0.0", "channel": "stable",
        "land": "05", "created_at_ms": 0, "files": [ok]});
    assert_eq!(publish_manifest(&w, m, vec![file.clone()]).await.0, Code::NotFound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_registration_validates_against_the_catalogue() {
    let w = World::new().await;
    let err = w.register(NRW, "wohngeld-nrw", "99999").await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("OZG catalogue"), "{}", err.message());
    let err = w.register(NRW, "Wohngeld NRW", "10092").await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);

    let mut req = pb::RegisterServiceRequest {
        id: "wohngeld-nrw".into(),
        ozg_id: "10092".into(),
        leistungsschluessel: "99022001000000".into(), // Ausbildungsförderung, not Wohngeld
        title: "Wohngeld".into(),
        ..Default::default()
    };
    let err = CatalogServiceClient::new(w.channel(&land(NRW)).await).register_service(req.clone()).await.unwrap_err();
    assert!(err.message().contains("belongs to OZG-ID 10056"), "{}", err.message());
    req.leistungsschluessel = "99107023000000".into();
    let s = CatalogServiceClient::new(w.channel(&land(NRW)).await).register_service(req).await.unwrap().into_inner();
    assert_eq!(s.themenfeld, "Arbeit & Ruhestand");
    assert_eq!(s.land_code, NRW);

    // Another Land cannot take it over.
    let err = w.register("09", "wohngeld-nrw", "10092").await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_land_cannot_publish_for_another_lands_service() {
    let w = World::new().await;
    w.register(NRW, "wohngeld-nrw", "10092").await.unwrap();
    let bayern_key = SigningKey::generate();
    let dir = w.standard_bundle("1.0.0");
    let spec = PublishSpec {
        dir: &dir,
        service_id: "wohngeld-nrw".parse().unwrap(),
        version: "1.0.0".into(),
        channel: "stable".parse().unwrap(),
        land: "09".parse().unwrap(),
        release_notes: String::new(),
        signing_key: &bayern_key,
        rollout: None,
    };
    let signed = build_signed_manifest(&spec).unwrap();
    let err = publish_raw(
        w.channel(&land("09")).await,
        signed.manifest,
        signed.signature,
        String::new(),
        signed.files,
        |_, _| {},
    )
    .await
    .unwrap_err();
    assert_eq!(code(err).0, Code::PermissionDenied);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_range_enum_values_and_empty_fields_are_invalid_arguments() {
    let w = World::new().await;
    w.register(NRW, "wohngeld-nrw", "10092").await.unwrap();
    let ch = w.channel(&kommune(DORTMUND)).await;
    let err = SubscriptionServiceClient::new(ch.clone())
        .subscribe(pb::SubscribeRequest {
            target: Some(pb::SubscriptionTarget {
                target: Some(pb::subscription_target::Target::ServiceId("wohngeld-nrw".into())),
            }),
            channel: "stable".into(),
            policy: 99,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{}", err.message());
    let err = SubscriptionServiceClient::new(ch.clone())
        .subscribe(pb::SubscribeRequest { target: None, channel: String::new(), policy: 1 })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{}", err.message());
    let err = AdoptionServiceClient::new(ch.clone())
        .report_adoption(pb::AdoptionReport {
            service_id: "wohngeld-nrw".into(),
            version: String::new(),
            state: 0,
            reason: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{}", err.message());
    let err = AdoptionServiceClient::new(ch.clone())
        .report_adoption(pb::AdoptionReport {
            service_id: "wohngeld-nrw".into(),
            version: String::new(),
            state: pb::AdoptionState::Rejected as i32,
            reason: String::new(),
        })
        .await
        .unwrap_err();
    assert!(err.message().contains("must say why"), "{}", err.message());
    let err = AdoptionServiceClient::new(ch)
        .submit_rating(pb::RatingRequest {
            service_id: "wohngeld-nrw".into(),
            version: "1.0.0".into(),
            stars: 3,
            criteria: vec![pb::CriterionScore { criterion: 42, score: 3 }],
            comment: String::new(),
            met: vec![],
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{}", err.message());
    let err = CatalogServiceClient::new(w.channel(&operator()).await)
        .get_kommune(pb::GetKommuneRequest { ags: "0591300".into() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("AGS"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_publish_leaves_nothing_downloadable_and_no_files() {
    let w = World::new().await;
    w.register(NRW, "wohngeld-nrw", "10092").await.unwrap();
    let bundle = w.bundle("partly-bad", &[("a.txt", "the first file is fine"), ("b.txt", "the second is not")]);
    let entry = |path: &str, content: &[u8]| serde_json::json!({"path": path, "size": content.len(), "digest": efa_domain::bundle::Digest::of(content).to_string()});
    let good = efa_domain::bundle::Digest::of(b"the first file is fine");
    let blob_files = || {
        walk(&w.fed.hub_data_dir().join("blobs"))
            .into_iter()
            .filter(|p| !p.ends_with("staged") && !p.ends_with("tmp"))
            .count()
    };
    let before = blob_files();
    for attempt in 0..5 {
        let m = manifest(
            "1.0.0",
            serde_json::json!([
                entry("a.txt", b"the first file is fine"),
                entry("b.txt", b"a different second file!!")
            ]),
        );
        let (c, msg) = publish_manifest(&w, m, vec![bundle.join("a.txt"), bundle.join("b.txt")]).await;
        assert_eq!(c, Code::InvalidArgument, "attempt {attempt}: {msg}");
    }
    // The first file's bytes arrived and matched, but no release names them: not served.
    let fetched = ReleaseServiceClient::new(w.channel(&kommune(DORTMUND)).await)
        .fetch_blob(pb::FetchBlobRequest { digest: good.to_string(), offset: 0 })
        .await;
    assert_eq!(fetched.map(drop).unwrap_err().code(), Code::NotFound);
    assert_eq!(blob_files(), before, "repeated failed publishes leave no files behind");

    // A good publish of the same file makes it downloadable.
    let ok = w.bundle("good", &[("a.txt", "the first file is fine")]);
    w.publish(NRW, "wohngeld-nrw", "1.0.0", &ok).await.unwrap();
    let mut stream = ReleaseServiceClient::new(w.channel(&kommune(DORTMUND)).await)
        .fetch_blob(pb::FetchBlobRequest { digest: good.to_string(), offset: 0 })
        .await
        .unwrap()
        .into_inner();
    let chunk = tokio_stream::StreamExt::next(&mut stream).await.unwrap().unwrap();
    assert_eq!(&chunk.data[..], b"the first file is fine");
}

/// Every file below `dir`.
fn walk(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_signed_with_an_unregistered_key_is_refused_at_once() {
    let w = World::new().await;
    w.register(NRW, "wohngeld-nrw", "10092").await.unwrap();
    let registered = w.fed.trusted_key(&NRW.parse().unwrap()).unwrap();
    let mut catalog = CatalogServiceClient::new(w.channel(&land(NRW)).await);
    let set = catalog.set_signing_keys(pb::SetSigningKeysRequest { keys: vec![registered.clone()] }).await.unwrap();
    assert_eq!(set.into_inner().keys, vec![registered.clone()]);
    // Only a Land registers keys, and only its own.
    let kommune_try = CatalogServiceClient::new(w.channel(&kommune(DORTMUND)).await)
        .set_signing_keys(pb::SetSigningKeysRequest { keys: vec![] })
        .await;
    assert_eq!(kommune_try.unwrap_err().code(), Code::PermissionDenied);
    let bad =
        catalog.set_signing_keys(pb::SetSigningKeysRequest { keys: vec!["efa-ed25519-public:nope".into()] }).await;
    assert_eq!(bad.unwrap_err().code(), Code::InvalidArgument);

    // A release signed with another key: refused with a message that says what to do.
    let wrong = SigningKey::generate();
    let dir = w.standard_bundle("1.0.0");
    let spec = PublishSpec {
        dir: &dir,
        service_id: "wohngeld-nrw".parse().unwrap(),
        version: "1.0.0".into(),
        channel: "stable".parse().unwrap(),
        land: NRW.parse().unwrap(),
        release_notes: String::new(),
        signing_key: &wrong,
        rollout: None,
    };
    let signed = build_signed_manifest(&spec).unwrap();
    let err = publish_raw(
        w.channel(&land(NRW)).await,
        signed.manifest,
        signed.signature,
        String::new(),
        signed.files,
        |_, _| {},
    )
    .await
    .unwrap_err();
    let (c, msg) = code(err);
    assert_eq!(c, Code::InvalidArgument, "{msg}");
    assert!(msg.contains("not signed by any of the 1 release key(s) Land 05 registered"), "{msg}");
    assert_eq!(releases(&w).await, 0);

    // With the registered key it goes through; the key list is readable by everyone.
    w.publish(NRW, "wohngeld-nrw", "1.0.0", &dir).await.unwrap();
    let keys = CatalogServiceClient::new(w.channel(&kommune(DORTMUND)).await)
        .get_signing_keys(pb::GetSigningKeysRequest { land_code: NRW.into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(keys.keys, vec![registered]);
}
