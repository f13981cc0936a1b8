//! Services, releases, yanks and Land snapshots.

use super::{Registry, MAX_DESCRIPTION_CHARS, MAX_REASON_CHARS, MAX_TITLE_CHARS};
use crate::error::{Error, Result};
use crate::store::{InlineBlob, NewRelease};
use efa_domain::authz::{acting_land, Identity};
use efa_domain::bundle::Manifest;
use efa_domain::error::echo;
use efa_domain::model::catalog::{CatalogEntry, Deprecation, NewService, Service, SigningKeys};
use efa_domain::model::event::{Event, EventKind};
use efa_domain::model::ids::{parse_version, Channel, LandCode, ServiceId};
use efa_domain::model::release::{Release, Yank};
use efa_domain::model::rollout::{Rollout, RolloutPlan};
use efa_domain::params::validate_schema;
use efa_domain::signing::{verify_any, VerifyingKey};
use efa_domain::snapshot::Snapshot;
use efa_domain::text::{self, Lines};
use std::future::Future;

/// Further Leistungsschlüssel one service may cover (ELFE bundles four Leistungen).
const MAX_MORE_LEISTUNGSSCHLUESSEL: usize = 16;
/// Release signing keys a Land may register at once (rotation needs two or three).
const MAX_SIGNING_KEYS: usize = 16;
/// How far a snapshot's issue time may lie ahead of the hub's clock (clocks drift).
const MAX_CLOCK_AHEAD_MS: i64 = 10 * 60 * 1000;

/// Where a blob the hub may serve is kept ([`Registry::blob_source`]).
#[derive(Debug, PartialEq, Eq)]
pub enum BlobSource {
    /// No published release names it: it is not served.
    Unreferenced,
    /// A small file kept in the store: its bytes.
    Inline(Vec<u8>),
    /// In the blob store.
    Stored,
}

/// A release header the registry has checked: a valid manifest for a service of the
/// publishing Land, at a version that did not exist when checked. Content may now be
/// accepted for it; [`Registry::commit_release`] records it without parsing it again.
#[derive(Debug)]
pub struct CheckedRelease {
    land: LandCode,
    manifest: Manifest,
    version: semver::Version,
    manifest_bytes: Vec<u8>,
    signature: Vec<u8>,
}

impl CheckedRelease {
    /// The parsed manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The publishing Land.
    pub fn land(&self) -> &LandCode {
        &self.land
    }
}

impl Registry {
    /// Registers a service for the calling Land, or updates one it registered before.
    pub fn register_service(&self, who: &Identity, new: NewService) -> Result<(Service, Event)> {
        let existing = self.store.service(&new.id)?;
        let land = acting_land(who, existing.as_ref().map(|s| &s.land))?;
        self.land(&land)?;
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
        if new.more_leistungsschluessel.len() > MAX_MORE_LEISTUNGSSCHLUESSEL {
            return Err(Error::invalid(
                "Leistungsschlüssel",
                format!(
                    "{} further keys, more than {MAX_MORE_LEISTUNGSSCHLUESSEL}",
                    new.more_leistungsschluessel.len()
                ),
            ));
        }
        for (i, key) in new.more_leistungsschluessel.iter().enumerate() {
            if self.store.leika(key)?.is_none() {
                return Err(Error::invalid("Leistungsschlüssel", format!("{key} is not in the LeiKa catalogue")));
            }
            if new.leistungsschluessel.as_ref() == Some(key) || new.more_leistungsschluessel[..i].contains(key) {
                return Err(Error::invalid("Leistungsschlüssel", format!("{key} is listed twice")));
            }
        }
        if new.title.trim().is_empty() {
            return Err(Error::invalid("title", "must not be empty"));
        }
        text::check("title", &new.title, MAX_TITLE_CHARS, Lines::Single)?;
        text::check("description", &new.description, MAX_DESCRIPTION_CHARS, Lines::Multi)?;
        validate_schema(&new.parameters)?;
        let service = Service {
            registered_at_ms: existing.as_ref().map(|e| e.registered_at_ms).unwrap_or_else(efa_domain::now_ms),
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
            more_leistungsschluessel: new.more_leistungsschluessel,
            // A new registration keeps a deprecation; only `deprecate` changes it.
            deprecated: existing.as_ref().and_then(|e| e.deprecated.clone()),
        };
        let who = who.clone();
        let kind = EventKind::ServiceRegistered { service_id: service.id.clone(), land };
        self.commits
            .write(move |s| {
                // Two Länder registering the same new id at once: the second one is decided
                // against the owner the first one wrote.
                if let Some(now) = s.service(&service.id)? {
                    acting_land(&who, Some(&now.land))?;
                }
                Ok((s.put_service(&service, kind)?, service))
            })
            .map(|(event, service)| (service, event))
    }

