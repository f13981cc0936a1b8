//! The agent loop of a Kommune node.
//!
//! On start it recovers half-done deploys, registers its subscriptions with the hub and
//! reconciles: for every subscribed service it looks at the newest release on its
//! channel. Then it follows the hub's event stream from its persisted cursor. Each
//! release goes through the subscription's policy: deploy now, wait for approval, or
//! ignore. Every adoption state change is reported to the hub through the [`Outbox`], so
//! nothing is lost while the hub is away.
//!
//! By concern: this file holds the run loop and the event stream; [`release`](self::release)
//! the update policy and installs; `commands` what an operator does by hand (approve,
//! reject, rollback, retire, rate); `freshness` the freeze-protection check.

mod commands;
mod freshness;
mod release;
mod translog;

use crate::config::NodeConfig;
use crate::deploy::Deployer;
use crate::error::{NodeError, Result};
use crate::fetch::BlobCache;
use crate::hub::{HubClient, HubError};
use crate::metrics::NodeCounters;
use crate::outbox::Outbox;
use crate::state::{NodeState, StateFile};
use efa_domain::model::catalog::CatalogEntry;
use efa_domain::model::event::StreamEvent;
use efa_domain::model::subscription::{NewSubscription, SubscriptionTarget};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_stream::StreamExt;
use tokio_util::sync::CancellationToken;

/// What happened to one release the agent looked at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Handled {
    /// Deployed and healthy.
    Deployed {
        /// The service.
        service: String,
        /// The version now running.
        version: String,
    },
    /// Deployed, failed its health check, and the previous version was put back.
    RolledBack {
        /// The service.
        service: String,
        /// The version that failed.
        version: String,
        /// Why.
        reason: String,
    },
    /// Not deployed (verification, parameters, download, deploy).
    Failed {
        /// The service.
        service: String,
        /// The version.
        version: String,
        /// Why.
        reason: String,
    },
    /// Verified and waiting for the Kommune's approval.
    AwaitingApproval {
        /// The service.
        service: String,
        /// The version.
        version: String,
    },
    /// Nothing to do.
    Ignored {
        /// The service.
        service: String,
        /// The version.
        version: String,
        /// Why not.
        why: String,
    },
}

/// One entry per service and version, and "nothing to do" only for a service nothing else
/// happened to (its newest such entry).
fn summarize(handled: Vec<Handled>) -> Vec<Handled> {
    let acted: std::collections::BTreeSet<String> =
        handled.iter().filter(|h| !matches!(h, Handled::Ignored { .. })).map(|h| h.service().to_string()).collect();
    let mut seen = std::collections::BTreeSet::new();
    let mut out: Vec<Handled> = Vec::new();
    let mut handled = handled;
    // Read in order: per service, oldest version first.
    handled.sort_by(|a, b| a.service().cmp(b.service()).then(semver_of(a.version()).cmp(&semver_of(b.version()))));
    for h in handled {
        if !seen.insert((h.service().to_string(), h.version().to_string())) {
            continue;
        }
        if let Handled::Ignored { service, .. } = &h {
            if acted.contains(service) {
                continue;
            }
            // Keep only the newest "nothing to do" of a service.
            let newer = |o: &Handled| semver_of(o.version()) >= semver_of(h.version());
            if out.iter().any(|o| o.service() == service && newer(o)) {
                continue;
            }
            out.retain(|o| o.service() != service);
        }
        out.push(h);
    }
    out
}

fn semver_of(v: &str) -> Option<semver::Version> {
    semver::Version::parse(v).ok()
}

impl Handled {
    /// The service it is about.
    pub fn service(&self) -> &str {
        match self {
            Handled::Deployed { service, .. }
            | Handled::RolledBack { service, .. }
            | Handled::Failed { service, .. }
            | Handled::AwaitingApproval { service, .. }
            | Handled::Ignored { service, .. } => service,
        }
    }

    /// The version it is about.
    pub fn version(&self) -> &str {
        match self {
            Handled::Deployed { version, .. }
            | Handled::RolledBack { version, .. }
            | Handled::Failed { version, .. }
            | Handled::AwaitingApproval { version, .. }
            | Handled::Ignored { version, .. } => version,
        }
    }

    /// True if the release was meant to be deployed and was not.
    pub fn is_failure(&self) -> bool {
        matches!(self, Handled::Failed { .. } | Handled::RolledBack { .. })
    }
}

