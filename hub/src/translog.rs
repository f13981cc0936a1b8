//! The transparency log's integrator: on one replica at a time (under a lease), it turns
//! the events the log does not hold yet into leaves (`efa_proto::convert::log_leaf`),
//! appends them with their stored hashes, and signs a checkpoint of the new tree with the
//! log's key. It runs every `checkpoint_interval` (default 1 s) and when a burst of events
//! arrives, so a checkpoint follows an event within about a second; events are written and
//! acknowledged without waiting for it, which keeps the log off the write path.

use crate::events::Feed;
use efa_registry::{NewLeaf, Registry, MAX_APPEND};
use efa_tlog::checkpoint::LogSigner;
use rand_core::{OsRng, RngCore};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The default origin of a hub's log, used when its key is created; operators name their
/// own (`log_origin` in the hub's TOML) so checkpoints say which federation they belong to.
pub const DEFAULT_ORIGIN: &str = "efa-hub.local/log";

/// The log's signing key and the verifier key that names it.
pub struct LogKey {
    /// Signs checkpoints.
    pub signer: LogSigner,
    /// `<origin>+<id>+<key>`, what nodes, auditors and witnesses configure.
    pub verifier_key: String,
}

/// Reads the log's signing key from `path`, creating it (owner-only) for `origin` if the
/// file does not exist. Replicas sharing a store must share this file; replicas starting
/// together on one new directory end up with the one key that was created first.
pub fn load_or_create_key(path: &Path, origin: &str) -> Result<LogKey, crate::server::HubError> {
    let bad = |why: String| crate::server::HubError::Config(format!("log key {}: {why}", path.display()));
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let (skey, vkey) = LogSigner::generate(origin).map_err(|e| bad(e.to_string()))?;
            if write_secret(path, &skey).map_err(|e| bad(e.to_string()))? {
                tracing::info!(path = %path.display(), verifier_key = %vkey, "created the transparency log's signing key; give the verifier key to nodes, auditors and witnesses");
            }
            std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?
        }
        Err(e) => return Err(bad(e.to_string())),
    };
    let signer = LogSigner::from_text(&text).map_err(|e| bad(e.to_string()))?;
    let verifier_key = efa_tlog::checkpoint::verifier_key(&text).map_err(|e| bad(e.to_string()))?;
    Ok(LogKey { signer, verifier_key })
}

/// Writes a secret file readable by its owner only, durably, unless it exists: the content
/// goes to a temporary file first and is linked to `path` whole, so a process reading
/// `path` never sees it half-written. False if another process created `path` first.
fn write_secret(path: &Path, text: &str) -> std::io::Result<bool> {
    use std::io::Write;
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(".log.key.{}.tmp", std::process::id()));
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts.open(&tmp)?;
    f.write_all(text.as_bytes())?;
    f.write_all(b"\n")?;
    f.sync_all()?;
    let linked = std::fs::hard_link(&tmp, path);
    std::fs::remove_file(&tmp)?;
    match linked {
        Ok(()) => {
            std::fs::File::open(dir)?.sync_all()?;
            Ok(true)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(e),
    }
}

/// One round: integrates up to [`MAX_APPEND`] events after the log's size and signs a
/// checkpoint of the new tree (also of an unchanged one that has none yet). Returns the
/// signed size, or `None` when nothing changed.
pub fn integrate(registry: &Registry, key: &LogKey) -> efa_registry::Result<Option<u64>> {
    // One log, one key: a replica given another key file must not sign (nodes would see
    // checkpoints of two keys and raise the alarm).
    registry.claim_log_key(&key.verifier_key)?;
    let size = registry.log_size()?;
    let events = registry.events_after(size, MAX_APPEND)?;
    let mut leaves = Vec::with_capacity(events.len());
    for (i, event) in events.iter().enumerate() {
        // Leaf index = seq - 1: a gap means events were trimmed before they were logged.
        if event.seq != size + i as u64 + 1 {
            return Err(efa_registry::Error::failed_precondition(format!(
                "the transparency log needs event {} next, but the event log continues at {} (trimmed before it was logged)",
                size + i as u64 + 1,
                event.seq
            )));
        }
        let release = match &event.kind {
            efa_domain::model::event::EventKind::ReleasePublished { service_id, version } => {
                Some(registry.release(service_id, &version.to_string())?)
            }
            _ => None,
        };
        let name = release.as_ref().map(|r| format!("{} {}", r.service_id, r.version));
        // A fresh salt, drawn only for a leaf that commits to text (one system call then).
        let salt = || {
            let mut salt = [0u8; 16];
            OsRng.fill_bytes(&mut salt);
            salt
        };
        let (leaf, beside) = efa_proto::convert::log_leaf(event, release.as_ref(), salt)?;
        leaves.push(NewLeaf { leaf, beside: beside.map(|b| (b.salt, b.text)), release: name });
    }
    let (new_size, root) =
        if leaves.is_empty() { (size, registry.log_root(size)?) } else { registry.append_log(size, leaves)? };
    Ok(sign_unless_signed(registry, key, new_size, root)?.then_some(new_size))
}

