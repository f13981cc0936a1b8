//! (A) Adoption queries on the storage engine the hub queries: `SledStore` + `Registry`,
//! on disk in the work dir, loaded with the bulk method and then queried.

use crate::report::Row;
use crate::sys::{self, mix, percentile};
use anyhow::{Context, Result};
use efa_domain::bundle::Digest;
use efa_domain::model::adoption::{AdoptionEntry, AdoptionState};
use efa_domain::model::catalog::Service;
use efa_domain::model::event::EventKind;
use efa_domain::model::ids::{Ags, ServiceId};
use efa_domain::model::rating::{Criterion, Rating};
use efa_domain::model::release::Release;
use efa_registry::import::{bundled_gv100ad, bundled_ozg};
use efa_registry::store::{SledStore, Store};
use efa_registry::Registry;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

#[derive(Clone)]
pub struct QueryScale {
    /// Gemeinden taken from the GV100AD (all 10,773 at most).
    pub kommunen: usize,
    /// Services: the 557 OZG-Leistungen, then synthetic variants of them.
    pub services: usize,
    /// Runs per query.
    pub runs: usize,
    /// One in `rating_every` deployed records also carries a rating.
    pub rating_every: u64,
    /// sled: create the store with zstd pages (the hub's default, `sled_compression`).
    pub sled_compression: bool,
}

/// Issue 17: every query at 6.2M records on the embedded store.
const GOAL_MS: f64 = 20.0;
/// Issue 14: the same queries on PostgreSQL.
const PG_GOAL_MS: f64 = 50.0;
/// Issue 15: one rollout gate evaluation at full scale.
const GATE_GOAL_MS: f64 = 5.0;
/// Kommunen per bulk-load call: 500 × 575 services ≈ 290k records, ~640k ledger entries.
const KOMMUNEN_PER_LOAD: usize = 500;

fn v(s: &str) -> semver::Version {
    s.parse().expect("static version")
}

/// The ledger of one (Kommune, service) pair: 1 to 4 entries, deterministic per pair.
pub(crate) fn ledger(ags: &Ags, sid: &ServiceId, h: u64, at: i64, out: &mut Vec<AdoptionEntry>) {
    let e = |state, version: Option<&str>, reason: &str, dt: i64| AdoptionEntry {
        ags: ags.clone(),
        service_id: sid.clone(),
        version: version.map(v),
        state,
        reason: reason.into(),
        at_ms: at + dt,
    };
    out.push(e(AdoptionState::Evaluating, Some("1.0.0"), "", 0));
    match h % 100 {
        0..=54 => {
            out.push(e(AdoptionState::Deployed, Some("1.0.0"), "", 1000));
            if h.is_multiple_of(5) {
                out.push(e(AdoptionState::Evaluating, Some("1.1.0"), "", 2000));
                out.push(e(AdoptionState::Deployed, Some("1.1.0"), "", 3000));
            }
        }
        55..=69 => out.push(e(AdoptionState::Rejected, None, "eigene Lösung im Einsatz (Fachverfahren XY)", 1000)),
        70..=79 => {
            out.push(e(AdoptionState::Deployed, Some("1.0.0"), "", 1000));
            out.push(e(
                AdoptionState::Failed,
                Some("1.1.0"),
                "Schnittstelle zum Zahlungsdienst nicht erreichbar",
                2000,
            ));
        }
        _ => {}
    }
}

/// Query timings in ms, the first run (cold) also on its own.
pub(crate) struct Timed {
    pub first_ms: f64,
    pub samples: Vec<f64>,
}

/// A plan as a Land would write it: two pilot Kommunen, a Kreis, 10 % of the rest.
fn rollout_plan(kommunen: &[Ags]) -> efa_domain::model::rollout::RolloutPlan {
    use efa_domain::model::rollout::{Gates, Members, Ring, RolloutPlan};
    let kreis = kommunen.get(kommunen.len() / 2).map(|a| a.kreis()).expect("some Kommunen");
    RolloutPlan {
        rings: vec![
            Ring { name: "Pilot".into(), members: Members::Kommunen(kommunen.iter().take(2).cloned().collect()) },
            Ring { name: "Kreis".into(), members: Members::Kreise([kreis].into()) },
            Ring { name: "Zehn Prozent".into(), members: Members::Share { percent: 10 } },
        ],
        gates: Gates { min_healthy: 2, max_failed_percent: Some(10), min_ratings: 1, ..Default::default() },
        decide_within_secs: None,
    }
}

