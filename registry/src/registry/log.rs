//! The transparency log on top of the store: appending encoded leaves with their stored
//! hashes, checkpoints, proofs and tiles. What a leaf holds is the hub's business
//! (`efa_proto::convert::log_leaf`); the arithmetic is `efa_tlog`'s.

use super::Registry;
use crate::error::{Error, Result};
use crate::store::{Beside, LogHash, Store};
use efa_tlog::tiles::TilePath;
use efa_tlog::{Hash, HashReader};

/// Most leaves one append takes, so an integrator catching up on a large store commits in
/// bounded steps.
pub const MAX_APPEND: usize = 4096;

/// The store's stored hashes, as `efa_tlog` reads them.
pub(crate) struct StoredHashes<'a>(pub(crate) &'a dyn Store);

impl HashReader for StoredHashes<'_> {
    fn read_hashes(&self, indexes: &[u64]) -> std::result::Result<Vec<Hash>, efa_tlog::HashReaderError> {
        self.0
            .log_hashes(indexes)
            .map(|hs| hs.into_iter().map(Hash).collect())
            .map_err(|e| efa_tlog::HashReaderError::InvalidInput(e.to_string()))
    }
}

fn tlog(e: efa_tlog::Error) -> Error {
    match e {
        efa_tlog::Error::BadProof(why) | efa_tlog::Error::Malformed { why, .. } => Error::invalid("log", why),
        other => Error::Storage(other.to_string()),
    }
}

/// A leaf to append: its bytes and the text kept beside it, if any.
pub struct NewLeaf {
    /// The encoded leaf.
    pub leaf: Vec<u8>,
    /// The salt and text the leaf commits to.
    pub beside: Option<([u8; 16], String)>,
    /// The release it publishes (`"service version"`), so nodes can ask for its leaf.
    pub release: Option<String>,
}

/// The setting naming the verifier key of the log's checkpoints.
const LOG_KEY_SETTING: &str = "log_verifier_key";

impl Registry {
    /// Claims the log for the key `verifier_key` on first use; afterwards refuses any other
    /// key (`FailedPrecondition`): replicas of one hub must sign with one key.
    pub fn claim_log_key(&self, verifier_key: &str) -> Result<()> {
        if self.store.meta(LOG_KEY_SETTING)?.as_deref() == Some(verifier_key) {
            return Ok(());
        }
        let mine = verifier_key.to_string();
        self.commits.write(move |s| match s.meta(LOG_KEY_SETTING)? {
            None => s.put_meta(LOG_KEY_SETTING, &mine),
            Some(k) if k == mine => Ok(()),
            Some(k) => Err(Error::failed_precondition(format!(
                "this hub's log key ({mine}) is not the key of the log it stores ({k}); every replica must use the \
                 same log_key file, and a hub's key must never be replaced (nodes would raise the alarm)"
            ))),
        })
    }

    /// Leaves in the log.
    pub fn log_size(&self) -> Result<u64> {
        self.store.log_size()
    }

    /// Appends `leaves` at `size` (the log's size; refused otherwise) and returns the new
    /// size and root. The hashes are computed here, off the commit thread, from the hashes
    /// stored before; only the integrator (one at a time, under a lease) appends.
    pub fn append_log(&self, size: u64, leaves: Vec<NewLeaf>) -> Result<(u64, Hash)> {
        if leaves.len() > MAX_APPEND {
            return Err(Error::invalid("log append", format!("{} leaves, at most {MAX_APPEND}", leaves.len())));
        }
        let reader = StoredHashes(self.store.as_ref());
        let leaf_hashes: Vec<Hash> = leaves.iter().map(|l| efa_tlog::tree::leaf_hash(&l.leaf)).collect();
        let hashes: Vec<LogHash> = efa_tlog::tree::hashes_for_append(size, &leaf_hashes, &reader)
            .map_err(tlog)?
            .into_iter()
            .map(|h| h.0)
            .collect();
        let beside: Vec<Beside> = leaves
            .iter()
            .enumerate()
            .filter_map(|(i, l)| {
                l.beside.as_ref().map(|(salt, text)| Beside { index: size + i as u64, salt: *salt, text: text.clone() })
            })
            .collect();
        let releases: Vec<(String, u64)> =
            leaves.iter().enumerate().filter_map(|(i, l)| l.release.clone().map(|r| (r, size + i as u64))).collect();
        let bytes: Vec<Vec<u8>> = leaves.into_iter().map(|l| l.leaf).collect();
        let new_size = size + bytes.len() as u64;
        // Not through the commit thread: only the integrator writes the log's own trees (or
        // tables), so nothing conflicts, and writers' commits do not wait behind an append
        // of thousands of leaves. Durable before its checkpoint is signed.
        self.store.append_log(size, &bytes, &hashes, &beside, &releases)?;
        self.store.flush_log()?;
        Ok((new_size, self.log_root(new_size)?))
    }

    /// The root of the tree of the first `size` leaves.
    pub fn log_root(&self, size: u64) -> Result<Hash> {
        efa_tlog::tree::root(size, &StoredHashes(self.store.as_ref())).map_err(tlog)
    }

