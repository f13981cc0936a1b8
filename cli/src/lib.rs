//! # efa-cli
//!
//! The `efa` command for Land publishers and operators, and what every EfA binary shares at
//! its process edge ([`edge`]: runtime, logging, stop signals, error output). Its library
//! parts serve the demo and the tests too: [`publish`] (sign and upload a bundle),
//! [`reports`] and [`table`] (reports as tables, CSV or JSON), [`keys`] (signing key files),
//! [`rollout`] (plan files and rollout status), [`translog`] (auditing, mirroring and
//! witnessing the hub's transparency log).
//!
//! **Architecture invariant:** no server code; `cargo install --path cli` builds no sled,
//! axum, maud or rcgen.

#![warn(missing_docs)]

pub mod doctor;
pub mod edge;
pub mod keys;
pub mod keysets;
pub mod publish;
pub mod reports;
pub mod rollout;
pub mod table;
pub mod translog;
