//! Rollout rings: the building Land sets a release's plan and moves it by hand, an offering
//! Land may set its own plan for its Kommunen; the hub's controller moves each by its gates
//! (see `efa_domain::model::rollout`).
//!
//! Whose plan a Kommune follows: its own Land's, if that Land offers the service and set
//! one for the release; otherwise the building Land's. Each plan counts only the Kommunen
//! that follow it.

use super::Registry;
use crate::error::{Error, Result};
use efa_domain::authz::{authorize, Action, Identity};
use efa_domain::error::echo;
use efa_domain::model::event::{Event, EventKind};
use efa_domain::model::ids::{Ags, LandCode, ServiceId};
use efa_domain::model::rollout::{Members, RingCounts, Rollout, RolloutPlan, Status, Tally, Transition, Verdict};
use std::collections::{BTreeSet, HashMap};

/// What the rollout controller remembers between rounds: where it is in the event log, and
/// each running rollout's ring counts as of there.
#[derive(Default)]
pub struct RolloutController {
    cursor: u64,
    tallies: HashMap<RolloutKey, (Counted, Tally)>,
}

/// A rollout: service, release, and whose plan (`None`: the building Land's).
type RolloutKey = (ServiceId, semver::Version, Option<LandCode>);

impl RolloutController {
    /// The ring counts it holds for a running rollout, as of its last round.
    pub fn counts(
        &self,
        service: &ServiceId,
        version: &semver::Version,
        land: Option<&LandCode>,
    ) -> Option<&[RingCounts]> {
        self.tallies.get(&(service.clone(), version.clone(), land.cloned())).map(|(_, t)| t.counts())
    }
}

/// Which Kommunen a plan counts: an offering Land's plan its own Kommunen; the building
/// Land's every Kommune whose Land has no plan of its own for the release.
#[derive(Clone, Debug)]
pub struct Counted {
    land: Option<LandCode>,
    except: BTreeSet<LandCode>,
}

