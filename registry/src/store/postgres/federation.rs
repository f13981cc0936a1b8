//! Key sets, offers and rollouts: what Länder publish about their services, each write with
//! its event. The `Store` impl in `mod.rs` calls these.

use super::sql::{exec, rec, storage};
use super::PostgresStore;
use crate::error::{Error, Result};
use crate::store::codec::encode;
use efa_domain::model::catalog::SigningKeys;
use efa_domain::model::event::{Event, EventKind};
use efa_domain::model::ids::{LandCode, ServiceId};
use efa_domain::model::offer::SignedOffer;
use efa_domain::model::rollout::{Rollout, Transition};
use sqlx::Row;

impl PostgresStore {
    pub(super) fn write_key_set(
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

    pub(super) fn read_key_sets(&self, land: &LandCode) -> Result<Vec<(u64, efa_domain::model::keyset::SignedKeySet)>> {
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
        rows.into_iter().map(|(seq, rec)| Ok((seq, crate::store::codec::decode("key_sets", &rec)?))).collect()
    }

    pub(super) fn read_signing_keys(&self, land: &LandCode) -> Result<SigningKeys> {
        Ok(self
            .get("signing_keys", "SELECT rec FROM signing_keys WHERE land = $1", vec![land.to_string()])?
            .unwrap_or_default())
    }

    pub(super) fn write_offer(
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

    pub(super) fn write_rollout(
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

    pub(super) fn read_rollout(
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

    pub(super) fn read_rollouts(&self) -> Result<Vec<crate::store::StoredRollout>> {
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

    pub(super) fn read_offers(&self, service: &ServiceId) -> Result<Vec<(LandCode, SignedOffer)>> {
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
}
