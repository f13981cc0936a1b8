//! Copies a whole store into PostgreSQL (`efa-hub migrate --from sled:DIR --to postgres://…`):
//! every record, and the events with their seqs, then checks counts and a digest of the
//! event log on both sides. Every write is an idempotent upsert keyed as in the source
//! (history rows by their position in it), so a copy killed halfway is simply run again.

use super::{encode, storage, PostgresStore};
use crate::error::{Error, Result};
use crate::store::codec::StoredSnapshot;
use crate::store::log::LogStore;
use crate::store::Store;
use efa_domain::model::ids::LandCode;
use sha2::{Digest as _, Sha256};
use sqlx::PgPool;

/// Rows per statement.
const CHUNK: usize = 2_000;
/// Copied history sorts before bulk-loaded (from -2^62) and live (from 1) history.
const COPIED_HISTORY_BASE: i64 = -(1 << 62) - (1 << 61);

/// What a copy moved, each kind counted on both sides and equal.
#[derive(Debug, Default)]
pub struct CopyReport {
    /// (kind, records) in copy order.
    pub counts: Vec<(&'static str, usize)>,
    /// Events copied, with their seqs.
    pub events: u64,
    /// SHA-256 over the event records in seq order, the same on both sides.
    pub events_digest: String,
    /// Leaves of the transparency log copied (with their hashes, texts and checkpoint);
    /// the target's root equals the source's.
    pub log_leaves: u64,
}

/// One table's rows: key columns as text, and the record.
struct Rows {
    table: &'static str,
    keys: &'static [&'static str],
    rows: Vec<(Vec<String>, Vec<u8>)>,
}

async fn insert(pool: &PgPool, rows: Rows) -> Result<()> {
    let n = rows.keys.len();
    let casts: Vec<String> = (1..=n).map(|i| format!("${i}::text[]")).collect();
    let sql = format!(
        "INSERT INTO {} ({}, rec) SELECT * FROM UNNEST({}, ${}::bytea[]) ON CONFLICT DO NOTHING",
        rows.table,
        rows.keys.join(", "),
        casts.join(", "),
        n + 1
    );
    for chunk in rows.rows.chunks(CHUNK) {
        let mut q = sqlx::query(&sql);
        for i in 0..n {
            let column: Vec<&str> = chunk.iter().map(|(k, _)| k[i].as_str()).collect();
            q = q.bind(column);
        }
        let recs: Vec<&[u8]> = chunk.iter().map(|(_, r)| r.as_slice()).collect();
        q.bind(recs).execute(pool).await.map_err(storage)?;
    }
    Ok(())
}

impl PostgresStore {
    /// Copies everything `src` holds into this store, reporting each kind to `progress`.
    /// The register's OZG and LeiKa catalogue are not copied: they come from the data
    /// EfA Hub ships, which the caller imports.
    pub fn copy_from(&self, src: &dyn Store, progress: &dyn Fn(&str, usize)) -> Result<CopyReport> {
        let head = src.head_seq()?;
        let here = self.head_seq()?;
        if here > head {
            return Err(Error::Storage(format!(
                "the target's event log is ahead of the source's ({here} > {head}): it holds another hub's data; use an empty database"
            )));
        }
        let mut report = CopyReport::default();
        let mut note = |kind: &'static str, n: usize| {
            progress(kind, n);
            report.counts.push((kind, n));
        };

        let (laender, kreise, kommunen) = (src.laender()?, src.kreise()?, src.kommunen()?);
        self.import_register(&laender, &kreise, &kommunen)?;
        note("Länder", laender.len());
        note("Kreise", kreise.len());
        note("Gemeinden", kommunen.len());
        for (k, v) in src.settings()? {
            self.put_meta(&k, &v)?;
        }

