//! What every RPC handler shares.

use crate::auth::Authenticator;
use crate::blobs::BlobStore;
use crate::error::status;
use crate::events::EventBus;
use efa_registry::Registry;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use tonic::Status;

pub struct HubState {
    pub registry: Arc<Registry>,
    pub blobs: BlobStore,
    pub auth: Authenticator,
    pub bus: EventBus,
    /// Cancelled when the hub shuts down; long-lived streams end on it.
    pub shutdown: CancellationToken,
    /// Bytes per chunk when streaming blobs to nodes.
    pub download_chunk_size: usize,
    pub slow_subscriber_timeout: std::time::Duration,
    pub metrics: Arc<crate::metrics::HubMetrics>,
}

impl HubState {
    /// Runs a registry call on the blocking pool: sled I/O and flushes block.
    pub async fn registry<T, F>(&self, f: F) -> Result<T, Status>
    where
        T: Send + 'static,
        F: FnOnce(&Registry) -> efa_registry::Result<T> + Send + 'static,
    {
        let registry = self.registry.clone();
        tokio::task::spawn_blocking(move || f(&registry))
            .await
            .map_err(|e| Status::internal(format!("registry task failed: {e}")))?
            .map_err(status)
    }
}
