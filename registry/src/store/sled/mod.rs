//! The embedded default backend on sled.
//!
//! Trees and keys (`\0` separates parts; sequence numbers are big-endian so byte order is
//! numeric order):
//! - `laender` code, `kreise` code, `kommunen` AGS, `ozg` OZG-ID, `leika` Leistungsschlüssel
//! - `services` id; `releases` service\0version; `blob_refs` digest service\0version -> ()
//! - `inline_blobs` digest -> the bytes of a small file of a release ([`InlineBlob`])
//! - `subscriptions` AGS\0target
//! - `adoption` service\0AGS -> current record (a Kommune's records are point reads, one per
//!   service: a few hundred reads beat an index of 6M keys)
//! - `history` AGS\0seq -> ledger entry; bulk-loaded entries AGS\0<8 zero bytes><bulk seq>,
//!   so they sort before every logged entry (seqs start at 1)
//! - `ratings` service\0version\0AGS; `preflight` service\0version\0AGS -> latest result
//! - `routing` service\0AGS -> the Kommune's declared FIT-Connect destinations
//! - `grants` provider name -> the Kommunen it may act for
//! - `totals` service -> [`ServiceTotals`], updated in the same transaction as the record or
//!   rating it counts; `adoption_kommunen` AGS -> () for every Kommune with a record
//! - `events` seq; `meta` "seq" -> last seq
//! - `snapshots` Land code -> (signed snapshot bytes, signature); `signing_keys` Land code -> keys
//! - `offers` service `\0` Land code -> signed offer (bytes, signature)
//! - `rollouts` service `\0` version -> the release's [`Rollout`]
//!
//! Every mutation runs in one sled transaction that also bumps `meta/seq` and writes the
//! event, so the event log is gapless and matches the data. Values are versioned records
//! ([`crate::store::codec`]); `meta/format` names the store format ([`migrate`]).

mod bulk;
mod federation;
mod ledger;
mod log;
pub mod migrate;
mod open;
mod publish;
mod tx;

pub use open::{database_config, log_path, SledOptions};

use super::codec::{decode, encode, Record, StoredSnapshot};
use super::{ImportCounts, InlineBlob, NewRelease, Queued, Store};
use crate::error::{Error, Result};
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
use sled::Transactional;
use tx::{abort, append_event, blob_ref_keys, from_tx, key, prefix, tx_get};

const SEQ_KEY: &[u8] = b"seq";
/// Counter of bulk-loaded history entries (not an event seq; see `bulk_load_adoptions`).
const BULK_SEQ_KEY: &[u8] = b"bulk_seq";
/// Entries per sled batch in `bulk_load_adoptions`.
const BULK_CHUNK: usize = 100_000;

/// The sled store: one tree per record kind, the event log, and `meta`.
pub struct SledStore {
    db: sled::Db,
    /// The format the store had when opened (`None`: it was new).
    found_format: Option<u32>,
    laender: sled::Tree,
    kreise: sled::Tree,
    kommunen: sled::Tree,
    ozg: sled::Tree,
    leika: sled::Tree,
    services: sled::Tree,
    releases: sled::Tree,
    /// Blob digest + service\0version for every blob of every release (an index).
    blob_refs: sled::Tree,
    /// Blob digest -> the bytes of a small file kept in the store ([`InlineBlob`]).
    inline_blobs: sled::Tree,
    subscriptions: sled::Tree,
    adoption: sled::Tree,
    history: sled::Tree,
    ratings: sled::Tree,
    /// service\0version\0AGS -> the Kommune's latest pre-flight result for the release.
    preflight: sled::Tree,
    /// service\0AGS -> the Kommune's declared FIT-Connect destinations.
    routing: sled::Tree,
    /// Provider name -> the Kommunen an operator granted it to act for.
    grants: sled::Tree,
    totals: sled::Tree,
    adoption_kommunen: sled::Tree,
    events: sled::Tree,
    meta: sled::Tree,
    snapshots: sled::Tree,
    /// Land code -> [`SigningKeys`] it registered.
    signing_keys: sled::Tree,
    /// Land code \0 seq -> a signed key set the Land published.
    key_sets: sled::Tree,
    offers: sled::Tree,
    rollouts: sled::Tree,
    /// The transparency log's trees (see [`log`]).
    log: log::LogTrees,
}

