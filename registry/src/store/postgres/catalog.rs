//! Releases and subscriptions: what the Länder publish and which Kommunen follow it, each
//! write with its event. The `Store` impl in `mod.rs` calls these.

use super::sql::{self, exec, storage, tx_get};
use super::PostgresStore;
use crate::error::{Error, Result};
use crate::store::codec::encode;
use crate::store::InlineBlob;
use efa_domain::model::event::{Event, EventKind};
use efa_domain::model::ids::{Ags, ServiceId};
use efa_domain::model::release::{Release, Yank};
use efa_domain::model::rollout::{Rollout, Transition};
use efa_domain::model::subscription::Subscription;
use sqlx::postgres::PgConnection;

impl PostgresStore {
    pub(super) fn write_release(&self, release: &Release, inline: &[InlineBlob]) -> Result<Event> {
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

    pub(super) fn write_release_with_rollout(
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

    pub(super) fn read_blob_referenced(&self, digest: &efa_domain::bundle::Digest) -> Result<bool> {
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

    pub(super) fn read_inline_blob(&self, digest: &efa_domain::bundle::Digest) -> Result<Option<Vec<u8>>> {
        let d = digest.0.to_vec();
        self.run(move |pool| async move {
            sqlx::query_scalar("SELECT data FROM inline_blobs WHERE digest = $1")
                .bind(d)
                .fetch_optional(&pool)
                .await
                .map_err(storage)
        })
    }

    pub(super) fn read_release(&self, service: &ServiceId, version: &semver::Version) -> Result<Option<Release>> {
        self.get(
            "releases",
            "SELECT rec FROM releases WHERE service = $1 AND version = $2",
            vec![service.to_string(), version.to_string()],
        )
    }

    pub(super) fn read_releases(&self, service: &ServiceId) -> Result<Vec<Release>> {
        let mut all: Vec<Release> =
            self.all("releases", "SELECT rec FROM releases WHERE service = $1", vec![service.to_string()])?;
        all.sort_by(|a, b| b.version.cmp(&a.version));
        Ok(all)
    }

    pub(super) fn write_yank(
        &self,
        service: &ServiceId,
        version: &semver::Version,
        yank: Yank,
    ) -> Result<(Release, Event)> {
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

    pub(super) fn write_subscription(&self, sub: &Subscription) -> Result<Event> {
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

    pub(super) fn delete_subscription(&self, ags: &Ags, target_key: &str) -> Result<Option<Event>> {
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
