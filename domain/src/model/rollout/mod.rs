//! Rollout rings: a release reaches Kommunen ring by ring, and the next ring opens only when
//! the open one passes its gates: enough healthy deployments, few failures, time to bake,
//! enough ratings with good enough stars, few pre-flight blocks. The rules here are pure:
//! which ring a Kommune is in, and what a ring's counters say about its gates. Storing a
//! plan, counting and acting on a verdict belong to the registry and the hub.

mod state;
mod tally;

pub use state::{Rollout, Status, Transition};
pub use tally::Tally;

use super::ids::{Ags, KreisCode, ServiceId};
use super::rating::Criterion;
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// Most rings a plan may have (an implicit last ring for everyone else comes on top).
pub const MAX_RINGS: usize = 10;
/// Most Kommunen or Kreise a ring may name.
pub const MAX_RING_MEMBERS: usize = 2_000;
/// Longest ring name, in characters.
pub const MAX_RING_NAME: usize = 64;

/// Who is in a ring.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Members {
    /// These Gemeinden (e.g. the pilot Kommunen).
    Kommunen(BTreeSet<Ags>),
    /// Every Gemeinde of these Kreise.
    Kreise(BTreeSet<KreisCode>),
    /// A share of the Gemeinden not named by an earlier ring, in percent, chosen by a hash
    /// of AGS and release: the same Gemeinden every time the plan is evaluated.
    Share {
        /// 1..=100.
        percent: u8,
    },
}

/// One ring of a plan.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ring {
    /// Shown to Kommunen and Länder, e.g. "Pilot".
    pub name: String,
    /// Who is in it.
    pub members: Members,
}

/// What a ring must show before the next one opens. Shares are in percent of the ring's
/// Kommunen that reported on the release; stars in tenths (35 = 3.5 stars).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gates {
    /// Kommunen of the ring that run the release.
    pub min_healthy: u32,
    /// Failed or rolled-back deployments, as a share of the ring's reports: above it, the
    /// rollout halts.
    pub max_failed_percent: Option<u8>,
    /// Seconds the ring must have been open.
    pub min_bake_secs: u64,
    /// Ratings of the release from the ring.
    pub min_ratings: u32,
    /// Average stars (tenths) once `min_ratings` are in: below it, the rollout halts.
    pub min_stars_tenths: Option<u8>,
    /// Average score (tenths) per Mindestanforderungen area once `min_ratings` are in.
    pub min_criterion_tenths: BTreeMap<Criterion, u8>,
    /// Pre-flight results that block the release, as a share of the ring's results: above
    /// it, the rollout halts.
    pub max_blocked_percent: Option<u8>,
}

/// A release's rollout plan, set by the building Land (or an offering Land for its own
/// Kommunen). Kommunen in no ring form a last ring, "alle übrigen", which opens after the
/// last named ring passed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolloutPlan {
    /// In the order they open.
    pub rings: Vec<Ring>,
    /// The same gates close every ring.
    pub gates: Gates,
    /// After this long without a verdict a ring's rollout pauses and the Land is told;
    /// `None`: it waits as long as it takes.
    pub decide_within_secs: Option<u64>,
}

impl RolloutPlan {
    /// Checks sizes, names and shares.
    pub fn validate(&self) -> Result<()> {
        if self.rings.is_empty() || self.rings.len() > MAX_RINGS {
            return Err(Error::invalid(
                "rings",
                format!("a plan has 1 to {MAX_RINGS} rings, not {}", self.rings.len()),
            ));
        }
        let mut names = BTreeSet::new();
        let mut shares = 0u32;
        for (i, ring) in self.rings.iter().enumerate() {
            let name = ring.name.trim();
            if name.is_empty() || name.chars().count() > MAX_RING_NAME || name.chars().any(char::is_control) {
                return Err(Error::invalid(
                    "rings",
                    format!("ring {} needs a name of 1 to {MAX_RING_NAME} printable characters", i + 1),
                ));
            }
            if !names.insert(name.to_lowercase()) {
                return Err(Error::invalid("rings", format!("two rings are called {name:?}")));
            }
            match &ring.members {
                Members::Kommunen(set) if set.is_empty() || set.len() > MAX_RING_MEMBERS => {
                    return Err(Error::invalid(
                        "rings",
                        format!("ring {name:?} names 1 to {MAX_RING_MEMBERS} Kommunen, not {}", set.len()),
                    ))
                }
                Members::Kreise(set) if set.is_empty() || set.len() > MAX_RING_MEMBERS => {
                    return Err(Error::invalid(
                        "rings",
                        format!("ring {name:?} names 1 to {MAX_RING_MEMBERS} Kreise, not {}", set.len()),
                    ))
                }
                Members::Share { percent } => {
                    if !(1..=100).contains(percent) {
                        return Err(Error::invalid("rings", format!("ring {name:?}: a share is 1 to 100 percent")));
                    }
                    shares += u32::from(*percent);
                }
                _ => {}
            }
        }
        if shares > 100 {
            return Err(Error::invalid(
                "rings",
                format!("the rings' shares add up to {shares} percent, more than 100"),
            ));
        }
        let g = &self.gates;
        for (what, pct) in
            [("max_failed_percent", g.max_failed_percent), ("max_blocked_percent", g.max_blocked_percent)]
        {
            if pct.is_some_and(|p| p > 100) {
                return Err(Error::invalid(what, "a share is 0 to 100 percent"));
            }
        }
        let tenths = g.min_stars_tenths.into_iter().chain(g.min_criterion_tenths.values().copied());
        for t in tenths {
            if !(10..=50).contains(&t) {
                return Err(Error::invalid("gates", format!("{t} tenths of a star: a threshold is 1.0 to 5.0 stars")));
            }
        }
        Ok(())
    }

