//! The PostgreSQL store: the shared store suite against a real server started by the test
//! kit, and event seqs under writers on several connections.

/// A store on a fresh database of the shared test server; `None` (after saying so) where
/// PostgreSQL is not installed and tools are not required.
fn store() -> Option<super::PostgresStore> {
    if !efa_testkit::tools::check("postgres store", efa_testkit::postgres::available(), "apt-get install postgresql") {
        return None;
    }
    let url = efa_testkit::postgres::database().expect("a fresh database");
    Some(super::PostgresStore::open(&url).expect("the store opens"))
}

mod suite {
    // Each suite test skips (loudly) without PostgreSQL, or fails under EFA_REQUIRE_TOOLS.
    crate::store_test_suite!(match super::store() {
        Some(s) => s,
        None => return,
    });
}

/// Three "replicas" (each its own connection pool) write events at once while a reader
/// follows the log by cursor, as a hub's event streams do. Every seq must be seen exactly
/// once and in order: a seq that commits after a higher one would be skipped for good.
#[test]
fn concurrent_writers_on_several_connections_never_make_a_reader_skip() {
    use crate::store::Store;
    use efa_domain::model::catalog::SigningKeys;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    if !efa_testkit::tools::check("postgres seqs", efa_testkit::postgres::available(), "apt-get install postgresql") {
        return;
    }
    let url = efa_testkit::postgres::database().expect("a fresh database");
    let replicas: Vec<Arc<super::PostgresStore>> =
        (0..3).map(|_| Arc::new(super::PostgresStore::open(&url).expect("the store opens"))).collect();
    const WRITERS_PER_REPLICA: usize = 4;
    const WRITES: usize = 60;
    let total = (replicas.len() * WRITERS_PER_REPLICA * WRITES) as u64;
    let done = Arc::new(AtomicBool::new(false));

    let reader = {
        let store = replicas[0].clone();
        let done = done.clone();
        std::thread::spawn(move || {
            let mut cursor = 0u64;
            let mut seen = Vec::new();
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
            while cursor < total && std::time::Instant::now() < deadline {
                for e in store.events_after(cursor, 50).expect("read the log") {
                    assert_eq!(
                        e.seq,
                        cursor + 1,
                        "after {cursor} the reader got {}: a seq was skipped or repeated",
                        e.seq
                    );
                    cursor = e.seq;
                    seen.push(e.seq);
                }
                if done.load(Ordering::Relaxed) && cursor == store.head_seq().unwrap() {
                    break;
                }
            }
            seen
        })
    };
    let writers: Vec<_> = replicas
        .iter()
        .enumerate()
        .flat_map(|(r, store)| (0..WRITERS_PER_REPLICA).map(move |w| (r, w, store.clone())))
        .map(|(r, w, store)| {
            std::thread::spawn(move || {
                for i in 0..WRITES {
                    let land = format!("{:02}", 1 + (r * WRITERS_PER_REPLICA + w) % 16).parse().unwrap();
                    let keys = SigningKeys { keys: vec![format!("k{r}-{w}-{i}")], updated_at_ms: i as i64 };
                    store.put_signing_keys(&land, &keys).expect("write");
                }
            })
        })
        .collect();
    for w in writers {
        w.join().expect("writer");
    }
    done.store(true, Ordering::Relaxed);
    let seen = reader.join().expect("reader");
    assert_eq!(seen.len() as u64, total, "the reader saw every event once");
    assert_eq!(replicas[2].head_seq().unwrap(), total);
}

/// A job's lease goes to one replica at a time and passes on only when it runs out.
#[test]
fn a_lease_is_held_by_one_replica_until_it_runs_out() {
    use crate::store::Store;
    let Some(a) = store() else { return };
    assert!(a.take_lease("blob-gc", "a", 60_000).unwrap());
    assert!(!a.take_lease("blob-gc", "b", 60_000).unwrap(), "b waits while a holds it");
    assert!(a.take_lease("blob-gc", "a", 60_000).unwrap(), "a renews");
    assert!(a.take_lease("event-retention", "b", 60_000).unwrap(), "leases are per job");
    assert!(a.take_lease("other", "a", -1).unwrap());
    assert!(a.take_lease("other", "b", 60_000).unwrap(), "an expired lease passes on");
}

/// Group commit: the commit thread's writes between `begin_batch` and `flush` share one
/// transaction; a refused write rolls back alone; other threads see the batch only once
/// it is committed; the batch's own reads see its writes.
#[test]
fn a_batch_commits_at_flush_and_a_refused_write_rolls_back_alone() {
    use crate::store::Store;
    use efa_domain::model::catalog::Service;
    use efa_domain::model::event::EventKind;
    let Some(store) = store() else { return };
    let store = std::sync::Arc::new(store);
    let service = Service {
        id: "wohngeld-nrw".parse().unwrap(),
        ozg_id: "10092".parse().unwrap(),
        leistungsschluessel: None,
        title: "Wohngeld".into(),
        description: String::new(),
        land: "05".parse().unwrap(),
        themenfeld: "Arbeit & Ruhestand".into(),
        lebenslage: String::new(),
        parameters: vec![],
        registered_at_ms: 1,
        adoption_public: false,
        more_leistungsschluessel: vec![],
        deprecated: None,
    };
    let registered = || EventKind::ServiceRegistered { service_id: service.id.clone(), land: service.land.clone() };
    store.begin_batch();
    store.put_service(&service, registered()).unwrap();
    assert!(store.service(&service.id).unwrap().is_some(), "the batch reads its own writes");
    let other = {
        let (s, id) = (store.clone(), service.id.clone());
        std::thread::spawn(move || s.service(&id).unwrap()).join().unwrap()
    };
    assert!(other.is_none(), "nothing is visible to others before the batch commits");
    let release = efa_domain::model::release::Release {
        service_id: service.id.clone(),
        version: "1.0.0".parse().unwrap(),
        channel: Default::default(),
        land: service.land.clone(),
        content_digest: efa_domain::bundle::Digest::of(b"x"),
        total_size: 1,
        file_count: 1,
        release_notes: String::new(),
        published_at_ms: 2,
        manifest: vec![],
        signature: vec![],
        yank: None,
    };
    store.insert_release(&release, &[]).unwrap();
    assert!(store.insert_release(&release, &[]).is_err(), "a second 1.0.0 is refused");
    store.put_service(&service, registered()).unwrap();
    store.flush().unwrap();
    let events = store.events_after(0, 10).unwrap();
    let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, vec![1, 2, 3], "the refused write left no event and no gap");
    assert_eq!(store.releases(&service.id).unwrap().len(), 1);
}

