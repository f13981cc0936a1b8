//! Rollout plans as a Land writes them (a TOML file), and a rollout's status as tables.
//!
//! ```toml
//! decide_within = "14d"          # then pause and tell the Land; omit for no limit
//!
//! [[ring]]
//! name = "Pilot"
//! kommunen = ["05913000", "05711000"]
//!
//! [[ring]]
//! name = "Kreis Unna"
//! kreise = ["05978"]
//!
//! [[ring]]
//! name = "Zehn Prozent"
//! share_percent = 10            # of the Gemeinden no earlier ring names, by a hash of AGS and release
//!
//! [gates]                       # before the next ring opens
//! min_healthy = 2
//! max_failed_percent = 0        # failed or rolled back, of the ring's reports
//! min_bake = "1h"
//! min_ratings = 1
//! min_stars = 3.5
//! max_blocked_percent = 20      # pre-flight blocked, of the ring's pre-flight results
//! min_criteria = { payment = 3.0 }
//! ```
//!
//! Gemeinden no ring names form a last ring, "alle übrigen".

use crate::table::{time_cell, Cell, Table};
use efa_domain::model::rollout::RolloutPlan;
use efa_proto::v1 as pb;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A plan file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PlanFileError {
    /// Not readable.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Not TOML of the expected shape, or a value the plan does not allow.
    #[error("{path}: {why}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong, in words.
        why: String,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PlanFile {
    #[serde(default)]
    ring: Vec<RingFile>,
    #[serde(default)]
    gates: GatesFile,
    decide_within: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RingFile {
    name: String,
    #[serde(default)]
    kommunen: Vec<String>,
    #[serde(default)]
    kreise: Vec<String>,
    #[serde(default)]
    share_percent: u32,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct GatesFile {
    #[serde(default)]
    min_healthy: u32,
    max_failed_percent: Option<u32>,
    min_bake: Option<String>,
    #[serde(default)]
    min_ratings: u32,
    min_stars: Option<f64>,
    #[serde(default)]
    min_criteria: BTreeMap<String, f64>,
    max_blocked_percent: Option<u32>,
}

/// Stars (1.0..=5.0) as the tenths the wire carries.
fn tenths(what: &str, stars: f64) -> Result<u32, String> {
    if (1.0..=5.0).contains(&stars) {
        Ok((stars * 10.0).round() as u32)
    } else {
        Err(format!("{what} = {stars}: stars are 1.0 to 5.0"))
    }
}

fn duration_secs(what: &str, text: &str) -> Result<u64, String> {
    humantime::parse_duration(text)
        .map(|d| d.as_secs())
        .map_err(|e| format!("{what} = {text:?}: {e} (write e.g. \"90m\", \"1h\" or \"14d\")"))
}

/// Parses a plan file's text into the plan the hub receives, validated as the hub would.
pub fn parse_plan(text: &str) -> Result<RolloutPlan, String> {
    let f: PlanFile = toml::from_str(text).map_err(|e| e.to_string())?;
    if f.ring.is_empty() {
        return Err("name at least one [[ring]] (e.g. the pilot Kommunen)".into());
    }
    let g = f.gates;
    let wire = pb::RolloutPlan {
        rings: f
            .ring
            .into_iter()
            .map(|r| pb::RolloutRing {
                name: r.name,
                kommunen: r.kommunen,
                kreise: r.kreise,
                share_percent: r.share_percent,
            })
            .collect(),
        gates: Some(pb::RolloutGates {
            min_healthy: g.min_healthy,
            max_failed_percent: g.max_failed_percent,
            min_bake_secs: g.min_bake.as_deref().map(|t| duration_secs("min_bake", t)).transpose()?.unwrap_or(0),
            min_ratings: g.min_ratings,
            min_stars_tenths: g.min_stars.map(|s| tenths("min_stars", s)).transpose()?,
            min_criterion_tenths: g
                .min_criteria
                .iter()
                .map(|(c, s)| Ok((c.clone(), tenths(&format!("min_criteria.{c}"), *s)?)))
                .collect::<Result<_, String>>()?,
            max_blocked_percent: g.max_blocked_percent,
        }),
        decide_within_secs: f
            .decide_within
            .as_deref()
            .map(|t| duration_secs("decide_within", t))
            .transpose()?
            .unwrap_or(0),
    };
    RolloutPlan::try_from(wire).map_err(|e| e.to_string())
}

/// Reads and checks a plan file.
pub fn read_plan(path: &Path) -> Result<RolloutPlan, PlanFileError> {
    let text =
        std::fs::read_to_string(path).map_err(|source| PlanFileError::Io { path: path.to_path_buf(), source })?;
    parse_plan(&text).map_err(|why| PlanFileError::Invalid { path: path.to_path_buf(), why })
}

/// German labels of the rollout states, as the dashboard shows them.
pub fn state_label(state: &str) -> &'static str {
    match state {
        "running" => "läuft",
        "paused" => "pausiert",
        "halted" => "gestoppt",
        "complete" => "abgeschlossen",
        _ => "unbekannt",
    }
}

/// The status as three tables: the rollout, its rings, the open ring's gates.
pub fn status_tables(s: &pb::RolloutStatus) -> [Table; 3] {
    let mut head = Table::new(
        "rollout",
        "Rollout",
        &["Service", "Version", "Plan", "State", "Reason", "Open ring", "Since", "Verdict"],
    );
    let open_name = s.rings.get(s.open_ring as usize).map(|r| r.name.clone()).unwrap_or_default();
    head.push(vec![
        Cell::text(&s.service_id),
        Cell::text(&s.version),
        Cell::text(if s.land_code.is_empty() { "building Land".to_string() } else { format!("Land {}", s.land_code) }),
        Cell::text(&s.state),
        Cell::opt(&s.reason),
        Cell::text(format!("{} {}", s.open_ring + 1, open_name)),
        time_cell(s.opened_at_ms),
        Cell::opt(&s.verdict),
    ]);
    let mut rings = Table::new(
        "rings",
        "Rings",
        &["Ring", "Name", "Open", "Healthy", "Failed", "Rolled back", "Ratings", "Stars", "Pre-flight", "Blocked"],
    );
    for r in &s.rings {
        rings.push(vec![
            Cell::with_value((r.ring + 1).to_string(), (r.ring + 1).into()),
            Cell::text(&r.name),
            Cell::with_value(if r.open { "yes" } else { "no" }, r.open.into()),
            Cell::with_value(r.healthy.to_string(), r.healthy.into()),
            Cell::with_value(r.failed.to_string(), r.failed.into()),
            Cell::with_value(r.rolled_back.to_string(), r.rolled_back.into()),
            Cell::with_value(r.ratings.to_string(), r.ratings.into()),
            if r.ratings == 0 { Cell::none() } else { Cell::float(f64::from(r.average_stars_tenths) / 10.0, 1) },
            Cell::with_value(r.preflights.to_string(), r.preflights.into()),
            Cell::with_value(r.blocked.to_string(), r.blocked.into()),
        ]);
    }
    let mut gates = Table::new("gates", "Gates of the open ring", &["Gate", "Value", "Threshold", "State"]);
    for g in &s.gates {
        gates.push(vec![Cell::text(&g.gate), Cell::text(&g.value), Cell::text(&g.threshold), Cell::text(&g.state)]);
    }
    [head, rings, gates]
}

#[cfg(test)]
mod tests {
    use super::*;
    use efa_domain::model::rollout::Members;

    #[test]
    fn a_plan_file_reads_with_durations_and_stars() {
        let plan = parse_plan(
            r#"
            decide_within = "14d"
            [[ring]]
            name = "Pilot"
            kommunen = ["05913000", "05711000"]
            [[ring]]
            name = "Zehn Prozent"
            share_percent = 10
            [gates]
            min_healthy = 2
            min_bake = "90m"
            min_stars = 3.5
            min_criteria = { payment = 3.0 }
            "#,
        )
        .unwrap();
        assert_eq!(plan.rings.len(), 2);
        assert!(matches!(plan.rings[1].members, Members::Share { percent: 10 }));
        assert_eq!(plan.gates.min_bake_secs, 5_400);
        assert_eq!(plan.gates.min_stars_tenths, Some(35));
        assert_eq!(plan.decide_within_secs, Some(14 * 86_400));
    }

    #[test]
    fn a_bad_plan_file_says_what_is_wrong() {
        let err = |text: &str| parse_plan(text).unwrap_err();
        assert!(err("").contains("at least one [[ring]]"));
        assert!(err("[[ring]]\nname = \"P\"\nkommunen = [\"0591300\"]").contains("0591300"));
        assert!(err("[[ring]]\nname = \"P\"\nshare_percent = 10\n[gates]\nmin_stars = 7").contains("1.0 to 5.0"));
        assert!(err("[[ring]]\nname = \"P\"\nshare_percent = 10\n[gates]\nmin_bake = \"soon\"").contains("min_bake"));
        assert!(err("[[ring]]\nname = \"P\"\nshare_percent = 10\nkreise = [\"05978\"]").contains("exactly one"));
        assert!(err("[[rings]]\nname = \"P\"").contains("unknown field"));
    }
}
