//! The hub's transparency log, from the node's side: after every catch-up the node fetches
//! the newest checkpoint, checks its signatures (the log's key and the witnesses it
//! requires) and that it extends the checkpoint it verified before (a consistency proof),
//! and looks for the reports it sent; before deploying a release it checks that the
//! release's leaf is in a verified checkpoint and names the manifest it verified.
//!
//! A contradiction (a fork, a rewrite, a truncation, a lost report) is an alarm that does not
//! depend on the hub's honesty: an error log line, `efa-node status` (exit code 3), the
//! `efa_node_log_alarm` metric, and no deploys until an operator runs `efa-node log-reset`.
//! A hub that is merely slow or away is not an alarm; the checks run again next time.

use super::Agent;
use crate::error::{NodeError, Result};
use crate::hub::{leaf_facts, HubError, LeafFacts};
use crate::state::LogState;
use efa_domain::model::release::SignedRelease;
use efa_tlog::checkpoint::Checkpoint;
use efa_tlog::Hash;
use std::time::Duration;

/// How long a deploy waits for its release to appear in a checkpoint (the hub signs one
/// about every second).
const RELEASE_LOG_WAIT: Duration = Duration::from_secs(20);

fn hex(h: &Hash) -> String {
    h.0.iter().map(|b| format!("{b:02x}")).collect()
}

impl Agent {
    /// Raises the alarm: logged, kept in `state.json`, shown by `status`, deploys stop.
    fn log_alarm(&self, why: String) -> NodeError {
        tracing::error!(alarm = %why, "TRANSPARENCY LOG ALARM: the hub's log contradicts what this node verified");
        let w = why.clone();
        if let Err(e) = self.update(move |s| {
            if s.log_alarm.is_none() {
                s.log_alarm = Some(w);
            }
        }) {
            tracing::error!(error = %e, "could not record the log alarm");
        }
        NodeError::LogAlarm(why)
    }

    /// [`check_log`](Self::check_log) after a catch-up: an alarm is already logged and kept,
    /// and stops deploys, not the agent; a hub that is away is tried again next time.
    pub(super) async fn watch_log(&self) {
        match self.check_log().await {
            Ok(_) | Err(NodeError::LogAlarm(_)) => {}
            Err(e) => tracing::warn!(error = %e, "could not check the hub's transparency log this time"),
        }
    }

    /// Clears the alarm and the verified checkpoint (the operator looked into it); returns
    /// the alarm that stood.
    pub fn reset_log(&self) -> Result<Option<String>> {
        self.update(|s| {
            s.log = None;
            s.log_pending.clear();
            s.log_alarm.take()
        })
    }

    /// Refuses to go on while an alarm stands.
    pub(super) fn log_alarm_standing(&self) -> Result<()> {
        match self.state.load()?.log_alarm {
            Some(why) => Err(NodeError::LogAlarm(why)),
            None => Ok(()),
        }
    }

