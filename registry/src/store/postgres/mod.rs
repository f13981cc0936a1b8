//! The PostgreSQL backend: the scale-out store, for several hub replicas sharing one
//! database.
//!
//! Every record is the same versioned postcard value as in sled ([`crate::store::codec`]),
//! in a `rec` column beside the key columns its queries need, so both backends read and
//! write one format and one test suite checks them ([`crate::store_test_suite`]).
//!
//! **Gapless event seqs in commit order.** Each mutation runs in one transaction that
//! takes the next seq from the single row of `seq` (`UPDATE … RETURNING`). The row lock is
//! held until commit, so writers on any replica commit in seq order and a reader that
//! follows `seq > cursor` never skips one; a plain sequence would hand out numbers in
//! call order and commit them in another.
//!
//! **A synchronous store over async sqlx.** The [`Store`] trait is synchronous: the
//! registry calls it on its commit thread and on the blocking pool. Queries run on the
//! store's own small tokio runtime, and the calling thread waits for the answer (inside a
//! tokio worker it says so with `block_in_place`).

mod catalog;
mod copy;
mod federation;
mod ledger;
mod log;
mod runtime;
mod schema;
mod sql;

pub use copy::CopyReport;

use sql::{count, exec, rec, storage, tx_get, upsert_all};

use super::codec::{encode, StoredSnapshot};
use super::{ImportCounts, InlineBlob, Store};
use crate::error::{Error, Result};
use efa_domain::model::adoption::{AdoptionEntry, AdoptionRecord, ServiceTotals};
use efa_domain::model::catalog::{Kommune, Kreis, Land, LeikaEntry, OzgLeistung, Service, SigningKeys};
use efa_domain::model::event::{Event, EventKind};
use efa_domain::model::grant::ProviderGrant;
use efa_domain::model::ids::{Ags, KreisCode, LandCode, Leistungsschluessel, OzgId, ServiceId};
use efa_domain::model::offer::SignedOffer;
use efa_domain::model::preflight::PreflightRecord;
use efa_domain::model::rating::Rating;
use efa_domain::model::release::{Release, Yank};
use efa_domain::model::rollout::{Rollout, Transition};
use efa_domain::model::routing::RoutingRecord;
use efa_domain::model::subscription::Subscription;
use sqlx::postgres::PgPool;
use sqlx::Row;

/// The LISTEN/NOTIFY channel on which commits that streams care about are announced.
const NOTIFY_CHANNEL: &str = "efa_events";
/// Connections per hub replica; PostgreSQL's default allows 100 in all.
const POOL_SIZE: u32 = 16;
/// Rows written per statement in bulk loads.
const BULK_ROWS: usize = 2_000;

/// The PostgreSQL store.
pub struct PostgresStore {
    pool: PgPool,
    rt: Option<tokio::runtime::Runtime>,
    /// The open transaction of the commit thread's current batch (group commit).
    batch: std::sync::Arc<tokio::sync::Mutex<runtime::Batch>>,
    /// The thread whose calls belong to the batch (the commit thread, between
    /// `begin_batch` and `flush`); calls from other threads never see the batch.
    batch_thread: std::sync::Mutex<Option<std::thread::ThreadId>>,
}

