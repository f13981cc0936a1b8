//! Hub errors at the gRPC edge. The code of every domain and registry error comes from the
//! one table in [`efa_proto::error`].

use efa_domain::error::Classify;
use tonic::Status;

/// The gRPC status of a domain or registry error (internal details are logged, not sent).
pub fn status(e: impl Classify) -> Status {
    efa_proto::error::status(&e)
}

impl From<crate::blobs::BlobError> for Status {
    fn from(e: crate::blobs::BlobError) -> Self {
        match e {
            crate::blobs::BlobError::DigestMismatch { .. } => Status::invalid_argument(e.to_string()),
            crate::blobs::BlobError::Remote { .. } => {
                tracing::error!(error = %e, "object storage failure");
                Status::unavailable("the hub's object storage is unreachable; nothing was stored; retry later")
            }
            crate::blobs::BlobError::Io { .. } | crate::blobs::BlobError::Config(_) => {
                tracing::error!(error = %e, "blob store failure");
                Status::internal("the hub could not store the bundle; the operator has the details in the hub log")
            }
        }
    }
}
