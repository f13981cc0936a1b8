//! (A engines) The data of scenario (A) in another embedded engine, beside raw sled, for
//! issue 17's comparison. Same Kommunen, services, ledgers and ratings as (A); the same
//! trees, keys and values as the sled store (`registry/src/store/sled`, values in its
//! codec); the same bulk-load pattern (blocks of 500 Kommunen × all services, chunks of
//! 100,000 ledger entries, durable at the end of each block); the four queries with
//! the sled store's access patterns, written against each engine's own API. Each engine
//! runs in a fresh child process (`engine-child`), so the RSS it reports is its own.
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

use crate::queries::ledger;
use crate::report::Row;
use crate::sys::{self, mix, percentile};
use anyhow::{anyhow, bail, Context, Result};
use efa_domain::model::adoption::{AdoptionEntry, AdoptionRecord, ServiceTotals};
use efa_domain::model::ids::{Ags, ServiceId};
use efa_domain::model::rating::{Criterion, Rating, RatingAggregate};
use efa_registry::import::{bundled_gv100ad, bundled_ozg};
use efa_registry::store::codec::{decode, encode};
use redb::{ReadableTable, ReadableTableMetadata};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::Path;
use std::time::Instant;

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
    /// compression: the raw engine's layout cost. (A) measures the hub's store, which
    /// compresses by default (`sled_compression`).
    #[value(name = "sled-tuned")]
    SledTuned,
    /// redb 2.x, default `Builder` (1 GiB cache).
    #[value(name = "redb")]
    Redb,
    /// redb 2.x with a 256 MiB cache.
    #[value(name = "redb-256m")]
    Redb256m,
}

impl Engine {
    pub const ALL: [Engine; 4] = [Engine::Sled, Engine::SledTuned, Engine::Redb, Engine::Redb256m];

    fn name(self) -> &'static str {
        match self {
            Engine::Sled => "sled",
            Engine::SledTuned => "sled tuned",
            Engine::Redb => "redb",
            Engine::Redb256m => "redb 256 MiB",
        }
    }

    fn config(self) -> &'static str {
        match self {
            Engine::Sled => "sled 0.34, default Config (cache 1 GiB, LowSpace, flush every 500 ms)",
            Engine::SledTuned => "sled 0.34, cache_capacity 256 MiB, LowSpace, no compression",
            Engine::Redb => "redb 2.6, default Builder (cache 1 GiB: 90 % read, 10 % write)",
            Engine::Redb256m => "redb 2.6, set_cache_size 256 MiB",
        }
    }

    /// The name `--engine` takes.
    fn arg(self) -> String {
        use clap::ValueEnum;
        self.to_possible_value().map(|v| v.get_name().to_string()).unwrap_or_default()
    }

    fn open(self, dir: &Path) -> Result<Box<dyn Kv>> {
        Ok(match self {
            Engine::Sled => Box::new(SledKv::open(sled::Config::new().path(dir))?),
            Engine::SledTuned => Box::new(SledKv::open(
                sled::Config::new().path(dir).cache_capacity(256 << 20).mode(sled::Mode::LowSpace),
            )?),
            Engine::Redb => Box::new(RedbKv::open(dir, redb::Builder::new())?),
            Engine::Redb256m => {
                let mut b = redb::Builder::new();
                b.set_cache_size(256 << 20);
                Box::new(RedbKv::open(dir, b)?)
            }
        })
    }
}

pub struct EngineScale {
    pub kommunen: usize,
    pub services: usize,
    pub runs: usize,
}

// ---------------------------------------------------------------------------------------
// Keys and the load's writes, shared by the engines

fn key(parts: &[&[u8]]) -> Vec<u8> {
    let mut k = Vec::with_capacity(parts.iter().map(|p| p.len() + 1).sum());
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            k.push(0);
        }
        k.extend_from_slice(p);
    }
    k
}

fn prefix(part: &[u8]) -> Vec<u8> {
    key(&[part, b""])
}

/// The first key after every key starting with `p` (`None`: no such key).
fn prefix_end(p: &[u8]) -> Option<Vec<u8>> {
    let mut e = p.to_vec();
    while let Some(last) = e.pop() {
        if last < 0xff {
            e.push(last + 1);
            return Some(e);
        }
    }
    None
}