    /// Stores a signed checkpoint (or the same one with cosignatures added).
    /// Not flushed: a checkpoint lost in a crash is signed again, identically, from the
    /// leaves (which `append_log` made durable) before the hub serves anything; see
    /// `flush_log` for what must survive on its own (a witness's cosignature).
    pub fn put_checkpoint(&self, size: u64, note: Vec<u8>) -> Result<()> {
        // As `append_log`: the integrator's own table, written off the commit thread.
        self.store.put_checkpoint(size, &note)
    }

    /// Makes the log's writes durable.
    pub fn flush_log(&self) -> Result<()> {
        self.store.flush_log()
    }

    /// The newest signed checkpoint and its size.
    pub fn latest_checkpoint(&self) -> Result<Option<(u64, Vec<u8>)>> {
        self.store.latest_checkpoint()
    }

    /// The signed checkpoint of the tree of `size` leaves.
    pub fn checkpoint(&self, size: u64) -> Result<Option<Vec<u8>>> {
        self.store.checkpoint(size)
    }

    /// The size of the newest checkpoint: proofs and tiles are served up to it only, so
    /// nobody is shown a tree the log has not signed.
    fn signed_size(&self) -> Result<u64> {
        Ok(self.store.latest_checkpoint()?.map(|(size, _)| size).unwrap_or(0))
    }

    fn check_signed(&self, size: u64) -> Result<()> {
        let signed = self.signed_size()?;
        if size > signed {
            return Err(Error::out_of_range(format!("the newest checkpoint has {signed} leaves, not {size}")));
        }
        Ok(())
    }

    /// Leaf `index` and its inclusion proof in the tree of `size` leaves.
    pub fn inclusion_proof(&self, index: u64, size: u64) -> Result<(Vec<u8>, Vec<Hash>)> {
        self.check_signed(size)?;
        if index >= size {
            return Err(Error::out_of_range(format!("leaf {index} is not in a tree of {size} leaves")));
        }
        let leaf =
            self.store.log_leaves(index, index + 1)?.pop().ok_or_else(|| Error::not_found(format!("leaf {index}")))?;
        let proof = efa_tlog::tree::inclusion_proof(size, index, &StoredHashes(self.store.as_ref())).map_err(tlog)?;
        Ok((leaf, proof))
    }

    /// The leaf that published `service` `version` and its inclusion proof in the tree of
    /// `size` leaves; `OutOfRange` while the release is not yet in that tree.
    pub fn release_inclusion_proof(
        &self,
        service: &str,
        version: &str,
        size: u64,
    ) -> Result<(u64, Vec<u8>, Vec<Hash>)> {
        let name = format!("{service} {version}");
        let index = self.store.release_leaf(&name)?.ok_or_else(|| {
            Error::out_of_range(format!("release {service} {version} is not in the log yet (or does not exist)"))
        })?;
        let (leaf, proof) = self.inclusion_proof(index, size)?;
        Ok((index, leaf, proof))
    }

    /// The consistency proof from the tree of `old` leaves to the tree of `new` leaves.
    pub fn consistency_proof(&self, old: u64, new: u64) -> Result<Vec<Hash>> {
        if old > new {
            return Err(Error::invalid("old_size", format!("{old} is larger than new_size {new}")));
        }
        self.check_signed(new)?;
        efa_tlog::tree::consistency_proof(old, new, &StoredHashes(self.store.as_ref())).map_err(tlog)
    }

    /// A file of the C2SP tlog-tiles layout of the newest checkpoint's tree.
    pub fn log_tile(&self, path: &str) -> Result<(TilePath, Vec<u8>)> {
        let tile = TilePath::parse(path).map_err(|e| Error::invalid("path", e.to_string()))?;
        let size = self.signed_size()?;
        if !tile.within(size) {
            return Err(Error::out_of_range(format!("{tile} is not a tile of the newest checkpoint's {size} leaves")));
        }
        let data = match tile {
            TilePath::Hashes { level, index, width } => {
                efa_tlog::tiles::hash_tile(level, index, width, &StoredHashes(self.store.as_ref())).map_err(tlog)?
            }
            TilePath::Entries { index, width } => {
                let first = index * efa_tlog::tiles::WIDTH;
                let leaves = self.store.log_leaves(first, first + u64::from(width))?;
                efa_tlog::tiles::entry_bundle(&leaves).map_err(tlog)?
            }
        };
        Ok((tile, data))
    }

    /// The text kept beside leaf `index`.
    pub fn beside_text(&self, index: u64) -> Result<Option<Beside>> {
        self.store.beside_text(index)
    }

    /// Erases the text kept beside leaf `index` (an erasure request); the leaf keeps its
    /// commitment, which nothing can open any more.
    pub fn erase_beside_text(&self, index: u64) -> Result<bool> {
        let size = self.log_size()?;
        if index >= size {
            return Err(Error::out_of_range(format!("leaf {index} is beyond the log's {size} leaves")));
        }
        let erased = self.store.erase_beside_text(index)?;
        self.store.flush_log()?;
        Ok(erased)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_is_claimed_by_one_key_and_refuses_another() {
        let reg = Registry::new(std::sync::Arc::new(crate::store::SledStore::temporary().unwrap()));
        reg.claim_log_key("efa-hub.test/log+00000001+AQ").unwrap();
        reg.claim_log_key("efa-hub.test/log+00000001+AQ").unwrap();
        let e = reg.claim_log_key("efa-hub.test/log+00000002+AQ").unwrap_err();
        assert!(e.to_string().contains("same log_key file"), "{e}");
    }
}
