//! The registry: every domain rule that needs stored state, on top of a [`Store`].
//!
//! Callers pass identities that are already authenticated (a Land code, an AGS); this
//! module decides what each may do with the data and keeps the data consistent.

use crate::bundle::{BundleLimits, Manifest};
use crate::commit::Committer;
use crate::error::{Error, Result};
use crate::import;
use crate::model::adoption::{AdoptionEntry, AdoptionRecord, AdoptionState, ServiceTotals};
use crate::model::catalog::{Kommune, Service};
use crate::model::event::{Event, EventKind};
use crate::model::ids::{parse_version, Ags, Channel, LandCode, Leistungsschluessel, OzgId, ServiceId};
use crate::model::rating::{Criterion, Rating, RatingAggregate};
use crate::model::release::{Release, UpdatePolicy, Yank};
use crate::model::subscription::{Subscription, SubscriptionTarget};
use crate::params::{validate_schema, ParameterSpec};
use crate::snapshot::Snapshot;
use crate::store::{ImportCounts, Store};
use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

/// Longest reason text for rejections, failures and yanks.
pub const MAX_REASON_CHARS: usize = 2000;
const MAX_TITLE_CHARS: usize = 200;
const MAX_DESCRIPTION_CHARS: usize = 5000;

/// What a Land submits to register a service.
#[derive(Clone, Debug)]
pub struct NewService {
    pub id: ServiceId,
    pub ozg_id: OzgId,
    pub leistungsschluessel: Option<Leistungsschluessel>,
    pub title: String,
    pub description: String,
    pub parameters: Vec<ParameterSpec>,
    pub adoption_public: bool,
}

/// An adoption record with the Kommune's name, for reports.
#[derive(Clone, Debug)]
pub struct Adopter {
    pub kommune: Option<Kommune>,
    pub record: AdoptionRecord,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CoverageLevel {
    Land,
    Kreis,
}

#[derive(Clone, Debug)]
pub struct CoverageRow {
    pub level: CoverageLevel,
    pub code: String,
    pub name: String,
    pub adopted: u32,
    pub total: u32,
}

#[derive(Clone, Debug)]
pub struct RatingSummary {
    pub overall: RatingAggregate,
    /// Newest version first.
    pub per_version: Vec<(semver::Version, RatingAggregate)>,
}

#[derive(Clone, Debug, Default)]
pub struct Feedback {
    pub ratings: Vec<Rating>,
    pub rejections: Vec<AdoptionEntry>,
}

/// Number of Gemeinden per Land and per Kreis, derived from the register.
/// The GV100AD register held in memory: it changes only on import, and reports over
/// 10,773 Gemeinden would otherwise decode one stored Kommune per row.
#[derive(Default)]
struct RegisterCache {
    per_land: BTreeMap<String, u32>,
    per_kreis: BTreeMap<String, u32>,
    kommunen: std::collections::HashMap<Ags, Kommune>,
}

pub struct Registry {
    store: Arc<dyn Store>,
    limits: BundleLimits,
    register: RwLock<Option<Arc<RegisterCache>>>,
    /// Applies every mutation and makes it durable; see [`crate::commit`].
    commits: Committer,
    themenfelder: std::sync::OnceLock<std::collections::BTreeSet<String>>,
}

fn check_len(field: &'static str, s: &str, max: usize) -> Result<()> {
    let n = s.chars().count();
    if n > max {
        return Err(Error::invalid(field, format!("is {n} characters, more than the limit of {max}")));
    }
    Ok(())
}

impl Registry {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self::with_limits(store, BundleLimits::default())
    }

    pub fn with_limits(store: Arc<dyn Store>, limits: BundleLimits) -> Self {
        Registry {
            commits: Committer::start(store.clone()),
            store,
            limits,
            register: RwLock::new(None),
            themenfelder: Default::default(),
        }
    }

    pub fn store(&self) -> &dyn Store {
        self.store.as_ref()
    }

    pub fn limits(&self) -> &BundleLimits {
        &self.limits
    }

    // ---------------------------------------------------------------- register

