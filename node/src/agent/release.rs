//! What the agent does with a release: apply the subscription's policy, verify, download,
//! check the Kommune's parameters, deploy, and report each outcome with the state change it
//! causes in one write.

use super::{Agent, Handled};
use crate::deploy::{DeployOutcome, DeployRequest};
use crate::error::{NodeError, Result};
use crate::fetch::{fetch_release, FetchStats};
use crate::state::{NodeState, OutboxReport};
use efa_domain::bundle::{BundleLimits, Manifest};
use efa_domain::model::adoption::AdoptionState;
use efa_domain::model::catalog::CatalogEntry;
use efa_domain::model::catalog::Service;
use efa_domain::model::ids::{LandCode, ServiceId};
use efa_domain::model::offer::{verify_offer, Offer};
use efa_domain::model::preflight::{self, NewPreflight};
use efa_domain::model::release::{ReleaseSummary, UpdateDecision};
use efa_domain::model::routing::{Destination, RoutingDeclaration};
use efa_domain::params::{layered, preflight, validate_values, ParamValue, ParameterKind, ParameterSpec, Preflight};
use efa_domain::trust::{check_pinned_land, verify_release};
use std::collections::BTreeMap;

/// A state change that goes into the same write as the report describing it.
type Change = Box<dyn FnOnce(&mut NodeState) + Send>;

fn report(info: &ReleaseSummary, state: AdoptionState, reason: &str) -> OutboxReport {
    OutboxReport {
        service: info.service_id.to_string(),
        version: info.version.to_string(),
        state,
        reason: reason.to_string(),
        ags: None,
    }
}

/// Pins the service's Land on first sight (see [`check_pinned_land`]).
fn pin(service: &ServiceId, land: Option<LandCode>) -> Change {
    let service = service.to_string();
    Box::new(move |s: &mut NodeState| {
        if let Some(land) = land {
            s.services.entry(service).or_default().land.get_or_insert(land.to_string());
        }
    })
}

impl Agent {
    /// Applies the policy to one announced release.
    pub async fn handle_release(&self, info: ReleaseSummary) -> Result<Handled> {
        let _busy = self.busy.lock().await;
        let ignored = |why: &str| Handled::Ignored {
            service: info.service_id.to_string(),
            version: info.version.to_string(),
            why: why.into(),
        };
        let entry = self.hub.service(&info.service_id).await?;
        self.note_deprecation(&entry)?;
        let Some((policy, channel)) = self.config.policy_for(&entry.service) else {
            return Ok(ignored("not subscribed"));
        };
        if channel != info.channel {
            return Ok(ignored("other channel"));
        }
        if let Some(why) = self.out_of_reach(&entry, &info).await? {
            return Ok(ignored(&why));
        }
        // A rollout in rings: outside the open rings (or in a halted rollout) no policy
        // deploys; the hub tells this Kommune again when its ring opens.
        let (id, version) = (info.service_id.to_string(), info.version.to_string());
        if let Some(p) = info.rollout.as_ref().filter(|p| !p.admitted) {
            let runs_it = self.running_version(&info.service_id)?.as_ref() == Some(&info.version);
            if runs_it {
                // Already running (its ring was open): it keeps running, as after a yank,
                // and the operator is told.
                tracing::warn!(service = %info.service_id, version = %info.version, note = %p.note,
                    "the rollout of the running release stopped; it keeps running until a newer release or a local rollback");
            } else {
                tracing::info!(service = %info.service_id, version = %info.version, ring = p.ring + 1, note = %p.note, "release not yet for this Kommune");
            }
            let note = if runs_it { format!("running; {}", p.note) } else { p.note.clone() };
            let (i, v) = (id.clone(), version.clone());
            self.update(move |s| s.services.entry(i).or_default().scheduled.insert(v, note))?;
            return Ok(ignored(&p.note));
        }
        let st = self.state.load()?;
        let known = st.services.get(&id);
        if known.is_some_and(|s| s.scheduled.contains_key(&version)) {
            // Its ring is open now: no longer held back.
            let v = version.clone();
            self.update(move |s| s.services.entry(id).or_default().scheduled.remove(&v))?;
        }
        if known.is_some_and(|s| s.rejected.contains_key(&version)) {
            return Ok(ignored("rejected by this Kommune"));
        }
        let running = self.running_version(&info.service_id)?;
        let mut decision = policy.decide(running.as_ref(), &info.version, info.yank.is_some());
        if matches!(decision, UpdateDecision::Deploy) && known.is_some_and(|s| s.hold.is_some()) {
            // The operator holds the running version: newer releases wait for approval.
            decision = UpdateDecision::AwaitApproval;
        }
        match decision {
            UpdateDecision::Ignore(why) => Ok(ignored(why)),
            UpdateDecision::Deploy => self.install(&entry, &info).await,
            UpdateDecision::AwaitApproval => {
                if known.is_some_and(|s| s.pending.contains_key(&version)) {
                    return Ok(ignored("already waiting for approval"));
                }
                self.outbox().send(report(&info, AdoptionState::Evaluating, ""), |_| ()).await?;
                let (manifest, pinned) = match self.download(&info).await {
                    Ok((manifest, _, pinned)) => (manifest, pinned),
                    Err(e) => return self.fail(&info, e, Box::new(|_| ())).await,
                };
                // Checked now, before approval, so the Kommune and its Land see what is missing.
                let (_, check, _) = self.preflight(&entry, &manifest).await?;
                let blocked =
                    (!check.is_ready()).then(|| format!("pre-flight of {version}: {}", check.problems.join("; ")));
                let (v, notes, pin) = (version.clone(), info.release_notes.clone(), pin(&info.service_id, pinned));
                let id = info.service_id.to_string();
                self.update(move |s| {
                    pin(s);
                    let e = s.services.entry(id).or_default();
                    e.pending.insert(v, notes);
                    if blocked.is_some() {
                        e.last_error = blocked;
                    }
                })?;
                tracing::info!(service = %info.service_id, version = %info.version, "release verified, waiting for approval");
                Ok(Handled::AwaitingApproval { service: info.service_id.to_string(), version })
            }
        }
    }

