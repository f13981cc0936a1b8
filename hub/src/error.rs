//! The one mapping from domain errors to gRPC status codes.

use efa_registry::{Error, ErrorKind};
use tonic::{Code, Status};

pub fn code_for(kind: ErrorKind) -> Code {
    match kind {
        ErrorKind::Invalid => Code::InvalidArgument,
        ErrorKind::NotFound => Code::NotFound,
        ErrorKind::AlreadyExists => Code::AlreadyExists,
        ErrorKind::FailedPrecondition => Code::FailedPrecondition,
        ErrorKind::PermissionDenied => Code::PermissionDenied,
        ErrorKind::Internal => Code::Internal,
    }
}

/// Converts a registry error. Internal details are logged, not sent.
pub fn status(e: Error) -> Status {
    let code = code_for(e.kind());
    if code == Code::Internal {
        tracing::error!(error = %e, "internal error");
        return Status::internal("internal error in the hub; the operator has the details in the hub log");
    }
    Status::new(code, e.to_string())
}

/// Shorthand for parsing a wire string into a validated domain type.
pub fn parse<T>(s: &str) -> Result<T, Status>
where
    T: std::str::FromStr<Err = Error>,
{
    s.parse().map_err(status)
}

impl From<crate::blobs::BlobError> for Status {
    fn from(e: crate::blobs::BlobError) -> Self {
        match e {
            crate::blobs::BlobError::DigestMismatch { .. } => Status::invalid_argument(e.to_string()),
            crate::blobs::BlobError::Io { .. } => {
                tracing::error!(error = %e, "blob store failure");
                Status::internal("the hub could not store the bundle; the operator has the details in the hub log")
            }
        }
    }
}
