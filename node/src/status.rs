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

/// Collects the status of every service the node has state or files for.
pub fn collect(agent: &Agent) -> Result<(u64, i64, usize, Vec<ServiceStatus>)> {
    let state = agent.state()?;
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
    Ok((state.cursor, state.last_sync_ms, state.outbox.len(), out))
}
