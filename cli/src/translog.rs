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
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
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

// ------------------------------------------------------------------ verify

/// A checkpoint the auditor kept from before, opened with the log's key.
#[derive(Clone, Debug)]
pub struct Kept {
    /// Where it came from, for messages (e.g. the file name).
    pub label: String,
    /// Its tree size.
    pub size: u64,
    /// Its root.
    pub root: Hash,
}

/// Reads a checkpoint kept in a file and opens it with `trust`.
pub fn open_checkpoint_file(trust: &Trust, path: &Path) -> Result<Kept> {
    let note = read_bounded(path, MAX_NOTE)?;
    let cp = trust.open(&note).map_err(|e| LogError::invalid(path.display().to_string(), e))?;
    Ok(Kept { label: format!("the checkpoint in {}", path.display()), size: cp.size, root: cp.root })
}

/// What [`verify`] found: the log checked and the adoption figures recomputed from its leaves.
#[derive(Clone, Debug, Serialize)]
pub struct VerifyReport {
    /// The log's origin (its name in every checkpoint).
    pub origin: String,
    /// Leaves in the newest checkpoint, all re-hashed.
    pub size: u64,
    /// Its root, base64, as in the checkpoint.
    pub root: String,
    /// Configured witnesses that cosigned it.
    pub cosigned_by: Vec<String>,
    /// Kept checkpoints whose roots the leaves reproduced.
    pub kept_checkpoints: Vec<KeptMatch>,
    /// Adoption reports among the leaves.
    pub adoption_reports: u64,
    /// Adoption per service, from the leaves alone.
    pub services: Vec<ServiceFigures>,
}

/// A kept checkpoint the log still matches.
#[derive(Clone, Debug, Serialize)]
pub struct KeptMatch {
    /// Where it came from.
    pub checkpoint: String,
    /// Its size.
    pub size: u64,
    /// Its root, base64.
    pub root: String,
}

/// One service's adoption as the log's leaves give it (the dashboard's rule: each
/// Kommune's reports folded by `AdoptionRecord::apply`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ServiceFigures {
    /// The service id.
    pub service: String,
    /// Kommunen running a version.
    pub running: u64,
    /// Kommunen whose latest state is rejected.
    pub rejected: u64,
    /// Kommunen running a version, per Land (first two AGS digits).
    pub running_per_land: BTreeMap<String, u64>,
}

/// Fetches the newest checkpoint from `source` and opens it with `trust`, re-derives the
/// root of every kept checkpoint and of the newest one from the log's entry bundles, checks
/// each leaf is the event its index says, and recomputes adoption from the leaves. Streams
/// bundle by bundle: memory is one entry per (service, Kommune) pair, not per leaf.
/// `progress` gets (bundles checked, bundles) now and then.
pub async fn verify(
    source: &Source,
    trust: &Trust,
    mut kept: Vec<Kept>,
    progress: &(dyn Fn(u64, u64) + Sync),
) -> Result<VerifyReport> {
    let note = source.checkpoint().await?;
    let newest = trust.open(&note).map_err(|e| LogError::invalid("the newest checkpoint", e))?;
    kept.sort_by_key(|k| k.size);
    if let Some(k) = kept.iter().find(|k| k.size > newest.size) {
        return Err(LogError::Inconsistent(format!(
            "the log was rewritten: {} signs {} leaves, but the newest checkpoint only {} (the log shrank)",
            k.label, k.size, newest.size
        )));
    }
    let mut audit = Audit { kept, ..Audit::default() };
    audit.check_kept()?;
    let bundles = newest.size.div_ceil(WIDTH);
    let mut queue: VecDeque<JoinHandle<Result<Digested>>> = VecDeque::new();
    let mut next = 0u64;
    let run = async {
        loop {
            // Bundles are fetched and hashed ahead, in parallel, and taken in log order.
            while next < bundles && queue.len() < IN_FLIGHT {
                let (s, index) = (source.clone(), next);
                let width = (newest.size - index * WIDTH).min(WIDTH) as u16;
                queue.push_back(tokio::spawn(async move { digest_bundle(&s, index, width).await }));
                next += 1;
            }
            let Some(done) = queue.pop_front() else { break };
            let d = done.await.map_err(joined)??;
            audit.take(d)?;
            let checked = next - queue.len() as u64;
            if checked.is_multiple_of(64) || checked == bundles {
                progress(checked, bundles);
            }
        }
        Ok::<_, LogError>(())
    };
    let ran = run.await;
    for h in &queue {
        h.abort();
    }
    ran?;
    audit.finish(trust.origin(), newest)
}