/// Reports in batches, as the commit threads of three replicas send them, mixed with other
/// writes and with reads inside the batch: every seq is seen once and in order by a reader
/// following the log, each batch's reads see its own reports, the totals match a recount,
/// and every Kommune's history is in the order its reports were made.
#[test]
fn batched_reports_on_three_replicas_keep_seqs_totals_and_history() {
    use crate::store::Store;
    use efa_domain::model::adoption::{AdoptionEntry, AdoptionState};
    use efa_domain::model::catalog::SigningKeys;
    use std::sync::Arc;

    if !efa_testkit::tools::check("postgres batches", efa_testkit::postgres::available(), "apt-get install postgresql")
    {
        return;
    }
    let url = efa_testkit::postgres::database().expect("a fresh database");
    let replicas: Vec<Arc<super::PostgresStore>> =
        (0..3).map(|_| Arc::new(super::PostgresStore::open(&url).expect("the store opens"))).collect();
    const BATCHES: usize = 20;
    const PER_BATCH: usize = 25;
    let services = ["wohngeld-nrw", "elfe-hb"];
    let kommunen = ["05913000", "05113000", "05711000", "05515000", "05315000"];
    let writers: Vec<_> = replicas
        .iter()
        .enumerate()
        .map(|(r, store)| {
            let store = store.clone();
            std::thread::spawn(move || {
                for b in 0..BATCHES {
                    store.begin_batch();
                    let mut queued = Vec::new();
                    let mut keys_seq = 0;
                    for i in 0..PER_BATCH {
                        let n = (r * BATCHES + b) * PER_BATCH + i;
                        let entry = AdoptionEntry {
                            ags: kommunen[n % kommunen.len()].parse().unwrap(),
                            service_id: services[n % services.len()].parse().unwrap(),
                            version: Some("1.0.0".parse().unwrap()),
                            state: if n.is_multiple_of(3) { AdoptionState::Rejected } else { AdoptionState::Deployed },
                            reason: format!("r{r} b{b} i{i}"),
                            at_ms: n as i64,
                        };
                        if i % 2 == 0 {
                            // As the commit thread does: queued, applied with the batch.
                            queued.push((entry.reason.clone(), store.queue_adoption(&entry).expect("queue")));
                        } else {
                            let (record, _) = store.append_adoption(&entry).expect("report");
                            assert_eq!(record.latest.reason, entry.reason);
                        }
                        if i == 7 {
                            // A read in the batch sees the batch's reports, queued ones too.
                            let seen = store.adoption(&entry.service_id, &entry.ags).unwrap().unwrap();
                            assert_eq!(seen.latest.reason, entry.reason);
                        }
                        if i == 12 {
                            // Another kind of write in between takes the seq after the reports.
                            let keys = SigningKeys { keys: vec![format!("k{r}{b}")], updated_at_ms: 1 };
                            keys_seq = store.put_signing_keys(&"05".parse().unwrap(), &keys).expect("keys").seq;
                        }
                    }
                    store.flush().expect("flush");
                    let mut seqs = Vec::new();
                    for (reason, q) in queued {
                        let (record, event) = q.take().expect("applied at the flush");
                        assert_eq!(record.latest.reason, reason);
                        seqs.push(event.seq);
                    }
                    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "queued reports keep their order: {seqs:?}");
                    assert!(seqs[6] < keys_seq && keys_seq < seqs[7], "{seqs:?} {keys_seq}");
                }
            })
        })
        .collect();
    for w in writers {
        w.join().expect("writer");
    }
    let store = &replicas[0];
    let total = (replicas.len() * BATCHES * (PER_BATCH + 1)) as u64;
    let events = store.events_after(0, total as usize + 10).unwrap();
    assert_eq!(events.iter().map(|e| e.seq).collect::<Vec<_>>(), (1..=total).collect::<Vec<_>>());
    for s in services {
        let sid = s.parse().unwrap();
        let records = store.adopters(&sid).unwrap();
        let totals = store.service_totals(&sid).unwrap();
        assert_eq!(totals.records as usize, records.len());
        assert_eq!(totals.running as usize, records.iter().filter(|r| r.running.is_some()).count());
        let rejected = records.iter().filter(|r| r.latest.state == AdoptionState::Rejected).count();
        assert_eq!(totals.rejected as usize, rejected);
    }
    // Each Kommune's history follows the log's order of its reports.
    for k in kommunen {
        let ags = k.parse().unwrap();
        let logged: Vec<String> = events
            .iter()
            .filter_map(|e| match &e.kind {
                efa_domain::model::event::EventKind::AdoptionReported(a) if a.ags == ags => Some(a.reason.clone()),
                _ => None,
            })
            .collect();
        let history: Vec<String> = store.history_of(&ags).unwrap().into_iter().map(|h| h.reason).collect();
        assert_eq!(history, logged, "history of {k}");
    }
}
