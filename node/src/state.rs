//! The node's persistent state: its event cursor and what it knows per service. Written
//! atomically (temp file, fsync, rename), so a crash leaves the old or the new state.

use crate::error::{NodeError, Result};
use efa_domain::model::adoption::{AdoptionReport, AdoptionState};
use efa_domain::model::ids::parse_version;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Content of `state.json`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct NodeState {
    /// Seq of the last hub event fully handled; streams resume after it.
    pub cursor: u64,
    /// When the node last recorded progress on the hub's event stream, ms since the Unix
    /// epoch; 0: never.
    pub last_sync_ms: i64,
    /// What the node knows per service id; a service appears once anything happened to it.
    #[serde(default)]
    pub services: BTreeMap<String, ServiceState>,
    /// Adoption reports not yet acknowledged by the hub, oldest first. They survive
    /// restarts and go out when the hub is reachable again.
    #[serde(default)]
    pub outbox: Vec<OutboxReport>,
    /// Newest `issued_at_ms` of each Land's signed snapshot seen so far.
    #[serde(default)]
    pub snapshots: BTreeMap<String, i64>,
    /// Freeze-protection warnings from the last check; empty when all is fresh.
    #[serde(default)]
    pub warnings: Vec<String>,
    /// The newest checkpoint of the hub's transparency log this node verified.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log: Option<LogState>,
    /// Set when the hub's log contradicted itself or lost a report: deploys stop until an
    /// operator has looked and runs `efa-node log-reset`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_alarm: Option<String>,
    /// Reports the hub acknowledged, until the node saw them in the log.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub log_pending: Vec<LoggedReport>,
    /// Each Land's key sets the node verified from the log (leaf index and set), oldest
    /// first: the keys a release counts against are those of the newest set before it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub key_sets: BTreeMap<String, Vec<(u64, efa_domain::model::keyset::KeySet)>>,
}

/// Most acknowledged reports kept waiting for the log; beyond it the oldest checks are
/// skipped (a node offline from its hub's log for that long has bigger alarms).
pub const MAX_LOG_PENDING: usize = 10_000;

/// A verified checkpoint, as `state.json` keeps it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogState {
    /// Leaves in the tree.
    pub size: u64,
    /// Root hash, hex.
    pub root: String,
    /// The signed note, as received.
    pub note: String,
}

/// An acknowledged adoption report the node expects in the log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoggedReport {
    /// Seq of the hub's event for it (its leaf is seq - 1).
    pub seq: u64,
    /// The Gemeinde it was for.
    pub ags: String,
    /// The service id.
    pub service: String,
    /// The version, or empty.
    pub version: String,
    /// The state reported.
    pub state: AdoptionState,
    /// When the hub acknowledged it, ms since the Unix epoch.
    pub acked_ms: i64,
}

/// An adoption report waiting for the hub, as `state.json` keeps it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxReport {
    /// The service id.
    pub service: String,
    /// The version, or empty for the service as a whole.
    pub version: String,
    /// The state reached.
    pub state: AdoptionState,
    /// Why.
    pub reason: String,
    /// The Gemeinde it is for, when not the node's own (a covered one, see `covers`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ags: Option<String>,
}

impl OutboxReport {
    /// The report as the domain (and the wire) knows it.
    pub fn to_report(&self) -> Result<AdoptionReport> {
        Ok(AdoptionReport {
            service_id: self.service.parse()?,
            version: if self.version.is_empty() { None } else { Some(parse_version(&self.version)?) },
            state: self.state,
            reason: self.reason.clone(),
        })
    }
}