/// A bundle's leaves, hashed and read, off the sequential path.
struct Digested {
    hashes: Vec<Hash>,
    adoptions: Vec<AdoptionEntry>,
    invalid: Vec<String>,
    unknown: Vec<String>,
}

async fn digest_bundle(source: &Source, index: u64, width: u16) -> Result<Digested> {
    let (data, served) = source.bundle(index, width).await?;
    tokio::task::spawn_blocking(move || digest(index, width, &data, served)).await.map_err(joined)?
}

fn digest(index: u64, width: u16, data: &[u8], served: u16) -> Result<Digested> {
    let tile = TilePath::Entries { index, width: served };
    let leaves = parse_entry_bundle(data, served).map_err(|e| LogError::invalid(tile.to_string(), e))?;
    let leaves = leaves.get(..usize::from(width)).unwrap_or(&leaves[..]);
    let mut d =
        Digested { hashes: Vec::with_capacity(leaves.len()), adoptions: vec![], invalid: vec![], unknown: vec![] };
    for (k, leaf) in leaves.iter().enumerate() {
        let n = index * WIDTH + k as u64;
        d.hashes.push(leaf_hash(leaf));
        match read_leaf(n, leaf) {
            Ok(Some(entry)) => d.adoptions.push(entry),
            Ok(None) => {}
            Err(LeafIssue::Invalid(why)) => d.invalid.push(why),
            Err(LeafIssue::Unknown(why)) => d.unknown.push(why),
        }
    }
    Ok(d)
}

enum LeafIssue {
    /// Not the event its index says: evidence against the log.
    Invalid(String),
    /// A leaf format this efa does not know: update efa.
    Unknown(String),
}

/// Reads leaf `index`: the adoption report it holds, if any.
fn read_leaf(index: u64, bytes: &[u8]) -> Result<Option<AdoptionEntry>, LeafIssue> {
    let leaf =
        pb::LogLeaf::decode(bytes).map_err(|e| LeafIssue::Invalid(format!("leaf {index} is not a LogLeaf ({e})")))?;
    if leaf.format != 1 {
        return Err(LeafIssue::Unknown(format!("leaf {index} has format {}", leaf.format)));
    }
    if leaf.seq != index + 1 {
        return Err(LeafIssue::Invalid(format!("leaf {index} says it is event {}, not event {}", leaf.seq, index + 1)));
    }
    match leaf.kind {
        Some(pb::log_leaf::Kind::AdoptionReported(a)) => adoption_entry(&a, leaf.at_ms)
            .map(Some)
            .map_err(|e| LeafIssue::Invalid(format!("leaf {index} is no valid adoption report: {e}"))),
        _ => Ok(None),
    }
}

/// The ledger entry of an adoption leaf. Its reason is only a commitment in the log, so the
/// entry has none; no figure depends on it.
pub fn adoption_entry(a: &pb::LeafAdoption, at_ms: i64) -> Result<AdoptionEntry, efa_domain::Error> {
    Ok(AdoptionEntry {
        ags: a.ags.parse()?,
        service_id: a.service_id.parse()?,
        version: if a.version.is_empty() { None } else { Some(parse_version(&a.version)?) },
        state: AdoptionState::from_wire(a.state)?,
        reason: String::new(),
        at_ms,
    })
}

/// The sequential part of [`verify`]: the tree's right edge, the kept checkpoints still to
/// meet, and the adoption tally.
#[derive(Default)]
struct Audit {
    frontier: Frontier,
    kept: Vec<Kept>,
    next_kept: usize,
    tally: Tally,
    invalid: u64,
    first_invalid: Option<String>,
    unknown: u64,
    first_unknown: Option<String>,
}

