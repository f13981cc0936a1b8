//! Guarantee 3: the event stream is resumable across `kill -9` of the hub. A node catches
//! up from its cursor after being offline while releases were published and the hub
//! crashed in between, and it acts on each release exactly once, in order: the hub's
//! adoption history of the Kommune holds one `evaluating`/`deployed` pair per deployed
//! version, in ascending version order, and nothing else.
//!
//! After an offline period `efa-node sync` first reconciles to the newest release (see
//! `Agent::reconcile`) and then replays the missed events, which the policy ignores as not
//! newer. So of the releases published while it was offline the node deploys the newest
//! only; a release published while it follows the stream is deployed itself.

use crate::harness::*;
use efa_domain::signing::SigningKey;
use efa_proto::v1 as pb;
use efa_tests::DORTMUND;
use std::path::Path;
use std::time::{Duration, Instant};

/// `(version, state)` of every ledger entry of the Kommune, oldest first.
async fn ledger(hub: &HubProc, ags: &str) -> Vec<(String, pb::AdoptionState)> {
    hub.history(ags)
        .await
        .into_iter()
        .map(|h| (h.version.clone(), pb::AdoptionState::try_from(h.state).unwrap_or(pb::AdoptionState::Unspecified)))
        .collect()
}

/// One evaluating/deployed pair per version, in this order.
fn pairs(versions: &[String]) -> Vec<(String, pb::AdoptionState)> {
    versions
        .iter()
        .flat_map(|v| [(v.clone(), pb::AdoptionState::Evaluating), (v.clone(), pb::AdoptionState::Deployed)])
        .collect()
}

async fn publish_version(hub: &HubProc, key: &SigningKey, root: &Path, version: &str, blobs: usize, size: usize) {
    let dir = root.join("bundles").join(version);
    write_bundle(&dir, &wohngeld_bundle(version, true, blobs, size));
    publish_dir(hub, key, version, &dir).await.unwrap_or_else(|e| panic!("publish {version}: {e}"));
}