/// Bytes of keys and values written per tree: what any engine must store at least.
#[derive(Default, Serialize, Deserialize)]
struct Payload {
    adoption: u64,
    by_kommune: u64,
    history: u64,
    ratings: u64,
    /// `totals`, `adoption_kommunen` and `meta`.
    other: u64,
}

/// One chunk's writes, each list in key order (as a sled `Batch` applies them).
#[derive(Default)]
struct Writes {
    adoption: Vec<(Vec<u8>, Vec<u8>)>,
    by_kommune: Vec<Vec<u8>>,
    history: Vec<(Vec<u8>, Vec<u8>)>,
    kommunen: Vec<Vec<u8>>,
    totals: Vec<(Vec<u8>, Vec<u8>)>,
    bulk_seq: u64,
}

impl Writes {
    fn count(&self, p: &mut Payload) {
        let pairs = |v: &[(Vec<u8>, Vec<u8>)]| v.iter().map(|(k, v)| (k.len() + v.len()) as u64).sum::<u64>();
        let keys = |v: &[Vec<u8>]| v.iter().map(|k| k.len() as u64).sum::<u64>();
        p.adoption += pairs(&self.adoption);
        p.by_kommune += keys(&self.by_kommune);
        p.history += pairs(&self.history);
        p.other += pairs(&self.totals) + keys(&self.kommunen) + 16;
    }
}

/// A chunk of ledger entries as the sled store's `bulk_load` turns it into writes: each
/// pair's stored record read once (`record`), folded with the chunk's entries, the index
/// and history keys, and the touched services' totals (`totals` reads the stored ones).
fn prepare(
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
        w.by_kommune.push(key(&[ags, sid]));
        *bulk_seq += 1;
        let mut suffix = [0u8; 16];
        suffix[8..].copy_from_slice(&bulk_seq.to_be_bytes());
        w.history.push((key(&[ags, &suffix]), encode(entry)));
    }
    let mut sums: HashMap<ServiceId, ServiceTotals> = HashMap::new();
    for (k, rec) in &records {
        w.adoption.push((k.clone(), encode(rec)));
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
    for keys in [&mut w.by_kommune, &mut w.kommunen] {
        keys.sort_unstable();
        keys.dedup();
    }
    w.bulk_seq = *bulk_seq;
    Ok(w)
}

/// A rating as (A) stores it: key service\0version\0AGS, value, stars.
struct RatingKv {
    key: Vec<u8>,
    value: Vec<u8>,
    stars: u8,
}

