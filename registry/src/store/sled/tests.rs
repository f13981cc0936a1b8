//! The sled store: the shared store suite, reopening, and refusing formats it cannot read.

crate::store_test_suite!(super::SledStore::temporary().unwrap());

/// Runs `open` until the `sled::Db` dropped just before has let go of its file lock:
/// sled's flusher thread releases it shortly after the drop, not during it.
/// (`SledStore::open` waits for that itself; a raw `sled::open` does not.)
fn when_unlocked<T, E: std::fmt::Display>(open: impl Fn() -> std::result::Result<T, E>) -> std::result::Result<T, E> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        match open() {
            Err(e) if e.to_string().contains("could not acquire lock") && std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            other => return other,
        }
    }
}

#[test]
fn data_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = super::SledStore::open(dir.path()).unwrap();
        let s = service();
        store.put_service(&s, EventKind::ServiceRegistered { service_id: s.id.clone(), land: s.land.clone() }).unwrap();
        store.flush().unwrap();
    }
    let store = super::SledStore::open(dir.path()).unwrap();
    assert_eq!(store.head_seq().unwrap(), 1);
    assert!(store.service(&"wohngeld-nrw".parse().unwrap()).unwrap().is_some());
}

/// `sled_compression` decides only how a store is created: sled refuses to open a database
/// with another setting, so a store keeps its own whatever the hub is told later.
#[test]
fn a_store_keeps_the_compression_it_was_created_with() {
    use super::SledOptions;
    for created_compressed in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        {
            let store =
                super::SledStore::open_with(dir.path(), SledOptions { compression: created_compressed }).unwrap();
            let s = service();
            store
                .put_service(&s, EventKind::ServiceRegistered { service_id: s.id.clone(), land: s.land.clone() })
                .unwrap();
            store.flush().unwrap();
        }
        let conf = String::from_utf8_lossy(&std::fs::read(dir.path().join("conf")).unwrap()).into_owned();
        assert_eq!(conf.contains("use_compression: true"), created_compressed, "{conf}");
        // Reopened with the other setting: the store opens as it was created, data intact.
        let store = super::SledStore::open_with(dir.path(), SledOptions { compression: !created_compressed }).unwrap();
        assert!(store.service(&"wohngeld-nrw".parse().unwrap()).unwrap().is_some());
        drop(store);
        let conf = String::from_utf8_lossy(&std::fs::read(dir.path().join("conf")).unwrap()).into_owned();
        assert_eq!(conf.contains("use_compression: true"), created_compressed, "{conf}");
    }
}

#[test]
fn a_json_era_store_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    {
        // What a JSON-era store looks like: data, but no format marker.
        let db = sled::open(dir.path()).unwrap();
        db.open_tree("services").unwrap().insert(b"wohngeld-nrw", &b"{\"id\":\"wohngeld-nrw\"}"[..]).unwrap();
        db.flush().unwrap();
    }
    let err = super::SledStore::open(dir.path()).err().expect("old store refused");
    assert!(err.to_string().contains("format 1"), "{err}");
    let db = when_unlocked(|| sled::open(dir.path())).unwrap();
    assert!(db.open_tree("services").unwrap().get(b"wohngeld-nrw").unwrap().is_some());
    assert!(db.open_tree("meta").unwrap().get(super::migrate::FORMAT_KEY).unwrap().is_none());
}

#[test]
fn a_store_of_a_newer_format_is_refused_naming_both_versions() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = sled::open(dir.path()).unwrap();
        db.open_tree("meta").unwrap().insert(super::migrate::FORMAT_KEY, &b"efa-sled-9"[..]).unwrap();
        db.flush().unwrap();
    }
    let err = super::SledStore::open(dir.path()).err().expect("newer store refused").to_string();
    assert!(err.contains("format 9") && err.contains("formats 2 to 4"), "{err}");
}

/// One report whose stored record is unreadable fails alone; the run's other reports are
/// applied (each then in a transaction of its own).
#[test]
fn a_corrupt_record_fails_only_its_own_report_in_a_run() {
    use efa_domain::model::adoption::{AdoptionEntry, AdoptionState};
    let store = super::SledStore::temporary().unwrap();
    let entry = |a: &str| AdoptionEntry {
        ags: a.parse().unwrap(),
        service_id: "wohngeld-nrw".parse().unwrap(),
        version: None,
        state: AdoptionState::Evaluating,
        reason: String::new(),
        at_ms: 1,
    };
    store.adoption.insert(super::key(&[b"wohngeld-nrw", b"05113000"]), &b"\xffnot a record"[..]).unwrap();
    let out = store.queue_adoptions(&[entry("05913000"), entry("05113000"), entry("05711000")]);
    let out: Vec<_> = out.into_iter().map(|q| q.and_then(|q| q.take())).collect();
    assert!(out[0].is_ok() && out[2].is_ok(), "{out:?}");
    assert!(out[1].as_ref().unwrap_err().to_string().contains("adoption"), "{:?}", out[1]);
    assert_eq!(store.head_seq().unwrap(), 2, "two events, no gap");
    let seqs: Vec<u64> = store.events_after(0, 10).unwrap().iter().map(|e| e.seq).collect();
    assert_eq!(seqs, [1, 2]);
}
