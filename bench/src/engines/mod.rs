//! (A engines) The data of scenario (A) in raw sled and another embedded engine, for issue
//! 17's comparison. Same Kommunen, services, ledgers and ratings as (A); the same trees,
//! keys and values as the sled store (`registry/src/store/sled`, values in its codec); the
//! same bulk-load pattern (blocks of 500 Kommunen × all services, chunks of 100,000 ledger
//! entries, durable at the end of each block); the four queries with the sled
//! store's access patterns, written against each engine's own API. Each engine runs in a
//! fresh child process (`engine-child`), so the RSS it reports is its own.
//!
//! `sled-store` is sled configured as the hub's store (`database_config`); `sled-compact`
//! is the same with issue 17's "compact value layout" ([`layout::Layout::Compact`]): the
//! lever measured before a store format would adopt it.
//!
//! The other engine is redb 2.x: a copy-on-write B-tree whose memory is a fixed user-space
//! cache (1 GiB by default; `redb-256m` sets 256 MiB) and whose freed pages are reused in
//! place, where sled is a log-structured tree whose segments keep stale page versions until
//! it rewrites them and whose cache fills with every page the load touched. fjall, an LSM
//! tree with compression, would differ from sled more on disk, but it pulls ~20 crates, two
//! of them further majors of hashbrown that the dependency policy (deny.toml) refuses;
//! redb has no dependencies and builds with the workspace's rust-version.
//!
//! Not stored here, unlike (A): the event log, the register (Länder, Kreise, Kommunen) and
//! the 575 services with their releases: together well under 1 B per record.

mod child;
mod kv;
mod layout;

pub use child::child;

use crate::report::Row;
use crate::sys::percentile;
use anyhow::{anyhow, bail, Context, Result};
use kv::{Kv, RedbKv, SledKv};
use layout::Layout;
use std::io::Read;
use std::path::Path;

const SCEN: &str = "A engines";
/// Issue 17's goals at 6.2M records.
const QUERY_GOAL_MS: f64 = 20.0;
const DISK_GOAL_B: f64 = 300.0;
const RSS_GOAL_MIB: f64 = 1536.0;
const LOAD_GOAL_PER_S: f64 = 100_000.0;
/// As (A) and the sled store's bulk load: Kommunen per load call, entries per batch.
const KOMMUNEN_PER_LOAD: usize = 500;
const BULK_CHUNK: usize = 100_000;
const RATING_EVERY: u64 = 8;

/// An engine and its configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Engine {
    /// sled 0.34, default `Config` (1 GiB cache, `Mode::LowSpace`, flushes every 500 ms).
    #[value(name = "sled")]
    Sled,
    /// sled 0.34 with a 256 MiB cache (`Mode::LowSpace` is already the default), without
    /// compression: the raw engine's layout cost.
    #[value(name = "sled-tuned")]
    SledTuned,
    /// sled as the hub's store creates it (256 MiB cache, zstd level 3).
    #[value(name = "sled-store")]
    SledStore,
    /// `sled-store` with compact values (no service or AGS that the key already holds).
    #[value(name = "sled-compact")]
    SledCompact,
    /// redb 2.x, default `Builder` (1 GiB cache).
    #[value(name = "redb")]
    Redb,
    /// redb 2.x with a 256 MiB cache.
    #[value(name = "redb-256m")]
    Redb256m,
}

impl Engine {
    pub const ALL: [Engine; 6] =
        [Engine::Sled, Engine::SledTuned, Engine::SledStore, Engine::SledCompact, Engine::Redb, Engine::Redb256m];

    fn name(self) -> &'static str {
        match self {
            Engine::Sled => "sled",
            Engine::SledTuned => "sled tuned",
            Engine::SledStore => "sled as store",
            Engine::SledCompact => "sled compact values",
            Engine::Redb => "redb",
            Engine::Redb256m => "redb 256 MiB",
        }
    }

    fn config(self) -> &'static str {
        match self {
            Engine::Sled => "sled 0.34, default Config (cache 1 GiB, LowSpace, flush every 500 ms)",
            Engine::SledTuned => "sled 0.34, cache_capacity 256 MiB, LowSpace, no compression",
            Engine::SledStore => "sled 0.34 as the hub's store: cache 256 MiB, zstd level 3",
            Engine::SledCompact => {
                "sled 0.34 as the hub's store (cache 256 MiB, zstd 3), values without the service and AGS of their key"
            }
            Engine::Redb => "redb 2.6, default Builder (cache 1 GiB: 90 % read, 10 % write)",
            Engine::Redb256m => "redb 2.6, set_cache_size 256 MiB",
        }
    }

    fn layout(self) -> Layout {
        if self == Engine::SledCompact {
            Layout::Compact
        } else {
            Layout::Store
        }
    }

    /// The name `--engine` takes.
    fn arg(self) -> String {
        use clap::ValueEnum;
        self.to_possible_value().map(|v| v.get_name().to_string()).unwrap_or_default()
    }

    fn open(self, dir: &Path) -> Result<Box<dyn Kv>> {
        let layout = self.layout();
        Ok(match self {
            Engine::Sled => Box::new(SledKv::open(sled::Config::new().path(dir), layout)?),
            Engine::SledTuned => Box::new(SledKv::open(
                sled::Config::new().path(dir).cache_capacity(256 << 20).mode(sled::Mode::LowSpace),
                layout,
            )?),
            Engine::SledStore | Engine::SledCompact => {
                Box::new(SledKv::open(efa_registry::store::sled::database_config(dir), layout)?)
            }
            Engine::Redb => Box::new(RedbKv::open(dir, redb::Builder::new(), layout)?),
            Engine::Redb256m => {
                let mut b = redb::Builder::new();
                b.set_cache_size(256 << 20);
                Box::new(RedbKv::open(dir, b, layout)?)
            }
        })
    }
}

