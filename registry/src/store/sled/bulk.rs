//! Bulk loading of adoption ledger entries (migrations, benchmarks).

use super::{key, SledStore, BULK_CHUNK, BULK_SEQ_KEY};
use crate::error::Result;
use crate::store::codec::encode;
use crate::store::Store;
use efa_domain::model::adoption::{AdoptionEntry, AdoptionRecord, ServiceTotals};
use efa_domain::model::ids::ServiceId;
use std::collections::HashMap;

impl SledStore {
    pub(super) fn bulk_load(&self, entries: &[AdoptionEntry]) -> Result<()> {
        let mut bulk_seq = self
            .meta
            .get(BULK_SEQ_KEY)?
            .map(|v| u64::from_be_bytes(v.as_ref().try_into().unwrap_or([0; 8])))
            .unwrap_or(0);
        for chunk in entries.chunks(BULK_CHUNK) {
            let mut records: HashMap<Vec<u8>, AdoptionRecord> = HashMap::new();
            // Each touched pair's record as it was before this chunk, for the service totals.
            let mut before: HashMap<Vec<u8>, (ServiceId, Option<AdoptionRecord>)> = HashMap::new();
            let (mut history, mut kommunen) = (sled::Batch::default(), sled::Batch::default());
            for entry in chunk {
                let sid = entry.service_id.as_str().as_bytes();
                let ags = entry.ags.as_str().as_bytes();
                let record_key = key(&[sid, ags]);
                let previous = match records.remove(&record_key) {
                    Some(r) => Some(r),
                    None => {
                        let stored: Option<AdoptionRecord> = Self::get(&self.adoption, "adoption", &record_key)?;
                        before.insert(record_key.clone(), (entry.service_id.clone(), stored.clone()));
                        stored
                    }
                };
                kommunen.insert(ags, &[]);
                records.insert(record_key, AdoptionRecord::apply(previous, entry.clone()));
                bulk_seq += 1;
                let mut suffix = [0u8; 16];
                suffix[8..].copy_from_slice(&bulk_seq.to_be_bytes());
                history.insert(key(&[ags, &suffix]), encode(entry));
            }
            let mut adoption = sled::Batch::default();
            let mut totals: HashMap<ServiceId, ServiceTotals> = HashMap::new();
            for (k, record) in &records {
                adoption.insert(k.as_slice(), encode(record));
                // Every pair in `records` was noted in `before` on its first touch.
                if let Some((service, stored)) = before.get(k) {
                    let counts = match totals.entry(service.clone()) {
                        std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                        std::collections::hash_map::Entry::Vacant(e) => e.insert(
                            Self::get(&self.totals, "totals", service.as_str().as_bytes())?.unwrap_or_default(),
                        ),
                    };
                    counts.replace_record(stored.as_ref(), record);
                }
            }
            let mut totals_batch = sled::Batch::default();
            for (service, t) in &totals {
                totals_batch.insert(service.as_str().as_bytes(), encode(t));
            }
            self.totals.apply_batch(totals_batch)?;
            self.adoption_kommunen.apply_batch(kommunen)?;
            // sled spends its time copying leaf nodes per insert (CPU-bound); the two trees
            // are independent, so they load on their own threads.
            std::thread::scope(|s| {
                let history = s.spawn(|| self.history.apply_batch(history));
                let adoption = self.adoption.apply_batch(adoption);
                let joined = |h: std::thread::ScopedJoinHandle<'_, sled::Result<()>>| {
                    h.join().unwrap_or_else(|_| Err(sled::Error::ReportableBug("bulk load thread panicked".into())))
                };
                adoption.and(joined(history))
            })?;
            self.meta.insert(BULK_SEQ_KEY, &bulk_seq.to_be_bytes())?;
        }
        self.flush()
    }
}
