//! # efa-node
//!
//! The agent a Kommune runs. It subscribes to EfA services, follows the hub's event stream
//! from a persisted cursor, verifies each release against the Land keys it trusts, deploys
//! it locally with the Kommune's own parameters, reports every state change back to the
//! hub, and lets the Kommune approve, reject and rate services.

pub mod agent;
pub mod config;
pub mod deploy;
pub mod error;
pub mod fetch;
pub mod metrics;
pub mod state;
pub mod status;

pub use agent::{Agent, Handled};
pub use config::NodeConfig;
pub use error::NodeError;
