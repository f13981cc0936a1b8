//! The transparency log on sled, in tile-sized values: leaves as C2SP entry bundles of 256
//! (`L` + bundle index) and the stored hashes in chunks of 256 (`H` + chunk index), with the
//! log's size under `N`, all in one tree, so an append is one atomic batch of a few values
//! (the partial bundle and chunk rewritten, new ones added) instead of three inserts per
//! leaf. Texts kept beside leaves, release names and checkpoints are trees of their own.

use super::SledStore;
use crate::error::{Error, Result};
use crate::store::codec::{decode, encode};
use crate::store::log::{Beside, LogHash, LogStore};
use efa_tlog::tiles::{entry_bundle, parse_entry_bundle, WIDTH};

pub(super) struct LogTrees {
    /// The log's own database (`<store>/tlog`): flushed by the integrator, never by the
    /// commit thread.
    db: sled::Db,
    /// `N` → size, `L`+bundle → entry bundle, `H`+chunk → 32-byte hashes.
    tiles: sled::Tree,
    checkpoints: sled::Tree,
    beside: sled::Tree,
    releases: sled::Tree,
}

impl LogTrees {
    pub(super) fn open(db: sled::Db) -> Result<Self> {
        Ok(LogTrees {
            tiles: db.open_tree("log_tiles")?,
            checkpoints: db.open_tree("log_checkpoints")?,
            beside: db.open_tree("log_beside")?,
            releases: db.open_tree("log_releases")?,
            db,
        })
    }
}

const SIZE_KEY: &[u8] = b"N";

fn tile_key(kind: u8, index: u64) -> [u8; 9] {
    let mut k = [kind; 9];
    k[1..].copy_from_slice(&index.to_be_bytes());
    k
}

fn index_of(key: &[u8]) -> Result<u64> {
    key.try_into().map(u64::from_be_bytes).map_err(|_| Error::Storage("a log key is not 8 bytes".into()))
}

fn damaged(what: impl std::fmt::Display) -> Error {
    Error::Storage(format!("the transparency log's store is damaged: {what}"))
}

impl SledStore {
    /// The leaves of entry bundle `bundle`, of a log of `size` leaves.
    fn bundle(&self, bundle: u64, size: u64) -> Result<Vec<Vec<u8>>> {
        let width = (size - bundle * WIDTH).min(WIDTH) as u16;
        let Some(bytes) = self.log.tiles.get(tile_key(b'L', bundle))? else {
            return Err(damaged(format!("entry bundle {bundle} is missing")));
        };
        let leaves = parse_entry_bundle(&bytes, width).map_err(damaged)?;
        Ok(leaves.into_iter().map(<[u8]>::to_vec).collect())
    }
}

impl LogStore for SledStore {
    fn log_size(&self) -> Result<u64> {
        Ok(match self.log.tiles.get(SIZE_KEY)? {
            Some(v) => index_of(&v)?,
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
        let have = self.log_size()?;
        if have != size {
            return Err(Error::failed_precondition(format!("the log is at size {have}, not {size}")));
        }
        if leaves.is_empty() {
            return Ok(());
        }
        // Texts and names first, each tree one atomic batch; the tiles' batch, which moves
        // the size, is the commit point: after a crash before it, the next append at the same
        // size overwrites what was written beyond the log.
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

        let mut batch = sled::Batch::default();
        // Leaves: complete the partial bundle, then whole new ones.
        let mut bundle = size / WIDTH;
        let open = if size.is_multiple_of(WIDTH) { Vec::new() } else { self.bundle(bundle, size)? };
        let mut pending: Vec<&[u8]> = open.iter().map(Vec::as_slice).collect();
        for leaf in leaves {
            pending.push(leaf);
            if pending.len() as u64 == WIDTH {
                batch.insert(&tile_key(b'L', bundle), entry_bundle(&pending).map_err(damaged)?);
                pending.clear();
                bundle += 1;
            }
        }
        if !pending.is_empty() {
            batch.insert(&tile_key(b'L', bundle), entry_bundle(&pending).map_err(damaged)?);
        }
        // Hashes: likewise, in chunks of 256 stored-hash indexes.
        let first = efa_tlog::tree::stored_hash_index(0, size);
        let mut chunk = first / WIDTH;
        let mut bytes: Vec<u8> = match first % WIDTH {
            0 => Vec::new(),
            n => {
                let v = t
                    .tiles
                    .get(tile_key(b'H', chunk))?
                    .ok_or_else(|| damaged(format!("hash chunk {chunk} is missing")))?;
                if v.len() as u64 != n * 32 {
                    return Err(damaged(format!("hash chunk {chunk} holds {} bytes, not {}", v.len(), n * 32)));
                }
                v.to_vec()
            }
        };
        for hash in hashes {
            bytes.extend_from_slice(hash);
            if bytes.len() as u64 == WIDTH * 32 {
                batch.insert(&tile_key(b'H', chunk), std::mem::take(&mut bytes));
                chunk += 1;
            }
        }
        if !bytes.is_empty() {
            batch.insert(&tile_key(b'H', chunk), bytes);
        }
        batch.insert(SIZE_KEY, &(size + leaves.len() as u64).to_be_bytes());
        t.tiles.apply_batch(batch)?;
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
        let mut chunk: Option<(u64, sled::IVec)> = None;
        indexes
            .iter()
            .map(|&i| {
                let c = i / WIDTH;
                if chunk.as_ref().is_none_or(|(have, _)| *have != c) {
                    let v = self
                        .log
                        .tiles
                        .get(tile_key(b'H', c))?
                        .ok_or_else(|| Error::not_found(format!("log hash {i}")))?;
                    chunk = Some((c, v));
                }
                let (_, bytes) = chunk.as_ref().expect("loaded above");
                let at = ((i % WIDTH) * 32) as usize;
                bytes
                    .get(at..at + 32)
                    .and_then(|h| h.try_into().ok())
                    .ok_or_else(|| Error::not_found(format!("log hash {i}")))
            })
            .collect()
    }

    fn log_leaves(&self, from: u64, to: u64) -> Result<Vec<Vec<u8>>> {
        let size = self.log_size()?;
        let to = to.min(size);
        if from >= to {
            return Ok(Vec::new());
        }
        let mut out = Vec::with_capacity((to - from) as usize);
        for bundle in from / WIDTH..=(to - 1) / WIDTH {
            let first = bundle * WIDTH;
            for (i, leaf) in self.bundle(bundle, size)?.into_iter().enumerate() {
                if (from..to).contains(&(first + i as u64)) {
                    out.push(leaf);
                }
            }
        }
        Ok(out)
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