impl SledStore {
    fn get<T: Record>(tree: &sled::Tree, name: &'static str, k: &[u8]) -> Result<Option<T>> {
        tree.get(k)?.map(|v| decode(name, &v)).transpose()
    }

    fn scan<T: Record>(tree: &sled::Tree, name: &'static str, p: &[u8]) -> Result<Vec<T>> {
        tree.scan_prefix(p).values().map(|v| decode(name, &v?)).collect()
    }

    fn upsert_all<T: Record>(tree: &sled::Tree, items: &[T], k: impl Fn(&T) -> Vec<u8>) -> Result<()> {
        let mut batch = sled::Batch::default();
        for item in items {
            batch.insert(k(item), encode(item));
        }
        tree.apply_batch(batch)?;
        Ok(())
    }
}

/// A run that gave fewer outcomes than it had writes: a bug, not a state of the data.
fn no_outcome() -> Error {
    Error::Storage("a write left no outcome".into())
}

impl Store for SledStore {
    fn import_register(&self, laender: &[Land], kreise: &[Kreis], kommunen: &[Kommune]) -> Result<()> {
        Self::upsert_all(&self.laender, laender, |l| l.code.as_str().as_bytes().to_vec())?;
        Self::upsert_all(&self.kreise, kreise, |k| k.code.as_str().as_bytes().to_vec())?;
        Self::upsert_all(&self.kommunen, kommunen, |k| k.ags.as_str().as_bytes().to_vec())
    }

    fn import_catalogue(&self, ozg: &[OzgLeistung], leika: &[LeikaEntry]) -> Result<()> {
        Self::upsert_all(&self.ozg, ozg, |o| o.ozg_id.as_str().as_bytes().to_vec())?;
        Self::upsert_all(&self.leika, leika, |l| l.schluessel.as_str().as_bytes().to_vec())
    }

