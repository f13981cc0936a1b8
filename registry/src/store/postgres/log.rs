//! The transparency log on PostgreSQL: four tables keyed by BIGINT. An append is one
//! transaction of its own (not the commit thread's batch: it writes no event), under an
//! advisory lock, checked against the log's size, with each table written in one
//! statement from arrays.

use super::sql::storage;
use super::PostgresStore;
use crate::error::{Error, Result};
use crate::store::codec::{decode, encode};
use crate::store::log::{Beside, LogHash, LogStore};
use sqlx::Row;

/// Appends take turns across replicas (one integrator holds the lease, but one that lost
/// it mid-round must not interleave).
const APPEND_LOCK: i64 = 0x0efa_5c4e_3a00_0002;

fn big(n: u64) -> Result<i64> {
    i64::try_from(n).map_err(|_| Error::invalid("log index", format!("{n} is beyond the log")))
}

impl LogStore for PostgresStore {
    fn log_size(&self) -> Result<u64> {
        self.run(|pool| async move {
            let n: i64 = sqlx::query_scalar("SELECT coalesce(max(idx) + 1, 0) FROM log_leaves")
                .fetch_one(&pool)
                .await
                .map_err(storage)?;
            Ok(n as u64)
        })
    }

    fn append_log(
        &self,
        size: u64,
        leaves: &[Vec<u8>],
        hashes: &[LogHash],
        beside: &[Beside],
        releases: &[(String, u64)],
    ) -> Result<()> {
        let release_names: Vec<String> = releases.iter().map(|(r, _)| r.clone()).collect();
        let release_idx: Vec<i64> = releases.iter().map(|(_, i)| big(*i)).collect::<Result<_>>()?;
        let start = big(size)?;
        let first_hash = big(efa_tlog::tree::stored_hash_index(0, size))?;
        let leaf_idx: Vec<i64> = (0..leaves.len() as i64).map(|i| start + i).collect();
        let leaves = leaves.to_vec();
        let hash_idx: Vec<i64> = (0..hashes.len() as i64).map(|i| first_hash + i).collect();
        let hashes: Vec<Vec<u8>> = hashes.iter().map(|h| h.to_vec()).collect();
        let beside_idx: Vec<i64> = beside.iter().map(|b| big(b.index)).collect::<Result<_>>()?;
        let beside: Vec<Vec<u8>> = beside.iter().map(encode).collect();
        self.run(move |pool| async move {
            let mut tx = pool.begin().await.map_err(storage)?;
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(APPEND_LOCK)
                .execute(&mut *tx)
                .await
                .map_err(storage)?;
            let have: i64 = sqlx::query_scalar("SELECT coalesce(max(idx) + 1, 0) FROM log_leaves")
                .fetch_one(&mut *tx)
                .await
                .map_err(storage)?;
            if have != start {
                return Err(Error::failed_precondition(format!("the log is at size {have}, not {start}")));
            }
            sqlx::query("INSERT INTO log_leaves (idx, leaf) SELECT * FROM UNNEST($1::bigint[], $2::bytea[])")
                .bind(&leaf_idx)
                .bind(&leaves)
                .execute(&mut *tx)
                .await
                .map_err(storage)?;
            sqlx::query("INSERT INTO log_hashes (idx, hash) SELECT * FROM UNNEST($1::bigint[], $2::bytea[])")
                .bind(&hash_idx)
                .bind(&hashes)
                .execute(&mut *tx)
                .await
                .map_err(storage)?;
            if !beside.is_empty() {
                sqlx::query("INSERT INTO log_beside (idx, rec) SELECT * FROM UNNEST($1::bigint[], $2::bytea[])")
                    .bind(&beside_idx)
                    .bind(&beside)
                    .execute(&mut *tx)
                    .await
                    .map_err(storage)?;
            }
            if !release_names.is_empty() {
                sqlx::query(
                    "INSERT INTO log_releases (release, idx) SELECT * FROM UNNEST($1::text[], $2::bigint[]) \
                     ON CONFLICT (release) DO NOTHING",
                )
                .bind(&release_names)
                .bind(&release_idx)
                .execute(&mut *tx)
                .await
                .map_err(storage)?;
            }
            tx.commit().await.map_err(storage)
        })
    }

    fn release_leaf(&self, release: &str) -> Result<Option<u64>> {
        let release = release.to_string();
        let idx: Option<i64> = self.run(move |pool| async move {
            sqlx::query_scalar("SELECT idx FROM log_releases WHERE release = $1")
                .bind(release)
                .fetch_optional(&pool)
                .await
                .map_err(storage)
        })?;
        Ok(idx.map(|i| i as u64))
    }

    fn flush_log(&self) -> Result<()> {
        // Each append and checkpoint is a transaction of its own, durable when it returned.
        Ok(())
    }

