//! Rollout plans and status on the wire.

use crate::v1 as pb;
use efa_domain::error::{Error, Result};
use efa_domain::model::rating::Criterion;
use efa_domain::model::rollout::{
    GateCheck, GateState, Gates, Members, Position, Ring, RingCounts, Rollout, RolloutPlan, Status, Verdict,
};

fn small(field: &'static str, v: u32) -> Result<u8> {
    u8::try_from(v).map_err(|_| Error::invalid(field, format!("{v} is out of range")))
}

impl TryFrom<pb::RolloutRing> for Ring {
    type Error = Error;

    fn try_from(r: pb::RolloutRing) -> Result<Self> {
        let given =
            usize::from(!r.kommunen.is_empty()) + usize::from(!r.kreise.is_empty()) + usize::from(r.share_percent > 0);
        if given != 1 {
            return Err(Error::invalid(
                "rings",
                format!(
                    "ring {} must name exactly one of kommunen, kreise or share_percent",
                    efa_domain::error::echo(&r.name)
                ),
            ));
        }
        let members = if !r.kommunen.is_empty() {
            Members::Kommunen(r.kommunen.iter().map(|a| a.parse()).collect::<Result<_>>()?)
        } else if !r.kreise.is_empty() {
            Members::Kreise(r.kreise.iter().map(|k| k.parse()).collect::<Result<_>>()?)
        } else {
            Members::Share { percent: small("share_percent", r.share_percent)? }
        };
        Ok(Ring { name: r.name, members })
    }
}

impl From<&Ring> for pb::RolloutRing {
    fn from(r: &Ring) -> Self {
        let mut out = pb::RolloutRing { name: r.name.clone(), ..Default::default() };
        match &r.members {
            Members::Kommunen(set) => out.kommunen = set.iter().map(|a| a.to_string()).collect(),
            Members::Kreise(set) => out.kreise = set.iter().map(|k| k.to_string()).collect(),
            Members::Share { percent } => out.share_percent = u32::from(*percent),
        }
        out
    }
}

impl TryFrom<pb::RolloutGates> for Gates {
    type Error = Error;

    fn try_from(g: pb::RolloutGates) -> Result<Self> {
        let mut criteria = std::collections::BTreeMap::new();
        for (name, tenths) in g.min_criterion_tenths {
            let c: Criterion = name.parse()?;
            criteria.insert(c, small("min_criterion_tenths", tenths)?);
        }
        Ok(Gates {
            min_healthy: g.min_healthy,
            max_failed_percent: g.max_failed_percent.map(|v| small("max_failed_percent", v)).transpose()?,
            min_bake_secs: g.min_bake_secs,
            min_ratings: g.min_ratings,
            min_stars_tenths: g.min_stars_tenths.map(|v| small("min_stars_tenths", v)).transpose()?,
            min_criterion_tenths: criteria,
            max_blocked_percent: g.max_blocked_percent.map(|v| small("max_blocked_percent", v)).transpose()?,
        })
    }
}

impl From<&Gates> for pb::RolloutGates {
    fn from(g: &Gates) -> Self {
        pb::RolloutGates {
            min_healthy: g.min_healthy,
            max_failed_percent: g.max_failed_percent.map(u32::from),
            min_bake_secs: g.min_bake_secs,
            min_ratings: g.min_ratings,
            min_stars_tenths: g.min_stars_tenths.map(u32::from),
            min_criterion_tenths: g
                .min_criterion_tenths
                .iter()
                .map(|(c, t)| (c.as_str().to_string(), u32::from(*t)))
                .collect(),
            max_blocked_percent: g.max_blocked_percent.map(u32::from),
        }
    }
}

impl TryFrom<pb::RolloutPlan> for RolloutPlan {
    type Error = Error;

    /// Parses and validates a plan.
    fn try_from(p: pb::RolloutPlan) -> Result<Self> {
        if p.rings.len() > efa_domain::model::rollout::MAX_RINGS {
            return Err(Error::invalid("rings", format!("at most {} rings", efa_domain::model::rollout::MAX_RINGS)));
        }
        let plan = RolloutPlan {
            rings: p.rings.into_iter().map(Ring::try_from).collect::<Result<_>>()?,
            gates: p.gates.map(Gates::try_from).transpose()?.unwrap_or_default(),
            decide_within_secs: (p.decide_within_secs > 0).then_some(p.decide_within_secs),
        };
        plan.validate()?;
        Ok(plan)
    }
}

impl From<&RolloutPlan> for pb::RolloutPlan {
    fn from(p: &RolloutPlan) -> Self {
        pb::RolloutPlan {
            rings: p.rings.iter().map(Into::into).collect(),
            gates: Some((&p.gates).into()),
            decide_within_secs: p.decide_within_secs.unwrap_or(0),
        }
    }
}

