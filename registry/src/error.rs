//! The registry's error: a broken domain rule, or a storage failure the caller cannot fix.

use efa_domain::error::{Classify, ErrorKind};
use thiserror::Error;

/// Result with the registry [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong in the registry.
#[derive(Debug, Error)]
pub enum Error {
    /// A domain rule refused the request; the message says why.
    #[error(transparent)]
    Domain(#[from] efa_domain::Error),
    /// A register or catalogue file did not parse.
    #[error(transparent)]
    Import(#[from] crate::import::ImportError),
    /// The storage engine failed.
    #[error("storage error: {0}")]
    Storage(String),
    /// The database is away for now (restarting, unreachable); trying again may work.
    #[error("{0}")]
    Unavailable(String),
    /// A stored record does not decode.
    #[error("corrupt record in {tree}: {reason}")]
    Corrupt {
        /// The tree (table) holding it.
        tree: &'static str,
        /// What the decoder said.
        reason: String,
    },
    /// A file of the store could not be read or written.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// A domain [`efa_domain::Error::Invalid`].
    pub fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        efa_domain::Error::invalid(field, reason).into()
    }
    /// A domain [`efa_domain::Error::NotFound`].
    pub fn not_found(what: impl Into<String>) -> Self {
        efa_domain::Error::NotFound(what.into()).into()
    }
    /// A domain [`efa_domain::Error::AlreadyExists`].
    pub fn already_exists(what: impl Into<String>) -> Self {
        efa_domain::Error::AlreadyExists(what.into()).into()
    }
    /// A domain [`efa_domain::Error::OutOfRange`].
    pub fn out_of_range(why: impl Into<String>) -> Self {
        efa_domain::Error::OutOfRange(why.into()).into()
    }
    /// A domain [`efa_domain::Error::FailedPrecondition`].
    pub fn failed_precondition(why: impl Into<String>) -> Self {
        efa_domain::Error::FailedPrecondition(why.into()).into()
    }
    /// An I/O failure on `path`.
    pub fn io(path: impl AsRef<std::path::Path>, source: std::io::Error) -> Self {
        Error::Io { path: path.as_ref().display().to_string(), source }
    }
}

impl Classify for Error {
    fn kind(&self) -> ErrorKind {
        match self {
            Error::Domain(e) => e.kind(),
            Error::Import(_) => ErrorKind::Invalid,
            Error::Storage(_) | Error::Corrupt { .. } | Error::Io { .. } => ErrorKind::Internal,
            Error::Unavailable(_) => ErrorKind::Unavailable,
        }
    }
}

impl From<sled::Error> for Error {
    fn from(e: sled::Error) -> Self {
        Error::Storage(e.to_string())
    }
}
