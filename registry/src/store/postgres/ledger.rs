//! The adoption ledger on PostgreSQL: a report and a bulk load.
//!
//! Reports are most of a hub's writes. The commit thread queues the reports of its batch
//! ([`Store::queue_adoption`](crate::store::Store::queue_adoption)); before anything else in
//! the batch reads or writes, and before its commit, [`apply_queued`] applies them all at
//! once: it locks the seq row, reads (and locks) every previous record and the services'
//! totals in one statement, folds the reports in order here, and writes every row and
//! event in one statement. A batch of reports thus costs three round trips (and the
//! commit) however large it is, where one report alone used to cost ten.

use super::sql::storage;
use super::PostgresStore;
use crate::error::{Error, Result};
use crate::store::codec::{decode, encode};
use crate::store::Queued;
use efa_domain::model::adoption::{AdoptionEntry, AdoptionRecord, ServiceTotals};
use efa_domain::model::event::{Event, EventKind};
use sqlx::PgConnection;
use std::collections::{BTreeSet, HashMap};

/// Entries per statement (and transaction) of a bulk load.
const BULK_LOAD_ROWS: usize = 20_000;

/// A report queued in the open batch, and where its outcome goes.
pub(super) type QueuedReport = (AdoptionEntry, Queued<(AdoptionRecord, Event)>);

/// The records, totals and history that reports leave, folded here from the rows they
/// start from; written back as `$1`–`$8` of [`LIVE_WRITE`] or [`BULK_WRITE`].
struct Fold {
    records: HashMap<(String, String), AdoptionRecord>,
    totals: HashMap<String, ServiceTotals>,
    history: Vec<(String, Vec<u8>)>,
}

/// The rows of a fold: every record and totals row, the Kommunen index, the history.
const WRITE_ROWS: &str = "a AS (INSERT INTO adoption (service, ags, rec) \
       SELECT * FROM UNNEST($1::text[], $2::text[], $3::bytea[]) ON CONFLICT (service, ags) DO UPDATE SET rec = EXCLUDED.rec), \
     t AS (INSERT INTO totals (service, rec) SELECT * FROM UNNEST($4::text[], $5::bytea[]) \
       ON CONFLICT (service) DO UPDATE SET rec = EXCLUDED.rec), \
     k AS (INSERT INTO adoption_kommunen (ags) SELECT UNNEST($8::text[]) ON CONFLICT DO NOTHING)";

/// A fold of live reports, with their events (`$10`, `$11`) and the last seq taken (`$9`).
fn live_write() -> String {
    format!(
        "WITH {WRITE_ROWS}, s AS (UPDATE seq SET last = $9), \
         h AS (INSERT INTO history (ags, rec) SELECT ags, rec FROM UNNEST($6::text[], $7::bytea[]) \
               WITH ORDINALITY AS x(ags, rec, n) ORDER BY n) \
         INSERT INTO events (seq, rec) SELECT * FROM UNNEST($10::int8[], $11::bytea[])"
    )
}

/// A fold of bulk-loaded entries: no events; their history is older than anything logged,
/// so it sorts first.
fn bulk_write() -> String {
    format!(
        "WITH {WRITE_ROWS} INSERT INTO history (pos, ags, rec) \
         SELECT nextval('history_bulk') - 4611686018427387904, ags, rec \
         FROM (SELECT ags, rec FROM UNNEST($6::text[], $7::bytea[]) WITH ORDINALITY AS x(ags, rec, n) ORDER BY n) o"
    )
}

