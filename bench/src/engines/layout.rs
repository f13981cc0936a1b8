//! Keys, values and the bulk load's writes, shared by the engines: what the sled store
//! writes (`registry/src/store/sled`), and a compact variant of its values.

use anyhow::{anyhow, Result};
use efa_domain::model::adoption::{AdoptionEntry, AdoptionRecord, AdoptionState, ServiceTotals};
use efa_domain::model::ids::{Ags, ServiceId};
use efa_registry::store::codec::{decode, encode};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

pub(super) fn key(parts: &[&[u8]]) -> Vec<u8> {
    let mut k = Vec::with_capacity(parts.iter().map(|p| p.len() + 1).sum());
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            k.push(0);
        }
        k.extend_from_slice(p);
    }
    k
}

pub(super) fn prefix(part: &[u8]) -> Vec<u8> {
    key(&[part, b""])
}

/// The first key after every key starting with `p` (`None`: no such key).
pub(super) fn prefix_end(p: &[u8]) -> Option<Vec<u8>> {
    let mut e = p.to_vec();
    while let Some(last) = e.pop() {
        if last < 0xff {
            e.push(last + 1);
            return Some(e);
        }
    }
    None
}

/// The parts of a key made by [`key`]: text before and after the first separator.
fn split_key(k: &[u8]) -> Result<(&str, &str)> {
    let at = k.iter().position(|b| *b == 0).ok_or_else(|| anyhow!("key without separator"))?;
    Ok((std::str::from_utf8(&k[..at])?, std::str::from_utf8(&k[at + 1..])?))
}

/// How records and ledger entries are encoded as values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Layout {
    /// As the sled store: postcard of the domain types, which repeat the service and AGS
    /// that their keys already hold.
    Store,
    /// Issue 17's "compact value layout": the same postcard without what the key holds (a
    /// record keeps neither service nor AGS; a ledger entry drops the AGS).
    Compact,
}

/// An entry without service and AGS.
#[derive(Serialize, Deserialize)]
struct Step {
    version: Option<semver::Version>,
    state: AdoptionState,
    reason: String,
    at_ms: i64,
}

impl Step {
    fn of(e: &AdoptionEntry) -> Self {
        Step { version: e.version.clone(), state: e.state, reason: e.reason.clone(), at_ms: e.at_ms }
    }

    fn entry(self, ags: Ags, service_id: ServiceId) -> AdoptionEntry {
        AdoptionEntry {
            ags,
            service_id,
            version: self.version,
            state: self.state,
            reason: self.reason,
            at_ms: self.at_ms,
        }
    }
}

/// A record under service\0AGS.
#[derive(Serialize, Deserialize)]
struct CompactRecord {
    latest: Step,
    running: Option<semver::Version>,
    seen_versions: Vec<semver::Version>,
}

/// A ledger entry under AGS\0seq.
#[derive(Serialize, Deserialize)]
struct CompactEntry {
    service_id: ServiceId,
    step: Step,
}

// The store's codec: a version byte, then postcard.
impl efa_registry::store::codec::Record for CompactRecord {
    const KIND: &'static str = "compact adoption record";
    const VERSION: u8 = 1;
}

impl efa_registry::store::codec::Record for CompactEntry {
    const KIND: &'static str = "compact ledger entry";
    const VERSION: u8 = 1;
}

impl Layout {
    pub(super) fn record_value(self, r: &AdoptionRecord) -> Vec<u8> {
        match self {
            Layout::Store => encode(r),
            Layout::Compact => encode(&CompactRecord {
                latest: Step::of(&r.latest),
                running: r.running.clone(),
                seen_versions: r.seen_versions.clone(),
            }),
        }
    }