/// The ratings' writes as the sled store's `put_rating` makes them, one after another: the
/// previous rating's stars read, the service's totals updated.
fn prepare_ratings(
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

// ---------------------------------------------------------------------------------------
// The engines

/// The trees the queries read.
#[derive(Clone, Copy)]
enum T {
    Adoption,
    ByKommune,
    History,
    Ratings,
}

trait Kv {
    /// Writes one chunk of the bulk load (durable only at `commit`).
    fn load_chunk(&mut self, chunk: &[AdoptionEntry], bulk_seq: &mut u64, payload: &mut Payload) -> Result<()>;
    /// Writes the ratings (in key order) with their services' totals.
    fn load_ratings(&mut self, ratings: &[RatingKv]) -> Result<()>;
    /// Makes everything written so far durable (fsync).
    fn commit(&mut self) -> Result<()>;
    /// A consistent view for one query (a read transaction where the engine has them).
    fn reader(&self) -> Result<Box<dyn Reader + '_>>;
    /// The engine's own account of its space, for the report.
    fn space(&mut self) -> Result<String>;
}

/// What a scan calls with each key and value.
type Visit<'f> = dyn FnMut(&[u8], &[u8]) -> Result<()> + 'f;

trait Reader {
    fn scan(&self, t: T, prefix: &[u8], f: &mut Visit<'_>) -> Result<()>;
    /// Calls `f` with the value at `k`; false if there is none.
    fn get(&self, t: T, k: &[u8], f: &mut dyn FnMut(&[u8]) -> Result<()>) -> Result<bool>;
}

/// Raw sled with the sled store's tree names (no registry, no event log).
struct SledKv {
    db: sled::Db,
    adoption: sled::Tree,
    by_kommune: sled::Tree,
    history: sled::Tree,
    ratings: sled::Tree,
    totals: sled::Tree,
    kommunen: sled::Tree,
    meta: sled::Tree,
}

impl SledKv {
    fn open(config: sled::Config) -> Result<Self> {
        let db = config.open()?;
        let t = |n: &str| db.open_tree(n);
        Ok(SledKv {
            adoption: t("adoption")?,
            by_kommune: t("adoption_by_kommune")?,
            history: t("history")?,
            ratings: t("ratings")?,
            totals: t("totals")?,
            kommunen: t("adoption_kommunen")?,
            meta: t("meta")?,
            db,
        })
    }

    fn tree(&self, t: T) -> &sled::Tree {
        match t {
            T::Adoption => &self.adoption,
            T::ByKommune => &self.by_kommune,
            T::History => &self.history,
            T::Ratings => &self.ratings,
        }
    }
}

fn batch<'a>(pairs: impl IntoIterator<Item = (&'a [u8], &'a [u8])>) -> sled::Batch {
    let mut b = sled::Batch::default();
    for (k, v) in pairs {
        b.insert(k, v);
    }
    b
}

impl Kv for SledKv {
    fn load_chunk(&mut self, chunk: &[AdoptionEntry], bulk_seq: &mut u64, payload: &mut Payload) -> Result<()> {
        let w = prepare(
            chunk,
            bulk_seq,
            |k| Ok(self.adoption.get(k)?.map(|v| decode("adoption", &v)).transpose()?),
            |k| Ok(self.totals.get(k)?.map(|v| decode("totals", &v)).transpose()?),
        )?;
        w.count(payload);
        let pairs = |v: &'_ [(Vec<u8>, Vec<u8>)]| batch(v.iter().map(|(k, v)| (k.as_slice(), v.as_slice())));
        let keys = |v: &'_ [Vec<u8>]| batch(v.iter().map(|k| (k.as_slice(), &[][..])));
        self.totals.apply_batch(pairs(&w.totals))?;
        self.kommunen.apply_batch(keys(&w.kommunen))?;
        // As the sled store does: the three big trees on threads of their own.
        let (index, history, adoption) = (keys(&w.by_kommune), pairs(&w.history), pairs(&w.adoption));
        std::thread::scope(|s| {
            let index = s.spawn(|| self.by_kommune.apply_batch(index));
            let history = s.spawn(|| self.history.apply_batch(history));
            let adoption = self.adoption.apply_batch(adoption);
            let joined = |h: std::thread::ScopedJoinHandle<'_, sled::Result<()>>| {
                h.join().unwrap_or_else(|_| Err(sled::Error::ReportableBug("load thread panicked".into())))
            };
            adoption.and(joined(index)).and(joined(history))
        })?;
        self.meta.insert(b"bulk_seq", &w.bulk_seq.to_be_bytes())?;
        Ok(())
    }

    fn load_ratings(&mut self, ratings: &[RatingKv]) -> Result<()> {
        let totals = prepare_ratings(
            ratings,
            |k| Ok(self.ratings.get(k)?.map(|v| decode::<Rating>("ratings", &v)).transpose()?.map(|r| r.stars)),
            |k| Ok(self.totals.get(k)?.map(|v| decode("totals", &v)).transpose()?),
        )?;
        self.ratings.apply_batch(batch(ratings.iter().map(|r| (r.key.as_slice(), r.value.as_slice()))))?;
        self.totals.apply_batch(batch(totals.iter().map(|(k, v)| (k.as_slice(), v.as_slice()))))?;
        Ok(())
    }

    fn commit(&mut self) -> Result<()> {
        self.db.flush()?;
        Ok(())
    }

    fn reader(&self) -> Result<Box<dyn Reader + '_>> {
        Ok(Box::new(self))
    }

    fn space(&mut self) -> Result<String> {
        Ok(format!("sled size_on_disk {}", size(self.db.size_on_disk()?)))
    }
}