impl Fold {
    /// The current records of the (service, Kommune) pairs of `entries` and their services'
    /// totals, in one round trip; locked until the transaction ends when `lock`.
    async fn read<'e>(
        conn: &mut PgConnection,
        entries: impl Iterator<Item = &'e AdoptionEntry>,
        lock: bool,
    ) -> Result<Fold> {
        let pairs: BTreeSet<(String, String)> =
            entries.map(|e| (e.service_id.to_string(), e.ags.to_string())).collect();
        let (services, kommunen): (Vec<String>, Vec<String>) = pairs.into_iter().unzip();
        let distinct: Vec<String> = services.iter().cloned().collect::<BTreeSet<_>>().into_iter().collect();
        let sql = if lock {
            "WITH a AS (SELECT service, ags, rec FROM adoption \
                        WHERE (service, ags) IN (SELECT * FROM UNNEST($1::text[], $2::text[])) \
                        ORDER BY service, ags FOR UPDATE), \
                  t AS (SELECT service, rec FROM totals WHERE service = ANY($3) ORDER BY service FOR UPDATE) \
             SELECT 'a', service, ags, rec FROM a UNION ALL SELECT 't', service, NULL, rec FROM t"
        } else {
            "SELECT 'a', service, ags, rec FROM adoption \
             WHERE (service, ags) IN (SELECT * FROM UNNEST($1::text[], $2::text[])) \
             UNION ALL SELECT 't', service, NULL, rec FROM totals WHERE service = ANY($3)"
        };
        let rows: Vec<(String, String, Option<String>, Vec<u8>)> = sqlx::query_as(sql)
            .bind(&services)
            .bind(&kommunen)
            .bind(&distinct)
            .fetch_all(&mut *conn)
            .await
            .map_err(storage)?;
        let mut fold = Fold { records: HashMap::new(), totals: HashMap::new(), history: Vec::new() };
        for (kind, service, ags, rec) in rows {
            match (kind.as_str(), ags) {
                ("a", Some(ags)) => {
                    fold.records.insert((service, ags), decode("adoption", &rec)?);
                }
                ("t", None) => {
                    fold.totals.insert(service, decode("totals", &rec)?);
                }
                _ => return Err(Error::Storage("PostgreSQL: an unexpected row reading adoption records".into())),
            }
        }
        Ok(fold)
    }

    /// Folds one entry in: its pair's record, its service's totals, the history.
    fn apply(&mut self, entry: &AdoptionEntry) -> AdoptionRecord {
        let key = (entry.service_id.to_string(), entry.ags.to_string());
        let previous = self.records.remove(&key);
        let record = AdoptionRecord::apply(previous.clone(), entry.clone());
        self.totals.entry(key.0.clone()).or_default().replace_record(previous.as_ref(), &record);
        self.history.push((key.1.clone(), encode(entry)));
        self.records.insert(key, record.clone());
        record
    }

    /// Binds the rows as `$1`–`$8` of a write statement.
    fn bind(self, sql: &str) -> sqlx::query::Query<'_, sqlx::Postgres, sqlx::postgres::PgArguments> {
        let (mut ad_service, mut ad_ags, mut ad_rec) = (Vec::new(), Vec::new(), Vec::new());
        for ((service, ags), r) in self.records {
            ad_service.push(service);
            ad_ags.push(ags);
            ad_rec.push(encode(&r));
        }
        let (t_service, t_rec): (Vec<String>, Vec<Vec<u8>>) =
            self.totals.into_iter().map(|(s, t)| (s, encode(&t))).unzip();
        let (h_ags, h_rec): (Vec<String>, Vec<Vec<u8>>) = self.history.into_iter().unzip();
        let touched: Vec<String> = h_ags.iter().cloned().collect::<BTreeSet<_>>().into_iter().collect();
        sqlx::query(sql)
            .bind(ad_service)
            .bind(ad_ags)
            .bind(ad_rec)
            .bind(t_service)
            .bind(t_rec)
            .bind(h_ags)
            .bind(h_rec)
            .bind(touched)
    }
}

