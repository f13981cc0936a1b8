//! The PostgreSQL schema and its migrations: plain SQL, embedded, applied in order inside
//! one transaction each under an advisory lock, so replicas starting together apply each
//! step once. `schema_version` holds the last step applied; a database of a newer version
//! is refused, naming both.

use super::storage;
use crate::error::{Error, Result};
use sqlx::{PgConnection, PgPool};

type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// The steps, in order; step `i` brings the schema to version `i + 1`. Never edit a step
/// that has shipped: add one.
const STEPS: &[&str] = &[
    // 1: every record kind of the store, keyed as its queries need.
    r#"
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    -- One row: the last event seq. Updating it inside the event's transaction holds its row
    -- lock until commit, so seqs are gapless and commit in order on every replica.
    CREATE TABLE seq (one BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (one), last BIGINT NOT NULL);
    INSERT INTO seq (one, last) VALUES (TRUE, 0);
    CREATE TABLE events (seq BIGINT PRIMARY KEY, rec BYTEA NOT NULL);
    CREATE TABLE laender (code TEXT PRIMARY KEY, rec BYTEA NOT NULL);
    CREATE TABLE kreise (code TEXT PRIMARY KEY, rec BYTEA NOT NULL);
    CREATE TABLE kommunen (ags TEXT PRIMARY KEY, rec BYTEA NOT NULL);
    CREATE TABLE ozg (id TEXT PRIMARY KEY, rec BYTEA NOT NULL);
    CREATE TABLE leika (key TEXT PRIMARY KEY, rec BYTEA NOT NULL);
    CREATE TABLE services (id TEXT PRIMARY KEY, rec BYTEA NOT NULL);
    CREATE TABLE releases (service TEXT NOT NULL, version TEXT NOT NULL, rec BYTEA NOT NULL,
                           PRIMARY KEY (service, version));
    CREATE TABLE blob_refs (digest BYTEA NOT NULL, service TEXT NOT NULL, version TEXT NOT NULL,
                            PRIMARY KEY (digest, service, version));
    CREATE TABLE subscriptions (ags TEXT NOT NULL, target TEXT NOT NULL, rec BYTEA NOT NULL,
                                PRIMARY KEY (ags, target));
    CREATE TABLE adoption (service TEXT NOT NULL, ags TEXT NOT NULL, rec BYTEA NOT NULL,
                           PRIMARY KEY (service, ags));
    CREATE INDEX adoption_by_kommune ON adoption (ags);
    -- Live entries count up from 1; bulk-loaded (older) ones from -2^62, so they sort first.
    CREATE TABLE history (pos BIGSERIAL PRIMARY KEY, ags TEXT NOT NULL, rec BYTEA NOT NULL);
    CREATE SEQUENCE history_bulk;
    CREATE INDEX history_by_kommune ON history (ags, pos);
    CREATE TABLE adoption_kommunen (ags TEXT PRIMARY KEY);
    CREATE TABLE totals (service TEXT PRIMARY KEY, rec BYTEA NOT NULL);
    CREATE TABLE ratings (service TEXT NOT NULL, version TEXT NOT NULL, ags TEXT NOT NULL, rec BYTEA NOT NULL,
                          PRIMARY KEY (service, version, ags));
    CREATE TABLE preflight (service TEXT NOT NULL, version TEXT NOT NULL, ags TEXT NOT NULL, rec BYTEA NOT NULL,
                            PRIMARY KEY (service, version, ags));
    CREATE TABLE routing (service TEXT NOT NULL, ags TEXT NOT NULL, rec BYTEA NOT NULL,
                          PRIMARY KEY (service, ags));
    CREATE TABLE grants (provider TEXT PRIMARY KEY, rec BYTEA NOT NULL);
    CREATE TABLE signing_keys (land TEXT PRIMARY KEY, rec BYTEA NOT NULL);
    CREATE TABLE offers (service TEXT NOT NULL, land TEXT NOT NULL, rec BYTEA NOT NULL,
                         PRIMARY KEY (service, land));
    CREATE TABLE snapshots (land TEXT PRIMARY KEY, rec BYTEA NOT NULL);
    -- Jobs that run on one replica at a time, and who runs each until when.
    CREATE TABLE leases (job TEXT PRIMARY KEY, holder TEXT NOT NULL, until_ms BIGINT NOT NULL);
    "#,
    // 2: the records of one service from one index range (index-only scans) instead of a
    // heap page per Kommune: "who adopted service X" at 6.2M records took 57 ms (p50), cold
    // 244 ms, as each of its 10,773 rows sat on a page of its own.
    r#"
    CREATE UNIQUE INDEX adoption_covering ON adoption (service, ags) INCLUDE (rec);
    ALTER TABLE adoption DROP CONSTRAINT adoption_pkey,
        ADD CONSTRAINT adoption_pkey PRIMARY KEY USING INDEX adoption_covering;
    "#,
    // 3: rollout rings, one plan and state per release.
    r#"
    CREATE TABLE rollouts (service TEXT NOT NULL, version TEXT NOT NULL, rec BYTEA NOT NULL,
                           PRIMARY KEY (service, version));
    "#,
    // 4: an offering Land's own rollout of a release for its Kommunen, beside the building
    // Land's ('' as land).
    r#"
    ALTER TABLE rollouts ADD COLUMN land TEXT NOT NULL DEFAULT '';
    ALTER TABLE rollouts DROP CONSTRAINT rollouts_pkey, ADD PRIMARY KEY (service, version, land);
    "#,
    // 5: the transparency log: leaves, the tree's stored hashes, signed checkpoints, and the
    // free text kept beside leaves (erasable).
    r#"
    CREATE TABLE log_leaves (idx BIGINT PRIMARY KEY, leaf BYTEA NOT NULL);
    CREATE TABLE log_hashes (idx BIGINT PRIMARY KEY, hash BYTEA NOT NULL);
    CREATE TABLE log_checkpoints (size BIGINT PRIMARY KEY, note BYTEA NOT NULL);
    CREATE TABLE log_beside (idx BIGINT PRIMARY KEY, rec BYTEA NOT NULL);
    CREATE TABLE log_releases (release TEXT PRIMARY KEY, idx BIGINT NOT NULL);
    CREATE TABLE key_sets (land TEXT NOT NULL, seq BIGINT NOT NULL, rec BYTEA NOT NULL, PRIMARY KEY (land, seq));
    "#,
    // 6: small files of releases, committed with the release instead of to the blob store.
    r#"
    CREATE TABLE inline_blobs (digest BYTEA PRIMARY KEY, data BYTEA NOT NULL);
    "#,
];

