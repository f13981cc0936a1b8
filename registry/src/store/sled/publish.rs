//! Releases on sled: a run of publishes in one transaction.

use super::tx::{append_event, blob_ref_keys, from_tx, insert_release_tx, key, published};
use super::SledStore;
use crate::error::Result;
use crate::store::codec::encode;
use crate::store::NewRelease;
use efa_domain::model::event::{Event, EventKind};
use efa_domain::model::rollout::Transition;
use sled::Transactional;

impl SledStore {
    /// Inserts releases (with their rollouts, blob index and small files) and their events,
    /// all in one transaction: sled pays its per-transaction costs once for the run. One
    /// existing version aborts the whole transaction; the caller then retries one by one.
    pub(super) fn insert_release_run(&self, new: &[NewRelease]) -> Result<Vec<Vec<Event>>> {
        let keyed: Vec<(Vec<u8>, Vec<Vec<u8>>)> = new
            .iter()
            .map(|n| {
                let r = &n.release;
                (key(&[r.service_id.as_str().as_bytes(), r.version.to_string().as_bytes()]), blob_ref_keys(r))
            })
            .collect();
        (&self.releases, &self.blob_refs, &self.inline_blobs, &self.rollouts, &self.meta, &self.events)
            .transaction(|(releases, blob_refs, inline_blobs, rollouts, meta, events)| {
                let mut out = Vec::with_capacity(new.len());
                for (n, (k, refs)) in new.iter().zip(&keyed) {
                    let release = &n.release;
                    insert_release_tx(releases, blob_refs, inline_blobs, k, refs, release, &n.inline)?;
                    let mut evs = vec![append_event(meta, events, release.published_at_ms, published(release))?];
                    if let Some(rollout) = &n.rollout {
                        rollouts.insert(k.as_slice(), encode(rollout))?;
                        let kind = EventKind::RolloutChanged {
                            service_id: release.service_id.clone(),
                            version: release.version.clone(),
                            transition: Transition::Started,
                        };
                        evs.push(append_event(meta, events, release.published_at_ms, kind)?);
                    }
                    out.push(evs);
                }
                Ok(out)
            })
            .map_err(from_tx)
    }
}
