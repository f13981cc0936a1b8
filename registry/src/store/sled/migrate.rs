//! Store formats and their migrations.
//!
//! `meta/format` names the store format. Opening a store of an older format migrates it in
//! place before anything else reads it, one step per format. Each step rewrites records in
//! batches; every batch is one sled transaction that also records how far the step got, so
//! a kill -9 at any point leaves a store whose next open resumes the step where it stopped
//! (never redoing or skipping a record), and the format is bumped only once every record is
//! rewritten. A store of a newer format is refused with both versions named.
//!
//! Formats:
//! - 1: JSON records, no marker (before 2026-11); not migrated, refused.
//! - 2: `efa-sled-postcard-2`, postcard records without a version (commit eedda3c).
//! - 3: `efa-sled-3`, each value starts with its record version ([`crate::store::codec`]).
//! - 4: `efa-sled-4`, small files of releases in the tree `inline_blobs`; the index
//!   `adoption_by_kommune` is gone (a Kommune's records are read per service). Nothing is
//!   rewritten; the marker keeps an older EfA Hub, which would miss both, from opening it.

use crate::error::{Error, Result};
use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::Transactional;
use std::ops::Bound;

pub(super) const FORMAT_KEY: &[u8] = b"format";
/// The format this EfA Hub writes.
pub const CURRENT_FORMAT: u32 = 4;
const FORMAT_2: &[u8] = b"efa-sled-postcard-2";
const FORMAT_PREFIX: &str = "efa-sled-";
/// Records rewritten per transaction.
const BATCH: usize = 1000;

/// Trees whose values are records (the index trees hold empty values).
pub const RECORD_TREES: [&str; 14] = [
    "laender",
    "kreise",
    "kommunen",
    "ozg",
    "leika",
    "services",
    "releases",
    "subscriptions",
    "adoption",
    "history",
    "ratings",
    "totals",
    "events",
    "snapshots",
];

fn marker(format: u32) -> Vec<u8> {
    format!("{FORMAT_PREFIX}{format}").into_bytes()
}

/// The format a store is in; `None` for a new, empty store.
fn format_of(db: &sled::Db, meta: &sled::Tree) -> Result<Option<u32>> {
    match meta.get(FORMAT_KEY)? {
        Some(f) if f.as_ref() == FORMAT_2 => Ok(Some(2)),
        Some(f) => {
            let text = String::from_utf8_lossy(&f).to_string();
            text.strip_prefix(FORMAT_PREFIX)
                .and_then(|n| n.parse().ok())
                .map(Some)
                .ok_or_else(|| Error::Storage(format!("the store names an unknown format {text:?}")))
        }
        None if db.tree_names().len() > 2 || !meta.is_empty() => Ok(Some(1)),
        None => Ok(None),
    }
}

/// Brings the store up to [`CURRENT_FORMAT`], or refuses it. Returns the format it found.
pub(super) fn bring_up_to_date(db: &sled::Db) -> Result<Option<u32>> {
    let meta = db.open_tree("meta")?;
    let found = format_of(db, &meta)?;
    match found {
        None => {
            meta.insert(FORMAT_KEY, marker(CURRENT_FORMAT))?;
        }
        Some(1) => {
            return Err(Error::Storage(
                "the store was written by an EfA Hub from before 2026-11 (JSON records, format 1), which cannot be \
                 migrated; start with a new data directory"
                    .into(),
            ))
        }
        Some(f) if f > CURRENT_FORMAT => {
            return Err(Error::Storage(format!(
                "the store has format {f}, written by a newer EfA Hub; this EfA Hub reads formats 2 to \
                 {CURRENT_FORMAT}. Upgrade EfA Hub, or restore a backup of the data directory"
            )))
        }
        Some(CURRENT_FORMAT) => {
            if db.tree_names().iter().any(|n| n.as_ref() == b"adoption_by_kommune") {
                db.drop_tree("adoption_by_kommune")?;
            }
        }
        Some(2) => {
            tracing::warn!(
                from = 2,
                to = CURRENT_FORMAT,
                "migrating the store to the current format; do not interrupt it (if you do, the next start resumes it)"
            );
            version_every_record(db, &meta)?;
            to_format_4(db, &meta)?;
            tracing::info!(format = CURRENT_FORMAT, "store migrated");
        }
        Some(3) => {
            to_format_4(db, &meta)?;
            tracing::info!(from = 3, to = CURRENT_FORMAT, "store migrated (small files of releases kept in the store)");
        }
        Some(f) => return Err(Error::Storage(format!("store format {f} is not known to this EfA Hub"))),
    }
    Ok(found)
}

