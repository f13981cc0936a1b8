//! One file per gRPC service. Each handler: identify the caller, authorize, parse the
//! request into domain types, call the registry, convert the answer.

pub mod adoption;
pub mod catalog;
pub mod release;
pub mod report;
pub mod subscription;