        let services = src.services()?;
        let mut tables: Vec<Rows> = Vec::new();
        let mut add = |table, keys, rows: Vec<(Vec<String>, Vec<u8>)>| tables.push(Rows { table, keys, rows });
        add("services", &["id"], services.iter().map(|s| (vec![s.id.to_string()], encode(s))).collect());
        let mut releases = Vec::new();
        let mut blob_refs = Vec::new();
        let mut n_inline = 0usize;
        let (mut adoption, mut totals, mut ratings, mut preflight, mut routing, mut offers) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for s in &services {
            let id = s.id.to_string();
            for r in src.releases(&s.id)? {
                let v = r.version.to_string();
                let mut inline: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
                for d in efa_domain::bundle::Manifest::blob_digests(&r.manifest) {
                    if let Some(bytes) = src.inline_blob(&d)? {
                        inline.push((d.0.to_vec(), bytes));
                    }
                    blob_refs.push((d.0.to_vec(), id.clone(), v.clone()));
                }
                // Written release by release: a store's small files together may be large.
                n_inline += inline.len();
                if !inline.is_empty() {
                    self.run(move |pool| async move {
                        let d: Vec<&[u8]> = inline.iter().map(|b| b.0.as_slice()).collect();
                        let data: Vec<&[u8]> = inline.iter().map(|b| b.1.as_slice()).collect();
                        sqlx::query("INSERT INTO inline_blobs (digest, data) SELECT * FROM UNNEST($1::bytea[], $2::bytea[]) ON CONFLICT DO NOTHING")
                            .bind(d).bind(data).execute(&pool).await.map_err(storage)?;
                        Ok(())
                    })?;
                }
                for p in src.preflights(&s.id, &r.version)? {
                    preflight.push((vec![id.clone(), v.clone(), p.ags.to_string()], encode(&p)));
                }
                releases.push((vec![id.clone(), v], encode(&r)));
            }
            for a in src.adopters(&s.id)? {
                adoption.push((vec![id.clone(), a.latest.ags.to_string()], encode(&a)));
            }
            totals.push((vec![id.clone()], encode(&src.service_totals(&s.id)?)));
            for r in src.ratings(&s.id)? {
                ratings.push((vec![id.clone(), r.version.to_string(), r.ags.to_string()], encode(&r)));
            }
            for r in src.routing(&s.id)? {
                routing.push((vec![id.clone(), r.ags.to_string()], encode(&r)));
            }
            for (land, o) in src.offers(&s.id)? {
                offers.push((vec![id.clone(), land.to_string()], encode(&o)));
            }
        }
        add("releases", &["service", "version"], releases);
        add("adoption", &["service", "ags"], adoption);
        add("totals", &["service"], totals);
        add("ratings", &["service", "version", "ags"], ratings);
        add("preflight", &["service", "version", "ags"], preflight);
        add("routing", &["service", "ags"], routing);
        add("offers", &["service", "land"], offers);
        add(
            "rollouts",
            &["service", "version", "land"],
            src.rollouts()?
                .into_iter()
                .map(|(s, v, l, r)| {
                    (vec![s.to_string(), v.to_string(), l.map(|l| l.to_string()).unwrap_or_default()], encode(&r))
                })
                .collect(),
        );
        let subs = src.all_subscriptions()?;
        add(
            "subscriptions",
            &["ags", "target"],
            subs.iter().map(|s| (vec![s.ags.to_string(), s.target.key()], encode(s))).collect(),
        );
        add("grants", &["provider"], src.grants()?.into_iter().map(|(p, g)| (vec![p], encode(&g))).collect());
        let lands: Vec<LandCode> = laender.iter().map(|l| l.code.clone()).chain([LandCode::bund()]).collect();
        let mut keys = Vec::new();
        let mut snapshots = Vec::new();
        let mut key_sets: Vec<(String, i64, Vec<u8>)> = Vec::new();
        for land in &lands {
            for (seq, set) in src.key_sets(land)? {
                key_sets.push((land.to_string(), seq as i64, encode(&set)));
            }
            let k = src.signing_keys(land)?;
            if !k.keys.is_empty() || k.updated_at_ms != 0 {
                keys.push((vec![land.to_string()], encode(&k)));
            }
            if let Some((bytes, sig)) = src.snapshot(land)? {
                snapshots.push((vec![land.to_string()], encode(&StoredSnapshot(bytes, sig))));
            }
        }
        add("signing_keys", &["land"], keys);
        add("snapshots", &["land"], snapshots);
        let with_records = src.kommunen_with_records_under("")?;
        let mut history = Vec::new();
        for ags in &with_records {
            for e in src.history_of(ags)? {
                history.push((ags.to_string(), encode(&e)));
            }
        }

