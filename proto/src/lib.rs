//! The EfA Hub wire contract.
//!
//! Generated code for the `efa.v1` package lives in [`v1`]. Everything that crosses the
//! network is defined in `proto/efa/v1/*.proto`. Besides the contract this crate holds the
//! one mapping between wire messages and domain types ([`convert`]), the one table from
//! error kinds to gRPC codes and HTTP statuses ([`error`]) and the client mTLS setup
//! ([`tls`]); no domain logic.

#![warn(missing_docs)]

pub mod convert;
pub mod error;
pub mod tls;

#[allow(clippy::all, missing_docs)]
pub mod v1 {
    tonic::include_proto!("efa.v1");
}

/// Metadata key of a `FAILED_PRECONDITION` "resync needed" answer to `WatchEvents`: the
/// hub's head seq, from which a node resumes after reconciling from the catalog.
pub const RESYNC_HEAD_METADATA: &str = "x-efa-resync-head";

/// Encoded `FileDescriptorSet` of all `efa.v1` files, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/efa_descriptor.bin"));

#[cfg(test)]
mod tests {
    use prost::Message;

    #[test]
    fn descriptor_set_decodes_and_names_every_service() {
        let fds = prost_types::FileDescriptorSet::decode(super::FILE_DESCRIPTOR_SET).unwrap();
        let services: Vec<_> = fds.file.iter().flat_map(|f| f.service.iter().map(|s| s.name().to_string())).collect();
        for name in ["CatalogService", "ReleaseService", "SubscriptionService", "AdoptionService", "ReportService"] {
            assert!(services.iter().any(|s| s == name), "missing {name} in {services:?}");
        }
    }
}
