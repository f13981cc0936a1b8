//! # efa-node
//!
//! The agent a Kommune runs. It subscribes to EfA services, follows the hub's event stream
//! from a persisted cursor, verifies each release against the Land keys it trusts, deploys
//! it locally with the Kommune's own parameters, reports every state change back to the
//! hub, and lets the Kommune approve, reject and rate services.
//!
//! Modules by concern: [`hub`] is the network edge (the only module with wire types),
//! [`outbox`] the report queue, [`agent`] the run loop and update policy, [`fetch`] the
//! verified blob cache, [`deploy`] the local deployer, [`state`] `state.json`, [`status`]
//! and [`metrics`] what operators look at.
//!
//! **Architecture invariant:** no storage engine and no embedded register; the node
//! depends on `efa-domain` and `efa-proto`, not on `efa-registry`.

#![warn(missing_docs)]

pub mod agent;
pub mod config;
pub mod deploy;
pub mod error;
pub mod fetch;
pub mod hub;
pub mod metrics;
pub mod outbox;
pub mod state;
pub mod status;

pub use agent::{Agent, Handled};
pub use config::NodeConfig;
pub use error::NodeError;
