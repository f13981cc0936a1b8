//! One file per gRPC service. Each handler: identify the caller, authorize (directly, or
//! through the registry where the decision needs stored ownership), parse the request into
//! domain types with `efa_proto::convert`, call the registry, convert the answer.

pub mod adoption;
pub mod catalog;
pub mod log;
pub mod release;
pub mod report;
pub mod rollout;
pub mod subscription;
