//! What `efa-node status` shows: per service, what runs, what is installed, what waits.

use crate::agent::Agent;
use crate::error::Result;
use std::collections::BTreeSet;

#[derive(Clone, Debug)]
pub struct ServiceStatus {
    pub service: String,
    pub running: Option<String>,
    pub installed: Vec<String>,
    pub pending: Vec<String>,
    pub rejected: Vec<String>,
    pub yanked: Vec<(String, String)>,
    pub last_error: Option<String>,
}

pub struct NodeStatus {
    pub cursor: u64,
    pub last_sync_ms: i64,
    pub queued_reports: usize,
    /// Freeze-protection and staleness warnings.
    pub warnings: Vec<String>,
    pub services: Vec<ServiceStatus>,
}

/// Collects the status of every service the node has state or files for.
pub fn collect(agent: &Agent) -> Result<NodeStatus> {
    let state = agent.state()?;
    let mut warnings = state.warnings.clone();
    let max_age_ms = agent.config().max_staleness_secs.saturating_mul(1000) as i64;
    let age_ms = efa_registry::now_ms() - state.last_sync_ms;
    if state.last_sync_ms == 0 {
        warnings.push("never synced with the hub".into());
    } else if age_ms > max_age_ms {
        warnings.push(format!(
            "last sync with the hub was {} s ago, longer than max_staleness_secs = {}",
            age_ms / 1000,
            agent.config().max_staleness_secs
        ));
    }
    let mut names: BTreeSet<String> = state.services.keys().cloned().collect();
    if let Ok(entries) = std::fs::read_dir(&agent.config().deploy_dir) {
        for e in entries.flatten() {
            if let Some(n) = e.file_name().to_str() {
                if !n.starts_with('.') && e.path().is_dir() {
                    names.insert(n.to_string());
                }
            }
        }
    }
    let mut out = Vec::new();
    for name in names {
        let Ok(id) = name.parse() else { continue };
        let s = state.services.get(&name).cloned().unwrap_or_default();
        out.push(ServiceStatus {
            running: agent.deployer().current_version(&id)?,
            installed: agent.deployer().installed_versions(&id)?.iter().map(|v| v.to_string()).collect(),
            pending: s.pending.keys().cloned().collect(),
            rejected: s.rejected.keys().map(|v| if v.is_empty() { "(service)".into() } else { v.clone() }).collect(),
            yanked: s.yanked.into_iter().collect(),
            last_error: s.last_error,
            service: name,
        });
    }
    Ok(NodeStatus {
        cursor: state.cursor,
        last_sync_ms: state.last_sync_ms,
        queued_reports: state.outbox.len(),
        warnings,
        services: out,
    })
}
