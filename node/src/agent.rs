//! The agent loop of a Kommune node.
//!
//! On start it recovers half-done deploys, registers its subscriptions with the hub and
//! reconciles: for every subscribed service it looks at the newest release on its
//! channel. Then it follows the hub's event stream from its persisted cursor. Each
//! release goes through the subscription's policy: deploy now, wait for approval, or
//! ignore. Every adoption state change is reported to the hub through a persistent
//! outbox, so nothing is lost while the hub is away.

use crate::config::NodeConfig;
use crate::deploy::{DeployOutcome, DeployRequest, Deployer};
use crate::error::{NodeError, Result};
use crate::fetch::{fetch_release_with_progress, verify_release, BlobCache, FetchStats};
use crate::state::{NodeState, OutboxReport, StateFile};
use efa_proto::v1 as pb;
use efa_proto::v1::adoption_service_client::AdoptionServiceClient;
use efa_proto::v1::catalog_service_client::CatalogServiceClient;
use efa_proto::v1::release_service_client::ReleaseServiceClient;
use efa_proto::v1::subscription_service_client::SubscriptionServiceClient;
use efa_registry::model::adoption::AdoptionState;
use efa_registry::model::ids::{parse_version, ServiceId};
use efa_registry::model::release::{UpdateDecision, UpdatePolicy};
use efa_registry::model::subscription::SubscriptionTarget;
use efa_registry::params::{validate_values, ParameterKind, ParameterSpec};
use efa_registry::snapshot::Snapshot;
use std::sync::Arc;
use std::time::Duration;
use tokio_stream::StreamExt;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

/// What happened to one release the agent looked at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Handled {
    Deployed { service: String, version: String },
    RolledBack { service: String, version: String, reason: String },
    Failed { service: String, version: String, reason: String },
    AwaitingApproval { service: String, version: String },
    Ignored { service: String, version: String, why: String },
}

pub struct Agent {
    config: NodeConfig,
    channel: Channel,
    deployer: Arc<Deployer>,
    cache: BlobCache,
    state: StateFile,
    /// Serializes release handling, so two deploys of a service never overlap.
    busy: tokio::sync::Mutex<()>,
    counters: crate::metrics::NodeCounters,
    progress: Option<Progress>,
    /// Set when an event stream reached `CaughtUp`; resets the reconnect backoff.
    caught_up: std::sync::atomic::AtomicBool,
}

/// Called with (service, bytes done, bytes to fetch) while a release downloads.
pub type Progress = Arc<dyn Fn(&str, u64, u64) + Send + Sync>;

fn kind_from_proto(k: i32) -> ParameterKind {
    match pb::ParameterKind::try_from(k).unwrap_or(pb::ParameterKind::Text) {
        pb::ParameterKind::Url => ParameterKind::Url,
        pb::ParameterKind::Email => ParameterKind::Email,
        pb::ParameterKind::AmountCents => ParameterKind::AmountCents,
        pb::ParameterKind::Postcodes => ParameterKind::Postcodes,
        pb::ParameterKind::Boolean => ParameterKind::Boolean,
        pb::ParameterKind::Integer => ParameterKind::Integer,
        pb::ParameterKind::Text | pb::ParameterKind::Unspecified => ParameterKind::Text,
    }
}

fn state_to_proto(s: AdoptionState) -> pb::AdoptionState {
    match s {
        AdoptionState::Evaluating => pb::AdoptionState::Evaluating,
        AdoptionState::Deployed => pb::AdoptionState::Deployed,
        AdoptionState::Failed => pb::AdoptionState::Failed,
        AdoptionState::RolledBack => pb::AdoptionState::RolledBack,
        AdoptionState::Rejected => pb::AdoptionState::Rejected,
        AdoptionState::Retired => pb::AdoptionState::Retired,
    }
}

