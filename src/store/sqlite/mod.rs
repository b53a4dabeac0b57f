//! SQLite scorecard store. Writes are idempotent upserts keyed by
//! (source, tenant, platform, bucket_start_ms), so re-applying the same closed bucket
//! (a replay run again, a partition re-processed after a crash) rewrites the same row.
//! Opening a store (connection settings, the schema and its versions) is in [`open`].

mod fold;
mod open;

pub use open::SCHEMA_VERSION;

use super::checkpoint::{DedupRows, StoredKeys};
use super::key_blocks::{self, KeyBlock, BLOCK_SPAN};
use super::{
    Checkpoint, Coverage, QueuedWindow, RejectRow, StoreError, StoreRead, StoreTx, StoredBucket,
};
use crate::engine::{ClosedBucket, Counters, Stats};
use crate::event::{Direction, RejectReason};
use crate::time::{Micros, MICROS_PER_MILLI};
use rusqlite::{params, Connection, OptionalExtension, Transaction};

pub struct SqliteStore {
    conn: Connection,
    path: String,
    /// Copies the write-ahead log into the file beside the writer (none when read-only).
    _checkpointer: Option<open::Checkpointer>,
}

/// One atomic unit of writes: everything a replay run or a checkpoint produced.
pub struct StoreWriter<'a> {
    tx: Transaction<'a>,
}

impl SqliteStore {
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Makes every write fail as on a read-only file (SQLite `query_only`), so tests can
    /// exercise the store-unavailable path without root or a full disk.
    pub fn set_read_only_for_tests(&self, on: bool) {
        let _ = self.conn.pragma_update(None, "query_only", on);
    }

    /// A write transaction, holding the write lock from its start: what it reads (the
    /// commit fence's checkpoint) cannot change before it commits, and a second writer
    /// waits for the lock (`busy_timeout`) instead of failing at its first write.
    pub fn writer(&mut self) -> Result<StoreWriter<'_>, StoreError> {
        Ok(StoreWriter {
            tx: self
                .conn
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?,
        })
    }
}

impl super::ReplayStore for SqliteStore {
    fn begin(&mut self) -> Result<Box<dyn StoreTx + '_>, StoreError> {
        Ok(Box::new(self.writer()?))
    }
}

impl StoreRead for SqliteStore {
    fn coverage(&self, source: Option<&str>) -> Result<Vec<Coverage>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT tenant, MIN(bucket_start_ms), MAX(bucket_start_ms + bucket_secs * 1000), SUM(events)
             FROM buckets WHERE ?1 IS NULL OR source = ?1 GROUP BY tenant ORDER BY tenant",
        )?;
        let rows = stmt.query_map(params![source], |r| {
            Ok(Coverage {
                tenant: r.get(0)?,
                from: r.get::<_, i64>(1)? * MICROS_PER_MILLI,
                to: r.get::<_, i64>(2)? * MICROS_PER_MILLI,
                events: r.get::<_, i64>(3)?.max(0) as u64,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn buckets(
        &self,
        tenant: &str,
        from: Micros,
        to: Micros,
    ) -> Result<Vec<StoredBucket>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT source, platform, direction, bucket_start_ms, attempts, events, delivered, failed,
                    dead_lettered, on_time, retried, max_retries, latency_sum_us, latency_hist,
                    bucket_secs
             FROM buckets WHERE tenant = ?1 AND bucket_start_ms >= ?2 AND bucket_start_ms < ?3
             ORDER BY bucket_start_ms, platform, source",
        )?;
        let rows = stmt.query_map(
            params![tenant, from / MICROS_PER_MILLI, to / MICROS_PER_MILLI],
            |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, i64>(3)?,
                    counters_at(r, 4)?,
                    r.get::<_, Vec<u8>>(13)?,
                    r.get::<_, i64>(14)?,
                ))
            },
        )?;
        let mut out = Vec::new();
        for row in rows {
            let (source, platform, direction, start_ms, counters, hist, secs) = row?;
            let what = || format!("({source}, {tenant}, {platform}, {start_ms})");
            let latency = Stats::latencies_from_bytes(&hist)
                .map_err(|why| StoreError::Corrupt { what: what(), why })?;
            let direction = direction_of(&direction, what)?;
            out.push(StoredBucket {
                source,
                tenant: tenant.to_string(),
                platform,
                direction,
                start: start_ms * MICROS_PER_MILLI,
                width: secs * crate::time::MICROS_PER_SEC,
                stats: Stats { counters, latency },
            });
        }
        Ok(out)
    }

    fn rejects(
        &self,
        tenant: &str,
        from: Micros,
        to: Micros,
    ) -> Result<Vec<(RejectReason, u64)>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT reason, SUM(count) FROM rejects
             WHERE tenant = ?1 AND bucket_start_ms >= ?2 AND bucket_start_ms < ?3
             GROUP BY reason ORDER BY reason",
        )?;
        let rows = stmt.query_map(
            params![tenant, from / MICROS_PER_MILLI, to / MICROS_PER_MILLI],
            |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)),
        )?;
        let mut out = Vec::new();
        for row in rows {
            let (code, n) = row?;
            let reason = RejectReason::from_code(&code).ok_or_else(|| StoreError::Corrupt {
                what: "rejects.reason".into(),
                why: format!("unknown reason {code:?}"),
            })?;
            out.push((reason, n as u64));
        }
        Ok(out)
    }

    /// Offsets every source's log lost before they were read, by source.
    fn unread(&self) -> Result<Vec<(String, crate::store::Unread)>, StoreError> {
        // A store of an earlier schema read as it is (read-only) has no such table.
        let has: bool = self.conn.query_row(
            "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'unread')",
            [],
            |r| r.get(0),
        )?;
        if !has {
            return Ok(Vec::new());
        }
        let mut stmt = self.conn.prepare_cached(
            "SELECT source, from_offset, to_offset, noticed_ms FROM unread ORDER BY source, from_offset",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                crate::store::Unread {
                    from: r.get(1)?,
                    to: r.get(2)?,
                    noticed_ms: r.get(3)?,
                },
            ))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

