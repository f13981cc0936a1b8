//! Where a release's rollout stands, and how it moves: by the controller's verdicts on the
//! open ring, or by the Land's hand. Each move is a [`Transition`] the hub logs as an event.

use super::{RolloutPlan, Verdict};
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};

/// The rollout's state as a whole.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Status {
    /// Rings open as their gates pass.
    Running,
    /// Waiting for the Land: paused by hand, or a ring was overdue. Open rings stay open.
    Paused {
        /// Why, for the Land and the Kommunen.
        reason: String,
    },
    /// A gate broke, or the Land aborted: no node deploys the release any more. Nodes that
    /// run it keep it and are told.
    Halted {
        /// Why.
        reason: String,
    },
    /// Every ring is open.
    Complete,
}

/// A release's rollout: its plan and how far it got.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rollout {
    /// The plan it follows.
    pub plan: RolloutPlan,
    /// Rings `0..=open` are open.
    pub open: usize,
    /// When ring `open` opened, or the rollout last resumed (ms since the epoch); bake time
    /// and deadline count from here.
    pub opened_at_ms: i64,
    /// Running, paused, halted or complete.
    pub status: Status,
}

/// A move of a rollout, as logged.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Transition {
    /// The Land set the plan; its first ring is open.
    Started,
    /// Ring `ring` opened (by its predecessor's gates, or by hand).
    Opened {
        /// The ring now open.
        ring: usize,
        /// Whether the Land opened it by hand.
        by_hand: bool,
    },
    /// The rollout paused.
    Paused {
        /// Why.
        reason: String,
    },
    /// The rollout runs again.
    Resumed,
    /// The rollout halted for good.
    Halted {
        /// Why.
        reason: String,
    },
}

impl Rollout {
    /// A new rollout: its first ring opens at `now_ms`.
    pub fn start(plan: RolloutPlan, now_ms: i64) -> Result<Self> {
        plan.validate()?;
        Ok(Rollout { plan, open: 0, opened_at_ms: now_ms, status: Status::Running })
    }

    /// Whether a node in `ring` may deploy the release now.
    pub fn admits(&self, ring: usize) -> bool {
        !matches!(self.status, Status::Halted { .. }) && ring <= self.open
    }

    /// The last ring ("alle übrigen").
    fn last(&self) -> usize {
        self.plan.ring_count() - 1
    }

    /// Applies the controller's verdict on the open ring; `None` if nothing moves.
    pub fn on_verdict(&mut self, verdict: &Verdict, now_ms: i64) -> Option<Transition> {
        if self.status != Status::Running {
            return None;
        }
        match verdict {
            Verdict::Pass if self.open < self.last() => Some(self.open_next(now_ms, false)),
            Verdict::Pass => None,
            Verdict::Fail(why) => {
                let reason = format!("ring {:?}: {why}", self.plan.ring_name(self.open));
                self.status = Status::Halted { reason: reason.clone() };
                Some(Transition::Halted { reason })
            }
            Verdict::Overdue(why) => {
                let reason = format!("ring {:?} has no verdict in time: {why}", self.plan.ring_name(self.open));
                self.status = Status::Paused { reason: reason.clone() };
                Some(Transition::Paused { reason })
            }
            Verdict::Wait(_) => None,
        }
    }

    fn open_next(&mut self, now_ms: i64, by_hand: bool) -> Transition {
        self.open += 1;
        self.opened_at_ms = now_ms;
        if self.open == self.last() {
            self.status = Status::Complete;
        }
        Transition::Opened { ring: self.open, by_hand }
    }

    /// The Land opens the next ring without waiting for the gates (a running or paused
    /// rollout; a halted one stays halted).
    pub fn promote(&mut self, now_ms: i64) -> Result<Transition> {
        match &self.status {
            Status::Halted { reason } => {
                Err(Error::FailedPrecondition(format!("the rollout is halted ({reason}); publish a fix instead")))
            }
            Status::Complete => Err(Error::FailedPrecondition("every ring is open already".into())),
            Status::Running | Status::Paused { .. } => {
                self.status = Status::Running;
                Ok(self.open_next(now_ms, true))
            }
        }
    }

    /// The Land pauses a running rollout.
    pub fn pause(&mut self, reason: &str) -> Result<Transition> {
        match self.status {
            Status::Running => {
                self.status = Status::Paused { reason: reason.to_string() };
                Ok(Transition::Paused { reason: reason.to_string() })
            }
            _ => Err(Error::FailedPrecondition("only a running rollout can be paused".into())),
        }
    }

