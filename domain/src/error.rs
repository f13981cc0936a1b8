//! The domain's error type and the coarse [`ErrorKind`] every transport maps from.
//!
//! `efa-proto` holds the one table from [`ErrorKind`] to gRPC codes and HTTP statuses, so a
//! refusal means the same on the wire and in the dashboard.

use thiserror::Error;

/// Result with the domain [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A broken domain rule, with a message the caller can act on.
#[derive(Debug, Error)]
pub enum Error {
    /// Input that breaks a domain rule (format, range, schema).
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// What was wrong, e.g. `AGS`.
        field: &'static str,
        /// Why, and what would be right.
        reason: String,
    },
    /// Something named does not exist.
    #[error("{0} not found")]
    NotFound(String),
    /// Something that may exist only once exists already.
    #[error("{0}")]
    AlreadyExists(String),
    /// The request is well-formed but the current state does not allow it.
    #[error("{0}")]
    FailedPrecondition(String),
    /// The caller may not do this.
    #[error("not allowed: {0}")]
    PermissionDenied(String),
    /// A position beyond what exists yet (e.g. a log size beyond the newest checkpoint);
    /// asking again later may work.
    #[error("{0}")]
    OutOfRange(String),
}

/// Coarse classification of an error, for transports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// Bad input.
    Invalid,
    /// Unknown name.
    NotFound,
    /// Exists already.
    AlreadyExists,
    /// Not now, in this state.
    FailedPrecondition,
    /// Not this caller.
    PermissionDenied,
    /// Beyond what exists yet.
    OutOfRange,
    /// A caller exceeded a limit; trying later may work.
    ResourceExhausted,
    /// The server could not do its part (storage, I/O); details are in its log.
    Internal,
    /// A dependency (database, object store) is away for now; retrying may work.
    Unavailable,
}

/// Errors that can say which [`ErrorKind`] they are, so one mapping serves them all.
pub trait Classify: std::fmt::Display {
    /// The coarse kind of this error.
    fn kind(&self) -> ErrorKind;
}

impl Error {
    /// An [`Error::Invalid`] for `field`.
    pub fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Error::Invalid { field, reason: reason.into() }
    }
}

impl Classify for Error {
    fn kind(&self) -> ErrorKind {
        match self {
            Error::Invalid { .. } => ErrorKind::Invalid,
            Error::NotFound(_) => ErrorKind::NotFound,
            Error::AlreadyExists(_) => ErrorKind::AlreadyExists,
            Error::FailedPrecondition(_) => ErrorKind::FailedPrecondition,
            Error::PermissionDenied(_) => ErrorKind::PermissionDenied,
            Error::OutOfRange(_) => ErrorKind::OutOfRange,
        }
    }
}

/// The first characters of a value that came from outside, for an error message: an
/// echoed value of a megabyte would not fit into a gRPC status (clients cap metadata at
/// 8–16 KiB) and helps nobody. Longer values are cut and their length is named.
pub fn echo(value: &str) -> String {
    const MAX_CHARS: usize = 64;
    let n = value.chars().count();
    if n <= MAX_CHARS {
        format!("{value:?}")
    } else {
        let head: String = value.chars().take(MAX_CHARS).collect();
        format!("{head:?}… ({n} characters)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_values_are_cut_and_their_length_named() {
        assert_eq!(echo("05913000"), "\"05913000\"");
        let long = "x".repeat(1_000_000);
        let e = echo(&long);
        assert!(e.len() < 100 && e.contains("1000000 characters"), "{e}");
    }
}
