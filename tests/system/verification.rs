//! A node verifies what the hub hands it: a tampered, mis-signed, replayed or oversized
//! release is refused, reported, and the running version stays in place.

use efa_cli::publish::{build_signed_manifest, publish_raw, PublishSpec};
use efa_domain::bundle::Manifest;
use efa_domain::model::release::UpdatePolicy;
use efa_domain::signing::SigningKey;
use efa_node::Handled;
use efa_proto::v1 as pb;
use efa_tests::*;

const SERVICE: &str = "wohngeld-nrw";

/// A world where Dortmund runs 1.0.0 and follows the service with auto updates. Its hub
/// keeps every file in the blob store (none in the store with its release), so tests can
/// alter content on the hub's disk.
async fn running_v1() -> (World, efa_node::Agent) {
    let w = World::tuned(|c| c.inline_file_max = 0).await;
    w.register(NRW, SERVICE, "10092").await.unwrap();
    w.publish(NRW, SERVICE, "1.0.0", &w.standard_bundle("1.0.0")).await.unwrap();
    let node = w.node(DORTMUND, &[Sub { service: SERVICE, policy: UpdatePolicy::Auto }]);
    node.register_subscriptions().await.unwrap();
    assert!(matches!(node.reconcile().await.unwrap()[0], Handled::Deployed { .. }));
    node.sync_once().await.unwrap();
    (w, node)
}

fn running(node: &efa_node::Agent) -> Option<String> {
    node.deployer().current_version(&SERVICE.parse().unwrap()).unwrap()
}

/// Path of the blob of `file` of a release, on the hub's disk.
async fn hub_blob(w: &World, version: &str, file: &str) -> std::path::PathBuf {
    let detail = ReleaseServiceClient::new(w.channel(&operator()).await)
        .get_release(pb::GetReleaseRequest { service_id: SERVICE.into(), version: version.into() })
        .await
        .unwrap()
        .into_inner();
    let m = Manifest::from_bytes(&detail.manifest, &Default::default()).unwrap();
    let d = m.files.iter().find(|f| f.path.as_str() == file).unwrap().digest.hex();
    w.fed.hub_data_dir().join("blobs").join(&d[..2]).join(d)
}