impl SqliteStore {
    /// Bytes of closed buckets' dedup keys held (all sources), for measurements.
    pub fn closed_key_bytes(&self) -> Result<u64, StoreError> {
        Ok(self.conn.query_row(
            "SELECT COALESCE(SUM(LENGTH(keys)), 0) FROM closed_keys",
            [],
            |r| r.get::<_, i64>(0),
        )? as u64)
    }

    /// Number of bucket rows (all sources); for tests and the replay summary.
    pub fn bucket_rows(&self) -> Result<u64, StoreError> {
        Ok(self
            .conn
            .query_row("SELECT COUNT(*) FROM buckets", [], |r| r.get::<_, i64>(0))?
            as u64)
    }

    /// The source's checkpoint with the dedup rows beside it, read in one transaction
    /// (a snapshot: WAL readers do not see a commit that lands meanwhile).
    pub fn checkpoint_with_dedup(&self, source: &str) -> Result<Option<Checkpoint>, StoreError> {
        let tx = self.conn.unchecked_transaction()?;
        let Some((version, next_offset, state)) = self.checkpoint(source)? else {
            return Ok(None);
        };
        let mut stmt = tx.prepare_cached(
            "SELECT bucket_start_us, keys FROM dedup_keys WHERE source = ?1 ORDER BY bucket_start_us",
        )?;
        let dedup = stmt
            .query_map(params![source], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<Vec<StoredKeys>, _>>()?;
        drop(stmt);
        tx.finish()?;
        Ok(Some(Checkpoint {
            version,
            next_offset,
            state,
            dedup,
        }))
    }

    pub fn checkpoint(&self, source: &str) -> Result<Option<(i64, i64, Vec<u8>)>, StoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT version, next_offset, state FROM checkpoints WHERE source = ?1",
                params![source],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?)
    }
}

/// The packed dedup keys stored for a closed bucket: its key set at close and every
/// correction's keys since.
fn read_closed_keys(conn: &Connection, source: &str, start: Micros) -> Result<Vec<u8>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT bucket_start_us, last_start_us, keys FROM closed_keys
         WHERE source = ?1 AND bucket_start_us > ?2 AND bucket_start_us <= ?3
           AND last_start_us >= ?3",
    )?;
    let rows = stmt.query(params![source, start - BLOCK_SPAN, start])?;
    keys_of_blocks(rows, start, source)
}