    /// Imports the GV100AD register, the OZG catalogue and LeiKa shipped with the crate.
    /// Idempotent: running it again rewrites the same records.
    pub fn seed_bundled(&self) -> Result<ImportCounts> {
        let gv = import::bundled_gv100ad()?;
        let ozg = import::bundled_ozg()?;
        let leika = import::bundled_leika()?;
        self.commits.write(move |s| {
            s.import_register(&gv.laender, &gv.kreise, &gv.kommunen)?;
            s.import_catalogue(&ozg, &leika)
        })?;
        *self.register.write().unwrap_or_else(|p| p.into_inner()) = None;
        self.register()?; // warm now, not on the first report
        let counts = self.store.counts()?;
        tracing::info!(?counts, "register and catalogue imported");
        Ok(counts)
    }

    /// Imports only if the register is empty, so a restart does not redo the work.
    pub fn seed_if_empty(&self) -> Result<ImportCounts> {
        let counts = self.store.counts()?;
        if counts.kommunen > 0 && counts.ozg_leistungen > 0 {
            self.register()?; // warm now, not on the first report
            return Ok(counts);
        }
        self.seed_bundled()
    }

    /// The Themenfelder of the OZG catalogue, parsed once.
    fn themenfelder(&self) -> Result<&std::collections::BTreeSet<String>> {
        if let Some(t) = self.themenfelder.get() {
            return Ok(t);
        }
        let set = import::bundled_ozg()?.into_iter().map(|o| o.themenfeld).collect();
        Ok(self.themenfelder.get_or_init(|| set))
    }

    pub fn kommune(&self, ags: &Ags) -> Result<Kommune> {
        self.register()?.kommunen.get(ags).cloned().ok_or_else(|| {
            Error::NotFound(format!("Kommune with AGS {ags} (not in the Destatis register of 2023-11-30)"))
        })
    }

    fn register(&self) -> Result<Arc<RegisterCache>> {
        if let Some(t) = self.register.read().unwrap_or_else(|p| p.into_inner()).as_ref() {
            return Ok(t.clone());
        }
        let mut t = RegisterCache::default();
        for k in self.store.kommunen()? {
            *t.per_land.entry(k.ags.land().to_string()).or_default() += 1;
            *t.per_kreis.entry(k.ags.kreis().to_string()).or_default() += 1;
            t.kommunen.insert(k.ags.clone(), k);
        }
        let t = Arc::new(t);
        *self.register.write().unwrap_or_else(|p| p.into_inner()) = Some(t.clone());
        Ok(t)
    }

    // ---------------------------------------------------------------- services

    pub fn register_service(&self, land: &LandCode, new: NewService) -> Result<(Service, Event)> {
        if self.store.land(land)?.is_none() {
            return Err(Error::NotFound(format!("Land {land}")));
        }
        let ozg = self
            .store
            .ozg_leistung(&new.ozg_id)?
            .ok_or_else(|| Error::invalid("OZG-ID", format!("{} is not in the OZG catalogue", new.ozg_id)))?;
        if let Some(key) = &new.leistungsschluessel {
            let entry = self
                .store
                .leika(key)?
                .ok_or_else(|| Error::invalid("Leistungsschlüssel", format!("{key} is not in the LeiKa catalogue")))?;
            if let Some(linked) = &entry.ozg_id {
                if linked != &new.ozg_id {
                    return Err(Error::invalid(
                        "Leistungsschlüssel",
                        format!("{key} ({}) belongs to OZG-ID {linked}, not {}", entry.name, new.ozg_id),
                    ));
                }
            }
        }
        if new.title.trim().is_empty() {
            return Err(Error::invalid("title", "must not be empty"));
        }
        check_len("title", &new.title, MAX_TITLE_CHARS)?;
        check_len("description", &new.description, MAX_DESCRIPTION_CHARS)?;
        validate_schema(&new.parameters)?;
        let existing = self.store.service(&new.id)?;
        if let Some(existing) = &existing {
            if &existing.land != land {
                return Err(Error::PermissionDenied(format!(
                    "service {} belongs to Land {}; Land {land} cannot change it",
                    existing.id, existing.land
                )));
            }
        }
        let service = Service {
            registered_at_ms: existing.as_ref().map(|e| e.registered_at_ms).unwrap_or_else(crate::now_ms),
            id: new.id,
            ozg_id: new.ozg_id,
            leistungsschluessel: new.leistungsschluessel,
            title: new.title,
            description: new.description,
            land: land.clone(),
            themenfeld: ozg.themenfeld,
            lebenslage: ozg.lebenslage,
            parameters: new.parameters,
            adoption_public: new.adoption_public,
        };
        let kind = EventKind::ServiceRegistered { service_id: service.id.clone(), land: land.clone() };
        self.commits
            .write(move |s| Ok((s.put_service(&service, kind)?, service)))
            .map(|(event, service)| (service, event))
    }