impl Agent {
    /// Prepares the local directories and recovers from an earlier crash. Does not need the
    /// hub: the connection is made lazily and retried.
    pub fn new(config: NodeConfig) -> Result<Self> {
        for dir in [&config.state_dir, &config.deploy_dir] {
            std::fs::create_dir_all(dir).map_err(|e| NodeError::io(dir, e))?;
        }
        let channel = efa_proto::tls::connect_lazy(&config.hub, config.tls_files().as_ref())?;
        let deployer = Deployer::new(&config.deploy_dir, config.keep_versions)
            .with_health_timeout(Duration::from_secs(config.health_timeout_secs));
        let report = deployer.recover()?;
        if !report.removed.is_empty() || !report.restored.is_empty() {
            tracing::warn!(
                removed = report.removed.len(),
                restored = report.restored.len(),
                "recovered from an interrupted deploy"
            );
        }
        Ok(Agent {
            cache: BlobCache::new(&config.state_dir)?,
            state: StateFile::new(&config.state_dir),
            deployer: Arc::new(deployer),
            channel,
            config,
            busy: tokio::sync::Mutex::new(()),
            counters: Default::default(),
            progress: None,
            caught_up: Default::default(),
        })
    }

    pub fn config(&self) -> &NodeConfig {
        &self.config
    }

    /// Reports download progress (the CLI draws a progress bar with it).
    pub fn with_progress(mut self, progress: Progress) -> Self {
        self.progress = Some(progress);
        self
    }

    pub fn counters(&self) -> &crate::metrics::NodeCounters {
        &self.counters
    }

    fn count(
        &self,
        family: &prometheus_client::metrics::family::Family<
            crate::metrics::ServiceLabels,
            prometheus_client::metrics::counter::Counter,
        >,
        service: &str,
    ) {
        family.get_or_create(&crate::metrics::ServiceLabels { service: service.to_string() }).inc();
    }

    pub fn deployer(&self) -> &Deployer {
        &self.deployer
    }

    pub fn state(&self) -> Result<NodeState> {
        self.state.load()
    }

    /// Registers every subscription of the config with the hub (idempotent).
    pub async fn register_subscriptions(&self) -> Result<()> {
        let mut client = SubscriptionServiceClient::new(self.channel.clone());
        for s in &self.config.subscriptions {
            let target = s.target().map_err(NodeError::Usage)?;
            let target = pb::SubscriptionTarget {
                target: Some(match target {
                    SubscriptionTarget::Service(id) => pb::subscription_target::Target::ServiceId(id.to_string()),
                    SubscriptionTarget::Themenfeld(t) => pb::subscription_target::Target::Themenfeld(t),
                }),
            };
            let policy = match s.policy {
                UpdatePolicy::Auto => pb::UpdatePolicy::Auto,
                UpdatePolicy::PatchOnly => pb::UpdatePolicy::PatchOnly,
                UpdatePolicy::Manual => pb::UpdatePolicy::Manual,
            };
            client
                .subscribe(pb::SubscribeRequest {
                    target: Some(target),
                    channel: s.channel.to_string(),
                    policy: policy as i32,
                })
                .await?;
        }
        Ok(())
    }

    /// Looks at the newest release of every subscribed service, as if it had just been
    /// announced. Covers releases published before the node subscribed.
    pub async fn reconcile(&self) -> Result<Vec<Handled>> {
        let mut releases = ReleaseServiceClient::new(self.channel.clone());
        let mut out = Vec::new();
        let services = self.subscribed_services().await?;
        for service in &services {
            let Some((_, channel)) = self.policy_for(service) else { continue };
            let list = releases
                .list_releases(pb::ListReleasesRequest { service_id: service.id.clone(), channel })
                .await?
                .into_inner()
                .releases;
            if let Some(newest) = list.into_iter().find(|r| !r.yanked) {
                out.push(self.handle_release(newest).await?);
            }
        }
        self.check_freshness_of(&services).await?;
        Ok(out)
    }