impl Reader for &SledKv {
    fn scan(&self, t: T, prefix: &[u8], f: &mut Visit<'_>) -> Result<()> {
        for kv in self.tree(t).scan_prefix(prefix) {
            let (k, v) = kv?;
            f(&k, &v)?;
        }
        Ok(())
    }

    fn get(&self, t: T, k: &[u8], f: &mut dyn FnMut(&[u8]) -> Result<()>) -> Result<bool> {
        match self.tree(t).get(k)? {
            Some(v) => f(&v).map(|_| true),
            None => Ok(false),
        }
    }
}

type Bytes = &'static [u8];
// The index trees map keys to nothing; redb stores `()` values in no bytes at all.
const R_ADOPTION: redb::TableDefinition<Bytes, Bytes> = redb::TableDefinition::new("adoption");
const R_BY_KOMMUNE: redb::TableDefinition<Bytes, ()> = redb::TableDefinition::new("adoption_by_kommune");
const R_HISTORY: redb::TableDefinition<Bytes, Bytes> = redb::TableDefinition::new("history");
const R_RATINGS: redb::TableDefinition<Bytes, Bytes> = redb::TableDefinition::new("ratings");
const R_TOTALS: redb::TableDefinition<Bytes, Bytes> = redb::TableDefinition::new("totals");
const R_KOMMUNEN: redb::TableDefinition<Bytes, ()> = redb::TableDefinition::new("adoption_kommunen");
const R_META: redb::TableDefinition<Bytes, Bytes> = redb::TableDefinition::new("meta");

/// redb, one write transaction per block of the load (its commit is the fsync).
struct RedbKv {
    db: redb::Database,
    txn: Option<redb::WriteTransaction>,
    dir: std::path::PathBuf,
}

impl RedbKv {
    fn open(dir: &Path, builder: redb::Builder) -> Result<Self> {
        std::fs::create_dir_all(dir)?;
        let db = builder.create(dir.join("efa.redb"))?;
        // A read transaction opens only tables that exist; these do from the start.
        let txn = db.begin_write()?;
        for def in [R_ADOPTION, R_HISTORY, R_RATINGS, R_TOTALS, R_META] {
            txn.open_table(def)?;
        }
        for def in [R_BY_KOMMUNE, R_KOMMUNEN] {
            txn.open_table(def)?;
        }
        txn.commit()?;
        Ok(RedbKv { db, txn: None, dir: dir.to_path_buf() })
    }

    fn txn(&mut self) -> Result<&redb::WriteTransaction> {
        if self.txn.is_none() {
            self.txn = Some(self.db.begin_write()?);
        }
        self.txn.as_ref().ok_or_else(|| anyhow!("no write transaction"))
    }
}

fn put_pairs(table: &mut redb::Table<Bytes, Bytes>, pairs: &[(Vec<u8>, Vec<u8>)]) -> Result<()> {
    for (k, v) in pairs {
        table.insert(k.as_slice(), v.as_slice())?;
    }
    Ok(())
}

fn put_keys(table: &mut redb::Table<Bytes, ()>, keys: &[Vec<u8>]) -> Result<()> {
    for k in keys {
        table.insert(k.as_slice(), ())?;
    }
    Ok(())
}

impl Kv for RedbKv {
    fn load_chunk(&mut self, chunk: &[AdoptionEntry], bulk_seq: &mut u64, payload: &mut Payload) -> Result<()> {
        let txn = self.txn()?;
        let w = {
            let adoption = txn.open_table(R_ADOPTION)?;
            let totals = txn.open_table(R_TOTALS)?;
            prepare(
                chunk,
                bulk_seq,
                |k| Ok(adoption.get(k)?.map(|v| decode("adoption", v.value())).transpose()?),
                |k| Ok(totals.get(k)?.map(|v| decode("totals", v.value())).transpose()?),
            )?
        };
        w.count(payload);
        put_pairs(&mut txn.open_table(R_TOTALS)?, &w.totals)?;
        put_keys(&mut txn.open_table(R_KOMMUNEN)?, &w.kommunen)?;
        put_keys(&mut txn.open_table(R_BY_KOMMUNE)?, &w.by_kommune)?;
        put_pairs(&mut txn.open_table(R_HISTORY)?, &w.history)?;
        put_pairs(&mut txn.open_table(R_ADOPTION)?, &w.adoption)?;
        txn.open_table(R_META)?.insert(&b"bulk_seq"[..], &w.bulk_seq.to_be_bytes()[..])?;
        Ok(())
    }

