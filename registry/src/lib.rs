//! # efa-registry
//!
//! The domain model and storage of EfA Hub: Länder, Kommunen (AGS/ARS), the OZG catalogue,
//! EfA services with their parameter schemas, releases and their signed manifests,
//! subscriptions, the adoption ledger, ratings and the event log.
//!
//! This crate knows nothing about gRPC or sockets. The hub maps wire messages onto
//! [`registry::Registry`] calls; the node uses the bundle, parameter, signing and policy
//! rules directly.

pub mod bundle;
mod commit;
pub mod error;
pub mod import;
pub mod model;
pub mod params;
pub mod registry;
pub mod signing;
pub mod snapshot;
pub mod store;

pub use error::{Error, ErrorKind, Result};
pub use registry::Registry;

/// Milliseconds since the Unix epoch, the timestamp unit of every record.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}