    pub fn service(&self, id: &ServiceId) -> Result<Service> {
        self.store.service(id)?.ok_or_else(|| Error::NotFound(format!("service {id}")))
    }

    pub fn services(&self, land: Option<&LandCode>, themenfeld: Option<&str>) -> Result<Vec<Service>> {
        Ok(self
            .store
            .services()?
            .into_iter()
            .filter(|s| land.is_none_or(|l| &s.land == l))
            .filter(|s| themenfeld.is_none_or(|t| s.themenfeld == t))
            .collect())
    }

    // ---------------------------------------------------------------- releases

    /// Checks a release header before any content is accepted: a valid manifest, for a
    /// service of this Land, at a version that does not exist yet.
    pub fn check_publish(&self, land: &LandCode, manifest_bytes: &[u8], signature: &[u8]) -> Result<Manifest> {
        let manifest = Manifest::from_bytes(manifest_bytes, &self.limits)?;
        let service = self.service(&manifest.service_id)?;
        if &service.land != land {
            return Err(Error::PermissionDenied(format!(
                "service {} belongs to Land {}; Land {land} cannot publish it",
                service.id, service.land
            )));
        }
        if &manifest.land != land {
            return Err(Error::invalid(
                "manifest",
                format!("names Land {}, but the publisher is Land {land}", manifest.land),
            ));
        }
        if signature.len() != 64 {
            return Err(Error::invalid("signature", "must be a 64-byte Ed25519 signature over the manifest"));
        }
        let version = manifest.semver()?;
        if self.store.release(&service.id, &version)?.is_some() {
            return Err(Error::AlreadyExists(format!(
                "release {} {version} (published versions are immutable; publish a new version)",
                service.id
            )));
        }
        Ok(manifest)
    }

    /// Records a release whose content the caller has stored and verified.
    pub fn commit_release(
        &self,
        land: &LandCode,
        manifest_bytes: Vec<u8>,
        signature: Vec<u8>,
        release_notes: String,
    ) -> Result<(Release, Event)> {
        let manifest = self.check_publish(land, &manifest_bytes, &signature)?;
        check_len("release notes", &release_notes, MAX_DESCRIPTION_CHARS)?;
        let release = Release {
            service_id: manifest.service_id.clone(),
            version: manifest.semver()?,
            channel: manifest.channel.clone(),
            land: land.clone(),
            content_digest: Manifest::content_digest(&manifest_bytes),
            total_size: manifest.total_size(),
            file_count: manifest.files.len() as u32,
            release_notes,
            published_at_ms: crate::now_ms(),
            manifest: manifest_bytes,
            signature,
            yank: None,
        };
        self.commits.write(move |s| Ok((s.insert_release(&release)?, release))).map(|(event, release)| (release, event))
    }

    pub fn release(&self, service: &ServiceId, version: &str) -> Result<Release> {
        let v = parse_version(version)?;
        self.store.release(service, &v)?.ok_or_else(|| Error::NotFound(format!("release {service} {v}")))
    }

    pub fn releases(&self, service: &ServiceId, channel: Option<&Channel>) -> Result<Vec<Release>> {
        self.service(service)?;
        Ok(self.store.releases(service)?.into_iter().filter(|r| channel.is_none_or(|c| &r.channel == c)).collect())
    }

    pub fn yank(&self, land: &LandCode, service: &ServiceId, version: &str, reason: &str) -> Result<(Release, Event)> {
        let s = self.service(service)?;
        if &s.land != land {
            return Err(Error::PermissionDenied(format!(
                "service {service} belongs to Land {}; Land {land} cannot yank its releases",
                s.land
            )));
        }
        if reason.trim().is_empty() {
            return Err(Error::invalid("reason", "a yank needs a reason Kommunen can read"));
        }
        check_len("reason", reason, MAX_REASON_CHARS)?;
        let v = parse_version(version)?;
        let (service, yank) = (service.clone(), Yank { reason: reason.to_string(), at_ms: crate::now_ms() });
        self.commits.write(move |s| s.yank_release(&service, &v, yank))
    }

