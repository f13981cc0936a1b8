//! Bundle content, addressed by SHA-256, behind one interface with two backends: a local
//! directory (the default, [`local`]) and S3-compatible object storage ([`s3`]) that several
//! replicas share.
//!
//! Both keep the same promises: a blob is stored only after its bytes hashed to the digest
//! the manifest names; nothing is served before its release is committed (downloads also
//! ask the registry whether a published release names the digest); a publish that fails
//! leaves nothing that is ever served; content no release names is removed only after a
//! grace period, so a publish in progress never loses what it reuses.
//!
//! A large file travels as content-defined chunks; its *recipe* (`<file digest>.chunks`)
//! lists the chunks with their sizes, so it is served as one stream from any offset.

mod hot;
mod local;
mod s3;

pub use hot::HotBlobs;
pub use s3::S3Location;

/// The largest blob the download cache keeps: a part of a large file (chunks are at most
/// 1 MiB) or a file no larger than one.
pub const HOT_BLOB_MAX: usize = 1024 * 1024;

use bytes::Bytes;
use efa_domain::bundle::Digest;
use std::path::{Path, PathBuf};
use std::time::Duration;

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
    /// The object store failed or could not be reached (after its retries). Its message
    /// names the operation and the key, never credentials.
    #[error("object storage, {op} {key}: {message}")]
    Remote {
        /// What was tried (`put`, `get`, …).
        op: &'static str,
        /// The object's key below the bucket.
        key: String,
        /// The object store client's error.
        message: String,
    },
    /// The blob location is not usable (bad URL, missing credentials).
    #[error("blob location: {0}")]
    Config(String),
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

/// What a garbage collection removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GcReport {
    /// Blobs and recipes no published release names, older than the grace period.
    pub blobs_removed: u64,
    /// Their bytes.
    pub bytes_removed: u64,
    /// Staged uploads of publishes that never committed.
    pub uploads_removed: u64,
    /// Staged uploads of committed releases, moved under their digests.
    pub uploads_promoted: u64,
}

/// Where a hub keeps bundle content.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum BlobLocation {
    /// `data_dir/blobs` (the default).
    #[default]
    DataDir,
    /// A directory of its own (e.g. a shared file system several replicas mount).
    Dir(PathBuf),
    /// A bucket (and key prefix) of S3-compatible storage.
    S3(S3Location),
}

impl std::str::FromStr for BlobLocation {
    type Err = String;

    /// `""` or `data-dir` (the default), `s3://bucket/prefix`, or a directory.
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s.is_empty() || s == "data-dir" {
            Ok(BlobLocation::DataDir)
        } else if s.starts_with("s3://") {
            s.parse().map(BlobLocation::S3)
        } else if s.contains("://") {
            Err(format!("blobs: {} is neither a directory nor an s3:// URL", efa_domain::error::echo(s)))
        } else {
            Ok(BlobLocation::Dir(PathBuf::from(s)))
        }
    }
}

/// Sequential reader over a local blob's bytes.
pub(crate) type BlobReader = Box<dyn std::io::Read + Send>;

/// Pieces of an object as the object store sends them; an error ends them.
pub(crate) type RemotePieces = tokio::sync::mpsc::Receiver<Result<Bytes, BlobError>>;

/// A blob's bytes from some offset on.
pub(crate) enum BlobBody {
    /// A file (or chunk files) read with blocking reads.
    File(BlobReader),
    /// Pieces of the object as the object store sends them; an error ends it.
    Remote(RemotePieces),
}

/// The hub's blob store.
#[derive(Clone, Debug)]
pub(crate) enum BlobStore {
    Local(local::LocalBlobs),
    S3(s3::S3Blobs),
}

impl BlobStore {
    /// Opens the store at `location` (`data_dir` for [`BlobLocation::DataDir`]); for S3,
    /// checks that the bucket answers.
    pub fn open(location: &BlobLocation, data_dir: &Path) -> Result<Self, BlobError> {
        Ok(match location {
            BlobLocation::DataDir => BlobStore::Local(local::LocalBlobs::open(data_dir.join("blobs"))?),
            BlobLocation::Dir(dir) => BlobStore::Local(local::LocalBlobs::open(dir.clone())?),
            BlobLocation::S3(s3) => BlobStore::S3(s3::S3Blobs::open(s3)?),
        })
    }

    /// Starts the upload of one release's content.
    pub fn upload(&self) -> Result<Upload, BlobError> {
        Ok(match self {
            BlobStore::Local(s) => Upload::Local(s.upload()?),
            BlobStore::S3(s) => Upload::S3(s.upload()),
        })
    }

    /// Opens a blob (or a chunked file) for reading from `offset`. Returns the body and the
    /// blob's total length; `None` if it is not stored.
    pub fn reader(&self, digest: &Digest, offset: u64) -> Result<Option<(BlobBody, u64)>, BlobError> {
        match self {
            BlobStore::Local(s) => Ok(s.reader(digest, offset)?.map(|(r, len)| (BlobBody::File(r), len))),
            BlobStore::S3(s) => Ok(s.reader(digest, offset)?.map(|(r, len)| (BlobBody::Remote(r), len))),
        }
    }

