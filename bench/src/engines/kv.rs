//! The engines behind one interface: raw sled with the sled store's trees, and redb with
//! the same tables.

use super::layout::{prefix_end, prepare, prepare_ratings, Layout, Payload, RatingKv};
use super::size;
use crate::sys;
use anyhow::{anyhow, Result};
use efa_domain::model::adoption::AdoptionEntry;
use efa_domain::model::rating::Rating;
use efa_registry::store::codec::decode;
use redb::{ReadableTable, ReadableTableMetadata};
use std::path::Path;
use std::time::Instant;

/// The trees the queries read.
#[derive(Clone, Copy)]
pub(super) enum T {
    Adoption,
    History,
    Ratings,
    Totals,
    Kommunen,
}

pub(super) trait Kv {
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
pub(super) type Visit<'f> = dyn FnMut(&[u8], &[u8]) -> Result<()> + 'f;

pub(super) trait Reader {
    fn scan(&self, t: T, prefix: &[u8], f: &mut Visit<'_>) -> Result<()>;
    /// Calls `f` with the value at `k`; false if there is none.
    fn get(&self, t: T, k: &[u8], f: &mut dyn FnMut(&[u8]) -> Result<()>) -> Result<bool>;
}

/// Raw sled with the sled store's tree names (no registry, no event log).
pub(super) struct SledKv {
    db: sled::Db,
    layout: Layout,
    adoption: sled::Tree,
    history: sled::Tree,
    ratings: sled::Tree,
    totals: sled::Tree,
    kommunen: sled::Tree,
    meta: sled::Tree,
}

impl SledKv {
    pub(super) fn open(config: sled::Config, layout: Layout) -> Result<Self> {
        let db = config.open()?;
        let t = |n: &str| db.open_tree(n);
        Ok(SledKv {
            adoption: t("adoption")?,
            history: t("history")?,
            ratings: t("ratings")?,
            totals: t("totals")?,
            kommunen: t("adoption_kommunen")?,
            meta: t("meta")?,
            db,
            layout,
        })
    }

