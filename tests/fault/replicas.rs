//! Guarantee 5: with hub replicas on one PostgreSQL database, SIGKILL of one replica under
//! write load loses no acknowledged write and duplicates none, and a node that knows both
//! replicas carries on with the survivor within seconds.

use crate::harness::*;
use efa_domain::model::release::UpdatePolicy;
use efa_proto::v1 as pb;
use efa_tests::{AdoptionServiceClient, DORTMUND, ESSEN};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const WRITERS: [&str; 2] = [DORTMUND, ESSEN];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_replica_under_load_loses_no_acknowledged_write() {
    if !efa_testkit::tools::check("replica kill", efa_testkit::postgres::available(), "apt-get install postgresql") {
        return;
    }
    let url = efa_testkit::postgres::database().expect("a fresh database");
    let dir = tempfile::tempdir().unwrap();
    let mut a = HubProc::new(dir.path());
    a.extra_args = vec!["--store".into(), url];
    let mut b = a.replica();
    a.start().await;
    b.start().await;
    a.register_service().await;
    for ags in WRITERS {
        a.subscribe(ags).await;
    }

    // Writers report over both replicas, alternating; a call to a dead replica fails and
    // the next goes to the other. An acknowledged report must be in the ledger once.
    let acked: Arc<Mutex<BTreeMap<String, String>>> = Default::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut writers = Vec::new();
    for ags in WRITERS {
        let channels = [a.lazy_channel(&kommune(ags)), b.lazy_channel(&kommune(ags))];
        let (acked, stop) = (acked.clone(), stop.clone());
        writers.push(tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                i += 1;
                let reason = format!("replica fault {ags} #{i}");
                let report = pb::AdoptionReport {
                    service_id: SERVICE.into(),
                    version: String::new(),
                    state: pb::AdoptionState::Rejected as i32,
                    reason: reason.clone(),
                };
                let mut client = AdoptionServiceClient::new(channels[(i % 2) as usize].clone());
                match tokio::time::timeout(Duration::from_secs(10), client.report_adoption(report)).await {
                    Ok(Ok(_)) => {
                        acked.lock().unwrap().insert(reason, ags.to_string());
                    }
                    _ => tokio::time::sleep(Duration::from_millis(10)).await,
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(300 + efa_testkit::rng::Rng::from_env("replica kill").range(0, 700)))
        .await;
    a.kill();
    let acked_before_kill = acked.lock().unwrap().len();
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for w in writers {
        w.await.unwrap();
    }

    // Every acknowledged report is in the ledger, once, read through the survivor.
    let acked = acked.lock().unwrap().clone();
    let mut lost = Vec::new();
    let mut twice = Vec::new();
    for ags in WRITERS {
        let history = b.history(ags).await;
        let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
        for h in &history {
            *seen.entry(h.reason.as_str()).or_default() += 1;
        }
        for (reason, who) in acked.iter().filter(|(_, who)| who.as_str() == ags) {
            match seen.get(reason.as_str()) {
                None => lost.push(format!("{who}: {reason}")),
                Some(n) if *n > 1 => twice.push(reason.clone()),
                _ => {}
            }
        }
    }
    assert!(lost.is_empty(), "acknowledged reports lost: {lost:?}");
    assert!(twice.is_empty(), "reports stored twice: {twice:?}");
    assert!(acked.len() > acked_before_kill, "writes went on through the survivor");

    // A node that knows both replicas: A is dead; it syncs through B.
    let started = Instant::now();
    let node_dir = dir.path().join("node");
    let mut config =
        efa_node::NodeConfig::new(DORTMUND.parse().unwrap(), a.url(), node_dir.join("state"), node_dir.join("deploy"))
            .with_tls(a.tls(&kommune(DORTMUND)))
            .subscribe(SERVICE.parse().unwrap(), UpdatePolicy::Auto);
    config.hubs = vec![b.url()];
    let handled = efa_node::Agent::new(config).unwrap().sync().await.unwrap();
    let took = started.elapsed();
    assert!(took < Duration::from_secs(5), "the node synced through the survivor in {took:?}");
    eprintln!(
        "replicas: {} reports acknowledged ({} before the kill), 0 lost, 0 twice; a node with the dead replica first synced through the other in {took:.1?} ({} handled)",
        acked.len(),
        acked_before_kill,
        handled.len()
    );
    b.kill();
}