impl Drop for PostgresStore {
    fn drop(&mut self) {
        // Dropping a runtime blocks, which tokio forbids inside another runtime.
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

impl Store for PostgresStore {
    fn import_register(&self, laender: &[Land], kreise: &[Kreis], kommunen: &[Kommune]) -> Result<()> {
        let l: Vec<(String, Land)> = laender.iter().map(|x| (x.code.to_string(), x.clone())).collect();
        let k: Vec<(String, Kreis)> = kreise.iter().map(|x| (x.code.to_string(), x.clone())).collect();
        let g: Vec<(String, Kommune)> = kommunen.iter().map(|x| (x.ags.to_string(), x.clone())).collect();
        self.run(move |pool| async move {
            upsert_all(&pool, "laender", "code", l).await?;
            upsert_all(&pool, "kreise", "code", k).await?;
            upsert_all(&pool, "kommunen", "ags", g).await
        })
    }

    fn import_catalogue(&self, ozg: &[OzgLeistung], leika: &[LeikaEntry]) -> Result<()> {
        let o: Vec<(String, OzgLeistung)> = ozg.iter().map(|x| (x.ozg_id.to_string(), x.clone())).collect();
        let l: Vec<(String, LeikaEntry)> = leika.iter().map(|x| (x.schluessel.to_string(), x.clone())).collect();
        self.run(move |pool| async move {
            upsert_all(&pool, "ozg", "id", o).await?;
            upsert_all(&pool, "leika", "key", l).await
        })
    }

    fn counts(&self) -> Result<ImportCounts> {
        self.run(|pool| async move {
            Ok(ImportCounts {
                laender: count(&pool, "laender").await?,
                kreise: count(&pool, "kreise").await?,
                kommunen: count(&pool, "kommunen").await?,
                ozg_leistungen: count(&pool, "ozg").await?,
                leika: count(&pool, "leika").await?,
            })
        })
    }

    fn meta(&self, key: &str) -> Result<Option<String>> {
        let key = key.to_string();
        self.run(move |pool| async move {
            sqlx::query_scalar("SELECT value FROM meta WHERE key = $1")
                .bind(key)
                .fetch_optional(&pool)
                .await
                .map_err(storage)
        })
    }

    fn put_meta(&self, key: &str, value: &str) -> Result<()> {
        let (key, value) = (key.to_string(), value.to_string());
        self.run(move |pool| async move {
            sqlx::query(
                "INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
            )
            .bind(key)
            .bind(value)
            .execute(&pool)
            .await
            .map_err(storage)?;
            Ok(())
        })
    }

    fn settings(&self) -> Result<Vec<(String, String)>> {
        self.run(|pool| async move {
            let rows =
                sqlx::query("SELECT key, value FROM meta ORDER BY key").fetch_all(&pool).await.map_err(storage)?;
            rows.iter()
                .map(|r| Ok((r.try_get("key").map_err(storage)?, r.try_get("value").map_err(storage)?)))
                .collect()
        })
    }

    fn kommune(&self, ags: &Ags) -> Result<Option<Kommune>> {
        self.get("kommunen", "SELECT rec FROM kommunen WHERE ags = $1", vec![ags.to_string()])
    }

    fn kommunen(&self) -> Result<Vec<Kommune>> {
        self.all("kommunen", "SELECT rec FROM kommunen ORDER BY ags", vec![])
    }

    fn land(&self, code: &LandCode) -> Result<Option<Land>> {
        self.get("laender", "SELECT rec FROM laender WHERE code = $1", vec![code.to_string()])
    }

    fn laender(&self) -> Result<Vec<Land>> {
        self.all("laender", "SELECT rec FROM laender ORDER BY code", vec![])
    }

    fn kreis(&self, code: &KreisCode) -> Result<Option<Kreis>> {
        self.get("kreise", "SELECT rec FROM kreise WHERE code = $1", vec![code.to_string()])
    }

    fn kreise(&self) -> Result<Vec<Kreis>> {
        self.all("kreise", "SELECT rec FROM kreise ORDER BY code", vec![])
    }

    fn ozg_leistung(&self, id: &OzgId) -> Result<Option<OzgLeistung>> {
        self.get("ozg", "SELECT rec FROM ozg WHERE id = $1", vec![id.to_string()])
    }

    fn leika(&self, key: &Leistungsschluessel) -> Result<Option<LeikaEntry>> {
        self.get("leika", "SELECT rec FROM leika WHERE key = $1", vec![key.to_string()])
    }

    fn put_service(&self, service: &Service, event: EventKind) -> Result<Event> {
        let (id, value) = (service.id.to_string(), encode(service));
        self.mutate(service.registered_at_ms, move |c| {
            Box::pin(async move {
                exec(
                    c,
                    "INSERT INTO services (id, rec) VALUES ($1, $2) ON CONFLICT (id) DO UPDATE SET rec = EXCLUDED.rec",
                    &[&id],
                    value,
                )
                .await?;
                Ok((event, ()))
            })
        })
        .map(|((), event)| event)
    }

    fn service(&self, id: &ServiceId) -> Result<Option<Service>> {
        self.get("services", "SELECT rec FROM services WHERE id = $1", vec![id.to_string()])
    }

    fn services(&self) -> Result<Vec<Service>> {
        self.all("services", "SELECT rec FROM services ORDER BY id", vec![])
    }

    fn insert_release(&self, release: &Release, inline: &[InlineBlob]) -> Result<Event> {
        self.write_release(release, inline)
    }

    fn insert_release_with_rollout(
        &self,
        release: &Release,
        rollout: &Rollout,
        inline: &[InlineBlob],
    ) -> Result<(Event, Event)> {
        self.write_release_with_rollout(release, rollout, inline)
    }

    fn blob_referenced(&self, digest: &efa_domain::bundle::Digest) -> Result<bool> {
        self.read_blob_referenced(digest)
    }

    fn inline_blob(&self, digest: &efa_domain::bundle::Digest) -> Result<Option<Vec<u8>>> {
        self.read_inline_blob(digest)
    }

    fn release(&self, service: &ServiceId, version: &semver::Version) -> Result<Option<Release>> {
        self.read_release(service, version)
    }

    fn releases(&self, service: &ServiceId) -> Result<Vec<Release>> {
        self.read_releases(service)
    }

    fn yank_release(&self, service: &ServiceId, version: &semver::Version, yank: Yank) -> Result<(Release, Event)> {
        self.write_yank(service, version, yank)
    }

    fn put_subscription(&self, sub: &Subscription) -> Result<Event> {
        self.write_subscription(sub)
    }

    fn remove_subscription(&self, ags: &Ags, target_key: &str) -> Result<Option<Event>> {
        self.delete_subscription(ags, target_key)
    }

    fn subscriptions_of(&self, ags: &Ags) -> Result<Vec<Subscription>> {
        self.all("subscriptions", "SELECT rec FROM subscriptions WHERE ags = $1 ORDER BY target", vec![ags.to_string()])
    }

    fn all_subscriptions(&self) -> Result<Vec<Subscription>> {
        self.all("subscriptions", "SELECT rec FROM subscriptions ORDER BY ags, target", vec![])
    }

    fn append_adoption(&self, entry: &AdoptionEntry) -> Result<(AdoptionRecord, Event)> {
        self.append_adoption_entry(entry)
    }

    fn queue_adoption(&self, entry: &AdoptionEntry) -> Result<crate::store::Queued<(AdoptionRecord, Event)>> {
        self.queue_adoption_entry(entry)
    }

    fn adoption(&self, service: &ServiceId, ags: &Ags) -> Result<Option<AdoptionRecord>> {
        self.get(
            "adoption",
            "SELECT rec FROM adoption WHERE service = $1 AND ags = $2",
            vec![service.to_string(), ags.to_string()],
        )
    }

    fn adopters(&self, service: &ServiceId) -> Result<Vec<AdoptionRecord>> {
        self.all("adoption", "SELECT rec FROM adoption WHERE service = $1 ORDER BY ags", vec![service.to_string()])
    }

    fn adoptions_of(&self, ags: &Ags) -> Result<Vec<AdoptionRecord>> {
        self.all("adoption", "SELECT rec FROM adoption WHERE ags = $1 ORDER BY service", vec![ags.to_string()])
    }

    fn adoptions_of_many(&self, agss: &[Ags]) -> Result<Vec<AdoptionRecord>> {
        let keys: Vec<String> = agss.iter().map(|a| a.to_string()).collect();
        let rows = self.run(move |pool| async move {
            sqlx::query_scalar::<_, Vec<u8>>("SELECT rec FROM adoption WHERE ags = ANY($1) ORDER BY ags, service")
                .bind(keys)
                .fetch_all(&pool)
                .await
                .map_err(storage)
        })?;
        rows.iter().map(|r| crate::store::codec::decode("adoption", r)).collect()
    }

    fn history_of(&self, ags: &Ags) -> Result<Vec<AdoptionEntry>> {
        self.all("history", "SELECT rec FROM history WHERE ags = $1 ORDER BY pos", vec![ags.to_string()])
    }

    fn bulk_load_adoptions(&self, entries: &[AdoptionEntry]) -> Result<()> {
        self.bulk_load(entries)
    }

    fn service_totals(&self, service: &ServiceId) -> Result<ServiceTotals> {
        Ok(self
            .get("totals", "SELECT rec FROM totals WHERE service = $1", vec![service.to_string()])?
            .unwrap_or_default())
    }

    fn kommunen_with_records(&self) -> Result<usize> {
        self.run(|pool| async move { count(&pool, "adoption_kommunen").await })
    }

    fn kommunen_with_records_under(&self, prefix: &str) -> Result<Vec<Ags>> {
        let like = format!("{}%", prefix.replace(['%', '_', '\\'], ""));
        self.run(move |pool| async move {
            let rows: Vec<String> =
                sqlx::query_scalar("SELECT ags FROM adoption_kommunen WHERE ags LIKE $1 ORDER BY ags")
                    .bind(like)
                    .fetch_all(&pool)
                    .await
                    .map_err(storage)?;
            rows.into_iter()
                .map(|a| {
                    a.parse()
                        .map_err(|_| Error::Corrupt { tree: "adoption_kommunen", reason: format!("bad AGS {a:?}") })
                })
                .collect()
        })
    }

    fn put_preflight(&self, record: &PreflightRecord) -> Result<()> {
        let keys = [record.service_id.to_string(), record.version.to_string(), record.ags.to_string()];
        let value = encode(record);
        self.run(move |pool| async move {
            sqlx::query("INSERT INTO preflight (service, version, ags, rec) VALUES ($1, $2, $3, $4) ON CONFLICT (service, version, ags) DO UPDATE SET rec = EXCLUDED.rec")
                .bind(&keys[0])
                .bind(&keys[1])
                .bind(&keys[2])
                .bind(value)
                .execute(&pool)
                .await
                .map_err(storage)?;
            Ok(())
        })
    }

    fn preflights(&self, service: &ServiceId, version: &semver::Version) -> Result<Vec<PreflightRecord>> {
        self.all(
            "preflight",
            "SELECT rec FROM preflight WHERE service = $1 AND version = $2 ORDER BY ags",
            vec![service.to_string(), version.to_string()],
        )
    }

    fn put_grant(&self, provider: &str, grant: &ProviderGrant) -> Result<()> {
        let (p, value) = (provider.to_string(), encode(grant));
        self.run(move |pool| async move {
            sqlx::query("INSERT INTO grants (provider, rec) VALUES ($1, $2) ON CONFLICT (provider) DO UPDATE SET rec = EXCLUDED.rec")
                .bind(p)
                .bind(value)
                .execute(&pool)
                .await
                .map_err(storage)?;
            Ok(())
        })
    }

    fn grant(&self, provider: &str) -> Result<ProviderGrant> {
        Ok(self
            .get("grants", "SELECT rec FROM grants WHERE provider = $1", vec![provider.to_string()])?
            .unwrap_or_default())
    }

    fn grants(&self) -> Result<Vec<(String, ProviderGrant)>> {
        self.run(|pool| async move {
            let rows = sqlx::query("SELECT provider, rec FROM grants ORDER BY provider")
                .fetch_all(&pool)
                .await
                .map_err(storage)?;
            rows.iter().map(|r| Ok((r.try_get("provider").map_err(storage)?, rec("grants", r)?))).collect()
        })
    }

    fn put_routing(&self, record: &RoutingRecord) -> Result<()> {
        let (s, a) = (record.service_id.to_string(), record.ags.to_string());
        let value = (!record.destinations.is_empty()).then(|| encode(record));
        self.run(move |pool| async move {
            match value {
                Some(v) => sqlx::query("INSERT INTO routing (service, ags, rec) VALUES ($1, $2, $3) ON CONFLICT (service, ags) DO UPDATE SET rec = EXCLUDED.rec")
                    .bind(&s)
                    .bind(&a)
                    .bind(v)
                    .execute(&pool)
                    .await,
                None => sqlx::query("DELETE FROM routing WHERE service = $1 AND ags = $2").bind(&s).bind(&a).execute(&pool).await,
            }
            .map_err(storage)?;
            Ok(())
        })
    }

    fn routing(&self, service: &ServiceId) -> Result<Vec<RoutingRecord>> {
        self.all("routing", "SELECT rec FROM routing WHERE service = $1 ORDER BY ags", vec![service.to_string()])
    }

    fn put_rating(&self, rating: &Rating) -> Result<Event> {
        let (s, v, a) = (rating.service_id.to_string(), rating.version.to_string(), rating.ags.to_string());
        let (value, stars) = (encode(rating), rating.stars);
        let kind = EventKind::Rated(rating.clone());
        self.mutate(rating.at_ms, move |c| {
            Box::pin(async move {
                let previous = tx_get::<Rating>(c, "ratings", "SELECT rec FROM ratings WHERE service = $1 AND version = $2 AND ags = $3 FOR UPDATE", &[&s, &v, &a])
                    .await?
                    .map(|r| r.stars);
                let mut totals = tx_get::<ServiceTotals>(c, "totals", "SELECT rec FROM totals WHERE service = $1 FOR UPDATE", &[&s])
                    .await?
                    .unwrap_or_default();
                totals.replace_rating(previous, stars);
                exec(c, "INSERT INTO totals (service, rec) VALUES ($1, $2) ON CONFLICT (service) DO UPDATE SET rec = EXCLUDED.rec", &[&s], encode(&totals)).await?;
                exec(c, "INSERT INTO ratings (service, version, ags, rec) VALUES ($1, $2, $3, $4) ON CONFLICT (service, version, ags) DO UPDATE SET rec = EXCLUDED.rec", &[&s, &v, &a], value).await?;
                Ok((kind, ()))
            })
        })
        .map(|((), event)| event)
    }

    fn ratings(&self, service: &ServiceId) -> Result<Vec<Rating>> {
        self.all(
            "ratings",
            "SELECT rec FROM ratings WHERE service = $1 ORDER BY version, ags",
            vec![service.to_string()],
        )
    }

    fn put_signing_keys(&self, land: &LandCode, keys: &SigningKeys) -> Result<Event> {
        let (l, value) = (land.to_string(), encode(keys));
        let kind = EventKind::SigningKeysSet { land: land.clone(), keys: keys.keys.clone() };
        self.mutate(keys.updated_at_ms, move |c| {
            Box::pin(async move {
                exec(c, "INSERT INTO signing_keys (land, rec) VALUES ($1, $2) ON CONFLICT (land) DO UPDATE SET rec = EXCLUDED.rec", &[&l], value).await?;
                Ok((kind, ()))
            })
        })
        .map(|((), event)| event)
    }

    fn put_key_set(
        &self,
        land: &LandCode,
        key_set: &efa_domain::model::keyset::SignedKeySet,
        keys: &SigningKeys,
    ) -> Result<Event> {
        self.write_key_set(land, key_set, keys)
    }

    fn key_sets(&self, land: &LandCode) -> Result<Vec<(u64, efa_domain::model::keyset::SignedKeySet)>> {
        self.read_key_sets(land)
    }

    fn signing_keys(&self, land: &LandCode) -> Result<SigningKeys> {
        self.read_signing_keys(land)
    }

    fn put_offer(
        &self,
        land: &LandCode,
        service: &ServiceId,
        offer: &SignedOffer,
        at_ms: i64,
        withdrawn: bool,
    ) -> Result<Event> {
        self.write_offer(land, service, offer, at_ms, withdrawn)
    }

    fn put_rollout(
        &self,
        service: &ServiceId,
        version: &semver::Version,
        land: Option<&LandCode>,
        rollout: &Rollout,
        transition: Transition,
        at_ms: i64,
    ) -> Result<Event> {
        self.write_rollout(service, version, land, rollout, transition, at_ms)
    }

    fn rollout(
        &self,
        service: &ServiceId,
        version: &semver::Version,
        land: Option<&LandCode>,
    ) -> Result<Option<Rollout>> {
        self.read_rollout(service, version, land)
    }

    fn rollouts(&self) -> Result<Vec<crate::store::StoredRollout>> {
        self.read_rollouts()
    }

    fn offers(&self, service: &ServiceId) -> Result<Vec<(LandCode, SignedOffer)>> {
        self.read_offers(service)
    }

    fn put_snapshot(&self, land: &LandCode, snapshot: &[u8], signature: &[u8]) -> Result<()> {
        let (l, value) = (land.to_string(), encode(&StoredSnapshot(snapshot.to_vec(), signature.to_vec())));
        self.run(move |pool| async move {
            sqlx::query(
                "INSERT INTO snapshots (land, rec) VALUES ($1, $2) ON CONFLICT (land) DO UPDATE SET rec = EXCLUDED.rec",
            )
            .bind(l)
            .bind(value)
            .execute(&pool)
            .await
            .map_err(storage)?;
            Ok(())
        })
    }

    fn snapshot(&self, land: &LandCode) -> Result<Option<(Vec<u8>, Vec<u8>)>> {
        let s: Option<StoredSnapshot> =
            self.get("snapshots", "SELECT rec FROM snapshots WHERE land = $1", vec![land.to_string()])?;
        Ok(s.map(|s| (s.0, s.1)))
    }

    fn events_after(&self, seq: u64, limit: usize) -> Result<Vec<Event>> {
        let (after, limit) = (i64::try_from(seq).unwrap_or(i64::MAX), i64::try_from(limit).unwrap_or(i64::MAX));
        self.run(move |pool| async move {
            let rows = sqlx::query("SELECT rec FROM events WHERE seq > $1 ORDER BY seq LIMIT $2")
                .bind(after)
                .bind(limit)
                .fetch_all(&pool)
                .await
                .map_err(storage)?;
            rows.iter().map(|row| rec("events", row)).collect()
        })
    }

    fn head_seq(&self) -> Result<u64> {
        self.run(|pool| async move {
            let last: i64 = sqlx::query_scalar("SELECT last FROM seq").fetch_one(&pool).await.map_err(storage)?;
            Ok(last as u64)
        })
    }

    fn oldest_seq(&self) -> Result<Option<u64>> {
        self.run(|pool| async move {
            let first: Option<i64> =
                sqlx::query_scalar("SELECT min(seq) FROM events").fetch_one(&pool).await.map_err(storage)?;
            Ok(first.map(|s| s as u64))
        })
    }

    fn trim_events(&self, before: u64) -> Result<usize> {
        let before = i64::try_from(before).unwrap_or(i64::MAX);
        self.run(move |pool| async move {
            let n = sqlx::query("DELETE FROM events WHERE seq < $1")
                .bind(before)
                .execute(&pool)
                .await
                .map_err(storage)?
                .rows_affected();
            Ok(n as usize)
        })
    }

    fn begin_batch(&self) {
        *self.batch_thread.lock().unwrap_or_else(|p| p.into_inner()) = Some(std::thread::current().id());
    }

    fn flush(&self) -> Result<()> {
        // Outside a batch every write was committed (and so durable) when it returned; a
        // batch commits here, all its writes at once.
        self.end_batch()
    }

    fn take_lease(&self, job: &str, holder: &str, ttl_ms: i64) -> Result<bool> {
        self.lease(job, holder, ttl_ms)
    }

    fn on_foreign_commit(&self, wake: Box<dyn Fn() + Send + Sync>) -> Result<()> {
        self.listen_for_commits(wake)
    }
}

#[cfg(test)]
mod tests;