/// Runs `f` `runs` times and times each run (the first is cold); the last run's count.
pub(crate) fn time_runs(runs: usize, mut f: impl FnMut(usize) -> Result<usize>) -> Result<(Timed, usize)> {
    let mut samples = Vec::with_capacity(runs);
    let mut items = 0;
    for i in 0..runs {
        let t = Instant::now();
        items = f(i)?;
        samples.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    Ok((Timed { first_ms: samples.first().copied().unwrap_or(0.0), samples }, items))
}

pub fn run(work_dir: &Path, scale: &QueryScale) -> Result<Vec<Row>> {
    run_on(work_dir, scale, None)
}

/// The queries on sled (`postgres: None`, the scenario A) or on the PostgreSQL database at
/// that URL (reported under "F PostgreSQL", disk measured as the database's size).
pub fn run_on(work_dir: &Path, scale: &QueryScale, postgres: Option<&str>) -> Result<Vec<Row>> {
    let dir = tempfile::Builder::new().prefix("efa-bench-queries-").tempdir_in(work_dir)?;
    let db_dir = dir.path().join("db");
    let rss_start = sys::rss_mib();
    let store: Arc<dyn Store> = match postgres {
        None => Arc::new(SledStore::open_with(
            &db_dir,
            efa_registry::store::SledOptions { compression: scale.sled_compression },
        )?),
        Some(url) => Arc::new(efa_registry::store::PostgresStore::open(url)?),
    };
    let registry = Registry::new(store.clone());
    registry.seed_bundled()?;

    let gv = bundled_gv100ad()?;
    let kommunen: Vec<Ags> = gv.kommunen.iter().take(scale.kommunen).map(|k| k.ags.clone()).collect();
    let ozg = bundled_ozg()?;
    let laender: Vec<_> = gv.laender.iter().map(|l| l.code.clone()).collect();
    let mut services: Vec<ServiceId> = Vec::with_capacity(scale.services);
    for i in 0..scale.services {
        let o = &ozg[i % ozg.len()];
        let id = if i < ozg.len() {
            format!("ozg-{}", o.ozg_id)
        } else {
            format!("ozg-{}-v{}", o.ozg_id, i / ozg.len() + 1)
        };
        let sid: ServiceId = id.parse().context("service id")?;
        let land = laender[i % laender.len()].clone();
        let service = Service {
            id: sid.clone(),
            ozg_id: o.ozg_id.clone(),
            leistungsschluessel: None,
            title: o.name.clone(),
            description: String::new(),
            land: land.clone(),
            themenfeld: o.themenfeld.clone(),
            lebenslage: o.lebenslage.clone(),
            parameters: vec![],
            registered_at_ms: 1_700_000_000_000,
            adoption_public: false,
            more_leistungsschluessel: vec![],
            deprecated: None,
        };
        store.put_service(&service, EventKind::ServiceRegistered { service_id: sid.clone(), land: land.clone() })?;
        for ver in ["1.0.0", "1.1.0"] {
            store.insert_release(
                &Release {
                    service_id: sid.clone(),
                    version: v(ver),
                    channel: Default::default(),
                    land: land.clone(),
                    content_digest: Digest::of(format!("{sid}{ver}").as_bytes()),
                    total_size: 1,
                    file_count: 1,
                    release_notes: String::new(),
                    published_at_ms: 1_700_000_000_000,
                    manifest: vec![],
                    signature: vec![],
                    yank: None,
                },
                &[],
            )?;
        }
        services.push(sid);
    }
    store.flush()?;

    // Load in blocks of Kommunen, every service for each: the per-Kommune trees (index,
    // history) then grow at their end and the per-service tree in a few hundred runs per
    // block, instead of every batch touching every leaf page (per-service loading did that
    // and made sled rewrite the whole index 575 times).
    let records = (kommunen.len() * services.len()) as f64;
    let t = Instant::now();
    let mut ledger_entries = 0usize;
    let mut ratings = Vec::new();
    for (block_no, block) in kommunen.chunks(KOMMUNEN_PER_LOAD).enumerate() {
        let mut entries = Vec::new();
        for (bi, ags) in block.iter().enumerate() {
            let ki = block_no * KOMMUNEN_PER_LOAD + bi;
            for (si, sid) in services.iter().enumerate() {
                let h = mix(((si as u64) << 32) | ki as u64);
                ledger(ags, sid, h, 1_700_000_000_000 + (h % 1_000_000) as i64, &mut entries);
                let deployed = h % 100 < 55 || (70..80).contains(&(h % 100));
                if deployed && (h >> 20).is_multiple_of(scale.rating_every) {
                    let stars = 1 + ((h >> 8) % 5) as u8;
                    ratings.push(Rating {
                        ags: ags.clone(),
                        service_id: sid.clone(),
                        version: v("1.0.0"),
                        stars,
                        criteria: Criterion::ALL.iter().take(3).map(|c| (*c, 1 + ((h >> 12) % 5) as u8)).collect(),
                        comment: "läuft stabil".into(),
                        at_ms: 1_700_000_000_000,
                        met: vec![],
                    });
                }
            }
        }
        ledger_entries += entries.len();
        registry.bulk_load_adoptions(entries)?;
    }
    let load_s = t.elapsed().as_secs_f64();
    // In key order (service, version, AGS), as a batch import would write them.
    ratings.sort_by(|a, b| (&a.service_id, &a.ags).cmp(&(&b.service_id, &b.ags)));
    let t = Instant::now();
    for r in &ratings {
        store.put_rating(r)?;
    }
    store.flush()?;
    let ratings_s = t.elapsed().as_secs_f64();
    let rss_loaded = sys::rss_mib();
    let disk = match postgres {
        None => sys::disk_bytes(&db_dir) as f64,
        Some(url) => crate::postgres::database_bytes(url)? as f64,
    };

    let svc = |i: usize| &services[mix(i as u64 + 77) as usize % services.len()];
    let kom = |i: usize| &kommunen[mix(i as u64 + 991) as usize % kommunen.len()];
    // The queries as an operator asks them (authorization included).
    let operator = efa_domain::authz::Identity::Operator("bench".into());
    let (adopters, n_adopters) = time_runs(scale.runs, |i| Ok(registry.adopters(&operator, svc(i))?.len()))?;
    let (coverage, n_cov) = time_runs(scale.runs, |i| Ok(registry.coverage(&operator, svc(i), None)?.len()))?;
    let (kommune, n_kom) = time_runs(scale.runs, |i| {
        let report = registry.kommune_report(&operator, kom(i))?;
        Ok(report.current.len() + report.history.len())
    })?;
    let (rating, n_rat) = time_runs(scale.runs, |i| Ok(registry.rating_summary(svc(i))?.overall.count as usize))?;
    // The operators' landing page: every service with its counters.
    let (overview, n_over) =
        time_runs(scale.runs.min(10), |_| Ok(efa_hub::dashboard::data::overview(&registry)?.rows.len()))?;
    // The adoption matrix without filters: at most 200 Kommunen × every service.
    let (matrix, n_cells) = time_runs(scale.runs.min(10), |_| {
        Ok(efa_hub::dashboard::data::matrix(&registry, &Default::default())?.cells.len())
    })?;
    // Rollout gates. Counting one release's rings from its records is what seeds the
    // controller (and what the status page shows); each round after that judges from the
    // counters the controller keeps current from the event log.
    let plan = rollout_plan(&kommunen);
    let (seed, n_gate_rings) = time_runs(scale.runs, |i| {
        let (sid, ver) = (svc(i), v("1.1.0"));
        let rollout = efa_domain::model::rollout::Rollout::start(plan.clone(), 1_700_000_000_000)?;
        Ok(registry.ring_counts(sid, &ver, None, &rollout)?.len())
    })?;
    let gated = svc(0).clone();
    let rollout = efa_domain::model::rollout::Rollout::start(plan.clone(), efa_domain::now_ms())?;
    store.put_rollout(&gated, &v("1.1.0"), None, &rollout, efa_domain::model::rollout::Transition::Started, 1)?;
    store.flush()?;
    let mut controller = efa_registry::RolloutController::default();
    registry.controller_round(&mut controller, efa_domain::now_ms())?;
    let (gates, _) = time_runs(scale.runs, |_| {
        let moved = registry.controller_round(&mut controller, efa_domain::now_ms())?;
        Ok(moved.len())
    })?;
    let rss_after = sys::rss_mib();

    let scen = match (postgres, scale.sled_compression) {
        (Some(_), _) => "F PostgreSQL queries",
        (None, true) => "A queries",
        (None, false) => "A queries, uncompressed store",
    };
    let engine = if postgres.is_some() { "PostgreSQL" } else { "sled" };
    let mut rows = vec![
        Row::new(scen, "records (Kommune × service)", records, "records").note(format!(
            "{} Gemeinden × {} services; {ledger_entries} ledger entries, {} ratings",
            kommunen.len(),
            services.len(),
            ratings.len()
        )),
        Row::new(scen, "load adoption records+history (bulk)", load_s, "s").note(format!(
            "{:.0} records/s; blocks of {KOMMUNEN_PER_LOAD} Kommunen × all services ({engine})",
            records / load_s
        )),
        Row::new(scen, "load ratings (put_rating, logged)", ratings_s, "s")
            .note(format!("{:.0} ratings/s, one {engine} transaction + event each", ratings.len() as f64 / ratings_s)),
        Row::new(scen, "disk bytes per record", disk / records, "B")
            .note(format!("{:.2} GiB {engine} incl. history, ratings, register", disk / (1u64 << 30) as f64)),
        Row::new(scen, "RSS after load", rss_loaded, "MiB").note(format!(
            "VmRSS of this process ({engine}: the PostgreSQL server's memory is not in it); {:.0} MiB at start; peak VmHWM {:.0} MiB",
            rss_start,
            sys::proc_status_kib("VmHWM") as f64 / 1024.0
        )),
        Row::new(scen, "RSS after queries", rss_after, "MiB"),
    ];
    if postgres.is_some() {
        rows.push(
            Row::new(scen, "PostgreSQL server memory after queries", sys::postgres_pss_mib(), "MiB")
                .note("sum of the postgres processes' PSS (shared buffers counted once; default settings, 128 MiB)"),
        );
    }
    // The four queries carry its goal; the dashboard pages are reported beside them.
    let goal_ms = if postgres.is_some() { PG_GOAL_MS } else { GOAL_MS };
    for (name, timed, what, goal) in [
        ("who adopted service X", &adopters, format!("{n_adopters} adopters"), Some(goal_ms)),
        ("coverage per Kreis for X", &coverage, format!("{n_cov} rows"), Some(goal_ms)),
        ("everything Kommune Y runs", &kommune, format!("{n_kom} records+history"), Some(goal_ms)),
        ("rating summary for X", &rating, format!("{n_rat} ratings"), Some(goal_ms)),
        (
            "rollout controller round (counters)",
            &gates,
            format!("one running rollout of X, {n_gate_rings} rings (2 pilots, a Kreis, 10 %, the rest)"),
            Some(GATE_GOAL_MS),
        ),
        (
            "rollout ring counts from records",
            &seed,
            format!("{n_gate_rings} rings; seeds the controller once per release, and the status page"),
            None,
        ),
        ("dashboard overview (all services)", &overview, format!("{n_over} services, from per-service counters"), None),
        ("dashboard matrix, unfiltered", &matrix, format!("{n_cells} cells (≤ 200 Kommunen × all services)"), None),
    ] {
        let p50 = percentile(&timed.samples, 50.0);
        let p99 = percentile(&timed.samples, 99.0);
        let judge = |row: Row, v: f64| match goal {
            Some(g) => row.goal(&format!("≤ {g} ms"), Some(v <= g)),
            None => row,
        };
        rows.push(judge(Row::new(scen, format!("{name} p50"), p50, "ms"), p50).note(format!(
            "{} runs, first (cold) {:.1} ms; {what}",
            timed.samples.len(),
            timed.first_ms
        )));
        rows.push(judge(Row::new(scen, format!("{name} p99"), p99, "ms"), p99));
    }
    drop(registry);
    drop(store);
    Ok(rows)
}