impl From<&Position> for pb::RolloutPosition {
    fn from(p: &Position) -> Self {
        pb::RolloutPosition {
            ring: p.ring as u32,
            ring_name: p.ring_name.clone(),
            admitted: p.admitted,
            note: p.note.clone(),
        }
    }
}

/// The wire name of a rollout's state, and why it is paused or halted.
pub fn rollout_state(s: &Status) -> (&'static str, String) {
    match s {
        Status::Running => ("running", String::new()),
        Status::Paused { reason } => ("paused", reason.clone()),
        Status::Halted { reason } => ("halted", reason.clone()),
        Status::Complete => ("complete", String::new()),
    }
}

fn gate(c: &GateCheck) -> pb::RolloutGateCheck {
    let state = match c.state {
        GateState::Met => "met",
        GateState::Waiting => "waiting",
        GateState::Failed => "failed",
    };
    pb::RolloutGateCheck {
        gate: c.gate.clone(),
        value: c.value.clone(),
        threshold: c.threshold.clone(),
        state: state.into(),
    }
}

/// A rollout's status: `counts` per ring (the open ring's and earlier ones'), the open
/// ring's gates and verdict at `now_ms`.
pub fn rollout_status(
    service: &str,
    version: &str,
    land: Option<&efa_domain::model::ids::LandCode>,
    r: &Rollout,
    counts: &[RingCounts],
    now_ms: i64,
) -> pb::RolloutStatus {
    let (state, reason) = rollout_state(&r.status);
    // Once every ring is open there is nothing left to judge.
    let open = counts.get(r.open).filter(|_| r.status != Status::Complete);
    let (gates, verdict) = match open {
        Some(c) => {
            let verdict = match r.plan.gates.verdict(c, now_ms, r.deadline_at_ms()) {
                Verdict::Pass => "pass".to_string(),
                Verdict::Fail(why) => format!("fail: {why}"),
                Verdict::Wait(why) => format!("wait: {why}"),
                Verdict::Overdue(why) => format!("overdue: {why}"),
            };
            (r.plan.gates.check(c, now_ms).iter().map(gate).collect(), verdict)
        }
        None => (Vec::new(), String::new()),
    };
    let rings = (0..r.plan.ring_count())
        .map(|i| {
            let c = counts.get(i).cloned().unwrap_or_default();
            pb::RolloutRingStatus {
                ring: i as u32,
                name: r.plan.ring_name(i).to_string(),
                open: i <= r.open,
                healthy: c.healthy,
                failed: c.failed,
                rolled_back: c.rolled_back,
                ratings: c.ratings,
                average_stars_tenths: if c.ratings == 0 { 0 } else { (c.stars_sum * 10 / u64::from(c.ratings)) as u32 },
                preflights: c.preflights,
                blocked: c.blocked,
            }
        })
        .collect();
    pb::RolloutStatus {
        service_id: service.into(),
        version: version.into(),
        state: state.into(),
        reason,
        open_ring: r.open as u32,
        opened_at_ms: r.opened_at_ms,
        plan: Some((&r.plan).into()),
        rings,
        gates,
        verdict,
        land_code: land.map(|l| l.to_string()).unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plan_travels_and_a_ring_names_one_kind_of_member() {
        let wire = pb::RolloutPlan {
            rings: vec![
                pb::RolloutRing {
                    name: "Pilot".into(),
                    kommunen: vec!["05711000".into(), "05913000".into()],
                    ..Default::default()
                },
                pb::RolloutRing { name: "Zehn Prozent".into(), share_percent: 10, ..Default::default() },
            ],
            gates: Some(pb::RolloutGates {
                min_healthy: 2,
                min_stars_tenths: Some(35),
                min_criterion_tenths: [("payment".to_string(), 30)].into(),
                ..Default::default()
            }),
            decide_within_secs: 0,
        };
        let plan = RolloutPlan::try_from(wire.clone()).unwrap();
        assert_eq!(plan.gates.min_criterion_tenths.get(&Criterion::Payment), Some(&30));
        assert_eq!(pb::RolloutPlan::from(&plan), wire);
        let both = pb::RolloutRing {
            name: "X".into(),
            kommunen: vec!["05913000".into()],
            share_percent: 5,
            ..Default::default()
        };
        assert!(Ring::try_from(both).is_err());
        assert!(Ring::try_from(pb::RolloutRing { name: "X".into(), ..Default::default() }).is_err());
        assert!(Ring::try_from(pb::RolloutRing { name: "X".into(), share_percent: 300, ..Default::default() }).is_err());
        let bad_area =
            pb::RolloutGates { min_criterion_tenths: [("schönheit".to_string(), 30)].into(), ..Default::default() };
        assert!(Gates::try_from(bad_area).is_err());
    }
}