fn fresh() -> (tempfile::TempDir, SigningKey) {
    (tempfile::tempdir().unwrap(), SigningKey::generate())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_node_catches_up_exactly_once_across_hub_crashes() {
    let started = Instant::now();
    let rounds = cycles(4, 25);
    let mut rng = Rng::from_env("resume/offline");
    let (tmp, key) = fresh();
    let mut hub = HubProc::new(tmp.path());
    hub.start().await;
    hub.register_service().await;
    let health = "test -s config/payment.toml && test -f index.html";
    let mut node =
        NodeProc::new(&hub, &tmp.path().join("node"), DORTMUND, &key.verifying_key().to_text(), Some(health));
    node.sync().await; // registers the subscription; nothing to deploy yet

    let (mut published, mut deployed) = (Vec::new(), Vec::<String>::new());
    let (mut syncs, mut resyncs) = (0, 0);
    for round in 0..rounds {
        // Offline: releases come out and the hub crashes in between.
        let count = if round == 0 { 1 } else { rng.range(1, 4) as usize };
        for i in 0..count {
            if rng.chance(50) {
                hub.restart().await;
            }
            let version = format!("1.{round}.{i}");
            publish_version(&hub, &key, tmp.path(), &version, 2, 16 * 1024).await;
            published.push(version);
        }
        hub.restart().await;

        // Back online: one sync deploys the newest release, once.
        node.sync().await;
        syncs += 1;
        let newest = published.last().unwrap().clone();
        deployed.push(newest.clone());
        assert_eq!(node.current().as_deref(), Some(newest.as_str()), "round {round}: node runs the newest release");
        assert_eq!(ledger(&hub, DORTMUND).await, pairs(&deployed), "round {round}: adoption history after the sync");

        // The cursor covers every release event, and the hub's head is not behind it.
        let (events, head) = hub.watch_releases(DORTMUND, 0).await;
        let cursor = node.cursor();
        let last_release = events.last().map(|(seq, _)| *seq).unwrap_or(0);
        assert!(
            cursor >= last_release && cursor <= head,
            "cursor {cursor}, last release seq {last_release}, head {head}"
        );
        let versions: Vec<String> = events.into_iter().map(|(_, v)| v).collect();
        assert_eq!(versions, published, "every release once, in publish order, on the replayed stream");

        // Another crash and another sync change nothing: no duplicates.
        hub.restart().await;
        node.sync().await;
        resyncs += 1;
        assert_eq!(ledger(&hub, DORTMUND).await, pairs(&deployed), "round {round}: a second sync reported again");
        assert!(node.cursor() >= cursor, "the cursor went back");
    }
    hub.kill();
    eprintln!(
        "fault resume/offline: hub crashes injected {}, releases {}, deployed {} (once each, in order), syncs {syncs} \
         + idle resyncs {resyncs}, duplicates 0; {:.1?}",
        hub.kills,
        published.len(),
        deployed.len(),
        started.elapsed()
    );
}

/// A running node (`efa-node run`) follows the hub through repeated crashes: every release
/// published after a crash is deployed exactly once, in order, and promptly: reconnecting
/// after a crash must not take longer the more crashes came before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_node_resumes_promptly_after_every_hub_crash() {
    let started = Instant::now();
    let crashes = cycles(7, 30);
    // However many crashes came before, a healthy hub is picked up again within this.
    let max_resume = Duration::from_secs(10);
    let (tmp, key) = fresh();
    let mut hub = HubProc::new(tmp.path());
    hub.start().await;
    hub.register_service().await;
    let mut node = NodeProc::new(&hub, &tmp.path().join("node"), DORTMUND, &key.verifying_key().to_text(), None);
    publish_version(&hub, &key, tmp.path(), "1.0.0", 1, 1024).await;
    let _run = node.spawn("run");
    let mut deployed = vec!["1.0.0".to_string()];
    wait_for(Duration::from_secs(60), "1.0.0 deployed", || async {
        (ledger(&hub, DORTMUND).await == pairs(&deployed)).then_some(())
    })
    .await;

    let mut latencies = Vec::new();
    for i in 1..=crashes {
        // The node is idle and connected; the hub dies and comes back.
        hub.restart().await;
        let version = format!("1.{i}.0");
        publish_version(&hub, &key, tmp.path(), &version, 1, 1024).await;
        let published = Instant::now();
        deployed.push(version.clone());
        let deadline = published + max_resume;
        loop {
            let seen = ledger(&hub, DORTMUND).await;
            if seen == pairs(&deployed) {
                break;
            }
            assert!(
                seen.len() <= deployed.len() * 2 && pairs(&deployed).starts_with(&seen),
                "crash {i}: adoption history is not one evaluating/deployed pair per release in order: {seen:?}"
            );
            assert!(
                Instant::now() < deadline,
                "crash {i}: {version} not deployed {max_resume:?} after it was published on the restarted hub; the \
                 node has not reconnected (resume latencies after the earlier crashes: {latencies:?}; does the \
                 reconnect backoff reset after a successful reconnect?)"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        latencies.push(published.elapsed());
    }
    assert_eq!(node.current().as_deref(), deployed.last().map(String::as_str));
    eprintln!(
        "fault resume/running: hub crashes injected {}, releases {} deployed once each in order, duplicates 0, resume \
         latencies {latencies:.1?}; {:.1?}",
        hub.kills,
        deployed.len(),
        started.elapsed()
    );
}

/// The hub crashes while a running node downloads a release: the node resumes the
/// download from the restarted hub, deploys the release, and reports it exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hub_crash_during_a_download_is_resumed_and_reported_once() {
    let started = Instant::now();
    let crashes = cycles(2, 10);
    let (tmp, key) = fresh();
    let mut hub = HubProc::new(tmp.path());
    hub.start().await;
    hub.register_service().await;
    let mut node = NodeProc::new(&hub, &tmp.path().join("node"), DORTMUND, &key.verifying_key().to_text(), None);
    let _run = node.spawn("run");
    let partial = node.state_dir.join("blobs/partial");
    let mut deployed = Vec::new();
    let mut hits = 0;
    for i in 0..crashes {
        let version = format!("1.{i}.0");
        publish_version(&hub, &key, tmp.path(), &version, 6, 4 * 1024 * 1024).await;
        deployed.push(version.clone());
        // Kill the hub as soon as a blob is half downloaded.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if std::fs::read_dir(&partial).is_ok_and(|mut d| d.next().is_some()) {
                hits += 1;
                break;
            }
            if node.current().as_deref() == Some(version.as_str()) {
                break; // downloaded before we saw it
            }
            assert!(Instant::now() < deadline, "{version}: the download never started");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        hub.restart().await;
        wait_for(Duration::from_secs(60), &format!("{version} deployed after the hub crash"), || async {
            let seen = ledger(&hub, DORTMUND).await;
            (seen.last() == Some(&(version.clone(), pb::AdoptionState::Deployed))).then_some(())
        })
        .await;
        assert_eq!(node.current().as_deref(), Some(version.as_str()));
        let seen = ledger(&hub, DORTMUND).await;
        assert_eq!(
            seen,
            pairs(&deployed),
            "{version}: the hub crashed during the node's download; the history must still hold one \
             evaluating/deployed pair per release"
        );
    }
    assert!(hits > 0, "no crash hit a download in progress");
    eprintln!(
        "fault resume/download: hub crashes injected {} ({hits} during a download), releases {} deployed once each, \
         duplicates 0; {:.1?}",
        hub.kills,
        deployed.len(),
        started.elapsed()
    );
}