        // Events in batches, with their seqs; the counter follows the last one copied.
        let mut hasher = Sha256::new();
        let mut cursor = 0;
        let mut events: Vec<(i64, Vec<u8>)> = Vec::new();
        loop {
            let batch = src.events_after(cursor, CHUNK)?;
            let Some(last) = batch.last() else { break };
            cursor = last.seq;
            for e in batch {
                let bytes = encode(&e);
                hasher.update(&bytes);
                events.push((e.seq as i64, bytes));
            }
        }
        let src_digest = hex(&hasher.finalize());

        let counts: Vec<(&'static str, usize)> = tables.iter().map(|t| (t.table, t.rows.len())).collect();
        let (n_history, n_events, n_refs, n_kommunen) =
            (history.len(), events.len(), blob_refs.len(), with_records.len());
        self.run(move |pool| async move {
            for t in tables {
                insert(&pool, t).await?;
            }
            for chunk in blob_refs.chunks(CHUNK) {
                let d: Vec<&[u8]> = chunk.iter().map(|r| r.0.as_slice()).collect();
                let s: Vec<&str> = chunk.iter().map(|r| r.1.as_str()).collect();
                let v: Vec<&str> = chunk.iter().map(|r| r.2.as_str()).collect();
                sqlx::query("INSERT INTO blob_refs (digest, service, version) SELECT * FROM UNNEST($1::bytea[], $2::text[], $3::text[]) ON CONFLICT DO NOTHING")
                    .bind(d).bind(s).bind(v).execute(&pool).await.map_err(storage)?;
            }
            for (i, chunk) in history.chunks(CHUNK).enumerate() {
                let pos: Vec<i64> = (0..chunk.len()).map(|j| COPIED_HISTORY_BASE + (i * CHUNK + j) as i64).collect();
                let ags: Vec<&str> = chunk.iter().map(|h| h.0.as_str()).collect();
                let rec: Vec<&[u8]> = chunk.iter().map(|h| h.1.as_slice()).collect();
                sqlx::query("INSERT INTO history (pos, ags, rec) SELECT * FROM UNNEST($1::bigint[], $2::text[], $3::bytea[]) ON CONFLICT DO NOTHING")
                    .bind(pos).bind(ags).bind(rec).execute(&pool).await.map_err(storage)?;
            }
            let kommunen: Vec<String> = history.iter().map(|h| h.0.clone()).collect::<std::collections::BTreeSet<_>>().into_iter().collect();
            sqlx::query("INSERT INTO adoption_kommunen (ags) SELECT * FROM UNNEST($1::text[]) ON CONFLICT DO NOTHING")
                .bind(kommunen).execute(&pool).await.map_err(storage)?;
            for chunk in events.chunks(CHUNK) {
                let seq: Vec<i64> = chunk.iter().map(|e| e.0).collect();
                let rec: Vec<&[u8]> = chunk.iter().map(|e| e.1.as_slice()).collect();
                sqlx::query("INSERT INTO events (seq, rec) SELECT * FROM UNNEST($1::bigint[], $2::bytea[]) ON CONFLICT DO NOTHING")
                    .bind(seq).bind(rec).execute(&pool).await.map_err(storage)?;
            }
            sqlx::query("UPDATE seq SET last = GREATEST(last, $1)").bind(head as i64).execute(&pool).await.map_err(storage)?;
            Ok(())
        })?;
        for (kind, n) in counts {
            note(kind, n);
        }
        note("blob references", n_refs);
        note("small files kept in the store", n_inline);
        note("history entries", n_history);
        note("Kommunen with records", n_kommunen);
        note("events", n_events);

        // Check: what the target holds equals what was read.
        let mut hasher = Sha256::new();
        let mut cursor = 0;
        let mut copied = 0u64;
        loop {
            let batch = self.events_after(cursor, CHUNK)?;
            let Some(last) = batch.last() else { break };
            cursor = last.seq;
            for e in batch {
                hasher.update(encode(&e));
                copied += 1;
            }
        }
        let digest = hex(&hasher.finalize());
        let checks = [
            ("events", copied as usize, n_events),
            ("services", self.services()?.len(), services.len()),
            ("Gemeinden", self.kommunen()?.len(), kommunen.len()),
            ("Kommunen with records", self.kommunen_with_records()?, n_kommunen),
            ("subscriptions", self.all_subscriptions()?.len(), subs.len()),
        ];
        if let Some((kind, got, want)) = checks.iter().find(|(_, got, want)| got != want) {
            return Err(Error::Storage(format!("copy check failed: {want} {kind} read, {got} in the target")));
        }
        if digest != src_digest || self.head_seq()? != head {
            return Err(Error::Storage("copy check failed: the event logs differ".into()));
        }
        report.events = copied;
        report.events_digest = digest;
        let n_sets = key_sets.len();
        self.run(move |pool| async move {
            let (lands, seqs, recs): (Vec<String>, Vec<i64>, Vec<Vec<u8>>) =
                key_sets.into_iter().fold(Default::default(), |(mut l, mut s, mut r), (a, b, c)| {
                    l.push(a);
                    s.push(b);
                    r.push(c);
                    (l, s, r)
                });
            sqlx::query(
                "INSERT INTO key_sets (land, seq, rec) SELECT * FROM UNNEST($1::text[], $2::bigint[], $3::bytea[]) ON CONFLICT DO NOTHING",
            )
            .bind(lands)
            .bind(seqs)
            .bind(recs)
            .execute(&pool)
            .await
            .map_err(storage)?;
            Ok(())
        })?;
        progress("key sets", n_sets);
        report.log_leaves = self.copy_log_from(src, progress)?;
        Ok(report)
    }

