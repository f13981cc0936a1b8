//! What `efa-node status` shows: per service, what runs, what is installed, what waits.
//! [`collect`] is a pure function of the node's state and what is on disk.

use crate::deploy::Deployer;
use crate::error::Result;
use crate::state::NodeState;
use std::collections::{BTreeMap, BTreeSet};

/// One service as the node sees it.
#[derive(Clone, Debug)]
pub struct ServiceStatus {
    /// The service id.
    pub service: String,
    /// The version `current` points to.
    pub running: Option<String>,
    /// Versions unpacked in the deploy dir.
    pub installed: Vec<String>,
    /// Verified versions waiting for approval.
    pub pending: Vec<String>,
    /// Versions the Kommune rejected (`(service)` for the whole service).
    pub rejected: Vec<String>,
    /// Yanked versions with the Land's reason.
    pub yanked: Vec<(String, String)>,
    /// Releases its rollout keeps from this Kommune for now, and why.
    pub scheduled: Vec<(String, String)>,
    /// Recalled versions (the Land asks to stop serving them), with the reason.
    pub recalled: Vec<(String, String)>,
    /// The building Land's deprecation notice.
    pub deprecated: Option<String>,
    /// The last failure.
    pub last_error: Option<String>,
    /// Held at a version by the operator, and why: newer releases wait for approval.
    pub hold: Option<crate::state::Hold>,
}

/// The node as `efa-node status` shows it.
pub struct NodeStatus {
    /// Seq of the last hub event handled.
    pub cursor: u64,
    /// When the node last caught up with the hub (0: never).
    pub last_sync_ms: i64,
    /// Adoption reports waiting for the hub.
    pub queued_reports: usize,
    /// Freeze-protection and staleness warnings.
    pub warnings: Vec<String>,
    /// The hub's transparency log contradicted itself (see `efa-node check-log`).
    pub log_alarm: bool,
    /// Leaves of the newest checkpoint the node verified (0: none).
    pub log_size: u64,
    /// Every service the node has state or files for.
    pub services: Vec<ServiceStatus>,
}

/// What is deployed of one service.
#[derive(Clone, Debug, Default)]
pub struct Installed {
    /// The version `current` points to.
    pub running: Option<String>,
    /// Versions unpacked, oldest first.
    pub installed: Vec<String>,
}

/// Reads from disk what is deployed of every service in the deploy dir or in `state`.
pub fn installed(deployer: &Deployer, state: &NodeState) -> Result<BTreeMap<String, Installed>> {
    let mut names: BTreeSet<String> = state.services.keys().cloned().collect();
    if let Ok(entries) = std::fs::read_dir(deployer.root()) {
        for e in entries.flatten() {
            if let Some(n) = e.file_name().to_str() {
                if !n.starts_with('.') && e.path().is_dir() {
                    names.insert(n.to_string());
                }
            }
        }
    }
    let mut out = BTreeMap::new();
    for name in names {
        let Ok(id) = name.parse() else { continue };
        out.insert(
            name,
            Installed {
                running: deployer.current_version(&id)?,
                installed: deployer.installed_versions(&id)?.iter().map(|v| v.to_string()).collect(),
            },
        );
    }
    Ok(out)
}

/// The status of the node at `now_ms`; a last sync older than `max_staleness_secs` warns.
pub fn collect(
    state: &NodeState,
    installed: &BTreeMap<String, Installed>,
    max_staleness_secs: u64,
    now_ms: i64,
) -> NodeStatus {
    let mut warnings = state.warnings.clone();
    for (land, sets) in &state.key_sets {
        if let Some((_, set)) = sets.last() {
            if set.expires_ms < now_ms {
                warnings.push(format!(
                    "the key set of Land {land} (version {}) expired; the Land must publish the next one",
                    set.version
                ));
            }
        }
    }
    if let Some(alarm) = &state.log_alarm {
        warnings.insert(
            0,
            format!("TRANSPARENCY LOG ALARM: {alarm} (deploys stopped; `efa-node log-reset` once resolved)"),
        );
    }
    let max_age_ms = i64::try_from(max_staleness_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
    let age_ms = now_ms.saturating_sub(state.last_sync_ms);
    if state.last_sync_ms == 0 {
        warnings.push("never synced with the hub".into());
    } else if age_ms > max_age_ms {
        warnings.push(format!(
            "last sync with the hub was {} s ago, longer than max_staleness_secs = {max_staleness_secs}",
            age_ms / 1000
        ));
    }
    let services = installed
        .iter()
        .map(|(name, disk)| {
            let s = state.services.get(name).cloned().unwrap_or_default();
            ServiceStatus {
                running: disk.running.clone(),
                installed: disk.installed.clone(),
                pending: s.pending.keys().cloned().collect(),
                rejected: s
                    .rejected
                    .keys()
                    .map(|v| if v.is_empty() { "(service)".into() } else { v.clone() })
                    .collect(),
                yanked: s.yanked.into_iter().collect(),
                scheduled: s.scheduled.into_iter().collect(),
                recalled: s.recalled.into_iter().collect(),
                deprecated: s.deprecated,
                last_error: s.last_error,
                hold: s.hold,
                service: name.clone(),
            }
        })
        .collect();
    NodeStatus {
        cursor: state.cursor,
        last_sync_ms: state.last_sync_ms,
        queued_reports: state.outbox.len(),
        warnings,
        log_alarm: state.log_alarm.is_some(),
        log_size: state.log.as_ref().map_or(0, |l| l.size),
        services,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staleness_and_pending_approvals_show() {
        let mut state = NodeState { last_sync_ms: 1_000, ..Default::default() };
        state.services.entry("wohngeld-nrw".into()).or_default().pending.insert("1.1.0".into(), "notes".into());
        let disk = BTreeMap::from([(
            "wohngeld-nrw".to_string(),
            Installed { running: Some("1.0.0".into()), installed: vec!["1.0.0".into()] },
        )]);
        let st = collect(&state, &disk, 60, 1_000 + 61_000);
        assert_eq!(st.services[0].pending, ["1.1.0"]);
        assert_eq!(st.services[0].running.as_deref(), Some("1.0.0"));
        assert!(st.warnings[0].contains("61 s ago"), "{:?}", st.warnings);
        assert!(collect(&NodeState::default(), &disk, 60, 0).warnings[0].contains("never synced"));
    }
}