    /// Whether the blob is stored whole (`size` bytes).
    fn has(&self, digest: &Digest, size: u64) -> Result<bool, BlobError> {
        match self {
            BlobStore::Local(s) => Ok(std::fs::metadata(s.path(digest)).is_ok_and(|m| m.len() == size)),
            BlobStore::S3(s) => s.has(digest, size),
        }
    }

    /// Finishes or removes what publishes of a hub that died left behind.
    pub fn recover(&self, grace: Duration, committed: impl Fn(&str) -> bool) -> Result<GcReport, BlobError> {
        match self {
            BlobStore::Local(s) => s.recover(grace, committed),
            // Nothing is staged on S3: blobs go to their keys once verified, and are served
            // only when a committed release names them. Orphans are garbage below.
            BlobStore::S3(_) => Ok(GcReport::default()),
        }
    }

    /// Removes content no published release names (`referenced`) that is older than `grace`.
    pub fn collect_garbage(
        &self,
        grace: Duration,
        referenced: impl Fn(&Digest) -> bool,
        committed: impl Fn(&str) -> bool,
    ) -> Result<GcReport, BlobError> {
        match self {
            BlobStore::Local(s) => s.collect_garbage(grace, referenced, committed),
            BlobStore::S3(s) => s.collect_garbage(grace, referenced),
        }
    }
}

/// The blobs of one publish; dropped before [`promote`](Self::promote), nothing of it is served.
pub(crate) enum Upload {
    Local(local::Upload),
    S3(s3::Upload),
}

impl Upload {
    /// Starts writing a blob expected to hash to `expected`. Content already stored is
    /// hashed (so a lie is still caught) but not written again.
    pub fn writer(&self, expected: Digest, label: String) -> Result<BlobWriter, BlobError> {
        Ok(match self {
            Upload::Local(u) => BlobWriter::Local(u.writer(expected, label)?),
            Upload::S3(u) => BlobWriter::S3(u.writer(expected, label)?),
        })
    }

    /// Records that `file` is the concatenation of `chunks` (digest, size).
    pub fn write_recipe(&self, file: Digest, chunks: &[(Digest, u64)]) -> Result<(), BlobError> {
        match self {
            Upload::Local(u) => u.write_recipe(file, chunks),
            Upload::S3(u) => u.write_recipe(file, chunks),
        }
    }

    /// Marks the content complete for `release` (`"service version"`) before the commit.
    pub fn seal(&self, release: &str) -> Result<(), BlobError> {
        match self {
            Upload::Local(u) => u.seal(release),
            Upload::S3(_) => Ok(()),
        }
    }

    /// Makes the content servable once its release is committed.
    pub fn promote(self) -> Result<(), BlobError> {
        match self {
            Upload::Local(u) => u.promote(),
            Upload::S3(_) => Ok(()),
        }
    }
}

/// One blob of an upload; nothing is stored before [`finish`](Self::finish) checked it.
pub(crate) enum BlobWriter {
    Local(local::BlobWriter),
    S3(s3::BlobWriter),
}

impl BlobWriter {
    /// Hashes and (unless already stored) writes the next bytes.
    pub fn write(&mut self, bytes: &[u8]) -> Result<(), BlobError> {
        match self {
            BlobWriter::Local(w) => w.write(bytes),
            BlobWriter::S3(w) => w.write(bytes),
        }
    }

    /// Whether the content is stored already (and is only hashed, not written).
    pub fn reuses_stored(&self) -> bool {
        match self {
            BlobWriter::Local(w) => w.reuses_stored(),
            BlobWriter::S3(w) => w.existing,
        }
    }

    /// Bytes received so far.
    pub fn written(&self) -> u64 {
        match self {
            BlobWriter::Local(w) => w.written(),
            BlobWriter::S3(w) => w.written(),
        }
    }

    /// Verifies the digest and stores the blob durably.
    pub fn finish(self) -> Result<(), BlobError> {
        match self {
            BlobWriter::Local(w) => w.finish(),
            BlobWriter::S3(w) => w.finish(),
        }
    }
}

/// What [`copy_dir`] copied.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlobCopyReport {
    /// Blobs and recipes in the source directory.
    pub objects: u64,
    /// Blobs written to the target now (the others were there from an earlier run; recipes
    /// are small and written again each run).
    pub copied: u64,
    /// Bytes of all of them.
    pub bytes: u64,
}