    /// The services the node's subscriptions cover, as the hub's catalog describes them.
    async fn subscribed_services(&self) -> Result<Vec<pb::ServiceInfo>> {
        let mut catalog = CatalogServiceClient::new(self.channel.clone());
        let mut services: Vec<pb::ServiceInfo> = Vec::new();
        for s in &self.config.subscriptions {
            match s.target().map_err(NodeError::Usage)? {
                SubscriptionTarget::Service(id) => {
                    services.push(catalog.get_service(pb::GetServiceRequest { id: id.to_string() }).await?.into_inner())
                }
                SubscriptionTarget::Themenfeld(t) => services.extend(
                    catalog
                        .list_services(pb::ListServicesRequest { land_code: String::new(), themenfeld: t })
                        .await?
                        .into_inner()
                        .services,
                ),
            }
        }
        services.sort_by(|a, b| a.id.cmp(&b.id));
        services.dedup_by(|a, b| a.id == b.id);
        Ok(services)
    }

    /// Freeze protection: compares what the hub shows with each Land's signed snapshot.
    /// Records (and returns) a warning when a snapshot is missing, unsigned, replayed,
    /// expired, or names a version the hub does not list. Warnings never block deploys of
    /// what the node can verify; they tell the Kommune its view may be stale.
    pub async fn check_freshness(&self) -> Result<Vec<String>> {
        let services = self.subscribed_services().await?;
        self.check_freshness_of(&services).await
    }

    async fn check_freshness_of(&self, services: &[pb::ServiceInfo]) -> Result<Vec<String>> {
        let lands: std::collections::BTreeSet<String> = services.iter().map(|s| s.land_code.clone()).collect();
        let mut warnings = Vec::new();
        let mut seen = self.state.load()?.snapshots;
        let now = efa_registry::now_ms();
        for land in lands {
            let land_code: efa_registry::model::ids::LandCode = land.parse()?;
            let keys = self.config.trusted_keys(&land_code);
            let signed = match ReleaseServiceClient::new(self.channel.clone())
                .get_snapshot(pb::GetSnapshotRequest { land_code: land.clone() })
                .await
            {
                Ok(r) => r.into_inner(),
                Err(s) if s.code() == tonic::Code::NotFound => {
                    warnings.push(format!(
                        "Land {land} has no signed snapshot on the hub; freeze protection is off for its services"
                    ));
                    continue;
                }
                Err(s) => return Err(s.into()),
            };
            if !efa_registry::signing::verify_any(&keys, &signed.snapshot, &signed.signature) {
                warnings.push(format!("the hub's snapshot of Land {land} is not signed by a trusted key of that Land"));
                continue;
            }
            let snapshot = match Snapshot::from_bytes(&signed.snapshot) {
                Ok(s) if s.land == land_code => s,
                Ok(s) => {
                    warnings.push(format!("the hub returned Land {}'s snapshot when asked for Land {land}", s.land));
                    continue;
                }
                Err(e) => {
                    warnings.push(format!("the snapshot of Land {land} is invalid: {e}"));
                    continue;
                }
            };
            let last = seen.get(&land).copied().unwrap_or(0);
            if snapshot.issued_at_ms < last {
                warnings.push(format!(
                    "the hub replays an older snapshot of Land {land} (issued {} ms before the newest seen); the hub may be frozen",
                    last - snapshot.issued_at_ms
                ));
            }
            if snapshot.is_expired(now) {
                warnings.push(format!(
                    "the signed snapshot of Land {land} expired {} s ago: the hub may be frozen, or the Land has not refreshed it",
                    (now - snapshot.expires_at_ms) / 1000
                ));
            }
            for s in services.iter().filter(|s| s.land_code == land) {
                let Some((_, channel)) = self.policy_for(s) else { continue };
                let Ok(id) = s.id.parse() else { continue };
                let channel: efa_registry::model::ids::Channel = channel.parse()?;
                let Some(version) = snapshot.latest.get(&id).and_then(|c| c.get(&channel)) else { continue };
                if !s.versions.contains(version) {
                    warnings.push(format!(
                        "the hub hides {} {version}, which Land {land} signed as its newest release on {channel}",
                        s.id
                    ));
                }
            }
            seen.insert(land, last.max(snapshot.issued_at_ms));
        }
        for w in &warnings {
            tracing::error!(warning = %w, "freeze protection");
        }
        let out = warnings.clone();
        self.state.update(move |s| {
            s.snapshots = seen;
            s.warnings = warnings;
        })?;
        Ok(out)
    }

