//! The PostgreSQL store's own side: connecting and migrating, and the bridge from the
//! synchronous `Store` trait to async sqlx on the store's runtime.

use super::sql::{append_event, rec, redact, storage};
use super::{schema, PostgresStore, NOTIFY_CHANNEL, POOL_SIZE};
use crate::error::{Error, Result};
use crate::store::codec::Record;
use efa_domain::model::event::{Event, EventKind};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::PgConnection;
use std::future::Future;
use std::str::FromStr;
use std::time::Duration;

impl PostgresStore {
    /// Connects to `url` (`postgres://user@host:port/db`; password and TLS options as
    /// libpq takes them) and brings the schema up to date.
    pub fn open(url: &str) -> Result<Self> {
        let options = PgConnectOptions::from_str(url)
            .map_err(|e| Error::Storage(format!("not a PostgreSQL URL: {}", redact(&e.to_string()))))?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("efa-postgres")
            .enable_all()
            .build()
            .map_err(|e| Error::Storage(format!("cannot start the PostgreSQL runtime: {e}")))?;
        let pool = rt.block_on(async {
            PgPoolOptions::new()
                .max_connections(POOL_SIZE)
                .acquire_timeout(Duration::from_secs(10))
                .connect_with(options)
                .await
        });
        let pool = match pool {
            Ok(p) => p,
            Err(e) => {
                rt.shutdown_background();
                return Err(storage(e));
            }
        };
        let store = PostgresStore { pool, rt: Some(rt) };
        store.run(schema::migrate)?;
        Ok(store)
    }

    /// Runs `f` on the store's runtime and waits for it.
    pub(super) fn run<T, F, Fut>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(PgPool) -> Fut,
        Fut: Future<Output = Result<T>> + Send + 'static,
    {
        let rt = self.rt.as_ref().ok_or_else(|| Error::Storage("the PostgreSQL store is closed".into()))?;
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let fut = f(self.pool.clone());
        rt.spawn(async move {
            let _ = tx.send(fut.await);
        });
        let wait = || rx.recv().unwrap_or_else(|_| Err(Error::Storage("a PostgreSQL task ended early".into())));
        match tokio::runtime::Handle::try_current() {
            Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(wait)
            }
            _ => wait(),
        }
    }

    pub(super) fn get<T: Record + Send + 'static>(
        &self,
        table: &'static str,
        sql: &'static str,
        keys: Vec<String>,
    ) -> Result<Option<T>> {
        self.run(move |pool| async move {
            let mut q = sqlx::query(sql);
            for k in keys {
                q = q.bind(k);
            }
            match q.fetch_optional(&pool).await.map_err(storage)? {
                Some(row) => Ok(Some(rec(table, &row)?)),
                None => Ok(None),
            }
        })
    }

    pub(super) fn all<T: Record + Send + 'static>(
        &self,
        table: &'static str,
        sql: &'static str,
        keys: Vec<String>,
    ) -> Result<Vec<T>> {
        self.run(move |pool| async move {
            let mut q = sqlx::query(sql);
            for k in keys {
                q = q.bind(k);
            }
            q.fetch_all(&pool).await.map_err(storage)?.iter().map(|row| rec(table, row)).collect()
        })
    }

    /// Runs `f` in one transaction with the event it names appended; commits only if `f`
    /// succeeds, and returns what `f` returned with the event.
    pub(super) fn mutate<T, F>(&self, at_ms: i64, f: F) -> Result<(T, Event)>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(
                &'c mut PgConnection,
            ) -> std::pin::Pin<Box<dyn Future<Output = Result<(EventKind, T)>> + Send + 'c>>
            + Send
            + 'static,
    {
        self.run(move |pool| async move {
            let mut tx = pool.begin().await.map_err(storage)?;
            let (kind, out) = f(&mut tx).await?;
            let wakes = matches!(
                kind,
                EventKind::ReleasePublished { .. }
                    | EventKind::ReleaseYanked { .. }
                    | EventKind::Offered { .. }
                    | EventKind::Subscribed(_)
                    | EventKind::Unsubscribed { .. }
            );
            let event = append_event(&mut tx, at_ms, kind).await?;
            if wakes {
                // Delivered at commit: other replicas' streams read the log again. Adoption
                // reports wake nobody (streams do not carry them, and they are most writes).
                sqlx::query("SELECT pg_notify($1, $2)")
                    .bind(NOTIFY_CHANNEL)
                    .bind(event.seq.to_string())
                    .execute(&mut *tx)
                    .await
                    .map_err(storage)?;
            }
            tx.commit().await.map_err(storage)?;
            Ok((out, event))
        })
    }
}

impl PostgresStore {
    /// See [`Store::take_lease`](crate::store::Store::take_lease).
    pub(super) fn lease(&self, job: &str, holder: &str, ttl_ms: i64) -> Result<bool> {
        let (job, holder) = (job.to_string(), holder.to_string());
        let now = efa_domain::now_ms();
        self.run(move |pool| async move {
            let held: Option<String> = sqlx::query_scalar(
                "INSERT INTO leases (job, holder, until_ms) VALUES ($1, $2, $3) \
                 ON CONFLICT (job) DO UPDATE SET holder = EXCLUDED.holder, until_ms = EXCLUDED.until_ms \
                 WHERE leases.until_ms < $4 OR leases.holder = EXCLUDED.holder RETURNING holder",
            )
            .bind(job)
            .bind(holder)
            .bind(now.saturating_add(ttl_ms))
            .bind(now)
            .fetch_optional(&pool)
            .await
            .map_err(storage)?;
            Ok(held.is_some())
        })
    }

    /// See [`Store::on_foreign_commit`](crate::store::Store::on_foreign_commit).
    pub(super) fn listen_for_commits(&self, wake: Box<dyn Fn() + Send + Sync>) -> Result<()> {
        let rt = self.rt.as_ref().ok_or_else(|| Error::Storage("the PostgreSQL store is closed".into()))?;
        let pool = self.pool.clone();
        rt.spawn(async move {
            // NOTIFY has no replay: after every (re)connect the streams read the log again.
            loop {
                match sqlx::postgres::PgListener::connect_with(&pool).await {
                    Ok(mut listener) => {
                        if listener.listen(NOTIFY_CHANNEL).await.is_ok() {
                            wake();
                            while listener.recv().await.is_ok() {
                                wake();
                            }
                        }
                        tracing::warn!("lost the PostgreSQL notification connection; reconnecting");
                    }
                    Err(e) => {
                        tracing::warn!(error = %storage(e), "cannot listen for PostgreSQL notifications; retrying")
                    }
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
        Ok(())
    }
}