impl Audit {
    fn take(&mut self, d: Digested) -> Result<()> {
        for h in d.hashes {
            self.frontier.push(h);
            self.check_kept()?;
        }
        for entry in d.adoptions {
            self.tally.fold(entry);
        }
        self.invalid += d.invalid.len() as u64;
        self.unknown += d.unknown.len() as u64;
        if self.first_invalid.is_none() {
            self.first_invalid = d.invalid.into_iter().next();
        }
        if self.first_unknown.is_none() {
            self.first_unknown = d.unknown.into_iter().next();
        }
        Ok(())
    }

    /// Compares the re-derived root with every kept checkpoint of the current size.
    fn check_kept(&mut self) -> Result<()> {
        while let Some(k) = self.kept.get(self.next_kept) {
            if k.size != self.frontier.size() {
                break;
            }
            let found = self.frontier.root();
            if found != k.root {
                return Err(rewritten(k.size, &k.label, k.root, found));
            }
            self.next_kept += 1;
        }
        Ok(())
    }

    fn finish(self, origin: &str, newest: Checkpoint) -> Result<VerifyReport> {
        let found = self.frontier.root();
        if self.frontier.size() != newest.size || found != newest.root {
            return Err(rewritten(newest.size, "the newest checkpoint", newest.root, found));
        }
        if let Some(first) = self.first_invalid {
            return Err(LogError::Inconsistent(format!(
                "the log signed leaves that are no valid events: {first}{}",
                more(self.invalid)
            )));
        }
        if let Some(first) = self.first_unknown {
            return Err(LogError::invalid(
                "the log's leaves",
                format!("{first}{}; this efa knows format 1 only: update efa", more(self.unknown)),
            ));
        }
        Ok(VerifyReport {
            origin: origin.to_string(),
            size: newest.size,
            root: newest.root.to_string(),
            cosigned_by: newest.witnesses,
            kept_checkpoints: self
                .kept
                .iter()
                .map(|k| KeptMatch { checkpoint: k.label.clone(), size: k.size, root: k.root.to_string() })
                .collect(),
            adoption_reports: self.tally.reports,
            services: self.tally.figures(),
        })
    }
}

fn rewritten(size: u64, label: &str, expected: Hash, found: Hash) -> LogError {
    LogError::Inconsistent(format!(
        "the log was rewritten: at size {size}, {label} signs root {expected}, but the log's leaves give root {found}"
    ))
}

fn more(n: u64) -> String {
    if n > 1 {
        format!(" (and {} more)", n - 1)
    } else {
        String::new()
    }
}

/// Each (service, Kommune) pair's state, folded from the adoption leaves in log order.
/// Ids are interned: at federal scale there are millions of pairs but few services and
/// versions.
#[derive(Default)]
struct Tally {
    services: HashMap<ServiceId, u32>,
    service_ids: Vec<ServiceId>,
    versions: HashMap<semver::Version, u32>,
    version_list: Vec<semver::Version>,
    /// (service, AGS as a number) → the pair's state.
    pairs: HashMap<(u32, u32), Pair>,
    reports: u64,
}

/// A pair's state in 4 bytes (12 per map entry with its key: 6.2M pairs at federal scale):
/// the running version's index + 1 (0: none) in the low 31 bits, rejected in the top bit.
#[derive(Clone, Copy)]
struct Pair(u32);

impl Pair {
    const REJECTED: u32 = 1 << 31;

    fn new(running: Option<u32>, rejected: bool) -> Self {
        Pair(running.map_or(0, |i| (i + 1) & !Self::REJECTED) | if rejected { Self::REJECTED } else { 0 })
    }

    fn running(self) -> Option<u32> {
        (self.0 & !Self::REJECTED).checked_sub(1)
    }

    fn rejected(self) -> bool {
        self.0 & Self::REJECTED != 0
    }
}