    /// The record stored under `k` (service\0AGS).
    pub(super) fn record(self, k: &[u8], v: &[u8]) -> Result<AdoptionRecord> {
        Ok(match self {
            Layout::Store => decode("adoption", v)?,
            Layout::Compact => {
                let c: CompactRecord = decode("adoption", v)?;
                let (sid, ags) = split_key(k)?;
                AdoptionRecord {
                    latest: c.latest.entry(ags.parse()?, sid.parse()?),
                    running: c.running,
                    seen_versions: c.seen_versions,
                }
            }
        })
    }

    pub(super) fn entry_value(self, e: &AdoptionEntry) -> Vec<u8> {
        match self {
            Layout::Store => encode(e),
            Layout::Compact => encode(&CompactEntry { service_id: e.service_id.clone(), step: Step::of(e) }),
        }
    }

    /// The ledger entry stored under `k` (AGS\0seq).
    pub(super) fn entry(self, k: &[u8], v: &[u8]) -> Result<AdoptionEntry> {
        Ok(match self {
            Layout::Store => decode("history", v)?,
            Layout::Compact => {
                let c: CompactEntry = decode("history", v)?;
                let at = k.iter().position(|b| *b == 0).ok_or_else(|| anyhow!("history key without separator"))?;
                c.step.entry(std::str::from_utf8(&k[..at])?.parse()?, c.service_id)
            }
        })
    }
}

/// Bytes of keys and values written per tree: what any engine must store at least.
#[derive(Default, Serialize, Deserialize)]
pub(super) struct Payload {
    pub adoption: u64,
    pub history: u64,
    pub ratings: u64,
    /// `totals`, `adoption_kommunen` and `meta`.
    pub other: u64,
}

/// One chunk's writes, each list in key order (as a sled `Batch` applies them).
#[derive(Default)]
pub(super) struct Writes {
    pub adoption: Vec<(Vec<u8>, Vec<u8>)>,
    pub history: Vec<(Vec<u8>, Vec<u8>)>,
    pub kommunen: Vec<Vec<u8>>,
    pub totals: Vec<(Vec<u8>, Vec<u8>)>,
    pub bulk_seq: u64,
}

impl Writes {
    pub(super) fn count(&self, p: &mut Payload) {
        let pairs = |v: &[(Vec<u8>, Vec<u8>)]| v.iter().map(|(k, v)| (k.len() + v.len()) as u64).sum::<u64>();
        p.adoption += pairs(&self.adoption);
        p.history += pairs(&self.history);
        p.other += pairs(&self.totals) + self.kommunen.iter().map(|k| k.len() as u64).sum::<u64>() + 16;
    }
}

/// A chunk of ledger entries as the sled store's `bulk_load` turns it into writes: each
/// pair's stored record read once (`record`), folded with the chunk's entries, the
/// Kommunen and history keys, and the touched services' totals (`totals` reads the stored
/// ones).
pub(super) fn prepare(
    layout: Layout,
    chunk: &[AdoptionEntry],
    bulk_seq: &mut u64,
    mut record: impl FnMut(&[u8]) -> Result<Option<AdoptionRecord>>,
    mut totals: impl FnMut(&[u8]) -> Result<Option<ServiceTotals>>,
) -> Result<Writes> {
    let mut records: HashMap<Vec<u8>, AdoptionRecord> = HashMap::new();
    let mut before: HashMap<Vec<u8>, (ServiceId, Option<AdoptionRecord>)> = HashMap::new();
    let mut w = Writes::default();
    for entry in chunk {
        let sid = entry.service_id.as_str().as_bytes();
        let ags = entry.ags.as_str().as_bytes();
        let record_key = key(&[sid, ags]);
        let previous = match records.remove(&record_key) {
            Some(r) => Some(r),
            None => {
                let stored = record(&record_key)?;
                before.insert(record_key.clone(), (entry.service_id.clone(), stored.clone()));
                stored
            }
        };
        w.kommunen.push(ags.to_vec());
        records.insert(record_key, AdoptionRecord::apply(previous, entry.clone()));
        *bulk_seq += 1;
        let mut suffix = [0u8; 16];
        suffix[8..].copy_from_slice(&bulk_seq.to_be_bytes());
        w.history.push((key(&[ags, &suffix]), layout.entry_value(entry)));
    }
    let mut sums: HashMap<ServiceId, ServiceTotals> = HashMap::new();
    for (k, rec) in &records {
        w.adoption.push((k.clone(), layout.record_value(rec)));
        if let Some((service, stored)) = before.get(k) {
            let counts = match sums.entry(service.clone()) {
                std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::hash_map::Entry::Vacant(e) => {
                    e.insert(totals(service.as_str().as_bytes())?.unwrap_or_default())
                }
            };
            counts.replace_record(stored.as_ref(), rec);
        }
    }
    w.totals = sums.iter().map(|(s, t)| (s.as_str().as_bytes().to_vec(), encode(t))).collect();
    w.adoption.sort_unstable();
    w.totals.sort_unstable();
    w.history.sort_unstable();
    w.kommunen.sort_unstable();
    w.kommunen.dedup();
    w.bulk_seq = *bulk_seq;
    Ok(w)
}

