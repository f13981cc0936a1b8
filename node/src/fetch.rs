//! Getting a verified release onto local disk: download every file the local cache does
//! not already hold, resuming partial downloads and checking each byte against the signed
//! manifest (verified before, see `efa_domain::trust`).
//!
//! Cache layout under `state_dir/blobs/`: `<64 hex>` verified blobs, `partial/<64 hex>`
//! downloads in progress. A blob is moved out of `partial/` only after its digest matched.

use crate::error::{NodeError, Result};
use crate::hub::HubClient;
use efa_domain::bundle::{ChunkRef, Digest, FileEntry, Hasher, Manifest};
use std::io::{Read, Write};
use std::path::PathBuf;
use tokio_stream::StreamExt;

/// Verified blobs on local disk, and downloads in progress.
#[derive(Clone, Debug)]
pub struct BlobCache {
    root: PathBuf,
}

/// What a fetch moved.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FetchStats {
    /// Files in the manifest.
    pub files: usize,
    /// Files already in the cache.
    pub files_reused: usize,
    /// Bytes moved over the network.
    pub bytes_downloaded: u64,
}

impl BlobCache {
    /// The cache under `state_dir/blobs/`.
    pub fn new(state_dir: &std::path::Path) -> Result<Self> {
        let root = state_dir.join("blobs");
        let partial = root.join("partial");
        std::fs::create_dir_all(&partial).map_err(|e| NodeError::io(&partial, e))?;
        Ok(BlobCache { root })
    }

    /// Where a verified blob is kept.
    pub fn path(&self, d: &Digest) -> PathBuf {
        self.root.join(d.hex())
    }

    fn partial(&self, d: &Digest) -> PathBuf {
        self.root.join("partial").join(d.hex())
    }

