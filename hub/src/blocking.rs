//! Registry calls from async handlers: sled reads and flushes block, so they run on the
//! blocking pool, and their errors become gRPC statuses through the one error table.

use efa_registry::Registry;
use std::sync::Arc;
use tonic::Status;

/// Runs `f` with the registry on the blocking pool.
pub async fn registry<T, F>(registry: &Arc<Registry>, f: F) -> Result<T, Status>
where
    T: Send + 'static,
    F: FnOnce(&Registry) -> efa_registry::Result<T> + Send + 'static,
{
    let registry = registry.clone();
    tokio::task::spawn_blocking(move || f(&registry))
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "registry task failed");
            Status::internal("internal error in the hub; the operator has the details in the hub log")
        })?
        .map_err(crate::error::status)
}