/// Copies a hub's blob directory (`DATA_DIR/blobs`) to another location, e.g. S3, for
/// `efa-hub migrate`. Every blob is hashed on the way and must match its name; it is
/// written through the target's normal upload path (create-only, verified again), so a run
/// killed halfway leaves no partial object and the next run copies only what is missing.
/// Afterwards every source object is looked up on the target with its size.
/// Staged uploads (publishes in progress) are not copied: stop the hub first.
pub fn copy_dir(from: &Path, to: &BlobLocation, progress: &dyn Fn(u64, u64)) -> Result<BlobCopyReport, BlobError> {
    let target = BlobStore::open(to, from)?;
    let mut report = BlobCopyReport::default();
    let mut copied = Vec::new();
    let mut shards: Vec<PathBuf> = std::fs::read_dir(from)
        .map_err(local::io(from))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir() && p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.len() == 2))
        .collect();
    shards.sort();
    for shard in shards {
        let mut files: Vec<PathBuf> =
            std::fs::read_dir(&shard).map_err(local::io(&shard))?.filter_map(|e| e.ok().map(|e| e.path())).collect();
        files.sort();
        for path in files {
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("").to_string();
            let (hex, recipe) = match name.strip_suffix(".chunks") {
                Some(hex) => (hex, true),
                None => (name.as_str(), false),
            };
            let Ok(digest) = format!("sha256:{hex}").parse::<Digest>() else { continue };
            let bytes = std::fs::read(&path).map_err(local::io(&path))?;
            let upload = target.upload()?;
            let written = if recipe {
                let text = String::from_utf8_lossy(&bytes);
                let Some(chunks) = parse_recipe(&text) else {
                    return Err(BlobError::Config(format!("{} is not a chunk recipe", path.display())));
                };
                let mut sized = Vec::with_capacity(chunks.len());
                for (chunk, size) in chunks {
                    let size = match size {
                        Some(s) => s,
                        None => {
                            let p = shard.parent().unwrap_or(from).join(&chunk.hex()[..2]).join(chunk.hex());
                            std::fs::metadata(&p).map_err(local::io(&p))?.len()
                        }
                    };
                    sized.push((chunk, size));
                }
                upload.write_recipe(digest, &sized)?;
                true
            } else {
                // The writer hashes every byte: a corrupt source file fails here, named.
                let mut w = upload.writer(digest, path.display().to_string())?;
                let fresh = !w.reuses_stored();
                w.write(&bytes)?;
                w.finish()?;
                fresh
            };
            upload.promote()?;
            report.objects += 1;
            report.bytes += bytes.len() as u64;
            if written && !recipe {
                report.copied += 1;
            }
            copied.push((digest, recipe, bytes.len() as u64));
            progress(report.objects, report.bytes);
        }
    }
    // Every source object is now on the target, whole.
    for (digest, recipe, size) in copied {
        if !recipe && !target.has(&digest, size)? {
            return Err(BlobError::Config(format!("{digest} is missing on the target after the copy")));
        }
    }
    Ok(report)
}

/// Whether the bytes hashed into `hasher` are the `expected` ones; `label` names the file.
pub(crate) fn check_digest(
    hasher: efa_domain::bundle::Hasher,
    expected: Digest,
    label: String,
) -> Result<(), BlobError> {
    let actual = hasher.finish();
    if actual != expected {
        return Err(BlobError::DigestMismatch { path: label, expected, actual });
    }
    Ok(())
}

/// A recipe's text: one `sha256:<hex> <size>` line per chunk.
pub(crate) fn recipe_text(chunks: &[(Digest, u64)]) -> String {
    chunks.iter().map(|(c, size)| format!("{c} {size}\n")).collect()
}

/// The chunks of a recipe with their sizes (`None` in recipes written before sizes were
/// recorded); `None` if it is not a recipe.
pub(crate) fn parse_recipe(text: &str) -> Option<Vec<(Digest, Option<u64>)>> {
    text.lines()
        .map(|line| {
            let mut words = line.split_whitespace();
            let digest = words.next()?.parse().ok()?;
            let size = match words.next() {
                Some(s) => Some(s.parse().ok()?),
                None => None,
            };
            Some((digest, size))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recipes_carry_sizes_and_older_ones_without_still_read() {
        let (a, b) = (Digest::of(b"a"), Digest::of(b"bb"));
        let text = recipe_text(&[(a, 1), (b, 2)]);
        assert_eq!(parse_recipe(&text), Some(vec![(a, Some(1)), (b, Some(2))]));
        assert_eq!(parse_recipe(&format!("{a}\n{b}\n")), Some(vec![(a, None), (b, None)]));
        assert_eq!(parse_recipe("not a digest\n"), None);
        assert_eq!(parse_recipe(&format!("{a} -1\n")), None);
    }

    #[test]
    fn blob_locations_parse_and_keep_secrets_out_of_debug() {
        assert_eq!("".parse::<BlobLocation>(), Ok(BlobLocation::DataDir));
        assert_eq!("/srv/efa/blobs".parse::<BlobLocation>(), Ok(BlobLocation::Dir("/srv/efa/blobs".into())));
        let BlobLocation::S3(mut s3) = "s3://efa-bundles/hub/prod/".parse::<BlobLocation>().unwrap() else {
            panic!("an s3:// location")
        };
        assert_eq!((s3.bucket.as_str(), s3.prefix.as_str()), ("efa-bundles", "hub/prod"));
        s3.secret_access_key = Some("very-secret".into());
        assert!(!format!("{s3:?}").contains("very-secret"));
        for bad in ["s3://", "s3://A_B", "s3://ok-bucket/../x", "s3://ok-bucket/a//b", "ftp://x/y"] {
            assert!(bad.parse::<BlobLocation>().is_err(), "{bad}");
        }
    }
}
