//! The hub's transparency log seen from outside: an auditor that re-derives the log's roots
//! from its leaves ([`verify`]), a static C2SP copy any web server can serve ([`mirror`]),
//! and a witness that cosigns only checkpoints consistent with the last one it cosigned
//! ([`witness_round`]).
//!
//! Everything a hub or a directory serves is untrusted: sizes are bounded before anything
//! is read, tiles must have their exact shape, and leaves are hashed as received (never
//! re-encoded). The arithmetic is `efa_tlog`'s.
//!
//! [`LogError::Inconsistent`] is evidence that the log contradicts a checkpoint it signed;
//! every other error means the check could not be completed.

use efa_domain::model::adoption::{AdoptionEntry, AdoptionRecord, AdoptionState};
use efa_domain::model::ids::{parse_version, Ags, ServiceId};
use efa_proto::convert::WireEnum;
use efa_proto::v1 as pb;
use efa_proto::v1::log_service_client::LogServiceClient;
use efa_tlog::checkpoint::{peek, Checkpoint, Cosigner, Trust, MAX_NOTE};
use efa_tlog::tiles::{parse_entry_bundle, parse_hash_tile, TilePath, MAX_LEAF, WIDTH};
use efa_tlog::tree::{check_consistency, leaf_hash, Frontier};
use efa_tlog::Hash;
use prost::Message;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use tokio::task::JoinHandle;
use tonic::transport::Channel;

/// Why a log could not be verified, mirrored or witnessed.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// The log contradicts a checkpoint it signed, or holds leaves that are no valid events.
    #[error("{0}")]
    Inconsistent(String),
    /// A key, a checkpoint, a tile or a proof that cannot be used.
    #[error("{what}: {why}")]
    Invalid {
        /// What was read.
        what: String,
        /// Why it was refused.
        why: String,
    },
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The hub answered a call with an error.
    #[error("the hub refused {call} ({code:?}): {message}")]
    Hub {
        /// The call, e.g. `GetTile tile/entries/000`.
        call: String,
        /// The gRPC code.
        code: tonic::Code,
        /// The hub's message.
        message: String,
    },
}

impl LogError {
    /// True when the error is evidence against the log (`efa log` exits with 2).
    pub fn is_inconsistent(&self) -> bool {
        matches!(self, LogError::Inconsistent(_))
    }

    fn invalid(what: impl Into<String>, why: impl std::fmt::Display) -> Self {
        LogError::Invalid { what: what.into(), why: why.to_string() }
    }

    fn io(path: &Path) -> impl FnOnce(std::io::Error) -> LogError + '_ {
        move |source| LogError::Io { path: path.to_path_buf(), source }
    }

    fn hub(call: impl Into<String>) -> impl FnOnce(tonic::Status) -> LogError {
        move |s| LogError::Hub { call: call.into(), code: s.code(), message: s.message().chars().take(500).collect() }
    }

    fn out_of_range(&self) -> bool {
        matches!(self, LogError::Hub { code: tonic::Code::OutOfRange, .. })
    }
}

type Result<T, E = LogError> = std::result::Result<T, E>;

/// Largest entry bundle: 256 leaves of the longest length, each with its 2-byte length.
const MAX_BUNDLE: usize = WIDTH as usize * (2 + MAX_LEAF);
/// Largest key file or key argument read.
const MAX_KEY: usize = 4096;
/// Tiles fetched ahead of the one being checked: keeps the hub (or the disk) busy while
/// the leaves already received are hashed.
const IN_FLIGHT: usize = 16;

/// A key given as text, or as `@FILE` to read it from a file (trimmed).
pub fn key_arg(arg: &str) -> Result<String> {
    match arg.strip_prefix('@') {
        Some(path) => {
            let bytes = read_bounded(Path::new(path), MAX_KEY)?;
            String::from_utf8(bytes)
                .map(|s| s.trim().to_string())
                .map_err(|_| LogError::invalid(path, "a key file holds text"))
        }
        None => Ok(arg.trim().to_string()),
    }
}

/// Reads a file of at most `max` bytes.
fn read_bounded(path: &Path, max: usize) -> Result<Vec<u8>> {
    let f = std::fs::File::open(path).map_err(LogError::io(path))?;
    let mut out = Vec::new();
    f.take(max as u64 + 1).read_to_end(&mut out).map_err(LogError::io(path))?;
    if out.len() > max {
        return Err(LogError::invalid(path.display().to_string(), format!("larger than {max} bytes")));
    }
    Ok(out)
}

/// Writes `data` to `path` through a temporary file and a rename, so a reader (a web server,
/// the next run) sees the old file or the new one, never half of one. `durable` also syncs
/// the directory, so the rename survives a crash.
fn write_atomic(path: &Path, data: &[u8], durable: bool) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(LogError::io(dir))?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let written = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(LogError::io(path)(e));
    }
    if durable {
        std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(LogError::io(dir))?;
    }
    Ok(())
}

