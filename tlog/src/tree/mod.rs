//! The RFC 6962 tree: leaf hashes, what an append stores, roots and proofs.
//!
//! Storage follows Go's sumdb/tlog: each leaf appends its own hash and the hash of every
//! subtree it completes, at [`stored_hash_index`]; that is 2 hashes per leaf on average, and
//! any root or proof is a handful of reads. Proof sizes and indexes from the wire are
//! checked here before they reach `tlog_tiles`, whose internals assert on them.

use crate::{Error, Hash, HashReader, Result};
pub use tlog_tiles::{node_hash, stored_hash_count, stored_hash_index};

/// The hash of a leaf: SHA-256(0x00 ‖ leaf), RFC 6962 section 2.1.
pub fn leaf_hash(leaf: &[u8]) -> Hash {
    tlog_tiles::record_hash(leaf)
}

/// The stored hashes that appending `leaves` (their [`leaf_hash`]es) to a tree of `size`
/// leaves writes, in order from `stored_hash_index(0, size)` on. `stored` reads the hashes
/// written before.
pub fn hashes_for_append(size: u64, leaves: &[Hash], stored: &impl HashReader) -> Result<Vec<Hash>> {
    let overlay = Overlay { base: stored, first: stored_hash_index(0, size), new: Vec::new() };
    let mut overlay = overlay;
    for (i, leaf) in leaves.iter().enumerate() {
        let n = size + i as u64;
        let hashes = tlog_tiles::stored_hashes_for_record_hash(n, *leaf, &overlay).map_err(hashes)?;
        overlay.new.extend(hashes);
    }
    Ok(overlay.new)
}

/// Reads hashes written before an append from `base`, and those of the append so far from `new`.
struct Overlay<'a, R> {
    base: &'a R,
    first: u64,
    new: Vec<Hash>,
}

impl<R: HashReader> HashReader for Overlay<'_, R> {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, tlog_tiles::Error> {
        let old: Vec<u64> = indexes.iter().copied().filter(|&i| i < self.first).collect();
        let mut from_base = self.base.read_hashes(&old)?.into_iter();
        indexes
            .iter()
            .map(|&i| match i.checked_sub(self.first) {
                None => from_base.next().ok_or(tlog_tiles::Error::IndexesNotInTree),
                Some(k) => self.new.get(k as usize).copied().ok_or(tlog_tiles::Error::IndexesNotInTree),
            })
            .collect()
    }
}

/// The root of the tree of the first `size` leaves.
pub fn root(size: u64, stored: &impl HashReader) -> Result<Hash> {
    tlog_tiles::tree_hash(size, stored).map_err(hashes)
}

/// The inclusion proof (RFC 6962 audit path) of leaf `index` in the tree of `size` leaves.
pub fn inclusion_proof(size: u64, index: u64, stored: &impl HashReader) -> Result<Vec<Hash>> {
    if index >= size {
        return Err(Error::BadProof(format!("leaf {index} is not in a tree of {size} leaves")));
    }
    tlog_tiles::prove_record(size, index, stored).map_err(hashes)
}

/// The consistency proof from the tree of `old_size` leaves to the tree of `new_size`.
pub fn consistency_proof(old_size: u64, new_size: u64, stored: &impl HashReader) -> Result<Vec<Hash>> {
    if old_size > new_size {
        return Err(Error::BadProof(format!("a tree of {old_size} leaves cannot precede one of {new_size}")));
    }
    if old_size == 0 || old_size == new_size {
        return Ok(Vec::new());
    }
    tlog_tiles::prove_tree(new_size, old_size, stored).map_err(hashes)
}

/// Longest proof a tree of 2^64 leaves needs; anything longer is refused before running it.
const MAX_PROOF: usize = 64;

/// A proof as it travels (a list of byte strings), checked to be at most [`MAX_PROOF`]
/// hashes of 32 bytes each, for every client that receives one.
pub fn proof_from_wire(hashes: &[Vec<u8>]) -> Result<Vec<Hash>> {
    if hashes.len() > MAX_PROOF {
        return Err(Error::malformed("proof", format!("{} hashes, more than any proof", hashes.len())));
    }
    hashes
        .iter()
        .map(|h| {
            <[u8; 32]>::try_from(h.as_slice())
                .map(Hash)
                .map_err(|_| Error::malformed("proof", "a hash is not 32 bytes"))
        })
        .collect()
}

