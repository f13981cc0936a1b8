//! The adoption ledger on PostgreSQL: a report and a bulk load.
//!
//! Reports are most of a hub's writes. Within the commit thread's batch, a report costs one
//! round trip: the Kommune's previous record is read (and locked); the new record, the
//! service's totals, the history entry and the event are computed here and kept in
//! [`PendingAdoptions`], and all of the batch's rows go to the database in one statement
//! before anything else in the batch reads or writes, and before its commit. The event
//! seqs are counted here too: the batch holds the seq row's lock from its first report to
//! its commit, so no other writer can take a seq in between.

use super::sql::{exec, storage, tx_get};
use super::{PostgresStore, BULK_ROWS};
use crate::error::{Error, Result};
use crate::store::codec::{decode, encode};
use efa_domain::model::adoption::{AdoptionEntry, AdoptionRecord, ServiceTotals};
use efa_domain::model::event::{Event, EventKind};
use sqlx::PgConnection;
use std::collections::{BTreeSet, HashMap};

/// Reports of the open batch not yet written to its transaction.
pub(super) struct PendingAdoptions {
    /// The seq the next report's event takes.
    next_seq: i64,
    /// Records written in this batch, by (service, ags); they shadow the table.
    records: HashMap<(String, String), AdoptionRecord>,
    /// Totals of the services reported on in this batch (read once, locked).
    totals: HashMap<String, ServiceTotals>,
    history: Vec<(String, Vec<u8>)>,
    events: Vec<(i64, Vec<u8>)>,
    kommunen: BTreeSet<String>,
}

/// Writes the pending rows in one statement and moves the seq row to the last seq taken.
pub(super) async fn write_pending(conn: &mut PgConnection, p: PendingAdoptions) -> Result<()> {
    let (ad_service, ad_ags, ad_rec): (Vec<String>, Vec<String>, Vec<Vec<u8>>) = p
        .records
        .into_iter()
        .map(|((s, a), r)| (s, a, encode(&r)))
        .fold((Vec::new(), Vec::new(), Vec::new()), |(mut s, mut a, mut r), (s1, a1, r1)| {
            s.push(s1);
            a.push(a1);
            r.push(r1);
            (s, a, r)
        });
    let (t_service, t_rec): (Vec<String>, Vec<Vec<u8>>) = p.totals.into_iter().map(|(s, t)| (s, encode(&t))).unzip();
    let (h_ags, h_rec): (Vec<String>, Vec<Vec<u8>>) = p.history.into_iter().unzip();
    let (e_seq, e_rec): (Vec<i64>, Vec<Vec<u8>>) = p.events.into_iter().unzip();
    let kommunen: Vec<String> = p.kommunen.into_iter().collect();
    sqlx::query(
        "WITH s AS (UPDATE seq SET last = $1), \
         a AS (INSERT INTO adoption (service, ags, rec) SELECT * FROM UNNEST($2::text[], $3::text[], $4::bytea[]) \
               ON CONFLICT (service, ags) DO UPDATE SET rec = EXCLUDED.rec), \
         t AS (INSERT INTO totals (service, rec) SELECT * FROM UNNEST($5::text[], $6::bytea[]) \
               ON CONFLICT (service) DO UPDATE SET rec = EXCLUDED.rec), \
         h AS (INSERT INTO history (ags, rec) SELECT ags, rec FROM UNNEST($7::text[], $8::bytea[]) \
               WITH ORDINALITY AS x(ags, rec, n) ORDER BY n), \
         k AS (INSERT INTO adoption_kommunen (ags) SELECT UNNEST($9::text[]) ON CONFLICT DO NOTHING) \
         INSERT INTO events (seq, rec) SELECT * FROM UNNEST($10::int8[], $11::bytea[])",
    )
    .bind(p.next_seq - 1)
    .bind(ad_service)
    .bind(ad_ags)
    .bind(ad_rec)
    .bind(t_service)
    .bind(t_rec)
    .bind(h_ags)
    .bind(h_rec)
    .bind(kommunen)
    .bind(e_seq)
    .bind(e_rec)
    .execute(&mut *conn)
    .await
    .map_err(storage)?;
    Ok(())
}

