//! Rollout rings: the building Land sets a release's plan and moves it by hand; the hub's
//! controller moves it by the gates (see `efa_domain::model::rollout`).

use super::Registry;
use crate::error::{Error, Result};
use efa_domain::authz::{authorize, Action, Identity};
use efa_domain::error::echo;
use efa_domain::model::event::{Event, EventKind};
use efa_domain::model::ids::{Ags, ServiceId};
use efa_domain::model::rollout::{Members, RingCounts, Rollout, RolloutPlan, Status, Tally, Transition, Verdict};
use std::collections::HashMap;

/// What the rollout controller remembers between rounds: where it is in the event log, and
/// each running rollout's ring counts as of there.
#[derive(Default)]
pub struct RolloutController {
    cursor: u64,
    tallies: HashMap<(ServiceId, semver::Version), Tally>,
}

impl RolloutController {
    /// The ring counts it holds for a running rollout, as of its last round.
    pub fn counts(&self, service: &ServiceId, version: &semver::Version) -> Option<&[RingCounts]> {
        self.tallies.get(&(service.clone(), version.clone())).map(|t| t.counts())
    }
}

/// What the Land does to a running rollout by hand.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RolloutAction {
    /// Open the next ring without waiting for the gates.
    Promote,
    /// Stop opening rings until resumed.
    Pause(String),
    /// Go on after a pause.
    Resume,
    /// Stop for good: no node deploys the release any more.
    Abort(String),
}

impl Registry {
    /// Sets the rollout plan of a release of the calling Land's service; its first ring
    /// opens now. A release has one plan: set before nodes took it up, it cannot be
    /// replaced (pause or abort it instead).
    pub fn set_rollout_plan(
        &self,
        who: &Identity,
        service: &ServiceId,
        version: &str,
        plan: RolloutPlan,
    ) -> Result<(Rollout, Event)> {
        let s = self.service(service)?;
        authorize(who, Action::ManageService { owner: Some(&s.land) })?;
        let release = self.release(service, version)?;
        self.check_rollout_plan(&plan)?;
        if let Some(y) = &release.yank {
            return Err(Error::failed_precondition(format!(
                "{service} {} is yanked ({}); it has no rollout",
                release.version, y.reason
            )));
        }
        let rollout = Rollout::start(plan, efa_domain::now_ms())?;
        let (sid, v) = (service.clone(), release.version);
        self.commits.write(move |st| {
            if st.rollout(&sid, &v)?.is_some() {
                return Err(Error::already_exists(format!(
                    "the rollout of {sid} {v} is set; pause, promote or abort it instead"
                )));
            }
            let event = st.put_rollout(&sid, &v, &rollout, Transition::Started, efa_domain::now_ms())?;
            Ok((rollout, event))
        })
    }

    /// Checks that a plan's rings name Gemeinden and Kreise of the register (a typo would
    /// otherwise make a ring that nobody is in, and the rollout would wait for ever).
    pub fn check_rollout_plan(&self, plan: &RolloutPlan) -> Result<()> {
        for ring in &plan.rings {
            match &ring.members {
                Members::Kommunen(set) => {
                    for ags in set {
                        if self.store.kommune(ags)?.is_none() {
                            return Err(Error::invalid(
                                "rings",
                                format!("ring {}: {ags} is no Gemeinde of the register", echo(&ring.name)),
                            ));
                        }
                    }
                }
                Members::Kreise(set) => {
                    for k in set {
                        if self.store.kreis(k)?.is_none() {
                            return Err(Error::invalid(
                                "rings",
                                format!("ring {}: {k} is no Kreis of the register", echo(&ring.name)),
                            ));
                        }
                    }
                }
                Members::Share { .. } => {}
            }
        }
        Ok(())
    }

    /// The rollout of a release, if it has a plan.
    pub fn rollout(&self, service: &ServiceId, version: &semver::Version) -> Result<Option<Rollout>> {
        self.store.rollout(service, version)
    }

    /// Every rollout, by service and version (the controller's round).
    pub fn rollouts(&self) -> Result<Vec<(ServiceId, semver::Version, Rollout)>> {
        self.store.rollouts()
    }