/// A rating as (A) stores it: key service\0version\0AGS, value, stars.
pub(super) struct RatingKv {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    pub stars: u8,
}

/// The ratings' writes as the sled store's `put_rating` makes them, one after another: the
/// previous rating's stars read, the service's totals updated.
pub(super) fn prepare_ratings(
    ratings: &[RatingKv],
    mut previous: impl FnMut(&[u8]) -> Result<Option<u8>>,
    mut totals: impl FnMut(&[u8]) -> Result<Option<ServiceTotals>>,
) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut sums: BTreeMap<Vec<u8>, ServiceTotals> = BTreeMap::new();
    for r in ratings {
        let service = r.key.split(|b| *b == 0).next().unwrap_or_default();
        let stars = previous(&r.key)?;
        let counts = match sums.entry(service.to_vec()) {
            std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::btree_map::Entry::Vacant(e) => e.insert(totals(service)?.unwrap_or_default()),
        };
        counts.replace_rating(stars, r.stars);
    }
    Ok(sums.into_iter().map(|(k, t)| (k, encode(&t))).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_is_the_first_key_past_the_prefix() {
        assert_eq!(prefix_end(b"ozg-1\0"), Some(b"ozg-1\x01".to_vec()));
        assert_eq!(prefix_end(b"a\xff"), Some(b"b".to_vec()));
        assert_eq!(prefix_end(b"\xff\xff"), None);
    }

    /// The compact values give back what the store's give, and are smaller.
    #[test]
    fn compact_values_round_trip() -> Result<()> {
        let entry = AdoptionEntry {
            ags: "05913000".parse()?,
            service_id: "ozg-10001".parse()?,
            version: Some("1.1.0".parse()?),
            state: AdoptionState::Deployed,
            reason: String::new(),
            at_ms: 1_700_000_000_000,
        };
        let record = AdoptionRecord::apply(None, entry.clone());
        let rk = key(&[entry.service_id.as_str().as_bytes(), entry.ags.as_str().as_bytes()]);
        let hk = key(&[entry.ags.as_str().as_bytes(), &[0u8; 16]]);
        for layout in [Layout::Store, Layout::Compact] {
            assert_eq!(layout.record(&rk, &layout.record_value(&record))?, record);
            assert_eq!(layout.entry(&hk, &layout.entry_value(&entry))?, entry);
        }
        // What the compact values leave out: the strings (and length bytes) the key holds.
        let (sid, ags) = (entry.service_id.as_str().len() + 1, entry.ags.as_str().len() + 1);
        assert_eq!(Layout::Store.record_value(&record).len() - Layout::Compact.record_value(&record).len(), sid + ags);
        assert_eq!(Layout::Store.entry_value(&entry).len() - Layout::Compact.entry_value(&entry).len(), ags);
        Ok(())
    }
}