pub struct EngineScale {
    pub kommunen: usize,
    pub services: usize,
    pub runs: usize,
}

/// Bytes as MiB, or GiB from 1 GiB on.
fn size(b: u64) -> String {
    let b = b as f64;
    if b >= (1u64 << 30) as f64 {
        format!("{:.2} GiB", b / (1u64 << 30) as f64)
    } else {
        format!("{:.1} MiB", b / (1u64 << 20) as f64)
    }
}

// ---------------------------------------------------------------------------------------
// The parent: one child per engine, rows

/// Runs each engine in a child process of its own on a fresh directory under `work_dir`.
/// An engine that fails is noted and the others still run.
pub fn run(work_dir: &Path, scale: &EngineScale, engines: &[Engine], notes: &mut Vec<String>) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    for &engine in engines {
        eprintln!("   {} …", engine.config());
        match run_child(work_dir, scale, engine) {
            Ok(r) => rows.extend(rows_of(engine, &r)),
            Err(e) => notes.push(format!("{SCEN}: {} failed: {e:#}", engine.name())),
        }
    }
    Ok(rows)
}

fn run_child(work_dir: &Path, scale: &EngineScale, engine: Engine) -> Result<child::ChildResult> {
    let dir = tempfile::Builder::new().prefix("efa-bench-engine-").tempdir_in(work_dir)?;
    let db_dir = dir.path().join("db");
    let mut child = std::process::Command::new(std::env::current_exe()?)
        .arg("engine-child")
        .args(["--engine", &engine.arg()])
        .arg("--dir")
        .arg(&db_dir)
        .args(["--kommunen", &scale.kommunen.to_string()])
        .args(["--services", &scale.services.to_string()])
        .args(["--query-runs", &scale.runs.to_string()])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("starting the engine child process")?;
    let mut out = String::new();
    child.stdout.take().ok_or_else(|| anyhow!("engine child stdout"))?.read_to_string(&mut out)?;
    let status = child.wait()?;
    if !status.success() {
        bail!("engine child exited with {status}");
    }
    let line = out.lines().last().ok_or_else(|| anyhow!("engine child printed nothing"))?;
    serde_json::from_str(line).with_context(|| format!("engine child said {line:?}"))
}

fn rows_of(engine: Engine, r: &child::ChildResult) -> Vec<Row> {
    let n = engine.name();
    let records = (r.kommunen * r.services) as f64;
    let per_record = |b: u64| b as f64 / records;
    let load_rate = records / r.load_s;
    let disk = per_record(r.disk_bytes);
    let p = &r.payload;
    let payload = p.adoption + p.history + p.ratings + p.other;
    let mut rows = vec![
        Row::new(SCEN, format!("{n}: load records/s"), load_rate, "records/s")
            .goal("≥ 100000 records/s", Some(load_rate >= LOAD_GOAL_PER_S))
            .note(format!(
                "{}; {} Gemeinden × {} services, {} ledger entries in {:.1} s, blocks of {KOMMUNEN_PER_LOAD} Kommunen \
                 durable each; {} ratings in {:.1} s (one batch)",
                engine.config(),
                r.kommunen,
                r.services,
                r.ledger_entries,
                r.load_s,
                r.ratings,
                r.ratings_s
            )),
        Row::new(SCEN, format!("{n}: disk bytes per record"), disk, "B")
            .goal("≤ 300 B", Some(disk <= DISK_GOAL_B))
            .note(format!(
                "{} allocated ({} file length); keys+values written {:.0} B/record (adoption {:.0}, \
                 history {:.0}, ratings {:.0}, rest {:.1}); {}",
                size(r.disk_bytes),
                size(r.file_bytes),
                per_record(payload),
                per_record(p.adoption),
                per_record(p.history),
                per_record(p.ratings),
                per_record(p.other),
                r.space
            )),
        Row::new(SCEN, format!("{n}: RSS after load"), r.rss_loaded_mib, "MiB")
            .goal("≤ 1536 MiB", Some(r.rss_loaded_mib <= RSS_GOAL_MIB))
            .note(format!(
                "VmRSS of a child process with this engine alone; {:.0} MiB before it opened",
                r.rss_start_mib
            )),
        Row::new(SCEN, format!("{n}: RSS after load+queries"), r.rss_after_mib, "MiB")
            .goal("≤ 1536 MiB", Some(r.rss_after_mib <= RSS_GOAL_MIB))
            .note(format!("peak VmHWM {:.0} MiB", r.hwm_mib)),
    ];
    for q in &r.queries {
        let p50 = percentile(&q.samples_ms, 50.0);
        let p99 = percentile(&q.samples_ms, 99.0);
        rows.push(Row::new(SCEN, format!("{n}: {} p50", q.name), p50, "ms").note(format!(
            "{} runs, first (cold) {:.1} ms; {} {}",
            q.samples_ms.len(),
            q.samples_ms.first().copied().unwrap_or(0.0),
            q.items,
            q.what
        )));
        rows.push(
            Row::new(SCEN, format!("{n}: {} p99", q.name), p99, "ms")
                .goal(&format!("≤ {QUERY_GOAL_MS} ms"), Some(p99 <= QUERY_GOAL_MS)),
        );
    }
    rows
}
