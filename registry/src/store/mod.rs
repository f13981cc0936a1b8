//! Storage behind one trait, so the hub's state can move to another engine (e.g. a
//! PostgreSQL-compatible database) without touching the domain rules.
//!
//! Each mutating method is one atomic step that also appends its event to the log, so the
//! log never disagrees with the data. Implementations make a write durable before they
//! return from [`Store::flush`]; the registry calls it before acknowledging.

pub mod codec;
pub mod sled;
#[cfg(test)]
mod suite;

use crate::error::Result;
use efa_domain::model::adoption::{AdoptionEntry, AdoptionRecord, ServiceTotals};
use efa_domain::model::catalog::{Kommune, Kreis, Land, LeikaEntry, OzgLeistung, Service};
use efa_domain::model::event::{Event, EventKind};
use efa_domain::model::ids::{Ags, KreisCode, LandCode, Leistungsschluessel, OzgId, ServiceId};
use efa_domain::model::rating::Rating;
use efa_domain::model::release::{Release, Yank};
use efa_domain::model::subscription::Subscription;

pub use self::sled::SledStore;

/// Counts of what an import wrote, for reporting.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImportCounts {
    /// Länder in the register.
    pub laender: usize,
    /// Kreise in the register.
    pub kreise: usize,
    /// Gemeinden in the register.
    pub kommunen: usize,
    /// OZG-Leistungen in the catalogue.
    pub ozg_leistungen: usize,
    /// LeiKa keys in the catalogue.
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