impl Tally {
    fn fold(&mut self, entry: AdoptionEntry) {
        self.reports += 1;
        let service = match self.services.get(&entry.service_id) {
            Some(&i) => i,
            None => {
                let i = self.service_ids.len() as u32;
                self.service_ids.push(entry.service_id.clone());
                self.services.insert(entry.service_id.clone(), i);
                i
            }
        };
        let key = (service, ags_number(&entry.ags));
        // The figures depend on the running version and the latest state only, so a pair
        // keeps just those; the previous record is rebuilt from them for the dashboard's rule
        // (`apply` reads `running` and `seen_versions` of it, and replaces `latest`).
        let previous = self.pairs.get(&key).map(|p| AdoptionRecord {
            latest: entry.clone(),
            running: p.running().and_then(|i| self.version_list.get(i as usize).cloned()),
            seen_versions: Vec::new(),
        });
        let record = AdoptionRecord::apply(previous, entry);
        let running = record.running.map(|v| self.intern_version(v));
        self.pairs.insert(key, Pair::new(running, record.latest.state == AdoptionState::Rejected));
    }

    fn intern_version(&mut self, v: semver::Version) -> u32 {
        if let Some(&i) = self.versions.get(&v) {
            return i;
        }
        let i = self.version_list.len() as u32;
        self.version_list.push(v.clone());
        self.versions.insert(v, i);
        i
    }

    fn figures(&self) -> Vec<ServiceFigures> {
        let mut out: Vec<ServiceFigures> =
            self.service_ids.iter().map(|s| ServiceFigures { service: s.to_string(), ..Default::default() }).collect();
        for (&(service, ags), pair) in &self.pairs {
            let Some(f) = out.get_mut(service as usize) else { continue };
            if pair.running().is_some() {
                f.running += 1;
                *f.running_per_land.entry(format!("{:02}", ags / 1_000_000)).or_default() += 1;
            }
            f.rejected += u64::from(pair.rejected());
        }
        out.sort_by(|a, b| a.service.cmp(&b.service));
        out
    }
}

/// An AGS (8 validated digits) as a number, a compact map key.
fn ags_number(ags: &Ags) -> u32 {
    ags.as_str().bytes().fold(0u32, |n, b| n.wrapping_mul(10).wrapping_add(u32::from(b.wrapping_sub(b'0'))))
}

impl VerifyReport {
    /// The report for people: what was checked, then adoption per service.
    pub fn to_text(&self) -> String {
        use crate::table::{render, Cell, Output, Table};
        let mut out = format!("log {}: {} leaves, root {}\n", self.origin, self.size, self.root);
        if !self.cosigned_by.is_empty() {
            out += &format!("cosigned by: {}\n", self.cosigned_by.join(", "));
        }
        out += &format!("every leaf re-hashed: the root of the newest checkpoint ({} leaves) matches", self.size);
        for k in &self.kept_checkpoints {
            out += &format!("\n{} ({} leaves) matches", k.checkpoint, k.size);
        }
        out += "\n\n";
        let mut t = Table::new(
            "adoption",
            format!("Adoption from the log's {} adoption reports", self.adoption_reports),
            &["service", "running", "rejected", "running per land"],
        );
        for s in &self.services {
            let per_land: Vec<String> = s.running_per_land.iter().map(|(l, n)| format!("{l}: {n}")).collect();
            t.push(vec![
                s.service.clone().into(),
                s.running.into(),
                s.rejected.into(),
                Cell::with_value(per_land.join(", "), serde_json::json!(s.running_per_land)),
            ]);
        }
        out + &render(&[&t], &Output::default()).unwrap_or_default()
    }
}

// ------------------------------------------------------------------ mirror

/// What [`mirror`] did.
#[derive(Clone, Debug, Serialize)]
pub struct MirrorReport {
    /// Leaves in the checkpoint now in the directory.
    pub size: u64,
    /// Files written.
    pub written: u64,
    /// Full tiles already present (they never change), left as they were.
    pub present: u64,
}

