//! A store of an older format is migrated in place on the first start of a new hub. Killed
//! with SIGKILL at random points of that migration, the store is never a mix the next start
//! cannot read: every record is either still in the old form (after the recorded progress)
//! or fully in the new one, and the next start finishes the job. At the end every record is
//! there, with its content.

use crate::harness::*;
use efa_registry::store::sled::migrate::{CURRENT_FORMAT, RECORD_TREES};
use efa_registry::store::{SledStore, Store};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../registry/tests/fixtures/store-eedda3c");
/// Extra history records cloned into the old store, so the migration takes long enough to
/// be killed in the middle.
const EXTRA_HISTORY: u64 = 150_000;

type Raw = BTreeMap<(String, Vec<u8>), Vec<u8>>;

/// Copies the eedda3c fixture (store format 2) to `db` and enlarges its history with clones
/// of a real record; returns every record value as format 2 wrote it.
fn legacy_store(db: &Path) -> Raw {
    std::fs::create_dir_all(db).unwrap();
    for entry in std::fs::read_dir(FIXTURE).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() && entry.file_name() != "README.md" {
            std::fs::copy(entry.path(), db.join(entry.file_name())).unwrap();
        }
    }
    let sled_db = sled::open(db).unwrap();
    let history = sled_db.open_tree("history").unwrap();
    // A real history record of Dortmund, cloned under new seqs.
    let (template_key, template) = history.scan_prefix(b"05913000\0").next().unwrap().unwrap();
    let ags = &template_key[..8];
    let mut batch = sled::Batch::default();
    for i in 0..EXTRA_HISTORY {
        let mut key = ags.to_vec();
        key.push(0);
        key.extend_from_slice(&(1_000_000 + i).to_be_bytes());
        batch.insert(key, template.clone());
    }
    history.apply_batch(batch).unwrap();
    sled_db.flush().unwrap();
    raw_records(&sled_db)
}

fn raw_records(db: &sled::Db) -> Raw {
    let mut out = Raw::new();
    for name in RECORD_TREES {
        for kv in db.open_tree(name).unwrap().iter() {
            let (k, v) = kv.unwrap();
            out.insert((name.to_string(), k.to_vec()), v.to_vec());
        }
    }
    out
}

/// Where an interrupted migration stands; panics if any record is neither its old form
/// (beyond the recorded progress) nor its new form (up to it).
fn check_never_a_mix(db_dir: &Path, originals: &Raw) -> &'static str {
    let db = sled::open(db_dir).unwrap();
    let meta = db.open_tree("meta").unwrap();
    let format = meta.get(b"format").unwrap().map(|f| String::from_utf8_lossy(&f).to_string()).unwrap_or_default();
    let done = format == format!("efa-sled-{CURRENT_FORMAT}");
    assert!(done || format == "efa-sled-postcard-2", "unexpected format marker {format:?}");
    let mut rewritten = 0usize;
    for name in RECORD_TREES {
        // Once migrated, a starting hub refreshes the register from the shipped file (it adds
        // population and postcodes), so those trees are no longer the old records.
        if done && ["laender", "kreise", "kommunen"].contains(&name) {
            continue;
        }
        let tree_done = done || meta.get(format!("migrate-3/{name}/done")).unwrap().is_some();
        let progress = meta.get(format!("migrate-3/{name}")).unwrap().map(|p| p.to_vec());
        let tree = db.open_tree(name).unwrap();
        assert_eq!(tree.len(), originals.keys().filter(|(t, _)| t == name).count(), "{name}: no record lost or added");
        for kv in tree.iter() {
            let (k, v) = kv.unwrap();
            let original = &originals[&(name.to_string(), k.to_vec())];
            let wrapped = tree_done || progress.as_ref().is_some_and(|p| k.as_ref() <= p.as_slice());
            if wrapped {
                assert_eq!(v[0], 1, "{name}: a rewritten record starts with its version");
                assert_eq!(&v[1..], original.as_slice(), "{name}: a rewritten record keeps its content");
                rewritten += 1;
            } else {
                assert_eq!(v.as_ref(), original.as_slice(), "{name}: a record beyond the progress is untouched");
            }
        }
    }
    match (done, rewritten) {
        (true, _) => "done",
        (false, 0) => "not started",
        (false, _) => "in progress",
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_migration_killed_anywhere_resumes_and_loses_nothing() {
    let mut rng = efa_testkit::Rng::from_env("migration");
    let tmp = tempfile::tempdir().unwrap();
    let mut hub = HubProc::new(tmp.path());
    let db_dir = hub.data_dir.join("db");
    let originals = legacy_store(&db_dir);

    // How long a whole migration takes here, so the kills land inside it: a copy of the
    // old store is migrated in this process first.
    let probe = tmp.path().join("probe");
    legacy_store(&probe);
    let started = std::time::Instant::now();
    drop(SledStore::open(&probe).unwrap());
    let migration_ms = started.elapsed().as_millis() as u64;

    let cycles = cycles(8, 30);
    let mut seen = BTreeMap::<&str, usize>::new();
    let mut window_ms = (migration_ms / 2).max(1);
    for _ in 0..cycles {
        hub.spawn();
        // Once the hub says it migrates, a kill anywhere in the first part of the rest.
        let log = hub.child.as_ref().unwrap().log.clone();
        wait_for(Duration::from_secs(30), "the hub to start or finish the migration", || {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            async move { (text.contains("migrating the store") || text.contains("hub listening")).then_some(()) }
        })
        .await;
        tokio::time::sleep(Duration::from_millis(rng.range(0, window_ms))).await;
        hub.kill();
        let state = check_never_a_mix(&db_dir, &originals);
        *seen.entry(state).or_default() += 1;
        if state == "done" {
            if seen.contains_key("in progress") {
                break;
            }
            // The hub process finished before a kill landed inside (the probe ran on a
            // busier or idler machine than the hub): start over from the old store and
            // aim earlier.
            std::fs::remove_dir_all(&db_dir).unwrap();
            assert!(legacy_store(&db_dir) == originals, "the old store is rebuilt identically");
            window_ms = (window_ms / 2).max(1);
        }
    }
    assert!(seen.contains_key("in progress"), "no kill landed inside the migration: {seen:?}");
    // The next start finishes (or finds finished) the migration and serves.
    hub.start().await;
    hub.kill();
    assert_eq!(check_never_a_mix(&db_dir, &originals), "done");

    let store = SledStore::open(&db_dir).unwrap();
    assert_eq!(store.migrated_from(), None, "migrated once, not again");
    assert_eq!(store.head_seq().unwrap(), 25);
    let dortmund = "05913000".parse().unwrap();
    let history = store.history_of(&dortmund).unwrap();
    assert_eq!(history.len() as u64, 5 + EXTRA_HISTORY, "every history record decodes");
    let kommune = store.kommune(&dortmund).unwrap().unwrap();
    assert_eq!(kommune.population, Some(593_317), "the register gained its statistics on the first start");
    eprintln!(
        "migration: {} records (a whole migration takes {migration_ms} ms here), {} kills ({seen:?}), then a clean start; nothing lost",
        originals.len(),
        hub.kills
    );
}
