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

    /// A leaf of the verified checkpoint `cp` (leaf `index`, or the one that published
    /// `release`) with its facts, and whether it is proven: its inclusion proof leads to
    /// `cp`'s root and it is the event its index says. The caller compares the facts with
    /// what it expects and raises the alarm naming both.
    async fn proven_leaf(
        &self,
        cp: &Checkpoint,
        index: u64,
        release: Option<(&efa_domain::model::ids::ServiceId, &semver::Version)>,
    ) -> Result<(u64, LeafFacts, bool)> {
        let (got, leaf, proof) = self.hub.inclusion_proof(index, release, cp.size).await?;
        let (seq, facts) = leaf_facts(&leaf)?;
        let asked = release.is_some() || got == index;
        let proven = asked
            && seq == got + 1
            && efa_tlog::tree::check_inclusion(&proof, cp.size, cp.root, got, efa_tlog::tree::leaf_hash(&leaf)).is_ok();
        Ok((got, facts, proven))
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
        self.follow_key_sets(&cp).await?;
        let keep =
            LogState { size: cp.size, root: hex(&cp.root), note: String::from_utf8_lossy(&cp.note).into_owned() };
        self.update(move |s| {
            if s.log.as_ref().is_none_or(|o| o.size <= keep.size) {
                s.log = Some(keep);
            }
        })?;
        Ok(Some(cp))
    }

    /// Reads the key sets of the Länder whose releases the node verifies from their leaves
    /// in the verified checkpoint and accepts each as its predecessor's successor. A set
    /// that does not follow from the one before is an alarm (the hub accepted it against
    /// the same rule); a first set signed by none of the node's anchors (its `[trust]` keys
    /// for the Land, the federation root) is ignored with an error, and `[trust]` stays.
    async fn follow_key_sets(&self, cp: &Checkpoint) -> Result<()> {
        let Some(log) = &self.config.log else { return Ok(()) };
        let roots: Vec<efa_domain::signing::VerifyingKey> =
            log.federation_root.iter().filter_map(|k| efa_domain::signing::VerifyingKey::from_text(k).ok()).collect();
        let state = self.state.load()?;
        let mut lands: std::collections::BTreeSet<efa_domain::model::ids::LandCode> =
            self.config.trust.keys().cloned().collect();
        lands.extend(state.services.values().filter_map(|s| s.land.as_deref()).filter_map(|l| l.parse().ok()));
        let mut known = state.key_sets.clone();
        let mut changed = false;
        for land in lands {
            let listed = self.hub.key_sets(&land).await?;
            let sets = known.entry(land.to_string()).or_default();
            for (index, version) in listed {
                let last = sets.last().map_or(0, |(_, s)| s.version);
                if version <= last || index >= cp.size {
                    continue;
                }
                let (_, facts, proven) = self.proven_leaf(cp, index, None).await?;
                let LeafFacts::KeySet { land: leaf_land, signed } = facts else {
                    return Err(self.log_alarm(format!("leaf {index}, listed as a key set of Land {land}, is none")));
                };
                if !proven || leaf_land != land.as_str() {
                    return Err(self
                        .log_alarm(format!("the key set at leaf {index} of Land {land} is not in the log as listed")));
                }
                let previous = sets.last().map(|(_, s)| s);
                match signed.accept(&land, previous, &roots, &self.config.trusted_keys(&land)) {
                    Ok(set) => {
                        tracing::info!(%land, version = set.version, keys = set.keys.len(), revoked = set.revoked.len(), leaf = index, "key set of the Land accepted from the log");
                        sets.push((index, set));
                        changed = true;
                    }
                    Err(e) if previous.is_none() => {
                        tracing::error!(%land, error = %e, "the Land's first key set is signed by none of the keys this node pins for it; keeping [trust]");
                        break;
                    }
                    Err(e) => {
                        return Err(self.log_alarm(format!(
                            "key set at leaf {index} of Land {land} does not follow the one before: {e}"
                        )));
                    }
                }
            }
        }
        if changed {
            self.update(move |s| s.key_sets = known)?;
        }
        Ok(())
    }

    /// The keys a release of `land` logged at leaf `index` counts against: those of the
    /// Land's newest key set before it, or `[trust]` when the node follows no set of it.
    pub(super) fn keys_for_release(
        &self,
        land: &efa_domain::model::ids::LandCode,
        index: Option<u64>,
    ) -> Vec<efa_domain::signing::VerifyingKey> {
        let sets =
            self.state.load().map(|s| s.key_sets.get(land.as_str()).cloned().unwrap_or_default()).unwrap_or_default();
        match index.and_then(|i| efa_domain::model::keyset::keys_at(&sets, i)) {
            Some(keys) => keys,
            None => self.config.trusted_keys(land),
        }
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
            let (_, facts, proven) = self.proven_leaf(cp, r.seq - 1, None).await?;
            let want = LeafFacts::Adoption {
                ags: r.ags.clone(),
                service: r.service.clone(),
                version: r.version.clone(),
                state: r.state,
            };
            if !proven || facts != want {
                return Err(self.log_alarm(format!(
                    "the hub's log does not hold the report {} {} {} at event {} (it holds {:?})",
                    r.service, r.version, r.state, r.seq, facts
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
    pub(super) async fn check_release_logged(&self, signed: &SignedRelease) -> Result<Option<u64>> {
        if self.config.log.is_none() {
            return Ok(None);
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
            match self.proven_leaf(&cp, 0, Some((&s.service_id, &s.version))).await {
                Ok((index, facts, proven)) => {
                    let want = LeafFacts::Release {
                        service: s.service_id.to_string(),
                        version: s.version.to_string(),
                        manifest_sha256: efa_domain::bundle::Manifest::content_digest(&signed.manifest).0.to_vec(),
                    };
                    if !proven || facts != want {
                        return Err(self.log_alarm(format!(
                            "the hub's log does not hold release {} {} with the manifest the Land signed (leaf {index}: {facts:?})",
                            s.service_id, s.version
                        )));
                    }
                    return Ok(Some(index));
                }
                Err(NodeError::Hub(HubError::Refused(st))) if st.code() == tonic::Code::OutOfRange => {
                    if tokio::time::Instant::now() >= give_up {
                        return Err(HubError::Unreachable(tonic::Status::unavailable(format!(
                            "release {} {} is not in the hub's transparency log yet; deploying it later",
                            s.service_id, s.version
                        )))
                        .into());
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(e) => return Err(e),
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
