//! Storage behind one trait, so the hub's state can move to another engine (e.g. a
//! PostgreSQL-compatible database) without touching the domain rules.
//!
//! Each mutating method is one atomic step that also appends its event to the log, so the
//! log never disagrees with the data. Implementations make a write durable before they
//! return from [`Store::flush`]; the registry calls it before acknowledging.

pub mod sled_store;

use crate::error::Result;
use crate::model::adoption::{AdoptionEntry, AdoptionRecord, ServiceTotals};
use crate::model::catalog::{Kommune, Kreis, Land, LeikaEntry, OzgLeistung, Service};
use crate::model::event::{Event, EventKind};
use crate::model::ids::{Ags, KreisCode, LandCode, Leistungsschluessel, OzgId, ServiceId};
use crate::model::rating::Rating;
use crate::model::release::{Release, Yank};
use crate::model::subscription::Subscription;

pub use sled_store::SledStore;

/// Counts of what an import wrote, for reporting.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImportCounts {
    pub laender: usize,
    pub kreise: usize,
    pub kommunen: usize,
    pub ozg_leistungen: usize,
    pub leika: usize,
}

pub trait Store: Send + Sync + 'static {
    // --- register (idempotent upserts) ---
    fn import_register(&self, laender: &[Land], kreise: &[Kreis], kommunen: &[Kommune]) -> Result<()>;
    fn import_catalogue(&self, ozg: &[OzgLeistung], leika: &[LeikaEntry]) -> Result<()>;
    fn counts(&self) -> Result<ImportCounts>;
    fn kommune(&self, ags: &Ags) -> Result<Option<Kommune>>;
    fn kommunen(&self) -> Result<Vec<Kommune>>;
    fn land(&self, code: &LandCode) -> Result<Option<Land>>;
    fn laender(&self) -> Result<Vec<Land>>;
    fn kreis(&self, code: &KreisCode) -> Result<Option<Kreis>>;
    fn kreise(&self) -> Result<Vec<Kreis>>;
    fn ozg_leistung(&self, id: &OzgId) -> Result<Option<OzgLeistung>>;
    fn leika(&self, key: &Leistungsschluessel) -> Result<Option<LeikaEntry>>;

    // --- services and releases ---
    fn put_service(&self, service: &Service, event: EventKind) -> Result<Event>;
    fn service(&self, id: &ServiceId) -> Result<Option<Service>>;
    fn services(&self) -> Result<Vec<Service>>;
    /// Inserts a release; `AlreadyExists` if that version exists (releases are immutable).
    fn insert_release(&self, release: &Release) -> Result<Event>;
    fn release(&self, service: &ServiceId, version: &semver::Version) -> Result<Option<Release>>;
    /// All releases of a service, newest version first.
    fn releases(&self, service: &ServiceId) -> Result<Vec<Release>>;
    /// Marks a release yanked; `FailedPrecondition` if it already is.
    fn yank_release(&self, service: &ServiceId, version: &semver::Version, yank: Yank) -> Result<(Release, Event)>;

    // --- subscriptions ---
    fn put_subscription(&self, sub: &Subscription) -> Result<Event>;
    fn remove_subscription(&self, ags: &Ags, target_key: &str) -> Result<Option<Event>>;
    fn subscriptions_of(&self, ags: &Ags) -> Result<Vec<Subscription>>;
    fn all_subscriptions(&self) -> Result<Vec<Subscription>>;

    // --- adoption ledger ---
    fn append_adoption(&self, entry: &AdoptionEntry) -> Result<(AdoptionRecord, Event)>;
    fn adoption(&self, service: &ServiceId, ags: &Ags) -> Result<Option<AdoptionRecord>>;
    fn adopters(&self, service: &ServiceId) -> Result<Vec<AdoptionRecord>>;
    fn adoptions_of(&self, ags: &Ags) -> Result<Vec<AdoptionRecord>>;
    fn history_of(&self, ags: &Ags) -> Result<Vec<AdoptionEntry>>;
    /// Loads many ledger entries at once, for migrations and benchmarks only: entries are
    /// folded into the current records, the Kommune index and the history exactly as
    /// [`append_adoption`](Self::append_adoption) would, but in large write batches, with
    /// **no events appended** (nodes are not told) and one flush at the end instead of one
    /// per entry. Entries of one (service, Kommune) pair must be in ledger order; their
    /// history sorts before every entry written through the event log. The caller has
    /// validated the entries (the registry's rules are not applied).
    fn bulk_load_adoptions(&self, entries: &[AdoptionEntry]) -> Result<()>;
    /// The service's counters as of the last write (zero for a service without records).
    fn service_totals(&self, service: &ServiceId) -> Result<ServiceTotals>;
    /// Number of Kommunen with at least one ledger entry.
    fn kommunen_with_records(&self) -> Result<usize>;
    /// Kommunen with at least one ledger entry whose AGS starts with `prefix`, in AGS order.
    fn kommunen_with_records_under(&self, prefix: &str) -> Result<Vec<Ags>>;

    // --- ratings ---
    fn put_rating(&self, rating: &Rating) -> Result<Event>;
    fn ratings(&self, service: &ServiceId) -> Result<Vec<Rating>>;

    // --- Land snapshots (freeze protection) ---
    /// Stores the Land's signed snapshot, replacing the previous one.
    fn put_snapshot(&self, land: &LandCode, snapshot: &[u8], signature: &[u8]) -> Result<()>;
    fn snapshot(&self, land: &LandCode) -> Result<Option<(Vec<u8>, Vec<u8>)>>;

    // --- event log ---
    fn events_after(&self, seq: u64, limit: usize) -> Result<Vec<Event>>;
    fn head_seq(&self) -> Result<u64>;
    /// Seq of the oldest event still stored (`None`: the log is empty).
    fn oldest_seq(&self) -> Result<Option<u64>>;
    /// Removes events with seq < `before`; returns how many. The head seq never moves back.
    fn trim_events(&self, before: u64) -> Result<usize>;

    /// Makes every write so far durable.
    fn flush(&self) -> Result<()>;
}

