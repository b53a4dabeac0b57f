//! PostgreSQL scorecard store, for several instances in one consumer group and for SQL
//! readers: the SQLite store's tables and guarantees on a shared server. A partition's
//! closed buckets, corrections, rejections, dedup rows and checkpoint go in one
//! transaction, fenced on the stored checkpoint under the partition's advisory lock
//! ([`tx`]). The schema ([`SCHEMA`], `schema.sql`) is versioned in `meta` and carries the
//! views documented in docs/stores.md.
//!
//! The client is rust-postgres' synchronous `postgres` crate: the store runs on the apply
//! thread as SQLite does, and the crate is the maintained base the async `tokio-postgres`
//! is built on. A lost connection is opened again by the next call, so a server restart
//! is a few failed checkpoints (retried; fetching pauses) and nothing else.

mod connect;
mod tx;

pub use connect::PgTarget;

use crate::engine::dedup::DedupKey;
use crate::engine::{Counters, Stats};
use crate::event::{Direction, RejectReason};
use crate::store::checkpoint::{self, StoredKeys};
use crate::store::fold::{fold_days, HourlyFold, MinuteRow};
use crate::store::{
    apply_commit, Checkpoint, Coverage, Folded, PartitionCommit, PartitionStore, QueuedWindow,
    ReplayStore, StoreError, StoreRead, StoreTx, StoredBucket, Unread,
};
use crate::time::{Micros, MICROS_PER_MILLI};
use postgres::Row;
use std::cell::RefCell;
use tx::{keys_of_blocks, prepared, Params, PgTx, Prepared, CLOSED_KEYS};

/// The tables, indexes and views of [`SCHEMA_VERSION`].
pub const SCHEMA: &str = include_str!("schema.sql");
/// The schema this build writes (`meta.schema_version`).
pub const SCHEMA_VERSION: i64 = 3;

struct Conn {
    client: postgres::Client,
    prepared: Prepared,
}

pub struct PgStore {
    target: PgTarget,
    conn: RefCell<Option<Conn>>,
}

impl PgStore {
    /// Opens a store for writing, creating or upgrading its schema.
    pub fn open(target: PgTarget) -> Result<Self, StoreError> {
        let s = Self {
            target,
            conn: RefCell::new(None),
        };
        s.migrate()?;
        Ok(s)
    }

    /// Opens an existing store for reading: nothing is created, so a role that may only
    /// SELECT can read it.
    pub fn open_read_only(target: PgTarget) -> Result<Self, StoreError> {
        let s = Self {
            target,
            conn: RefCell::new(None),
        };
        match s.schema_version()? {
            None => Err(StoreError::Missing {
                path: s.target.to_string(),
            }),
            Some(v) if v > SCHEMA_VERSION => Err(s.too_new(v)),
            Some(_) => Ok(s),
        }
    }

    fn too_new(&self, found: i64) -> StoreError {
        StoreError::SchemaVersion {
            path: self.target.to_string(),
            found,
            expected: SCHEMA_VERSION,
        }
    }

    /// Runs `f` on the connection, opening it first if there is none or it was lost.
    fn with_conn<R>(
        &self,
        f: impl FnOnce(&mut Conn) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        f(open_conn(&mut self.conn.borrow_mut(), &self.target)?)
    }

    fn query(&self, sql: &'static str, params: Params<'_>) -> Result<Vec<Row>, StoreError> {
        self.with_conn(|c| {
            let stmt = prepared(&mut c.client, &mut c.prepared, sql, &self.target)?;
            c.client
                .query(&stmt, params)
                .map_err(|e| self.target.error(&connect::op_of(sql), &e))
        })
    }

    fn schema_version(&self) -> Result<Option<i64>, StoreError> {
        let rows = self.query("SELECT to_regclass('meta') IS NOT NULL", &[])?;
        if !rows.first().is_some_and(|r| r.get::<_, bool>(0)) {
            return Ok(None);
        }
        let rows = self.query("SELECT value FROM meta WHERE key = 'schema_version'", &[])?;
        Ok(rows.first().and_then(|r| r.get::<_, &str>(0).parse().ok()))
    }