    fn meta(&self, key: &str) -> Result<Option<String>> {
        Ok(self.meta.get(format!("setting/{key}"))?.map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    fn put_meta(&self, key: &str, value: &str) -> Result<()> {
        self.meta.insert(format!("setting/{key}"), value.as_bytes())?;
        Ok(())
    }

    fn settings(&self) -> Result<Vec<(String, String)>> {
        self.meta
            .scan_prefix("setting/")
            .map(|kv| {
                let (k, v) = kv?;
                let key = String::from_utf8_lossy(&k["setting/".len()..]).into_owned();
                Ok((key, String::from_utf8_lossy(&v).into_owned()))
            })
            .collect()
    }

    fn counts(&self) -> Result<ImportCounts> {
        Ok(ImportCounts {
            laender: self.laender.len(),
            kreise: self.kreise.len(),
            kommunen: self.kommunen.len(),
            ozg_leistungen: self.ozg.len(),
            leika: self.leika.len(),
        })
    }

    fn kommune(&self, ags: &Ags) -> Result<Option<Kommune>> {
        Self::get(&self.kommunen, "kommunen", ags.as_str().as_bytes())
    }

    fn kommunen(&self) -> Result<Vec<Kommune>> {
        Self::scan(&self.kommunen, "kommunen", b"")
    }

    fn land(&self, code: &LandCode) -> Result<Option<Land>> {
        Self::get(&self.laender, "laender", code.as_str().as_bytes())
    }

    fn laender(&self) -> Result<Vec<Land>> {
        Self::scan(&self.laender, "laender", b"")
    }

    fn kreis(&self, code: &KreisCode) -> Result<Option<Kreis>> {
        Self::get(&self.kreise, "kreise", code.as_str().as_bytes())
    }

    fn kreise(&self) -> Result<Vec<Kreis>> {
        Self::scan(&self.kreise, "kreise", b"")
    }

    fn ozg_leistung(&self, id: &OzgId) -> Result<Option<OzgLeistung>> {
        Self::get(&self.ozg, "ozg", id.as_str().as_bytes())
    }

    fn leika(&self, k: &Leistungsschluessel) -> Result<Option<LeikaEntry>> {
        Self::get(&self.leika, "leika", k.as_str().as_bytes())
    }

    fn put_service(&self, service: &Service, event: EventKind) -> Result<Event> {
        (&self.services, &self.meta, &self.events)
            .transaction(|(services, meta, events)| {
                services.insert(service.id.as_str().as_bytes(), encode(service))?;
                append_event(meta, events, service.registered_at_ms, event.clone())
            })
            .map_err(from_tx)
    }

    fn service(&self, id: &ServiceId) -> Result<Option<Service>> {
        Self::get(&self.services, "services", id.as_str().as_bytes())
    }

    fn services(&self) -> Result<Vec<Service>> {
        Self::scan(&self.services, "services", b"")
    }

    fn insert_release(&self, release: &Release, inline: &[InlineBlob]) -> Result<Event> {
        let new = NewRelease { release: release.clone(), rollout: None, inline: inline.to_vec() };
        self.insert_release_run(std::slice::from_ref(&new))?.pop().and_then(|mut e| e.pop()).ok_or_else(no_outcome)
    }

    fn insert_release_with_rollout(
        &self,
        release: &Release,
        rollout: &Rollout,
        inline: &[InlineBlob],
    ) -> Result<(Event, Event)> {
        let new = NewRelease { release: release.clone(), rollout: Some(rollout.clone()), inline: inline.to_vec() };
        match self.insert_release_run(std::slice::from_ref(&new))?.pop().as_deref() {
            Some([published, started]) => Ok((published.clone(), started.clone())),
            _ => Err(no_outcome()),
        }
    }

    fn insert_releases(&self, new: &[NewRelease]) -> Vec<Result<Vec<Event>>> {
        match self.insert_release_run(new) {
            Ok(out) => out.into_iter().map(Ok).collect(),
            // The shared transaction was rolled back whole; one existing version must not
            // fail the releases beside it, so each gets a transaction of its own.
            Err(_) if new.len() > 1 => new
                .iter()
                .map(|n| {
                    self.insert_release_run(std::slice::from_ref(n)).and_then(|mut e| e.pop().ok_or_else(no_outcome))
                })
                .collect(),
            Err(e) => vec![Err(e)],
        }
    }

    fn blob_referenced(&self, digest: &efa_domain::bundle::Digest) -> Result<bool> {
        Ok(self.blob_refs.scan_prefix(digest.0).next().transpose()?.is_some())
    }

    fn inline_blob(&self, digest: &efa_domain::bundle::Digest) -> Result<Option<Vec<u8>>> {
        Ok(self.inline_blobs.get(digest.0)?.map(|v| v.to_vec()))
    }

    fn release(&self, service: &ServiceId, version: &semver::Version) -> Result<Option<Release>> {
        Self::get(&self.releases, "releases", &key(&[service.as_str().as_bytes(), version.to_string().as_bytes()]))
    }

    fn releases(&self, service: &ServiceId) -> Result<Vec<Release>> {
        let mut all: Vec<Release> = Self::scan(&self.releases, "releases", &prefix(service.as_str().as_bytes()))?;
        all.sort_by(|a, b| b.version.cmp(&a.version));
        Ok(all)
    }

    fn yank_release(&self, service: &ServiceId, version: &semver::Version, yank: Yank) -> Result<(Release, Event)> {
        let k = key(&[service.as_str().as_bytes(), version.to_string().as_bytes()]);
        (&self.releases, &self.meta, &self.events)
            .transaction(|(releases, meta, events)| {
                let Some(bytes) = releases.get(&k)? else {
                    return abort(Error::not_found(format!("release {service} {version}")));
                };
                let mut release: Release = match decode("releases", &bytes) {
                    Ok(r) => r,
                    Err(e) => return abort(e),
                };
                if let Some(y) = &release.yank {
                    return abort(Error::failed_precondition(format!(
                        "release {service} {version} is already yanked ({})",
                        y.reason
                    )));
                }
                release.yank = Some(yank.clone());
                releases.insert(k.as_slice(), encode(&release))?;
                let event = append_event(
                    meta,
                    events,
                    yank.at_ms,
                    EventKind::ReleaseYanked {
                        service_id: service.clone(),
                        version: version.clone(),
                        reason: yank.reason.clone(),
                    },
                )?;
                Ok((release, event))
            })
            .map_err(from_tx)
    }

    fn put_subscription(&self, sub: &Subscription) -> Result<Event> {
        let k = key(&[sub.ags.as_str().as_bytes(), sub.target.key().as_bytes()]);
        (&self.subscriptions, &self.meta, &self.events)
            .transaction(|(subs, meta, events)| {
                subs.insert(k.as_slice(), encode(sub))?;
                append_event(meta, events, sub.since_ms, EventKind::Subscribed(sub.clone()))
            })
            .map_err(from_tx)
    }

    fn remove_subscription(&self, ags: &Ags, target_key: &str) -> Result<Option<Event>> {
        let k = key(&[ags.as_str().as_bytes(), target_key.as_bytes()]);
        let now = efa_domain::now_ms();
        (&self.subscriptions, &self.meta, &self.events)
            .transaction(|(subs, meta, events)| {
                if subs.remove(k.as_slice())?.is_none() {
                    return Ok(None);
                }
                append_event(
                    meta,
                    events,
                    now,
                    EventKind::Unsubscribed { ags: ags.clone(), target: target_key.to_string() },
                )
                .map(Some)
            })
            .map_err(from_tx)
    }

    fn subscriptions_of(&self, ags: &Ags) -> Result<Vec<Subscription>> {
        Self::scan(&self.subscriptions, "subscriptions", &prefix(ags.as_str().as_bytes()))
    }

    fn all_subscriptions(&self) -> Result<Vec<Subscription>> {
        Self::scan(&self.subscriptions, "subscriptions", b"")
    }

    fn append_adoption(&self, entry: &AdoptionEntry) -> Result<(AdoptionRecord, Event)> {
        self.append_adoptions(std::slice::from_ref(entry))?.pop().ok_or_else(no_outcome)
    }

    fn queue_adoptions(&self, entries: &[AdoptionEntry]) -> Vec<Result<Queued<(AdoptionRecord, Event)>>> {
        match self.append_adoptions(entries) {
            Ok(out) => out.into_iter().map(|o| Ok(Queued::ready(o))).collect(),
            // The shared transaction was rolled back whole; one bad entry (a corrupt record)
            // must not fail its neighbours, so each gets a transaction of its own.
            Err(_) if entries.len() > 1 => entries.iter().map(|e| self.append_adoption(e).map(Queued::ready)).collect(),
            Err(e) => vec![Err(e)],
        }
    }

    fn adoption(&self, service: &ServiceId, ags: &Ags) -> Result<Option<AdoptionRecord>> {
        Self::get(&self.adoption, "adoption", &key(&[service.as_str().as_bytes(), ags.as_str().as_bytes()]))
    }

    fn adopters(&self, service: &ServiceId) -> Result<Vec<AdoptionRecord>> {
        Self::scan(&self.adoption, "adoption", &prefix(service.as_str().as_bytes()))
    }

    fn adoptions_of(&self, ags: &Ags) -> Result<Vec<AdoptionRecord>> {
        let mut out = Vec::new();
        if self.adoption_kommunen.get(ags.as_str().as_bytes())?.is_none() {
            return Ok(out);
        }
        // `totals` has a key for every service with a record.
        for service in self.totals.iter().keys() {
            if let Some(bytes) = self.adoption.get(key(&[&service?, ags.as_str().as_bytes()]))? {
                out.push(decode("adoption", &bytes)?);
            }
        }
        Ok(out)
    }

    fn history_of(&self, ags: &Ags) -> Result<Vec<AdoptionEntry>> {
        Self::scan(&self.history, "history", &prefix(ags.as_str().as_bytes()))
    }

    fn bulk_load_adoptions(&self, entries: &[AdoptionEntry]) -> Result<()> {
        self.bulk_load(entries)
    }

    fn service_totals(&self, service: &ServiceId) -> Result<ServiceTotals> {
        Ok(Self::get(&self.totals, "totals", service.as_str().as_bytes())?.unwrap_or_default())
    }

    fn kommunen_with_records(&self) -> Result<usize> {
        Ok(self.adoption_kommunen.len())
    }

    fn kommunen_with_records_under(&self, prefix: &str) -> Result<Vec<Ags>> {
        self.adoption_kommunen
            .scan_prefix(prefix.as_bytes())
            .keys()
            .map(|k| {
                let k = k?;
                std::str::from_utf8(&k)
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| Error::Corrupt { tree: "adoption_kommunen", reason: format!("bad AGS key {k:?}") })
            })
            .collect()
    }

    fn put_rating(&self, rating: &Rating) -> Result<Event> {
        let k = key(&[
            rating.service_id.as_str().as_bytes(),
            rating.version.to_string().as_bytes(),
            rating.ags.as_str().as_bytes(),
        ]);
        let sid = rating.service_id.as_str().as_bytes();
        (&self.ratings, &self.totals, &self.meta, &self.events)
            .transaction(|(ratings, totals, meta, events)| {
                let previous = tx_get::<Rating>(ratings, "ratings", &k)?.map(|r| r.stars);
                let mut counts = tx_get::<ServiceTotals>(totals, "totals", sid)?.unwrap_or_default();
                counts.replace_rating(previous, rating.stars);
                totals.insert(sid, encode(&counts))?;
                ratings.insert(k.as_slice(), encode(rating))?;
                append_event(meta, events, rating.at_ms, EventKind::Rated(rating.clone()))
            })
            .map_err(from_tx)
    }

    fn put_preflight(&self, record: &PreflightRecord) -> Result<()> {
        let k = key(&[
            record.service_id.as_str().as_bytes(),
            record.version.to_string().as_bytes(),
            record.ags.as_str().as_bytes(),
        ]);
        self.preflight.insert(k, encode(record))?;
        Ok(())
    }

    fn preflights(&self, service: &ServiceId, version: &semver::Version) -> Result<Vec<PreflightRecord>> {
        let mut p = key(&[service.as_str().as_bytes(), version.to_string().as_bytes()]);
        p.push(0);
        Self::scan(&self.preflight, "preflight", &p)
    }

    fn put_grant(&self, provider: &str, grant: &ProviderGrant) -> Result<()> {
        self.grants.insert(provider.as_bytes(), encode(grant))?;
        Ok(())
    }

    fn grant(&self, provider: &str) -> Result<ProviderGrant> {
        Ok(Self::get(&self.grants, "grants", provider.as_bytes())?.unwrap_or_default())
    }

    fn grants(&self) -> Result<Vec<(String, ProviderGrant)>> {
        self.grants
            .iter()
            .map(|kv| {
                let (k, v) = kv?;
                Ok((String::from_utf8_lossy(&k).into_owned(), decode("grants", &v)?))
            })
            .collect()
    }

    fn put_routing(&self, record: &RoutingRecord) -> Result<()> {
        let k = key(&[record.service_id.as_str().as_bytes(), record.ags.as_str().as_bytes()]);
        if record.destinations.is_empty() {
            self.routing.remove(k)?;
        } else {
            self.routing.insert(k, encode(record))?;
        }
        Ok(())
    }

    fn routing(&self, service: &ServiceId) -> Result<Vec<RoutingRecord>> {
        Self::scan(&self.routing, "routing", &prefix(service.as_str().as_bytes()))
    }

    fn ratings(&self, service: &ServiceId) -> Result<Vec<Rating>> {
        Self::scan(&self.ratings, "ratings", &prefix(service.as_str().as_bytes()))
    }

    fn put_signing_keys(&self, land: &LandCode, keys: &SigningKeys) -> Result<Event> {
        (&self.signing_keys, &self.meta, &self.events)
            .transaction(|(tree, meta, events)| {
                tree.insert(land.as_str().as_bytes(), encode(keys))?;
                let kind = EventKind::SigningKeysSet { land: land.clone(), keys: keys.keys.clone() };
                append_event(meta, events, keys.updated_at_ms, kind)
            })
            .map_err(from_tx)
    }

    fn signing_keys(&self, land: &LandCode) -> Result<SigningKeys> {
        Ok(Self::get(&self.signing_keys, "signing_keys", land.as_str().as_bytes())?.unwrap_or_default())
    }

    fn put_key_set(
        &self,
        land: &LandCode,
        key_set: &efa_domain::model::keyset::SignedKeySet,
        keys: &SigningKeys,
    ) -> Result<Event> {
        self.write_key_set(land, key_set, keys)
    }

    fn key_sets(&self, land: &LandCode) -> Result<Vec<(u64, efa_domain::model::keyset::SignedKeySet)>> {
        self.read_key_sets(land)
    }

    fn put_offer(
        &self,
        land: &LandCode,
        service: &ServiceId,
        offer: &SignedOffer,
        at_ms: i64,
        withdrawn: bool,
    ) -> Result<Event> {
        self.write_offer(land, service, offer, at_ms, withdrawn)
    }

    fn put_rollout(
        &self,
        service: &ServiceId,
        version: &semver::Version,
        land: Option<&LandCode>,
        rollout: &Rollout,
        transition: Transition,
        at_ms: i64,
    ) -> Result<Event> {
        self.write_rollout(service, version, land, rollout, transition, at_ms)
    }

    fn rollout(
        &self,
        service: &ServiceId,
        version: &semver::Version,
        land: Option<&LandCode>,
    ) -> Result<Option<Rollout>> {
        self.read_rollout(service, version, land)
    }

    fn rollouts(&self) -> Result<Vec<crate::store::StoredRollout>> {
        self.read_rollouts()
    }

    fn offers(&self, service: &ServiceId) -> Result<Vec<(LandCode, SignedOffer)>> {
        self.read_offers(service)
    }

    fn put_snapshot(&self, land: &LandCode, snapshot: &[u8], signature: &[u8]) -> Result<()> {
        self.snapshots
            .insert(land.as_str().as_bytes(), encode(&StoredSnapshot(snapshot.to_vec(), signature.to_vec())))?;
        Ok(())
    }

    fn snapshot(&self, land: &LandCode) -> Result<Option<(Vec<u8>, Vec<u8>)>> {
        Ok(Self::get::<StoredSnapshot>(&self.snapshots, "snapshots", land.as_str().as_bytes())?.map(|s| (s.0, s.1)))
    }

    fn events_after(&self, seq: u64, limit: usize) -> Result<Vec<Event>> {
        let start = seq.saturating_add(1).to_be_bytes();
        self.events.range(start..).values().take(limit).map(|v| decode("events", &v?)).collect()
    }

    fn head_seq(&self) -> Result<u64> {
        Ok(self.meta.get(SEQ_KEY)?.map(|v| u64::from_be_bytes(v.as_ref().try_into().unwrap_or([0; 8]))).unwrap_or(0))
    }

    fn oldest_seq(&self) -> Result<Option<u64>> {
        Ok(self.events.first()?.map(|(k, _)| u64::from_be_bytes(k.as_ref().try_into().unwrap_or([0; 8]))))
    }

    fn trim_events(&self, before: u64) -> Result<usize> {
        let mut batch = sled::Batch::default();
        let mut n = 0;
        for k in self.events.range(..before.to_be_bytes()).keys() {
            batch.remove(k?);
            n += 1;
        }
        self.events.apply_batch(batch)?;
        Ok(n)
    }

    fn flush(&self) -> Result<()> {
        self.db.flush()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
