//! # efa-registry
//!
//! The rules of EfA Hub that need stored state, and the storage they sit on: the
//! [`Registry`] (ownership, immutable versions, the adoption ledger, reports), the commit
//! thread that makes every write durable in batches, the [`store::Store`] trait with its
//! sled backend and migrations, and the import of the Destatis register and the OZG/LeiKa
//! catalogues.
//!
//! **Architecture invariant:** no tonic, prost or sockets; it can be driven from a test
//! without a network. The domain types and pure rules come from `efa-domain`.

#![warn(missing_docs)]

mod commit;
pub mod error;
pub mod import;
pub mod registry;
pub mod store;

pub use error::{Error, Result};
pub use registry::{BlobSource, NewLeaf, Registry, RolloutAction, RolloutController, MAX_APPEND};
