//! Content-addressed blob store on the local filesystem: `root/<2 hex>/<64 hex>`.
//!
//! A blob is written to a temp file, hashed while written, and renamed into place only if
//! its digest and size match what the manifest promised. So a blob under its name is always
//! the content that name says, and identical files across releases are stored once.

use efa_registry::bundle::{Digest, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("blob store I/O on {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("file {path} has digest {actual}, but the manifest says {expected}")]
    DigestMismatch { path: String, expected: Digest, actual: Digest },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BlobError + '_ {
    move |source| BlobError::Io { path: path.to_path_buf(), source }
}

#[derive(Clone, Debug)]
pub struct BlobStore {
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

static TMP_COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

pub struct BlobWriter {
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