/// One behavioural test suite that every backend must pass.
#[cfg(test)]
#[macro_export]
macro_rules! store_test_suite {
    ($make:expr) => {
        use $crate::model::adoption::*;
        use $crate::model::catalog::*;
        use $crate::model::event::EventKind;
        use $crate::model::release::*;
        use $crate::store::Store;

        fn service() -> Service {
            Service {
                id: "wohngeld-nrw".parse().unwrap(),
                ozg_id: "10001".parse().unwrap(),
                leistungsschluessel: None,
                title: "Wohngeld".into(),
                description: String::new(),
                land: "05".parse().unwrap(),
                themenfeld: "Bauen & Wohnen".into(),
                lebenslage: "Wohnen".into(),
                parameters: vec![],
                registered_at_ms: 1,
                adoption_public: false,
            }
        }

        fn release(v: &str) -> Release {
            Release {
                service_id: "wohngeld-nrw".parse().unwrap(),
                version: v.parse().unwrap(),
                channel: Default::default(),
                land: "05".parse().unwrap(),
                content_digest: $crate::bundle::Digest::of(v.as_bytes()),
                total_size: 1,
                file_count: 1,
                release_notes: String::new(),
                published_at_ms: 2,
                manifest: vec![],
                signature: vec![],
                yank: None,
            }
        }

        #[test]
        fn releases_are_immutable_and_sorted_by_semver() {
            let store = $make;
            let s = service();
            store
                .put_service(&s, EventKind::ServiceRegistered { service_id: s.id.clone(), land: s.land.clone() })
                .unwrap();
            for v in ["1.9.0", "1.10.0", "1.2.0"] {
                store.insert_release(&release(v)).unwrap();
            }
            let err = store.insert_release(&release("1.10.0")).unwrap_err();
            assert_eq!(err.kind(), $crate::error::ErrorKind::AlreadyExists);
            let versions: Vec<String> = store.releases(&s.id).unwrap().iter().map(|r| r.version.to_string()).collect();
            assert_eq!(versions, ["1.10.0", "1.9.0", "1.2.0"]);
        }

        #[test]
        fn event_log_is_gapless_and_ordered() {
            let store = $make;
            let s = service();
            store
                .put_service(&s, EventKind::ServiceRegistered { service_id: s.id.clone(), land: s.land.clone() })
                .unwrap();
            store.insert_release(&release("1.0.0")).unwrap();
            let _ = store.insert_release(&release("1.0.0"));
            store.yank_release(&s.id, &"1.0.0".parse().unwrap(), Yank { reason: "bug".into(), at_ms: 3 }).unwrap();
            let seqs: Vec<u64> = store.events_after(0, 100).unwrap().iter().map(|e| e.seq).collect();
            assert_eq!(seqs, [1, 2, 3]);
            assert_eq!(store.head_seq().unwrap(), 3);
            assert_eq!(store.events_after(2, 100).unwrap().len(), 1);
            assert!(store
                .yank_release(&s.id, &"1.0.0".parse().unwrap(), Yank { reason: "x".into(), at_ms: 4 })
                .is_err());
            assert_eq!(store.oldest_seq().unwrap(), Some(1));
            assert_eq!(store.trim_events(3).unwrap(), 2);
            assert_eq!(store.oldest_seq().unwrap(), Some(3));
            assert_eq!(store.head_seq().unwrap(), 3, "trimming never moves the head back");
            assert_eq!(store.events_after(0, 100).unwrap().len(), 1);
        }

        #[test]
        fn adoption_ledger_keeps_history_and_current_state() {
            let store = $make;
            let ags: $crate::model::ids::Ags = "05913000".parse().unwrap();
            let sid: $crate::model::ids::ServiceId = "wohngeld-nrw".parse().unwrap();
            for (state, v) in [
                (AdoptionState::Evaluating, "1.0.0"),
                (AdoptionState::Deployed, "1.0.0"),
                (AdoptionState::Failed, "1.1.0"),
            ] {
                store
                    .append_adoption(&AdoptionEntry {
                        ags: ags.clone(),
                        service_id: sid.clone(),
                        version: Some(v.parse().unwrap()),
                        state,
                        reason: "r".into(),
                        at_ms: 5,
                    })
                    .unwrap();
            }
            assert_eq!(store.history_of(&ags).unwrap().len(), 3);
            let rec = store.adoption(&sid, &ags).unwrap().unwrap();
            assert_eq!(rec.running, Some("1.0.0".parse().unwrap()));
            assert_eq!(rec.latest.state, AdoptionState::Failed);
            assert_eq!(store.adopters(&sid).unwrap().len(), 1);
            assert_eq!(store.adoptions_of(&ags).unwrap().len(), 1);
        }

        #[test]
        fn bulk_load_adoptions_matches_the_ledger_without_events() {
            let store = $make;
            let sid: $crate::model::ids::ServiceId = "wohngeld-nrw".parse().unwrap();
            let dortmund: $crate::model::ids::Ags = "05913000".parse().unwrap();
            let essen: $crate::model::ids::Ags = "05113000".parse().unwrap();
            let entry = |ags: &$crate::model::ids::Ags, state, v: &str| AdoptionEntry {
                ags: ags.clone(),
                service_id: sid.clone(),
                version: Some(v.parse().unwrap()),
                state,
                reason: "r".into(),
                at_ms: 1,
            };
            // Logged first, bulk history is older and sorts before it.
            store.append_adoption(&entry(&dortmund, AdoptionState::Evaluating, "2.0.0")).unwrap();
            let head = store.head_seq().unwrap();
            store
                .bulk_load_adoptions(&[
                    entry(&dortmund, AdoptionState::Evaluating, "1.0.0"),
                    entry(&essen, AdoptionState::Deployed, "1.0.0"),
                    entry(&dortmund, AdoptionState::Deployed, "1.0.0"),
                ])
                .unwrap();
            store.bulk_load_adoptions(&[entry(&essen, AdoptionState::Failed, "1.1.0")]).unwrap();
            assert_eq!(store.head_seq().unwrap(), head, "bulk loading appends no events");
            let history = store.history_of(&dortmund).unwrap();
            let versions: Vec<String> = history.iter().map(|e| e.version.as_ref().unwrap().to_string()).collect();
            assert_eq!(versions, ["1.0.0", "1.0.0", "2.0.0"]);
            assert_eq!(store.history_of(&essen).unwrap().len(), 2);
            let rec = store.adoption(&sid, &dortmund).unwrap().unwrap();
            assert_eq!(rec.running, Some("1.0.0".parse().unwrap()));
            let essen_rec = store.adoption(&sid, &essen).unwrap().unwrap();
            assert_eq!(essen_rec.latest.state, AdoptionState::Failed);
            assert_eq!(essen_rec.running, Some("1.0.0".parse().unwrap()));
            assert_eq!(store.adopters(&sid).unwrap().len(), 2);
            assert_eq!(store.adoptions_of(&essen).unwrap().len(), 1);
        }

        #[test]
        fn service_totals_match_a_recount_after_every_kind_of_write() {
            use $crate::model::rating::Rating;
            let store = $make;
            let sid: $crate::model::ids::ServiceId = "wohngeld-nrw".parse().unwrap();
            let ags = |s: &str| -> $crate::model::ids::Ags { s.parse().unwrap() };
            let entry = |a: &str, state, v: Option<&str>| AdoptionEntry {
                ags: ags(a),
                service_id: sid.clone(),
                version: v.map(|v| v.parse().unwrap()),
                state,
                reason: "r".into(),
                at_ms: 1,
            };
            let recount = |store: &dyn Store| {
                let records = store.adopters(&sid).unwrap();
                let ratings = store.ratings(&sid).unwrap();
                ServiceTotals {
                    records: records.len() as u32,
                    running: records.iter().filter(|r| r.running.is_some()).count() as u32,
                    rejected: records.iter().filter(|r| r.latest.state == AdoptionState::Rejected).count() as u32,
                    ratings: ratings.len() as u32,
                    stars_sum: ratings.iter().map(|r| u64::from(r.stars)).sum(),
                }
            };
            store.append_adoption(&entry("05913000", AdoptionState::Deployed, Some("1.0.0"))).unwrap();
            store.append_adoption(&entry("05113000", AdoptionState::Rejected, None)).unwrap();
            store.append_adoption(&entry("05913000", AdoptionState::Retired, None)).unwrap();
            store
                .bulk_load_adoptions(&[
                    entry("05113000", AdoptionState::Deployed, Some("1.0.0")),
                    entry("05711000", AdoptionState::Rejected, None),
                    entry("05711000", AdoptionState::Deployed, Some("1.0.0")),
                    entry("05515000", AdoptionState::Evaluating, Some("1.0.0")),
                ])
                .unwrap();
            store.bulk_load_adoptions(&[entry("05515000", AdoptionState::Rejected, None)]).unwrap();
            let rate = |a: &str, stars| Rating {
                ags: ags(a),
                service_id: sid.clone(),
                version: "1.0.0".parse().unwrap(),
                stars,
                criteria: vec![],
                comment: String::new(),
                at_ms: 1,
            };
            store.put_rating(&rate("05113000", 2)).unwrap();
            store.put_rating(&rate("05711000", 5)).unwrap();
            store.put_rating(&rate("05113000", 4)).unwrap(); // re-rating replaces the 2
            let totals = store.service_totals(&sid).unwrap();
            assert_eq!(totals, recount(&store));
            assert_eq!(
                totals,
                ServiceTotals { records: 4, running: 2, rejected: 1, ratings: 2, stars_sum: 9 },
                "05913000 retired, 05113000 and 05711000 running, 05515000 rejected"
            );
            assert!((totals.average_stars() - 4.5).abs() < 1e-9);
            assert_eq!(store.kommunen_with_records().unwrap(), 4);
            let under = |p: &str| -> Vec<String> {
                store.kommunen_with_records_under(p).unwrap().iter().map(|a| a.to_string()).collect()
            };
            assert_eq!(under("059"), ["05913000"]);
            assert_eq!(under("05").len(), 4);
            assert!(under("09").is_empty());
            assert_eq!(store.service_totals(&"other".parse().unwrap()).unwrap(), ServiceTotals::default());
        }
    };
}