    /// A service of the catalog.
    pub fn service(&self, id: &ServiceId) -> Result<Service> {
        self.store.service(id)?.ok_or_else(|| Error::not_found(format!("service {id}")))
    }

    /// Services, filtered by registering Land and Themenfeld.
    pub fn services(&self, land: Option<&LandCode>, themenfeld: Option<&str>) -> Result<Vec<Service>> {
        Ok(self
            .store
            .services()?
            .into_iter()
            .filter(|s| land.is_none_or(|l| &s.land == l))
            .filter(|s| themenfeld.is_none_or(|t| s.themenfeld == t))
            .collect())
    }

    /// A service with its published versions.
    pub fn catalog_entry(&self, id: &ServiceId) -> Result<CatalogEntry> {
        let service = self.service(id)?;
        self.entry(service)
    }

    fn entry(&self, service: Service) -> Result<CatalogEntry> {
        let versions = self.store.releases(&service.id)?.into_iter().map(|r| r.version).collect();
        let offered_by = self.offers(&service.id)?.into_iter().filter(|o| o.is_active()).map(|o| o.land).collect();
        Ok(CatalogEntry { service, versions, offered_by })
    }

    /// Services with their published versions, filtered as [`services`](Self::services).
    /// An unknown Land or Themenfeld is refused, not answered with an empty list.
    pub fn catalog(&self, land: Option<&LandCode>, themenfeld: Option<&str>) -> Result<Vec<CatalogEntry>> {
        if let Some(land) = land {
            self.land(land)?;
        }
        if let Some(t) = themenfeld {
            self.check_themenfeld(t)?;
        }
        self.services(land, themenfeld)?.into_iter().map(|service| self.entry(service)).collect()
    }

    /// Checks a release header before any content is accepted: a valid manifest, for a
    /// service of the calling Land, at a version that does not exist yet.
    pub fn check_publish(&self, who: &Identity, manifest_bytes: Vec<u8>, signature: Vec<u8>) -> Result<CheckedRelease> {
        let manifest = Manifest::from_bytes(&manifest_bytes, &self.limits)?;
        let service = self.service(&manifest.service_id)?;
        let land = acting_land(who, Some(&service.land))?;
        if manifest.land != land {
            return Err(Error::invalid(
                "manifest",
                format!("names Land {}, but the publisher is Land {land}", manifest.land),
            ));
        }
        if let Some(signed) = &manifest.parameters {
            let by_name = |v: &[efa_domain::params::ParameterSpec]| {
                let mut v = v.to_vec();
                v.sort_by(|a, b| a.name.cmp(&b.name));
                v
            };
            if by_name(signed) != by_name(&service.parameters) {
                return Err(Error::invalid(
                    "manifest",
                    format!(
                        "its parameters differ from those registered for {}; register the new schema first \
                         (efa register --param ...), then publish",
                        service.id
                    ),
                ));
            }
        }
        if signature.len() != 64 {
            return Err(Error::invalid("signature", "must be a 64-byte Ed25519 signature over the manifest"));
        }
        self.check_signature(&land, "release", &manifest_bytes, &signature)?;
        let version = manifest.semver()?;
        if self.store.release(&service.id, &version)?.is_some() {
            return Err(Error::already_exists(format!(
                "release {} {version} already exists; published versions are immutable, publish a new version",
                service.id
            )));
        }
        Ok(CheckedRelease { land, manifest, version, manifest_bytes, signature })
    }