impl std::fmt::Display for Handled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Handled::Deployed { service, version } => write!(f, "{service} {version}: deployed"),
            Handled::RolledBack { service, version, reason } => {
                write!(f, "{service} {version}: rolled back to the previous version ({reason})")
            }
            Handled::Failed { service, version, reason } => write!(f, "{service} {version}: not deployed: {reason}"),
            Handled::AwaitingApproval { service, version } => {
                write!(f, "{service} {version}: verified, waiting for approval (efa-node approve {service} {version})")
            }
            Handled::Ignored { service, version, why } => write!(f, "{service} {version}: nothing to do ({why})"),
        }
    }
}

/// Called with (service, bytes done, bytes to fetch) while a release downloads.
pub type Progress = Arc<dyn Fn(&str, u64, u64) + Send + Sync>;

/// How often a cursor that only moved (no other change) is written while following events.
const CURSOR_WRITE_INTERVAL: Duration = Duration::from_secs(1);

/// A Kommune node: its config, its connection to the hub, its local state and deployer.
pub struct Agent {
    config: NodeConfig,
    hub: HubClient,
    deployer: Arc<Deployer>,
    cache: BlobCache,
    state: StateFile,
    /// Serializes release handling, so two deploys of a service never overlap.
    busy: tokio::sync::Mutex<()>,
    counters: NodeCounters,
    progress: Option<Progress>,
    /// Set when an event stream reached `CaughtUp`; resets the reconnect backoff.
    caught_up: AtomicBool,
    /// Seq of the last event handled but not yet written; the next state write carries it.
    cursor: Mutex<Option<u64>>,
}