impl PostgresStore {
    /// The ledger entry, the Kommune's record and the service's totals with the event: in
    /// the batch (see the module docs), or in a transaction of its own.
    pub(super) fn append_adoption_entry(&self, entry: &AdoptionEntry) -> Result<(AdoptionRecord, Event)> {
        if self.in_batch() {
            return self.append_adoption_in_batch(entry.clone());
        }
        let (sid, ags) = (entry.service_id.to_string(), entry.ags.to_string());
        let entry = entry.clone();
        let at = entry.at_ms;
        self.mutate(at, move |c| {
            Box::pin(async move {
                let previous = tx_get::<AdoptionRecord>(
                    c,
                    "adoption",
                    "SELECT rec FROM adoption WHERE service = $1 AND ags = $2 FOR UPDATE",
                    &[&sid, &ags],
                )
                .await?;
                let mut totals = tx_get::<ServiceTotals>(c, "totals", "SELECT rec FROM totals WHERE service = $1 FOR UPDATE", &[&sid])
                    .await?
                    .unwrap_or_default();
                let record = AdoptionRecord::apply(previous.clone(), entry.clone());
                totals.replace_record(previous.as_ref(), &record);
                exec(c, "INSERT INTO totals (service, rec) VALUES ($1, $2) ON CONFLICT (service) DO UPDATE SET rec = EXCLUDED.rec", &[&sid], encode(&totals)).await?;
                exec(c, "INSERT INTO adoption (service, ags, rec) VALUES ($1, $2, $3) ON CONFLICT (service, ags) DO UPDATE SET rec = EXCLUDED.rec", &[&sid, &ags], encode(&record)).await?;
                exec(c, "INSERT INTO history (ags, rec) VALUES ($1, $2)", &[&ags], encode(&entry)).await?;
                sqlx::query("INSERT INTO adoption_kommunen (ags) VALUES ($1) ON CONFLICT DO NOTHING")
                    .bind(&ags)
                    .execute(&mut *c)
                    .await
                    .map_err(storage)?;
                Ok((EventKind::AdoptionReported(entry), record))
            })
        })
    }

