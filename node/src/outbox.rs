//! The report outbox: adoption reports go to the hub in order, through a queue in
//! `state.json` that survives restarts and a hub that is away.

use crate::error::{NodeError, Result};
use crate::hub::{HubClient, HubError};
use crate::state::{NodeState, OutboxReport, StateFile};
use efa_domain::model::adoption::AdoptionState;
use efa_domain::model::ids::Ags;

/// Queues reports with the state change that causes them, and sends them in order.
pub struct Outbox<'a> {
    state: &'a StateFile,
    hub: &'a HubClient,
    own: &'a Ags,
    covers: &'a [Ags],
}

/// What became of a report handed to [`Outbox::send`].
#[derive(Debug, PartialEq, Eq)]
pub enum Sent {
    /// The hub has it.
    Delivered,
    /// The hub is away; it goes out later, in order.
    Queued,
    /// Nothing was queued (an evaluation already reported for this version).
    Skipped,
}

impl<'a> Outbox<'a> {
    /// The outbox of `state`, sending through `hub` as Kommune `own`; each report also goes
    /// out for every Gemeinde in `covers` (Zuständigkeit of a Kreis or Amt node).
    pub fn new(state: &'a StateFile, hub: &'a HubClient, own: &'a Ags, covers: &'a [Ags]) -> Self {
        Outbox { state, hub, own, covers }
    }

    /// Queues `report` in the same write as `change` (the state change it reports), then
    /// sends everything queued. "Evaluating" is queued once per version, even when handling
    /// is retried after the hub or the node went away mid-download; any other state for that
    /// version ends the evaluation.
    ///
    /// A report the hub refuses (e.g. an unknown service) is taken out of the queue and the
    /// refusal returned, so the caller can say so instead of printing success.
    pub async fn send(&self, report: OutboxReport, change: impl FnOnce(&mut NodeState)) -> Result<Sent> {
        let queued = self.state.update(|s| {
            change(s);
            let entry = s.services.entry(report.service.clone()).or_default();
            if report.state == AdoptionState::Evaluating {
                if entry.evaluating.as_deref() == Some(report.version.as_str()) {
                    return false;
                }
                entry.evaluating = Some(report.version.clone());
            } else if entry.evaluating.as_deref() == Some(report.version.as_str()) {
                entry.evaluating = None;
            }
            s.outbox.push(report.clone());
            // Queued one per Gemeinde, so a hub that goes away halfway resends none twice.
            for ags in self.covers {
                s.outbox.push(OutboxReport { ags: Some(ags.to_string()), ..report.clone() });
            }
            true
        })?;
        if !queued {
            return Ok(Sent::Skipped);
        }
        match self.flush_until(Some(&report)).await {
            Ok(()) => Ok(Sent::Delivered),
            Err(e) if e.is_transient() => {
                tracing::warn!(error = %e, "adoption report queued until the hub is reachable");
                Ok(Sent::Queued)
            }
            Err(e) => Err(e),
        }
    }

    /// Sends queued reports in order. A report the hub refuses is dropped with an error log,
    /// so one bad report cannot block the queue.
    pub async fn flush(&self) -> Result<()> {
        self.flush_until(None).await
    }

    /// Like [`flush`](Self::flush); a refusal of `mine` is returned instead of logged.
    async fn flush_until(&self, mine: Option<&OutboxReport>) -> Result<()> {
        let mut refused_mine = None;
        loop {
            let Some(next) = self.state.load()?.outbox.first().cloned() else { break };
            let for_kommune = next.ags.as_deref().map(str::parse::<Ags>);
            let sent = match (next.to_report(), for_kommune) {
                (Ok(report), None) => self.hub.report(&report).await,
                (Ok(report), Some(Ok(ags))) => self.hub.clone().acting_for(&ags).report(&report).await,
                (Ok(_), Some(Err(e))) | (Err(NodeError::Domain(e)), _) => Err(HubError::InvalidAnswer(e)),
                (Err(other), _) => {
                    Err(HubError::InvalidAnswer(efa_domain::Error::invalid("report", other.to_string())))
                }
            };
            let acked = match sent {
                Ok(seq) => Some(seq),
                Err(e) if e.is_transient() => return Err(e.into()),
                Err(e) if Some(&next) == mine => {
                    refused_mine = Some(e);
                    None
                }
                Err(e) => {
                    tracing::error!(service = %next.service, state = %next.state, error = %e, "hub refused an adoption report; dropping it");
                    None
                }
            };
            let own = self.own.to_string();
            self.state.update(|s| {
                if s.outbox.first() == Some(&next) {
                    s.outbox.remove(0);
                    // The node looks for it in the hub's transparency log later.
                    if let Some(seq) = acked.filter(|&seq| seq > 0) {
                        if s.log_pending.len() < crate::state::MAX_LOG_PENDING {
                            s.log_pending.push(crate::state::LoggedReport {
                                seq,
                                ags: next.ags.clone().unwrap_or(own),
                                service: next.service.clone(),
                                version: next.version.clone(),
                                state: next.state,
                                acked_ms: efa_domain::now_ms(),
                            });
                        }
                    }
                }
            })?;
        }
        match refused_mine {
            Some(e) => Err(e.into()),
            None => Ok(()),
        }
    }
}