async fn failure_reason(w: &World) -> String {
    let a = w.adopters(SERVICE).await;
    assert_eq!(state(&a[0]), pb::AdoptionState::Failed, "{a:?}");
    assert_eq!(a[0].running_version, "1.0.0");
    a[0].reason.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bundle_altered_on_the_hubs_disk_is_refused() {
    let (w, node) = running_v1().await;
    w.publish(NRW, SERVICE, "1.1.0", &w.standard_bundle("1.1.0")).await.unwrap();
    let blob = hub_blob(&w, "1.1.0", "index.html").await;
    let len = std::fs::metadata(&blob).unwrap().len() as usize;
    std::fs::write(&blob, "X".repeat(len)).unwrap(); // same size, other bytes

    let handled = node.sync_once().await.unwrap();
    assert!(matches!(&handled[..], [Handled::Failed { .. }]), "{handled:?}");
    assert_eq!(running(&node).as_deref(), Some("1.0.0"));
    assert!(failure_reason(&w).await.contains("digest"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endless_data_beyond_the_declared_length_is_refused() {
    let (w, node) = running_v1().await;
    w.publish(NRW, SERVICE, "1.1.0", &w.standard_bundle("1.1.0")).await.unwrap();
    let blob = hub_blob(&w, "1.1.0", "index.html").await;
    std::fs::write(&blob, "A".repeat(10 * 1024 * 1024)).unwrap();

    let handled = node.sync_once().await.unwrap();
    assert!(matches!(&handled[..], [Handled::Failed { .. }]), "{handled:?}");
    assert_eq!(running(&node).as_deref(), Some("1.0.0"));
    assert!(failure_reason(&w).await.contains("more than"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_files_from_two_releases_are_refused() {
    let (w, node) = running_v1().await;
    w.publish(NRW, SERVICE, "1.1.0", &w.standard_bundle("1.1.0")).await.unwrap();
    // Put 1.0.0's index.html where 1.1.0's should be: valid content, wrong release.
    let old = hub_blob(&w, "1.0.0", "index.html").await;
    let new = hub_blob(&w, "1.1.0", "index.html").await;
    std::fs::copy(&old, &new).unwrap();

    node.sync_once().await.unwrap();
    assert_eq!(running(&node).as_deref(), Some("1.0.0"));
    assert!(failure_reason(&w).await.contains("1.1.0") || !w.adopters(SERVICE).await[0].reason.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manifest_signed_by_another_lands_key_is_refused() {
    let (w, node) = running_v1().await;
    // NRW's certificate uploads it (the hub accepts it: it is not trusted to judge
    // signatures), but the key is Bayern's, not the one Dortmund pins for NRW.
    let dir = w.standard_bundle("1.1.0");
    let bayern_key = SigningKey::generate();
    let spec = PublishSpec {
        dir: &dir,
        service_id: SERVICE.parse().unwrap(),
        version: "1.1.0".into(),
        channel: "stable".parse().unwrap(),
        land: NRW.parse().unwrap(),
        release_notes: String::new(),
        signing_key: &bayern_key,
        rollout: None,
    };
    let signed = build_signed_manifest(&spec).unwrap();
    publish_raw(w.channel(&land(NRW)).await, signed.manifest, signed.signature, String::new(), signed.files, |_, _| {})
        .await
        .unwrap();

    let handled = node.sync_once().await.unwrap();
    assert!(matches!(&handled[..], [Handled::Failed { .. }]), "{handled:?}");
    assert_eq!(running(&node).as_deref(), Some("1.0.0"));
    assert!(failure_reason(&w).await.contains("signature"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_release_replayed_as_new_is_not_installed() {
    let (w, node) = running_v1().await;
    w.publish(NRW, SERVICE, "1.1.0", &w.standard_bundle("1.1.0")).await.unwrap();
    node.sync_once().await.unwrap();
    assert_eq!(running(&node).as_deref(), Some("1.1.0"));

    // A hub (or attacker) announces the valid, signed 1.0.0 again as if it were new.
    let old = ReleaseServiceClient::new(w.channel(&operator()).await)
        .get_release(pb::GetReleaseRequest { service_id: SERVICE.into(), version: "1.0.0".into() })
        .await
        .unwrap()
        .into_inner()
        .info
        .unwrap();
    let handled = node.handle_release(old.try_into().unwrap()).await.unwrap();
    assert!(matches!(handled, Handled::Ignored { .. }), "{handled:?}");
    assert_eq!(running(&node).as_deref(), Some("1.1.0"));
    // Approving it by hand is refused too; only an explicit local rollback goes back.
    assert!(node.approve(SERVICE, "1.0.0").await.is_err());
    node.rollback(SERVICE, "1.0.0").await.unwrap();
    assert_eq!(running(&node).as_deref(), Some("1.0.0"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn yanked_releases_are_not_deployed_and_nodes_learn_about_them() {
    let (w, node) = running_v1().await;
    w.publish(NRW, SERVICE, "1.1.0", &w.standard_bundle("1.1.0")).await.unwrap();
    ReleaseServiceClient::new(w.channel(&land(NRW)).await)
        .yank_release(pb::YankReleaseRequest {
            service_id: SERVICE.into(),
            version: "1.1.0".into(),
            reason: "Gebührenberechnung falsch".into(),
            recall: false,
        })
        .await
        .unwrap();
    let handled = node.sync_once().await.unwrap();
    assert!(matches!(&handled[..], [Handled::Ignored { .. }]), "{handled:?}");
    assert_eq!(running(&node).as_deref(), Some("1.0.0"));
    let st = node.state().unwrap();
    assert_eq!(st.services[SERVICE].yanked.get("1.1.0").map(String::as_str), Some("Gebührenberechnung falsch"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_signed_by_another_trusted_land_is_refused_for_this_service() {
    let (w, node) = running_v1().await;
    // Dortmund trusts Bayern's key too (for Bayern's own services). A compromised hub
    // slips a Bayern-signed manifest in as a new release of NRW's service.
    let bayern = "09".parse().unwrap();
    let mut config = node.config().clone();
    config.trust.insert(bayern, vec![w.fed.trusted_key(&"09".parse().unwrap()).unwrap()]);
    let node = efa_node::Agent::new(config).unwrap();
    let key = w.fed.signing_key(&"09".parse().unwrap()).unwrap();
    let dir = w.standard_bundle("1.1.0");
    let spec = PublishSpec {
        dir: &dir,
        service_id: SERVICE.parse().unwrap(),
        version: "1.1.0".into(),
        channel: "stable".parse().unwrap(),
        land: "09".parse().unwrap(),
        release_notes: String::new(),
        signing_key: &key,
        rollout: None,
    };
    let signed = build_signed_manifest(&spec).unwrap();
    let release = efa_domain::model::release::Release {
        service_id: SERVICE.parse().unwrap(),
        version: "1.1.0".parse().unwrap(),
        channel: "stable".parse().unwrap(),
        land: "09".parse().unwrap(),
        content_digest: Manifest::content_digest(&signed.manifest),
        total_size: 1,
        file_count: 3,
        release_notes: String::new(),
        published_at_ms: 0,
        manifest: signed.manifest,
        signature: signed.signature,
        yank: None,
    };
    w.fed.registry().unwrap().store().insert_release(&release, &[]).unwrap();

    let handled = node.sync_once().await.unwrap();
    assert!(matches!(&handled[..], [Handled::Failed { .. }]), "{handled:?}");
    assert_eq!(running(&node).as_deref(), Some("1.0.0"));
    assert!(failure_reason(&w).await.contains("published by Land 05"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hub_that_hides_newer_releases_is_detected() {
    let (mut w, node) = running_v1().await;
    assert!(node.check_freshness().await.unwrap().is_empty(), "fresh after a normal publish");

    // Keep a copy of the hub as it was with only 1.0.0, then publish 1.1.0 (NRW signs a
    // snapshot naming it).
    w.fed.stop_hub().await.unwrap();
    let data = w.fed.hub_data_dir();
    let frozen = w.dir.path().join("frozen-hub");
    copy_dir(&data, &frozen);
    w.fed.restart_hub().await.unwrap();
    w.publish(NRW, SERVICE, "1.1.0", &w.standard_bundle("1.1.0")).await.unwrap();
    let snapshot = w.fed.registry().unwrap().snapshot(&NRW.parse().unwrap()).unwrap();

    // The hub is rolled back to the old state but serves the newest snapshot it saw.
    w.fed.stop_hub().await.unwrap();
    std::fs::remove_dir_all(&data).unwrap();
    std::fs::rename(&frozen, &data).unwrap();
    w.fed.restart_hub().await.unwrap();
    w.fed.registry().unwrap().store().put_snapshot(&NRW.parse().unwrap(), &snapshot.0, &snapshot.1).unwrap();

    let node = w.node(DORTMUND, &[Sub { service: SERVICE, policy: UpdatePolicy::Auto }]);
    let warnings = node.check_freshness().await.unwrap();
    assert!(warnings.iter().any(|w| w.contains("hides wohngeld-nrw 1.1.0")), "{warnings:?}");
    assert_eq!(node.state().unwrap().warnings, warnings);
    assert_eq!(running(&node).as_deref(), Some("1.0.0"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_snapshot_marks_the_view_as_stale() {
    let (w, node) = running_v1().await;
    let key = w.fed.signing_key(&NRW.parse().unwrap()).unwrap();
    efa_cli::publish::publish_snapshot(
        w.channel(&land(NRW)).await,
        &NRW.parse().unwrap(),
        &key,
        std::time::Duration::from_millis(200),
    )
    .await
    .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let warnings = node.check_freshness().await.unwrap();
    assert!(warnings.iter().any(|w| w.contains("expired")), "{warnings:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_running_a_yanked_release_keeps_it_and_says_so() {
    let (w, node) = running_v1().await;
    ReleaseServiceClient::new(w.channel(&land(NRW)).await)
        .yank_release(pb::YankReleaseRequest {
            service_id: SERVICE.into(),
            version: "1.0.0".into(),
            reason: "Sicherheitslücke im Formular".into(),
            recall: false,
        })
        .await
        .unwrap();
    node.sync_once().await.unwrap();
    assert_eq!(running(&node).as_deref(), Some("1.0.0"));
    let me = &w.adopters(SERVICE).await[0];
    assert_eq!(state(me), pb::AdoptionState::Deployed);
    assert!(me.reason.contains("yanked") && me.reason.contains("Sicherheitslücke"), "{}", me.reason);
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}