    /// Fetches the newest checkpoint and checks it against the one verified before; keeps it.
    /// Returns `None` when the node does not check the log (no `[log]` key).
    pub async fn check_log(&self) -> Result<Option<Checkpoint>> {
        let Some(log) = &self.config.log else { return Ok(None) };
        self.log_alarm_standing()?;
        let trust =
            log.trust().map_err(|e| NodeError::Usage(format!("{}: [log]: {e}", self.config.describe_source())))?;
        let note = match self.hub.checkpoint().await {
            Ok(n) => n,
            // No checkpoint yet (a hub that just started): nothing to check.
            Err(HubError::Unreachable(s)) if s.code() == tonic::Code::Unavailable => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let cp = match trust.open(&note) {
            Ok(cp) => cp,
            // Too few witnesses yet is not a lie; a bad signature is.
            Err(efa_tlog::Error::Signature(why)) if why.contains("witness cosignatures needed") => {
                tracing::warn!(%why, "the hub's newest checkpoint is not cosigned enough yet");
                return Ok(None);
            }
            Err(e) => return Err(self.log_alarm(format!("the hub served a checkpoint that does not verify: {e}"))),
        };
        let state = self.state.load()?;
        if let Some(old) = &state.log {
            let Some(old_root) = parse_hex(&old.root) else {
                return Err(self.log_alarm("the checkpoint kept in state.json is damaged".into()));
            };
            let proof = if old.size < cp.size { self.hub.consistency_proof(old.size, cp.size).await? } else { vec![] };
            if let Err(e) = efa_tlog::tree::check_consistency(&proof, old.size, old_root, cp.size, cp.root) {
                return Err(self.log_alarm(format!(
                    "{e} (verified before: {} leaves, root {}; now: {} leaves, root {})",
                    old.size,
                    old.root,
                    cp.size,
                    hex(&cp.root)
                )));
            }
        }
        self.check_reports_logged(&cp, log.report_deadline_secs).await?;
        let keep =
            LogState { size: cp.size, root: hex(&cp.root), note: String::from_utf8_lossy(&cp.note).into_owned() };
        self.update(move |s| {
            if s.log.as_ref().is_none_or(|o| o.size <= keep.size) {
                s.log = Some(keep);
            }
        })?;
        Ok(Some(cp))
    }

    /// Every acknowledged report within the checkpoint must be its leaf; one still missing
    /// after the deadline is an alarm.
    async fn check_reports_logged(&self, cp: &Checkpoint, deadline_secs: u64) -> Result<()> {
        let pending = self.state.load()?.log_pending;
        let now = efa_domain::now_ms();
        let mut done = Vec::new();
        for r in &pending {
            if r.seq > cp.size {
                if now - r.acked_ms > (deadline_secs as i64) * 1000 {
                    return Err(self.log_alarm(format!(
                        "the report {} {} {} (event {}) acknowledged {} s ago is still not in the hub's log",
                        r.service,
                        r.version,
                        r.state,
                        r.seq,
                        (now - r.acked_ms) / 1000
                    )));
                }
                continue;
            }
            let (index, leaf, proof) = self.hub.inclusion_proof(r.seq - 1, None, cp.size).await?;
            let facts = leaf_facts(&leaf)?;
            let want = (
                r.seq,
                LeafFacts::Adoption {
                    ags: r.ags.clone(),
                    service: r.service.clone(),
                    version: r.version.clone(),
                    state: r.state,
                },
            );
            let included = index == r.seq - 1
                && efa_tlog::tree::check_inclusion(&proof, cp.size, cp.root, index, efa_tlog::tree::leaf_hash(&leaf))
                    .is_ok();
            if !included || facts != want {
                return Err(self.log_alarm(format!(
                    "the hub's log does not hold the report {} {} {} at event {} (it holds {:?})",
                    r.service, r.version, r.state, r.seq, facts.1
                )));
            }
            done.push(r.seq);
        }
        if !done.is_empty() {
            self.update(move |s| s.log_pending.retain(|r| !done.contains(&r.seq)))?;
        }
        Ok(())
    }

    /// Before a deploy: the release's leaf must be in a verified checkpoint and name the
    /// manifest the node verified. Waits a little for the hub's next checkpoint.
    pub(super) async fn check_release_logged(&self, signed: &SignedRelease) -> Result<()> {
        if self.config.log.is_none() {
            return Ok(());
        }
        let s = &signed.summary;
        let give_up = tokio::time::Instant::now() + RELEASE_LOG_WAIT;
        loop {
            let Some(cp) = self.check_log().await? else {
                if tokio::time::Instant::now() >= give_up {
                    return Err(HubError::Unreachable(tonic::Status::unavailable(
                        "the hub's transparency log has no checkpoint the node could verify yet",
                    ))
                    .into());
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            };
            match self.hub.inclusion_proof(0, Some((&s.service_id, &s.version)), cp.size).await {
                Ok((index, leaf, proof)) => {
                    let lh = efa_tlog::tree::leaf_hash(&leaf);
                    let facts = leaf_facts(&leaf)?;
                    let want = LeafFacts::Release {
                        service: s.service_id.to_string(),
                        version: s.version.to_string(),
                        manifest_sha256: efa_domain::bundle::Manifest::content_digest(&signed.manifest).0.to_vec(),
                    };
                    if efa_tlog::tree::check_inclusion(&proof, cp.size, cp.root, index, lh).is_err()
                        || facts.1 != want
                        || facts.0 != index + 1
                    {
                        return Err(self.log_alarm(format!(
                            "the hub's log does not hold release {} {} with the manifest the Land signed (leaf {index}: {:?})",
                            s.service_id, s.version, facts.1
                        )));
                    }
                    return Ok(());
                }
                Err(HubError::Refused(st)) if st.code() == tonic::Code::OutOfRange => {
                    if tokio::time::Instant::now() >= give_up {
                        return Err(HubError::Unreachable(tonic::Status::unavailable(format!(
                            "release {} {} is not in the hub's transparency log yet; deploying it later",
                            s.service_id, s.version
                        )))
                        .into());
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
}

fn parse_hex(s: &str) -> Option<Hash> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(Hash(out))
}
