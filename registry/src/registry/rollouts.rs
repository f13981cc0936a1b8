//! Rollout rings: the building Land sets a release's plan and moves it by hand; the hub's
//! controller moves it by the gates (see `efa_domain::model::rollout`).

use super::Registry;
use crate::error::{Error, Result};
use efa_domain::authz::{authorize, Action, Identity};
use efa_domain::model::event::Event;
use efa_domain::model::ids::{Ags, ServiceId};
use efa_domain::model::rollout::{Rollout, RolloutPlan, Transition};

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
}