    /// Stores a Land's signed snapshot after checking it names only that Land's services
    /// at published versions, and is not older than the one it replaces.
    pub fn publish_snapshot(&self, land: &LandCode, bytes: Vec<u8>, signature: Vec<u8>) -> Result<Snapshot> {
        let snapshot = Snapshot::from_bytes(&bytes)?;
        if &snapshot.land != land {
            return Err(Error::PermissionDenied(format!(
                "snapshot is for Land {}, but the publisher is Land {land}",
                snapshot.land
            )));
        }
        if signature.len() != 64 {
            return Err(Error::invalid("signature", "must be a 64-byte Ed25519 signature over the snapshot"));
        }
        for (service, channels) in &snapshot.latest {
            let s = self.service(service)?;
            if &s.land != land {
                return Err(Error::PermissionDenied(format!("service {service} belongs to Land {}", s.land)));
            }
            for version in channels.values() {
                self.release(service, version)?;
            }
        }
        if let Some((old, _)) = self.store.snapshot(land)? {
            let old = Snapshot::from_bytes(&old)?;
            if snapshot.issued_at_ms < old.issued_at_ms {
                return Err(Error::FailedPrecondition(format!(
                    "snapshot issued at {} is older than the stored one ({})",
                    snapshot.issued_at_ms, old.issued_at_ms
                )));
            }
        }
        let land = land.clone();
        self.commits.write(move |s| s.put_snapshot(&land, &bytes, &signature))?;
        Ok(snapshot)
    }

    pub fn snapshot(&self, land: &LandCode) -> Result<(Vec<u8>, Vec<u8>)> {
        self.store
            .snapshot(land)?
            .ok_or_else(|| Error::NotFound(format!("signed snapshot of Land {land} (the Land has not published one)")))
    }

    // ---------------------------------------------------------------- subscriptions

    pub fn subscribe(
        &self,
        ags: &Ags,
        target: SubscriptionTarget,
        channel: Channel,
        policy: UpdatePolicy,
    ) -> Result<(Subscription, Event)> {
        self.kommune(ags)?;
        match &target {
            SubscriptionTarget::Service(id) => {
                self.service(id)?;
            }
            SubscriptionTarget::Themenfeld(t) => {
                let known = self.themenfelder()?.contains(t);
                if !known {
                    return Err(Error::invalid(
                        "Themenfeld",
                        format!("{t:?} is not a Themenfeld of the OZG catalogue"),
                    ));
                }
            }
        }
        let sub = Subscription { ags: ags.clone(), target, channel, policy, since_ms: crate::now_ms() };
        self.commits.write(move |s| Ok((s.put_subscription(&sub)?, sub))).map(|(event, sub)| (sub, event))
    }

    pub fn unsubscribe(&self, ags: &Ags, target: &SubscriptionTarget) -> Result<bool> {
        let (ags, key) = (ags.clone(), target.key());
        self.commits.write(move |s| Ok(s.remove_subscription(&ags, &key)?.is_some()))
    }

    pub fn subscriptions(&self, ags: &Ags) -> Result<Vec<Subscription>> {
        self.store.subscriptions_of(ags)
    }

    // ---------------------------------------------------------------- adoption

