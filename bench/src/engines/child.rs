//! One engine in its own process: load (A)'s data, measure, run the queries, print one
//! JSON line.

use super::kv::{Reader, T};
use super::layout::{key, prefix, Layout, Payload, RatingKv};
use super::{Engine, EngineScale, BULK_CHUNK, KOMMUNEN_PER_LOAD, RATING_EVERY};
use crate::queries::{ledger, time_runs};
use crate::sys::{self, mix};
use anyhow::{Context, Result};
use efa_domain::model::adoption::{AdoptionEntry, AdoptionRecord};
use efa_domain::model::ids::{Ags, ServiceId};
use efa_domain::model::rating::{Criterion, Rating, RatingAggregate};
use efa_registry::import::{bundled_gv100ad, bundled_ozg};
use efa_registry::store::codec::{decode, encode};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

// ---------------------------------------------------------------------------------------
// The queries, with the sled store's access patterns

/// "Who adopted service X": the service's records by prefix, decoded; those running it.
fn who_adopted(r: &dyn Reader, layout: Layout, service: &ServiceId) -> Result<usize> {
    let mut running = 0;
    r.scan(T::Adoption, &prefix(service.as_str().as_bytes()), &mut |k, v| {
        running += usize::from(layout.record(k, v)?.running.is_some());
        Ok(())
    })?;
    Ok(running)
}

/// "Coverage per Kreis for X": the same scan, Gemeinden running it per Kreis (AGS[..5]).
fn coverage(r: &dyn Reader, layout: Layout, service: &ServiceId) -> Result<usize> {
    let mut per_kreis: BTreeMap<String, u32> = BTreeMap::new();
    r.scan(T::Adoption, &prefix(service.as_str().as_bytes()), &mut |k, v| {
        let rec = layout.record(k, v)?;
        if rec.running.is_some() {
            *per_kreis.entry(rec.latest.ags.kreis().to_string()).or_default() += 1;
        }
        Ok(())
    })?;
    Ok(per_kreis.len())
}

/// "Everything Kommune Y runs", as the sled store's `adoptions_of` and `history_of`: whether
/// the Kommune has records at all, then a point read under each service with records (the
/// keys of `totals`), and the Kommune's whole history.
fn kommune(r: &dyn Reader, layout: Layout, ags: &Ags) -> Result<usize> {
    let a = ags.as_str().as_bytes();
    if !r.get(T::Kommunen, a, &mut |_| Ok(()))? {
        return Ok(0);
    }
    let mut services = Vec::new();
    r.scan(T::Totals, b"", &mut |k, _| {
        services.push(k.to_vec());
        Ok(())
    })?;
    let mut current: Vec<AdoptionRecord> = Vec::with_capacity(services.len());
    for s in &services {
        let k = key(&[s, a]);
        r.get(T::Adoption, &k, &mut |v| {
            current.push(layout.record(&k, v)?);
            Ok(())
        })?;
    }
    let mut history: Vec<AdoptionEntry> = Vec::new();
    r.scan(T::History, &prefix(a), &mut |k, v| {
        history.push(layout.entry(k, v)?);
        Ok(())
    })?;
    Ok(current.len() + history.len())
}

/// "Rating summary for X": the service's ratings by prefix, aggregated overall and per
/// version as the registry does.
fn rating_summary(r: &dyn Reader, service: &ServiceId) -> Result<usize> {
    let mut ratings: Vec<Rating> = Vec::new();
    r.scan(T::Ratings, &prefix(service.as_str().as_bytes()), &mut |_, v| {
        ratings.push(decode("ratings", v)?);
        Ok(())
    })?;
    let mut by_version: BTreeMap<&semver::Version, Vec<&Rating>> = BTreeMap::new();
    for r in &ratings {
        by_version.entry(&r.version).or_default().push(r);
    }
    let overall = RatingAggregate::from_ratings(&ratings);
    let per_version: Vec<_> = by_version.into_values().map(RatingAggregate::from_ratings).collect();
    std::hint::black_box(&per_version);
    Ok(overall.count as usize)
}

#[derive(Serialize, Deserialize)]
pub(super) struct QueryTimes {
    pub name: String,
    pub samples_ms: Vec<f64>,
    /// What the last run found, and what that counts.
    pub items: usize,
    pub what: String,
}