impl Counted {
    fn counts(&self, ags: &Ags) -> bool {
        match &self.land {
            Some(l) => ags.land() == *l,
            None => !self.except.contains(&ags.land()),
        }
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
    /// Sets a release's rollout plan; its first ring opens now. The building Land's plan
    /// covers every Kommune; an offering Land's (a Land with an active offer of the service)
    /// covers its own Kommunen, which then follow it instead. A release has one plan of
    /// each: set, it cannot be replaced (pause or abort it instead).
    pub fn set_rollout_plan(
        &self,
        who: &Identity,
        service: &ServiceId,
        version: &str,
        plan: RolloutPlan,
    ) -> Result<(Rollout, Event)> {
        let land = self.steering(who, service)?;
        let release = self.release(service, version)?;
        self.check_rollout_plan(&plan)?;
        if let Some(l) = &land {
            check_own_kommunen(&plan, l)?;
        }
        if let Some(y) = &release.yank {
            return Err(Error::failed_precondition(format!(
                "{service} {} is yanked ({}); it has no rollout",
                release.version, y.reason
            )));
        }
        let rollout = Rollout::start(plan, efa_domain::now_ms())?;
        let (sid, v) = (service.clone(), release.version);
        self.commits.write(move |st| {
            if st.rollout(&sid, &v, land.as_ref())?.is_some() {
                let whose = land.as_ref().map(|l| format!(" of Land {l}")).unwrap_or_default();
                return Err(Error::already_exists(format!(
                    "the rollout{whose} of {sid} {v} is set; pause, promote or abort it instead"
                )));
            }
            let event = st.put_rollout(&sid, &v, land.as_ref(), &rollout, Transition::Started, efa_domain::now_ms())?;
            Ok((rollout, event))
        })
    }

    /// Whose plan the caller steers: `None` for the building Land, its own Land for an
    /// offering Land; refused for anyone else (one rule in the authorization table).
    fn steering(&self, who: &Identity, service: &ServiceId) -> Result<Option<LandCode>> {
        let s = self.service(service)?;
        let offering = match who {
            Identity::Land(l) if *l != s.land => Some(l.clone()),
            _ => None,
        };
        let caller_offers = match &offering {
            Some(l) => self.offers(service)?.iter().any(|o| o.land == *l && o.is_active()),
            None => false,
        };
        authorize(who, Action::SteerRollout { builder: &s.land, caller_offers })?;
        Ok(offering)
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

    /// The building Land's rollout of a release, if it has a plan.
    pub fn rollout(&self, service: &ServiceId, version: &semver::Version) -> Result<Option<Rollout>> {
        self.store.rollout(service, version, None)
    }

    /// A release's rollout by whose plan it is (`None`: the building Land's).
    pub fn rollout_of(
        &self,
        service: &ServiceId,
        version: &semver::Version,
        land: Option<&LandCode>,
    ) -> Result<Option<Rollout>> {
        self.store.rollout(service, version, land)
    }

    /// Every rollout, by service, version and whose plan (the controller's round).
    pub fn rollouts(&self) -> Result<Vec<crate::store::StoredRollout>> {
        self.store.rollouts()
    }

    /// Every plan of a release: the building Land's and those of the Länder offering it.
    pub fn release_rollouts(
        &self,
        service: &ServiceId,
        version: &semver::Version,
    ) -> Result<Vec<(Option<LandCode>, Rollout)>> {
        let mut out = Vec::new();
        if let Some(r) = self.store.rollout(service, version, None)? {
            out.push((None, r));
        }
        for land in self.offered_by(service)? {
            if let Some(r) = self.store.rollout(service, version, Some(&land))? {
                out.push((Some(land), r));
            }
        }
        Ok(out)
    }

    /// The plan Kommune `ags` follows for a release: its own Land's, else the building
    /// Land's; `None` without either.
    pub fn rollout_for(&self, ags: &Ags, service: &ServiceId, version: &semver::Version) -> Result<Option<Rollout>> {
        match self.store.rollout(service, version, Some(&ags.land()))? {
            Some(r) => Ok(Some(r)),
            None => self.store.rollout(service, version, None),
        }
    }

    /// The building Land (or an offering Land, its own plan) moves a rollout by hand; read,
    /// changed and stored on the commit thread, so it never races the controller.
    pub fn act_on_rollout(
        &self,
        who: &Identity,
        service: &ServiceId,
        version: &str,
        action: RolloutAction,
    ) -> Result<(Rollout, Event)> {
        let land = self.steering(who, service)?;
        let v = self.release(service, version)?.version;
        let sid = service.clone();
        self.commits.write(move |st| {
            let mut r = st.rollout(&sid, &v, land.as_ref())?.ok_or_else(|| {
                let whose = land.as_ref().map(|l| format!(" of Land {l}")).unwrap_or_default();
                Error::not_found(format!("rollout{whose} of {sid} {v} (no plan)"))
            })?;
            let now = efa_domain::now_ms();
            let t = match action {
                RolloutAction::Promote => r.promote(now)?,
                RolloutAction::Pause(why) => r.pause(&why)?,
                RolloutAction::Resume => r.resume(now)?,
                RolloutAction::Abort(why) => r.abort(&why)?,
            };
            let event = st.put_rollout(&sid, &v, land.as_ref(), &r, t, now)?;
            Ok((r, event))
        })
    }

    /// Whether Kommune `ags` may deploy the release now: always without a plan; with one
    /// (its Land's own, else the building Land's), when its ring is open and the rollout
    /// not halted. Also the ring, if there is a plan.
    pub fn rollout_admits(
        &self,
        ags: &Ags,
        service: &ServiceId,
        version: &semver::Version,
    ) -> Result<(bool, Option<usize>)> {
        Ok(match self.rollout_for(ags, service, version)? {
            None => (true, None),
            Some(r) => {
                let ring = r.plan.ring_of(ags, service, version);
                (r.admits(ring), Some(ring))
            }
        })
    }

    /// Which Kommunen the plan `land` (`None`: the building Land's) counts for a release.
    pub fn counted(&self, service: &ServiceId, version: &semver::Version, land: Option<&LandCode>) -> Result<Counted> {
        let except = match land {
            Some(_) => BTreeSet::new(),
            None => self.release_rollouts(service, version)?.into_iter().filter_map(|(l, _)| l).collect(),
        };
        Ok(Counted { land: land.cloned(), except })
    }

    /// What each ring of a release's rollout has shown: the reports on the release of the
    /// Kommunen that follow the plan, their ratings of it and their pre-flight results, in
    /// one pass over each.
    pub fn ring_counts(
        &self,
        service: &ServiceId,
        version: &semver::Version,
        land: Option<&LandCode>,
        rollout: &Rollout,
    ) -> Result<Vec<RingCounts>> {
        let counted = self.counted(service, version, land)?;
        let mut counts = self.tally(service, version, &counted, rollout)?.counts().to_vec();
        counts[rollout.open].opened_at_ms = rollout.opened_at_ms;
        Ok(counts)
    }

    /// A plan's ring counts, read from the records once; the controller then keeps them
    /// current with [`RolloutController`].
    pub fn tally(
        &self,
        service: &ServiceId,
        version: &semver::Version,
        counted: &Counted,
        rollout: &Rollout,
    ) -> Result<Tally> {
        let mut tally = Tally::new(rollout.plan.ring_count());
        let ring = |ags: &Ags| rollout.plan.ring_of(ags, service, version);
        for record in self.store.adopters(service)? {
            let ags = &record.latest.ags;
            let touches = record.running.as_ref() == Some(version) || record.latest.version.as_ref() == Some(version);
            if touches && counted.counts(ags) {
                tally.set_adoption(ring(ags), version, ags, Some(&record));
            }
        }
        for r in self.store.ratings(service)? {
            if &r.version == version && counted.counts(&r.ags) {
                tally.set_rating(ring(&r.ags), &r);
            }
        }
        self.tally_preflights(&mut tally, service, version, counted, rollout)?;
        Ok(tally)
    }

    fn tally_preflights(
        &self,
        tally: &mut Tally,
        service: &ServiceId,
        version: &semver::Version,
        counted: &Counted,
        rollout: &Rollout,
    ) -> Result<()> {
        for p in self.store.preflights(service, version)? {
            if counted.counts(&p.ags) {
                tally.set_preflight(rollout.plan.ring_of(&p.ags, service, version), &p.ags, !p.is_ready());
            }
        }
        Ok(())
    }

    /// One controller round: brings each running rollout's tally up to date from the
    /// event log (seeding new ones from the records), judges the open ring by its counters
    /// and applies the verdicts. Returns the events of the rollouts that moved.
    pub fn controller_round(&self, ctl: &mut RolloutController, now_ms: i64) -> Result<Vec<Event>> {
        let running: Vec<_> = self.rollouts()?.into_iter().filter(|(.., r)| r.status == Status::Running).collect();
        ctl.tallies.retain(|k, _| running.iter().any(|(s, v, l, _)| (s, v, l) == (&k.0, &k.1, &k.2)));
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
        for (service, version, land, rollout) in running {
            let key = (service.clone(), version.clone(), land.clone());
            if !ctl.tallies.contains_key(&key) {
                let counted = self.counted(&service, &version, land.as_ref())?;
                let t = self.tally(&service, &version, &counted, &rollout)?;
                ctl.tallies.insert(key.clone(), (counted, t));
            }
            let Some((counted, tally)) = ctl.tallies.get_mut(&key) else { continue };
            if rollout.plan.gates.max_blocked_percent.is_some() {
                // Pre-flight results are not in the log; read the release's anew.
                self.tally_preflights(tally, &service, &version, counted, &rollout)?;
            }
            let mut counts = tally.counts().to_vec();
            counts[rollout.open].opened_at_ms = rollout.opened_at_ms;
            match self.apply_verdict(&service, &version, land.as_ref(), rollout, &counts, now_ms) {
                Ok((_, Some(event))) => moved.push(event),
                Ok((_, None)) => {}
                Err(e) => tracing::warn!(%service, %version, error = %e, "judging a rollout failed"),
            }
        }
        Ok(moved)
    }

    /// Applies one logged event to the tallies it concerns.
    fn follow(&self, ctl: &mut RolloutController, e: &Event, running: &[crate::store::StoredRollout]) -> Result<()> {
        if let EventKind::LandRolloutChanged { service_id, version, transition: Transition::Started, .. } = &e.kind {
            // That Land's Kommunen now follow their own plan: the building Land's counts
            // them no more; it is counted afresh next round.
            ctl.tallies.remove(&(service_id.clone(), version.clone(), None));
        }
        for (service, version, land, rollout) in running {
            let Some((counted, tally)) = ctl.tallies.get_mut(&(service.clone(), version.clone(), land.clone())) else {
                continue;
            };
            match &e.kind {
                EventKind::AdoptionReported(entry) if &entry.service_id == service && counted.counts(&entry.ags) => {
                    // The record after the report says what it runs now (a rollback keeps the old).
                    let record = self.store.adoption(service, &entry.ags)?;
                    tally.set_adoption(
                        rollout.plan.ring_of(&entry.ags, service, version),
                        version,
                        &entry.ags,
                        record.as_ref(),
                    );
                }
                EventKind::Rated(r) if &r.service_id == service && &r.version == version && counted.counts(&r.ags) => {
                    tally.set_rating(rollout.plan.ring_of(&r.ags, service, version), r);
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// A release's rollout (`land`: an offering Land's own plan) with each ring's counts,
    /// for its status page; NOT_FOUND without a plan.
    pub fn rollout_with_counts(
        &self,
        service: &ServiceId,
        version: &str,
        land: Option<&LandCode>,
    ) -> Result<(Rollout, Vec<RingCounts>)> {
        let v = self.release(service, version)?.version;
        let r = self.store.rollout(service, &v, land)?.ok_or_else(|| {
            let whose = land.map(|l| format!(" of Land {l}")).unwrap_or_default();
            Error::not_found(format!("rollout{whose} of {service} {v} (no plan)"))
        })?;
        let counts = self.ring_counts(service, &v, land, &r)?;
        Ok((r, counts))
    }

    /// One controller step for the building Land's rollout `rollout` of a release (as the
    /// caller read it), counting from the records: the open ring's verdict, applied as
    /// [`controller_round`] applies it. Returns the verdict and the event if it moved.
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
        let counts = self.ring_counts(service, version, None, &rollout)?;
        self.apply_verdict(service, version, None, rollout, &counts, now_ms)
    }

    /// The open ring's verdict on `counts`, applied and stored on the commit thread against
    /// the rollout as stored then, so a Land's move in between wins.
    fn apply_verdict(
        &self,
        service: &ServiceId,
        version: &semver::Version,
        land: Option<&LandCode>,
        rollout: Rollout,
        counts: &[RingCounts],
        now_ms: i64,
    ) -> Result<(Verdict, Option<Event>)> {
        let verdict = rollout.plan.gates.verdict(&counts[rollout.open], now_ms, rollout.deadline_at_ms());
        if rollout.clone().on_verdict(&verdict, now_ms).is_none() {
            return Ok((verdict, None)); // nothing moves: no write, no flush
        }
        let (sid, v, l, seen, decided) = (service.clone(), version.clone(), land.cloned(), rollout, verdict.clone());
        let event = self.commits.write(move |st| {
            let Some(mut current) = st.rollout(&sid, &v, l.as_ref())? else { return Ok(None) };
            if current != seen {
                return Ok(None); // moved meanwhile; the next round decides again
            }
            match current.on_verdict(&decided, now_ms) {
                Some(t) => st.put_rollout(&sid, &v, l.as_ref(), &current, t, now_ms).map(Some),
                None => Ok(None),
            }
        })?;
        Ok((verdict, event))
    }

    /// The release as a caller sees it: for a Kommune (or one acting for it), with where it
    /// stands in the rollout it follows.
    pub fn summary_for(
        &self,
        who: &Identity,
        release: &efa_domain::model::release::Release,
    ) -> Result<efa_domain::model::release::ReleaseSummary> {
        let mut s = release.summary();
        if let Ok(ags) = efa_domain::authz::acting_kommune(who) {
            if let Some(r) = self.rollout_for(&ags, &s.service_id, &s.version)? {
                s.rollout = Some(r.position(&ags, &s.service_id, &s.version));
            }
        }
        Ok(s)
    }
}

/// An offering Land's plan names only its own Kommunen and Kreise (shares are of its own).
fn check_own_kommunen(plan: &RolloutPlan, land: &LandCode) -> Result<()> {
    for ring in &plan.rings {
        let foreign = match &ring.members {
            Members::Kommunen(set) => set.iter().find(|a| a.land() != *land).map(|a| a.to_string()),
            Members::Kreise(set) => set.iter().find(|k| k.land() != *land).map(|k| k.to_string()),
            Members::Share { .. } => None,
        };
        if let Some(f) = foreign {
            return Err(Error::invalid(
                "rings",
                format!(
                    "ring {}: {f} is not of Land {land}; an offering Land's plan covers its own Kommunen",
                    echo(&ring.name)
                ),
            ));
        }
    }
    Ok(())
}