/// Step 3 → 4: the marker, then the index no longer kept. Dropped after the marker is
/// durable: an interrupted step leaves a format-4 store with an unused tree, which the next
/// open drops.
fn to_format_4(db: &sled::Db, meta: &sled::Tree) -> Result<()> {
    meta.insert(FORMAT_KEY, marker(4))?;
    db.flush()?;
    db.drop_tree("adoption_by_kommune")?;
    Ok(())
}

/// Step 2 → 3: prefixes every record with version 1 (the layouts of format 2).
fn version_every_record(db: &sled::Db, meta: &sled::Tree) -> Result<()> {
    for name in RECORD_TREES {
        let tree = db.open_tree(name)?;
        let done_key = format!("migrate-3/{name}/done").into_bytes();
        let progress_key = format!("migrate-3/{name}").into_bytes();
        let mut rewritten = 0u64;
        while meta.get(&done_key)?.is_none() {
            let after = meta.get(&progress_key)?;
            let range = match &after {
                Some(k) => tree.range::<&[u8], _>((Bound::Excluded(k.as_ref()), Bound::Unbounded)),
                None => tree.iter(),
            };
            let batch: Vec<(sled::IVec, sled::IVec)> = range.take(BATCH).collect::<sled::Result<_>>()?;
            let last = batch.last().map(|(k, _)| k.clone());
            (&tree, meta)
                .transaction(|(t, m)| {
                    for (k, v) in &batch {
                        let mut versioned = Vec::with_capacity(v.len() + 1);
                        versioned.push(1u8);
                        versioned.extend_from_slice(v);
                        t.insert(k, versioned)?;
                    }
                    match &last {
                        Some(k) => m.insert(progress_key.as_slice(), k.clone())?,
                        None => m.insert(done_key.as_slice(), &[])?,
                    };
                    Ok::<_, ConflictableTransactionError<()>>(())
                })
                .map_err(|e| match e {
                    TransactionError::Storage(e) => Error::from(e),
                    TransactionError::Abort(()) => Error::Storage("migration transaction aborted".into()),
                })?;
            rewritten += batch.len() as u64;
        }
        if rewritten > 0 {
            tracing::info!(tree = name, records = rewritten, "records versioned");
        }
    }
    // The blob index (new in format 3) of the releases published so far. Inserting a key
    // twice is harmless, so an interrupted run simply does it again.
    let releases = db.open_tree("releases")?;
    let blob_refs = db.open_tree("blob_refs")?;
    let mut index = sled::Batch::default();
    for kv in releases.iter() {
        let (_, v) = kv?;
        let release: efa_domain::model::release::Release = crate::store::codec::decode("releases", &v)?;
        for k in super::blob_ref_keys(&release) {
            index.insert(k, &[]);
        }
    }
    blob_refs.apply_batch(index)?;

    let mut finish = sled::Batch::default();
    finish.insert(FORMAT_KEY, marker(3));
    for name in RECORD_TREES {
        finish.remove(format!("migrate-3/{name}/done").into_bytes());
        finish.remove(format!("migrate-3/{name}").into_bytes());
    }
    meta.apply_batch(finish)?;
    db.flush()?;
    Ok(())
}
