//! # efa-testkit
//!
//! What the tests of every crate share, so each test reads like the scenario it checks:
//! one seeded random generator ([`rng`]), bundles as files ([`bundle`]), report helpers that
//! work against an in-process hub and a hub in another process alike ([`reports`]), waiting
//! for a condition ([`wait`]), the proptest harness ([`fuzz`]) and the workspace binaries
//! built for tests that run them as processes ([`bins`]).
//!
//! A dev-dependency only; nothing here is a stand-in for a component users run.

#![warn(missing_docs)]

pub mod bins;
pub mod bundle;
pub mod fuzz;
pub mod postgres;
pub mod reports;
pub mod rng;
pub mod s3;
pub mod tools;
pub mod wait;

pub use rng::Rng;
