//! The one table from domain error kinds to transport codes: gRPC status codes for the
//! services, HTTP statuses for the dashboard. A refusal means the same on every transport.

use efa_domain::error::{Classify, ErrorKind};
use tonic::{Code, Status};

/// Longest message sent in a status: gRPC clients cap metadata at 8–16 KiB, and a longer
/// message would turn a helpful refusal into "metadata size exceeds hard limit".
pub const MAX_MESSAGE_BYTES: usize = 2048;

/// The gRPC code of a kind.
pub fn grpc_code(kind: ErrorKind) -> Code {
    code_and_status(kind).0
}

/// The HTTP status of a kind.
pub fn http_status(kind: ErrorKind) -> http::StatusCode {
    code_and_status(kind).1
}

fn code_and_status(kind: ErrorKind) -> (Code, http::StatusCode) {
    use http::StatusCode as H;
    match kind {
        ErrorKind::Invalid => (Code::InvalidArgument, H::BAD_REQUEST),
        ErrorKind::NotFound => (Code::NotFound, H::NOT_FOUND),
        ErrorKind::AlreadyExists => (Code::AlreadyExists, H::CONFLICT),
        ErrorKind::FailedPrecondition => (Code::FailedPrecondition, H::CONFLICT),
        ErrorKind::PermissionDenied => (Code::PermissionDenied, H::FORBIDDEN),
        ErrorKind::OutOfRange => (Code::OutOfRange, H::RANGE_NOT_SATISFIABLE),
        ErrorKind::ResourceExhausted => (Code::ResourceExhausted, H::TOO_MANY_REQUESTS),
        ErrorKind::Internal => (Code::Internal, H::INTERNAL_SERVER_ERROR),
        ErrorKind::Unavailable => (Code::Unavailable, H::SERVICE_UNAVAILABLE),
    }
}

/// Cuts `message` to at most [`MAX_MESSAGE_BYTES`] on a character boundary.
pub fn bounded(message: &str) -> String {
    if message.len() <= MAX_MESSAGE_BYTES {
        return message.to_string();
    }
    let mut end = MAX_MESSAGE_BYTES - 3;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &message[..end])
}

/// The message a caller may see for an error: its own words, or for internal errors a
/// pointer to the operator's log (details stay on the server).
pub fn public_message(e: &(impl Classify + ?Sized)) -> String {
    match e.kind() {
        ErrorKind::Internal => "internal error in the hub; the operator has the details in the hub log".into(),
        ErrorKind::Unavailable => format!("{}; try again shortly", bounded(&e.to_string())),
        _ => bounded(&e.to_string()),
    }
}

/// The gRPC status for an error. Internal errors are logged here with their details.
pub fn status(e: &(impl Classify + ?Sized)) -> Status {
    if e.kind() == ErrorKind::Internal {
        tracing::error!(error = %e, "internal error");
    }
    Status::new(grpc_code(e.kind()), public_message(e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_bounded_and_internal_details_stay_home() {
        let long = efa_domain::Error::invalid("comment", "x".repeat(100_000));
        let s = status(&long);
        assert_eq!(s.code(), Code::InvalidArgument);
        assert!(s.message().len() <= MAX_MESSAGE_BYTES);
        assert_eq!(http_status(ErrorKind::PermissionDenied), http::StatusCode::FORBIDDEN);
        assert_eq!(grpc_code(ErrorKind::ResourceExhausted), Code::ResourceExhausted);
    }
}
