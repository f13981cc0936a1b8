//! The transparency log on sled: trees keyed by big-endian u64 (leaf index, stored-hash
//! index, checkpoint size, leaf index) and release names. An append writes one atomic batch
//! per tree, the leaves last; the log's size is the last leaf's index + 1, so it can never
//! disagree with the leaves.

use super::SledStore;
use crate::error::{Error, Result};
use crate::store::codec::{decode, encode};
use crate::store::log::{Beside, LogHash, LogStore};

pub(super) struct LogTrees {
    /// The log's own database (`<store>/tlog`): flushed by the integrator, never by the
    /// commit thread.
    db: sled::Db,
    leaves: sled::Tree,
    hashes: sled::Tree,
    checkpoints: sled::Tree,
    beside: sled::Tree,
    releases: sled::Tree,
}

impl LogTrees {
    pub(super) fn open(db: sled::Db) -> Result<Self> {
        Ok(LogTrees {
            leaves: db.open_tree("log_leaves")?,
            hashes: db.open_tree("log_hashes")?,
            checkpoints: db.open_tree("log_checkpoints")?,
            beside: db.open_tree("log_beside")?,
            releases: db.open_tree("log_releases")?,
            db,
        })
    }
}

fn index_of(key: &[u8]) -> Result<u64> {
    key.try_into().map(u64::from_be_bytes).map_err(|_| Error::Storage("a log key is not 8 bytes".into()))
}

impl LogStore for SledStore {
    fn log_size(&self) -> Result<u64> {
        Ok(match self.log.leaves.last()? {
            Some((k, _)) => index_of(&k)? + 1,
            None => 0,
        })
    }

    fn append_log(
        &self,
        size: u64,
        leaves: &[Vec<u8>],
        hashes: &[LogHash],
        beside: &[Beside],
        releases: &[(String, u64)],
    ) -> Result<()> {
        let t = &self.log;
        // The leaf at `size` must be the first one missing (one integrator appends; this
        // catches a caller that lost count).
        let have = self.log_size()?;
        if have != size {
            return Err(Error::failed_precondition(format!("the log is at size {have}, not {size}")));
        }
        // No multi-tree transaction: each tree takes one atomic batch, the leaves last. The
        // leaves are the commit point (the log's size is the last leaf + 1), so a crash
        // before them leaves only hashes, texts and names beyond the log, which the next
        // append at the same size overwrites.
        let mut batch = sled::Batch::default();
        for text in beside {
            batch.insert(&text.index.to_be_bytes(), encode(text));
        }
        t.beside.apply_batch(batch)?;
        let mut batch = sled::Batch::default();
        for (release, index) in releases {
            batch.insert(release.as_bytes(), &index.to_be_bytes());
        }
        t.releases.apply_batch(batch)?;
        let first_hash = efa_tlog::tree::stored_hash_index(0, size);
        let mut batch = sled::Batch::default();
        for (i, hash) in hashes.iter().enumerate() {
            batch.insert(&(first_hash + i as u64).to_be_bytes(), &hash[..]);
        }
        t.hashes.apply_batch(batch)?;
        let mut batch = sled::Batch::default();
        for (i, leaf) in leaves.iter().enumerate() {
            batch.insert(&(size + i as u64).to_be_bytes(), leaf.as_slice());
        }
        t.leaves.apply_batch(batch)?;
        Ok(())
    }

    fn release_leaf(&self, release: &str) -> Result<Option<u64>> {
        self.log.releases.get(release.as_bytes())?.map(|v| index_of(&v)).transpose()
    }

    fn flush_log(&self) -> Result<()> {
        self.log.db.flush()?;
        Ok(())
    }

    fn log_hashes(&self, indexes: &[u64]) -> Result<Vec<LogHash>> {
        indexes
            .iter()
            .map(|i| {
                let v =
                    self.log.hashes.get(i.to_be_bytes())?.ok_or_else(|| Error::not_found(format!("log hash {i}")))?;
                v.as_ref().try_into().map_err(|_| Error::Storage(format!("log hash {i} is not 32 bytes")))
            })
            .collect()
    }

    fn log_leaves(&self, from: u64, to: u64) -> Result<Vec<Vec<u8>>> {
        if from >= to {
            return Ok(Vec::new());
        }
        self.log.leaves.range(from.to_be_bytes()..to.to_be_bytes()).values().map(|v| Ok(v?.to_vec())).collect()
    }

    fn put_checkpoint(&self, size: u64, note: &[u8]) -> Result<()> {
        self.log.checkpoints.insert(size.to_be_bytes(), note)?;
        Ok(())
    }

    fn checkpoint(&self, size: u64) -> Result<Option<Vec<u8>>> {
        Ok(self.log.checkpoints.get(size.to_be_bytes())?.map(|v| v.to_vec()))
    }

    fn latest_checkpoint(&self) -> Result<Option<(u64, Vec<u8>)>> {
        self.log.checkpoints.last()?.map(|(k, v)| Ok((index_of(&k)?, v.to_vec()))).transpose()
    }

    fn beside_text(&self, index: u64) -> Result<Option<Beside>> {
        self.log.beside.get(index.to_be_bytes())?.map(|v| decode("log_beside", &v)).transpose()
    }

    fn beside_texts(&self, from: u64, to: u64) -> Result<Vec<Beside>> {
        if from >= to {
            return Ok(Vec::new());
        }
        self.log
            .beside
            .range(from.to_be_bytes()..to.to_be_bytes())
            .values()
            .map(|v| decode("log_beside", &v?))
            .collect()
    }

    fn log_releases(&self) -> Result<Vec<(String, u64)>> {
        self.log
            .releases
            .iter()
            .map(|kv| {
                let (k, v) = kv?;
                Ok((String::from_utf8_lossy(&k).into_owned(), index_of(&v)?))
            })
            .collect()
    }

    fn erase_beside_text(&self, index: u64) -> Result<bool> {
        Ok(self.log.beside.remove(index.to_be_bytes())?.is_some())
    }
}