    /// Appends a Kommune's adoption report to the ledger. The checks run on the caller's
    /// thread; the returned future resolves once the entry is durable, without parking a
    /// thread meanwhile (this is the hot write path of 11,000 nodes).
    pub fn report_adoption(
        &self,
        ags: &Ags,
        service: &ServiceId,
        version: Option<&str>,
        state: AdoptionState,
        reason: &str,
    ) -> impl std::future::Future<Output = Result<(AdoptionRecord, Event)>> + Send + 'static {
        let commit = self
            .check_adoption(ags, service, version, state, reason)
            .map(|entry| self.commits.write_async(move |s| s.append_adoption(&entry)));
        async move { commit?.await }
    }

    fn check_adoption(
        &self,
        ags: &Ags,
        service: &ServiceId,
        version: Option<&str>,
        state: AdoptionState,
        reason: &str,
    ) -> Result<AdoptionEntry> {
        self.kommune(ags)?;
        self.service(service)?;
        let version = match version.filter(|v| !v.trim().is_empty()) {
            Some(v) => Some(self.release(service, v)?.version),
            None if state.needs_version() => {
                return Err(Error::invalid("version", format!("state {state} must name the version it refers to")))
            }
            None => None,
        };
        if state.needs_reason() && reason.trim().is_empty() {
            return Err(Error::invalid("reason", format!("state {state} must say why")));
        }
        check_len("reason", reason, MAX_REASON_CHARS)?;
        let entry = AdoptionEntry {
            ags: ags.clone(),
            service_id: service.clone(),
            version,
            state,
            reason: reason.to_string(),
            at_ms: crate::now_ms(),
        };
        Ok(entry)
    }

    /// Loads adoption ledger entries in bulk (migrations, benchmarks): no events are
    /// appended and the rules of [`report_adoption`](Self::report_adoption) are not
    /// checked; see [`Store::bulk_load_adoptions`]. Durable when it returns.
    pub fn bulk_load_adoptions(&self, entries: Vec<AdoptionEntry>) -> Result<()> {
        self.commits.write(move |s| s.bulk_load_adoptions(&entries))
    }

    // ---------------------------------------------------------------- ratings

    /// Records a Kommune's rating of a version it has evaluated or deployed; resolves once it
    /// is durable (see [`report_adoption`](Self::report_adoption)).
    pub fn rate(
        &self,
        ags: &Ags,
        service: &ServiceId,
        version: &str,
        stars: u32,
        criteria: Vec<(Criterion, u32)>,
        comment: String,
    ) -> impl std::future::Future<Output = Result<(Rating, Event)>> + Send + 'static {
        let commit = self
            .check_rating(ags, service, version, stars, criteria, comment)
            .map(|rating| self.commits.write_async(move |s| Ok((s.put_rating(&rating)?, rating))));
        async move { commit?.await.map(|(event, rating)| (rating, event)) }
    }

    fn check_rating(
        &self,
        ags: &Ags,
        service: &ServiceId,
        version: &str,
        stars: u32,
        criteria: Vec<(Criterion, u32)>,
        comment: String,
    ) -> Result<Rating> {
        let release = self.release(service, version)?;
        let to_u8 = |v: u32, field: &'static str| {
            u8::try_from(v).map_err(|_| Error::invalid(field, format!("{v} is outside 1..5")))
        };
        let rating = Rating {
            ags: ags.clone(),
            service_id: service.clone(),
            version: release.version.clone(),
            stars: to_u8(stars, "stars")?,
            criteria: criteria
                .into_iter()
                .map(|(c, s)| Ok((c, to_u8(s, "criterion score")?)))
                .collect::<Result<_>>()?,
            comment,
            at_ms: crate::now_ms(),
        };
        rating.validate()?;
        let may = self.store.adoption(service, ags)?.is_some_and(|r| r.may_rate(&release.version));
        if !may {
            return Err(Error::FailedPrecondition(format!(
                "Kommune {ags} has not evaluated or deployed {service} {}; only Kommunen that did may rate it",
                release.version
            )));
        }
        Ok(rating)
    }

    // ---------------------------------------------------------------- reports

    pub fn adopters(&self, service: &ServiceId) -> Result<Vec<Adopter>> {
        self.service(service)?;
        let register = self.register()?;
        Ok(self
            .store
            .adopters(service)?
            .into_iter()
            .map(|record| Adopter { kommune: register.kommunen.get(&record.latest.ags).cloned(), record })
            .collect())
    }

    /// The service's adoption and rating counters, read in one lookup (see [`ServiceTotals`]).
    pub fn service_totals(&self, service: &ServiceId) -> Result<ServiceTotals> {
        self.store.service_totals(service)
    }

    /// Number of Kommunen with at least one adoption record.
    pub fn kommunen_with_records(&self) -> Result<usize> {
        self.store.kommunen_with_records()
    }

    /// Kommunen with at least one adoption record whose AGS starts with `prefix` (a Land or
    /// Kreis code, or empty for all), in AGS order.
    pub fn kommunen_with_records_under(&self, prefix: &str) -> Result<Vec<Ags>> {
        self.store.kommunen_with_records_under(prefix)
    }

    pub fn kommune_report(&self, ags: &Ags) -> Result<(Kommune, Vec<AdoptionRecord>, Vec<AdoptionEntry>)> {
        let kommune = self.kommune(ags)?;
        Ok((kommune, self.store.adoptions_of(ags)?, self.store.history_of(ags)?))
    }

    /// Gemeinden running `service` (state deployed or a running version) per Land, and per
    /// Kreis where it is adopted (or every Kreis of `land`, when given).
    pub fn coverage(&self, service: &ServiceId, land: Option<&LandCode>) -> Result<Vec<CoverageRow>> {
        self.service(service)?;
        let register = self.register()?;
        let mut per_land: BTreeMap<String, u32> = BTreeMap::new();
        let mut per_kreis: BTreeMap<String, u32> = BTreeMap::new();
        for rec in self.store.adopters(service)? {
            if rec.running.is_some() {
                *per_land.entry(rec.latest.ags.land().to_string()).or_default() += 1;
                *per_kreis.entry(rec.latest.ags.kreis().to_string()).or_default() += 1;
            }
        }
        let mut rows = Vec::new();
        for l in self.store.laender()? {
            rows.push(CoverageRow {
                level: CoverageLevel::Land,
                code: l.code.to_string(),
                name: l.name,
                adopted: per_land.get(l.code.as_str()).copied().unwrap_or(0),
                total: register.per_land.get(l.code.as_str()).copied().unwrap_or(0),
            });
        }
        for k in self.store.kreise()? {
            let adopted = per_kreis.get(k.code.as_str()).copied().unwrap_or(0);
            let in_land = land.is_some_and(|l| k.code.land() == *l);
            if adopted > 0 || in_land {
                rows.push(CoverageRow {
                    level: CoverageLevel::Kreis,
                    code: k.code.to_string(),
                    name: k.name,
                    adopted,
                    total: register.per_kreis.get(k.code.as_str()).copied().unwrap_or(0),
                });
            }
        }
        Ok(rows)
    }

    pub fn rating_summary(&self, service: &ServiceId) -> Result<RatingSummary> {
        self.service(service)?;
        let ratings = self.store.ratings(service)?;
        let mut by_version: BTreeMap<semver::Version, Vec<&Rating>> = BTreeMap::new();
        for r in &ratings {
            by_version.entry(r.version.clone()).or_default().push(r);
        }
        Ok(RatingSummary {
            overall: RatingAggregate::from_ratings(&ratings),
            per_version: by_version.into_iter().rev().map(|(v, rs)| (v, RatingAggregate::from_ratings(rs))).collect(),
        })
    }

    /// Ratings and rejections of the services of `land` (all Länder if `None`), or of one service.
    pub fn feedback(&self, land: Option<&LandCode>, service: Option<&ServiceId>) -> Result<Feedback> {
        let services: Vec<Service> = match service {
            Some(id) => vec![self.service(id)?],
            None => self.services(land, None)?,
        };
        let mut out = Feedback::default();
        for s in services {
            out.ratings.extend(self.store.ratings(&s.id)?);
            for rec in self.store.adopters(&s.id)? {
                if rec.latest.state == AdoptionState::Rejected {
                    out.rejections.push(rec.latest);
                }
            }
        }
        out.ratings.sort_by_key(|r| std::cmp::Reverse(r.at_ms));
        out.rejections.sort_by_key(|r| std::cmp::Reverse(r.at_ms));
        Ok(out)
    }

    // ---------------------------------------------------------------- events

    pub fn events_after(&self, seq: u64, limit: usize) -> Result<Vec<Event>> {
        self.store.events_after(seq, limit)
    }

    pub fn head_seq(&self) -> Result<u64> {
        self.store.head_seq()
    }

    /// Seq of the oldest event still in the log.
    pub fn oldest_seq(&self) -> Result<Option<u64>> {
        self.store.oldest_seq()
    }

    /// Event retention: keeps the newest `keep` events (at least one) and drops older ones.
    /// Nodes whose cursor falls behind get a "resync needed" answer instead of silent loss.
    pub fn trim_events_keep(&self, keep: u64) -> Result<usize> {
        let head = self.store.head_seq()?;
        let before = head.saturating_sub(keep.max(1)) + 1;
        let n = self.commits.write(move |s| s.trim_events(before))?;
        if n > 0 {
            tracing::info!(removed = n, oldest_kept = before, "event log trimmed");
        }
        Ok(n)
    }
}