/// The packed keys the blocks in `rows` (first start, last start, keys) hold for the
/// bucket starting at `start`, one block's after another.
fn keys_of_blocks(
    mut rows: rusqlite::Rows<'_>,
    start: Micros,
    what: &str,
) -> Result<Vec<u8>, StoreError> {
    let corrupt = |why: String| StoreError::Corrupt {
        what: format!("closed_keys of {what}"),
        why,
    };
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        let block = r
            .get_ref(2)?
            .as_blob()
            .map_err(|e| corrupt(e.to_string()))?;
        key_blocks::keys_of(r.get(0)?, r.get(1)?, block, start, &mut out).map_err(corrupt)?;
    }
    Ok(out)
}

/// The nine counter columns of a bucket row, `attempts` at column `at` and the rest after
/// it in table order (`events` … `latency_sum_us`).
fn counters_at(r: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<Counters> {
    let n = |i: usize| r.get::<_, i64>(at + i).map(|v| v as u64);
    Ok(Counters {
        attempts: n(0)?,
        events: n(1)?,
        delivered: n(2)?,
        failed: n(3)?,
        dead_lettered: n(4)?,
        on_time: n(5)?,
        retried: n(6)?,
        max_retries: n(7)?,
        latency_sum_us: n(8)?,
    })
}

/// A stored bucket's direction, or what is wrong with it (`what` names the row).
fn direction_of(s: &str, what: impl FnOnce() -> String) -> Result<Direction, StoreError> {
    Direction::parse(s).ok_or_else(|| StoreError::Corrupt {
        what: what(),
        why: format!("direction {s:?}"),
    })
}

impl SqliteStore {
    /// The packed dedup keys stored for a closed bucket of `source` starting at `start`.
    pub fn closed_keys(&self, source: &str, start: Micros) -> Result<Vec<u8>, StoreError> {
        read_closed_keys(&self.conn, source, start)
    }

    /// Up to `limit` windows queued for publishing, oldest first per source.
    pub fn queued_windows(&self, limit: usize) -> Result<Vec<QueuedWindow>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut stmt = self.conn.prepare_cached(
            "SELECT source, seq, summary FROM window_queue ORDER BY source, seq LIMIT ?1",
        )?;
        let rows = stmt.query_map(params![limit], |r| {
            Ok(QueuedWindow {
                source: r.get(0)?,
                seq: r.get(1)?,
                summary: r.get(2)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Removes the published windows of `source`, up to and including `through`.
    pub fn dequeue_windows(&self, source: &str, through: i64) -> Result<(), StoreError> {
        self.conn
            .prepare_cached("DELETE FROM window_queue WHERE source = ?1 AND seq <= ?2")?
            .execute(params![source, through])?;
        Ok(())
    }
}

impl StoreWriter<'_> {
    pub fn commit(self) -> Result<(), StoreError> {
        self.tx.commit()?;
        Ok(())
    }
}

impl StoreTx for StoreWriter<'_> {
    fn commit(self: Box<Self>) -> Result<(), StoreError> {
        StoreWriter::commit(*self)
    }

    fn clear_source(&self, source: &str) -> Result<(), StoreError> {
        for table in ["buckets", "rejects", "closed_keys", "replay_rejects"] {
            self.tx.execute(
                &format!("DELETE FROM {table} WHERE source = ?1"),
                params![source],
            )?;
        }
        Ok(())
    }

    fn replayed_keys(&self, start: Micros, except: &str) -> Result<Vec<u8>, StoreError> {
        let mut stmt = self.tx.prepare_cached(
            "SELECT bucket_start_us, last_start_us, keys FROM closed_keys
             INDEXED BY closed_keys_by_start
             WHERE bucket_start_us > ?1 AND bucket_start_us <= ?2 AND last_start_us >= ?2
               AND source >= 'replay:' AND source < 'replay;' AND source != ?3",
        )?;
        let rows = stmt.query(params![start - BLOCK_SPAN, start, except])?;
        keys_of_blocks(rows, start, "earlier replays")
    }

    fn replayed_rejects(&self, except: &str) -> Result<Vec<u64>, StoreError> {
        let mut stmt = self
            .tx
            .prepare_cached("SELECT record_hash FROM replay_rejects WHERE source != ?1")?;
        let rows = stmt.query_map(params![except], |r| r.get::<_, i64>(0))?;
        let mut out = Vec::new();
        for r in rows {
            out.push(r? as u64);
        }
        Ok(out)
    }

    fn put_replay_rejects(&self, source: &str, hashes: &[u64]) -> Result<(), StoreError> {
        let mut stmt = self.tx.prepare_cached(
            "INSERT OR IGNORE INTO replay_rejects (source, record_hash) VALUES (?1, ?2)",
        )?;
        for h in hashes {
            stmt.execute(params![source, *h as i64])?;
        }
        Ok(())
    }

    fn put_bucket(&self, source: &str, b: &ClosedBucket) -> Result<(), StoreError> {
        let c = &b.stats.counters;
        let mut stmt = self.tx.prepare_cached(
            "INSERT INTO buckets (source, tenant, platform, direction, bucket_start_ms, bucket_secs,
                attempts, events, delivered, failed, dead_lettered, on_time, retried, max_retries,
                latency_sum_us, target_latency_ms, latency_hist)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)
             ON CONFLICT (source, tenant, platform, bucket_start_ms) DO UPDATE SET
                direction = excluded.direction, bucket_secs = excluded.bucket_secs,
                attempts = excluded.attempts, events = excluded.events,
                delivered = excluded.delivered, failed = excluded.failed,
                dead_lettered = excluded.dead_lettered, on_time = excluded.on_time,
                retried = excluded.retried, max_retries = excluded.max_retries,
                latency_sum_us = excluded.latency_sum_us,
                target_latency_ms = excluded.target_latency_ms,
                latency_hist = excluded.latency_hist",
        )?;
        stmt.execute(params![
            source,
            &*b.key.tenant,
            &*b.key.platform,
            b.key.direction.as_str(),
            b.start / MICROS_PER_MILLI,
            b.width_us / 1_000_000,
            c.attempts as i64,
            c.events as i64,
            c.delivered as i64,
            c.failed as i64,
            c.dead_lettered as i64,
            c.on_time as i64,
            c.retried as i64,
            c.max_retries as i64,
            c.latency_sum_us as i64,
            (b.key.target_latency_us / 1000) as i64,
            b.stats.histogram_bytes(),
        ])?;
        Ok(())
    }

    fn add_rejects(&self, source: &str, r: &RejectRow<'_>) -> Result<(), StoreError> {
        let mut stmt = self.tx.prepare_cached(
            "INSERT INTO rejects (source, tenant, platform, bucket_start_ms, reason, count)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (source, tenant, platform, bucket_start_ms, reason)
             DO UPDATE SET count = count + excluded.count",
        )?;
        stmt.execute(params![
            source,
            r.tenant,
            r.platform,
            r.bucket / MICROS_PER_MILLI,
            r.reason.code(),
            r.count as i64
        ])?;
        Ok(())
    }

    fn checkpoint_offset(&self, source: &str) -> Result<Option<i64>, StoreError> {
        Ok(self
            .tx
            .query_row(
                "SELECT next_offset FROM checkpoints WHERE source = ?1",
                params![source],
                |r| r.get(0),
            )
            .optional()?)
    }

    fn put_dedup(&self, source: &str, d: &DedupRows) -> Result<(), StoreError> {
        if d.replace {
            self.tx
                .execute("DELETE FROM dedup_keys WHERE source = ?1", params![source])?;
        } else {
            self.tx
                .prepare_cached(
                    "DELETE FROM dedup_keys WHERE source = ?1 AND bucket_start_us < ?2",
                )?
                .execute(params![source, d.before])?;
        }
        let mut stmt = self.tx.prepare_cached(
            "INSERT INTO dedup_keys (source, bucket_start_us, keys) VALUES (?1, ?2, ?3)",
        )?;
        for (start, keys) in &d.buckets {
            stmt.execute(params![source, start, keys])?;
        }
        Ok(())
    }

    fn closed_keys(&self, source: &str, start: Micros) -> Result<Vec<u8>, StoreError> {
        read_closed_keys(&self.tx, source, start)
    }

    fn drop_closed_keys_before(&self, source: &str, before: Micros) -> Result<(), StoreError> {
        self.tx
            .prepare_cached(
                "DELETE FROM closed_keys
                 WHERE source = ?1 AND bucket_start_us < ?2 AND last_start_us < ?2",
            )?
            .execute(params![source, before])?;
        Ok(())
    }

    fn add_closed_keys(&self, source: &str, blocks: &[KeyBlock]) -> Result<(), StoreError> {
        let mut stmt = self.tx.prepare_cached(
            "INSERT INTO closed_keys (source, bucket_start_us, last_start_us, keys)
             VALUES (?1, ?2, ?3, ?4)",
        )?;
        for b in blocks {
            stmt.execute(params![source, b.first, b.last, b.keys])?;
        }
        Ok(())
    }

    fn queue_windows(&self, source: &str, summaries: &[Vec<u8>]) -> Result<(), StoreError> {
        if summaries.is_empty() {
            return Ok(());
        }
        let n = summaries.len() as i64;
        let last: i64 = self
            .tx
            .prepare_cached(
                "INSERT INTO window_queue_seq (source, last_seq) VALUES (?1, ?2)
                 ON CONFLICT (source) DO UPDATE SET last_seq = last_seq + excluded.last_seq
                 RETURNING last_seq",
            )?
            .query_row(params![source, n], |r| r.get(0))?;
        let mut stmt = self.tx.prepare_cached(
            "INSERT INTO window_queue (source, seq, summary) VALUES (?1, ?2, ?3)",
        )?;
        for (i, summary) in summaries.iter().enumerate() {
            stmt.execute(params![source, last - n + 1 + i as i64, summary])?;
        }
        Ok(())
    }

    fn add_correction(&self, source: &str, b: &ClosedBucket) -> Result<(), StoreError> {
        let existing = self
            .tx
            .prepare_cached(
                "SELECT attempts, events, delivered, failed, dead_lettered, on_time, retried,
                        max_retries, latency_sum_us, latency_hist, bucket_secs
                 FROM buckets WHERE source = ?1 AND tenant = ?2 AND platform = ?3 AND bucket_start_ms = ?4",
            )?
            .query_row(
                params![source, &*b.key.tenant, &*b.key.platform, b.start / MICROS_PER_MILLI],
                |r| {
                    Ok((
                        counters_at(r, 0)?,
                        r.get::<_, Vec<u8>>(9)?,
                        r.get::<_, i64>(10)?,
                    ))
                },
            )
            .optional()?;
        let Some((counters, hist, secs)) = existing else {
            return self.put_bucket(source, b);
        };
        let latency = Stats::latencies_from_bytes(&hist).map_err(|why| StoreError::Corrupt {
            what: format!(
                "{source} {} {} bucket at {} ms",
                b.key.tenant,
                b.key.platform,
                b.start / MICROS_PER_MILLI
            ),
            why,
        })?;
        let mut merged = Stats { counters, latency };
        merged.merge(&b.stats);
        let row = ClosedBucket {
            key: b.key.clone(),
            start: b.start,
            width_us: (secs * 1_000_000).max(b.width_us),
            stats: merged,
        };
        self.put_bucket(source, &row)
    }

    fn put_unread(&self, source: &str, u: &crate::store::Unread) -> Result<(), StoreError> {
        self.tx
            .prepare_cached(
                "INSERT INTO unread (source, from_offset, to_offset, noticed_ms) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (source, from_offset) DO NOTHING",
            )?
            .execute(params![source, u.from, u.to, u.noticed_ms])?;
        Ok(())
    }

    fn put_checkpoint(
        &self,
        source: &str,
        version: i64,
        next_offset: i64,
        state: &[u8],
        now_ms: i64,
    ) -> Result<(), StoreError> {
        self.tx.execute(
            "INSERT INTO checkpoints (source, version, next_offset, state, updated_ms) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (source) DO UPDATE SET version = excluded.version,
                next_offset = excluded.next_offset, state = excluded.state, updated_ms = excluded.updated_ms",
            params![source, version, next_offset, state, now_ms],
        )?;
        Ok(())
    }
}
