//! What reports return: plain rows that the hub sends and the CLIs print.

use super::adoption::{AdoptionEntry, AdoptionRecord};
use super::catalog::Kommune;
use super::rating::{Rating, RatingAggregate};

/// An adoption record with the Kommune's name, for reports.
#[derive(Clone, Debug)]
pub struct Adopter {
    /// The Gemeinde, if it is in the register.
    pub kommune: Option<Kommune>,
    /// Its current record for the service.
    pub record: AdoptionRecord,
}

/// The level of a coverage row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CoverageLevel {
    /// A Land.
    Land,
    /// A Kreis or kreisfreie Stadt.
    Kreis,
}

impl CoverageLevel {
    /// `land` or `kreis`.
    pub fn as_str(self) -> &'static str {
        match self {
            CoverageLevel::Land => "land",
            CoverageLevel::Kreis => "kreis",
        }
    }
}

/// Gemeinden running a service in one Land or Kreis.
#[derive(Clone, Debug)]
pub struct CoverageRow {
    /// Land or Kreis.
    pub level: CoverageLevel,
    /// Its code.
    pub code: String,
    /// Its name.
    pub name: String,
    /// Gemeinden running the service.
    pub adopted: u32,
    /// Gemeinden in the register.
    pub total: u32,
    /// Inhabitants of the Gemeinden running it (GV100AD population).
    pub inhabitants_adopted: u64,
    /// Inhabitants of all its Gemeinden.
    pub inhabitants_total: u64,
}

/// Rating aggregates of a service.
#[derive(Clone, Debug)]
pub struct RatingSummary {
    /// Over every version.
    pub overall: RatingAggregate,
    /// Per version, newest version first.
    pub per_version: Vec<(semver::Version, RatingAggregate)>,
}

/// Ratings and rejections, newest first, each with the Kommune's name.
#[derive(Clone, Debug, Default)]
pub struct Feedback {
    /// Ratings with the rating Kommune's name.
    pub ratings: Vec<(Rating, String)>,
    /// Latest-state rejections with the rejecting Kommune's name.
    pub rejections: Vec<(AdoptionEntry, String)>,
}

/// What a Kommune runs and everything it reported.
#[derive(Clone, Debug)]
pub struct KommuneReport {
    /// The Gemeinde.
    pub kommune: Kommune,
    /// Name of its Land.
    pub land_name: String,
    /// Name of its Kreis.
    pub kreis_name: String,
    /// Its current record per service.
    pub current: Vec<AdoptionRecord>,
    /// Its ledger, oldest first.
    pub history: Vec<AdoptionEntry>,
}

/// One row of the routing table: where a Kommune's applications for a service go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoutingRow {
    /// The Kommune's Amtlicher Regionalschlüssel (what FIT-Connect routes by).
    pub ars: String,
    /// The Kommune.
    pub ags: crate::model::ids::Ags,
    /// Its name.
    pub kommune: String,
    /// The service.
    pub service_id: crate::model::ids::ServiceId,
    /// The version it runs.
    pub version: semver::Version,
    /// The parameter that holds the destination.
    pub parameter: String,
    /// The FIT-Connect destination ID.
    pub destination: String,
}

/// Coverage of a service at one moment: after the report at `at_ms`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimelinePoint {
    /// When coverage changed, ms since the Unix epoch.
    pub at_ms: i64,
    /// Gemeinden running the service from then on.
    pub kommunen: u32,
    /// Their inhabitants.
    pub inhabitants: u64,
}

/// Coverage over time from a service's ledger entries, each with its Kommune's
/// population: a Kommune counts from its first `deployed` until it reports `retired`
/// (a failed or rolled-back update leaves the running version in place). One point per
/// change, oldest first.
pub fn coverage_over_time(entries: &mut [(crate::model::adoption::AdoptionEntry, u64)]) -> Vec<TimelinePoint> {
    use crate::model::adoption::AdoptionState;
    entries.sort_by_key(|(e, _)| e.at_ms);
    let mut running: std::collections::BTreeMap<crate::model::ids::Ags, u64> = std::collections::BTreeMap::new();
    let mut out: Vec<TimelinePoint> = Vec::new();
    for (e, people) in entries.iter() {
        let changed = match e.state {
            AdoptionState::Deployed => running.insert(e.ags.clone(), *people).is_none(),
            AdoptionState::Retired => running.remove(&e.ags).is_some(),
            _ => false,
        };
        if changed {
            out.push(TimelinePoint {
                at_ms: e.at_ms,
                kommunen: running.len() as u32,
                inhabitants: running.values().sum(),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::adoption::{AdoptionEntry, AdoptionState};

    fn e(ags: &str, state: AdoptionState, at_ms: i64) -> (AdoptionEntry, u64) {
        let entry = AdoptionEntry {
            ags: ags.parse().unwrap(),
            service_id: "wohngeld-nrw".parse().unwrap(),
            version: Some("1.0.0".parse().unwrap()),
            state,
            reason: String::new(),
            at_ms,
        };
        (entry, if ags == "05913000" { 593_317 } else { 86_868 })
    }

    #[test]
    fn coverage_counts_from_the_first_deploy_until_retirement() {
        use AdoptionState::*;
        let mut entries = vec![
            e("05978024", Deployed, 30),
            e("05913000", Evaluating, 10),
            e("05913000", Deployed, 20),
            e("05913000", RolledBack, 40),
            e("05913000", Deployed, 50),
            e("05978024", Retired, 60),
        ];
        let t = coverage_over_time(&mut entries);
        let got: Vec<(i64, u32, u64)> = t.iter().map(|p| (p.at_ms, p.kommunen, p.inhabitants)).collect();
        assert_eq!(got, vec![(20, 1, 593_317), (30, 2, 680_185), (60, 1, 593_317)]);
    }
}
