//! The node's error type: what went wrong and what the Kommune can do about it.

use crate::deploy::DeployError;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("config {path}: {message}")]
    Config { path: PathBuf, message: String },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error(
        "state file {path} is damaged: {message}; move it aside to start over (the node then re-syncs from the hub)"
    )]
    State { path: PathBuf, message: String },
    #[error("hub refused ({:?}): {}", .0.code(), .0.message())]
    Hub(tonic::Status),
    #[error("{0}")]
    Connect(#[from] efa_proto::tls::ConnectError),
    #[error(transparent)]
    Domain(#[from] efa_registry::Error),
    #[error("release {service} {version} refused: {reason}")]
    Verification { service: String, version: String, reason: String },
    #[error("download of bundle file {file} failed: {reason}")]
    Download { file: String, reason: String },
    #[error(transparent)]
    Deploy(#[from] DeployError),
    #[error("{0}")]
    Usage(String),
}

impl From<tonic::Status> for NodeError {
    fn from(s: tonic::Status) -> Self {
        NodeError::Hub(s)
    }
}

impl NodeError {
    /// Errors worth retrying later (the hub or network was away), as opposed to a release
    /// or config that will not get better by trying again.
    pub fn is_transient(&self) -> bool {
        match self {
            NodeError::Hub(s) => matches!(
                s.code(),
                tonic::Code::Unavailable
                    | tonic::Code::DeadlineExceeded
                    | tonic::Code::Cancelled
                    | tonic::Code::Unknown
                    | tonic::Code::Aborted
            ),
            NodeError::Connect(_) => true,
            NodeError::Download { reason, .. } => reason.contains("resumes"),
            _ => false,
        }
    }

    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        NodeError::Io { path: path.into(), source }
    }
}

pub type Result<T, E = NodeError> = std::result::Result<T, E>;