    /// The building Land moves a rollout by hand; read, changed and stored on the commit
    /// thread, so it never races the controller.
    pub fn act_on_rollout(
        &self,
        who: &Identity,
        service: &ServiceId,
        version: &str,
        action: RolloutAction,
    ) -> Result<(Rollout, Event)> {
        let s = self.service(service)?;
        authorize(who, Action::ManageService { owner: Some(&s.land) })?;
        let v = self.release(service, version)?.version;
        let sid = service.clone();
        self.commits.write(move |st| {
            let mut r = st
                .rollout(&sid, &v)?
                .ok_or_else(|| Error::not_found(format!("rollout of {sid} {v} (the release has no plan)")))?;
            let now = efa_domain::now_ms();
            let t = match action {
                RolloutAction::Promote => r.promote(now)?,
                RolloutAction::Pause(why) => r.pause(&why)?,
                RolloutAction::Resume => r.resume(now)?,
                RolloutAction::Abort(why) => r.abort(&why)?,
            };
            let event = st.put_rollout(&sid, &v, &r, t, now)?;
            Ok((r, event))
        })
    }

    /// Whether Kommune `ags` may deploy the release now: always without a plan; with one,
    /// when its ring is open and the rollout not halted. Also the ring, if there is a plan.
    pub fn rollout_admits(
        &self,
        ags: &Ags,
        service: &ServiceId,
        version: &semver::Version,
    ) -> Result<(bool, Option<usize>)> {
        Ok(match self.store.rollout(service, version)? {
            None => (true, None),
            Some(r) => {
                let ring = r.plan.ring_of(ags, service, version);
                (r.admits(ring), Some(ring))
            }
        })
    }

    /// What each ring of a release's rollout has shown: its Kommunen's reports on the
    /// release, their ratings of it and their pre-flight results, in one pass over each.
    pub fn ring_counts(
        &self,
        service: &ServiceId,
        version: &semver::Version,
        rollout: &Rollout,
    ) -> Result<Vec<RingCounts>> {
        let mut counts = self.tally(service, version, rollout)?.counts().to_vec();
        counts[rollout.open].opened_at_ms = rollout.opened_at_ms;
        Ok(counts)
    }

    /// A release's ring counts, read from the records once; the controller then keeps them
    /// current with [`RolloutController`].
    pub fn tally(&self, service: &ServiceId, version: &semver::Version, rollout: &Rollout) -> Result<Tally> {
        let mut tally = Tally::new(rollout.plan.ring_count());
        let ring = |ags: &Ags| rollout.plan.ring_of(ags, service, version);
        for record in self.store.adopters(service)? {
            let ags = &record.latest.ags;
            let touches = record.running.as_ref() == Some(version) || record.latest.version.as_ref() == Some(version);
            if touches {
                tally.set_adoption(ring(ags), version, ags, Some(&record));
            }
        }
        for r in self.store.ratings(service)? {
            if &r.version == version {
                tally.set_rating(ring(&r.ags), &r);
            }
        }
        self.tally_preflights(&mut tally, service, version, rollout)?;
        Ok(tally)
    }

    fn tally_preflights(
        &self,
        tally: &mut Tally,
        service: &ServiceId,
        version: &semver::Version,
        rollout: &Rollout,
    ) -> Result<()> {
        for p in self.store.preflights(service, version)? {
            tally.set_preflight(rollout.plan.ring_of(&p.ags, service, version), &p.ags, !p.is_ready());
        }
        Ok(())
    }

    /// One controller round: brings each running rollout's tally up to date from the
    /// event log (seeding new ones from the records), judges the open ring by its counters
    /// and applies the verdicts. Returns the events of the rollouts that moved.
    pub fn controller_round(&self, ctl: &mut RolloutController, now_ms: i64) -> Result<Vec<Event>> {
        let running: Vec<_> = self.rollouts()?.into_iter().filter(|(_, _, r)| r.status == Status::Running).collect();
        ctl.tallies.retain(|k, _| running.iter().any(|(s, v, _)| (s, v) == (&k.0, &k.1)));
        if ctl.tallies.is_empty() {
            ctl.cursor = self.head_seq()?;
        }
        // Catch up with the log; a gap (trimmed events) means starting afresh from records.
        loop {
            let events = self.events_after(ctl.cursor, 5_000)?;
            let Some(last) = events.last().map(|e| e.seq) else { break };
            if events[0].seq != ctl.cursor + 1 {
                ctl.tallies.clear();
                ctl.cursor = self.head_seq()?;
                break;
            }
            for e in &events {
                self.follow(ctl, e, &running)?;
            }
            ctl.cursor = last;
        }
        let mut moved = Vec::new();
        for (service, version, rollout) in running {
            let key = (service.clone(), version.clone());
            if !ctl.tallies.contains_key(&key) {
                let t = self.tally(&service, &version, &rollout)?;
                ctl.tallies.insert(key.clone(), t);
            }
            let Some(tally) = ctl.tallies.get_mut(&key) else { continue };
            if rollout.plan.gates.max_blocked_percent.is_some() {
                // Pre-flight results are not in the log; read the release's anew.
                self.tally_preflights(tally, &service, &version, &rollout)?;
            }
            let mut counts = tally.counts().to_vec();
            counts[rollout.open].opened_at_ms = rollout.opened_at_ms;
            match self.apply_verdict(&service, &version, rollout, &counts, now_ms) {
                Ok((_, Some(event))) => moved.push(event),
                Ok((_, None)) => {}
                Err(e) => tracing::warn!(%service, %version, error = %e, "judging a rollout failed"),
            }
        }
        Ok(moved)
    }