    /// Why a release that only a Themenfeld subscription brings is not for this Kommune: the
    /// service was built by another Land and the Kommune's own Land does not offer this
    /// release to it (no offer, withdrawn, not for this Kommune, or an offer that does not
    /// verify against the key pinned for the Land). `None`: it is for this Kommune.
    async fn out_of_reach(&self, entry: &CatalogEntry, info: &ReleaseSummary) -> Result<Option<String>> {
        let own = self.config.ags.land();
        if entry.service.land == own || self.config.subscribes_to(&entry.service.id) {
            return Ok(None);
        }
        let offer = match self.land_offer(&entry.service.id).await {
            Ok(Some(offer)) => offer,
            Ok(None) => {
                return Ok(Some(format!("built by Land {} and not offered by Land {own}", entry.service.land)));
            }
            Err(e) if e.is_transient() => return Err(e),
            Err(e) => {
                tracing::error!(service = %entry.service.id, error = %e, "offer refused");
                return Ok(Some(e.to_string()));
            }
        };
        Ok(offer.covers(&self.config.ags, &info.channel, &info.version).err().map(|e| e.to_string()))
    }

    /// The Kommune's own Land's offer of a service, verified against the keys the node pins
    /// for that Land; `None` if the Land has not offered it.
    async fn land_offer(&self, service: &ServiceId) -> Result<Option<Offer>> {
        let own = self.config.ags.land();
        let Some(signed) = self.hub.offer(service, &own).await? else { return Ok(None) };
        verify_offer(&signed, service, &own, &self.keys_for_release(&own, Some(u64::MAX)))
            .map(Some)
            .map_err(|e| NodeError::Offer { service: service.to_string(), reason: e.to_string() })
    }

    /// The values a release of `service` with `schema` is deployed with: the Kommune's for
    /// this service, over its values for all services, over what its Land sets in a valid
    /// offer (none for a service its own Land built, or without an offer); see [`layered`].
    async fn parameters(&self, service: &Service, schema: &[ParameterSpec]) -> Result<BTreeMap<String, ParamValue>> {
        let own = self.config.service(&service.id).parameters;
        let land = if service.land == self.config.ags.land() {
            BTreeMap::new()
        } else {
            match self.land_offer(&service.id).await {
                Ok(Some(offer)) if offer.is_active() => offer.land_parameters,
                Ok(_) => BTreeMap::new(),
                Err(e) if e.is_transient() => return Err(e),
                Err(e) => {
                    tracing::warn!(service = %service.id, error = %e, "the Land's parameters are not used");
                    BTreeMap::new()
                }
            }
        };
        Ok(layered(schema, &land, &self.config.parameters, &own))
    }

