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

mod copy;
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
use sqlx::postgres::{PgConnection, PgPool};
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
        let kind =
            EventKind::ReleasePublished { service_id: release.service_id.clone(), version: release.version.clone() };
        let (release, inline) = (release.clone(), inline.to_vec());
        self.mutate(release.published_at_ms, move |c| {
            Box::pin(async move {
                insert_release_rows(c, &release, &inline).await?;
                Ok((kind, ()))
            })
        })
        .map(|((), event)| event)
    }

    fn insert_release_with_rollout(
        &self,
        release: &Release,
        rollout: &Rollout,
        inline: &[InlineBlob],
    ) -> Result<(Event, Event)> {
        let (s, v, value) = (release.service_id.to_string(), release.version.to_string(), encode(rollout));
        let kind = EventKind::RolloutChanged {
            service_id: release.service_id.clone(),
            version: release.version.clone(),
            transition: Transition::Started,
        };
        let (release, inline) = (release.clone(), inline.to_vec());
        // One mutation: the release's event is appended inside it, the rollout's after it.
        self.mutate(release.published_at_ms, move |c| {
            Box::pin(async move {
                insert_release_rows(c, &release, &inline).await?;
                let published = sql::append_event(
                    &mut *c,
                    release.published_at_ms,
                    EventKind::ReleasePublished {
                        service_id: release.service_id.clone(),
                        version: release.version.clone(),
                    },
                )
                .await?;
                exec(c, "INSERT INTO rollouts (service, version, land, rec) VALUES ($1, $2, '', $3)", &[&s, &v], value)
                    .await?;
                Ok((kind, published))
            })
        })
    }

    fn blob_referenced(&self, digest: &efa_domain::bundle::Digest) -> Result<bool> {
        let d = digest.0.to_vec();
        self.run(move |pool| async move {
            let found: Option<i32> = sqlx::query_scalar("SELECT 1 FROM blob_refs WHERE digest = $1 LIMIT 1")
                .bind(d)
                .fetch_optional(&pool)
                .await
                .map_err(storage)?;
            Ok(found.is_some())
        })
    }

    fn inline_blob(&self, digest: &efa_domain::bundle::Digest) -> Result<Option<Vec<u8>>> {
        let d = digest.0.to_vec();
        self.run(move |pool| async move {
            sqlx::query_scalar("SELECT data FROM inline_blobs WHERE digest = $1")
                .bind(d)
                .fetch_optional(&pool)
                .await
                .map_err(storage)
        })
    }

    fn release(&self, service: &ServiceId, version: &semver::Version) -> Result<Option<Release>> {
        self.get(
            "releases",
            "SELECT rec FROM releases WHERE service = $1 AND version = $2",
            vec![service.to_string(), version.to_string()],
        )
    }

    fn releases(&self, service: &ServiceId) -> Result<Vec<Release>> {
        let mut all: Vec<Release> =
            self.all("releases", "SELECT rec FROM releases WHERE service = $1", vec![service.to_string()])?;
        all.sort_by(|a, b| b.version.cmp(&a.version));
        Ok(all)
    }

    fn yank_release(&self, service: &ServiceId, version: &semver::Version, yank: Yank) -> Result<(Release, Event)> {
        let (s, v) = (service.to_string(), version.to_string());
        let (sid, ver) = (service.clone(), version.clone());
        let at = yank.at_ms;
        self.mutate(at, move |c| {
            Box::pin(async move {
                let Some(mut release) = tx_get::<Release>(
                    c,
                    "releases",
                    "SELECT rec FROM releases WHERE service = $1 AND version = $2 FOR UPDATE",
                    &[&s, &v],
                )
                .await?
                else {
                    return Err(Error::not_found(format!("release {sid} {ver}")));
                };
                if let Some(y) = &release.yank {
                    return Err(Error::failed_precondition(format!(
                        "release {sid} {ver} is already yanked ({})",
                        y.reason
                    )));
                }
                release.yank = Some(yank.clone());
                exec(
                    c,
                    "UPDATE releases SET rec = $3 WHERE service = $1 AND version = $2",
                    &[&s, &v],
                    encode(&release),
                )
                .await?;
                let kind = EventKind::ReleaseYanked { service_id: sid, version: ver, reason: yank.reason };
                Ok((kind, release))
            })
        })
    }

    fn put_subscription(&self, sub: &Subscription) -> Result<Event> {
        let (ags, target, value) = (sub.ags.to_string(), sub.target.key(), encode(sub));
        let kind = EventKind::Subscribed(sub.clone());
        self.mutate(sub.since_ms, move |c| {
            Box::pin(async move {
                exec(
                    c,
                    "INSERT INTO subscriptions (ags, target, rec) VALUES ($1, $2, $3) ON CONFLICT (ags, target) DO UPDATE SET rec = EXCLUDED.rec",
                    &[&ags, &target],
                    value,
                )
                .await?;
                Ok((kind, ()))
            })
        })
        .map(|((), event)| event)
    }

    fn remove_subscription(&self, ags: &Ags, target_key: &str) -> Result<Option<Event>> {
        let (a, t) = (ags.to_string(), target_key.to_string());
        let kind = EventKind::Unsubscribed { ags: ags.clone(), target: target_key.to_string() };
        // Nothing to remove means no event: the transaction is rolled back by the error.
        let removed = self.mutate(efa_domain::now_ms(), move |c| {
            Box::pin(async move {
                let n = sqlx::query("DELETE FROM subscriptions WHERE ags = $1 AND target = $2")
                    .bind(&a)
                    .bind(&t)
                    .execute(&mut *c)
                    .await
                    .map_err(storage)?
                    .rows_affected();
                if n == 0 {
                    return Err(Error::Storage(NOTHING_REMOVED.into()));
                }
                Ok((kind, ()))
            })
        });
        match removed {
            Ok(((), event)) => Ok(Some(event)),
            Err(Error::Storage(m)) if m == NOTHING_REMOVED => Ok(None),
            Err(e) => Err(e),
        }
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
        let (l, value, set) = (land.to_string(), encode(keys), encode(key_set));
        let kind = EventKind::KeySetPublished { land: land.clone(), key_set: key_set.clone() };
        self.mutate(keys.updated_at_ms, move |c| {
            Box::pin(async move {
                exec(c, "INSERT INTO signing_keys (land, rec) VALUES ($1, $2) ON CONFLICT (land) DO UPDATE SET rec = EXCLUDED.rec", &[&l], value).await?;
                // The event's seq is the one the seq row hands out next: lock the row now so no
                // other replica's event comes in between.
                sqlx::query("SELECT last FROM seq FOR UPDATE").execute(&mut *c).await.map_err(storage)?;
                exec(c, "INSERT INTO key_sets (land, seq, rec) SELECT $1, last + 1, $2 FROM seq", &[&l], set).await?;
                Ok((kind, ()))
            })
        })
        .map(|((), event)| event)
    }

    fn key_sets(&self, land: &LandCode) -> Result<Vec<(u64, efa_domain::model::keyset::SignedKeySet)>> {
        let l = land.to_string();
        let rows = self.run(move |pool| async move {
            let rows = sqlx::query("SELECT seq, rec FROM key_sets WHERE land = $1 ORDER BY seq")
                .bind(l)
                .fetch_all(&pool)
                .await
                .map_err(storage)?;
            rows.iter()
                .map(|r| {
                    Ok((r.try_get::<i64, _>(0).map_err(storage)? as u64, r.try_get::<Vec<u8>, _>(1).map_err(storage)?))
                })
                .collect::<Result<Vec<_>>>()
        })?;
        rows.into_iter().map(|(seq, rec)| Ok((seq, super::codec::decode("key_sets", &rec)?))).collect()
    }

    fn signing_keys(&self, land: &LandCode) -> Result<SigningKeys> {
        Ok(self
            .get("signing_keys", "SELECT rec FROM signing_keys WHERE land = $1", vec![land.to_string()])?
            .unwrap_or_default())
    }

    fn put_offer(
        &self,
        land: &LandCode,
        service: &ServiceId,
        offer: &SignedOffer,
        at_ms: i64,
        withdrawn: bool,
    ) -> Result<Event> {
        let (s, l, value) = (service.to_string(), land.to_string(), encode(offer));
        let kind = EventKind::Offered { service_id: service.clone(), land: land.clone(), withdrawn };
        self.mutate(at_ms, move |c| {
            Box::pin(async move {
                exec(c, "INSERT INTO offers (service, land, rec) VALUES ($1, $2, $3) ON CONFLICT (service, land) DO UPDATE SET rec = EXCLUDED.rec", &[&s, &l], value).await?;
                Ok((kind, ()))
            })
        })
        .map(|((), event)| event)
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
        let (s, v, l, value) = (
            service.to_string(),
            version.to_string(),
            land.map(|l| l.to_string()).unwrap_or_default(),
            encode(rollout),
        );
        let kind = EventKind::rollout_moved(service, version, land, transition);
        self.mutate(at_ms, move |c| {
            Box::pin(async move {
                exec(c, "INSERT INTO rollouts (service, version, land, rec) VALUES ($1, $2, $3, $4) ON CONFLICT (service, version, land) DO UPDATE SET rec = EXCLUDED.rec", &[&s, &v, &l], value).await?;
                Ok((kind, ()))
            })
        })
        .map(|((), event)| event)
    }

    fn rollout(
        &self,
        service: &ServiceId,
        version: &semver::Version,
        land: Option<&LandCode>,
    ) -> Result<Option<Rollout>> {
        self.get(
            "rollouts",
            "SELECT rec FROM rollouts WHERE service = $1 AND version = $2 AND land = $3",
            vec![service.to_string(), version.to_string(), land.map(|l| l.to_string()).unwrap_or_default()],
        )
    }

    fn rollouts(&self) -> Result<Vec<crate::store::StoredRollout>> {
        let rows = self.run(|pool| async move {
            sqlx::query_as::<_, (String, String, String, Vec<u8>)>(
                "SELECT service, version, land, rec FROM rollouts ORDER BY service, version, land",
            )
            .fetch_all(&pool)
            .await
            .map_err(storage)
        })?;
        rows.into_iter()
            .map(|(s, v, l, rec)| {
                let bad = || Error::Storage(format!("rollout row names no release: {s} {v} {l}"));
                Ok((
                    s.parse().map_err(|_| bad())?,
                    v.parse().map_err(|_| bad())?,
                    if l.is_empty() { None } else { Some(l.parse().map_err(|_| bad())?) },
                    crate::store::codec::decode("rollouts", &rec)?,
                ))
            })
            .collect()
    }

    fn offers(&self, service: &ServiceId) -> Result<Vec<(LandCode, SignedOffer)>> {
        let s = service.to_string();
        self.run(move |pool| async move {
            let rows = sqlx::query("SELECT land, rec FROM offers WHERE service = $1 ORDER BY land")
                .bind(s)
                .fetch_all(&pool)
                .await
                .map_err(storage)?;
            rows.iter()
                .map(|row| {
                    let land: String = row.try_get("land").map_err(storage)?;
                    let land = land
                        .parse()
                        .map_err(|_| Error::Corrupt { tree: "offers", reason: format!("bad Land {land:?}") })?;
                    Ok((land, rec("offers", row)?))
                })
                .collect()
        })
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

/// Marks a removal that found nothing, to roll its transaction back without an event.
const NOTHING_REMOVED: &str = "nothing to remove";

/// The rows of a new release: the release (refused if the version exists) and its blob index.
async fn insert_release_rows(c: &mut PgConnection, release: &Release, inline: &[InlineBlob]) -> Result<()> {
    let (service, version) = (release.service_id.to_string(), release.version.to_string());
    let digests: Vec<Vec<u8>> =
        efa_domain::bundle::Manifest::blob_digests(&release.manifest).into_iter().map(|d| d.0.to_vec()).collect();
    let inserted =
        sqlx::query("INSERT INTO releases (service, version, rec) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING")
            .bind(&service)
            .bind(&version)
            .bind(encode(release))
            .execute(&mut *c)
            .await
            .map_err(storage)?
            .rows_affected();
    if inserted == 0 {
        return Err(Error::already_exists(format!(
            "release {service} {version} already exists; published versions are immutable, publish a new version"
        )));
    }
    sqlx::query(
        "INSERT INTO blob_refs (digest, service, version) SELECT d, $2, $3 FROM UNNEST($1::bytea[]) AS d ON CONFLICT DO NOTHING",
    )
    .bind(&digests)
    .bind(&service)
    .bind(&version)
    .execute(&mut *c)
    .await
    .map_err(storage)?;
    if !inline.is_empty() {
        let digests: Vec<&[u8]> = inline.iter().map(|b| b.digest.0.as_slice()).collect();
        let data: Vec<&[u8]> = inline.iter().map(|b| b.bytes.as_slice()).collect();
        sqlx::query(
            "INSERT INTO inline_blobs (digest, data) SELECT * FROM UNNEST($1::bytea[], $2::bytea[]) ON CONFLICT DO NOTHING",
        )
        .bind(digests)
        .bind(data)
        .execute(&mut *c)
        .await
        .map_err(storage)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