impl Agent {
    /// Prepares the local directories and recovers from an earlier crash. Does not need the
    /// hub: the connection is made lazily and retried.
    pub fn new(config: NodeConfig) -> Result<Self> {
        for dir in [&config.state_dir, &config.deploy_dir] {
            std::fs::create_dir_all(dir).map_err(|e| NodeError::io(dir, e))?;
        }
        let tls = config.tls_files();
        let channels = std::iter::once(&config.hub)
            .chain(config.hubs.iter())
            .map(|url| Ok((url.clone(), efa_proto::tls::connect_lazy(url, tls.as_ref())?)))
            .collect::<Result<Vec<_>>>()?;
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
            hub: HubClient::replicas(channels).acting_for(&config.ags),
            config,
            busy: tokio::sync::Mutex::new(()),
            counters: Default::default(),
            progress: None,
            caught_up: Default::default(),
            cursor: Mutex::new(None),
        })
    }

    /// Reports download progress (the CLI draws a progress bar with it).
    pub fn with_progress(mut self, progress: Progress) -> Self {
        self.progress = Some(progress);
        self
    }

    /// The node's config.
    pub fn config(&self) -> &NodeConfig {
        &self.config
    }

    /// Deploy, rollback and failure counters, for metrics.
    pub fn counters(&self) -> &NodeCounters {
        &self.counters
    }

    /// The local deployer.
    pub fn deployer(&self) -> &Deployer {
        &self.deployer
    }

    /// The node's persistent state as it is on disk now.
    pub fn state(&self) -> Result<NodeState> {
        self.state.load()
    }

    /// The node's status as `efa-node status` shows it.
    pub fn status(&self) -> Result<crate::status::NodeStatus> {
        let state = self.state()?;
        let installed = crate::status::installed(&self.deployer, &state)?;
        Ok(crate::status::collect(&state, &installed, self.config.max_staleness_secs, efa_domain::now_ms()))
    }

    /// The node's metrics in the Prometheus text format (reads the state from disk).
    pub fn metrics_text(&self) -> String {
        crate::metrics::render(&self.counters, self.status().ok().as_ref())
    }

    /// How often this agent wrote `state.json` (each write is an fsync).
    pub fn state_writes(&self) -> u64 {
        self.state.saves()
    }

    fn outbox(&self) -> Outbox<'_> {
        Outbox::new(&self.state, &self.hub, &self.config.ags, &self.config.covers)
    }

    /// Changes the state in one write, carrying along a cursor that moved since the last one.
    fn update<T>(&self, f: impl FnOnce(&mut NodeState) -> T) -> Result<T> {
        let cursor = self.cursor.lock().unwrap_or_else(|p| p.into_inner()).take();
        self.state.update(|s| {
            if let Some(seq) = cursor {
                s.cursor = s.cursor.max(seq);
                s.last_sync_ms = efa_domain::now_ms();
            }
            f(s)
        })
    }

    /// Registers every subscription of the config with the hub (idempotent).
    pub async fn register_subscriptions(&self) -> Result<()> {
        // A Gemeinde in `covers` the certificate may not act for would have every report
        // for it refused: say so now, naming the config.
        for ags in &self.config.covers {
            if let Err(e) = self.hub.clone().acting_for(ags).who_am_i().await {
                if e.is_transient() {
                    return Err(e.into());
                }
                let why = e.status().map(|s| s.message().to_string()).unwrap_or_else(|| e.to_string());
                return Err(NodeError::Usage(format!(
                    "{}: covers = [.. \"{ags}\" ..]: the hub refuses this node acting for it: {why}",
                    self.config.describe_source()
                )));
            }
        }
        for sub in self.config.new_subscriptions().map_err(NodeError::Usage)? {
            match self.hub.subscribe(&sub).await {
                Err(e) if e.status().is_some_and(|s| s.code() == tonic::Code::NotFound) => {
                    return Err(self.unknown_target(&sub, e).await);
                }
                r => r?,
            }
        }
        Ok(())
    }

    /// A subscription to something the hub does not know, said with the config file and
    /// the closest existing service id.
    async fn unknown_target(&self, sub: &NewSubscription, e: HubError) -> NodeError {
        let SubscriptionTarget::Service(id) = &sub.target else { return e.into() };
        NodeError::Usage(format!(
            "{}: [[subscriptions]] service = \"{id}\": the hub has no such service{}",
            self.config.describe_source(),
            self.did_you_mean(id).await
        ))
    }

    /// "; did you mean X?" for the hub's service id closest to `id`, or where to look.
    pub(crate) async fn did_you_mean(&self, id: &efa_domain::model::ids::ServiceId) -> String {
        let known = self.hub.services_of_themenfeld("").await.unwrap_or_default();
        efa_domain::text::closest(id.as_str(), known.iter().map(|c| c.service.id.as_str()))
            .map(|c| format!("; did you mean {c}?"))
            .unwrap_or_else(|| "; `efa services` lists what the hub offers".into())
    }

    /// Sends reports queued while the hub was away.
    pub async fn flush_outbox(&self) -> Result<()> {
        self.outbox().flush().await
    }

    /// Looks at the newest release of every subscribed service, as if it had just been
    /// announced. Covers releases published before the node subscribed.
    pub async fn reconcile(&self) -> Result<Vec<Handled>> {
        let mut out = Vec::new();
        let services = self.subscribed_services().await?;
        for entry in &services {
            self.note_deprecation(entry)?;
            let Some((_, channel)) = self.config.policy_for(&entry.service) else { continue };
            let list = self.hub.release_list(&entry.service.id, &channel).await?;
            if let Some(newest) = list.into_iter().find(|r| r.yank.is_none()) {
                out.push(self.handle_release(newest).await?);
            }
        }
        self.check_freshness_of(&services).await?;
        Ok(out)
    }

    /// Keeps the building Land's deprecation notice of a service in the node's state, for
    /// `status`; logged once when it first appears or changes.
    pub(crate) fn note_deprecation(&self, entry: &CatalogEntry) -> Result<()> {
        let notice = entry.service.deprecated.as_ref().map(|d| match &d.successor {
            Some(next) => format!("deprecated by Land {}: {} (successor: {next})", entry.service.land, d.reason),
            None => format!("deprecated by Land {}: {}", entry.service.land, d.reason),
        });
        let id = entry.service.id.to_string();
        let known = self.state.load()?.services.get(&id).and_then(|s| s.deprecated.clone());
        if known == notice {
            return Ok(());
        }
        if let Some(n) = &notice {
            tracing::warn!(service = %id, notice = %n, "the building Land deprecated a service this Kommune follows");
        }
        self.update(move |s| s.services.entry(id).or_default().deprecated = notice)
    }

    /// The services the node's subscriptions cover, as the hub's catalog describes them.
    async fn subscribed_services(&self) -> Result<Vec<CatalogEntry>> {
        let mut services: Vec<CatalogEntry> = Vec::new();
        for s in &self.config.subscriptions {
            match s.target().map_err(NodeError::Usage)? {
                SubscriptionTarget::Service(id) => services.push(self.hub.service(&id).await?),
                // The hub lists the whole Themenfeld; this Kommune follows its own Land's
                // services and those its Land offers (each offer is verified when used).
                SubscriptionTarget::Themenfeld(t) => {
                    let own = self.config.ags.land();
                    services.extend(
                        self.hub
                            .services_of_themenfeld(&t)
                            .await?
                            .into_iter()
                            .filter(|e| e.service.land == own || e.offered_by.contains(&own)),
                    )
                }
            }
        }
        services.sort_by(|a, b| a.service.id.cmp(&b.service.id));
        services.dedup_by(|a, b| a.service.id == b.service.id);
        Ok(services)
    }

    /// One pass as `efa-node sync` runs it: register, send queued reports, reconcile, follow
    /// the event stream until it has caught up.
    /// What happened to each service, once: the reconcile pass and the event stream see
    /// the same releases, and an event for an older release has nothing to say.
    /// With several hub replicas configured, a pass that finds one away is run again on
    /// the next (what was done already is not done twice: reports are queued, releases
    /// are decided against what runs).
    pub async fn sync(&self) -> Result<Vec<Handled>> {
        let mut tries = 1;
        loop {
            match self.sync_pass().await {
                Err(e) if e.is_transient() && tries < self.hub.replica_count() => {
                    let next = self.hub.fail_over().unwrap_or_default();
                    tracing::warn!(error = %e, next = next, "hub replica away; syncing with the next");
                    tries += 1;
                }
                other => return other,
            }
        }
    }

    async fn sync_pass(&self) -> Result<Vec<Handled>> {
        self.register_subscriptions().await?;
        self.flush_outbox().await?;
        let mut handled = self.reconcile().await?;
        handled.extend(self.sync_once().await?);
        // Routing the hub has not heard yet (a declaration lost while it was away).
        for service in self.status()?.services.iter().filter(|s| s.running.is_some()) {
            if let Ok(id) = service.service.parse() {
                self.declare_routing(&id).await?;
            }
        }
        Ok(summarize(handled))
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
        // Replicas tried since the last good connection: each gets a quick try, then the
        // backoff grows again (all of them away is one outage, not many).
        let mut tried = 0;
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
            if self.caught_up.swap(false, Ordering::SeqCst) {
                backoff = Duration::from_millis(200);
                tried = 0;
            }
            match result {
                Ok(_) => {
                    backoff = Duration::from_millis(200);
                    tried = 0;
                }
                Err(e) if e.is_transient() => {
                    tracing::warn!(error = %e, retry_in = ?backoff, "hub unreachable; will resume from the cursor");
                    if let Some(next) = self.hub.fail_over() {
                        tracing::warn!(hub = next, "trying the next hub replica");
                        tried += 1;
                        if tried < self.hub.replica_count() {
                            backoff = Duration::from_millis(200);
                        }
                    }
                }
                Err(e) => tracing::error!(error = %e, retry_in = ?backoff, "sync failed"),
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(30));
        }
        self.write_cursor()?;
        Ok(())
    }

    /// Writes a cursor that moved without any other state change.
    fn write_cursor(&self) -> Result<()> {
        let moved = self.cursor.lock().unwrap_or_else(|p| p.into_inner()).is_some();
        if moved {
            self.update(|_| ())?;
        }
        Ok(())
    }

    async fn follow(&self, shutdown: CancellationToken, until_caught_up: bool) -> Result<Vec<Handled>> {
        let cursor = self.state.load()?.cursor;
        let mut handled = Vec::new();
        let mut stream = match self.hub.watch(cursor).await {
            Ok(s) => s,
            Err(HubError::ResyncNeeded { head }) => {
                // The hub no longer has the events after our cursor: reconcile from the
                // catalog (the snapshot path), then resume from the head it named.
                tracing::warn!(cursor, head, "behind the hub's event retention; resyncing from the catalog");
                handled.extend(self.reconcile().await?);
                self.update(|s| s.cursor = s.cursor.max(head))?;
                self.hub.watch(head).await?
            }
            Err(e) => return Err(e.into()),
        };
        let mut last_write = Instant::now();
        loop {
            let next = tokio::select! {
                _ = shutdown.cancelled() => {
                    self.write_cursor()?;
                    return Ok(handled);
                }
                n = stream.next() => n,
            };
            let Some(event) = next else {
                self.write_cursor()?;
                return Err(HubError::stream_ended().into());
            };
            let (seq, event) = match event {
                Ok(e) => e,
                Err(e) => {
                    self.write_cursor()?;
                    return Err(e.into());
                }
            };
            let caught_up = matches!(event, Some(StreamEvent::CaughtUp { .. }));
            match event {
                Some(StreamEvent::Published(info)) => handled.push(self.handle_release(info).await?),
                Some(StreamEvent::Yanked(info)) => self.handle_yank(info).await?,
                Some(StreamEvent::CaughtUp { .. }) | None => {}
            }
            {
                let mut pending = self.cursor.lock().unwrap_or_else(|p| p.into_inner());
                *pending = Some(pending.map_or(seq, |c| c.max(seq)));
            }
            if caught_up {
                self.caught_up.store(true, Ordering::SeqCst);
                // Its write carries the cursor and the time of this sync.
                self.check_freshness().await?;
                self.watch_log().await;
                if until_caught_up {
                    return Ok(handled);
                }
            } else if last_write.elapsed() >= CURSOR_WRITE_INTERVAL {
                self.write_cursor()?;
                last_write = Instant::now();
            }
        }
    }
}
