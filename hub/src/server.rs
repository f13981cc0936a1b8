//! Starting and stopping the hub: store, blob store, TLS, the gRPC services, health and
//! reflection, and one shutdown mechanism (a `CancellationToken`) threaded through it all.

use crate::auth::Authenticator;
use crate::blobs::{BlobError, BlobStore};
use crate::dashboard::{DashboardConfig, DashboardError, DashboardInputs, DashboardTls};
use crate::events::{EventBus, Feed};
use crate::jobs::{committed, spawn_blob_gc, spawn_retention, spawn_rollout_controller};
use crate::services::{
    adoption::Adoption, catalog::Catalog, log::Log, release::Releases, report::Reports, rollout::Rollouts,
    subscription::Subscriptions,
};
use crate::state::HubState;
use crate::transport::TlsServer;
use efa_domain::bundle::BundleLimits;
use efa_proto::v1::{
    adoption_service_server::AdoptionServiceServer, catalog_service_server::CatalogServiceServer,
    log_service_server::LogServiceServer, release_service_server::ReleaseServiceServer,
    report_service_server::ReportServiceServer, rollout_service_server::RolloutServiceServer,
    subscription_service_server::SubscriptionServiceServer,
};
use efa_registry::store::SledStore;
use efa_registry::Registry;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::transport::Server;

/// How often the rollout controller looks at every running rollout (reports and ratings
/// wake it earlier).
const ROLLOUT_ROUND: Duration = Duration::from_secs(5);

