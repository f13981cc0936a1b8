//! Result rows, the stdout table and the JSON file.

use comfy_table::{presets::UTF8_FULL_CONDENSED, Table};
use serde::Serialize;

/// One measured figure, optionally with the peer's figure for the same thing and a goal.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    pub scenario: String,
    pub metric: String,
    pub value: f64,
    pub unit: String,
    /// The peer's figure for the same measurement (nginx, etcd, raw fsync).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer_name: Option<String>,
    /// `value / peer`, or the median of per-pair ratios ([`Row::ratio`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ratio: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub goal: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub goal_met: Option<bool>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub note: String,
}

impl Row {
    pub fn new(scenario: &str, metric: impl Into<String>, value: f64, unit: &str) -> Self {
        Row {
            scenario: scenario.into(),
            metric: metric.into(),
            value,
            unit: unit.into(),
            peer: None,
            peer_name: None,
            ratio: None,
            goal: None,
            goal_met: None,
            note: String::new(),
        }
    }

    pub fn peer(mut self, name: &str, value: Option<f64>) -> Self {
        self.peer_name = Some(name.into());
        self.peer = value;
        self.ratio = value.filter(|p| *p > 0.0).map(|p| self.value / p);
        self
    }

    /// Sets the ratio column to `ratio` instead of `value / peer`: with interleaved pairs
    /// the median of the per-pair ratios judges, which is not the ratio of the medians.
    pub fn ratio(mut self, ratio: Option<f64>) -> Self {
        self.ratio = ratio;
        self
    }

    pub fn goal(mut self, text: &str, met: Option<bool>) -> Self {
        self.goal = Some(text.into());
        self.goal_met = met;
        self
    }

    pub fn note(mut self, note: impl Into<String>) -> Self {
        self.note = note.into();
        self
    }
}

#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub mode: String,
    pub machine: Machine,
    pub rows: Vec<Row>,
    /// What could not be measured and why (e.g. a peer that could not be installed).
    pub notes: Vec<String>,
}

#[derive(Debug, Default, Serialize)]
pub struct Machine {
    pub cpus: usize,
    pub mem_total_kib: u64,
    pub kernel: String,
    pub work_dir: String,
    pub release_build: bool,
}

fn fmt_num(v: f64) -> String {
    if v == 0.0 {
        "0".into()
    } else if v.abs() >= 1000.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
    }
}

impl Report {
    pub fn table(&self) -> Table {
        let mut t = Table::new();
        t.load_preset(UTF8_FULL_CONDENSED);
        t.set_header(["scenario", "metric", "value", "unit", "peer", "ratio", "goal", "met", "note"]);
        for r in &self.rows {
            let peer = match (&r.peer_name, r.peer) {
                (Some(n), Some(v)) => format!("{n}: {}", fmt_num(v)),
                (Some(n), None) => format!("{n}: n/a"),
                _ => String::new(),
            };
            t.add_row([
                r.scenario.clone(),
                r.metric.clone(),
                fmt_num(r.value),
                r.unit.clone(),
                peer,
                r.ratio.map(|x| format!("{x:.2}×")).unwrap_or_default(),
                r.goal.clone().unwrap_or_default(),
                match r.goal_met {
                    Some(true) => "yes".into(),
                    Some(false) => "NO".into(),
                    None => String::new(),
                },
                r.note.clone(),
            ]);
        }
        t
    }
}
