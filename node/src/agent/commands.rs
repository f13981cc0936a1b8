//! What a Kommune's operator does by hand: approve, reject, roll back, retire, rate.

use super::{Agent, Handled};
use crate::error::{NodeError, Result};
use crate::metrics::ServiceLabels;
use crate::outbox::Sent;
use crate::state::{Hold, OutboxReport};
use efa_domain::model::adoption::AdoptionState;
use efa_domain::model::ids::{parse_version, ServiceId};
use efa_domain::model::rating::{NewRating, Rating};

impl Agent {
    /// Deploys a release that waits for approval (or any newer release, by hand).
    pub async fn approve(&self, service: &str, version: &str) -> Result<Handled> {
        let id: ServiceId = service.parse()?;
        let version = parse_version(version)?;
        let info = self.hub.release(&id, &version).await?.summary;
        if let Some(y) = &info.yank {
            return Err(NodeError::Usage(format!("{id} {version} is yanked by its Land: {}", y.reason)));
        }
        if let Some(p) = info.rollout.as_ref().filter(|p| !p.admitted) {
            return Err(NodeError::Usage(format!("{id} {version} is not yet for this Kommune: {}", p.note)));
        }
        if let Some(running) = self.running_version(&id)? {
            if version <= running {
                return Err(NodeError::Usage(format!(
                    "{id} runs {running}; approving {version} would downgrade it. Use `efa-node rollback` for an explicit local rollback"
                )));
            }
        }
        let entry = self.hub.service(&id).await?;
        let _busy = self.busy.lock().await;
        let handled = self.install(&entry, &info).await?;
        if matches!(handled, Handled::Deployed { .. }) {
            // Approving a newer release is the operator's word that the hold is over.
            self.update(|s| {
                if let Some(e) = s.services.get_mut(id.as_str()) {
                    e.hold = None;
                }
            })?;
        }
        Ok(handled)
    }

    /// Rejects a release (or the whole service, without a version) with a reason the
    /// publishing Land will read. A rejection the hub refuses (e.g. a service id it does not
    /// know) is not recorded locally and the refusal is returned.
    pub async fn reject(&self, service: &str, version: Option<&str>, reason: &str) -> Result<Sent> {
        if reason.trim().is_empty() {
            return Err(NodeError::Usage("a rejection needs a reason; the publishing Land reads it".into()));
        }
        let id: ServiceId = service.parse()?;
        let version = version.map(parse_version).transpose()?.map(|v| v.to_string()).unwrap_or_default();
        // A typo must fail here, not linger in the state: ask the hub first. Offline, the
        // rejection is queued and the hub's answer comes with the next sync.
        match self.hub.service(&id).await {
            Err(e) if !e.is_transient() => {
                let why = e.status().map(|s| s.message().to_string()).unwrap_or_else(|| e.to_string());
                return Err(NodeError::Usage(format!("cannot reject {id}: {why}{}", self.did_you_mean(&id).await)));
            }
            _ => {}
        }
        let report = OutboxReport {
            service: id.to_string(),
            version: version.clone(),
            state: AdoptionState::Rejected,
            reason: reason.to_string(),
            ags: None,
        };
        let sent = self.outbox().send(report, |_| ()).await?;
        self.update(|s| {
            let e = s.services.entry(id.to_string()).or_default();
            e.pending.remove(&version);
            e.rejected.insert(version.clone(), reason.to_string());
        })?;
        Ok(sent)
    }

    /// Operator-local, explicit rollback to an installed older version, which is then held:
    /// newer releases wait for approval instead of deploying again. Returns the version
    /// that ran before.
    pub async fn rollback(&self, service: &str, version: &str) -> Result<(Option<String>, Sent)> {
        let id: ServiceId = service.parse()?;
        let _busy = self.busy.lock().await;
        let previous = self.deployer.switch_to(&id, version)?;
        let hold = Hold {
            version: version.to_string(),
            reason: match &previous {
                Some(p) => format!("rolled back by hand from {p}"),
                None => "rolled back by hand".into(),
            },
            since_ms: efa_domain::now_ms(),
        };
        let report = OutboxReport {
            service: id.to_string(),
            version: version.to_string(),
            state: AdoptionState::Deployed,
            reason: String::new(),
            ags: None,
        };
        let key = id.to_string();
        let sent = self.outbox().send(report, move |s| s.services.entry(key).or_default().hold = Some(hold)).await?;
        Ok((previous, sent))
    }

    /// Holds the running version of a service: newer releases wait for approval until
    /// [`unhold`](Self::unhold) or an approval.
    pub async fn hold(&self, service: &str, reason: &str) -> Result<Hold> {
        let id: ServiceId = service.parse()?;
        let Some(running) = self.running_version(&id)? else {
            return Err(NodeError::Usage(format!("{id} runs no version here; there is nothing to hold")));
        };
        let hold = Hold {
            version: running.to_string(),
            reason: if reason.trim().is_empty() { "held by hand".into() } else { reason.trim().to_string() },
            since_ms: efa_domain::now_ms(),
        };
        let h = hold.clone();
        self.update(move |s| s.services.entry(id.to_string()).or_default().hold = Some(h))?;
        Ok(hold)
    }

    /// Lifts a hold; the next sync applies the subscription's policy again. Returns the hold
    /// that was lifted.
    pub async fn unhold(&self, service: &str) -> Result<Hold> {
        let id: ServiceId = service.parse()?;
        let lifted = self.update(|s| s.services.get_mut(id.as_str()).and_then(|e| e.hold.take()))?;
        lifted.ok_or_else(|| NodeError::Usage(format!("{id} is not held")))
    }

    /// Stops serving a service and tells the hub.
    pub async fn retire(&self, service: &str, reason: &str) -> Result<Sent> {
        let id: ServiceId = service.parse()?;
        self.deployer.retire(&id)?;
        let report = OutboxReport {
            service: id.to_string(),
            version: String::new(),
            state: AdoptionState::Retired,
            reason: reason.to_string(),
            ags: None,
        };
        self.outbox().send(report, |_| ()).await
    }

    /// Rates a version this Kommune evaluated or deployed.
    pub async fn rate(&self, rating: &NewRating) -> Result<Rating> {
        Ok(self.hub.rate(rating).await?)
    }

    pub(super) fn count_deploy(&self, service: &str) {
        self.counters.deploys.get_or_create(&labels(service)).inc();
    }

    pub(super) fn count_rollback(&self, service: &str) {
        self.counters.rollbacks.get_or_create(&labels(service)).inc();
    }

    pub(super) fn count_failure(&self, service: &str) {
        self.counters.failures.get_or_create(&labels(service)).inc();
    }
}

fn labels(service: &str) -> ServiceLabels {
    ServiceLabels { service: service.to_string() }
}
