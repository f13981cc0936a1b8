//! Guarantee 6: PostgreSQL restarted under write load. Callers get UNAVAILABLE (worth a
//! retry, never INTERNAL), nothing acknowledged is lost or stored twice, and writes go
//! through again once the database is back.

use efa_domain::model::release::UpdatePolicy;
use efa_hub::StoreLocation;
use efa_proto::v1 as pb;
use efa_tests::*;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_restart_under_load_loses_nothing_and_says_unavailable() {
    if !efa_testkit::tools::check("postgres restart", efa_testkit::postgres::available(), "apt-get install postgresql")
    {
        return;
    }
    // A server of its own: restarting the shared one would cut other tests' connections.
    let server = efa_testkit::postgres::private().expect("a private PostgreSQL");
    let url = server.database().expect("a database");
    let w = World::tuned(move |c| {
        c.store = StoreLocation::Postgres(url.clone());
        // The writers report as fast as the hub answers; on a quiet machine that is more
        // than a caller may send (RESOURCE_EXHAUSTED), which is not what this test is about.
        c.caller_limits.writes_per_second = 1e6;
        c.caller_limits.write_burst = 1e6;
    })
    .await;
    w.register(NRW, "wohngeld-nrw", "10092").await.unwrap();
    for ags in [DORTMUND, ESSEN] {
        w.node(ags, &[Sub { service: "wohngeld-nrw", policy: UpdatePolicy::Manual }])
            .register_subscriptions()
            .await
            .unwrap();
    }

    let acked: Arc<Mutex<BTreeMap<String, &'static str>>> = Default::default();
    let codes: Arc<Mutex<BTreeMap<String, usize>>> = Default::default();
    let restarted = Arc::new(AtomicBool::new(false));
    let acked_after_restart = Arc::new(Mutex::new(0usize));
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for ags in [DORTMUND, ESSEN] {
        let channel = w.channel(&kommune(ags)).await;
        let (acked, codes, stop, restarted, after) =
            (acked.clone(), codes.clone(), stop.clone(), restarted.clone(), acked_after_restart.clone());
        writers.push(tokio::spawn(async move {
            let mut client = AdoptionServiceClient::new(channel);
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let reason = format!("restart {ags} #{i}");
                let report = pb::AdoptionReport {
                    service_id: "wohngeld-nrw".into(),
                    version: String::new(),
                    state: pb::AdoptionState::Rejected as i32,
                    reason: reason.clone(),
                };
                match tokio::time::timeout(Duration::from_secs(20), client.report_adoption(report)).await {
                    Ok(Ok(_)) => {
                        acked.lock().unwrap().insert(reason, ags);
                        if restarted.load(Ordering::Relaxed) {
                            *after.lock().unwrap() += 1;
                        }
                    }
                    Ok(Err(status)) => {
                        *codes.lock().unwrap().entry(format!("{:?}", status.code())).or_default() += 1;
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    Err(_) => panic!("a report hung for 20 s"),
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    let s = server;
    let server = tokio::task::spawn_blocking(move || s.restart().map(|()| s)).await.unwrap().expect("restart");
    restarted.store(true, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::Relaxed);
    for wr in writers {
        wr.await.unwrap();
    }

    let codes = codes.lock().unwrap().clone();
    let acked = acked.lock().unwrap().clone();
    assert!(codes.keys().all(|c| c == "Unavailable"), "refusals while the database restarted: {codes:?}");
    assert!(*acked_after_restart.lock().unwrap() > 0, "writes go through again after the restart");
    for ags in [DORTMUND, ESSEN] {
        let history = w.history(ags).await;
        let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
        for h in &history {
            *seen.entry(h.reason.as_str()).or_default() += 1;
        }
        for (reason, _) in acked.iter().filter(|(_, who)| **who == ags) {
            assert_eq!(seen.get(reason.as_str()), Some(&1), "{reason}: acknowledged, so stored exactly once");
        }
    }
    eprintln!(
        "postgres restart: {} reports acknowledged ({} after the restart), refusals {codes:?}, 0 lost",
        acked.len(),
        acked_after_restart.lock().unwrap()
    );
    drop(server);
}
