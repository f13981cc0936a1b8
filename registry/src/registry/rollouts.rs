//! Rollout rings: the building Land sets a release's plan and moves it by hand; the hub's
//! controller moves it by the gates (see `efa_domain::model::rollout`).

use super::Registry;
use crate::error::{Error, Result};
use efa_domain::authz::{authorize, Action, Identity};
use efa_domain::model::adoption::AdoptionState;
use efa_domain::model::event::Event;
use efa_domain::model::ids::{Ags, ServiceId};
use efa_domain::model::rollout::{RingCounts, Rollout, RolloutPlan, Status, Transition, Verdict};

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
    /// (Read from the records for now; issue 15 asks for counters kept with each write.)
    pub fn ring_counts(
        &self,
        service: &ServiceId,
        version: &semver::Version,
        rollout: &Rollout,
    ) -> Result<Vec<RingCounts>> {
        let mut counts = vec![RingCounts::default(); rollout.plan.ring_count()];
        counts[rollout.open].opened_at_ms = rollout.opened_at_ms;
        let ring = |ags: &Ags| rollout.plan.ring_of(ags, service, version);
        for record in self.store.adopters(service)? {
            let c = &mut counts[ring(&record.latest.ags)];
            if record.running.as_ref() == Some(version) {
                c.healthy += 1;
            }
            if record.latest.version.as_ref() == Some(version) {
                match record.latest.state {
                    AdoptionState::Failed => c.failed += 1,
                    AdoptionState::RolledBack => c.rolled_back += 1,
                    _ => {}
                }
            }
        }
        for r in self.store.ratings(service)? {
            if &r.version != version {
                continue;
            }
            let c = &mut counts[ring(&r.ags)];
            c.ratings += 1;
            c.stars_sum += u64::from(r.stars);
            for (criterion, score) in &r.criteria {
                let e = c.criteria.entry(*criterion).or_default();
                e.0 += 1;
                e.1 += u64::from(*score);
            }
        }
        for p in self.store.preflights(service, version)? {
            let c = &mut counts[ring(&p.ags)];
            c.preflights += 1;
            if !p.is_ready() {
                c.blocked += 1;
            }
        }
        Ok(counts)
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

    /// One controller step for a release whose rollout is `rollout` (as the caller read it):
    /// the open ring's verdict, applied and stored on the commit thread against the rollout
    /// as stored then, so a Land's move in between wins. Returns the verdict and the event
    /// if the rollout moved.
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
        let verdict = rollout.plan.gates.verdict(&counts[rollout.open], now_ms, rollout.deadline_at_ms());
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
