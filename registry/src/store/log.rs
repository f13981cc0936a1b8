//! What a store keeps of the transparency log (see `efa_tlog`): the leaves, the tree's
//! stored hashes, the signed checkpoints and the free text kept beside the leaves.
//!
//! The leaves are the events, encoded once (`efa_proto::convert::log_leaf`), so the log
//! outlives event retention. Appends come from one integrator at a time (under a lease) and
//! are atomic: leaves, hashes and texts together, only at the log's current size.

use crate::error::Result;

/// 32-byte hash of the tree.
pub type LogHash = [u8; 32];

/// Free text kept beside leaf `index`: its salt and the text the leaf commits to.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Beside {
    /// The leaf.
    pub index: u64,
    /// The salt of the leaf's commitment.
    pub salt: [u8; 16],
    /// The text.
    pub text: String,
}

/// The transparency log's storage; every [`Store`](super::Store) has it.
pub trait LogStore {
    /// Leaves in the log.
    fn log_size(&self) -> Result<u64>;
    /// Appends `leaves` at index `size` (which must be the log's size: `FailedPrecondition`
    /// otherwise), with the tree's stored `hashes` from stored-hash index
    /// `stored_hash_index(0, size)` on and the texts kept beside them, atomically.
    /// `releases` names the leaves that publish a release (`"service version"`, index), so
    /// a node can ask for a release's leaf by name.
    fn append_log(
        &self,
        size: u64,
        leaves: &[Vec<u8>],
        hashes: &[LogHash],
        beside: &[Beside],
        releases: &[(String, u64)],
    ) -> Result<()>;
    /// Makes the log's writes so far durable (the store's `flush` need not cover them: the
    /// integrator writes the log off the commit thread).
    fn flush_log(&self) -> Result<()>;
    /// The index of the leaf that published release `"service version"`, once logged.
    fn release_leaf(&self, release: &str) -> Result<Option<u64>>;
    /// The stored hashes at `indexes` (`NotFound` if one is not stored).
    fn log_hashes(&self, indexes: &[u64]) -> Result<Vec<LogHash>>;
    /// Leaves `from..to` (fewer if the log is shorter).
    fn log_leaves(&self, from: u64, to: u64) -> Result<Vec<Vec<u8>>>;
    /// Stores the signed checkpoint of the tree of `size` leaves (replacing one of that size:
    /// cosignatures were added).
    fn put_checkpoint(&self, size: u64, note: &[u8]) -> Result<()>;
    /// The signed checkpoint of the tree of `size` leaves, if one was signed.
    fn checkpoint(&self, size: u64) -> Result<Option<Vec<u8>>>;
    /// The newest signed checkpoint and its size.
    fn latest_checkpoint(&self) -> Result<Option<(u64, Vec<u8>)>>;
    /// The text kept beside leaf `index`, unless there is none or it was erased.
    fn beside_text(&self, index: u64) -> Result<Option<Beside>>;
    /// The texts kept beside leaves `from..to`, in index order (for copying a store).
    fn beside_texts(&self, from: u64, to: u64) -> Result<Vec<Beside>>;
    /// Every logged release and its leaf (for copying a store).
    fn log_releases(&self) -> Result<Vec<(String, u64)>>;
    /// Erases the text kept beside leaf `index` (an erasure request); true if there was one.
    fn erase_beside_text(&self, index: u64) -> Result<bool>;
}