/// How long shutdown waits for in-flight calls before it gives up on them.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the hub could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    /// The store could not be opened or migrated.
    #[error(transparent)]
    Registry(#[from] efa_registry::Error),
    /// The blob directory is unusable.
    #[error(transparent)]
    Blobs(#[from] BlobError),
    /// The dashboard could not start.
    #[error(transparent)]
    Dashboard(#[from] DashboardError),
    /// A certificate or key file could not be read.
    #[error("cannot read {what} {path}: {source}")]
    ReadFile {
        /// What the file is.
        what: &'static str,
        /// Where.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The gRPC address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The gRPC server failed.
    #[error("gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// Server reflection could not be set up.
    #[error("reflection setup failed: {0}")]
    Reflection(String),
    /// The configuration is inconsistent.
    #[error("{0}")]
    Config(String),
    /// A task of the hub failed.
    #[error("{0}")]
    Task(String),
}

/// Server certificate and the CA that client certificates must chain to.
#[derive(Clone, Debug)]
pub struct ServerTls {
    /// The hub's certificate chain (PEM); the dashboard serves it too.
    pub cert: PathBuf,
    /// The hub's private key (PEM).
    pub key: PathBuf,
    /// CA certificate that client certificates must chain to (PEM).
    pub client_ca: PathBuf,
    /// Certificate revocation list(s) of that CA (PEM), reread when the file changes.
    pub crl: Option<PathBuf>,
}

/// Everything [`start`] needs; [`HubConfig::new`] fills in the defaults.
#[derive(Clone, Debug)]
pub struct HubConfig {
    /// gRPC address; port 0 picks a free one ([`RunningHub::addr`] tells which).
    pub listen: SocketAddr,
    /// Holds the store (`db/`), the blobs (`blobs/`) and the dashboard's token hashes.
    pub data_dir: PathBuf,
    /// Where records and events live: the embedded sled store under `data_dir/db` (the
    /// default), or a PostgreSQL database that several replicas share.
    pub store: StoreLocation,
    /// Where bundle content lives: `data_dir/blobs` (the default), another directory, or
    /// an S3-compatible bucket that several replicas share.
    pub blobs: crate::blobs::BlobLocation,
    /// Required unless `insecure_dev`.
    pub tls: Option<ServerTls>,
    /// Plaintext gRPC with identities taken from a request header. Development only.
    pub insecure_dev: bool,
    /// Limits every published bundle must stay within (default [`BundleLimits::default`]).
    pub limits: BundleLimits,
    /// Bytes per `FetchBlob` message sent to nodes (default 256 KiB).
    pub download_chunk_size: usize,
    /// Memory for recently downloaded blobs of up to 1 MiB (the parts of large files), so
    /// the nodes of a rollout wave share one read of each part (default 64 MiB; 0: off).
    pub download_cache_bytes: usize,
    /// Files of a release up to this size are kept in the store and committed with the
    /// release, not written to the blob store (default 64 KiB; 0: never). A publish of small
    /// files then costs one shared flush instead of five file-system syncs of its own.
    pub inline_file_max: u64,
    /// zstd-compress a new sled store (default on): a third of the disk, for more CPU per
    /// write. A store keeps the setting it was created with.
    pub sled_compression: bool,
    /// Keep only the newest N events (None: keep all). Nodes behind it must resync.
    pub event_retention: Option<u64>,
    /// How long a subscriber may leave its stream unread before it is dropped.
    pub slow_subscriber_timeout: Duration,
    /// The operator web dashboard on its own port (None: off). Uses the hub's TLS.
    pub dashboard: Option<DashboardConfig>,
    /// Calls, streams and write rate per caller.
    pub caller_limits: crate::limits::Limits,
    /// How often blobs no published release names are looked for.
    pub blob_gc_interval: Duration,
    /// How old an unreferenced blob or an abandoned upload must be before it is removed
    /// (so a publish in progress never loses content).
    pub blob_gc_grace: Duration,
    /// With a store several replicas share: how often this replica reads the event log
    /// without having been notified (default 1 s; notifications wake it at once).
    pub shared_log_poll: Duration,
    /// How often the rollout controller judges every running rollout (default 5 s).
    pub rollout_round: Duration,
    /// The transparency log's signing key file (default `data_dir/log.key`, created on
    /// first start for `log_origin`). Replicas sharing a store must share it.
    pub log_key: Option<PathBuf>,
    /// The log's name in its checkpoints, used when the key is created.
    pub log_origin: String,
    /// How often new events are integrated into the log and a checkpoint is signed
    /// (default 1 s; a burst of events is gathered into one checkpoint).
    pub checkpoint_interval: Duration,
    /// Federation root keys (`efa-ed25519-public:…`): each may sign any Land's next key
    /// set, e.g. to recover a Land that lost its keys. Nodes pin the same keys.
    pub federation_root: Vec<String>,
    /// Run the transparency log's integrator (default true). Off only for benchmarks that
    /// measure what the log costs; a hub users run always logs (there is no file setting).
    pub transparency_log: bool,
}

impl HubConfig {
    /// A config with default limits. `tls: None` is accepted by [`start`] only together
    /// with `insecure_dev`.
    pub fn new(listen: SocketAddr, data_dir: PathBuf, tls: Option<ServerTls>) -> Self {
        HubConfig {
            listen,
            data_dir,
            store: StoreLocation::Sled,
            blobs: Default::default(),
            tls,
            insecure_dev: false,
            limits: BundleLimits::default(),
            download_chunk_size: 256 * 1024,
            download_cache_bytes: 64 << 20,
            inline_file_max: 64 * 1024,
            sled_compression: true,
            event_retention: None,
            slow_subscriber_timeout: crate::events::SLOW_SUBSCRIBER_TIMEOUT,
            dashboard: None,
            caller_limits: crate::limits::Limits::default(),
            blob_gc_interval: Duration::from_secs(3600),
            blob_gc_grace: Duration::from_secs(24 * 3600),
            shared_log_poll: SHARED_STORE_POLL,
            rollout_round: ROLLOUT_ROUND,
            log_key: None,
            log_origin: crate::translog::DEFAULT_ORIGIN.to_string(),
            checkpoint_interval: Duration::from_secs(1),
            transparency_log: true,
            federation_root: Vec::new(),
        }
    }
}

/// A started hub; it runs until its shutdown token is cancelled.
pub struct RunningHub {
    /// The address the gRPC server is bound to (the real port when `listen` had port 0).
    pub addr: SocketAddr,
    /// Where the operator dashboard listens, if enabled.
    pub dashboard_addr: Option<SocketAddr>,
    /// The hub's registry, for in-process inspection (tests, dev tools).
    pub registry: Arc<Registry>,
    state: Arc<HubState>,
    shutdown: CancellationToken,
    task: JoinHandle<Result<(), HubError>>,
    jobs: TaskTracker,
}

impl RunningHub {
    /// Event streams currently attached.
    pub fn watchers(&self) -> usize {
        self.state.feed.bus.watchers()
    }

    /// The hub's metrics in the Prometheus text format.
    pub fn metrics_text(&self) -> String {
        self.state.scrape_metrics()
    }

    /// The token that stops the hub when cancelled (e.g. from a signal handler); then
    /// [`wait`](Self::wait) for it.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Stops accepting, ends streams, drains, flushes the store.
    pub async fn shutdown(self) -> Result<(), HubError> {
        self.shutdown.cancel();
        self.wait().await
    }

    /// Waits until the hub stops (after its token is cancelled).
    pub async fn wait(self) -> Result<(), HubError> {
        let RunningHub { registry, state, shutdown, task, jobs, .. } = self;
        let result = match task.await {
            Ok(r) => r,
            Err(e) => Err(HubError::Task(format!("hub task panicked: {e}"))),
        };
        // A server that stopped on its own stops its jobs too; a job in the middle of a round
        // (the log's integrator, blob GC) finishes it first.
        shutdown.cancel();
        jobs.close();
        jobs.wait().await;
        drop(state);
        // Connection and stream tasks hold the hub's state until they notice the stop; they
        // end on their own, so give them a moment and close the store here, not later.
        let deadline = tokio::time::Instant::now() + STORE_RELEASE_WAIT;
        while Arc::strong_count(&registry) > 1 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if Arc::strong_count(&registry) > 1 {
            tracing::warn!(
                holders = Arc::strong_count(&registry) - 1,
                "tasks of the stopped hub still hold the store; it closes when the last one ends"
            );
        }
        tokio::task::spawn_blocking(move || {
            let flushed = registry.flush();
            // Usually the last handle: the store closes here, off the async threads.
            drop(registry);
            flushed
        })
        .await
        .map_err(|e| HubError::Task(e.to_string()))??;
        tracing::info!("hub stopped, store flushed");
        result
    }
}

/// How long a stopping hub waits for its connection and stream tasks to let go of the store.
const STORE_RELEASE_WAIT: Duration = Duration::from_secs(5);

/// How often a replica's log follower reads a store that other replicas write too, in case
/// a notification was lost (they wake it at once otherwise): one query per replica, however
/// many streams it serves.
const SHARED_STORE_POLL: Duration = Duration::from_secs(1);

/// Where a hub keeps its records and events.
#[derive(Clone, PartialEq, Eq)]
pub enum StoreLocation {
    /// sled under `data_dir/db`.
    Sled,
    /// A PostgreSQL URL (`postgres://user@host:port/db`); it may hold a password, so it is
    /// never logged or shown (see its `Debug`).
    Postgres(String),
}

impl std::fmt::Debug for StoreLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreLocation::Sled => f.write_str("sled"),
            StoreLocation::Postgres(_) => f.write_str("postgres://…"),
        }
    }
}

