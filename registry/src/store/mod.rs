//! Storage behind one trait, so the hub's state can move to another engine (e.g. a
//! PostgreSQL-compatible database) without touching the domain rules.
//!
//! Each mutating method is one atomic step that also appends its event to the log, so the
//! log never disagrees with the data. Implementations make a write durable before they
//! return from [`Store::flush`]; the registry calls it before acknowledging.

pub mod codec;
pub mod log;
pub mod postgres;
pub mod sled;
#[cfg(test)]
mod suite;

use crate::error::Result;
use efa_domain::model::adoption::{AdoptionEntry, AdoptionRecord, ServiceTotals};
use efa_domain::model::catalog::{Kommune, Kreis, Land, LeikaEntry, OzgLeistung, Service, SigningKeys};
use efa_domain::model::event::{Event, EventKind};
use efa_domain::model::grant::ProviderGrant;
use efa_domain::model::ids::{Ags, KreisCode, LandCode, Leistungsschluessel, OzgId, ServiceId};
use efa_domain::model::offer::SignedOffer;
use efa_domain::model::preflight::PreflightRecord;
use efa_domain::model::rating::Rating;
use efa_domain::model::release::{Release, Yank};
use efa_domain::model::rollout::{Rollout, Transition};
use efa_domain::model::routing::RoutingRecord;
use efa_domain::model::subscription::Subscription;

pub use self::log::{Beside, LogHash, LogStore};

/// A small file of a release, kept in the store and committed in the release's own
/// transaction instead of as a file of the blob store. A publish of small files then costs
/// the one flush its commit shares with other writes, where a blob file costs its own
/// fsync, the staging directory's and the blob directory's (five of them per publish).
/// Content-addressed: the same digest always holds the same bytes, so storing it again is
/// harmless. The hub checks the digest before it hands the bytes over.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InlineBlob {
    /// SHA-256 of `bytes`, as the manifest names it.
    pub digest: efa_domain::bundle::Digest,
    /// The file's content.
    pub bytes: Vec<u8>,
}

/// A release to insert, with its rollout (first ring open) if it has a plan, and its small
/// files; see [`Store::insert_releases`].
#[derive(Clone, Debug)]
pub struct NewRelease {
    /// The release record.
    pub release: Release,
    /// Its rollout, stored with it.
    pub rollout: Option<Rollout>,
    /// Its small files kept in the store.
    pub inline: Vec<InlineBlob>,
}
pub use self::postgres::PostgresStore;
pub use self::sled::{SledOptions, SledStore};

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

/// A stored rollout: service, release, whose plan (`None`: the building Land's), and its state.
pub type StoredRollout = (ServiceId, semver::Version, Option<LandCode>, Rollout);