    /// Follows the event stream until it has caught up with the hub, then returns.
    pub async fn sync_once(&self) -> Result<Vec<Handled>> {
        self.follow(CancellationToken::new(), true).await
    }

    /// Runs until `shutdown`: registers, reconciles, follows events, and reconnects with
    /// backoff whenever the hub goes away.
    pub async fn run(&self, shutdown: CancellationToken) -> Result<()> {
        let mut backoff = Duration::from_millis(200);
        let mut registered = false;
        while !shutdown.is_cancelled() {
            let attempt = async {
                if !registered {
                    self.register_subscriptions().await?;
                    self.reconcile().await?;
                    registered = true;
                }
                self.flush_outbox().await?;
                self.follow(shutdown.clone(), false).await
            };
            let result = attempt.await;
            // A stream that caught up was a healthy connection: its end (a hub restart) is
            // no reason to wait longer each time.
            if self.caught_up.swap(false, std::sync::atomic::Ordering::SeqCst) {
                backoff = Duration::from_millis(200);
            }
            match result {
                Ok(_) => backoff = Duration::from_millis(200),
                Err(e) if e.is_transient() => {
                    tracing::warn!(error = %e, retry_in = ?backoff, "hub unreachable; will resume from the cursor");
                }
                Err(e) => {
                    tracing::error!(error = %e, retry_in = ?backoff, "sync failed");
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(30));
        }
        Ok(())
    }

    async fn follow(&self, shutdown: CancellationToken, until_caught_up: bool) -> Result<Vec<Handled>> {
        let cursor = self.state.load()?.cursor;
        let mut handled = Vec::new();
        let opened = SubscriptionServiceClient::new(self.channel.clone())
            .watch_events(pb::WatchEventsRequest { after_seq: cursor })
            .await;
        let mut stream = match opened {
            Ok(s) => s.into_inner(),
            Err(status) if status.code() == tonic::Code::FailedPrecondition => {
                // The hub no longer has the events after our cursor: reconcile from the
                // catalog (the snapshot path), then resume from the head it named.
                let head = status
                    .metadata()
                    .get(efa_proto::RESYNC_HEAD_METADATA)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<u64>().ok())
                    .ok_or(NodeError::Hub(status))?;
                tracing::warn!(cursor, head, "behind the hub's event retention; resyncing from the catalog");
                handled.extend(self.reconcile().await?);
                self.state.update(|s| s.cursor = s.cursor.max(head))?;
                SubscriptionServiceClient::new(self.channel.clone())
                    .watch_events(pb::WatchEventsRequest { after_seq: head })
                    .await?
                    .into_inner()
            }
            Err(status) => return Err(status.into()),
        };
        loop {
            let next = tokio::select! {
                _ = shutdown.cancelled() => return Ok(handled),
                n = stream.next() => n,
            };
            let Some(event) = next else {
                return Err(NodeError::Hub(tonic::Status::unavailable("event stream ended")));
            };
            let event = event?;
            let caught_up = matches!(event.kind, Some(pb::event::Kind::CaughtUp(_)));
            match event.kind {
                Some(pb::event::Kind::ReleasePublished(info)) => handled.push(self.handle_release(info).await?),
                Some(pb::event::Kind::ReleaseYanked(info)) => self.handle_yank(info).await?,
                Some(pb::event::Kind::CaughtUp(_)) | None => {}
            }
            let seq = event.seq;
            self.state.update(|s| {
                s.cursor = s.cursor.max(seq);
                s.last_sync_ms = efa_registry::now_ms();
            })?;
            if caught_up {
                self.caught_up.store(true, std::sync::atomic::Ordering::SeqCst);
                self.check_freshness().await?;
                if until_caught_up {
                    return Ok(handled);
                }
            }
        }
    }

