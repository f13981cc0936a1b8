//! What every RPC handler shares.

use crate::auth::Authenticator;
use crate::blobs::BlobStore;
use crate::events::Feed;
use crate::metrics::{Gauges, HubMetrics};
use efa_registry::Registry;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use tonic::Status;

/// The hub's parts, as the gRPC services see them.
pub struct HubState {
    /// Domain rules and storage.
    pub registry: Arc<Registry>,
    /// Bundle content, by digest.
    pub blobs: BlobStore,
    /// Reads the caller's identity from its certificate.
    pub auth: Authenticator,
    /// The event log fan-out to node streams.
    pub feed: Arc<Feed>,
    /// Cancelled when the hub shuts down; long-lived streams end on it.
    pub shutdown: CancellationToken,
    /// Bytes per chunk when streaming blobs to nodes.
    pub download_chunk_size: usize,
    /// Recently downloaded blobs, served without the store.
    pub hot: Arc<crate::blobs::HotBlobs>,
    /// Largest file of a release kept in the store (0: none).
    pub inline_file_max: u64,
    /// Counters and histograms.
    pub metrics: Arc<HubMetrics>,
    /// Federation root keys: each may sign any Land's next key set.
    pub federation_root: Vec<efa_domain::signing::VerifyingKey>,
}

impl HubState {
    /// Runs a registry call on the blocking pool: sled I/O and flushes block.
    pub async fn registry<T, F>(&self, f: F) -> Result<T, Status>
    where
        T: Send + 'static,
        F: FnOnce(&Registry) -> efa_registry::Result<T> + Send + 'static,
    {
        crate::blocking::registry(&self.registry, f).await
    }

    /// The hub's metrics in the Prometheus text format, with current-state gauges read now.
    pub fn scrape_metrics(&self) -> String {
        self.metrics.scrape(Gauges {
            event_streams: self.feed.bus.watchers(),
            subscriptions: self.registry.subscription_count().ok(),
            event_head: self.registry.head_seq().ok(),
            download_cache_bytes: self.hot.held(),
        })
    }
}
