//! The adoption ledger on PostgreSQL: a report and a bulk load.

use super::sql::{exec, storage, tx_get};
use super::{PostgresStore, BULK_ROWS};
use crate::error::Result;
use crate::store::codec::encode;
use efa_domain::model::adoption::{AdoptionEntry, AdoptionRecord, ServiceTotals};
use efa_domain::model::event::{Event, EventKind};

impl PostgresStore {
    /// The ledger entry, the Kommune's record and the service's totals in one transaction
    /// with the event.
    pub(super) fn append_adoption_entry(&self, entry: &AdoptionEntry) -> Result<(AdoptionRecord, Event)> {
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