/// The storage the registry runs on. Reads return `Ok(None)` (or an empty list) for what is
/// not stored; `Err` means the store itself failed.
pub trait Store: LogStore + Send + Sync + 'static {
    // --- register (idempotent upserts) ---
    /// Upserts Länder, Kreise and Gemeinden by their keys; nothing is removed.
    fn import_register(&self, laender: &[Land], kreise: &[Kreis], kommunen: &[Kommune]) -> Result<()>;
    /// Upserts OZG-Leistungen and LeiKa entries by their keys; nothing is removed.
    fn import_catalogue(&self, ozg: &[OzgLeistung], leika: &[LeikaEntry]) -> Result<()>;
    /// How many register and catalogue records are stored.
    fn counts(&self) -> Result<ImportCounts>;
    /// A small setting of the store (e.g. `register_as_of`), if set.
    fn meta(&self, key: &str) -> Result<Option<String>>;
    /// Sets a small setting of the store.
    fn put_meta(&self, key: &str, value: &str) -> Result<()>;
    /// Every setting, for copying a store.
    fn settings(&self) -> Result<Vec<(String, String)>>;
    /// The Gemeinde with this AGS.
    fn kommune(&self, ags: &Ags) -> Result<Option<Kommune>>;
    /// Every Gemeinde.
    fn kommunen(&self) -> Result<Vec<Kommune>>;
    /// The Land with this code.
    fn land(&self, code: &LandCode) -> Result<Option<Land>>;
    /// Every Land.
    fn laender(&self) -> Result<Vec<Land>>;
    /// The Kreis with this code.
    fn kreis(&self, code: &KreisCode) -> Result<Option<Kreis>>;
    /// Every Kreis.
    fn kreise(&self) -> Result<Vec<Kreis>>;
    /// The OZG-Leistung with this OZG-ID.
    fn ozg_leistung(&self, id: &OzgId) -> Result<Option<OzgLeistung>>;
    /// The LeiKa entry with this Leistungsschlüssel.
    fn leika(&self, key: &Leistungsschluessel) -> Result<Option<LeikaEntry>>;

    // --- services and releases ---
    /// Writes (or overwrites) a service and appends `event`, timed at its `registered_at_ms`.
    fn put_service(&self, service: &Service, event: EventKind) -> Result<Event>;
    /// The service with this id.
    fn service(&self, id: &ServiceId) -> Result<Option<Service>>;
    /// Every service.
    fn services(&self) -> Result<Vec<Service>>;
    /// Inserts a release; `AlreadyExists` if that version exists (releases are immutable).
    /// Also records every blob of the release (see [`blob_referenced`](Self::blob_referenced)).
    /// `inline` are small files of the release kept in the store itself, in the same
    /// transaction (see [`InlineBlob`]).
    fn insert_release(&self, release: &Release, inline: &[InlineBlob]) -> Result<Event>;
    /// Inserts a release and its rollout in one transaction, so no reader ever sees the
    /// release without its plan (an auto-updating node would take it everywhere at once).
    /// Returns the `ReleasePublished` event and the `RolloutChanged` (`Started`) after it.
    fn insert_release_with_rollout(
        &self,
        release: &Release,
        rollout: &Rollout,
        inline: &[InlineBlob],
    ) -> Result<(Event, Event)>;
    /// Several releases that reached the commit thread one after another, each with the
    /// events [`insert_release`](Self::insert_release) or
    /// [`insert_release_with_rollout`](Self::insert_release_with_rollout) would give, in
    /// order. A store may insert them together (sled does: one transaction), but one that
    /// fails (its version exists) must not fail the others.
    fn insert_releases(&self, new: &[NewRelease]) -> Vec<Result<Vec<Event>>> {
        new.iter()
            .map(|n| match &n.rollout {
                None => self.insert_release(&n.release, &n.inline).map(|e| vec![e]),
                Some(r) => self.insert_release_with_rollout(&n.release, r, &n.inline).map(|(a, b)| vec![a, b]),
            })
            .collect()
    }
    /// True if a published release names the blob: only such content is served.
    fn blob_referenced(&self, digest: &efa_domain::bundle::Digest) -> Result<bool>;
    /// The bytes of a blob kept in the store (see [`InlineBlob`]), if it is one.
    fn inline_blob(&self, digest: &efa_domain::bundle::Digest) -> Result<Option<Vec<u8>>>;
    /// One release of a service.
    fn release(&self, service: &ServiceId, version: &semver::Version) -> Result<Option<Release>>;
    /// All releases of a service, newest version first.
    fn releases(&self, service: &ServiceId) -> Result<Vec<Release>>;
    /// Marks a release yanked; `FailedPrecondition` if it already is.
    fn yank_release(&self, service: &ServiceId, version: &semver::Version, yank: Yank) -> Result<(Release, Event)>;

    // --- subscriptions ---
    /// Writes a subscription, replacing one of the same Kommune and target.
    fn put_subscription(&self, sub: &Subscription) -> Result<Event>;
    /// Removes the subscription with this [target key](efa_domain::model::subscription::SubscriptionTarget::key);
    /// `None` (and no event) if there was none.
    fn remove_subscription(&self, ags: &Ags, target_key: &str) -> Result<Option<Event>>;
    /// The subscriptions of one Kommune.
    fn subscriptions_of(&self, ags: &Ags) -> Result<Vec<Subscription>>;
    /// The subscriptions of every Kommune.
    fn all_subscriptions(&self) -> Result<Vec<Subscription>>;

    // --- adoption ledger ---
    /// Appends a ledger entry: folds it into the (service, Kommune) record, the service's
    /// totals and the Kommune's history, and appends its event.
    fn append_adoption(&self, entry: &AdoptionEntry) -> Result<(AdoptionRecord, Event)>;
    /// Like [`append_adoption`](Self::append_adoption), for the commit thread: a store may
    /// queue the entry in the open batch and apply it with the batch's other reports when the
    /// batch is flushed (PostgreSQL does: a few round trips per batch instead of one or more
    /// per report). The outcome is known once [`flush`](Self::flush) returned.
    fn queue_adoption(&self, entry: &AdoptionEntry) -> Result<Queued<(AdoptionRecord, Event)>> {
        self.append_adoption(entry).map(Queued::ready)
    }
    /// Several reports that reached the commit thread one after another, in ledger order, with
    /// one outcome per entry in the same order. A store may apply them together (sled does:
    /// one transaction instead of one per report), but one entry that fails must not fail
    /// the others.
    fn queue_adoptions(&self, entries: &[AdoptionEntry]) -> Vec<Result<Queued<(AdoptionRecord, Event)>>> {
        entries.iter().map(|e| self.queue_adoption(e)).collect()
    }
    /// The current record of one (service, Kommune) pair.
    fn adoption(&self, service: &ServiceId, ags: &Ags) -> Result<Option<AdoptionRecord>>;
    /// The records of every Kommune with a ledger entry for the service.
    fn adopters(&self, service: &ServiceId) -> Result<Vec<AdoptionRecord>>;
    /// The records of one Kommune, one per service it reported on.
    fn adoptions_of(&self, ags: &Ags) -> Result<Vec<AdoptionRecord>>;
    /// The records of several Kommunen (the dashboard's matrix page), in one query where
    /// the store answers queries over the network.
    fn adoptions_of_many(&self, agss: &[Ags]) -> Result<Vec<AdoptionRecord>> {
        let mut out = Vec::new();
        for ags in agss {
            out.extend(self.adoptions_of(ags)?);
        }
        Ok(out)
    }
    /// Every ledger entry of one Kommune, oldest first.
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

    // --- pre-flight results ---
    /// Writes a Kommune's pre-flight result for a release, replacing its previous one.
    fn put_preflight(&self, record: &PreflightRecord) -> Result<()>;
    /// The pre-flight results of one release, in AGS order.
    fn preflights(&self, service: &ServiceId, version: &semver::Version) -> Result<Vec<PreflightRecord>>;

    // --- IT service providers ---
    /// Replaces a provider's grant.
    fn put_grant(&self, provider: &str, grant: &ProviderGrant) -> Result<()>;
    /// A provider's grant (empty if none).
    fn grant(&self, provider: &str) -> Result<ProviderGrant>;
    /// Every provider's grant, by name.
    fn grants(&self) -> Result<Vec<(String, ProviderGrant)>>;

    // --- FIT-Connect routing ---
    /// Writes (or, with no destinations, removes) a Kommune's declared destinations for a
    /// service.
    fn put_routing(&self, record: &RoutingRecord) -> Result<()>;
    /// Every Kommune's declared destinations for a service, in AGS order.
    fn routing(&self, service: &ServiceId) -> Result<Vec<RoutingRecord>>;

    // --- ratings ---
    /// Writes a rating, replacing the same Kommune's rating of the same version, and updates
    /// the service's totals.
    fn put_rating(&self, rating: &Rating) -> Result<Event>;
    /// Every rating of a service, all versions.
    fn ratings(&self, service: &ServiceId) -> Result<Vec<Rating>>;

    // --- Land signing keys ---
    /// Replaces a Land's registered release signing keys, with their event.
    fn put_signing_keys(&self, land: &LandCode, keys: &SigningKeys) -> Result<Event>;
    /// A Land's registered release signing keys (empty if none).
    fn signing_keys(&self, land: &LandCode) -> Result<SigningKeys>;
    /// Stores a Land's signed key set and makes its keys the registered ones, with its
    /// `KeySetPublished` event, in one transaction.
    fn put_key_set(
        &self,
        land: &LandCode,
        key_set: &efa_domain::model::keyset::SignedKeySet,
        keys: &SigningKeys,
    ) -> Result<Event>;
    /// A Land's published key sets with the seq of each one's event, oldest first.
    fn key_sets(&self, land: &LandCode) -> Result<Vec<(u64, efa_domain::model::keyset::SignedKeySet)>>;

    // --- offers (Nachnutzung) ---
    /// Stores a Land's signed offer of a service (or its withdrawal), replacing the Land's
    /// previous one, with its event.
    fn put_offer(
        &self,
        land: &LandCode,
        service: &ServiceId,
        offer: &SignedOffer,
        at_ms: i64,
        withdrawn: bool,
    ) -> Result<Event>;
    /// The offers (active or withdrawn) of a service, by offering Land in code order.
    fn offers(&self, service: &ServiceId) -> Result<Vec<(LandCode, SignedOffer)>>;

    // --- rollouts ---
    /// Stores a release's rollout with the event of its `transition`: the building Land's
    /// (`land` `None`, event `RolloutChanged`) or an offering Land's own for its Kommunen
    /// (event `LandRolloutChanged`).
    fn put_rollout(
        &self,
        service: &ServiceId,
        version: &semver::Version,
        land: Option<&LandCode>,
        rollout: &Rollout,
        transition: Transition,
        at_ms: i64,
    ) -> Result<Event>;
    /// A release's rollout (the building Land's, or an offering Land's), if it has a plan.
    fn rollout(
        &self,
        service: &ServiceId,
        version: &semver::Version,
        land: Option<&LandCode>,
    ) -> Result<Option<Rollout>>;
    /// Every rollout, by service, version and whose plan it is (`None`: the building Land's).
    fn rollouts(&self) -> Result<Vec<StoredRollout>>;

    // --- Land snapshots (freeze protection) ---
    /// Stores the Land's signed snapshot, replacing the previous one.
    fn put_snapshot(&self, land: &LandCode, snapshot: &[u8], signature: &[u8]) -> Result<()>;
    /// The Land's stored snapshot bytes and signature, as received.
    fn snapshot(&self, land: &LandCode) -> Result<Option<(Vec<u8>, Vec<u8>)>>;

    /// The commit thread starts a batch of writes; [`flush`](Self::flush) ends it. A store
    /// may run the batch's writes in one transaction (PostgreSQL does: group commit).
    fn begin_batch(&self) {}

    // --- coordination of hub replicas ---
    /// Takes or renews the lease on a job that must run on one replica at a time (blob
    /// garbage collection, event trimming): true if `holder` holds it for the next
    /// `ttl_ms`. A holder that dies loses it when the lease runs out. A store only one hub
    /// uses answers true.
    fn take_lease(&self, _job: &str, _holder: &str, _ttl_ms: i64) -> Result<bool> {
        Ok(true)
    }
    /// Calls `wake` whenever another process may have appended events that streams must
    /// see (a shared store); a store only one hub uses never calls it.
    fn on_foreign_commit(&self, _wake: Box<dyn Fn() + Send + Sync>) -> Result<()> {
        Ok(())
    }

    // --- event log ---
    /// Up to `limit` stored events with seq > `seq`, in seq order.
    fn events_after(&self, seq: u64, limit: usize) -> Result<Vec<Event>>;
    /// Seq of the newest event ever appended (0: none yet); trimming does not lower it.
    fn head_seq(&self) -> Result<u64>;
    /// Seq of the oldest event still stored (`None`: the log is empty).
    fn oldest_seq(&self) -> Result<Option<u64>>;
    /// Removes events with seq < `before`; returns how many. The head seq never moves back.
    fn trim_events(&self, before: u64) -> Result<usize>;

    /// Makes every write so far durable.
    fn flush(&self) -> Result<()>;
}

/// The outcome of a write queued in the open batch; see [`Store::queue_adoption`].
pub struct Queued<T>(std::sync::Arc<std::sync::Mutex<Option<Result<T>>>>);

impl<T> Queued<T> {
    /// An outcome known already.
    pub fn ready(value: T) -> Self {
        Queued(std::sync::Arc::new(std::sync::Mutex::new(Some(Ok(value)))))
    }

    /// An outcome the batch fills in: the handle to return, and the store's copy.
    pub(crate) fn pending() -> (Self, Self) {
        let slot = std::sync::Arc::new(std::sync::Mutex::new(None));
        (Queued(slot.clone()), Queued(slot))
    }

    /// Fills in the outcome.
    pub(crate) fn set(&self, outcome: Result<T>) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(outcome);
    }

    /// The outcome; an error if the batch ended without applying the write.
    pub fn take(self) -> Result<T> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take().unwrap_or_else(|| {
            Err(crate::error::Error::Storage("the batch ended before this write was applied".into()))
        })
    }
}