    /// Brings the database to [`SCHEMA_VERSION`] under an advisory lock, so instances
    /// started together create the schema once. Reads first: a current schema takes no
    /// lock and needs no CREATE right.
    fn migrate(&self) -> Result<(), StoreError> {
        match self.schema_version()? {
            Some(v) if v == SCHEMA_VERSION => return Ok(()),
            Some(v) if v > SCHEMA_VERSION => return Err(self.too_new(v)),
            _ => {}
        }
        let target = &self.target;
        self.with_conn(|c| {
            let err = |op: &'static str| move |e: postgres::Error| target.error(op, &e);
            let mut tx = c.client.transaction().map_err(err("BEGIN"))?;
            tx.execute(
                "SELECT pg_advisory_xact_lock(hashtextextended('slatrack schema', 0))",
                &[],
            )
            .map_err(err("SELECT pg_advisory_xact_lock"))?;
            tx.batch_execute(SCHEMA)
                .map_err(err("CREATE TABLE (schema.sql)"))?;
            tx.execute(
                "INSERT INTO meta (key, value) VALUES ('schema_version', $1)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                &[&SCHEMA_VERSION.to_string()],
            )
            .map_err(err("INSERT on table meta (needs INSERT)"))?;
            tx.commit().map_err(err("COMMIT"))
        })
    }

    /// A write transaction on the (re)opened connection.
    pub fn begin_tx(&mut self) -> Result<PgTx<'_>, StoreError> {
        let target = &self.target;
        let conn = open_conn(self.conn.get_mut(), target)?;
        let Conn { client, prepared } = conn;
        let tx = client
            .transaction()
            .map_err(|e| target.error("BEGIN", &e))?;
        Ok(PgTx::new(tx, prepared, target))
    }

    fn fold_day(&mut self, from_ms: i64, to_ms: i64) -> Result<u64, StoreError> {
        let tx = self.begin_tx()?;
        if !tx.try_lock_folding()? {
            return Ok(0); // another instance folds
        }
        // The rows deleted are exactly the rows folded, whatever commits meanwhile.
        let rows = tx.query(
            "DELETE FROM buckets WHERE bucket_secs < 3600 AND bucket_start_ms >= $1 AND bucket_start_ms < $2
             RETURNING source, tenant, platform, direction, bucket_start_ms, target_latency_ms,
                 attempts, events, delivered, failed, dead_lettered, on_time, retried,
                 max_retries, latency_sum_us, latency_hist",
            &[&from_ms, &to_ms],
        )?;
        if rows.is_empty() {
            return Ok(0);
        }
        // The rows already at an hour's start (folded before, or a commit's row of several
        // hours that starts on one), locked, merged in memory: a statement for the whole
        // day rather than a read per hour. The fold writes over exactly these keys. A row
        // of several hours starting elsewhere (a backfill's, see `store::rows`) is
        // another key: it stays as it is and is not merged, or it would count twice.
        let stored = tx.query(
            "SELECT source, tenant, platform, direction, bucket_start_ms, target_latency_ms,
                 attempts, events, delivered, failed, dead_lettered, on_time, retried,
                 max_retries, latency_sum_us, latency_hist, bucket_secs
             FROM buckets WHERE bucket_secs >= 3600 AND bucket_start_ms % 3600000 = 0
                 AND bucket_start_ms >= $1 AND bucket_start_ms < $2
             FOR UPDATE",
            &[&from_ms, &to_ms],
        )?;
        let mut fold = HourlyFold::default();
        for r in &rows {
            fold.add(minute_row(r)?);
        }
        for r in &stored {
            fold.merge_stored(minute_row(r)?, r.get::<_, i64>(16) * 1_000_000);
        }
        let n = fold.replace(&tx)?;
        Box::new(tx).commit()?;
        Ok(n)
    }
}

/// A bucket row read for folding (the columns of [`PgStore::fold_day`]'s statements).
fn minute_row(r: &Row) -> Result<MinuteRow, StoreError> {
    let (source, tenant, platform): (String, String, String) = (r.get(0), r.get(1), r.get(2));
    let start_ms: i64 = r.get(4);
    let what = || format!("({source}, {tenant}, {platform}, {start_ms})");
    let direction = direction_of(r.get(3), what)?;
    let stats = row_stats(counters_of(r, 6), r.get(15), what)?;
    Ok(MinuteRow {
        source,
        tenant,
        platform,
        direction,
        start_ms,
        target_latency_ms: r.get(5),
        stats,
    })
}