    /// The Land resumes a paused rollout: the open ring's bake time and deadline count anew
    /// from now (counting on from before the pause would pause an overdue ring again at
    /// the controller's next round, before anyone could report).
    pub fn resume(&mut self, now_ms: i64) -> Result<Transition> {
        match self.status {
            Status::Paused { .. } => {
                self.status = Status::Running;
                self.opened_at_ms = now_ms;
                Ok(Transition::Resumed)
            }
            _ => Err(Error::FailedPrecondition("only a paused rollout can be resumed".into())),
        }
    }

    /// The Land stops the rollout for good: no node deploys the release any more.
    pub fn abort(&mut self, reason: &str) -> Result<Transition> {
        if reason.trim().is_empty() {
            return Err(Error::invalid("reason", "say why the rollout stops"));
        }
        match self.status {
            Status::Halted { .. } => Err(Error::FailedPrecondition("the rollout is halted already".into())),
            _ => {
                self.status = Status::Halted { reason: reason.to_string() };
                Ok(Transition::Halted { reason: reason.to_string() })
            }
        }
    }

    /// How long the open ring may wait for a verdict, in ms.
    fn deadline_ms(&self) -> Option<i64> {
        self.plan.decide_within_secs.map(|s| i64::try_from(s.saturating_mul(1000)).unwrap_or(i64::MAX))
    }

    /// When the open ring becomes overdue (ms since the epoch), if the plan sets a deadline.
    pub fn deadline_at_ms(&self) -> Option<i64> {
        self.deadline_ms().map(|d| self.opened_at_ms.saturating_add(d))
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Gates, Members, Ring, RolloutPlan, Verdict};
    use super::*;

    fn rollout() -> Rollout {
        let plan = RolloutPlan {
            rings: vec![
                Ring { name: "Pilot".into(), members: Members::Kommunen(["05913000".parse().unwrap()].into()) },
                Ring { name: "Zehn Prozent".into(), members: Members::Share { percent: 10 } },
            ],
            gates: Gates::default(),
            decide_within_secs: Some(3600),
        };
        Rollout::start(plan, 0).unwrap()
    }

    #[test]
    fn passing_rings_open_one_after_another_until_all_are_open() {
        let mut r = rollout();
        assert!(r.admits(0) && !r.admits(1) && !r.admits(2));
        assert_eq!(r.on_verdict(&Verdict::Pass, 10), Some(Transition::Opened { ring: 1, by_hand: false }));
        assert_eq!((r.open, r.opened_at_ms), (1, 10));
        assert_eq!(r.on_verdict(&Verdict::Wait("ratings 0".into()), 20), None);
        assert_eq!(r.on_verdict(&Verdict::Pass, 30), Some(Transition::Opened { ring: 2, by_hand: false }));
        assert_eq!(r.status, Status::Complete);
        assert!(r.admits(2));
        // Nothing opens twice.
        assert_eq!(r.on_verdict(&Verdict::Pass, 40), None);
        assert_eq!(r.open, 2);
    }

    #[test]
    fn a_broken_gate_halts_and_nothing_opens_after() {
        let mut r = rollout();
        let t = r.on_verdict(&Verdict::Fail("failed or rolled back 50 %".into()), 5).unwrap();
        assert!(matches!(&t, Transition::Halted { reason } if reason.contains("Pilot") && reason.contains("50 %")));
        assert!(!r.admits(0), "in a halted rollout no node deploys");
        assert_eq!(r.on_verdict(&Verdict::Pass, 6), None);
        assert!(r.promote(7).is_err());
        assert!(r.resume(7).is_err());
        assert_eq!(r.open, 0);
    }

    #[test]
    fn an_overdue_ring_pauses_until_the_land_resumes_or_promotes() {
        let mut r = rollout();
        assert_eq!(r.deadline_at_ms(), Some(3_600_000));
        let t = r.on_verdict(&Verdict::Overdue("ratings 0 (needs ≥ 2)".into()), 3_600_000).unwrap();
        assert!(matches!(t, Transition::Paused { .. }));
        assert!(r.admits(0), "open rings stay open while paused");
        assert_eq!(r.on_verdict(&Verdict::Pass, 3_600_001), None, "paused: the controller waits for the Land");
        assert_eq!(r.resume(4_000_000).unwrap(), Transition::Resumed);
        assert_eq!(r.deadline_at_ms(), Some(4_000_000 + 3_600_000), "the deadline counts anew");
        assert_eq!(r.promote(4_100_000).unwrap(), Transition::Opened { ring: 1, by_hand: true });
    }

    #[test]
    fn the_land_pauses_and_aborts_with_a_reason() {
        let mut r = rollout();
        r.pause("Rückmeldung der Pilotkommunen abwarten").unwrap();
        assert!(r.pause("again").is_err());
        assert!(r.abort("  ").is_err());
        assert!(matches!(r.abort("Fehler im Bescheid").unwrap(), Transition::Halted { .. }));
        assert!(r.abort("again").is_err());
        assert!(!r.admits(0));
    }
}