/// Signs and stores the checkpoint of the tree of `size` leaves with `root`, unless the
/// newest stored checkpoint is of that size already; true if it signed.
fn sign_unless_signed(
    registry: &Registry,
    key: &LogKey,
    size: u64,
    root: efa_tlog::Hash,
) -> efa_registry::Result<bool> {
    if registry.latest_checkpoint()?.is_some_and(|(s, _)| s == size) {
        return Ok(false);
    }
    let note = key.signer.sign(size, root).map_err(|e| efa_registry::Error::Storage(e.to_string()))?;
    registry.put_checkpoint(size, note)?;
    Ok(true)
}

/// Before the hub serves anything: if the stored leaves go beyond the newest stored
/// checkpoint, signs the checkpoint of all of them. A crash can lose a checkpoint that was
/// already served (sled shows a write before its flush) while its leaves, flushed before,
/// survive; signing is deterministic (Ed25519 over the same origin, size and root), so this
/// serves the very checkpoint again instead of a smaller one a node would take for a
/// truncated log. It adds no leaves, so it needs no lease.
pub fn sign_stored(registry: &Registry, key: &LogKey) -> efa_registry::Result<()> {
    registry.claim_log_key(&key.verifier_key)?;
    let size = registry.log_size()?;
    if size > 0 && sign_unless_signed(registry, key, size, registry.log_root(size)?)? {
        registry.flush_log()?;
        tracing::info!(size, "signed the checkpoint of the stored log before serving");
    }
    Ok(())
}

/// Events that start a round before the interval is over.
const ROUND_EVENTS: u64 = 4096;

/// Runs [`integrate`] every `every`, or once [`ROUND_EVENTS`] events arrived, on the replica
/// holding the lease.
pub(crate) fn spawn_integrator(
    jobs: &TaskTracker,
    feed: Arc<Feed>,
    key: LogKey,
    every: Duration,
    replica: String,
    shutdown: CancellationToken,
) {
    jobs.spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut bus = feed.bus.subscribe();
        let key = Arc::new(key);
        // Events since the last round: a round runs every `every`, or sooner once this many
        // arrived, so each round's fsync of the log covers many events and a burst never
        // waits long.
        let mut pending = 0u64;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
                got = bus.recv() => {
                    pending += match got {
                        Ok(_) => 1,
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => n,
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                    };
                    if pending < ROUND_EVENTS {
                        continue;
                    }
                    tick.reset();
                }
            }
            pending = 0;
            if !crate::jobs::holds_lease(&feed.registry, "log-integrator", &replica, every * 5).await {
                continue;
            }
            // A stopping hub waits for this task; it leaves a backlog for the next start.
            while !shutdown.is_cancelled() {
                let (r, s) = (feed.registry.clone(), key.clone());
                match tokio::task::spawn_blocking(move || integrate(&r, &s)).await {
                    Ok(Ok(Some(size))) => {
                        feed.metrics.log_size.set(size as i64);
                        tracing::debug!(size, "checkpoint signed");
                        // A large backlog goes in steps of MAX_APPEND; go on until caught up.
                        let behind = feed.registry.head_seq().map(|h| h > size).unwrap_or(false);
                        if !behind {
                            break;
                        }
                    }
                    Ok(Ok(None)) => break,
                    Ok(Err(e)) => {
                        tracing::error!(error = %e, "the transparency log could not integrate new events");
                        break;
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "the transparency log's integrator failed");
                        break;
                    }
                }
            }
        }
    });
}
