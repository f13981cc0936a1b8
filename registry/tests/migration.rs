//! A store written by EfA Hub at commit eedda3c (store format 2, `tests/fixtures/store-eedda3c`,
//! see its README) opens with today's code: it is migrated in place and every record is
//! still there, with the same content.

use efa_domain::authz::Identity;
use efa_domain::model::adoption::{AdoptionState, ServiceTotals};
use efa_domain::model::ids::{Ags, LandCode, ServiceId};
use efa_domain::model::subscription::SubscriptionTarget;
use efa_domain::snapshot::Snapshot;
use efa_registry::store::sled::migrate::CURRENT_FORMAT;
use efa_registry::store::{SledStore, Store};
use efa_registry::Registry;
use std::path::Path;
use std::sync::Arc;

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/store-eedda3c");

/// A writable copy of the fixture (the committed one is never touched).
fn copy_fixture(to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(FIXTURE).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() && entry.file_name() != "README.md" {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

fn id(s: &str) -> ServiceId {
    s.parse().unwrap()
}
fn ags(s: &str) -> Ags {
    s.parse().unwrap()
}

#[test]
fn the_eedda3c_store_migrates_and_every_record_is_found() {
    let dir = tempfile::tempdir().unwrap();
    copy_fixture(dir.path());
    let store = Arc::new(SledStore::open(dir.path()).expect("format 2 migrates"));
    assert_eq!(store.format(), CURRENT_FORMAT);
    let reg = Registry::new(store.clone());
    let operator = Identity::Operator("audit".into());

    // Register and catalogue.
    let counts = reg.counts().unwrap();
    assert_eq!((counts.laender, counts.kreise, counts.kommunen, counts.ozg_leistungen, counts.leika), (2, 5, 6, 3, 2));
    assert_eq!(reg.kommune(&ags("05913000")).unwrap().name, "Dortmund, Stadt");

    // Services, releases, the yank.
    let services = reg.services(None, None).unwrap();
    assert_eq!(services.len(), 3);
    let wohngeld = reg.service(&id("wohngeld-nrw")).unwrap();
    assert_eq!(wohngeld.parameters.len(), 3);
    assert!(wohngeld.adoption_public);
    assert_eq!(reg.service(&id("schueler-bafoeg-by")).unwrap().land, "09".parse::<LandCode>().unwrap());
    let versions: Vec<String> =
        reg.releases(&id("wohngeld-nrw"), None).unwrap().iter().map(|r| r.version.to_string()).collect();
    assert_eq!(versions, ["1.1.0-beta.1", "1.0.1", "1.0.0"]);
    let yanked = reg.release(&id("wohngeld-nrw"), "1.0.0").unwrap();
    assert_eq!(yanked.yank.unwrap().reason, "Gebührenberechnung fehlerhaft");
    let beta = reg.release(&id("wohngeld-nrw"), "1.1.0-beta.1").unwrap();
    assert_eq!(beta.channel.as_str(), "beta");
    assert!(!beta.manifest.is_empty() && beta.signature.len() == 64);

    // The blob index was built from the releases' manifests.
    assert!(reg.blob_referenced(&efa_domain::bundle::Digest::of(b"1.0.1")).unwrap());
    assert!(!reg.blob_referenced(&efa_domain::bundle::Digest::of(b"never published")).unwrap());

    // Subscriptions (Lünen's was removed).
    assert_eq!(reg.subscriptions(&ags("05913000")).unwrap().len(), 1);
    assert!(matches!(
        &reg.subscriptions(&ags("05113000")).unwrap()[0].target,
        SubscriptionTarget::Themenfeld(t) if t == "Bauen & Wohnen"
    ));
    assert!(reg.subscriptions(&ags("05978024")).unwrap().is_empty());

    // The adoption ledger: current records, history (logged and bulk-loaded), counters.
    let adopters = reg.adopters(&operator, &id("wohngeld-nrw")).unwrap();
    assert_eq!(adopters.len(), 3);
    let dortmund = reg.adoption(&id("wohngeld-nrw"), &ags("05913000")).unwrap().unwrap();
    assert_eq!(dortmund.running.unwrap().to_string(), "1.0.1");
    let essen = reg.adoption(&id("wohngeld-nrw"), &ags("05113000")).unwrap().unwrap();
    assert_eq!(essen.latest.state, AdoptionState::RolledBack);
    let report = reg.kommune_report(&operator, &ags("05913000")).unwrap();
    assert_eq!((report.current.len(), report.history.len()), (2, 5));
    assert_eq!(reg.kommune_report(&operator, &ags("05711000")).unwrap().history.len(), 1, "bulk-loaded history");
    assert_eq!(
        reg.service_totals(&id("wohngeld-nrw")).unwrap(),
        ServiceTotals { records: 3, running: 2, rejected: 0, ratings: 2, stars_sum: 7 }
    );
    assert_eq!(reg.service_totals(&id("gewerbeanmeldung-nrw")).unwrap().rejected, 1);
    assert_eq!(reg.kommunen_with_records().unwrap(), 4);

    // Ratings: Dortmund's re-rating replaced its first one.
    let summary = reg.rating_summary(&id("wohngeld-nrw")).unwrap();
    assert_eq!(summary.overall.count, 2);
    assert!((summary.overall.average_stars - 3.5).abs() < 1e-9);

    // The Land's signed snapshot and the whole event log, gapless.
    let (bytes, signature) = reg.snapshot(&"05".parse().unwrap()).unwrap();
    assert_eq!(Snapshot::from_bytes(&bytes).unwrap().latest.len(), 1);
    assert_eq!(signature.len(), 64);
    assert_eq!(reg.head_seq().unwrap(), 25);
    let seqs: Vec<u64> = reg.events_after(0, 100).unwrap().iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=25).collect::<Vec<_>>());

    // The migrated store takes new writes and opens again without migrating.
    drop(reg);
    store.flush().unwrap();
    drop(store);
    let again = SledStore::open(dir.path()).unwrap();
    assert_eq!(again.format(), CURRENT_FORMAT);
    assert_eq!(again.head_seq().unwrap(), 25);
}