/// Copies the log from the hub behind `source` into `to` in the C2SP tlog-tiles layout:
/// every hash tile and entry bundle of the newest checkpoint's tree, then the checkpoint, so
/// a reader never sees a checkpoint whose tiles are missing. A checkpoint already in `to`
/// must be a prefix of the new one (by the hub's consistency proof); otherwise nothing is
/// written and the error is [`LogError::Inconsistent`].
pub async fn mirror(source: &Source, to: &Path) -> Result<MirrorReport> {
    let Source::Hub(client) = source else {
        return Err(LogError::invalid("mirror", "copies from a hub"));
    };
    let mut attempt = 0;
    loop {
        attempt += 1;
        let note = source.checkpoint().await?;
        let (_, size, root) = peek(&note).map_err(|e| LogError::invalid("the hub's checkpoint", e))?;
        check_mirror_prefix(client, to, size, root).await?;
        match copy_tiles(source, to, size).await {
            Ok((written, present)) => {
                write_atomic(&to.join("checkpoint"), &note, true)?;
                return Ok(MirrorReport { size, written: written + 1, present });
            }
            // A newer checkpoint replaced the one being copied, and with it the partial
            // tiles the hub serves; the full tiles written so far stay.
            Err(e) if e.out_of_range() && attempt < 4 => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Refuses to replace a mirror's checkpoint with one that does not extend it.
async fn check_mirror_prefix(client: &LogServiceClient<Channel>, to: &Path, size: u64, root: Hash) -> Result<()> {
    let path = to.join("checkpoint");
    if !path.exists() {
        return Ok(());
    }
    let old = read_bounded(&path, MAX_NOTE)?;
    let (_, old_size, old_root) = peek(&old).map_err(|e| LogError::invalid(path.display().to_string(), e))?;
    let proof = if old_size > 0 && old_size < size { consistency_proof(client, old_size, size).await? } else { vec![] };
    check_consistency(&proof, old_size, old_root, size, root).map_err(|e| match e {
        efa_tlog::Error::Inconsistent(why) => LogError::Inconsistent(format!(
            "the hub's log does not extend the copy in {} ({old_size} leaves); nothing was written: {why}",
            to.display()
        )),
        other => LogError::invalid("the hub's consistency proof", other),
    })
}

async fn copy_tiles(source: &Source, to: &Path, size: u64) -> Result<(u64, u64)> {
    let mut tiles = TilePath::all(size).into_iter();
    let (mut written, mut present) = (0u64, 0u64);
    let mut queue: VecDeque<JoinHandle<Result<bool>>> = VecDeque::new();
    let run = async {
        loop {
            while queue.len() < IN_FLIGHT {
                let Some(tile) = tiles.next() else { break };
                let (s, path) = (source.clone(), to.join(tile.to_string()));
                queue.push_back(tokio::spawn(async move {
                    let full = match tile {
                        TilePath::Hashes { width, .. } | TilePath::Entries { width, .. } => u64::from(width) == WIDTH,
                    };
                    // Full tiles never change; partial ones are small and fetched again.
                    if full && path.exists() {
                        return Ok(false);
                    }
                    let data = s.tile(tile).await?;
                    tokio::task::spawn_blocking(move || write_atomic(&path, &data, false)).await.map_err(joined)??;
                    Ok(true)
                }));
            }
            let Some(h) = queue.pop_front() else { return Ok::<_, LogError>(()) };
            if h.await.map_err(joined)?? {
                written += 1;
            } else {
                present += 1;
            }
        }
    };
    let ran = run.await;
    for h in &queue {
        h.abort();
    }
    ran.map(|()| (written, present))
}

async fn consistency_proof(client: &LogServiceClient<Channel>, old: u64, new: u64) -> Result<Vec<Hash>> {
    let proof = client
        .clone()
        .get_consistency_proof(pb::ConsistencyProofRequest { old_size: old, new_size: new })
        .await
        .map_err(LogError::hub(format!("GetConsistencyProof {old} → {new}")))?
        .into_inner();
    if proof.hashes.len() > 64 {
        return Err(LogError::invalid("the hub's consistency proof", "longer than any proof"));
    }
    proof
        .hashes
        .iter()
        .map(|h| {
            <[u8; 32]>::try_from(h.as_slice())
                .map(Hash)
                .map_err(|_| LogError::invalid("the hub's consistency proof", "a hash is not 32 bytes"))
        })
        .collect()
}

// ------------------------------------------------------------------ witness

/// A witness's key: signs cosignatures; its verifier key names it to the hub and to nodes.
pub struct Witness {
    cosigner: Cosigner,
    verifier_key: String,
}

impl std::fmt::Debug for Witness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Witness({})", self.verifier_key)
    }
}

impl Witness {
    /// The verifier key (`<name>+<id>+<base64>`) nodes and auditors configure.
    pub fn verifier_key(&self) -> &str {
        &self.verifier_key
    }

    /// The witness key from its private text (`PRIVATE+KEY+<name>+<id>+<base64>`).
    pub fn from_text(text: &str) -> Result<Self> {
        let cosigner = Cosigner::from_text(text).map_err(|e| LogError::invalid("witness key", e))?;
        let verifier_key = cosigner.verifier_key();
        Ok(Witness { cosigner, verifier_key })
    }
}

/// Creates a witness key named `name` in `out` (new file, owner-only) and returns its
/// verifier key.
pub fn create_witness_key(name: &str, out: &Path) -> Result<String> {
    let (private, public) = Cosigner::generate(name).map_err(|e| LogError::invalid("witness name", e))?;
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(out).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            LogError::invalid(out.display().to_string(), "exists; refusing to overwrite a witness key")
        } else {
            LogError::io(out)(e)
        }
    })?;
    f.write_all(format!("{private}\n").as_bytes()).and_then(|_| f.sync_all()).map_err(LogError::io(out))?;
    Ok(public)
}