    fn load_ratings(&mut self, ratings: &[RatingKv]) -> Result<()> {
        let txn = self.txn()?;
        let totals = {
            let stored = txn.open_table(R_RATINGS)?;
            let sums = txn.open_table(R_TOTALS)?;
            prepare_ratings(
                ratings,
                |k| Ok(stored.get(k)?.map(|v| decode::<Rating>("ratings", v.value())).transpose()?.map(|r| r.stars)),
                |k| Ok(sums.get(k)?.map(|v| decode("totals", v.value())).transpose()?),
            )?
        };
        let mut table = txn.open_table(R_RATINGS)?;
        for r in ratings {
            table.insert(r.key.as_slice(), r.value.as_slice())?;
        }
        drop(table);
        put_pairs(&mut txn.open_table(R_TOTALS)?, &totals)
    }

    fn commit(&mut self) -> Result<()> {
        if let Some(txn) = self.txn.take() {
            // Durability::Immediate (the default): fsynced before commit returns.
            txn.commit()?;
        }
        Ok(())
    }

    fn reader(&self) -> Result<Box<dyn Reader + '_>> {
        let txn = self.db.begin_read()?;
        Ok(Box::new(RedbReader {
            adoption: txn.open_table(R_ADOPTION)?,
            by_kommune: txn.open_table(R_BY_KOMMUNE)?,
            history: txn.open_table(R_HISTORY)?,
            ratings: txn.open_table(R_RATINGS)?,
        }))
    }

    fn space(&mut self) -> Result<String> {
        self.commit()?;
        let txn = self.db.begin_write()?;
        let s = txn.stats()?;
        let mut tables = Vec::new();
        for (name, def) in [("adoption", R_ADOPTION), ("history", R_HISTORY), ("ratings", R_RATINGS)] {
            let t = txn.open_table(def)?;
            let st = t.stats()?;
            tables.push(format!("{name} {} in {} leaf pages", size(st.stored_bytes()), st.leaf_pages()));
        }
        let index = txn.open_table(R_BY_KOMMUNE)?.stats()?;
        tables.push(format!("index {} in {} leaf pages", size(index.stored_bytes()), index.leaf_pages()));
        txn.abort()?;
        // Whether the space is free pages (compaction returns them) or half-full leaves.
        let t = Instant::now();
        self.db.compact()?;
        Ok(format!(
            "redb: {} pages of {} B allocated ({} leaf, {} branch), stored {}, metadata {}, fragmented {}; {}; \
             after Database::compact() ({:.0} s): {} allocated",
            s.allocated_pages(),
            s.page_size(),
            s.leaf_pages(),
            s.branch_pages(),
            size(s.stored_bytes()),
            size(s.metadata_bytes()),
            size(s.fragmented_bytes()),
            tables.join(", "),
            t.elapsed().as_secs_f64(),
            size(sys::disk_bytes(&self.dir)),
        ))
    }
}

struct RedbReader {
    adoption: redb::ReadOnlyTable<Bytes, Bytes>,
    by_kommune: redb::ReadOnlyTable<Bytes, ()>,
    history: redb::ReadOnlyTable<Bytes, Bytes>,
    ratings: redb::ReadOnlyTable<Bytes, Bytes>,
}

fn redb_range<'t, V: redb::Value + 'static>(
    table: &'t redb::ReadOnlyTable<Bytes, V>,
    prefix: &[u8],
) -> Result<redb::Range<'t, Bytes, V>> {
    Ok(match prefix_end(prefix) {
        Some(end) => table.range::<&[u8]>(prefix..end.as_slice())?,
        None => table.range::<&[u8]>(prefix..)?,
    })
}