/// Applies the batch's queued reports on `conn` (see the module docs) and fills in their
/// outcomes. On a database error nothing is filled in; the caller fails the batch.
pub(super) async fn apply_queued(conn: &mut PgConnection, queued: Vec<QueuedReport>) -> Result<()> {
    // The seq row first, as every writer takes it first (so replicas never wait on each
    // other's record locks in opposite orders). Its own statement: the next one's snapshot
    // is taken after the lock is granted, so it sees rows another replica inserted in the
    // batch it just committed (a statement that waits for a lock keeps its older snapshot,
    // and FOR UPDATE re-reads changed rows, not new ones).
    let last: i64 =
        sqlx::query_scalar("SELECT last FROM seq FOR UPDATE").fetch_one(&mut *conn).await.map_err(storage)?;
    // Then the previous records and the services' totals, locked, in one round trip.
    let mut fold = Fold::read(conn, queued.iter().map(|(e, _)| e), true).await?;
    let mut next_seq = last + 1;
    let (mut e_seq, mut e_rec, mut outcomes) = (Vec::new(), Vec::new(), Vec::new());
    for (entry, outcome) in queued {
        let record = fold.apply(&entry);
        let event = Event { seq: next_seq as u64, at_ms: entry.at_ms, kind: EventKind::AdoptionReported(entry) };
        e_seq.push(next_seq);
        e_rec.push(encode(&event));
        next_seq += 1;
        outcomes.push((outcome, record, event));
    }
    let sql = live_write();
    fold.bind(&sql).bind(next_seq - 1).bind(e_seq).bind(e_rec).execute(&mut *conn).await.map_err(storage)?;
    for (outcome, record, event) in outcomes {
        outcome.set(Ok((record, event)));
    }
    Ok(())
}

impl PostgresStore {
    /// The ledger entry, the Kommune's record and the service's totals with the event, applied
    /// as a batch's reports are: in the batch (queued and applied at once, so the caller sees
    /// its outcome), or alone in a transaction of its own.
    pub(super) fn append_adoption_entry(&self, entry: &AdoptionEntry) -> Result<(AdoptionRecord, Event)> {
        if self.in_batch() {
            let queued = self.queue_adoption_entry(entry)?;
            self.settle_batch()?;
            return queued.take();
        }
        // Outside a batch: the same application, in a transaction of its own.
        let (mine, theirs) = Queued::pending();
        let entry = entry.clone();
        self.run(move |pool| async move {
            let mut tx = pool.begin().await.map_err(storage)?;
            apply_queued(&mut tx, vec![(entry, theirs)]).await?;
            tx.commit().await.map_err(storage)
        })?;
        mine.take()
    }

    /// Queues a report in the commit thread's batch (applied before the batch's next read
    /// or write, and at its flush); outside a batch it is applied at once.
    pub(super) fn queue_adoption_entry(&self, entry: &AdoptionEntry) -> Result<Queued<(AdoptionRecord, Event)>> {
        if !self.in_batch() {
            return self.append_adoption_entry(entry).map(Queued::ready);
        }
        let (mine, theirs) = Queued::pending();
        let report = (entry.clone(), theirs);
        if tokio::runtime::Handle::try_current().is_err() {
            // The commit thread is a plain thread: no hop to the store's runtime needed.
            self.batch.blocking_lock().enqueue(report)?;
        } else {
            let batch = self.batch.clone();
            self.run(move |_| async move { batch.lock().await.enqueue(report) })?;
        }
        Ok(mine)
    }

    /// Loads entries without events, set-based: per chunk of [`BULK_LOAD_ROWS`] entries, one
    /// read of the previous records and totals, the fold here, and one write of every row.
    pub(super) fn bulk_load(&self, entries: &[AdoptionEntry]) -> Result<()> {
        let entries = entries.to_vec();
        self.run(move |pool| async move {
            let sql = bulk_write();
            for chunk in entries.chunks(BULK_LOAD_ROWS) {
                let mut tx = pool.begin().await.map_err(storage)?;
                let mut fold = Fold::read(&mut tx, chunk.iter(), false).await?;
                for entry in chunk {
                    fold.apply(entry);
                }
                fold.bind(&sql).execute(&mut *tx).await.map_err(storage)?;
                tx.commit().await.map_err(storage)?;
            }
            // Marks the new pages all-visible, so queries read the records from the covering
            // index alone (autovacuum would, later), and refreshes the planner's statistics.
            sqlx::query("VACUUM (ANALYZE) adoption").execute(&pool).await.map_err(storage)?;
            Ok(())
        })
    }
}