    fn tree(&self, t: T) -> &sled::Tree {
        match t {
            T::Adoption => &self.adoption,
            T::History => &self.history,
            T::Ratings => &self.ratings,
            T::Totals => &self.totals,
            T::Kommunen => &self.kommunen,
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
        let layout = self.layout;
        let w = prepare(
            layout,
            chunk,
            bulk_seq,
            |k| self.adoption.get(k)?.map(|v| layout.record(k, &v)).transpose(),
            |k| Ok(self.totals.get(k)?.map(|v| decode("totals", &v)).transpose()?),
        )?;
        w.count(payload);
        let pairs = |v: &'_ [(Vec<u8>, Vec<u8>)]| batch(v.iter().map(|(k, v)| (k.as_slice(), v.as_slice())));
        self.totals.apply_batch(pairs(&w.totals))?;
        self.kommunen.apply_batch(batch(w.kommunen.iter().map(|k| (k.as_slice(), &[][..]))))?;
        // As the sled store does: the two big trees on threads of their own.
        let (history, adoption) = (pairs(&w.history), pairs(&w.adoption));
        std::thread::scope(|s| {
            let history = s.spawn(|| self.history.apply_batch(history));
            let adoption = self.adoption.apply_batch(adoption);
            let joined =
                history.join().unwrap_or_else(|_| Err(sled::Error::ReportableBug("load thread panicked".into())));
            adoption.and(joined)
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
const R_ADOPTION: redb::TableDefinition<Bytes, Bytes> = redb::TableDefinition::new("adoption");
const R_HISTORY: redb::TableDefinition<Bytes, Bytes> = redb::TableDefinition::new("history");
const R_RATINGS: redb::TableDefinition<Bytes, Bytes> = redb::TableDefinition::new("ratings");
const R_TOTALS: redb::TableDefinition<Bytes, Bytes> = redb::TableDefinition::new("totals");
// A set of keys; redb stores `()` values in no bytes at all.
const R_KOMMUNEN: redb::TableDefinition<Bytes, ()> = redb::TableDefinition::new("adoption_kommunen");
const R_META: redb::TableDefinition<Bytes, Bytes> = redb::TableDefinition::new("meta");

/// redb, one write transaction per block of the load (its commit is the fsync).
pub(super) struct RedbKv {
    db: redb::Database,
    layout: Layout,
    txn: Option<redb::WriteTransaction>,
    dir: std::path::PathBuf,
}

impl RedbKv {
    pub(super) fn open(dir: &Path, builder: redb::Builder, layout: Layout) -> Result<Self> {
        std::fs::create_dir_all(dir)?;
        let db = builder.create(dir.join("efa.redb"))?;
        // A read transaction opens only tables that exist; these do from the start.
        let txn = db.begin_write()?;
        for def in [R_ADOPTION, R_HISTORY, R_RATINGS, R_TOTALS, R_META] {
            txn.open_table(def)?;
        }
        txn.open_table(R_KOMMUNEN)?;
        txn.commit()?;
        Ok(RedbKv { db, layout, txn: None, dir: dir.to_path_buf() })
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

impl Kv for RedbKv {
    fn load_chunk(&mut self, chunk: &[AdoptionEntry], bulk_seq: &mut u64, payload: &mut Payload) -> Result<()> {
        let layout = self.layout;
        let txn = self.txn()?;
        let w = {
            let adoption = txn.open_table(R_ADOPTION)?;
            let totals = txn.open_table(R_TOTALS)?;
            prepare(
                layout,
                chunk,
                bulk_seq,
                |k| adoption.get(k)?.map(|v| layout.record(k, v.value())).transpose(),
                |k| Ok(totals.get(k)?.map(|v| decode("totals", v.value())).transpose()?),
            )?
        };
        w.count(payload);
        put_pairs(&mut txn.open_table(R_TOTALS)?, &w.totals)?;
        let mut kommunen = txn.open_table(R_KOMMUNEN)?;
        for k in &w.kommunen {
            kommunen.insert(k.as_slice(), ())?;
        }
        drop(kommunen);
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
            history: txn.open_table(R_HISTORY)?,
            ratings: txn.open_table(R_RATINGS)?,
            totals: txn.open_table(R_TOTALS)?,
            kommunen: txn.open_table(R_KOMMUNEN)?,
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
    history: redb::ReadOnlyTable<Bytes, Bytes>,
    ratings: redb::ReadOnlyTable<Bytes, Bytes>,
    totals: redb::ReadOnlyTable<Bytes, Bytes>,
    kommunen: redb::ReadOnlyTable<Bytes, ()>,
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

impl RedbReader {
    fn table(&self, t: T) -> Option<&redb::ReadOnlyTable<Bytes, Bytes>> {
        match t {
            T::Adoption => Some(&self.adoption),
            T::History => Some(&self.history),
            T::Ratings => Some(&self.ratings),
            T::Totals => Some(&self.totals),
            T::Kommunen => None,
        }
    }
}

impl Reader for RedbReader {
    fn scan(&self, t: T, prefix: &[u8], f: &mut Visit<'_>) -> Result<()> {
        let Some(table) = self.table(t) else {
            for kv in redb_range(&self.kommunen, prefix)? {
                f(kv?.0.value(), &[])?;
            }
            return Ok(());
        };
        for kv in redb_range(table, prefix)? {
            let (k, v) = kv?;
            f(k.value(), v.value())?;
        }
        Ok(())
    }

    fn get(&self, t: T, k: &[u8], f: &mut dyn FnMut(&[u8]) -> Result<()>) -> Result<bool> {
        let Some(table) = self.table(t) else {
            return Ok(self.kommunen.get(k)?.is_some());
        };
        match table.get(k)? {
            Some(v) => f(v.value()).map(|_| true),
            None => Ok(false),
        }
    }
}