    /// The policy and channel of the subscription covering `service`; a subscription to
    /// the service itself wins over one to its Themenfeld.
    fn policy_for(&self, service: &pb::ServiceInfo) -> Option<(UpdatePolicy, String)> {
        let by_service =
            self.config.subscriptions.iter().find(|s| s.service.as_ref().is_some_and(|id| id.as_str() == service.id));
        let by_theme =
            || self.config.subscriptions.iter().find(|s| s.themenfeld.as_deref() == Some(service.themenfeld.as_str()));
        by_service.or_else(by_theme).map(|s| (s.policy, s.channel.to_string()))
    }

    /// Applies the policy to one announced release.
    pub async fn handle_release(&self, info: pb::ReleaseInfo) -> Result<Handled> {
        let _busy = self.busy.lock().await;
        let service_id: ServiceId = info.service_id.parse()?;
        let version = parse_version(&info.version)?;
        let ignored = |why: &str| Handled::Ignored {
            service: info.service_id.clone(),
            version: info.version.clone(),
            why: why.into(),
        };
        let service = CatalogServiceClient::new(self.channel.clone())
            .get_service(pb::GetServiceRequest { id: info.service_id.clone() })
            .await?
            .into_inner();
        let Some((policy, channel)) = self.policy_for(&service) else {
            return Ok(ignored("not subscribed"));
        };
        if channel != info.channel {
            return Ok(ignored("other channel"));
        }
        let st = self.state.load()?;
        if st.services.get(service_id.as_str()).is_some_and(|s| s.rejected.contains_key(&info.version)) {
            return Ok(ignored("rejected by this Kommune"));
        }
        let running = self.running_version(&service_id)?;
        match policy.decide(running.as_ref(), &version, info.yanked) {
            UpdateDecision::Ignore(why) => Ok(ignored(why)),
            UpdateDecision::Deploy => self.install(&service, &info).await,
            UpdateDecision::AwaitApproval => {
                if st.services.get(service_id.as_str()).is_some_and(|s| s.pending.contains_key(&info.version)) {
                    return Ok(ignored("already waiting for approval"));
                }
                self.report(&info.service_id, &info.version, AdoptionState::Evaluating, "").await?;
                if let Err(e) = self.download(&info).await {
                    return self.fail(&info, e).await;
                }
                let notes = info.release_notes.clone();
                self.state.update(|s| {
                    s.services.entry(info.service_id.clone()).or_default().pending.insert(info.version.clone(), notes);
                })?;
                tracing::info!(service = %info.service_id, version = %info.version, "release verified, waiting for approval");
                Ok(Handled::AwaitingApproval { service: info.service_id.clone(), version: info.version.clone() })
            }
        }
    }

    fn running_version(&self, service: &ServiceId) -> Result<Option<semver::Version>> {
        Ok(self.deployer.current_version(service)?.and_then(|v| v.parse().ok()))
    }