/// Reads a witness key file, refusing one that group or others can read (as ssh does).
pub fn read_witness_key(path: &Path) -> Result<Witness> {
    let mode = std::fs::metadata(path).map_err(LogError::io(path))?.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(LogError::invalid(
            path.display().to_string(),
            format!("readable by other users (mode {mode:o}); run `chmod 600 {}`", path.display()),
        ));
    }
    let text = String::from_utf8(read_bounded(path, MAX_KEY)?)
        .map_err(|_| LogError::invalid(path.display().to_string(), "not a key"))?;
    Witness::from_text(&text)
}

/// What one witness round did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum WitnessOutcome {
    /// Cosigned the newest checkpoint, consistent with the last one cosigned.
    Cosigned {
        /// Its size.
        size: u64,
        /// Its root, base64.
        root: String,
    },
    /// The newest checkpoint carries this witness's cosignature already.
    AlreadyCosigned {
        /// Its size.
        size: u64,
    },
}

/// One round of a witness: opens the hub's newest checkpoint with `trust` (the log's key),
/// checks the hub's consistency proof from the checkpoint kept in `state` (none on the first
/// round), and only then keeps the new checkpoint in `state` and sends the cosignature.
/// An inconsistent log is [`LogError::Inconsistent`], and nothing is cosigned or kept.
pub async fn witness_round(
    client: &LogServiceClient<Channel>,
    trust: &Trust,
    witness: &Witness,
    state: &Path,
    now_unix_secs: u64,
) -> Result<WitnessOutcome> {
    let last = if state.exists() {
        let note = read_bounded(state, MAX_NOTE)?;
        Some(trust.open(&note).map_err(|e| LogError::invalid(state.display().to_string(), e))?)
    } else {
        None
    };
    let note = Source::Hub(client.clone()).checkpoint().await?;
    let cp = trust.open(&note).map_err(|e| LogError::invalid("the hub's checkpoint", e))?;
    if let Some(last) = &last {
        let proof = if last.size > 0 && last.size < cp.size {
            consistency_proof(client, last.size, cp.size).await?
        } else {
            vec![]
        };
        check_consistency(&proof, last.size, last.root, cp.size, cp.root).map_err(|e| match e {
            efa_tlog::Error::Inconsistent(why) => LogError::Inconsistent(format!(
                "refusing to cosign: the hub's checkpoint ({} leaves, root {}) is inconsistent with the one this \
                 witness cosigned ({} leaves, root {}, kept in {}): {why}",
                cp.size,
                cp.root,
                last.size,
                last.root,
                state.display()
            )),
            other => LogError::invalid("the hub's consistency proof", other),
        })?;
    }
    let mine = trust
        .clone()
        .with_witnesses(std::slice::from_ref(&witness.verifier_key), 1)
        .map_err(|e| LogError::invalid("witness key", e))?;
    if mine.open(&note).is_ok() {
        if last.as_ref().map(|l| l.size) != Some(cp.size) {
            write_atomic(state, &note, true)?;
        }
        return Ok(WitnessOutcome::AlreadyCosigned { size: cp.size });
    }
    let cosigned = witness.cosigner.cosign(&cp.note, now_unix_secs).map_err(|e| LogError::invalid("cosigning", e))?;
    // Kept before it is sent: once a cosignature has left, no later round may accept a
    // checkpoint inconsistent with it, even after a crash right here.
    write_atomic(state, &cosigned, true)?;
    client
        .clone()
        .add_cosignature(pb::AddCosignatureRequest { note: cosigned, witness_key: witness.verifier_key.clone() })
        .await
        .map_err(LogError::hub("AddCosignature"))?;
    Ok(WitnessOutcome::Cosigned { size: cp.size, root: cp.root.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use efa_tlog::checkpoint::LogSigner;
    use efa_tlog::tree::MemoryHashes;

    fn adoption_leaf(seq: u64, ags: &str, version: &str, state: pb::AdoptionState) -> Vec<u8> {
        pb::LogLeaf {
            format: 1,
            seq,
            at_ms: 0,
            kind: Some(pb::log_leaf::Kind::AdoptionReported(pb::LeafAdoption {
                ags: ags.into(),
                service_id: "wohngeld-nrw".into(),
                version: version.into(),
                state: state as i32,
                reason: None,
            })),
        }
        .encode_to_vec()
    }

    /// Writes a log of `leaves` in the C2SP layout under `dir`; returns its verifier key.
    fn write_log(dir: &Path, leaves: &[Vec<u8>]) -> (String, LogSigner) {
        let (skey, vkey) = LogSigner::generate("test.example/log").unwrap();
        let signer = LogSigner::from_text(&skey).unwrap();
        let mut hashes = MemoryHashes::default();
        hashes.append(&leaves.iter().map(|l| leaf_hash(l)).collect::<Vec<_>>()).unwrap();
        let size = leaves.len() as u64;
        for tile in TilePath::all(size) {
            let data = match tile {
                TilePath::Hashes { level, index, width } => {
                    efa_tlog::tiles::hash_tile(level, index, width, &hashes).unwrap()
                }
                TilePath::Entries { index, width } => {
                    let first = (index * WIDTH) as usize;
                    efa_tlog::tiles::entry_bundle(&leaves[first..first + usize::from(width)]).unwrap()
                }
            };
            write_atomic(&dir.join(tile.to_string()), &data, false).unwrap();
        }
        let root = efa_tlog::tree::root(size, &hashes).unwrap();
        write_atomic(&dir.join("checkpoint"), &signer.sign(size, root).unwrap(), false).unwrap();
        (vkey, signer)
    }

    #[tokio::test]
    async fn a_directory_log_verifies_and_its_adoption_is_folded_per_kommune() {
        let dir = tempfile::tempdir().unwrap();
        let mut leaves = vec![
            adoption_leaf(1, "05913000", "1.0.0", pb::AdoptionState::Deployed),
            adoption_leaf(2, "05113000", "1.0.0", pb::AdoptionState::Deployed),
            adoption_leaf(3, "05113000", "", pb::AdoptionState::Retired),
            adoption_leaf(4, "09162000", "", pb::AdoptionState::Rejected),
            adoption_leaf(5, "05913000", "1.1.0", pb::AdoptionState::RolledBack),
        ];
        for seq in 6..=300 {
            leaves.push(adoption_leaf(seq, "05711000", "1.0.0", pb::AdoptionState::Evaluating));
        }
        let (vkey, _) = write_log(dir.path(), &leaves);
        let trust = Trust::new(&vkey).unwrap();
        let r = verify(&Source::Dir(dir.path().into()), &trust, vec![], &|_, _| {}).await.unwrap();
        assert_eq!(r.size, 300);
        assert_eq!(r.adoption_reports, 300);
        let f = &r.services[0];
        assert_eq!((f.running, f.rejected), (1, 1), "Dortmund still runs 1.0.0 after the rollback");
        assert_eq!(f.running_per_land, BTreeMap::from([("05".to_string(), 1)]));
    }

    #[tokio::test]
    async fn a_leaf_changed_after_signing_or_a_wrong_seq_is_evidence() {
        let dir = tempfile::tempdir().unwrap();
        let leaves: Vec<Vec<u8>> =
            (1..=10).map(|s| adoption_leaf(s, "05913000", "1.0.0", pb::AdoptionState::Deployed)).collect();
        let (vkey, signer) = write_log(dir.path(), &leaves);
        let trust = Trust::new(&vkey).unwrap();
        let kept = open_checkpoint_file(&trust, &dir.path().join("checkpoint")).unwrap();

        // A rewritten log, signed anew: the kept checkpoint names the size.
        let mut changed = leaves.clone();
        changed[3] = adoption_leaf(4, "05913000", "1.0.0", pb::AdoptionState::Failed);
        let other = tempfile::tempdir().unwrap();
        let (_, _) = write_log(other.path(), &changed);
        let mut hashes = MemoryHashes::default();
        hashes.append(&changed.iter().map(|l| leaf_hash(l)).collect::<Vec<_>>()).unwrap();
        let note = signer.sign(10, efa_tlog::tree::root(10, &hashes).unwrap()).unwrap();
        write_atomic(&other.path().join("checkpoint"), &note, false).unwrap();
        let err = verify(&Source::Dir(other.path().into()), &trust, vec![kept], &|_, _| {}).await.unwrap_err();
        assert!(err.is_inconsistent(), "{err}");
        assert!(err.to_string().contains("at size 10"), "{err}");

        // Signed leaves that lie about their seq.
        let lying: Vec<Vec<u8>> =
            (1..=3).map(|s| adoption_leaf(s + 1, "05913000", "1.0.0", pb::AdoptionState::Deployed)).collect();
        let third = tempfile::tempdir().unwrap();
        let (vkey, _) = write_log(third.path(), &lying);
        let err = verify(&Source::Dir(third.path().into()), &Trust::new(&vkey).unwrap(), vec![], &|_, _| {})
            .await
            .unwrap_err();
        assert!(err.is_inconsistent() && err.to_string().contains("not event 1"), "{err}");
    }

    #[tokio::test]
    async fn a_tile_of_the_wrong_shape_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let leaves: Vec<Vec<u8>> = (1..=3).map(|s| vec![s as u8; 5]).collect();
        let (_vkey, _) = write_log(dir.path(), &leaves);
        std::fs::write(dir.path().join("tile/0/000.p/3"), [0u8; 95]).unwrap();
        let s = Source::Dir(dir.path().into());
        let err = s.tile(TilePath::Hashes { level: 0, index: 0, width: 3 }).await.unwrap_err();
        assert!(matches!(err, LogError::Invalid { .. }), "{err}");
        assert!(s.tile(TilePath::Entries { index: 0, width: 3 }).await.is_ok());
        assert!(s.tile(TilePath::Entries { index: 0, width: 2 }).await.is_err());
    }

    #[test]
    fn a_witness_key_round_trips_privately() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.key");
        let vkey = create_witness_key("witness.example/efa", &path).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let w = read_witness_key(&path).unwrap();
        assert_eq!(w.verifier_key(), vkey);
        assert!(create_witness_key("witness.example/efa", &path).is_err(), "never overwritten");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(read_witness_key(&path).unwrap_err().to_string().contains("chmod 600"));
        assert_eq!(key_arg(" abc \n").unwrap(), "abc");
    }
}
