//! The local backend: a content-addressed directory, `root/<2 hex>/<64 hex>`.
//!
//! A publish writes into an [`Upload`]: each blob goes to `tmp/`, is hashed while written,
//! and is moved into the upload's own directory `staged/<id>/` only if its digest matches
//! the manifest. Nothing staged is served. Once the release is committed, the upload is
//! promoted: its blobs move under their digests. A publish that fails leaves nothing behind
//! (the upload's directory is removed); one whose hub died is finished or removed on the
//! next start ([`LocalBlobs::recover`]). Identical content across releases is stored once.
//! [`LocalBlobs::collect_garbage`] removes what no published release names, after a grace
//! period.

mod gc;
mod upload;

pub(crate) use upload::{BlobWriter, Upload};

use super::{parse_recipe, BlobError};
use efa_domain::bundle::Digest;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

pub(crate) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BlobError + '_ {
    move |source| BlobError::Io { path: path.to_path_buf(), source }
}

/// Sequential reader over a blob's bytes.
pub(crate) type BlobReader = Box<dyn Read + Send>;

/// The blob directory, by default `data_dir/blobs`.
#[derive(Clone, Debug)]
pub(crate) struct LocalBlobs {
    root: PathBuf,
}

impl LocalBlobs {
    pub fn open(root: PathBuf) -> Result<Self, BlobError> {
        let tmp = root.join("tmp");
        std::fs::create_dir_all(&tmp).map_err(io(&tmp))?;
        let staged = root.join(upload::STAGED);
        std::fs::create_dir_all(&staged).map_err(io(&staged))?;
        // Leftovers of interrupted uploads are never referenced; drop them.
        if let Ok(entries) = std::fs::read_dir(&tmp) {
            for e in entries.flatten() {
                let _ = std::fs::remove_file(e.path());
            }
        }
        Ok(LocalBlobs { root })
    }

    pub fn path(&self, digest: &Digest) -> PathBuf {
        let hex = digest.hex();
        self.root.join(&hex[..2]).join(hex)
    }

    pub fn contains(&self, digest: &Digest) -> bool {
        self.path(digest).is_file()
    }

    pub(crate) fn recipe_path(&self, file: &Digest) -> PathBuf {
        let hex = file.hex();
        self.root.join(&hex[..2]).join(format!("{hex}.chunks"))
    }

    /// Opens a blob for reading from `offset`: a stored blob, or a chunked file joined from
    /// its chunks. Returns the reader and the blob's total length; `None` if unknown.
    pub fn reader(&self, digest: &Digest, offset: u64) -> Result<Option<(BlobReader, u64)>, BlobError> {
        let path = self.path(digest);
        if let Ok(mut f) = std::fs::File::open(&path) {
            let len = f.metadata().map_err(io(&path))?.len();
            f.seek(SeekFrom::Start(offset.min(len))).map_err(io(&path))?;
            return Ok(Some((Box::new(f), len)));
        }
        let recipe = self.recipe_path(digest);
        let Ok(text) = std::fs::read_to_string(&recipe) else { return Ok(None) };
        let Some(chunks) = parse_recipe(&text) else { return Ok(None) };
        let mut parts = Vec::new();
        let mut len = 0u64;
        for (chunk, size) in chunks {
            let p = self.path(&chunk);
            let size = match size {
                Some(size) => size,
                // Recipes written before sizes were recorded.
                None => std::fs::metadata(&p).map_err(io(&p))?.len(),
            };
            len += size;
            parts.push((p, size));
        }
        // Chunks are opened one at a time: a large file has hundreds of them, and many
        // concurrent downloads must not hold a file descriptor for each.
        let mut skip = offset.min(len);
        let mut pending = std::collections::VecDeque::new();
        for (p, size) in parts {
            if skip >= size {
                skip -= size;
                continue;
            }
            pending.push_back((p, skip));
            skip = 0;
        }
        let reader: BlobReader = Box::new(ChunkChain { pending, current: None });
        Ok(Some((reader, len)))
    }
}

/// Reads chunk files one after another, opening each only when it is reached.
struct ChunkChain {
    pending: std::collections::VecDeque<(PathBuf, u64)>,
    current: Option<std::fs::File>,
}

impl Read for ChunkChain {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            if let Some(f) = &mut self.current {
                let n = f.read(buf)?;
                if n > 0 || buf.is_empty() {
                    return Ok(n);
                }
                self.current = None;
            }
            let Some((path, skip)) = self.pending.pop_front() else { return Ok(0) };
            let mut f = std::fs::File::open(&path)?;
            f.seek(SeekFrom::Start(skip))?;
            self.current = Some(f);
        }
    }
}

#[cfg(test)]
mod tests;
