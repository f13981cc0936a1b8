//! The PostgreSQL store's own side: connecting and migrating, and the bridge from the
//! synchronous `Store` trait to async sqlx on the store's runtime.

use super::ledger::{apply_queued, QueuedReport};
use super::sql::{append_event, redact, storage};
use super::{schema, PostgresStore, NOTIFY_CHANNEL, POOL_SIZE};
use crate::error::{Error, Result};
use crate::store::codec::{decode, Record};
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
        let store = PostgresStore { pool, rt: Some(rt), batch: Default::default(), batch_thread: Default::default() };
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

    /// One record by key; within the commit thread's batch it sees the batch's writes.
    pub(super) fn get<T: Record + Send + 'static>(
        &self,
        table: &'static str,
        sql: &'static str,
        keys: Vec<String>,
    ) -> Result<Option<T>> {
        self.rows(sql, keys)?.first().map(|b| decode(table, b)).transpose()
    }

    /// Every record a query returns; within the commit thread's batch it sees the batch's writes.
    pub(super) fn all<T: Record + Send + 'static>(
        &self,
        table: &'static str,
        sql: &'static str,
        keys: Vec<String>,
    ) -> Result<Vec<T>> {
        self.rows(sql, keys)?.iter().map(|b| decode(table, b)).collect()
    }

    /// The `rec` column of every row of `sql`, read in the batch's transaction when this
    /// call belongs to it.
    fn rows(&self, sql: &'static str, keys: Vec<String>) -> Result<Vec<Vec<u8>>> {
        let batch = self.in_batch().then(|| self.batch.clone());
        self.run(move |pool| async move {
            let mut q = sqlx::query_scalar::<_, Vec<u8>>(sql);
            for k in keys {
                q = q.bind(k);
            }
            let mut guard = match &batch {
                Some(b) => Some(b.lock().await),
                None => None,
            };
            if let Some(b) = guard.as_mut() {
                b.settle(&pool).await?;
            }
            match guard.as_mut().and_then(|b| b.tx.as_mut()) {
                Some(tx) => q.fetch_all(&mut **tx).await,
                None => q.fetch_all(&pool).await,
            }
            .map_err(storage)
        })
    }

    /// Whether this call belongs to the commit thread's open batch.
    pub(super) fn in_batch(&self) -> bool {
        *self.batch_thread.lock().unwrap_or_else(|p| p.into_inner()) == Some(std::thread::current().id())
    }

    /// Runs `f` with the event it names appended, in a transaction of its own, or, within
    /// the commit thread's batch, in the batch's transaction behind a savepoint (a refused
    /// write is rolled back alone; the batch commits in [`end_batch`](Self::end_batch)).
    pub(super) fn mutate<T, F>(&self, at_ms: i64, f: F) -> Result<(T, Event)>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(
                &'c mut PgConnection,
            ) -> std::pin::Pin<Box<dyn Future<Output = Result<(EventKind, T)>> + Send + 'c>>
            + Send
            + 'static,
    {
        if !self.in_batch() {
            return self.run(move |pool| async move {
                let mut tx = pool.begin().await.map_err(storage)?;
                let out = write(&mut tx, at_ms, f).await?;
                tx.commit().await.map_err(storage)?;
                Ok(out)
            });
        }
        let batch = self.batch.clone();
        self.run(move |pool| async move {
            let mut b = batch.lock().await;
            b.settle(&pool).await?;
            if b.tx.is_none() {
                b.tx = Some(pool.begin().await.map_err(storage)?);
            }
            let tx = b.tx.as_mut().expect("begun above");
            savepoint(tx, "SAVEPOINT efa_write").await?;
            match write(tx, at_ms, f).await {
                Ok(out) => {
                    savepoint(tx, "RELEASE SAVEPOINT efa_write").await?;
                    Ok(out)
                }
                Err(e) => {
                    if let Err(broken) = savepoint(tx, "ROLLBACK TO SAVEPOINT efa_write").await {
                        // The batch cannot go on: its other writes must not be acknowledged.
                        b.failed = Some(broken.to_string());
                    }
                    Err(e)
                }
            }
        })
    }

    /// Applies the batch's queued reports now (see `ledger.rs`).
    pub(super) fn settle_batch(&self) -> Result<()> {
        let batch = self.batch.clone();
        self.run(move |pool| async move { batch.lock().await.settle(&pool).await })
    }

    /// Commits the commit thread's batch (nothing outside one); an error reaches every
    /// write of the batch, none of which is then acknowledged.
    pub(super) fn end_batch(&self) -> Result<()> {
        if !self.in_batch() {
            return Ok(());
        }
        *self.batch_thread.lock().unwrap_or_else(|p| p.into_inner()) = None;
        let batch = self.batch.clone();
        self.run(move |pool| async move {
            let mut b = batch.lock().await;
            // The batch's reports go in with its commit.
            let _ = b.settle(&pool).await;
            let (tx, failed) = (b.tx.take(), b.failed.take());
            match (tx, failed) {
                (None, None) => Ok(()),
                (Some(tx), None) => tx.commit().await.map_err(storage),
                (tx, Some(why)) => {
                    if let Some(tx) = tx {
                        let _ = tx.rollback().await;
                    }
                    Err(Error::Unavailable(format!("the batch was rolled back: {why}")))
                }
            }
        })
    }
}