    fn append_adoption_in_batch(&self, entry: AdoptionEntry) -> Result<(AdoptionRecord, Event)> {
        let batch = self.batch.clone();
        self.run(move |pool| async move {
            let mut b = batch.lock().await;
            let b = &mut *b;
            if let Some(why) = &b.failed {
                return Err(Error::Unavailable(format!("the batch's transaction failed: {why}")));
            }
            if b.tx.is_none() {
                b.tx = Some(pool.begin().await.map_err(storage)?);
            }
            let tx = b.tx.as_mut().expect("begun above");
            // A database error aborts the transaction: no later write of the batch may be
            // acknowledged, so the batch is marked failed.
            let fail = |e: Error, failed: &mut Option<String>| {
                *failed = Some(e.to_string());
                e
            };
            if b.pending.is_none() {
                let last: i64 =
                    match sqlx::query_scalar("UPDATE seq SET last = last RETURNING last").fetch_one(&mut **tx).await {
                        Ok(last) => last,
                        Err(e) => return Err(fail(storage(e), &mut b.failed)),
                    };
                b.pending = Some(PendingAdoptions {
                    next_seq: last + 1,
                    records: HashMap::new(),
                    totals: HashMap::new(),
                    history: Vec::new(),
                    events: Vec::new(),
                    kommunen: BTreeSet::new(),
                });
            }
            let p = b.pending.as_mut().expect("set above");
            let (sid, ags) = (entry.service_id.to_string(), entry.ags.to_string());
            let key = (sid.clone(), ags.clone());
            let previous = match p.records.get(&key) {
                Some(r) => Some(r.clone()),
                None if p.totals.contains_key(&sid) => {
                    let row: Option<Vec<u8>> =
                        match sqlx::query_scalar("SELECT rec FROM adoption WHERE service = $1 AND ags = $2 FOR UPDATE")
                            .bind(&sid)
                            .bind(&ags)
                            .fetch_optional(&mut **tx)
                            .await
                        {
                            Ok(r) => r,
                            Err(e) => return Err(fail(storage(e), &mut b.failed)),
                        };
                    row.map(|r| decode("adoption", &r)).transpose()?
                }
                None => {
                    // First report on this service in the batch: its totals come along.
                    let row: (Option<Vec<u8>>, Option<Vec<u8>>) = match sqlx::query_as(
                        "SELECT (SELECT rec FROM adoption WHERE service = $1 AND ags = $2 FOR UPDATE), \
                                (SELECT rec FROM totals WHERE service = $1 FOR UPDATE)",
                    )
                    .bind(&sid)
                    .bind(&ags)
                    .fetch_one(&mut **tx)
                    .await
                    {
                        Ok(r) => r,
                        Err(e) => return Err(fail(storage(e), &mut b.failed)),
                    };
                    let totals: ServiceTotals = row.1.map(|t| decode("totals", &t)).transpose()?.unwrap_or_default();
                    p.totals.insert(sid.clone(), totals);
                    row.0.map(|r| decode("adoption", &r)).transpose()?
                }
            };
            let record = AdoptionRecord::apply(previous.clone(), entry.clone());
            p.totals.get_mut(&sid).expect("read above").replace_record(previous.as_ref(), &record);
            p.records.insert(key, record.clone());
            p.history.push((ags.clone(), encode(&entry)));
            p.kommunen.insert(ags);
            let event = Event { seq: p.next_seq as u64, at_ms: entry.at_ms, kind: EventKind::AdoptionReported(entry) };
            p.events.push((p.next_seq, encode(&event)));
            p.next_seq += 1;
            Ok((record, event))
        })
    }

    /// Loads entries without events, in transactions of [`BULK_ROWS`].
    pub(super) fn bulk_load(&self, entries: &[AdoptionEntry]) -> Result<()> {
        let entries = entries.to_vec();
        self.run(move |pool| async move {
            for chunk in entries.chunks(BULK_ROWS) {
                let mut tx = pool.begin().await.map_err(storage)?;
                for entry in chunk {
                    let (sid, ags) = (entry.service_id.to_string(), entry.ags.to_string());
                    let previous = tx_get::<AdoptionRecord>(&mut tx, "adoption", "SELECT rec FROM adoption WHERE service = $1 AND ags = $2", &[&sid, &ags]).await?;
                    let mut totals = tx_get::<ServiceTotals>(&mut tx, "totals", "SELECT rec FROM totals WHERE service = $1", &[&sid]).await?.unwrap_or_default();
                    let record = AdoptionRecord::apply(previous.clone(), entry.clone());
                    totals.replace_record(previous.as_ref(), &record);
                    exec(&mut tx, "INSERT INTO totals (service, rec) VALUES ($1, $2) ON CONFLICT (service) DO UPDATE SET rec = EXCLUDED.rec", &[&sid], encode(&totals)).await?;
                    exec(&mut tx, "INSERT INTO adoption (service, ags, rec) VALUES ($1, $2, $3) ON CONFLICT (service, ags) DO UPDATE SET rec = EXCLUDED.rec", &[&sid, &ags], encode(&record)).await?;
                    // Bulk-loaded history is older than anything logged: it sorts first.
                    exec(
                        &mut tx,
                        "INSERT INTO history (pos, ags, rec) VALUES (nextval('history_bulk') - 4611686018427387904, $1, $2)",
                        &[&ags],
                        encode(entry),
                    )
                    .await?;
                    sqlx::query("INSERT INTO adoption_kommunen (ags) VALUES ($1) ON CONFLICT DO NOTHING")
                        .bind(&ags)
                        .execute(&mut *tx)
                        .await
                        .map_err(storage)?;
                }
                tx.commit().await.map_err(storage)?;
            }
            Ok(())
        })
    }
}
