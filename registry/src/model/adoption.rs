//! The adoption ledger: every state change of a (Kommune, service) pair.

use super::ids::{Ags, ServiceId};
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AdoptionState {
    Evaluating,
    Deployed,
    Failed,
    RolledBack,
    Rejected,
    Retired,
}

impl AdoptionState {
    pub fn as_str(self) -> &'static str {
        match self {
            AdoptionState::Evaluating => "evaluating",
            AdoptionState::Deployed => "deployed",
            AdoptionState::Failed => "failed",
            AdoptionState::RolledBack => "rolled back",
            AdoptionState::Rejected => "rejected",
            AdoptionState::Retired => "retired",
        }
    }

    /// States that must say why.
    pub fn needs_reason(self) -> bool {
        matches!(self, AdoptionState::Failed | AdoptionState::RolledBack | AdoptionState::Rejected)
    }

    /// States that must name a version.
    pub fn needs_version(self) -> bool {
        matches!(
            self,
            AdoptionState::Evaluating | AdoptionState::Deployed | AdoptionState::Failed | AdoptionState::RolledBack
        )
    }
}

impl std::fmt::Display for AdoptionState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One appended ledger entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdoptionEntry {
    pub ags: Ags,
    pub service_id: ServiceId,
    pub version: Option<semver::Version>,
    pub state: AdoptionState,
    pub reason: String,
    pub at_ms: i64,
}

/// The latest state of a (Kommune, service) pair, derived from the ledger on write.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdoptionRecord {
    pub latest: AdoptionEntry,
    /// The version the Kommune serves now. A failed or rolled-back update leaves it as it was;
    /// retiring clears it.
    pub running: Option<semver::Version>,
    /// Versions this Kommune has evaluated or deployed, which it may therefore rate.
    pub seen_versions: Vec<semver::Version>,
}

impl AdoptionRecord {
    /// Folds a new entry into the current record.
    pub fn apply(previous: Option<AdoptionRecord>, entry: AdoptionEntry) -> AdoptionRecord {
        let mut running = previous.as_ref().and_then(|p| p.running.clone());
        let mut seen = previous.map(|p| p.seen_versions).unwrap_or_default();
        match entry.state {
            AdoptionState::Deployed => running = entry.version.clone(),
            AdoptionState::Retired => running = None,
            _ => {}
        }
        if matches!(entry.state, AdoptionState::Evaluating | AdoptionState::Deployed) {
            if let Some(v) = &entry.version {
                if !seen.contains(v) {
                    seen.push(v.clone());
                    seen.sort();
                }
            }
        }
        AdoptionRecord { latest: entry, running, seen_versions: seen }
    }

    pub fn may_rate(&self, version: &semver::Version) -> bool {
        self.seen_versions.contains(version)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(state: AdoptionState, version: Option<&str>) -> AdoptionEntry {
        AdoptionEntry {
            ags: "05913000".parse().unwrap(),
            service_id: "wohngeld-nrw".parse().unwrap(),
            version: version.map(|v| v.parse().unwrap()),
            state,
            reason: String::new(),
            at_ms: 0,
        }
    }

    #[test]
    fn failed_update_keeps_running_version() {
        let r = AdoptionRecord::apply(None, entry(AdoptionState::Deployed, Some("1.0.0")));
        let r = AdoptionRecord::apply(Some(r), entry(AdoptionState::Evaluating, Some("1.1.0")));
        let r = AdoptionRecord::apply(Some(r), entry(AdoptionState::RolledBack, Some("1.1.0")));
        assert_eq!(r.running, Some("1.0.0".parse().unwrap()));
        assert!(r.may_rate(&"1.1.0".parse().unwrap()));
        assert!(!r.may_rate(&"2.0.0".parse().unwrap()));
        let r = AdoptionRecord::apply(Some(r), entry(AdoptionState::Retired, None));
        assert_eq!(r.running, None);
    }
}