#[derive(Serialize, Deserialize)]
pub(super) struct ChildResult {
    pub kommunen: usize,
    pub services: usize,
    pub ledger_entries: u64,
    pub ratings: u64,
    pub load_s: f64,
    pub ratings_s: f64,
    pub disk_bytes: u64,
    /// Apparent size (file lengths; a sparse file's holes count here, not in `disk_bytes`).
    pub file_bytes: u64,
    pub payload: Payload,
    pub space: String,
    pub rss_start_mib: f64,
    pub rss_loaded_mib: f64,
    pub rss_after_mib: f64,
    pub hwm_mib: f64,
    pub queries: Vec<QueryTimes>,
}

fn file_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => file_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// The services of (A), named as `queries.rs` names them: the OZG-Leistungen, then
/// numbered variants.
fn service_ids(n: usize) -> Result<Vec<ServiceId>> {
    let ozg = bundled_ozg()?;
    (0..n)
        .map(|i| {
            let o = &ozg[i % ozg.len()];
            let id = if i < ozg.len() {
                format!("ozg-{}", o.ozg_id)
            } else {
                format!("ozg-{}-v{}", o.ozg_id, i / ozg.len() + 1)
            };
            id.parse().context("service id")
        })
        .collect()
}

/// `efa-bench engine-child --engine E --dir D`: loads (A)'s data into engine `E` in `D`,
/// runs the queries and prints one JSON line of results.
pub fn child(engine: Engine, dir: &Path, scale: &EngineScale) -> Result<()> {
    let gv = bundled_gv100ad()?;
    let kommunen: Vec<Ags> = gv.kommunen.iter().take(scale.kommunen).map(|k| k.ags.clone()).collect();
    drop(gv);
    let services = service_ids(scale.services)?;
    let v1: semver::Version = "1.0.0".parse()?;
    let rss_start = sys::rss_mib();
    let layout = engine.layout();
    let mut kv = engine.open(dir)?;

    let mut payload = Payload::default();
    let (mut bulk_seq, mut ledger_entries) = (0u64, 0u64);
    let mut ratings: Vec<RatingKv> = Vec::new();
    // Generated as (A) generates them, but handed over a chunk at a time: the same chunks
    // as (A)'s per-block entry lists split into `BULK_CHUNK`s, without holding the block.
    let mut pending: Vec<AdoptionEntry> = Vec::with_capacity(BULK_CHUNK + 4);
    let t = Instant::now();
    for (block_no, block) in kommunen.chunks(KOMMUNEN_PER_LOAD).enumerate() {
        for (bi, ags) in block.iter().enumerate() {
            let ki = block_no * KOMMUNEN_PER_LOAD + bi;
            for (si, sid) in services.iter().enumerate() {
                let h = mix(((si as u64) << 32) | ki as u64);
                ledger(ags, sid, h, 1_700_000_000_000 + (h % 1_000_000) as i64, &mut pending);
                let deployed = h % 100 < 55 || (70..80).contains(&(h % 100));
                if deployed && (h >> 20).is_multiple_of(RATING_EVERY) {
                    let stars = 1 + ((h >> 8) % 5) as u8;
                    let rating = Rating {
                        ags: ags.clone(),
                        service_id: sid.clone(),
                        version: v1.clone(),
                        stars,
                        criteria: Criterion::ALL.iter().take(3).map(|c| (*c, 1 + ((h >> 12) % 5) as u8)).collect(),
                        comment: "läuft stabil".into(),
                        at_ms: 1_700_000_000_000,
                        met: vec![],
                    };
                    let key = key(&[sid.as_str().as_bytes(), b"1.0.0", ags.as_str().as_bytes()]);
                    ratings.push(RatingKv { key, value: encode(&rating), stars });
                }
                if pending.len() >= BULK_CHUNK {
                    kv.load_chunk(&pending[..BULK_CHUNK], &mut bulk_seq, &mut payload)?;
                    ledger_entries += BULK_CHUNK as u64;
                    pending.drain(..BULK_CHUNK);
                }
            }
        }
        if !pending.is_empty() {
            kv.load_chunk(&pending, &mut bulk_seq, &mut payload)?;
            ledger_entries += pending.len() as u64;
            pending.clear();
        }
        // The sled store flushes at the end of each bulk load call.
        kv.commit()?;
    }
    let load_s = t.elapsed().as_secs_f64();
    drop(pending);

    ratings.sort_unstable_by(|a, b| a.key.cmp(&b.key));
    payload.ratings = ratings.iter().map(|r| (r.key.len() + r.value.len()) as u64).sum();
    let n_ratings = ratings.len() as u64;
    let t = Instant::now();
    kv.load_ratings(&ratings)?;
    kv.commit()?;
    let ratings_s = t.elapsed().as_secs_f64();
    drop(ratings);

    let disk_bytes = sys::disk_bytes(dir);
    let file_bytes = file_bytes(dir);
    let rss_loaded = sys::rss_mib();

    let svc = |i: usize| &services[mix(i as u64 + 77) as usize % services.len()];
    let kom = |i: usize| &kommunen[mix(i as u64 + 991) as usize % kommunen.len()];
    let mut queries = Vec::new();
    type Query<'a> = Box<dyn Fn(&dyn Reader, usize) -> Result<usize> + 'a>;
    let list: [(&str, &str, Query); 4] = [
        ("who adopted service X", "Gemeinden running it", Box::new(|r: &dyn Reader, i| who_adopted(r, layout, svc(i)))),
        ("coverage per Kreis for X", "Kreise", Box::new(|r: &dyn Reader, i| coverage(r, layout, svc(i)))),
        ("everything Kommune Y runs", "records+history", Box::new(|r: &dyn Reader, i| kommune(r, layout, kom(i)))),
        ("rating summary for X", "ratings", Box::new(|r: &dyn Reader, i| rating_summary(r, svc(i)))),
    ];
    for (name, what, q) in list {
        let (timed, items) = time_runs(scale.runs, |i| q(&*kv.reader()?, i))?;
        queries.push(QueryTimes { name: name.into(), samples_ms: timed.samples, items, what: what.into() });
    }
    let rss_after = sys::rss_mib();
    let hwm = sys::proc_status_kib("VmHWM") as f64 / 1024.0;
    let space = kv.space()?;
    drop(kv);

    let result = ChildResult {
        kommunen: kommunen.len(),
        services: services.len(),
        ledger_entries,
        ratings: n_ratings,
        load_s,
        ratings_s,
        disk_bytes,
        file_bytes,
        payload,
        space,
        rss_start_mib: rss_start,
        rss_loaded_mib: rss_loaded,
        rss_after_mib: rss_after,
        hwm_mib: hwm,
        queries,
    };
    println!("{}", serde_json::to_string(&result)?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every engine and layout answers the four queries alike on a few Kommunen.
    #[test]
    fn engines_agree() -> Result<()> {
        let kommunen: Vec<Ags> = bundled_gv100ad()?.kommunen.iter().take(30).map(|k| k.ags.clone()).collect();
        let services = service_ids(6)?;
        let mut entries = Vec::new();
        for (ki, ags) in kommunen.iter().enumerate() {
            for (si, sid) in services.iter().enumerate() {
                let h = mix(((si as u64) << 32) | ki as u64);
                ledger(ags, sid, h, 1, &mut entries);
            }
        }
        let mut answers = Vec::new();
        for engine in [Engine::Sled, Engine::SledCompact, Engine::Redb] {
            let dir = tempfile::tempdir()?;
            let (layout, mut kv) = (engine.layout(), engine.open(dir.path())?);
            let (mut seq, mut payload) = (0, Payload::default());
            // Chunks that split pairs, so records are read back mid-load.
            for chunk in entries.chunks(7) {
                kv.load_chunk(chunk, &mut seq, &mut payload)?;
            }
            kv.commit()?;
            let r = kv.reader()?;
            answers.push((
                who_adopted(&*r, layout, &services[1])?,
                coverage(&*r, layout, &services[1])?,
                kommune(&*r, layout, &kommunen[3])?,
                rating_summary(&*r, &services[1])?,
            ));
        }
        assert_eq!(answers[0], answers[1]);
        assert_eq!(answers[0], answers[2]);
        assert!(answers[0].0 > 0 && answers[0].2 > 6, "{:?}", answers[0]);
        Ok(())
    }
}
