//! The node's error type: what went wrong and what the Kommune can do about it.

use crate::deploy::DeployError;
use crate::hub::HubError;
use std::path::PathBuf;

/// Why a node operation did not happen.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The node config is unusable.
    #[error("config {path}: {message}")]
    Config {
        /// The config file.
        path: PathBuf,
        /// What is wrong, with line and column where TOML knows them.
        message: String,
    },
    /// A local file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// `state.json` does not parse.
    #[error(
        "state file {path} is damaged: {message}; move it aside to start over (the node then re-syncs from the hub)"
    )]
    State {
        /// The state file.
        path: PathBuf,
        /// What the parser said.
        message: String,
    },
    /// A call to the hub failed.
    #[error(transparent)]
    Hub(#[from] HubError),
    /// The hub's address or the TLS files are unusable.
    #[error("{0}")]
    Connect(#[from] efa_proto::tls::ConnectError),
    /// A value breaks a domain rule.
    #[error(transparent)]
    Domain(#[from] efa_domain::Error),
    /// The hub's transparency log contradicts what the node verified before; deploys stop
    /// until an operator has looked (`efa-node log-reset`).
    #[error("transparency log alarm: {0}; deploys are stopped until an operator checks the hub and runs `efa-node log-reset`")]
    LogAlarm(String),
    /// A release failed verification and is not deployed.
    #[error("release {service} {version} refused: {reason}")]
    Verification {
        /// The service.
        service: String,
        /// The version.
        version: String,
        /// Why it is not trusted.
        reason: String,
    },
    /// A download was interrupted; it resumes on the next attempt.
    #[error("download of {file} stopped after {got} of {size} bytes; it resumes on the next attempt")]
    DownloadInterrupted {
        /// The file (or chunk) being downloaded.
        file: String,
        /// Bytes received so far.
        got: u64,
        /// Bytes the manifest declares.
        size: u64,
    },
    /// A download delivered content that does not match the signed manifest; it was discarded.
    #[error("download of bundle file {file} failed: {reason}")]
    Download {
        /// The file (or chunk).
        file: String,
        /// What did not match.
        reason: String,
    },
    /// The offer of a service the hub served is not the Kommune's own Land's, validly signed.
    #[error("offer of {service} refused: {reason}")]
    Offer {
        /// The service.
        service: String,
        /// Why it is not trusted.
        reason: String,
    },
    /// The Kommune's parameters for a service do not fit the release's schema.
    #[error("{config}: [services.{service}.parameters]: {problems}")]
    Parameters {
        /// The config file (or "the node config").
        config: String,
        /// The service.
        service: String,
        /// Every problem at once.
        problems: String,
    },
    /// Deploying failed.
    #[error(transparent)]
    Deploy(#[from] DeployError),
    /// A background task of the node died.
    #[error("internal task failed: {0}")]
    Task(String),
    /// The command cannot do what was asked.
    #[error("{0}")]
    Usage(String),
}

impl NodeError {
    /// Errors worth retrying later (the hub or network was away), as opposed to a release
    /// or config that will not get better by trying again.
    pub fn is_transient(&self) -> bool {
        match self {
            NodeError::Hub(e) => e.is_transient(),
            NodeError::Connect(_) | NodeError::DownloadInterrupted { .. } => true,
            _ => false,
        }
    }

    /// An I/O error on `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        NodeError::Io { path: path.into(), source }
    }
}

/// Result with the node's error.
pub type Result<T, E = NodeError> = std::result::Result<T, E>;