    pub(super) fn running_version(&self, service: &ServiceId) -> Result<Option<semver::Version>> {
        Ok(self.deployer.current_version(service)?.and_then(|v| v.parse().ok()))
    }

    /// A yank stops new deployments of a release. A node that runs it keeps serving (a
    /// downgrade is never automatic) and tells the hub so, which operators see in reports.
    pub(super) async fn handle_yank(&self, info: ReleaseSummary) -> Result<()> {
        let running = self.deployer.current_version(&info.service_id)?;
        let (id, version) = (info.service_id.to_string(), info.version.to_string());
        let reason = info.yank.as_ref().map(|y| y.reason.clone()).unwrap_or_default();
        let recall = info.yank.as_ref().is_some_and(|y| y.recall);
        let (v, r) = (version.clone(), reason.clone());
        let change = move |s: &mut NodeState| {
            let e = s.services.entry(id).or_default();
            e.pending.remove(&v);
            if recall {
                e.recalled.insert(v.clone(), r.clone());
            }
            e.yanked.insert(v, r);
        };
        if running.as_deref() == Some(version.as_str()) {
            let note = if recall {
                // Stopping a public service is the Kommune's decision: the node says so,
                // loudly, and the operator confirms with `efa-node retire`.
                tracing::error!(service = %info.service_id, %version, %reason,
                    "the Land recalled the running version: stop serving it (efa-node retire); it keeps running until then");
                format!(
                    "still serving recalled release (Land's reason: {reason}); the operator is asked to stop it (efa-node retire {})",
                    info.service_id
                )
            } else {
                tracing::warn!(service = %info.service_id, %version, %reason,
                    "the running version was yanked by its Land; it keeps running until a newer release is deployed");
                format!(
                    "still running yanked release (Land's reason: {reason}); waiting for a fixed release or a local rollback"
                )
            };
            self.outbox().send(report(&info, AdoptionState::Deployed, &note), change).await?;
        } else {
            self.update(change)?;
        }
        Ok(())
    }

    /// Fetches and verifies a release into the local cache. Returns the Land to pin for
    /// the service when none was pinned yet.
    async fn download(&self, info: &ReleaseSummary) -> Result<(Manifest, FetchStats, Option<LandCode>)> {
        let (manifest, to_pin) = self.verified(info).await?;
        let stats = self.fetch_content(info, &manifest).await?;
        Ok((manifest, stats, to_pin))
    }

    /// Fetches a release's content into the local cache, checking every digest.
    async fn fetch_content(&self, info: &ReleaseSummary, manifest: &Manifest) -> Result<FetchStats> {
        let service = info.service_id.to_string();
        let progress = self.progress.clone();
        let on_progress = move |done: u64, total: u64| {
            if let Some(p) = &progress {
                p(&service, done, total)
            }
        };
        let stats = fetch_release(&self.hub, &self.cache, manifest, &on_progress).await?;
        tracing::info!(service = %info.service_id, version = %info.version, files = stats.files, reused = stats.files_reused, bytes = stats.bytes_downloaded, "release fetched and verified");
        Ok(stats)
    }

    /// The release's manifest, its signature verified against the pinned Land keys. Returns
    /// the Land to pin for the service when none was pinned yet.
    async fn verified(&self, info: &ReleaseSummary) -> Result<(Manifest, Option<LandCode>)> {
        let signed = self.hub.release(&info.service_id, &info.version).await?;
        let refuse = |reason: String| NodeError::Verification {
            service: info.service_id.to_string(),
            version: info.version.to_string(),
            reason,
        };
        // The hub shows everyone the same release: the one its log holds. Its place in the
        // log decides which of the Land's keys count (a key revoked before it does not).
        let leaf = self.check_release_logged(&signed).await?;
        let manifest = verify_release(&signed, &BundleLimits::default(), |land| self.keys_for_release(land, leaf))
            .map_err(|e| refuse(e.to_string()))?;
        let pinned: Option<LandCode> = self
            .state
            .load()?
            .services
            .get(info.service_id.as_str())
            .and_then(|s| s.land.as_deref())
            .and_then(|l| l.parse().ok());
        check_pinned_land(pinned.as_ref(), &manifest).map_err(|e| refuse(e.to_string()))?;
        let to_pin = if pinned.is_none() { Some(manifest.land.clone()) } else { None };
        Ok((manifest, to_pin))
    }