impl Reader for RedbReader {
    fn scan(&self, t: T, prefix: &[u8], f: &mut Visit<'_>) -> Result<()> {
        let bytes = match t {
            T::Adoption => &self.adoption,
            T::History => &self.history,
            T::Ratings => &self.ratings,
            T::ByKommune => {
                for kv in redb_range(&self.by_kommune, prefix)? {
                    f(kv?.0.value(), &[])?;
                }
                return Ok(());
            }
        };
        for kv in redb_range(bytes, prefix)? {
            let (k, v) = kv?;
            f(k.value(), v.value())?;
        }
        Ok(())
    }

    fn get(&self, t: T, k: &[u8], f: &mut dyn FnMut(&[u8]) -> Result<()>) -> Result<bool> {
        let table = match t {
            T::Adoption => &self.adoption,
            T::History => &self.history,
            T::Ratings => &self.ratings,
            T::ByKommune => return Ok(self.by_kommune.get(k)?.is_some()),
        };
        match table.get(k)? {
            Some(v) => f(v.value()).map(|_| true),
            None => Ok(false),
        }
    }
}

// ---------------------------------------------------------------------------------------
// The queries, with the sled store's access patterns

/// "Who adopted service X": the service's records by prefix, decoded; those running it.
fn who_adopted(r: &dyn Reader, service: &ServiceId) -> Result<usize> {
    let mut running = 0;
    r.scan(T::Adoption, &prefix(service.as_str().as_bytes()), &mut |_, v| {
        let rec: AdoptionRecord = decode("adoption", v)?;
        running += usize::from(rec.running.is_some());
        Ok(())
    })?;
    Ok(running)
}

/// "Coverage per Kreis for X": the same scan, Gemeinden running it per Kreis (AGS[..5]).
fn coverage(r: &dyn Reader, service: &ServiceId) -> Result<usize> {
    let mut per_kreis: BTreeMap<String, u32> = BTreeMap::new();
    r.scan(T::Adoption, &prefix(service.as_str().as_bytes()), &mut |_, v| {
        let rec: AdoptionRecord = decode("adoption", v)?;
        if rec.running.is_some() {
            *per_kreis.entry(rec.latest.ags.kreis().to_string()).or_default() += 1;
        }
        Ok(())
    })?;
    Ok(per_kreis.len())
}