    /// Number of rings including the last one for everyone else.
    pub fn ring_count(&self) -> usize {
        self.rings.len() + 1
    }

    /// The ring (0-based) a Kommune is in for this release: the first named ring that holds
    /// it, else a share ring by its bucket, else the last ring (`rings.len()`).
    pub fn ring_of(&self, ags: &Ags, service: &ServiceId, version: &semver::Version) -> usize {
        for (i, ring) in self.rings.iter().enumerate() {
            match &ring.members {
                Members::Kommunen(set) if set.contains(ags) => return i,
                Members::Kreise(set) if set.contains(&ags.kreis()) => return i,
                _ => {}
            }
        }
        let bucket = bucket(ags, service, version);
        let mut upto = 0u32;
        for (i, ring) in self.rings.iter().enumerate() {
            if let Members::Share { percent } = ring.members {
                upto += u32::from(percent) * 100;
                if bucket < upto {
                    return i;
                }
            }
        }
        self.rings.len()
    }

    /// The ring's name, "alle übrigen" for the last one.
    pub fn ring_name(&self, ring: usize) -> &str {
        self.rings.get(ring).map(|r| r.name.as_str()).unwrap_or(LAST_RING)
    }
}

/// Where one Kommune stands in a release's rollout: what nodes are told with the release.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    /// Its ring, 0-based.
    pub ring: usize,
    /// The ring's name.
    pub ring_name: String,
    /// Whether it may deploy the release now: its ring is open and the rollout not halted.
    pub admitted: bool,
    /// Why not, or why the rollout is paused or halted; empty otherwise.
    pub note: String,
}

impl Rollout {
    /// Where Kommune `ags` stands in this rollout of `service` `version`.
    pub fn position(&self, ags: &Ags, service: &ServiceId, version: &semver::Version) -> Position {
        let ring = self.plan.ring_of(ags, service, version);
        let ring_name = self.plan.ring_name(ring).to_string();
        let note = match &self.status {
            Status::Halted { reason } => format!("rollout halted: {reason}"),
            Status::Paused { reason } if ring > self.open => format!("rollout paused: {reason}"),
            _ if ring > self.open => format!("scheduled for ring {} ({ring_name})", ring + 1),
            _ => String::new(),
        };
        Position { ring, ring_name, admitted: self.admits(ring), note }
    }
}

/// Name of the implicit last ring.
pub const LAST_RING: &str = "alle übrigen";

/// A Kommune's bucket for a release, 0..10,000: SHA-256 of AGS, service and version, so a
/// share ring holds the same Gemeinden whenever it is evaluated, and other Gemeinden for
/// another release (nobody is always first).
pub fn bucket(ags: &Ags, service: &ServiceId, version: &semver::Version) -> u32 {
    use sha2::{Digest as _, Sha256};
    let h = Sha256::digest(format!("{ags}\n{service}\n{version}").as_bytes());
    let n = u64::from_be_bytes(h[..8].try_into().expect("8 bytes"));
    (n % 10_000) as u32
}

/// What the open ring has shown so far for the release.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RingCounts {
    /// When the ring opened (ms since the epoch).
    pub opened_at_ms: i64,
    /// Kommunen of the ring that run the release.
    pub healthy: u32,
    /// Failed deployments.
    pub failed: u32,
    /// Deployments that failed their health check and were rolled back.
    pub rolled_back: u32,
    /// Ratings of the release from the ring.
    pub ratings: u32,
    /// Their stars added up.
    pub stars_sum: u64,
    /// Per area: (scores, their sum).
    pub criteria: BTreeMap<Criterion, (u32, u64)>,
    /// Pre-flight results of the ring.
    pub preflights: u32,
    /// Of them, those that block the release.
    pub blocked: u32,
}

/// How one gate stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum GateState {
    /// Met.
    Met,
    /// Not yet met; more time or data may meet it.
    Waiting,
    /// Broken: the rollout halts.
    Failed,
}

/// One gate's value against its threshold, for people to read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GateCheck {
    /// The gate, e.g. "healthy deployments".
    pub gate: String,
    /// What the ring shows, e.g. "2".
    pub value: String,
    /// What it must show, e.g. "≥ 2".
    pub threshold: String,
    /// How it stands.
    pub state: GateState,
}