    /// The pre-flight check: the Kommune's parameters against the release's signed schema
    /// (the hub's registered one for format-1 manifests, which carry none), with the
    /// changes from the running version. Reported to the hub; a hub that is away misses this
    /// one and gets the next (the check runs again whenever the release is handled).
    async fn preflight(
        &self,
        entry: &CatalogEntry,
        manifest: &Manifest,
    ) -> Result<(Vec<ParameterSpec>, Preflight, BTreeMap<String, ParamValue>)> {
        let schema = manifest.parameters.clone().unwrap_or_else(|| entry.service.parameters.clone());
        let running = self.running_schema(&manifest.service_id).await;
        let values = self.parameters(&entry.service, &schema).await?;
        let result = preflight(&schema, running.as_deref(), &values);
        let report = NewPreflight {
            service_id: manifest.service_id.clone(),
            version: manifest.semver().unwrap_or_else(|_| semver::Version::new(0, 0, 0)),
            problems: result.problems.iter().take(preflight::MAX_LINES).map(|p| bounded_line(p)).collect(),
            changes: result.changes.iter().take(preflight::MAX_LINES).map(|c| bounded_line(&c.to_string())).collect(),
        };
        match self.hub.preflight(&report).await {
            Ok(()) => {
                tracing::info!(service = %report.service_id, version = %report.version, ready = result.is_ready(), "pre-flight reported")
            }
            Err(e) => {
                tracing::warn!(service = %report.service_id, version = %report.version, error = %e, "pre-flight not reported")
            }
        }
        Ok((schema, result, values))
    }

    /// Declares to the hub the FIT-Connect destinations of the version this Kommune runs
    /// (its parameters of that kind in the release's signed schema), if they changed since
    /// the last declaration. A hub that is away gets them with a later sync.
    pub(super) async fn declare_routing(&self, service: &ServiceId) -> Result<()> {
        let Some(running) = self.running_version(service)? else { return Ok(()) };
        let Some(schema) = self.running_schema(service).await else { return Ok(()) };
        let local = self.config.service(service);
        let destinations: Vec<Destination> = schema
            .iter()
            .filter(|s| s.kind == ParameterKind::FitConnectDestination)
            .filter_map(|s| match local.parameters.get(&s.name) {
                Some(ParamValue::Text(t)) => {
                    Some(Destination { parameter: s.name.clone(), destination: t.trim().to_ascii_lowercase() })
                }
                _ => None,
            })
            .collect();
        let said = format!("{running} {destinations:?}");
        let known = self.state.load()?.services.get(service.as_str()).and_then(|s| s.routing_declared.clone());
        if known.as_deref() == Some(said.as_str()) || (known.is_none() && destinations.is_empty()) {
            return Ok(());
        }
        let declaration = RoutingDeclaration { service_id: service.clone(), version: running, destinations };
        match self.hub.declare_routing(&declaration).await {
            Ok(()) => {
                let key = service.to_string();
                self.update(move |s| s.services.entry(key).or_default().routing_declared = Some(said))?;
                tracing::info!(%service, destinations = declaration.destinations.len(), "routing declared");
            }
            Err(e) if e.is_transient() => {}
            Err(e) => tracing::warn!(%service, error = %e, "the hub refused the routing declaration"),
        }
        Ok(())
    }

    /// The signed parameter schema of the version this Kommune runs, if it has one.
    async fn running_schema(&self, service: &ServiceId) -> Option<Vec<ParameterSpec>> {
        let running = self.running_version(service).ok()??;
        let signed = self.hub.release(service, &running).await.ok()?;
        verify_release(&signed, &BundleLimits::default(), |land| self.keys_for_release(land, Some(u64::MAX)))
            .ok()?
            .parameters
    }