fn open_conn<'s>(
    slot: &'s mut Option<Conn>,
    target: &PgTarget,
) -> Result<&'s mut Conn, StoreError> {
    if slot.as_ref().is_some_and(|c| c.client.is_closed()) {
        *slot = None;
    }
    if slot.is_none() {
        *slot = Some(Conn {
            client: target.connect()?,
            prepared: Prepared::new(),
        });
    }
    slot.as_mut()
        .ok_or_else(|| StoreError::BadLocation(target.to_string()))
}

/// The nine counter columns of a bucket row, `attempts` at column `at`.
fn counters_of(r: &Row, at: usize) -> Counters {
    let n = |i: usize| r.get::<_, i64>(at + i) as u64;
    Counters {
        attempts: n(0),
        events: n(1),
        delivered: n(2),
        failed: n(3),
        dead_lettered: n(4),
        on_time: n(5),
        retried: n(6),
        max_retries: n(7),
        latency_sum_us: n(8),
    }
}

fn row_stats(
    counters: Counters,
    hist: &[u8],
    what: impl FnOnce() -> String,
) -> Result<Stats, StoreError> {
    let latency = Stats::latencies_from_bytes(hist)
        .map_err(|why| StoreError::Corrupt { what: what(), why })?;
    Ok(Stats { counters, latency })
}

fn direction_of(s: &str, what: impl FnOnce() -> String) -> Result<Direction, StoreError> {
    Direction::parse(s).ok_or_else(|| StoreError::Corrupt {
        what: what(),
        why: format!("direction {s:?}"),
    })
}

impl StoreRead for PgStore {
    fn coverage(&self, source: Option<&str>) -> Result<Vec<Coverage>, StoreError> {
        let rows = self.query(
            "SELECT tenant, MIN(bucket_start_ms), MAX(bucket_start_ms + bucket_secs * 1000), SUM(events)::BIGINT
             FROM buckets WHERE $1::TEXT IS NULL OR source = $1 GROUP BY tenant ORDER BY tenant",
            &[&source],
        )?;
        Ok(rows
            .iter()
            .map(|r| Coverage {
                tenant: r.get(0),
                from: r.get::<_, i64>(1) * MICROS_PER_MILLI,
                to: r.get::<_, i64>(2) * MICROS_PER_MILLI,
                events: r.get::<_, i64>(3).max(0) as u64,
            })
            .collect())
    }