    /// Drops partial downloads. Called when no download is in flight, e.g. after a deploy:
    /// a partial left then belongs to a release that was superseded before it resumed.
    pub fn clear_partials(&self) {
        if let Ok(entries) = std::fs::read_dir(self.root.join("partial")) {
            for e in entries.flatten() {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }

    fn has(&self, entry: &FileEntry) -> bool {
        self.has_blob(&entry.digest, entry.size)
    }

    fn has_blob(&self, digest: &Digest, size: u64) -> bool {
        std::fs::metadata(self.path(digest)).is_ok_and(|m| m.len() == size)
    }
}

/// Downloads every file of `manifest` missing from the cache, calling
/// `progress(bytes_done, bytes_to_fetch)` as data arrives.
pub async fn fetch_release(
    hub: &HubClient,
    cache: &BlobCache,
    manifest: &Manifest,
    progress: &(dyn Fn(u64, u64) + Send + Sync),
) -> Result<FetchStats> {
    let mut stats = FetchStats { files: manifest.files.len(), ..Default::default() };
    let missing: Vec<&FileEntry> = manifest.files.iter().filter(|e| !cache.has(e)).collect();
    stats.files_reused = manifest.files.len() - missing.len();
    // Only the parts (whole small files, or chunks of large ones) not already cached move.
    let total: u64 =
        missing.iter().flat_map(|e| e.parts()).filter(|p| !cache.has_blob(&p.digest, p.size)).map(|p| p.size).sum();
    let mut done = 0u64;
    for entry in missing {
        let parts = entry.parts();
        for (i, part) in parts.iter().enumerate() {
            if cache.has_blob(&part.digest, part.size) {
                continue;
            }
            let label = if entry.chunks.is_empty() {
                entry.path.as_str().to_string()
            } else {
                format!("{} (chunk {} of {})", entry.path.as_str(), i + 1, parts.len())
            };
            let base = done;
            stats.bytes_downloaded += fetch_blob(hub, cache, part, &label, &|n| progress(base + n, total)).await?;
            done = base + part.size;
            progress(done, total);
        }
        if !entry.chunks.is_empty() {
            assemble(cache, entry)?;
        }
    }
    Ok(stats)
}

/// Joins a chunked file's cached chunks into the file blob, checking the file's digest.
fn assemble(cache: &BlobCache, entry: &FileEntry) -> Result<()> {
    let partial = cache.partial(&entry.digest);
    let mut out = std::fs::File::create(&partial).map_err(|e| NodeError::io(&partial, e))?;
    let mut hasher = Hasher::default();
    for c in &entry.chunks {
        let bytes = std::fs::read(cache.path(&c.digest)).map_err(|e| NodeError::io(cache.path(&c.digest), e))?;
        hasher.update(&bytes);
        out.write_all(&bytes).map_err(|e| NodeError::io(&partial, e))?;
    }
    out.sync_all().map_err(|e| NodeError::io(&partial, e))?;
    drop(out);
    let actual = hasher.finish();
    if actual != entry.digest {
        let _ = std::fs::remove_file(&partial);
        return Err(NodeError::Download {
            file: entry.path.as_str().to_string(),
            reason: format!("joined chunks have digest {actual}, the signed manifest says {}", entry.digest),
        });
    }
    let dest = cache.path(&entry.digest);
    std::fs::rename(&partial, &dest).map_err(|e| NodeError::io(&dest, e))
}

/// Downloads one blob, resuming a partial download. Returns bytes transferred.
async fn fetch_blob(
    hub: &HubClient,
    cache: &BlobCache,
    entry: &ChunkRef,
    label: &str,
    progress: &(dyn Fn(u64) + Send + Sync),
) -> Result<u64> {
    let partial = cache.partial(&entry.digest);
    let label = label.to_string();
    // Re-hash what an earlier attempt left, so the final digest covers every byte.
    let mut hasher = Hasher::default();
    let mut offset = 0u64;
    if let Ok(mut f) = std::fs::File::open(&partial) {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = f.read(&mut buf).map_err(|e| NodeError::io(&partial, e))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            offset += n as u64;
        }
    }
    if offset > entry.size {
        std::fs::remove_file(&partial).map_err(|e| NodeError::io(&partial, e))?;
        hasher = Hasher::default();
        offset = 0;
    }
    let mut file =
        std::fs::OpenOptions::new().create(true).append(true).open(&partial).map_err(|e| NodeError::io(&partial, e))?;
    let mut transferred = 0u64;
    if offset < entry.size {
        let mut stream = hub.blob(&entry.digest, offset).await?;
        while let Some(part) = stream.next().await {
            let (at, data) = part?;
            if at != offset {
                return Err(NodeError::Download {
                    file: label.clone(),
                    reason: format!("hub sent a chunk at offset {at} while {offset} was expected"),
                });
            }
            if offset.saturating_add(data.len() as u64) > entry.size {
                drop(file);
                let _ = std::fs::remove_file(&partial);
                return Err(NodeError::Download {
                    file: label,
                    reason: format!(
                        "hub sent more than the {} bytes the manifest declares; download discarded",
                        entry.size
                    ),
                });
            }
            file.write_all(&data).map_err(|e| NodeError::io(&partial, e))?;
            hasher.update(&data);
            offset += data.len() as u64;
            transferred += data.len() as u64;
            progress(offset);
        }
    }
    if offset != entry.size {
        return Err(NodeError::DownloadInterrupted { file: label, got: offset, size: entry.size });
    }
    file.sync_all().map_err(|e| NodeError::io(&partial, e))?;
    drop(file);
    let actual = hasher.finish();
    if actual != entry.digest {
        let _ = std::fs::remove_file(&partial);
        return Err(NodeError::Download {
            file: label,
            reason: format!(
                "content has digest {actual}, the signed manifest says {}; download discarded",
                entry.digest
            ),
        });
    }
    let dest = cache.path(&entry.digest);
    std::fs::rename(&partial, &dest).map_err(|e| NodeError::io(&dest, e))?;
    Ok(transferred)
}