impl std::str::FromStr for StoreLocation {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "" | "sled" => Ok(StoreLocation::Sled),
            url if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                Ok(StoreLocation::Postgres(url.to_string()))
            }
            _ => Err("store must be `sled` or a postgres:// URL".into()),
        }
    }
}

/// Opens the store (sled under `data_dir/db`, or PostgreSQL) and imports the register on
/// first start.
pub async fn open_registry(config: &HubConfig) -> Result<Arc<Registry>, HubError> {
    let db = config.data_dir.join("db");
    let limits = config.limits.clone();
    let location = config.store.clone();
    let sled_options = efa_registry::store::SledOptions { compression: config.sled_compression };
    let registry = tokio::task::spawn_blocking(move || -> Result<Registry, efa_registry::Error> {
        let store: Arc<dyn efa_registry::store::Store> = match location {
            StoreLocation::Sled => Arc::new(SledStore::open_with(&db, sled_options)?),
            StoreLocation::Postgres(url) => Arc::new(efa_registry::store::PostgresStore::open(&url)?),
        };
        let registry = Registry::with_limits(store, limits);
        registry.seed_if_empty()?;
        Ok(registry)
    })
    .await
    .map_err(|e| HubError::Task(e.to_string()))??;
    Ok(Arc::new(registry))
}