    /// Reports a failure that trying again will not fix; transient ones propagate.
    async fn fail(&self, info: &ReleaseSummary, e: NodeError, change: Change) -> Result<Handled> {
        if e.is_transient() {
            return Err(e);
        }
        let reason = e.to_string();
        tracing::error!(service = %info.service_id, version = %info.version, %reason, "release not deployed");
        self.count_failure(info.service_id.as_str());
        let (id, why) = (info.service_id.to_string(), reason.clone());
        self.outbox()
            .send(report(info, AdoptionState::Failed, &reason), move |s| {
                change(s);
                s.services.entry(id).or_default().last_error = Some(why);
            })
            .await?;
        Ok(Handled::Failed { service: info.service_id.to_string(), version: info.version.to_string(), reason })
    }

    pub(super) async fn install(&self, entry: &CatalogEntry, info: &ReleaseSummary) -> Result<Handled> {
        if let Err(e) = self.log_alarm_standing() {
            return self.fail(info, e, Box::new(|_| ())).await;
        }
        let version = info.version.to_string();
        // A release that waited for approval was reported as evaluating when it arrived.
        let waited =
            self.state.load()?.services.get(info.service_id.as_str()).is_some_and(|s| s.pending.contains_key(&version));
        if !waited {
            self.outbox().send(report(info, AdoptionState::Evaluating, ""), |_| ()).await?;
        }
        let (manifest, pinned) = match self.verified(info).await {
            Ok(x) => x,
            Err(e) => return self.fail(info, e, Box::new(|_| ())).await,
        };
        let id = info.service_id.clone();
        let finish = {
            let (id, version) = (id.to_string(), version.clone());
            let pin = pin(&info.service_id, pinned);
            move |s: &mut NodeState, error: Option<String>| {
                pin(s);
                let e = s.services.entry(id).or_default();
                e.pending.remove(&version);
                e.last_error = error;
            }
        };
        let local = self.config.service(&id);
        let (schema, check, values) = self.preflight(entry, &manifest).await?;
        let params = match validate_values(&schema, &values) {
            Ok(p) if check.is_ready() => p,
            _ => {
                let problems = check.problems.join("; ");
                let e =
                    NodeError::Parameters { config: self.config.describe_source(), service: id.to_string(), problems };
                return self.fail(info, e, Box::new(move |s| finish(s, None))).await;
            }
        };
        if let Err(e) = self.fetch_content(info, &manifest).await {
            return self.fail(info, e, Box::new(|_| ())).await;
        }
        let (deployer, cache) = (self.deployer.clone(), self.cache.clone());
        let content_digest = info.content_digest;
        let service_id = id.clone();
        let outcome = tokio::task::spawn_blocking(move || {
            let blob_path = |d: &efa_domain::bundle::Digest| cache.path(d);
            deployer.deploy(&DeployRequest {
                service: &service_id,
                manifest: &manifest,
                content_digest: &content_digest,
                blob_path: &blob_path,
                params: &params,
                health_command: local.health_command.as_deref(),
            })
        })
        .await
        .map_err(|e| NodeError::Task(format!("deploy task failed: {e}")))?;
        match outcome {
            Ok(DeployOutcome::Deployed { version, previous }) => {
                tracing::info!(service = %id, %version, ?previous, "deployed");
                self.count_deploy(id.as_str());
                self.cache.clear_partials();
                self.outbox().send(report(info, AdoptionState::Deployed, ""), move |s| finish(s, None)).await?;
                self.declare_routing(&id).await?;
                Ok(Handled::Deployed { service: id.to_string(), version })
            }
            Ok(DeployOutcome::RolledBack { failed_version, restored, reason }) => {
                tracing::warn!(service = %id, %failed_version, ?restored, %reason, "health check failed, rolled back");
                self.count_rollback(id.as_str());
                let why = format!("health check failed: {reason}");
                let w = why.clone();
                self.outbox().send(report(info, AdoptionState::RolledBack, &why), move |s| finish(s, Some(w))).await?;
                Ok(Handled::RolledBack { service: id.to_string(), version: failed_version, reason: why })
            }
            Err(e) => self.fail(info, e.into(), Box::new(move |s| finish(s, None))).await,
        }
    }
}

/// One line of at most [`preflight::MAX_LINE_CHARS`] characters, for a pre-flight report.
fn bounded_line(s: &str) -> String {
    let one: String = s.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    if one.chars().count() <= preflight::MAX_LINE_CHARS {
        one
    } else {
        one.chars().take(preflight::MAX_LINE_CHARS - 1).chain(std::iter::once('…')).collect()
    }
}