/// "Everything Kommune Y runs": the index by AGS, a point read of each record, and the
/// Kommune's whole history.
fn kommune(r: &dyn Reader, ags: &Ags) -> Result<usize> {
    let a = ags.as_str().as_bytes();
    let p = prefix(a);
    let mut services = Vec::new();
    r.scan(T::ByKommune, &p, &mut |k, _| {
        services.push(k[p.len()..].to_vec());
        Ok(())
    })?;
    let mut current: Vec<AdoptionRecord> = Vec::with_capacity(services.len());
    for s in &services {
        r.get(T::Adoption, &key(&[s, a]), &mut |v| {
            current.push(decode("adoption", v)?);
            Ok(())
        })?;
    }
    let mut history: Vec<AdoptionEntry> = Vec::new();
    r.scan(T::History, &p, &mut |_, v| {
        history.push(decode("history", v)?);
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

// ---------------------------------------------------------------------------------------
// The child: one engine, load, measure, query, one JSON line

#[derive(Serialize, Deserialize)]
struct QueryTimes {
    name: String,
    samples_ms: Vec<f64>,
    /// What the last run found, and what that counts.
    items: usize,
    what: String,
}

#[derive(Serialize, Deserialize)]
struct ChildResult {
    kommunen: usize,
    services: usize,
    ledger_entries: u64,
    ratings: u64,
    load_s: f64,
    ratings_s: f64,
    disk_bytes: u64,
    /// Apparent size (file lengths; a sparse file's holes count here, not in `disk_bytes`).
    file_bytes: u64,
    payload: Payload,
    space: String,
    rss_start_mib: f64,
    rss_loaded_mib: f64,
    rss_after_mib: f64,
    hwm_mib: f64,
    queries: Vec<QueryTimes>,
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

/// Bytes as MiB, or GiB from 1 GiB on.
fn size(b: u64) -> String {
    let b = b as f64;
    if b >= (1u64 << 30) as f64 {
        format!("{:.2} GiB", b / (1u64 << 30) as f64)
    } else {
        format!("{:.1} MiB", b / (1u64 << 20) as f64)
    }
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

fn time_runs(runs: usize, mut f: impl FnMut(usize) -> Result<usize>) -> Result<(Vec<f64>, usize)> {
    let mut samples = Vec::with_capacity(runs);
    let mut items = 0;
    for i in 0..runs {
        let t = Instant::now();
        items = f(i)?;
        samples.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    Ok((samples, items))
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
        ("who adopted service X", "Gemeinden running it", Box::new(|r: &dyn Reader, i| who_adopted(r, svc(i)))),
        ("coverage per Kreis for X", "Kreise", Box::new(|r: &dyn Reader, i| coverage(r, svc(i)))),
        ("everything Kommune Y runs", "records+history", Box::new(|r: &dyn Reader, i| kommune(r, kom(i)))),
        ("rating summary for X", "ratings", Box::new(|r: &dyn Reader, i| rating_summary(r, svc(i)))),
    ];
    for (name, what, q) in list {
        let (samples_ms, items) = time_runs(scale.runs, |i| q(&*kv.reader()?, i))?;
        queries.push(QueryTimes { name: name.into(), samples_ms, items, what: what.into() });
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

fn run_child(work_dir: &Path, scale: &EngineScale, engine: Engine) -> Result<ChildResult> {
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

fn rows_of(engine: Engine, r: &ChildResult) -> Vec<Row> {
    let n = engine.name();
    let records = (r.kommunen * r.services) as f64;
    let per_record = |b: u64| b as f64 / records;
    let load_rate = records / r.load_s;
    let disk = per_record(r.disk_bytes);
    let p = &r.payload;
    let payload = p.adoption + p.by_kommune + p.history + p.ratings + p.other;
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
                 index {:.0}, history {:.0}, ratings {:.0}, rest {:.1}); {}",
                size(r.disk_bytes),
                size(r.file_bytes),
                per_record(payload),
                per_record(p.adoption),
                per_record(p.by_kommune),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_is_the_first_key_past_the_prefix() {
        assert_eq!(prefix_end(b"ozg-1\0"), Some(b"ozg-1\x01".to_vec()));
        assert_eq!(prefix_end(b"a\xff"), Some(b"b".to_vec()));
        assert_eq!(prefix_end(b"\xff\xff"), None);
    }

    /// Both engines answer the four queries alike on a few Kommunen.
    #[test]
    fn engines_agree() -> Result<()> {
        let scale = EngineScale { kommunen: 30, services: 6, runs: 1 };
        let mut answers = Vec::new();
        for engine in [Engine::Sled, Engine::Redb] {
            let dir = tempfile::tempdir()?;
            let mut kv = engine.open(dir.path())?;
            let kommunen: Vec<Ags> =
                bundled_gv100ad()?.kommunen.iter().take(scale.kommunen).map(|k| k.ags.clone()).collect();
            let services = service_ids(scale.services)?;
            let (mut seq, mut payload, mut entries) = (0, Payload::default(), Vec::new());
            for (ki, ags) in kommunen.iter().enumerate() {
                for (si, sid) in services.iter().enumerate() {
                    let h = mix(((si as u64) << 32) | ki as u64);
                    ledger(ags, sid, h, 1, &mut entries);
                }
            }
            // Chunks that split pairs, so records are read back mid-load.
            for chunk in entries.chunks(7) {
                kv.load_chunk(chunk, &mut seq, &mut payload)?;
            }
            kv.commit()?;
            let r = kv.reader()?;
            answers.push((
                who_adopted(&*r, &services[1])?,
                coverage(&*r, &services[1])?,
                kommune(&*r, &kommunen[3])?,
                rating_summary(&*r, &services[1])?,
            ));
        }
        assert_eq!(answers[0], answers[1]);
        assert!(answers[0].0 > 0 && answers[0].2 > 6, "{:?}", answers[0]);
        Ok(())
    }
}