    /// In `buckets_by_tenant`'s order (no sort on the server): a scorecard's merges do
    /// not depend on the order of rows.
    fn buckets(
        &self,
        tenant: &str,
        from: Micros,
        to: Micros,
    ) -> Result<Vec<StoredBucket>, StoreError> {
        let rows = self.query(
            "SELECT source, platform, direction, bucket_start_ms, attempts, events, delivered, failed,
                    dead_lettered, on_time, retried, max_retries, latency_sum_us, latency_hist,
                    bucket_secs
             FROM buckets WHERE tenant = $1 AND bucket_start_ms >= $2 AND bucket_start_ms < $3
             ORDER BY bucket_start_ms",
            &[&tenant, &(from / MICROS_PER_MILLI), &(to / MICROS_PER_MILLI)],
        )?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let (source, platform): (String, String) = (r.get(0), r.get(1));
            let start_ms: i64 = r.get(3);
            let what = || format!("({source}, {tenant}, {platform}, {start_ms})");
            let direction = direction_of(r.get(2), what)?;
            let stats = row_stats(counters_of(r, 4), r.get(13), what)?;
            out.push(StoredBucket {
                source,
                tenant: tenant.to_string(),
                platform,
                direction,
                start: start_ms * MICROS_PER_MILLI,
                width: r.get::<_, i64>(14) * crate::time::MICROS_PER_SEC,
                stats,
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
        let rows = self.query(
            "SELECT reason, SUM(count)::BIGINT FROM rejects
             WHERE tenant = $1 AND bucket_start_ms >= $2 AND bucket_start_ms < $3
             GROUP BY reason ORDER BY reason",
            &[
                &tenant,
                &(from / MICROS_PER_MILLI),
                &(to / MICROS_PER_MILLI),
            ],
        )?;
        rows.iter()
            .map(|r| {
                let code: &str = r.get(0);
                let reason = RejectReason::from_code(code).ok_or_else(|| StoreError::Corrupt {
                    what: "rejects.reason".into(),
                    why: format!("unknown reason {code:?}"),
                })?;
                Ok((reason, r.get::<_, i64>(1) as u64))
            })
            .collect()
    }

    fn unread(&self) -> Result<Vec<(String, Unread)>, StoreError> {
        let rows = self.query(
            "SELECT source, from_offset, to_offset, noticed_ms FROM unread ORDER BY source, from_offset",
            &[],
        )?;
        Ok(rows
            .iter()
            .map(|r| {
                (
                    r.get(0),
                    Unread {
                        from: r.get(1),
                        to: r.get(2),
                        noticed_ms: r.get(3),
                    },
                )
            })
            .collect())
    }
}

impl ReplayStore for PgStore {
    fn begin(&mut self) -> Result<Box<dyn StoreTx + '_>, StoreError> {
        Ok(Box::new(self.begin_tx()?))
    }
}

impl PartitionStore for PgStore {
    /// The checkpoint and its dedup rows from one snapshot (REPEATABLE READ): a commit by
    /// another owner meanwhile cannot pair one checkpoint with another's rows.
    fn checkpoint(&mut self, source: &str) -> Result<Option<Checkpoint>, StoreError> {
        let target = &self.target;
        let conn = open_conn(self.conn.get_mut(), target)?;
        let read = |conn: &mut Conn| -> Result<Option<Checkpoint>, postgres::Error> {
            let mut tx = conn
                .client
                .build_transaction()
                .isolation_level(postgres::IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()?;
            let Some(cp) = tx.query_opt(
                "SELECT version, next_offset, state FROM checkpoints WHERE source = $1",
                &[&source],
            )?
            else {
                return Ok(None);
            };
            let dedup = tx
                .query(
                    "SELECT bucket_start_us, keys FROM dedup_keys WHERE source = $1 ORDER BY bucket_start_us",
                    &[&source],
                )?
                .iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect::<Vec<StoredKeys>>();
            tx.commit()?;
            Ok(Some(Checkpoint {
                version: cp.get(0),
                next_offset: cp.get(1),
                state: cp.get(2),
                dedup,
            }))
        };
        read(conn).map_err(|e| {
            target.error(
                "SELECT on tables checkpoints and dedup_keys (needs SELECT)",
                &e,
            )
        })
    }

    fn commit(&mut self, c: &PartitionCommit<'_>) -> Result<(), StoreError> {
        let tx = self.begin_tx()?;
        apply_commit(&tx, c)?;
        Box::new(tx).commit()
    }

    fn fold_before(&mut self, before: Micros, max_days: usize) -> Result<Folded, StoreError> {
        let this = RefCell::new(self);
        fold_days(
            before,
            max_days,
            |from, end| {
                let rows = this.borrow().query(
                    "SELECT MIN(bucket_start_ms) FROM buckets
                     WHERE bucket_secs < 3600 AND bucket_start_ms >= $1 AND bucket_start_ms < $2",
                    &[&from, &end],
                )?;
                Ok(rows.first().and_then(|r| r.get::<_, Option<i64>>(0)))
            },
            |from, to| this.borrow_mut().fold_day(from, to),
        )
    }

    fn closed_keys(&mut self, source: &str, start: Micros) -> Result<Vec<DedupKey>, StoreError> {
        let span_from = start - crate::store::key_blocks::BLOCK_SPAN;
        let rows = self.query(CLOSED_KEYS, &[&source, &span_from, &start])?;
        checkpoint::unpack_keys(&keys_of_blocks(&rows, start, source)?, source)
    }

    fn queued_windows(&mut self, limit: usize) -> Result<Vec<QueuedWindow>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = self.query(
            "SELECT source, seq, summary FROM window_queue ORDER BY source, seq LIMIT $1",
            &[&limit],
        )?;
        Ok(rows
            .iter()
            .map(|r| QueuedWindow {
                source: r.get(0),
                seq: r.get(1),
                summary: r.get(2),
            })
            .collect())
    }

    fn dequeue_windows(&mut self, source: &str, through: i64) -> Result<(), StoreError> {
        self.query(
            "DELETE FROM window_queue WHERE source = $1 AND seq <= $2",
            &[&source, &through],
        )?;
        Ok(())
    }
}
