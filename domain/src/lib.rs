//! # efa-domain
//!
//! The domain of EfA Hub as plain types and pure rules: validated identifiers (AGS, Land
//! code, service id, ...), the model (services, releases, subscriptions, the adoption ledger,
//! ratings, events), signed release manifests and snapshots, the Kommune's parameters, the
//! node's freshness rules and the one authorization table.
//!
//! **Architecture invariant:** no I/O. Nothing here opens a file or a socket or knows tonic
//! or sled; every function can be called from a test with plain values. Storage lives in
//! `efa-registry`, the wire mapping in `efa-proto`.

#![warn(missing_docs)]

pub mod authz;
pub mod bundle;
pub mod error;
pub mod freshness;
pub mod model;
pub mod params;
pub mod signing;
pub mod snapshot;
pub mod text;
pub mod trust;
pub mod vocabulary;

pub use error::{Error, ErrorKind, Result};

/// Milliseconds since the Unix epoch, the timestamp unit of every record.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}
