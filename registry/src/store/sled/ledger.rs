//! The adoption ledger's hot path on sled: the reports of one commit batch.

use super::tx::{append_event, from_tx, key, tx_get};
use super::SledStore;
use crate::error::Result;
use crate::store::codec::encode;
use efa_domain::model::adoption::{AdoptionEntry, AdoptionRecord, ServiceTotals};
use efa_domain::model::event::{Event, EventKind};
use sled::Transactional;

impl SledStore {
    /// Folds reports into their records, the services' totals and the Kommunen's history, with
    /// one event each, all in one transaction: sled pays its per-transaction costs (two
    /// buffer rolls and a wake-up of its I/O threads) once per batch, and keys that several
    /// reports touch (the seq, a service's totals) are written once.
    pub(super) fn append_adoptions(&self, entries: &[AdoptionEntry]) -> Result<Vec<(AdoptionRecord, Event)>> {
        let trees = (&self.adoption, &self.history, &self.totals, &self.adoption_kommunen, &self.meta, &self.events);
        trees
            .transaction(|(adoption, history, totals, kommunen, meta, events)| {
                let mut out = Vec::with_capacity(entries.len());
                for entry in entries {
                    let sid = entry.service_id.as_str().as_bytes();
                    let ags = entry.ags.as_str().as_bytes();
                    let record_key = key(&[sid, ags]);
                    let previous = tx_get::<AdoptionRecord>(adoption, "adoption", &record_key)?;
                    let mut counts = tx_get::<ServiceTotals>(totals, "totals", sid)?.unwrap_or_default();
                    let record = AdoptionRecord::apply(previous.clone(), entry.clone());
                    counts.replace_record(previous.as_ref(), &record);
                    totals.insert(sid, encode(&counts))?;
                    // A read is cheaper than a rewrite: sled logs (and compresses) every insert.
                    if kommunen.get(ags)?.is_none() {
                        kommunen.insert(ags, &[])?;
                    }
                    adoption.insert(record_key.as_slice(), encode(&record))?;
                    let event = append_event(meta, events, entry.at_ms, EventKind::AdoptionReported(entry.clone()))?;
                    history.insert(key(&[ags, &event.seq.to_be_bytes()]), encode(entry))?;
                    out.push((record, event));
                }
                Ok(out)
            })
            .map_err(from_tx)
    }
}