/// What the node remembers about one service between runs.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ServiceState {
    /// Verified releases waiting for the Kommune's approval (version -> release notes).
    #[serde(default)]
    pub pending: BTreeMap<String, String>,
    /// Versions the Kommune rejected, with the reason.
    #[serde(default)]
    pub rejected: BTreeMap<String, String>,
    /// Yanked versions the node knows of, with the Land's reason.
    #[serde(default)]
    pub yanked: BTreeMap<String, String>,
    /// Releases a rollout keeps from this Kommune for now (version -> why: "scheduled for
    /// ring 2 (alle übrigen)", "rollout halted: ..."); gone once its ring opens.
    #[serde(default)]
    pub scheduled: BTreeMap<String, String>,
    /// Yanked versions whose Land asks Kommunen to stop serving them (version -> reason);
    /// the operator confirms with `efa-node retire`.
    #[serde(default)]
    pub recalled: BTreeMap<String, String>,
    /// The building Land's deprecation notice, as last read from the hub.
    #[serde(default)]
    pub deprecated: Option<String>,
    /// The last failure, to show in `status`.
    pub last_error: Option<String>,
    /// Land code of the publisher, pinned when the first release was verified.
    #[serde(default)]
    pub land: Option<String>,
    /// Version reported as evaluating and not yet resolved (deployed, failed, ...).
    #[serde(default)]
    pub evaluating: Option<String>,
    /// Set by a rollback by hand or `efa-node hold`: newer releases wait for approval
    /// instead of deploying, until the operator approves one or lifts the hold.
    #[serde(default)]
    pub hold: Option<Hold>,
    /// The FIT-Connect destinations last declared to the hub (version and destinations),
    /// so a sync declares only what changed.
    #[serde(default)]
    pub routing_declared: Option<String>,
}

/// A version the Kommune's operator keeps running on purpose.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hold {
    /// The version held.
    pub version: String,
    /// Why, as the operator said it (or the rollback that set it).
    pub reason: String,
    /// When, ms since the Unix epoch.
    pub since_ms: i64,
}

/// `state_dir/state.json`. Every update reads it, changes it and writes it back atomically,
/// so commands run from a shell (`efa-node approve`) and a running agent see each other's
/// changes.
pub struct StateFile {
    path: PathBuf,
    saves: AtomicU64,
}

impl StateFile {
    /// The state file of `state_dir`.
    pub fn new(state_dir: &Path) -> Self {
        StateFile { path: state_dir.join("state.json"), saves: AtomicU64::new(0) }
    }

    /// How often this process wrote the file (each write is an fsync).
    pub fn saves(&self) -> u64 {
        self.saves.load(Ordering::Relaxed)
    }

    /// Reads the state; a missing file is a fresh node.
    pub fn load(&self) -> Result<NodeState> {
        match std::fs::read(&self.path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| NodeError::State { path: self.path.clone(), message: e.to_string() }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(NodeState::default()),
            Err(e) => Err(NodeError::io(&self.path, e)),
        }
    }

    /// Writes the state: temp file, fsync, rename, fsync of the directory.
    pub fn save(&self, state: &NodeState) -> Result<()> {
        self.saves.fetch_add(1, Ordering::Relaxed);
        let dir = self.path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(|e| NodeError::io(dir, e))?;
        let tmp = self.path.with_extension("json.tmp");
        let bytes = serde_json::to_vec_pretty(state)
            .map_err(|e| NodeError::State { path: self.path.clone(), message: e.to_string() })?;
        let mut f = std::fs::File::create(&tmp).map_err(|e| NodeError::io(&tmp, e))?;
        f.write_all(&bytes).and_then(|_| f.sync_all()).map_err(|e| NodeError::io(&tmp, e))?;
        std::fs::rename(&tmp, &self.path).map_err(|e| NodeError::io(&self.path, e))?;
        std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(|e| NodeError::io(dir, e))?;
        Ok(())
    }

    /// Read-modify-write in one step.
    pub fn update<T>(&self, f: impl FnOnce(&mut NodeState) -> T) -> Result<T> {
        let mut state = self.load()?;
        let out = f(&mut state);
        self.save(&state)?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trips_and_damage_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let file = StateFile::new(dir.path());
        assert_eq!(file.load().unwrap().cursor, 0);
        file.update(|s| s.cursor = 42).unwrap();
        assert_eq!(file.load().unwrap().cursor, 42);
        std::fs::write(dir.path().join("state.json"), b"{not json").unwrap();
        assert!(file.load().unwrap_err().to_string().contains("damaged"));
    }
}