/// Checks that `proof` shows leaf `index` with hash `leaf` in the tree of `size` leaves with `root`.
pub fn check_inclusion(proof: &[Hash], size: u64, root: Hash, index: u64, leaf: Hash) -> Result<()> {
    if index >= size {
        return Err(Error::BadProof(format!("leaf {index} is not in a tree of {size} leaves")));
    }
    if proof.len() > MAX_PROOF {
        return Err(Error::BadProof(format!("{} hashes is longer than any inclusion proof", proof.len())));
    }
    tlog_tiles::check_record(&proof.to_vec(), size, root, index, leaf)
        .map_err(|e| Error::BadProof(format!("leaf {index} in a tree of {size}: {e}")))
}

/// Checks that `proof` shows the tree (`old_size`, `old_root`) to be a prefix of
/// (`new_size`, `new_root`): the log only grew. Equal sizes must have equal roots.
pub fn check_consistency(proof: &[Hash], old_size: u64, old_root: Hash, new_size: u64, new_root: Hash) -> Result<()> {
    if old_size > new_size {
        return Err(Error::Inconsistent(format!(
            "the log shrank from {old_size} to {new_size} leaves (truncated or rolled back)"
        )));
    }
    if old_size == new_size {
        if old_root != new_root {
            return Err(Error::Inconsistent(format!(
                "two different roots for the same size {old_size}: {old_root} and {new_root} (a split view or a rewrite)"
            )));
        }
        return Ok(());
    }
    if old_size == 0 {
        return Ok(());
    }
    if proof.len() > MAX_PROOF {
        return Err(Error::BadProof(format!("{} hashes is longer than any consistency proof", proof.len())));
    }
    tlog_tiles::check_tree(&proof.to_vec(), new_size, new_root, old_size, old_root).map_err(|_| {
        Error::Inconsistent(format!(
            "the tree of {new_size} leaves does not extend the tree of {old_size} the log signed before (its history was rewritten)"
        ))
    })
}

/// The right edge of a tree being re-derived from its leaves alone (a "compact range"):
/// one hash per set bit of the size, so memory stays tiny for any size.
#[derive(Clone, Debug, Default)]
pub struct Frontier {
    /// Perfect subtrees from left to right, with their sizes (powers of two, decreasing).
    stack: Vec<(Hash, u64)>,
    size: u64,
}

impl Frontier {
    /// An empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// Leaves so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Appends a leaf by its [`leaf_hash`].
    pub fn push(&mut self, leaf: Hash) {
        let mut node = (leaf, 1u64);
        while let Some(&(left, n)) = self.stack.last() {
            if n != node.1 {
                break;
            }
            self.stack.pop();
            node = (node_hash(left, node.0), n * 2);
        }
        self.stack.push(node);
        self.size += 1;
    }

    /// The root of the leaves so far.
    pub fn root(&self) -> Hash {
        let mut it = self.stack.iter().rev();
        let Some(&(mut h, _)) = it.next() else { return crate::EMPTY_HASH };
        for &(left, _) in it {
            h = node_hash(left, h);
        }
        h
    }
}

/// Stored hashes kept in memory: what a test, a benchmark or a static mirror builds.
#[derive(Clone, Debug, Default)]
pub struct MemoryHashes(pub Vec<Hash>);

impl MemoryHashes {
    /// Appends leaves (by their [`leaf_hash`]es) to the tree of `self.leaves()` leaves.
    pub fn append(&mut self, leaves: &[Hash]) -> Result<()> {
        let size = self.leaves();
        let new = hashes_for_append(size, leaves, self)?;
        self.0.extend(new);
        Ok(())
    }

    /// How many leaves the stored hashes hold.
    pub fn leaves(&self) -> u64 {
        leaves_for_stored(self.0.len() as u64)
    }
}

impl HashReader for MemoryHashes {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, tlog_tiles::Error> {
        indexes.iter().map(|&i| self.0.get(i as usize).copied().ok_or(tlog_tiles::Error::IndexesNotInTree)).collect()
    }
}

/// The number of leaves whose stored hashes take `count` slots (the inverse of
/// [`stored_hash_count`]).
pub fn leaves_for_stored(count: u64) -> u64 {
    // stored_hash_count is increasing; a binary search over at most 2^63 leaves.
    let (mut lo, mut hi) = (0u64, count);
    while lo < hi {
        let mid = lo + (hi - lo).div_ceil(2);
        if stored_hash_count(mid) <= count {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    lo
}

fn hashes(e: tlog_tiles::Error) -> Error {
    Error::Hashes(e.to_string())
}

#[cfg(test)]
mod tests;
