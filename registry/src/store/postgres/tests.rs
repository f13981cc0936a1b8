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
    store.insert_release(&release).unwrap();
    assert!(store.insert_release(&release).is_err(), "a second 1.0.0 is refused");
    store.put_service(&service, registered()).unwrap();
    store.flush().unwrap();
    let events = store.events_after(0, 10).unwrap();
    let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, vec![1, 2, 3], "the refused write left no event and no gap");
    assert_eq!(store.releases(&service.id).unwrap().len(), 1);
}