    fn log_hashes(&self, indexes: &[u64]) -> Result<Vec<LogHash>> {
        let idx: Vec<i64> = indexes.iter().map(|&i| big(i)).collect::<Result<_>>()?;
        let want = idx.clone();
        let rows = self.run(move |pool| async move {
            let rows = sqlx::query("SELECT idx, hash FROM log_hashes WHERE idx = ANY($1)")
                .bind(&idx)
                .fetch_all(&pool)
                .await
                .map_err(storage)?;
            rows.iter()
                .map(|r| Ok((r.try_get::<i64, _>(0).map_err(storage)?, r.try_get::<Vec<u8>, _>(1).map_err(storage)?)))
                .collect::<Result<std::collections::HashMap<i64, Vec<u8>>>>()
        })?;
        want.iter()
            .map(|i| {
                let h = rows.get(i).ok_or_else(|| Error::not_found(format!("log hash {i}")))?;
                h.as_slice().try_into().map_err(|_| Error::Storage(format!("log hash {i} is not 32 bytes")))
            })
            .collect()
    }

    fn log_leaves(&self, from: u64, to: u64) -> Result<Vec<Vec<u8>>> {
        if from >= to {
            return Ok(Vec::new());
        }
        let (from, to) = (big(from)?, big(to).unwrap_or(i64::MAX));
        self.run(move |pool| async move {
            sqlx::query_scalar("SELECT leaf FROM log_leaves WHERE idx >= $1 AND idx < $2 ORDER BY idx")
                .bind(from)
                .bind(to)
                .fetch_all(&pool)
                .await
                .map_err(storage)
        })
    }

    fn put_checkpoint(&self, size: u64, note: &[u8]) -> Result<()> {
        let (size, note) = (big(size)?, note.to_vec());
        self.run(move |pool| async move {
            sqlx::query(
                "INSERT INTO log_checkpoints (size, note) VALUES ($1, $2) ON CONFLICT (size) DO UPDATE SET note = EXCLUDED.note",
            )
            .bind(size)
            .bind(note)
            .execute(&pool)
            .await
            .map_err(storage)?;
            Ok(())
        })
    }

    fn checkpoint(&self, size: u64) -> Result<Option<Vec<u8>>> {
        let size = big(size)?;
        self.run(move |pool| async move {
            sqlx::query_scalar("SELECT note FROM log_checkpoints WHERE size = $1")
                .bind(size)
                .fetch_optional(&pool)
                .await
                .map_err(storage)
        })
    }

    fn latest_checkpoint(&self) -> Result<Option<(u64, Vec<u8>)>> {
        self.run(|pool| async move {
            let row = sqlx::query("SELECT size, note FROM log_checkpoints ORDER BY size DESC LIMIT 1")
                .fetch_optional(&pool)
                .await
                .map_err(storage)?;
            row.map(|r| Ok((r.try_get::<i64, _>(0).map_err(storage)? as u64, r.try_get(1).map_err(storage)?)))
                .transpose()
        })
    }

    fn beside_text(&self, index: u64) -> Result<Option<Beside>> {
        let idx = big(index)?;
        let rec: Option<Vec<u8>> = self.run(move |pool| async move {
            sqlx::query_scalar("SELECT rec FROM log_beside WHERE idx = $1")
                .bind(idx)
                .fetch_optional(&pool)
                .await
                .map_err(storage)
        })?;
        rec.map(|r| decode("log_beside", &r)).transpose()
    }

    fn beside_texts(&self, from: u64, to: u64) -> Result<Vec<Beside>> {
        if from >= to {
            return Ok(Vec::new());
        }
        let (from, to) = (big(from)?, big(to).unwrap_or(i64::MAX));
        let recs: Vec<Vec<u8>> = self.run(move |pool| async move {
            sqlx::query_scalar("SELECT rec FROM log_beside WHERE idx >= $1 AND idx < $2 ORDER BY idx")
                .bind(from)
                .bind(to)
                .fetch_all(&pool)
                .await
                .map_err(storage)
        })?;
        recs.iter().map(|r| decode("log_beside", r)).collect()
    }

    fn log_releases(&self) -> Result<Vec<(String, u64)>> {
        self.run(|pool| async move {
            let rows = sqlx::query("SELECT release, idx FROM log_releases ORDER BY idx")
                .fetch_all(&pool)
                .await
                .map_err(storage)?;
            rows.iter()
                .map(|r| {
                    Ok((r.try_get::<String, _>(0).map_err(storage)?, r.try_get::<i64, _>(1).map_err(storage)? as u64))
                })
                .collect()
        })
    }

    fn erase_beside_text(&self, index: u64) -> Result<bool> {
        let idx = big(index)?;
        self.run(move |pool| async move {
            let n = sqlx::query("DELETE FROM log_beside WHERE idx = $1")
                .bind(idx)
                .execute(&pool)
                .await
                .map_err(storage)?
                .rows_affected();
            Ok(n > 0)
        })
    }
}