/// What a ring's counters say.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Verdict {
    /// Every gate is met: the next ring may open.
    Pass,
    /// A gate is broken: no further ring opens.
    Fail(String),
    /// Too little data or time so far.
    Wait(String),
    /// Still waiting after the plan's deadline: the rollout pauses and the Land is told.
    Overdue(String),
}

fn percent(part: u32, whole: u32) -> u32 {
    if whole == 0 {
        0
    } else {
        ((u64::from(part) * 100).div_ceil(u64::from(whole))) as u32
    }
}

fn stars(tenths: u64) -> String {
    format!("{}.{}", tenths / 10, tenths % 10)
}

impl Gates {
    /// Every gate's state for `counts` at `now_ms`.
    pub fn check(&self, counts: &RingCounts, now_ms: i64) -> Vec<GateCheck> {
        let mut out = Vec::new();
        let mut push = |gate: &str, value: String, threshold: String, state| {
            out.push(GateCheck { gate: gate.into(), value, threshold, state });
        };
        let met_or_wait = |ok: bool| if ok { GateState::Met } else { GateState::Waiting };
        push(
            "healthy deployments",
            counts.healthy.to_string(),
            format!("≥ {}", self.min_healthy),
            met_or_wait(counts.healthy >= self.min_healthy),
        );
        if let Some(max) = self.max_failed_percent {
            let bad = counts.failed + counts.rolled_back;
            let share = percent(bad, bad + counts.healthy);
            let state = if share > u32::from(max) { GateState::Failed } else { GateState::Met };
            push("failed or rolled back", format!("{share} % ({bad})"), format!("≤ {max} %"), state);
        }
        let baked_secs = (now_ms.saturating_sub(counts.opened_at_ms) / 1000).max(0) as u64;
        push(
            "bake time",
            format!("{baked_secs} s"),
            format!("≥ {} s", self.min_bake_secs),
            met_or_wait(baked_secs >= self.min_bake_secs),
        );
        let rated = counts.ratings >= self.min_ratings;
        push("ratings", counts.ratings.to_string(), format!("≥ {}", self.min_ratings), met_or_wait(rated));
        // Averages in tenths, rounded down: 3.46 stars do not meet 3.5.
        let average = |sum: u64, n: u32| if n == 0 { 0 } else { sum * 10 / u64::from(n) };
        if let Some(min) = self.min_stars_tenths {
            let avg = average(counts.stars_sum, counts.ratings);
            let state = match (counts.ratings, rated) {
                (0, _) => GateState::Waiting,
                (_, true) if avg < u64::from(min) => GateState::Failed,
                (_, true) => GateState::Met,
                (_, false) => GateState::Waiting,
            };
            let value = if counts.ratings == 0 { "–".into() } else { format!("{} stars", stars(avg)) };
            push("average stars", value, format!("≥ {}", stars(u64::from(min))), state);
        }
        for (criterion, min) in &self.min_criterion_tenths {
            let (n, sum) = counts.criteria.get(criterion).copied().unwrap_or((0, 0));
            let avg = average(sum, n);
            let state = match (n, rated) {
                (0, _) | (_, false) => GateState::Waiting,
                _ if avg < u64::from(*min) => GateState::Failed,
                _ => GateState::Met,
            };
            let value = if n == 0 { "–".into() } else { stars(avg) };
            push(criterion.label(), value, format!("≥ {}", stars(u64::from(*min))), state);
        }
        if let Some(max) = self.max_blocked_percent {
            let share = percent(counts.blocked, counts.preflights);
            let state = if share > u32::from(max) { GateState::Failed } else { GateState::Met };
            push(
                "pre-flight blocked",
                format!("{share} % ({} of {})", counts.blocked, counts.preflights),
                format!("≤ {max} %"),
                state,
            );
        }
        out
    }

    /// The verdict on `counts` at `now_ms`; `deadline_ms` (when the plan sets one) turns a
    /// wait into [`Verdict::Overdue`].
    pub fn verdict(&self, counts: &RingCounts, now_ms: i64, deadline_ms: Option<i64>) -> Verdict {
        let checks = self.check(counts, now_ms);
        let describe = |c: &GateCheck| format!("{} {} (needs {})", c.gate, c.value, c.threshold);
        if let Some(broken) = checks.iter().find(|c| c.state == GateState::Failed) {
            return Verdict::Fail(describe(broken));
        }
        let waiting: Vec<String> = checks.iter().filter(|c| c.state == GateState::Waiting).map(describe).collect();
        if waiting.is_empty() {
            return Verdict::Pass;
        }
        let why = waiting.join("; ");
        match deadline_ms {
            Some(d) if now_ms >= d => Verdict::Overdue(why),
            _ => Verdict::Wait(why),
        }
    }
}

#[cfg(test)]
mod tests;