/// Any 64-bit key of our own, so replicas that migrate at once take turns.
const MIGRATION_LOCK: i64 = 0x0efa_5c4e_3a00_0001;

/// Brings the schema to the newest version. (Boxed: a plain `async fn` over a borrowed
/// connection does not prove `Send` for every lifetime, which the store's runtime needs.)
pub(super) fn migrate(pool: PgPool) -> BoxFuture<'static, Result<()>> {
    Box::pin(async move {
        let mut conn = pool.acquire().await.map_err(storage)?;
        let conn: &mut PgConnection = &mut conn;
        lock(conn, "SELECT pg_advisory_lock($1)").await?;
        let result = apply(conn).await;
        result.and(lock(conn, "SELECT pg_advisory_unlock($1)").await)
    })
}

fn lock<'c>(conn: &'c mut PgConnection, sql: &'static str) -> BoxFuture<'c, Result<()>> {
    Box::pin(async move {
        sqlx::query(sql).bind(MIGRATION_LOCK).execute(conn).await.map_err(storage)?;
        Ok(())
    })
}

fn apply<'c>(conn: &'c mut PgConnection) -> BoxFuture<'c, Result<()>> {
    Box::pin(async move {
        sqlx::query("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            .execute(&mut *conn)
            .await
            .map_err(storage)?;
        let found: Option<i32> = sqlx::query_scalar("SELECT max(version) FROM schema_version")
            .fetch_one(&mut *conn)
            .await
            .map_err(storage)?;
        let found = found.unwrap_or(0) as usize;
        if found > STEPS.len() {
            return Err(Error::Storage(format!(
                "the database has schema version {found}, newer than this EfA Hub knows ({}); upgrade EfA Hub",
                STEPS.len()
            )));
        }
        // Each step and its version row commit together.
        let script: String = STEPS
            .iter()
            .enumerate()
            .skip(found)
            .map(|(i, step)| {
                format!("BEGIN; {step}; INSERT INTO schema_version (version) VALUES ({}); COMMIT;\n", i + 1)
            })
            .collect();
        if !script.is_empty() {
            sqlx::Executor::execute(&mut *conn, script.as_str()).await.map_err(storage)?;
            tracing::info!(from = found, to = STEPS.len(), "PostgreSQL schema migrated");
        }
        Ok(())
    })
}