    /// Applies one logged event to the tallies it concerns.
    fn follow(
        &self,
        ctl: &mut RolloutController,
        e: &Event,
        running: &[(ServiceId, semver::Version, Rollout)],
    ) -> Result<()> {
        for (service, version, rollout) in running {
            let Some(tally) = ctl.tallies.get_mut(&(service.clone(), version.clone())) else { continue };
            match &e.kind {
                EventKind::AdoptionReported(entry) if &entry.service_id == service => {
                    // The record after the report says what it runs now (a rollback keeps the old).
                    let record = self.store.adoption(service, &entry.ags)?;
                    tally.set_adoption(
                        rollout.plan.ring_of(&entry.ags, service, version),
                        version,
                        &entry.ags,
                        record.as_ref(),
                    );
                }
                EventKind::Rated(r) if &r.service_id == service && &r.version == version => {
                    tally.set_rating(rollout.plan.ring_of(&r.ags, service, version), r);
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// A release's rollout with each ring's counts, for its status page; NOT_FOUND without a plan.
    pub fn rollout_with_counts(&self, service: &ServiceId, version: &str) -> Result<(Rollout, Vec<RingCounts>)> {
        let v = self.release(service, version)?.version;
        let r = self
            .store
            .rollout(service, &v)?
            .ok_or_else(|| Error::not_found(format!("rollout of {service} {v} (the release has no plan)")))?;
        let counts = self.ring_counts(service, &v, &r)?;
        Ok((r, counts))
    }

    /// One controller step for a release whose rollout is `rollout` (as the caller read it),
    /// counting from the records: the open ring's verdict, applied as [`controller_round`]
    /// applies it. Returns the verdict and the event if the rollout moved.
    ///
    /// [`controller_round`]: Self::controller_round
    pub fn step_rollout(
        &self,
        service: &ServiceId,
        version: &semver::Version,
        rollout: Rollout,
        now_ms: i64,
    ) -> Result<(Verdict, Option<Event>)> {
        if rollout.status != Status::Running {
            return Ok((Verdict::Wait(format!("the rollout is {:?}", rollout.status)), None));
        }
        let counts = self.ring_counts(service, version, &rollout)?;
        self.apply_verdict(service, version, rollout, &counts, now_ms)
    }

    /// The open ring's verdict on `counts`, applied and stored on the commit thread against
    /// the rollout as stored then, so a Land's move in between wins.
    fn apply_verdict(
        &self,
        service: &ServiceId,
        version: &semver::Version,
        rollout: Rollout,
        counts: &[RingCounts],
        now_ms: i64,
    ) -> Result<(Verdict, Option<Event>)> {
        let verdict = rollout.plan.gates.verdict(&counts[rollout.open], now_ms, rollout.deadline_at_ms());
        if rollout.clone().on_verdict(&verdict, now_ms).is_none() {
            return Ok((verdict, None)); // nothing moves: no write, no flush
        }
        let (sid, v, seen, decided) = (service.clone(), version.clone(), rollout, verdict.clone());
        let event = self.commits.write(move |st| {
            let Some(mut current) = st.rollout(&sid, &v)? else { return Ok(None) };
            if current != seen {
                return Ok(None); // moved meanwhile; the next round decides again
            }
            match current.on_verdict(&decided, now_ms) {
                Some(t) => st.put_rollout(&sid, &v, &current, t, now_ms).map(Some),
                None => Ok(None),
            }
        })?;
        Ok((verdict, event))
    }

    /// The release as a caller sees it: for a Kommune (or one acting for it), with where it
    /// stands in the release's rollout.
    pub fn summary_for(
        &self,
        who: &Identity,
        release: &efa_domain::model::release::Release,
    ) -> Result<efa_domain::model::release::ReleaseSummary> {
        let mut s = release.summary();
        if let Ok(ags) = efa_domain::authz::acting_kommune(who) {
            if let Some(r) = self.store.rollout(&s.service_id, &s.version)? {
                s.rollout = Some(r.position(&ags, &s.service_id, &s.version));
            }
        }
        Ok(s)
    }
}
