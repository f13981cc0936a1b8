//! Nodes against the hub's transparency log: they verify each release they deploy and each
//! report they sent in the log, and a hub whose history is rewritten, truncated or not
//! cosigned as required is caught by the checkpoint the node verified before.

use efa_domain::model::adoption::AdoptionState;
use efa_domain::model::release::UpdatePolicy;
use efa_node::{Agent, NodeError};
use efa_proto::v1 as pb;
use efa_proto::v1::log_service_client::LogServiceClient;
use efa_tests::*;
use std::time::Duration;

fn sub() -> [Sub; 1] {
    [Sub { service: "wohngeld-nrw", policy: UpdatePolicy::Auto }]
}

/// A node of `ags` that checks the hub's log.
fn checking_node(w: &World, ags: &str) -> Agent {
    let config = w.node_config(ags, &sub()).check_log(w.fed.log_key().unwrap());
    Agent::new(config).expect("node starts")
}

/// Waits until the node has found every report it sent in the log.
async fn all_reports_logged(node: &Agent) {
    for _ in 0..100 {
        node.check_log().await.expect("the log checks out");
        if node.state().unwrap().log_pending.is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("reports still not in the log: {:?}", node.state().unwrap().log_pending);
}

/// Wohngeld 1.0.0 deployed by Dortmund, whose node checks the log and has found its reports.
async fn a_node_that_verified_its_deployment() -> (World, Agent) {
    let w = World::new().await;
    w.register(NRW, "wohngeld-nrw", "10092").await.unwrap();
    w.publish(NRW, "wohngeld-nrw", "1.0.0", &w.standard_bundle("1.0.0")).await.unwrap();
    let node = checking_node(&w, DORTMUND);
    node.sync().await.unwrap();
    all_reports_logged(&node).await;
    (w, node)
}

/// The size of the hub's newest checkpoint.
async fn checkpoint_size(w: &World) -> u64 {
    let note = LogServiceClient::new(w.channel(&operator()).await)
        .get_checkpoint(pb::GetCheckpointRequest {})
        .await
        .unwrap()
        .into_inner()
        .note;
    efa_tlog::checkpoint::peek(&note).unwrap().1
}

/// Waits until the hub has signed a checkpoint of at least `size` leaves.
async fn signed_at_least(w: &World, size: u64) {
    for _ in 0..100 {
        let mut log = LogServiceClient::new(w.channel(&operator()).await);
        if let Ok(cp) = log.get_checkpoint(pb::GetCheckpointRequest {}).await {
            if efa_tlog::checkpoint::peek(&cp.into_inner().note).unwrap().1 >= size {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no checkpoint of {size} leaves");
}

fn clear_log(db: &sled::Db) {
    for tree in ["log_tiles", "log_checkpoints", "log_beside", "log_releases"] {
        db.open_tree(tree).unwrap().clear().unwrap();
    }
}

/// Rewrites the adoption event of `ags` (its newest) to say `state` instead.
fn rewrite_adoption(db: &sled::Db, ags: &str, state: AdoptionState) {
    use efa_domain::model::event::{Event, EventKind};
    use efa_registry::store::codec::{decode, encode};
    let events = db.open_tree("events").unwrap();
    let (key, mut event) = events
        .iter()
        .rev()
        .map(|kv| kv.unwrap())
        .map(|(k, v)| (k, decode::<Event>("events", &v).unwrap()))
        .find(|(_, e)| matches!(&e.kind, EventKind::AdoptionReported(a) if a.ags.as_str() == ags))
        .expect("an adoption event of the Kommune");
    let EventKind::AdoptionReported(a) = &mut event.kind else { unreachable!() };
    a.state = state;
    events.insert(key, encode(&event)).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_deploys_only_what_the_log_holds_and_finds_its_reports_there() {
    let w = World::new().await;
    w.register(NRW, "wohngeld-nrw", "10092").await.unwrap();
    w.publish(NRW, "wohngeld-nrw", "1.0.0", &w.standard_bundle("1.0.0")).await.unwrap();
    let node = checking_node(&w, DORTMUND);
    let handled = node.sync().await.unwrap();
    assert!(handled.iter().all(|h| !h.is_failure()), "{handled:?}");
    assert_eq!(node.status().unwrap().services[0].running.as_deref(), Some("1.0.0"));
    all_reports_logged(&node).await;
    let state = node.state().unwrap();
    assert!(state.log_alarm.is_none());
    let verified = state.log.expect("a verified checkpoint");
    assert!(verified.size >= 4, "registration, publish, evaluating, deployed: {}", verified.size);

    // The next release and its reports: the log grows and stays consistent.
    w.publish(NRW, "wohngeld-nrw", "1.1.0", &w.standard_bundle("1.1.0")).await.unwrap();
    node.sync().await.unwrap();
    all_reports_logged(&node).await;
    assert!(node.state().unwrap().log.unwrap().size > verified.size);
    assert_eq!(node.status().unwrap().services[0].running.as_deref(), Some("1.1.0"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_history_rewritten_behind_the_hubs_back_raises_the_alarm_and_stops_deploys() {
    let (mut w, node) = a_node_that_verified_its_deployment().await;
    let before = node.state().unwrap().log.unwrap();

    // Whoever runs the hub turns Dortmund's deployment into a rejection and rebuilds the log
    // from the edited events; the hub signs the new history with its own key.
    w.fed.stop_hub().await.unwrap();
    edit_stopped_store(&w, |db, log| {
        rewrite_adoption(db, DORTMUND, AdoptionState::Rejected);
        clear_log(log);
    });
    w.fed.start_hub().await.unwrap();
    signed_at_least(&w, before.size).await;

    let alarm = match node.check_log().await {
        Err(NodeError::LogAlarm(why)) => why,
        other => panic!("expected an alarm, got {other:?}"),
    };
    assert!(alarm.contains("rewritten") || alarm.contains("split view"), "{alarm}");
    assert!(node.status().unwrap().warnings[0].starts_with("TRANSPARENCY LOG ALARM"));
    assert!(
        efa_node::metrics::render(&Default::default(), Some(&node.status().unwrap())).contains("efa_node_log_alarm 1")
    );

    // No deploys while it stands: the next release fails with the alarm as its reason.
    w.publish(NRW, "wohngeld-nrw", "1.1.0", &w.standard_bundle("1.1.0")).await.unwrap();
    let handled = node.sync().await.unwrap();
    assert!(handled.iter().any(|h| h.is_failure() && h.to_string().contains("transparency log alarm")), "{handled:?}");
    assert_eq!(node.status().unwrap().services[0].running.as_deref(), Some("1.0.0"));

    // The operator looked into it and starts over from the hub's current checkpoint.
    assert!(node.reset_log().unwrap().is_some());
    let handled = node.sync().await.unwrap();
    assert!(handled.iter().all(|h| !h.is_failure()), "{handled:?}");
    assert_eq!(node.status().unwrap().services[0].running.as_deref(), Some("1.1.0"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_log_and_a_report_that_never_appears_raise_the_alarm() {
    let (mut w, node) = a_node_that_verified_its_deployment().await;
    let before = node.state().unwrap().log.unwrap();

    // The hub forgets its last events and everything logged after the registration.
    w.fed.stop_hub().await.unwrap();
    edit_stopped_store(&w, |db, log| {
        let events = db.open_tree("events").unwrap();
        for k in events.range(2u64.to_be_bytes()..).keys() {
            events.remove(k.unwrap()).unwrap();
        }
        clear_log(log);
    });
    w.fed.start_hub().await.unwrap();
    signed_at_least(&w, 1).await;
    assert!(checkpoint_size(&w).await < before.size);
    match node.check_log().await {
        Err(NodeError::LogAlarm(why)) => assert!(why.contains("shrank"), "{why}"),
        other => panic!("expected an alarm, got {other:?}"),
    }

    // A report the hub acknowledged an hour ago and never logged.
    let other = checking_node(&w, BIELEFELD);
    other.check_log().await.unwrap();
    let size = other.state().unwrap().log.unwrap().size;
    let mut state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(other.config().state_dir.join("state.json")).unwrap()).unwrap();
    state["log_pending"] = serde_json::json!([{
        "seq": size + 50, "ags": BIELEFELD, "service": "wohngeld-nrw", "version": "1.0.0",
        "state": "deployed", "acked_ms": efa_domain::now_ms() - 3_600_000
    }]);
    std::fs::write(other.config().state_dir.join("state.json"), serde_json::to_vec(&state).unwrap()).unwrap();
    match other.check_log().await {
        Err(NodeError::LogAlarm(why)) => assert!(why.contains("still not in the hub's log"), "{why}"),
        other => panic!("expected an alarm, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_requires_a_witness_trusts_only_cosigned_checkpoints() {
    let w = World::new().await;
    w.register(NRW, "wohngeld-nrw", "10092").await.unwrap();
    w.publish(NRW, "wohngeld-nrw", "1.0.0", &w.standard_bundle("1.0.0")).await.unwrap();
    let (wit_skey, wit_vkey) = efa_tlog::checkpoint::Cosigner::generate("witness.by.test/efa").unwrap();
    let mut config = w.node_config(DORTMUND, &sub()).check_log(w.fed.log_key().unwrap());
    let log = config.log.as_mut().unwrap();
    log.witnesses = vec![wit_vkey.clone()];
    log.min_witnesses = 1;
    let node = Agent::new(config).unwrap();
    signed_at_least(&w, 2).await;
    assert!(node.check_log().await.unwrap().is_none(), "no cosignature yet: not trusted, no alarm");

    // Bayern witnesses: cosigns the hub's checkpoint and hands the cosignature to the hub.
    let mut log = LogServiceClient::new(w.channel(&land("09")).await);
    let note = log.get_checkpoint(pb::GetCheckpointRequest {}).await.unwrap().into_inner().note;
    let cosigner = efa_tlog::checkpoint::Cosigner::from_text(&wit_skey).unwrap();
    let cosigned = cosigner.cosign(&note, 1_800_000_000).unwrap();
    // A Kommune may not witness; a cosignature under another key is refused.
    let refused = LogServiceClient::new(w.channel(&kommune(ESSEN)).await)
        .add_cosignature(pb::AddCosignatureRequest { note: cosigned.clone(), witness_key: wit_vkey.clone() })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);
    let (_, other_vkey) = efa_tlog::checkpoint::Cosigner::generate("witness.by.test/efa").unwrap();
    let refused = log
        .add_cosignature(pb::AddCosignatureRequest { note: cosigned.clone(), witness_key: other_vkey })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");
    log.add_cosignature(pb::AddCosignatureRequest { note: cosigned, witness_key: wit_vkey }).await.unwrap();

    let cp = node.check_log().await.unwrap().expect("the cosigned checkpoint is trusted");
    assert_eq!(cp.witnesses, vec!["witness.by.test/efa".to_string()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_log_requests_get_bounded_refusals() {
    let w = World::new().await;
    w.register(NRW, "wohngeld-nrw", "10092").await.unwrap();
    signed_at_least(&w, 1).await;
    let mut log = LogServiceClient::new(w.channel(&kommune(DORTMUND)).await);
    let size = checkpoint_size(&w).await;
    let code = |r: Result<tonic::Response<pb::Proof>, tonic::Status>| r.unwrap_err().code();
    assert_eq!(
        code(log.get_consistency_proof(pb::ConsistencyProofRequest { old_size: 5, new_size: 2 }).await),
        tonic::Code::InvalidArgument
    );
    assert_eq!(
        code(log.get_consistency_proof(pb::ConsistencyProofRequest { old_size: 1, new_size: u64::MAX }).await),
        tonic::Code::OutOfRange
    );
    let inc = |index, tree_size| pb::InclusionProofRequest { index, tree_size, ..Default::default() };
    for (i, t) in [(size, size), (u64::MAX, u64::MAX), (0, size + 1), (0, 0)] {
        let e = log.get_inclusion_proof(inc(i, t)).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::OutOfRange, "{i} {t}: {e:?}");
        assert!(e.message().len() < 300);
    }
    let e = log
        .get_inclusion_proof(pb::InclusionProofRequest {
            tree_size: size,
            service_id: "wohngeld-nrw".into(),
            version: "9.9.9".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::OutOfRange);
    for path in ["", "tile/0/x", "../../etc/passwd", "tile/entries/001", &"tile/0/".repeat(1000)] {
        let e = log.get_tile(pb::GetTileRequest { path: path.to_string() }).await.unwrap_err();
        assert!(matches!(e.code(), tonic::Code::InvalidArgument | tonic::Code::OutOfRange), "{path}: {e:?}");
        assert!(e.message().len() < 400, "{}", e.message().len());
    }
    let tile = log.get_tile(pb::GetTileRequest { path: format!("tile/entries/000.p/{size}") }).await.unwrap();
    let bundle = tile.into_inner().data;
    let leaves = efa_tlog::tiles::parse_entry_bundle(&bundle, size as u16).unwrap();
    assert_eq!(leaves.len() as u64, size);
    let e = log
        .add_cosignature(pb::AddCosignatureRequest { note: vec![b'x'; 100_000], witness_key: "k".into() })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "a Kommune may not witness");
    let mut as_land = LogServiceClient::new(w.channel(&land("09")).await);
    for (note, key) in [(vec![b'x'; 100_000], "k".to_string()), (b"x\n\n".to_vec(), "a+00000000+BAAA".to_string())] {
        let e = as_land.add_cosignature(pb::AddCosignatureRequest { note, witness_key: key }).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_comment_is_a_salted_hash_in_the_log_and_an_erasure_request_deletes_its_text() {
    use prost::Message;
    let w = World::new().await;
    w.register(NRW, "wohngeld-nrw", "10092").await.unwrap();
    w.publish(NRW, "wohngeld-nrw", "1.0.0", &w.standard_bundle("1.0.0")).await.unwrap();
    let node = checking_node(&w, DORTMUND);
    node.sync().await.unwrap();
    let comment = "Bitte Frau Beispiel (Tel. 0231 000000) zurückrufen";
    rate(&node, "wohngeld-nrw", "1.0.0", 4, vec![], comment).await.unwrap();
    let head = w.fed.registry().unwrap().head_seq().unwrap();
    signed_at_least(&w, head).await;

    // The leaf holds a commitment, never the text; the text beside it opens it.
    let mut log = LogServiceClient::new(w.channel(&operator()).await);
    let p = log
        .get_inclusion_proof(pb::InclusionProofRequest { index: head - 1, tree_size: head, ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert!(!String::from_utf8_lossy(&p.leaf).contains("Beispiel"));
    let leaf = pb::LogLeaf::decode(p.leaf.as_slice()).unwrap();
    let Some(pb::log_leaf::Kind::Rated(rated)) = leaf.kind else { panic!("{leaf:?}") };
    let beside = w.fed.registry().unwrap().beside_text(head - 1).unwrap().expect("the text beside the leaf");
    assert_eq!(beside.text, comment);
    assert_eq!(rated.comment.unwrap().salted_sha256, efa_tlog::commit_text(&beside.salt, comment));

    // Only an operator erases; afterwards the text is gone and the log still verifies.
    let erase = pb::EraseLeafTextRequest { index: head - 1 };
    let e = LogServiceClient::new(w.channel(&land(NRW)).await).erase_leaf_text(erase).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied);
    assert!(log.erase_leaf_text(erase).await.unwrap().into_inner().erased);
    assert!(!log.erase_leaf_text(erase).await.unwrap().into_inner().erased);
    let e = log.erase_leaf_text(pb::EraseLeafTextRequest { index: u64::MAX }).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::OutOfRange);
    assert!(w.fed.registry().unwrap().beside_text(head - 1).unwrap().is_none());
    all_reports_logged(&node).await;
    assert!(node.check_log().await.unwrap().is_some());
}

/// A key set of NRW with `keys`, signed by `signers`.
fn key_set(
    version: u64,
    keys: &[&efa_domain::signing::SigningKey],
    revoked: &[&efa_domain::signing::SigningKey],
    signers: &[&efa_domain::signing::SigningKey],
) -> pb::SignedKeySet {
    let set = efa_domain::model::keyset::KeySet {
        land: NRW.parse().unwrap(),
        version,
        expires_ms: efa_domain::now_ms() + 365 * 86_400_000,
        keys: keys.iter().map(|k| k.verifying_key().to_text()).collect(),
        threshold: 1,
        revoked: revoked.iter().map(|k| k.verifying_key().to_text()).collect(),
    };
    pb::SignedKeySet::from(&set.sign(signers).unwrap())
}

/// Publishes a release signed with `key` as NRW.
async fn publish_signed_with(w: &World, version: &str, key: &efa_domain::signing::SigningKey) {
    let dir = w.standard_bundle(version);
    let spec = efa_cli::publish::PublishSpec {
        dir: &dir,
        service_id: "wohngeld-nrw".parse().unwrap(),
        version: version.into(),
        channel: "stable".parse().unwrap(),
        land: NRW.parse().unwrap(),
        release_notes: String::new(),
        signing_key: key,
        rollout: None,
    };
    efa_cli::publish::publish_dir(w.channel(&land(NRW)).await, spec, |_, _| {}).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_land_rotates_its_keys_through_the_log_and_a_revoked_keys_later_release_is_refused() {
    let w = World::new().await;
    w.register(NRW, "wohngeld-nrw", "10092").await.unwrap();
    let old = w.fed.signing_key(&NRW.parse().unwrap()).unwrap();
    let new = efa_domain::signing::SigningKey::generate();
    let mut catalog = CatalogServiceClient::new(w.channel(&land(NRW)).await);

    // Set 1 (the key the node pins by hand), then a release under it.
    let v1 = catalog.publish_key_set(key_set(1, &[&old], &[], &[&old])).await.unwrap().into_inner();
    assert_eq!(v1.version, 1);
    w.publish(NRW, "wohngeld-nrw", "1.0.0", &w.standard_bundle("1.0.0")).await.unwrap();
    let node = checking_node(&w, DORTMUND);
    assert!(node.sync().await.unwrap().iter().all(|h| !h.is_failure()));

    // Refused: a set not signed by set 1's key, a skipped version, another Land publishing.
    let stranger = efa_domain::signing::SigningKey::generate();
    let e = catalog.publish_key_set(key_set(2, &[&new], &[], &[&stranger])).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
    let e = catalog.publish_key_set(key_set(3, &[&new], &[], &[&old])).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    let e = CatalogServiceClient::new(w.channel(&land("09")).await)
        .publish_key_set(key_set(2, &[&new], &[], &[&old]))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "another Land's set: {e:?}");
    // Keys are no longer replaced by hand once a Land publishes sets.
    let e = catalog
        .set_signing_keys(pb::SetSigningKeysRequest { keys: vec![stranger.verifying_key().to_text()] })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition);

    // Set 2 rotates to the new key and revokes the old one, signed by the old one.
    let v2 = catalog.publish_key_set(key_set(2, &[&new], &[&old], &[&old])).await.unwrap().into_inner();
    assert!(v2.leaf_index > v1.leaf_index);
    // The hub now refuses the old key; the node follows the rotation without an edit of
    // its [trust] (which still names only the old key).
    publish_signed_with(&w, "1.1.0", &new).await;
    let handled = node.sync().await.unwrap();
    assert!(handled.iter().all(|h| !h.is_failure()), "{handled:?}");
    assert_eq!(node.status().unwrap().services[0].running.as_deref(), Some("1.1.0"));
    let followed = &node.state().unwrap().key_sets[NRW];
    assert_eq!(followed.iter().map(|(_, s)| s.version).collect::<Vec<_>>(), [1, 2]);

    // A hub that lets the revoked key sign again (written behind its own checks): the
    // node refuses the release, since it is logged after the revocation.
    let dir = w.standard_bundle("1.2.0");
    let spec = efa_cli::publish::PublishSpec {
        dir: &dir,
        service_id: "wohngeld-nrw".parse().unwrap(),
        version: "1.2.0".into(),
        channel: "stable".parse().unwrap(),
        land: NRW.parse().unwrap(),
        release_notes: String::new(),
        signing_key: &old,
        rollout: None,
    };
    let signed = efa_cli::publish::build_signed_manifest(&spec).unwrap();
    let release = efa_domain::model::release::Release {
        service_id: "wohngeld-nrw".parse().unwrap(),
        version: "1.2.0".parse().unwrap(),
        channel: "stable".parse().unwrap(),
        land: NRW.parse().unwrap(),
        content_digest: efa_domain::bundle::Manifest::content_digest(&signed.manifest),
        total_size: 1,
        file_count: 3,
        release_notes: String::new(),
        published_at_ms: efa_domain::now_ms(),
        manifest: signed.manifest,
        signature: signed.signature,
        yank: None,
    };
    w.fed.registry().unwrap().store().insert_release(&release, &[]).unwrap();
    let handled = node.sync().await.unwrap();
    assert!(
        handled.iter().any(|h| h.is_failure() && h.to_string().contains("1.2.0")),
        "the revoked key's release is refused: {handled:?}"
    );
    assert_eq!(node.status().unwrap().services[0].running.as_deref(), Some("1.1.0"));
}