    /// A yank stops new deployments of a release. A node that runs it keeps serving (a
    /// downgrade is never automatic) and tells the hub so, which operators see in reports.
    async fn handle_yank(&self, info: pb::ReleaseInfo) -> Result<()> {
        let running = self.deployer.current_version(&info.service_id.parse()?)?;
        self.state.update(|s| {
            let e = s.services.entry(info.service_id.clone()).or_default();
            e.pending.remove(&info.version);
            e.yanked.insert(info.version.clone(), info.yank_reason.clone());
        })?;
        if running.as_deref() == Some(info.version.as_str()) {
            tracing::warn!(service = %info.service_id, version = %info.version, reason = %info.yank_reason,
                "the running version was yanked by its Land; it keeps running until a newer release is deployed");
            let note = format!(
                "still running yanked release (Land's reason: {}); waiting for a fixed release or a local rollback",
                info.yank_reason
            );
            self.report(&info.service_id, &info.version, AdoptionState::Deployed, &note).await?;
        }
        Ok(())
    }

    /// Fetches and verifies a release into the local cache.
    async fn download(&self, info: &pb::ReleaseInfo) -> Result<(efa_registry::bundle::Manifest, FetchStats)> {
        let detail = ReleaseServiceClient::new(self.channel.clone())
            .get_release(pb::GetReleaseRequest { service_id: info.service_id.clone(), version: info.version.clone() })
            .await?
            .into_inner();
        let manifest = verify_release(&detail, |land| self.config.trusted_keys(land))?;
        // The Land that publishes a service is pinned on first sight: a release of it signed
        // by another Land (whose key the node may trust for that Land's own services) is refused.
        let pinned = self.state.load()?.services.get(&info.service_id).and_then(|s| s.land.clone());
        match pinned {
            Some(land) if land != manifest.land.as_str() => {
                return Err(NodeError::Verification {
                    service: info.service_id.clone(),
                    version: info.version.clone(),
                    reason: format!("signed by Land {}, but this service is published by Land {land}", manifest.land),
                })
            }
            Some(_) => {}
            None => self.state.update(|s| {
                s.services.entry(info.service_id.clone()).or_default().land = Some(manifest.land.to_string())
            })?,
        }
        let service = info.service_id.clone();
        let progress = self.progress.clone();
        let report = move |done: u64, total: u64| {
            if let Some(p) = &progress {
                p(&service, done, total)
            }
        };
        let stats = fetch_release_with_progress(self.channel.clone(), &self.cache, &manifest, &report).await?;
        tracing::info!(service = %info.service_id, version = %info.version, files = stats.files, reused = stats.files_reused, bytes = stats.bytes_downloaded, "release fetched and verified");
        Ok((manifest, stats))
    }

    /// Reports a failure that trying again will not fix; transient ones propagate.
    async fn fail(&self, info: &pb::ReleaseInfo, e: NodeError) -> Result<Handled> {
        if e.is_transient() {
            return Err(e);
        }
        let reason = e.to_string();
        tracing::error!(service = %info.service_id, version = %info.version, %reason, "release not deployed");
        self.count(&self.counters.failures, &info.service_id);
        self.state
            .update(|s| s.services.entry(info.service_id.clone()).or_default().last_error = Some(reason.clone()))?;
        self.report(&info.service_id, &info.version, AdoptionState::Failed, &reason).await?;
        Ok(Handled::Failed { service: info.service_id.clone(), version: info.version.clone(), reason })
    }

