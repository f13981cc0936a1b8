//! One publish's blobs: staged where nothing serves them, promoted once the release is
//! committed, removed if it never is.

use super::{io, LocalBlobs};
use crate::blobs::{check_digest, recipe_text, BlobError};
use efa_domain::bundle::{Digest, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Directory below the blob root that holds uploads in progress.
pub(super) const STAGED: &str = "staged";
/// File in a staged upload naming the release it belongs to, written before the commit.
pub(super) const SEALED: &str = "release";
/// Suffix of a chunk recipe (see [`Upload::write_recipe`]).
pub(super) const RECIPE: &str = ".chunks";

static COUNTER: AtomicU64 = AtomicU64::new(0);

fn unique() -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    format!("{}-{nanos:x}-{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed))
}

fn sync_dir(dir: &Path) -> Result<(), BlobError> {
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
}

/// The blobs of one publish. Dropped without [`promote`](Self::promote), it removes them.
pub(crate) struct Upload {
    store: LocalBlobs,
    dir: PathBuf,
    promoted: bool,
}

impl LocalBlobs {
    /// Starts the upload of one release's content.
    pub(crate) fn upload(&self) -> Result<Upload, BlobError> {
        let dir = self.root.join(STAGED).join(unique());
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        Ok(Upload { store: self.clone(), dir, promoted: false })
    }
}

impl Upload {
    /// Starts writing a blob expected to have `expected`. Content already stored under it is
    /// hashed (so a lie is still caught) but not written again.
    pub(crate) fn writer(&self, expected: Digest, label: String) -> Result<BlobWriter, BlobError> {
        let existing = self.store.contains(&expected);
        if existing {
            // Fresh again, so garbage collection (which spares young blobs) keeps it until the
            // release that now names it is committed.
            let path = self.store.path(&expected);
            let _ = std::fs::File::options()
                .write(true)
                .open(&path)
                .and_then(|f| f.set_modified(std::time::SystemTime::now()));
        }
        let tmp_path = self.store.root.join("tmp").join(format!("{}-{}", expected.hex(), unique()));
        let file = if existing { None } else { Some(std::fs::File::create(&tmp_path).map_err(io(&tmp_path))?) };
        Ok(BlobWriter {
            dest: self.dir.join(expected.hex()),
            expected,
            label,
            tmp_path,
            file,
            hasher: Hasher::default(),
            written: 0,
        })
    }

    /// Records that the content of `file` is the concatenation of `chunks`, so the file can
    /// be downloaded in one stream although only its chunks are kept.
    pub(crate) fn write_recipe(&self, file: Digest, chunks: &[(Digest, u64)]) -> Result<(), BlobError> {
        let dest = self.dir.join(format!("{}{RECIPE}", file.hex()));
        let text = recipe_text(chunks);
        let mut f = std::fs::File::create(&dest).map_err(io(&dest))?;
        f.write_all(text.as_bytes()).and_then(|_| f.sync_all()).map_err(io(&dest))
    }

    /// Marks the content complete for `release` (`service version`), durably, before the
    /// release is committed: after a crash, [`LocalBlobs::recover`] promotes a sealed upload
    /// whose release was committed and removes any other.
    pub(crate) fn seal(&self, release: &str) -> Result<(), BlobError> {
        let marker = self.dir.join(SEALED);
        let mut f = std::fs::File::create(&marker).map_err(io(&marker))?;
        f.write_all(release.as_bytes()).and_then(|_| f.sync_all()).map_err(io(&marker))?;
        sync_dir(&self.dir)
    }

    /// Moves the blobs under their digests, where they are served.
    pub(crate) fn promote(mut self) -> Result<(), BlobError> {
        self.promoted = true;
        promote_dir(&self.store, &self.dir)
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        if !self.promoted {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Moves every blob and recipe of a staged upload under its digest, then removes the upload.
pub(super) fn promote_dir(store: &LocalBlobs, dir: &Path) -> Result<(), BlobError> {
    let mut touched = std::collections::BTreeSet::new();
    for entry in std::fs::read_dir(dir).map_err(io(dir))? {
        let entry = entry.map_err(io(dir))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name == SEALED {
            continue;
        }
        let hex = name.strip_suffix(RECIPE).unwrap_or(&name);
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            continue;
        }
        let dest_dir = store.root.join(&hex[..2]);
        std::fs::create_dir_all(&dest_dir).map_err(io(&dest_dir))?;
        let dest = dest_dir.join(&name);
        std::fs::rename(entry.path(), &dest).map_err(io(&dest))?;
        touched.insert(dest_dir);
    }
    for d in &touched {
        sync_dir(d)?;
    }
    std::fs::remove_dir_all(dir).map_err(io(dir))?;
    sync_dir(&store.root.join(STAGED))
}

/// One blob of an upload; nothing is stored before [`finish`](Self::finish) checked it.
pub(crate) struct BlobWriter {
    dest: PathBuf,
    expected: Digest,
    label: String,
    tmp_path: PathBuf,
    file: Option<std::fs::File>,
    hasher: Hasher,
    written: u64,
}

impl BlobWriter {
    /// Hashes and (unless already stored) writes the next bytes.
    pub(crate) fn write(&mut self, bytes: &[u8]) -> Result<(), BlobError> {
        self.hasher.update(bytes);
        self.written += bytes.len() as u64;
        if let Some(f) = &mut self.file {
            f.write_all(bytes).map_err(io(&self.tmp_path))?;
        }
        Ok(())
    }

    /// Whether the content is stored already (and is only hashed).
    pub(crate) fn reuses_stored(&self) -> bool {
        self.file.is_none()
    }

    /// Bytes received so far.
    pub(crate) fn written(&self) -> u64 {
        self.written
    }

    /// Verifies the digest, makes the blob durable and stages it in its upload.
    pub(crate) fn finish(mut self) -> Result<(), BlobError> {
        check_digest(std::mem::take(&mut self.hasher), self.expected, std::mem::take(&mut self.label))?;
        if let Some(f) = self.file.take() {
            f.sync_all().map_err(io(&self.tmp_path))?;
            drop(f);
            std::fs::rename(&self.tmp_path, &self.dest).map_err(io(&self.dest))?;
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