    /// Records a checked release whose content the caller has stored and verified; with a
    /// rollout plan, the release and its rollout (first ring open) are stored together.
    /// Resolves to the release and its events (`ReleasePublished`, then `RolloutChanged`)
    /// once they are durable; the checks run on the caller's thread and nothing parks a
    /// thread while the commit thread flushes.
    ///
    /// `inline` are small files of the release the store keeps ([`InlineBlob`]); each must
    /// be an unchunked file of the manifest with the size it names (the hub checked the
    /// digest while receiving it).
    pub fn commit_release(
        &self,
        checked: CheckedRelease,
        release_notes: String,
        plan: Option<RolloutPlan>,
        inline: Vec<InlineBlob>,
    ) -> impl Future<Output = Result<(Release, Vec<Event>)>> + Send + 'static {
        let commit = Self::release_of(checked, release_notes, plan, &inline).map(|(release, rollout)| {
            let events = self.commits.release_async(NewRelease { release: release.clone(), rollout, inline });
            (release, events)
        });
        async move {
            let (release, events) = commit?;
            Ok((release, events.await?))
        }
    }

    /// The release record (and started rollout) of a checked release.
    fn release_of(
        checked: CheckedRelease,
        release_notes: String,
        plan: Option<RolloutPlan>,
        inline: &[InlineBlob],
    ) -> Result<(Release, Option<Rollout>)> {
        text::check("release notes", &release_notes, MAX_DESCRIPTION_CHARS, Lines::Multi)?;
        let CheckedRelease { land, manifest, version, manifest_bytes, signature } = checked;
        for b in inline {
            let named = manifest
                .files
                .iter()
                .any(|f| f.chunks.is_empty() && f.digest == b.digest && f.size == b.bytes.len() as u64);
            if !named {
                return Err(Error::invalid(
                    "content",
                    format!("{} is not a small file of this release's manifest", b.digest),
                ));
            }
        }
        let release = Release {
            service_id: manifest.service_id.clone(),
            version,
            channel: manifest.channel.clone(),
            land,
            content_digest: Manifest::content_digest(&manifest_bytes),
            total_size: manifest.total_size(),
            file_count: manifest.files.len() as u32,
            release_notes,
            published_at_ms: efa_domain::now_ms(),
            manifest: manifest_bytes,
            signature,
            yank: None,
        };
        let rollout = plan.map(|p| Rollout::start(p, release.published_at_ms)).transpose()?;
        Ok((release, rollout))
    }

    /// True if a published release names the blob; the hub serves only such content.
    pub fn blob_referenced(&self, digest: &efa_domain::bundle::Digest) -> Result<bool> {
        self.store.blob_referenced(digest)
    }

    /// Whether the hub may serve the blob, and where its bytes are: one read for a
    /// download's check and, for a small file, its content.
    pub fn blob_source(&self, digest: &efa_domain::bundle::Digest) -> Result<BlobSource> {
        if !self.store.blob_referenced(digest)? {
            return Ok(BlobSource::Unreferenced);
        }
        Ok(match self.store.inline_blob(digest)? {
            Some(bytes) => BlobSource::Inline(bytes),
            None => BlobSource::Stored,
        })
    }

    /// One release of a service.
    pub fn release(&self, service: &ServiceId, version: &str) -> Result<Release> {
        let v = parse_version(version)?;
        self.store.release(service, &v)?.ok_or_else(|| Error::not_found(format!("release {service} {v}")))
    }

    /// The releases of a service, newest version first, optionally of one channel.
    pub fn releases(&self, service: &ServiceId, channel: Option<&Channel>) -> Result<Vec<Release>> {
        self.service(service)?;
        Ok(self.store.releases(service)?.into_iter().filter(|r| channel.is_none_or(|c| &r.channel == c)).collect())
    }

    /// The building Land deprecates its service (again: a new notice), naming a successor
    /// if there is one. Kommunen keep what they run; nodes show the notice.
    pub fn deprecate(
        &self,
        who: &Identity,
        service: &ServiceId,
        reason: &str,
        successor: Option<ServiceId>,
    ) -> Result<(Service, Event)> {
        let mut s = self.service(service)?;
        let land = acting_land(who, Some(&s.land))?;
        if reason.trim().is_empty() {
            return Err(Error::invalid("reason", "say why the service is deprecated; Kommunen read it"));
        }
        text::check("reason", reason, MAX_REASON_CHARS, Lines::Multi)?;
        if let Some(next) = &successor {
            if next == service {
                return Err(Error::invalid("successor", "a service cannot succeed itself"));
            }
            self.service(next)?;
        }
        s.deprecated = Some(Deprecation { reason: reason.to_string(), successor, at_ms: efa_domain::now_ms() });
        let kind = EventKind::ServiceRegistered { service_id: s.id.clone(), land };
        self.commits.write(move |st| Ok((st.put_service(&s, kind)?, s))).map(|(e, s)| (s, e))
    }

    /// Yanks a release of a service of the calling Land: no new deployments; with `recall`,
    /// Kommunen that run it are asked to stop serving it.
    pub fn yank(
        &self,
        who: &Identity,
        service: &ServiceId,
        version: &str,
        reason: &str,
        recall: bool,
    ) -> Result<(Release, Event)> {
        let s = self.service(service)?;
        acting_land(who, Some(&s.land))?;
        if reason.trim().is_empty() {
            return Err(Error::invalid("reason", "a yank needs a reason Kommunen can read"));
        }
        text::check("reason", reason, MAX_REASON_CHARS, Lines::Multi)?;
        let v = parse_version(version)?;
        let (service, yank) =
            (service.clone(), Yank { reason: reason.to_string(), at_ms: efa_domain::now_ms(), recall });
        self.commits.write(move |s| s.yank_release(&service, &v, yank))
    }

    /// Stores the calling Land's signed snapshot after checking it names only that Land's
    /// services at published versions, and is not older than the one it replaces.
    pub fn publish_snapshot(&self, who: &Identity, bytes: Vec<u8>, signature: Vec<u8>) -> Result<Snapshot> {
        let land = acting_land(who, None)?;
        let snapshot = Snapshot::from_bytes(&bytes)?;
        if snapshot.land != land {
            return Err(efa_domain::Error::PermissionDenied(format!(
                "snapshot is for Land {}, but the publisher is Land {land}",
                snapshot.land
            ))
            .into());
        }
        if signature.len() != 64 {
            return Err(Error::invalid("signature", "must be a 64-byte Ed25519 signature over the snapshot"));
        }
        self.check_signature(&land, "snapshot", &bytes, &signature)?;
        not_from_the_future("snapshot", snapshot.issued_at_ms)?;
        for (service, channels) in &snapshot.latest {
            acting_land(who, Some(&self.service(service)?.land))?;
            for version in channels.values() {
                self.release(service, version)?;
            }
        }
        if let Some((old, _)) = self.store.snapshot(&land)? {
            let old = Snapshot::from_bytes(&old)?;
            if snapshot.issued_at_ms < old.issued_at_ms {
                return Err(Error::failed_precondition(format!(
                    "snapshot issued at {} is older than the stored one ({})",
                    snapshot.issued_at_ms, old.issued_at_ms
                )));
            }
        }
        self.commits.write(move |s| s.put_snapshot(&land, &bytes, &signature))?;
        Ok(snapshot)
    }

    /// Replaces the release signing keys the calling Land registers with the hub (at most
    /// 16, each a valid `efa-ed25519-public:` key; empty removes the check).
    pub fn set_signing_keys(&self, who: &Identity, keys: Vec<String>) -> Result<(SigningKeys, Event)> {
        let land = acting_land(who, None)?;
        self.check_no_key_sets(&land)?;
        if keys.len() > MAX_SIGNING_KEYS {
            return Err(Error::invalid("keys", format!("{} keys, more than {MAX_SIGNING_KEYS}", keys.len())));
        }
        let mut seen = Vec::new();
        for k in &keys {
            let key = VerifyingKey::from_text(k)?;
            if seen.contains(&key) {
                return Err(Error::invalid("keys", format!("{} is listed twice", echo(k.trim()))));
            }
            seen.push(key);
        }
        let keys =
            SigningKeys { keys: seen.iter().map(|k| k.to_text()).collect(), updated_at_ms: efa_domain::now_ms() };
        self.commits.write(move |s| Ok((s.put_signing_keys(&land, &keys)?, keys))).map(|(e, k)| (k, e))
    }

    /// The release signing keys a Land registered (empty if none).
    pub fn signing_keys(&self, land: &LandCode) -> Result<SigningKeys> {
        self.land(land)?;
        self.store.signing_keys(land)
    }

    /// If the Land registered signing keys, `signature` must verify against one of them.
    pub(super) fn check_signature(&self, land: &LandCode, what: &str, bytes: &[u8], signature: &[u8]) -> Result<()> {
        let registered = self.store.signing_keys(land)?;
        if registered.keys.is_empty() {
            return Ok(());
        }
        let keys: Vec<VerifyingKey> = registered.keys.iter().filter_map(|k| VerifyingKey::from_text(k).ok()).collect();
        if verify_any(&keys, bytes, signature) {
            Ok(())
        } else {
            Err(Error::invalid(
                "signature",
                format!(
                    "the {what} is not signed by any of the {} release key(s) Land {land} registered with the hub \
                     (`efa keys list`); sign with a registered key, or register the new key first (`efa keys add`). \
                     Kommunen would refuse it too if they pin the same keys",
                    keys.len()
                ),
            ))
        }
    }

    /// A Land's signed snapshot: (snapshot bytes, signature).
    pub fn snapshot(&self, land: &LandCode) -> Result<(Vec<u8>, Vec<u8>)> {
        self.store
            .snapshot(land)?
            .ok_or_else(|| Error::not_found(format!("signed snapshot of Land {land} (the Land has not published one)")))
    }
}

/// A signed statement (snapshot, offer) from the future would lock its Land out: every later,
/// honest one would be refused as older. Allows for clocks a little apart.
pub(super) fn not_from_the_future(what: &'static str, issued_at_ms: i64) -> Result<()> {
    let now = efa_domain::now_ms();
    if issued_at_ms > now.saturating_add(MAX_CLOCK_AHEAD_MS) {
        return Err(Error::invalid(
            what,
            format!(
                "is issued at {issued_at_ms} ms, more than {} minutes after the hub's clock ({now} ms); check the publisher's clock",
                MAX_CLOCK_AHEAD_MS / 60_000
            ),
        ));
    }
    Ok(())
}
