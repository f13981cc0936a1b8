//! # efa-hub
//!
//! The EfA Hub server: Länder publish signed bundles, Kommune nodes subscribe and report,
//! operators read adoption and ratings. Transport only: the domain rules live in
//! `efa-domain` and `efa-registry`; this crate authenticates callers (`auth`), maps gRPC
//! requests onto the registry (`services`), stores bundle content ([`blobs`]), fans out
//! events (`events`) and serves the operator [`dashboard`]. [`server`] wires the parts.

#![warn(missing_docs)]

pub(crate) mod auth;
pub mod blobs;
mod blocking;
pub mod config;
pub mod dashboard;
pub mod dev;
pub mod error;
pub(crate) mod events;
mod jobs;
mod layers;
pub mod limits;
pub(crate) mod metrics;
pub mod pki;
pub mod server;
pub(crate) mod services;
pub(crate) mod state;
pub mod translog;
pub mod transport;

pub use blobs::{BlobCopyReport, BlobLocation, S3Location};
pub use server::{start, HubConfig, RunningHub, ServerTls, StoreLocation};
