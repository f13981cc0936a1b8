//! The hub's transparency log, as plain functions over plain data.
//!
//! Every event of the hub is a leaf of an RFC 6962 Merkle tree, in event-seq order (leaf
//! index = seq − 1). The hub signs checkpoints (origin, size, root) as C2SP signed notes and
//! serves the tree as C2SP tlog-tiles; nodes, auditors and witnesses check what it serves
//! against the checkpoints they already hold. This crate is that arithmetic, shared by all of
//! them:
//!
//! - [`tree`]: leaf hashes, the stored hashes an append writes, roots, inclusion and
//!   consistency proofs, and [`tree::Frontier`], which re-derives a root from leaves alone.
//! - [`tiles`]: C2SP tlog-tiles paths, hash tiles and entry bundles.
//! - [`checkpoint`]: the log's signing key, signing and opening checkpoints, and witness
//!   cosignatures (C2SP tlog-cosignature, Ed25519).
//!
//! *Why these crates.* The hashing and proofs are `tlog_tiles` and the notes `signed_note`,
//! Cloudflare's ports of Go's `golang.org/x/mod/sumdb/tlog` and `note` packages (the code
//! the Go checksum database has run on since 2019), BSD-3-Clause. They do not cover C2SP's
//! tile paths (they produce the older `tile/8/...` layout of sumdb) or cosignatures; those
//! are small and here, checked against the specifications' examples.
//!
//! **Invariant:** no I/O; stored hashes come in through [`tlog_tiles::HashReader`].

pub mod checkpoint;
pub mod tiles;
pub mod tree;

/// The error a [`HashReader`] returns.
pub use tlog_tiles::Error as HashReaderError;
pub use tlog_tiles::{Hash, HashReader, EMPTY_HASH};

/// What went wrong with a proof, a checkpoint, a tile or the hashes behind them.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Input that cannot be a checkpoint, tile path, proof or key.
    #[error("malformed {what}: {why}")]
    Malformed {
        /// What was being read.
        what: &'static str,
        /// Why it was refused.
        why: String,
    },
    /// A proof does not lead to the root it claims.
    #[error("the proof does not match the checkpoint: {0}")]
    BadProof(String),
    /// Two views of the log that cannot both be true.
    #[error("the log is inconsistent: {0}")]
    Inconsistent(String),
    /// A signature is missing, unknown or invalid.
    #[error("checkpoint signature: {0}")]
    Signature(String),
    /// The stored hashes could not be read.
    #[error("reading stored hashes: {0}")]
    Hashes(String),
}

impl Error {
    pub(crate) fn malformed(what: &'static str, why: impl Into<String>) -> Self {
        Error::Malformed { what, why: why.into() }
    }
}

/// Result with the crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The commitment a leaf carries instead of free text that may hold personal data:
/// SHA-256(salt ‖ UTF-8 text). Empty text commits to nothing (an empty hash).
pub fn commit_text(salt: &[u8; 16], text: &str) -> Vec<u8> {
    use sha2::{Digest, Sha256};
    if text.is_empty() {
        return Vec::new();
    }
    let mut h = Sha256::new();
    h.update(salt);
    h.update(text.as_bytes());
    h.finalize().to_vec()
}