// ------------------------------------------------------------------ where the log is read

/// Where the log is read: the hub over gRPC, or a directory in the C2SP layout (a mirror).
#[derive(Clone, Debug)]
pub enum Source {
    /// The hub's `LogService`.
    Hub(LogServiceClient<Channel>),
    /// `checkpoint` and `tile/...` files under a directory.
    Dir(PathBuf),
}

/// A `LogService` client that accepts the largest tile the log can hold (gRPC's default
/// limit is 4 MiB; an entry bundle may be up to 16 MiB).
pub fn log_client(channel: Channel) -> LogServiceClient<Channel> {
    LogServiceClient::new(channel).max_decoding_message_size(MAX_BUNDLE + 4096)
}

impl Source {
    /// The hub behind `channel`.
    pub fn hub(channel: Channel) -> Self {
        Source::Hub(log_client(channel))
    }

    /// The newest signed checkpoint, as served (unchecked).
    pub async fn checkpoint(&self) -> Result<Vec<u8>> {
        match self {
            Source::Hub(client) => {
                let note = client
                    .clone()
                    .get_checkpoint(pb::GetCheckpointRequest {})
                    .await
                    .map_err(LogError::hub("GetCheckpoint"))?
                    .into_inner()
                    .note;
                if note.len() > MAX_NOTE {
                    return Err(LogError::invalid("the hub's checkpoint", format!("larger than {MAX_NOTE} bytes")));
                }
                Ok(note)
            }
            Source::Dir(dir) => {
                let path = dir.join("checkpoint");
                tokio::task::spawn_blocking(move || read_bounded(&path, MAX_NOTE)).await.map_err(joined)?
            }
        }
    }

    /// A tile's bytes, checked to have the exact shape its path names.
    pub async fn tile(&self, tile: TilePath) -> Result<Vec<u8>> {
        let data = match self {
            Source::Hub(client) => {
                let t = client
                    .clone()
                    .get_tile(pb::GetTileRequest { path: tile.to_string() })
                    .await
                    .map_err(LogError::hub(format!("GetTile {tile}")))?
                    .into_inner();
                if t.path != tile.to_string() {
                    return Err(LogError::invalid(
                        format!("the hub's {tile}"),
                        format!("it answered with another tile, {:?}", t.path.chars().take(100).collect::<String>()),
                    ));
                }
                t.data
            }
            Source::Dir(dir) => {
                let path = dir.join(tile.to_string());
                let max = match tile {
                    TilePath::Hashes { width, .. } => usize::from(width) * 32,
                    TilePath::Entries { .. } => MAX_BUNDLE,
                };
                tokio::task::spawn_blocking(move || read_bounded(&path, max)).await.map_err(joined)??
            }
        };
        check_shape(tile, &data)?;
        Ok(data)
    }

    /// Entry bundle `index` of a tree in which it holds `width` leaves: its bytes and how
    /// many leaves they hold (`width` or, see below, more).
    async fn bundle(&self, index: u64, width: u16) -> Result<(Vec<u8>, u16)> {
        let wanted = TilePath::Entries { index, width };
        let mut err = match self.tile(wanted).await {
            Ok(data) => return Ok((data, width)),
            Err(e) => e,
        };
        // The hub serves only the newest tree's tiles: after a checkpoint signed since this
        // run began, the partial bundle is a longer one, whose first `width` leaves are the
        // same (or the check of the root says they are not).
        for _ in 0..3 {
            if !err.out_of_range() || u64::from(width) >= WIDTH {
                break;
            }
            let (_, size, _) = peek(&self.checkpoint().await?).map_err(|e| LogError::invalid("checkpoint", e))?;
            let now = size.saturating_sub(index * WIDTH).min(WIDTH) as u16;
            if now <= width {
                break;
            }
            match self.tile(TilePath::Entries { index, width: now }).await {
                Ok(data) => return Ok((data, now)),
                Err(e) => err = e,
            }
        }
        Err(err)
    }
}

fn check_shape(tile: TilePath, data: &[u8]) -> Result<()> {
    let shaped = match tile {
        TilePath::Hashes { width, .. } => parse_hash_tile(data, width).map(|_| ()),
        TilePath::Entries { width, .. } => parse_entry_bundle(data, width).map(|_| ()),
    };
    shaped.map_err(|e| LogError::invalid(tile.to_string(), e))
}

fn joined(e: tokio::task::JoinError) -> LogError {
    LogError::invalid("a worker task", e)
}

mod mirror;
mod verify;
mod witness;

pub use mirror::*;
pub use verify::*;
pub use witness::*;

#[cfg(test)]
mod tests;