    async fn install(&self, service: &pb::ServiceInfo, info: &pb::ReleaseInfo) -> Result<Handled> {
        // A release that waited for approval was reported as evaluating when it arrived.
        let waited =
            self.state.load()?.services.get(&info.service_id).is_some_and(|s| s.pending.contains_key(&info.version));
        if !waited {
            self.report(&info.service_id, &info.version, AdoptionState::Evaluating, "").await?;
        }
        let (manifest, _) = match self.download(info).await {
            Ok(x) => x,
            Err(e) => return self.fail(info, e).await,
        };
        let service_id: ServiceId = info.service_id.parse()?;
        let local = self.config.service(&service_id);
        let schema: Vec<ParameterSpec> = service
            .parameters
            .iter()
            .map(|p| ParameterSpec {
                name: p.name.clone(),
                kind: kind_from_proto(p.kind),
                required: p.required,
                description: p.description.clone(),
                max_length: p.max_length,
            })
            .collect();
        let params = match validate_values(&schema, &local.parameters) {
            Ok(p) => p,
            Err(e) => {
                let e = NodeError::Config {
                    path: "[services.".to_string().into(),
                    message: format!("{}] of the node config: {e}", info.service_id),
                };
                return self.fail(info, e).await;
            }
        };
        let deployer = self.deployer.clone();
        let cache = self.cache.clone();
        let content_digest = manifest_digest(info)?;
        let outcome = tokio::task::spawn_blocking(move || {
            let blob_path = |d: &efa_registry::bundle::Digest| cache.path(d);
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
        .map_err(|e| NodeError::Usage(format!("deploy task failed: {e}")))?;
        self.state.update(|s| {
            let e = s.services.entry(info.service_id.clone()).or_default();
            e.pending.remove(&info.version);
        })?;
        match outcome {
            Ok(DeployOutcome::Deployed { version, previous }) => {
                tracing::info!(service = %info.service_id, %version, ?previous, "deployed");
                self.count(&self.counters.deploys, &info.service_id);
                self.cache.clear_partials();
                self.state.update(|s| s.services.entry(info.service_id.clone()).or_default().last_error = None)?;
                self.report(&info.service_id, &info.version, AdoptionState::Deployed, "").await?;
                Ok(Handled::Deployed { service: info.service_id.clone(), version })
            }
            Ok(DeployOutcome::RolledBack { failed_version, restored, reason }) => {
                tracing::warn!(service = %info.service_id, %failed_version, ?restored, %reason, "health check failed, rolled back");
                self.count(&self.counters.rollbacks, &info.service_id);
                let why = format!("health check failed: {reason}");
                self.state.update(|s| {
                    s.services.entry(info.service_id.clone()).or_default().last_error = Some(why.clone())
                })?;
                self.report(&info.service_id, &info.version, AdoptionState::RolledBack, &why).await?;
                Ok(Handled::RolledBack { service: info.service_id.clone(), version: failed_version, reason: why })
            }
            Err(e) => self.fail(info, e.into()).await,
        }
    }

    /// Deploys a release that waits for approval (or any newer release, by hand).
    pub async fn approve(&self, service: &str, version: &str) -> Result<Handled> {
        let info = self.release_info(service, version).await?;
        if info.yanked {
            return Err(NodeError::Usage(format!("{service} {version} is yanked by its Land: {}", info.yank_reason)));
        }
        let service_id: ServiceId = service.parse()?;
        if let Some(running) = self.running_version(&service_id)? {
            if parse_version(version)? <= running {
                return Err(NodeError::Usage(format!(
                    "{service} runs {running}; approving {version} would downgrade it. Use `efa-node rollback` for an explicit local rollback"
                )));
            }
        }
        let svc = CatalogServiceClient::new(self.channel.clone())
            .get_service(pb::GetServiceRequest { id: service.to_string() })
            .await?
            .into_inner();
        let _busy = self.busy.lock().await;
        self.install(&svc, &info).await
    }

    /// Rejects a release (or the whole service, without a version) with a reason the
    /// publishing Land will read.
    pub async fn reject(&self, service: &str, version: Option<&str>, reason: &str) -> Result<()> {
        if reason.trim().is_empty() {
            return Err(NodeError::Usage("a rejection needs a reason; the publishing Land reads it".into()));
        }
        let version = version.unwrap_or_default().to_string();
        self.report(service, &version, AdoptionState::Rejected, reason).await?;
        self.state.update(|s| {
            let e = s.services.entry(service.to_string()).or_default();
            e.pending.remove(&version);
            e.rejected.insert(version.clone(), reason.to_string());
        })
    }

    /// Operator-local, explicit rollback to an installed older version.
    pub async fn rollback(&self, service: &str, version: &str) -> Result<Option<String>> {
        let id: ServiceId = service.parse()?;
        let previous = self.deployer.switch_to(&id, version)?;
        self.report(service, version, AdoptionState::Deployed, "").await?;
        Ok(previous)
    }

    /// Stops serving a service and tells the hub.
    pub async fn retire(&self, service: &str, reason: &str) -> Result<()> {
        let id: ServiceId = service.parse()?;
        self.deployer.retire(&id)?;
        self.report(service, "", AdoptionState::Retired, reason).await
    }

    pub async fn rate(
        &self,
        service: &str,
        version: &str,
        stars: u32,
        criteria: Vec<(pb::Criterion, u32)>,
        comment: &str,
    ) -> Result<pb::RatingInfo> {
        Ok(AdoptionServiceClient::new(self.channel.clone())
            .submit_rating(pb::RatingRequest {
                service_id: service.into(),
                version: version.into(),
                stars,
                criteria: criteria
                    .into_iter()
                    .map(|(c, s)| pb::CriterionScore { criterion: c as i32, score: s })
                    .collect(),
                comment: comment.into(),
            })
            .await?
            .into_inner())
    }

    async fn release_info(&self, service: &str, version: &str) -> Result<pb::ReleaseInfo> {
        ReleaseServiceClient::new(self.channel.clone())
            .get_release(pb::GetReleaseRequest { service_id: service.into(), version: version.into() })
            .await?
            .into_inner()
            .info
            .ok_or_else(|| NodeError::Usage("hub returned a release without info".into()))
    }

    /// Queues a report and sends everything queued. A hub that is away keeps it queued.
    async fn report(&self, service: &str, version: &str, state: AdoptionState, reason: &str) -> Result<()> {
        let item = OutboxReport { service: service.into(), version: version.into(), state, reason: reason.into() };
        // "Evaluating" is reported once per version, even when handling is retried after the
        // hub or the node went away mid-download; any other state for it ends the evaluation.
        let queued = self.state.update(|s| {
            let entry = s.services.entry(service.to_string()).or_default();
            if state == AdoptionState::Evaluating {
                if entry.evaluating.as_deref() == Some(version) {
                    return false;
                }
                entry.evaluating = Some(version.to_string());
            } else if entry.evaluating.as_deref() == Some(version) {
                entry.evaluating = None;
            }
            s.outbox.push(item);
            true
        })?;
        if !queued {
            return Ok(());
        }
        match self.flush_outbox().await {
            Err(e) if e.is_transient() => {
                tracing::warn!(error = %e, "adoption report queued until the hub is reachable");
                Ok(())
            }
            other => other,
        }
    }

    /// Sends queued reports in order. Reports the hub refuses as invalid are dropped with
    /// an error log, so one bad report cannot block the queue.
    pub async fn flush_outbox(&self) -> Result<()> {
        let mut client = AdoptionServiceClient::new(self.channel.clone());
        loop {
            let Some(next) = self.state.load()?.outbox.first().cloned() else { return Ok(()) };
            let sent = client
                .report_adoption(pb::AdoptionReport {
                    service_id: next.service.clone(),
                    version: next.version.clone(),
                    state: state_to_proto(next.state) as i32,
                    reason: next.reason.clone(),
                })
                .await;
            match sent {
                Ok(_) => {}
                Err(s) if NodeError::Hub(s.clone()).is_transient() => return Err(NodeError::Hub(s)),
                Err(s) => {
                    tracing::error!(service = %next.service, state = %next.state, error = %s.message(), "hub refused an adoption report; dropping it")
                }
            }
            self.state.update(|s| {
                if s.outbox.first() == Some(&next) {
                    s.outbox.remove(0);
                }
            })?;
        }
    }
}

fn manifest_digest(info: &pb::ReleaseInfo) -> Result<efa_registry::bundle::Digest> {
    Ok(info.content_digest.parse()?)
}