/// Opens the store and blob store, starts the gRPC services (and the dashboard, if
/// configured) and returns once the hub listens; serving continues in a background task.
pub async fn start(config: HubConfig) -> Result<RunningHub, HubError> {
    let registry = open_registry(&config).await?;
    let blobs = {
        let (at, dir) = (config.blobs.clone(), config.data_dir.clone());
        tokio::task::spawn_blocking(move || BlobStore::open(&at, &dir))
            .await
            .map_err(|e| HubError::Task(e.to_string()))??
    };
    let shutdown = CancellationToken::new();
    let metrics = Arc::new(crate::metrics::HubMetrics::default());
    let feed = Arc::new(Feed {
        registry: registry.clone(),
        bus: EventBus::new(4096),
        metrics: metrics.clone(),
        shutdown: shutdown.clone(),
        slow_subscriber_timeout: config.slow_subscriber_timeout,
        // Other replicas commit to a shared database: one reader per replica follows its
        // log, woken by their notifications, and a slow timer covers a lost one.
        poll_interval: matches!(config.store, StoreLocation::Postgres(_)).then_some(config.shared_log_poll),
        wake: tokio::sync::Notify::new(),
    });
    // The hub's own background jobs hold the registry; stopping waits for them, so the store
    // is closed (its file lock released, nothing left to write) once `wait` returns.
    let jobs = TaskTracker::new();
    if feed.poll_interval.is_some() {
        jobs.spawn(feed.clone().follow_log());
    }
    {
        let feed = Arc::downgrade(&feed);
        let wake = Box::new(move || {
            if let Some(feed) = feed.upgrade() {
                feed.wake.notify_one();
            }
        });
        let r = registry.clone();
        tokio::task::spawn_blocking(move || r.on_foreign_commit(wake))
            .await
            .map_err(|e| HubError::Task(e.to_string()))??;
    }
    // Names this process among the replicas that take turns on once-only jobs.
    let replica = format!("{}-{}", std::process::id(), efa_domain::now_ms());
    let state = Arc::new(HubState {
        registry: registry.clone(),
        blobs,
        auth: Authenticator::new(config.insecure_dev, registry.clone()),
        feed,
        shutdown: shutdown.clone(),
        download_chunk_size: config.download_chunk_size,
        hot: Arc::new(crate::blobs::HotBlobs::new(config.download_cache_bytes, crate::blobs::HOT_BLOB_MAX)),
        inline_file_max: config.inline_file_max,
        metrics,
        federation_root: config
            .federation_root
            .iter()
            .map(|k| efa_domain::signing::VerifyingKey::from_text(k))
            .collect::<Result<_, _>>()
            .map_err(|e| HubError::Config(format!("federation_root: {e}")))?,
    });
    if let Some(keep) = config.event_retention {
        spawn_retention(&jobs, registry.clone(), keep, replica.clone(), shutdown.clone());
    }
    // Uploads of a hub that died mid-publish: promoted if their release was committed.
    let recovered = {
        let (r, b) = (registry.clone(), state.blobs.clone());
        let grace = config.blob_gc_grace;
        tokio::task::spawn_blocking(move || b.recover(grace, |rel| committed(&r, rel)))
            .await
            .map_err(|e| HubError::Task(e.to_string()))??
    };
    if recovered != Default::default() {
        tracing::warn!(?recovered, "recovered uploads of an interrupted publish");
    }
    spawn_rollout_controller(&jobs, state.feed.clone(), config.rollout_round, replica.clone(), shutdown.clone());
    if config.transparency_log {
        let log_key = config.log_key.clone().unwrap_or_else(|| config.data_dir.join("log.key"));
        let key = crate::translog::load_or_create_key(&log_key, &config.log_origin)?;
        let key = {
            let r = registry.clone();
            tokio::task::spawn_blocking(move || crate::translog::sign_stored(&r, &key).map(|()| key))
                .await
                .map_err(|e| HubError::Task(e.to_string()))??
        };
        crate::translog::spawn_integrator(
            &jobs,
            state.feed.clone(),
            key,
            config.checkpoint_interval,
            replica.clone(),
            shutdown.clone(),
        );
    }
    spawn_blob_gc(&jobs, registry.clone(), state.blobs.clone(), &config, replica, shutdown.clone());

    let tls = match (&config.tls, config.insecure_dev) {
        (Some(files), _) => Some(TlsServer::new(files.clone())?),
        (None, true) => {
            tracing::warn!(
                "INSECURE DEV MODE: plaintext gRPC, identities taken from a header. Never use this outside a laptop."
            );
            None
        }
        (None, false) => {
            return Err(HubError::Config("TLS certificate, key and client CA are required (or --insecure-dev)".into()))
        }
    };
    let mut builder = Server::builder()
        .layer(crate::layers::StatusFixLayer)
        .layer(crate::limits::LimitsLayer(crate::limits::Limiter::new(config.caller_limits)))
        .layer(crate::metrics::RpcTimingLayer(state.metrics.clone()))
        .initial_connection_window_size(8 * 1024 * 1024)
        .initial_stream_window_size(4 * 1024 * 1024)
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(20)));

    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter.set_serving::<CatalogServiceServer<Catalog>>().await;
    health_reporter.set_service_status("", tonic_health::ServingStatus::Serving).await;
    // Reflection (v1, and v1alpha which many tools still speak) describes the EfA services
    // and health, to authenticated callers only.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(efa_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let auth = state.auth.clone();
    let only_authenticated = move |req: tonic::Request<()>| auth.identify(&req).map(|_| req);
    let reflection_v1 = tonic::service::interceptor::InterceptedService::new(
        reflection().build_v1().map_err(|e| HubError::Reflection(e.to_string()))?,
        only_authenticated.clone(),
    );
    let reflection_v1alpha = tonic::service::interceptor::InterceptedService::new(
        reflection().build_v1alpha().map_err(|e| HubError::Reflection(e.to_string()))?,
        only_authenticated,
    );

    let router = builder
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(CatalogServiceServer::new(Catalog(state.clone())))
        .add_service(ReleaseServiceServer::new(Releases(state.clone())))
        .add_service(SubscriptionServiceServer::new(Subscriptions(state.clone())))
        .add_service(AdoptionServiceServer::new(Adoption(state.clone())))
        .add_service(ReportServiceServer::new(Reports(state.clone())))
        .add_service(RolloutServiceServer::new(Rollouts(state.clone())))
        .add_service(LogServiceServer::new(Log(state.clone())));
    let state = state.clone();

    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| HubError::Bind { addr: config.listen, source })?;
    let addr = listener.local_addr().map_err(|source| HubError::Bind { addr: config.listen, source })?;
    tracing::info!(%addr, tls = config.tls.is_some(), data_dir = %config.data_dir.display(), "hub listening");

    // ---- operator dashboard (hub/src/dashboard): own port, same TLS, same shutdown ----
    let dashboard_addr = match &config.dashboard {
        Some(dashboard) => {
            let tls = match (&config.tls, config.insecure_dev) {
                (Some(tls), _) => Some(DashboardTls { cert: tls.cert.clone(), key: tls.key.clone() }),
                (None, true) => None,
                (None, false) => {
                    return Err(HubError::Config("the dashboard needs the hub's TLS certificate and key".into()))
                }
            };
            let bus = state.feed.bus.clone();
            let st = state.clone();
            let live = crate::dashboard::Live::new(move || bus.watchers()).with_metrics(move || st.scrape_metrics());
            let spawned = crate::dashboard::spawn(DashboardInputs {
                config: dashboard.clone(),
                tls,
                data_dir: config.data_dir.clone(),
                registry: registry.clone(),
                live,
                shutdown: shutdown.clone(),
            })
            .await;
            Some(spawned.inspect_err(|_| shutdown.cancel())?)
        }
        None => None,
    };
    // ---- end operator dashboard ----

    let token = shutdown.clone();
    let task = tokio::spawn(async move {
        let signal = {
            let token = token.clone();
            async move {
                token.cancelled().await;
                health_reporter.set_not_serving::<CatalogServiceServer<Catalog>>().await;
                health_reporter.set_service_status("", tonic_health::ServingStatus::NotServing).await;
            }
        };
        let serve_token = token.clone();
        let closer = tls.clone();
        let serve = async move {
            match tls {
                Some(tls) => {
                    crate::transport::watch_crl(tls.clone(), serve_token.clone());
                    let incoming = crate::transport::incoming(listener, tls, serve_token);
                    router.serve_with_incoming_shutdown(incoming, signal).await
                }
                None => {
                    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
                    router.serve_with_incoming_shutdown(incoming, signal).await
                }
            }
        };
        tokio::pin!(serve);
        let result = tokio::select! {
            r = &mut serve => r.map_err(HubError::from),
            // hyper's graceful shutdown can hang on open connections; bound the drain.
            _ = async { token.cancelled().await; tokio::time::sleep(DRAIN_TIMEOUT).await } => {
                tracing::warn!("drain timeout reached; closing remaining connections");
                Ok(())
            }
        };
        // Connection tasks outlive the server future; closing their streams ends them, so
        // none keeps the hub's state (and the store's file lock) after shutdown.
        if let Some(tls) = closer {
            let closed = tls.close_all();
            if closed > 0 {
                tracing::info!(connections = closed, "closed the remaining connections");
            }
        }
        result
    });
    Ok(RunningHub { addr, dashboard_addr, registry, state, shutdown, task, jobs })
}
