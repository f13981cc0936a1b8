//! SQL helpers of the PostgreSQL store: errors, record columns, the event append, and
//! upserts and lookups inside transactions.

use super::BULK_ROWS;
use crate::error::{Error, Result};
use crate::store::codec::{decode, encode, Record};
use efa_domain::model::event::{Event, EventKind};
use sqlx::postgres::PgPool;
use sqlx::{PgConnection, Row};

pub(super) fn storage(e: sqlx::Error) -> Error {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Tls(_) => Error::Unavailable(format!("PostgreSQL is unreachable: {e}")),
        sqlx::Error::Database(db) if db.code().is_some_and(|c| c.starts_with("57P") || c.starts_with("08")) => {
            // admin shutdown, crash shutdown, cannot connect now; connection exceptions
            Error::Unavailable(format!("PostgreSQL is not available: {}", db.message()))
        }
        other => Error::Storage(format!("PostgreSQL: {other}")),
    }
}

pub(super) fn rec<T: Record>(table: &'static str, row: &sqlx::postgres::PgRow) -> Result<T> {
    let bytes: Vec<u8> = row.try_get("rec").map_err(storage)?;
    decode(table, &bytes)
}

/// Takes the next seq from the counter row (held until commit) and stores the event.
pub(super) async fn append_event(conn: &mut PgConnection, at_ms: i64, kind: EventKind) -> Result<Event> {
    let seq: i64 = sqlx::query_scalar("UPDATE seq SET last = last + 1 RETURNING last")
        .fetch_one(&mut *conn)
        .await
        .map_err(storage)?;
    let event = Event { seq: seq as u64, at_ms, kind };
    sqlx::query("INSERT INTO events (seq, rec) VALUES ($1, $2)")
        .bind(seq)
        .bind(encode(&event))
        .execute(&mut *conn)
        .await
        .map_err(storage)?;
    Ok(event)
}

/// Removes a password from a message that might quote a URL.
pub(super) fn redact(message: &str) -> String {
    match (message.find("://"), message.find('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://…@{}", &message[..s], &message[at + 1..]),
        _ => message.to_string(),
    }
}

pub(super) async fn upsert_all<T: Record>(
    pool: &PgPool,
    table: &'static str,
    key: &'static str,
    items: Vec<(String, T)>,
) -> Result<()> {
    let sql = format!("INSERT INTO {table} ({key}, rec) SELECT * FROM UNNEST($1::text[], $2::bytea[]) ON CONFLICT ({key}) DO UPDATE SET rec = EXCLUDED.rec");
    for chunk in items.chunks(BULK_ROWS) {
        let keys: Vec<&str> = chunk.iter().map(|(k, _)| k.as_str()).collect();
        let recs: Vec<Vec<u8>> = chunk.iter().map(|(_, v)| encode(v)).collect();
        sqlx::query(&sql).bind(&keys).bind(&recs).execute(pool).await.map_err(storage)?;
    }
    Ok(())
}

pub(super) async fn count(pool: &PgPool, table: &str) -> Result<usize> {
    let n: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {table}")).fetch_one(pool).await.map_err(storage)?;
    Ok(n as usize)
}

pub(super) async fn tx_get<T: Record>(
    conn: &mut PgConnection,
    table: &'static str,
    sql: &str,
    keys: &[&str],
) -> Result<Option<T>> {
    let mut q = sqlx::query(sql);
    for k in keys {
        q = q.bind(*k);
    }
    match q.fetch_optional(&mut *conn).await.map_err(storage)? {
        Some(row) => Ok(Some(rec(table, &row)?)),
        None => Ok(None),
    }
}

pub(super) async fn exec(conn: &mut PgConnection, sql: &str, keys: &[&str], value: Vec<u8>) -> Result<()> {
    let mut q = sqlx::query(sql);
    for k in keys {
        q = q.bind(*k);
    }
    q.bind(value).execute(&mut *conn).await.map_err(storage)?;
    Ok(())
}
