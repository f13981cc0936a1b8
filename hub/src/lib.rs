//! # efa-hub
//!
//! The EfA Hub server: Länder publish signed bundles, Kommune nodes subscribe and report,
//! operators read adoption and ratings. Transport only: every domain rule lives in
//! `efa-registry`; this crate maps gRPC requests onto it, decides who may call what
//! ([`auth`]), stores bundle content ([`blobs`]) and fans out events ([`events`]).

pub mod auth;
pub mod blobs;
pub mod client;
pub mod config;
pub mod convert;
pub mod dashboard;
pub mod dev;
pub mod error;
pub mod events;
pub mod metrics;
pub mod pki;
pub mod server;
pub mod services;
pub mod state;

pub use server::{start, HubConfig, RunningHub, ServerTls};
pub mod reports;
pub mod table;