    /// Copies the transparency log as it is (re-deriving it from the events would salt the
    /// texts anew and change every root nodes have verified), resuming at the target's size.
    fn copy_log_from(&self, src: &dyn Store, progress: &dyn Fn(&str, usize)) -> Result<u64> {
        use efa_tlog::tree::stored_hash_index;
        let size = src.log_size()?;
        let releases = src.log_releases()?;
        let mut at = self.log_size()?;
        while at < size {
            let to = (at + CHUNK as u64).min(size);
            let leaves = src.log_leaves(at, to)?;
            let indexes: Vec<u64> = (stored_hash_index(0, at)..stored_hash_index(0, to)).collect();
            let hashes = src.log_hashes(&indexes)?;
            let beside = src.beside_texts(at, to)?;
            let named: Vec<(String, u64)> = releases.iter().filter(|(_, i)| (at..to).contains(i)).cloned().collect();
            self.append_log(at, &leaves, &hashes, &beside, &named)?;
            at = to;
        }
        if let Some((n, note)) = src.latest_checkpoint()? {
            self.put_checkpoint(n, &note)?;
        }
        progress("log leaves", size as usize);
        let root = |s: &dyn Store| {
            efa_tlog::tree::root(size, &crate::registry::StoredHashes(s)).map_err(|e| Error::Storage(e.to_string()))
        };
        if root(self)?.0 != root(src)?.0 {
            return Err(Error::Storage("copy check failed: the transparency logs differ".into()));
        }
        Ok(size)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
