//! The adoption ledger: every state change of a (Kommune, service) pair.

use super::ids::{Ags, ServiceId};
use serde::{Deserialize, Serialize};

/// Where a Kommune stands with a service (and usually one of its versions).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AdoptionState {
    /// The node took up the version: installing it or waiting for local approval.
    Evaluating,
    /// The version serves now; a reason, if given, is a note (e.g. that it was yanked).
    Deployed,
    /// The version could not be installed (verification, parameters, deploy); the running
    /// version is unchanged.
    Failed,
    /// The version failed its health check and the previous one was restored.
    RolledBack,
    /// The Kommune declined the version, or the whole service without a version.
    Rejected,
    /// The Kommune stopped serving the service.
    Retired,
}

impl AdoptionState {
    /// Human-readable name for reports and logs, e.g. `rolled back`.
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

/// What a Kommune reports about a service: the state it reached with a version, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdoptionReport {
    /// The service.
    pub service_id: ServiceId,
    /// The version the state refers to (`None` for a rejection or retirement of the service).
    pub version: Option<semver::Version>,
    /// The state reached.
    pub state: AdoptionState,
    /// Why (required for failures, rollbacks and rejections).
    pub reason: String,
}

/// One appended ledger entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdoptionEntry {
    /// The reporting Kommune.
    pub ags: Ags,
    /// The service.
    pub service_id: ServiceId,
    /// The published version the state refers to; `None` only for a rejection or retirement
    /// of the whole service.
    pub version: Option<semver::Version>,
    /// The state reached.
    pub state: AdoptionState,
    /// Why; empty where the state needs no reason.
    pub reason: String,
    /// When the hub accepted the report, ms since the Unix epoch.
    pub at_ms: i64,
}

/// The latest state of a (Kommune, service) pair, derived from the ledger on write.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdoptionRecord {
    /// The newest ledger entry of the pair.
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

    /// True if the Kommune has evaluated or deployed `version`, the condition for rating it.
    pub fn may_rate(&self, version: &semver::Version) -> bool {
        self.seen_versions.contains(version)
    }
}

/// Per-service counters, kept up to date inside every ledger and rating write, so an overview
/// of all services reads one small value per service instead of every (Kommune, service)
/// record (6.2M at federal scale).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceTotals {
    /// (Kommune, service) pairs with any ledger entry.
    pub records: u32,
    /// Pairs with a running version.
    pub running: u32,
    /// Pairs whose latest state is rejected.
    pub rejected: u32,
    /// Ratings: one per Kommune and version, a re-rating replaces its predecessor.
    pub ratings: u32,
    /// Sum of the stars of those ratings, for the average.
    pub stars_sum: u64,
}

impl ServiceTotals {
    /// Moves the counters from `previous` (if the pair had a record) to `record`.
    pub fn replace_record(&mut self, previous: Option<&AdoptionRecord>, record: &AdoptionRecord) {
        match previous {
            Some(p) => {
                self.running = self.running.saturating_sub(u32::from(p.running.is_some()));
                self.rejected = self.rejected.saturating_sub(u32::from(p.latest.state == AdoptionState::Rejected));
            }
            None => self.records += 1,
        }
        self.running += u32::from(record.running.is_some());
        self.rejected += u32::from(record.latest.state == AdoptionState::Rejected);
    }

    /// Counts `stars`, replacing `previous` stars of the same Kommune and version.
    pub fn replace_rating(&mut self, previous: Option<u8>, stars: u8) {
        match previous {
            Some(p) => self.stars_sum = self.stars_sum.saturating_sub(u64::from(p)),
            None => self.ratings += 1,
        }
        self.stars_sum += u64::from(stars);
    }

    /// Mean stars of the service's ratings; 0.0 if it has none.
    pub fn average_stars(&self) -> f64 {
        if self.ratings == 0 {
            0.0
        } else {
            self.stars_sum as f64 / f64::from(self.ratings)
        }
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
