//! Content-addressed blob store on the local filesystem: `root/<2 hex>/<64 hex>`.
//!
//! A blob is written to a temp file, hashed while written, and renamed into place only if
//! its digest and size match what the manifest promised. So a blob under its name is always
//! the content that name says, and identical files across releases are stored once.

use efa_domain::bundle::{Digest, Hasher};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// Why a blob could not be stored or read.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    /// The file system failed; the caller is told only that the hub could not store it.
    #[error("blob store I/O on {path}: {source}")]
    Io {
        /// The file or directory below the blob root.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// An upload does not hash to the digest its manifest names; nothing was stored.
    #[error("file {path} has digest {actual}, but the manifest says {expected}")]
    DigestMismatch {
        /// The bundle path (or chunk label) of the upload.
        path: String,
        /// Digest in the manifest.
        expected: Digest,
        /// Digest of the bytes received.
        actual: Digest,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BlobError + '_ {
    move |source| BlobError::Io { path: path.to_path_buf(), source }
}

/// Sequential reader over a blob's bytes.
pub(crate) type BlobReader = Box<dyn Read + Send>;

/// The blob directory, `data_dir/blobs`.
#[derive(Clone, Debug)]
pub(crate) struct BlobStore {
    root: PathBuf,
}

impl BlobStore {
    pub fn open(root: PathBuf) -> Result<Self, BlobError> {
        let tmp = root.join("tmp");
        std::fs::create_dir_all(&tmp).map_err(io(&tmp))?;
        // Leftovers of interrupted uploads are never referenced; drop them.
        if let Ok(entries) = std::fs::read_dir(&tmp) {
            for e in entries.flatten() {
                let _ = std::fs::remove_file(e.path());
            }
        }
        Ok(BlobStore { root })
    }

    pub fn path(&self, digest: &Digest) -> PathBuf {
        let hex = digest.hex();
        self.root.join(&hex[..2]).join(hex)
    }

    pub fn contains(&self, digest: &Digest) -> bool {
        self.path(digest).is_file()
    }

    fn recipe_path(&self, file: &Digest) -> PathBuf {
        let hex = file.hex();
        self.root.join(&hex[..2]).join(format!("{hex}.chunks"))
    }

    /// Records that the content of `file` is the concatenation of `chunks` (all stored), so
    /// the file can still be downloaded in one stream although only its chunks are kept.
    pub fn write_recipe(&self, file: Digest, chunks: &[Digest]) -> Result<(), BlobError> {
        let dest = self.recipe_path(&file);
        let tmp = self.root.join("tmp").join(format!("{}.chunks-{}", file.hex(), std::process::id()));
        let text: String = chunks.iter().map(|c| format!("{c}\n")).collect();
        let mut f = std::fs::File::create(&tmp).map_err(io(&tmp))?;
        f.write_all(text.as_bytes()).and_then(|_| f.sync_all()).map_err(io(&tmp))?;
        let dir = dest.parent().expect("recipe path has a parent");
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        std::fs::rename(&tmp, &dest).map_err(io(&dest))
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
        let mut parts = Vec::new();
        let mut len = 0u64;
        for line in text.lines() {
            let Ok(chunk) = line.parse::<Digest>() else { return Ok(None) };
            let p = self.path(&chunk);
            let size = std::fs::metadata(&p).map_err(io(&p))?.len();
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

    /// Starts writing a blob expected to have `digest`.
    pub fn writer(&self, expected: Digest, label: String) -> Result<BlobWriter, BlobError> {
        let existing = self.contains(&expected);
        let tmp_path = self.root.join("tmp").join(format!(
            "{}-{}-{}",
            expected.hex(),
            std::process::id(),
            TMP_COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        // If the blob is already stored we still hash the upload, but need not write it.
        let file = if existing { None } else { Some(std::fs::File::create(&tmp_path).map_err(io(&tmp_path))?) };
        Ok(BlobWriter { store: self.clone(), expected, label, tmp_path, file, hasher: Hasher::default(), written: 0 })
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

static TMP_COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// An upload in progress; nothing is visible under the digest before [`finish`](Self::finish).
pub(crate) struct BlobWriter {
    store: BlobStore,
    expected: Digest,
    label: String,
    tmp_path: PathBuf,
    file: Option<std::fs::File>,
    hasher: Hasher,
    written: u64,
}

impl BlobWriter {
    pub fn write(&mut self, bytes: &[u8]) -> Result<(), BlobError> {
        self.hasher.update(bytes);
        self.written += bytes.len() as u64;
        if let Some(f) = &mut self.file {
            f.write_all(bytes).map_err(io(&self.tmp_path))?;
        }
        Ok(())
    }

    pub fn written(&self) -> u64 {
        self.written
    }

    /// Verifies the digest, makes the blob durable and moves it into place.
    pub fn finish(mut self) -> Result<(), BlobError> {
        let actual = std::mem::take(&mut self.hasher).finish();
        if actual != self.expected {
            return Err(BlobError::DigestMismatch {
                path: std::mem::take(&mut self.label),
                expected: self.expected,
                actual,
            });
        }
        if let Some(f) = self.file.take() {
            f.sync_all().map_err(io(&self.tmp_path))?;
            drop(f);
            let dest = self.store.path(&self.expected);
            let dir = dest.parent().expect("blob path has a parent");
            std::fs::create_dir_all(dir).map_err(io(dir))?;
            std::fs::rename(&self.tmp_path, &dest).map_err(io(&dest))?;
            std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))?;
        }
        Ok(())
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        if self.file.is_some() || self.tmp_path.exists() {
            let _ = std::fs::remove_file(&self.tmp_path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stores_verified_blobs_and_refuses_mismatches() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path().to_path_buf()).unwrap();
        let d = Digest::of(b"hello world");
        let mut w = store.writer(d, "a.txt".into()).unwrap();
        w.write(b"hello ").unwrap();
        w.write(b"world").unwrap();
        w.finish().unwrap();
        assert_eq!(std::fs::read(store.path(&d)).unwrap(), b"hello world");

        let wrong = Digest::of(b"other");
        let mut w = store.writer(wrong, "b.txt".into()).unwrap();
        w.write(b"tampered").unwrap();
        let err = w.finish().unwrap_err().to_string();
        assert!(err.contains("b.txt"), "{err}");
        assert!(!store.contains(&wrong));
        assert_eq!(std::fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
    }
}