/// A boxed future borrowing a connection for `'a` (boxing proves `Send` for every
/// lifetime, which the store's runtime needs).
pub(super) type BoxFuture<'a, T> = std::pin::Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The commit thread's open batch.
#[derive(Default)]
pub(super) struct Batch {
    pub(super) tx: Option<sqlx::Transaction<'static, sqlx::Postgres>>,
    /// Why the batch can no longer commit, if it cannot.
    pub(super) failed: Option<String>,
    /// Adoption reports not yet applied (see `ledger.rs`).
    pub(super) queued: Vec<QueuedReport>,
}

impl Batch {
    /// Queues a report, unless the batch can no longer commit.
    pub(super) fn enqueue(&mut self, report: QueuedReport) -> Result<()> {
        if let Some(why) = &self.failed {
            return Err(Error::Unavailable(format!("the batch's transaction failed: {why}")));
        }
        self.queued.push(report);
        Ok(())
    }

    /// Applies queued reports in the transaction, so what follows sees them (and takes the
    /// seqs after theirs). A failure fails the batch.
    async fn settle(&mut self, pool: &PgPool) -> Result<()> {
        if let Some(why) = &self.failed {
            return Err(Error::Unavailable(format!("the batch's transaction failed: {why}")));
        }
        if self.queued.is_empty() {
            return Ok(());
        }
        let queued = std::mem::take(&mut self.queued);
        if self.tx.is_none() {
            match pool.begin().await {
                Ok(tx) => self.tx = Some(tx),
                Err(e) => {
                    self.failed = Some(storage(e).to_string());
                    return Err(Error::Unavailable(format!("the batch's transaction failed: {:?}", self.failed)));
                }
            }
        }
        let tx = self.tx.as_mut().expect("begun above");
        if let Err(e) = apply_queued(tx, queued).await {
            self.failed = Some(e.to_string());
            return Err(e);
        }
        Ok(())
    }
}

fn savepoint<'c>(conn: &'c mut PgConnection, sql: &'static str) -> BoxFuture<'c, Result<()>> {
    Box::pin(async move {
        sqlx::query(sql).execute(conn).await.map_err(storage)?;
        Ok(())
    })
}

/// `f` and its event (with the NOTIFY streams need) on `conn`.
fn write<'c, T, F>(conn: &'c mut PgConnection, at_ms: i64, f: F) -> BoxFuture<'c, Result<(T, Event)>>
where
    T: Send + 'static,
    F: for<'x> FnOnce(&'x mut PgConnection) -> BoxFuture<'x, Result<(EventKind, T)>> + Send + 'static,
{
    Box::pin(async move {
        let (kind, out) = f(&mut *conn).await?;
        let wakes = matches!(
            kind,
            EventKind::ReleasePublished { .. }
                | EventKind::ReleaseYanked { .. }
                | EventKind::Offered { .. }
                | EventKind::Subscribed(_)
                | EventKind::Unsubscribed { .. }
                | EventKind::RolloutChanged { .. }
                | EventKind::LandRolloutChanged { .. }
        );
        let event = append_event(&mut *conn, at_ms, kind).await?;
        if wakes {
            // Delivered at commit: other replicas' streams read the log again. Adoption
            // reports wake nobody (streams do not carry them, and they are most writes).
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(NOTIFY_CHANNEL)
                .bind(event.seq.to_string())
                .execute(&mut *conn)
                .await
                .map_err(storage)?;
        }
        Ok((out, event))
    })
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
