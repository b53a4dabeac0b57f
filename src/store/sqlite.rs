//! SQLite scorecard store. Writes are idempotent upserts keyed by
//! (source, tenant, platform, bucket_start_ms), so re-applying the same closed bucket
//! (a replay run again, a partition re-processed after a crash) rewrites the same row.

use super::checkpoint::{DedupRows, StoredKeys};
use super::{Checkpoint, StoreError, StoredBucket};
use crate::engine::{ClosedBucket, Counters, Stats};
use crate::event::{Direction, RejectReason};
use crate::time::{Micros, MICROS_PER_MILLI};
use rusqlite::{params, Connection, OptionalExtension, Transaction};
use std::path::Path;

/// The schema this build writes, kept in `PRAGMA user_version` (and, for readers of
/// the documented schema, in `meta.schema_version`). Versions:
///
/// 1. `buckets`, `rejects`, `meta`, and `checkpoints` as a `WITHOUT ROWID` table.
/// 2. `checkpoints` as a rowid table (its key in a small index, so a fence read or an
///    upsert never reads the whole state blob) and `dedup_keys` beside it.
///
/// Files written before the version moved to `user_version` have `user_version` 0 and a
/// `meta` row saying 1; whatever their `checkpoints` table looks like, the steps of
/// [`migrate`] bring them to the current version.
pub const SCHEMA_VERSION: i64 = 2;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS buckets (
    source            TEXT    NOT NULL,
    tenant            TEXT    NOT NULL,
    platform          TEXT    NOT NULL,
    direction         TEXT    NOT NULL,
    bucket_start_ms   INTEGER NOT NULL,
    bucket_secs       INTEGER NOT NULL,
    attempts          INTEGER NOT NULL,
    events            INTEGER NOT NULL,
    delivered         INTEGER NOT NULL,
    failed            INTEGER NOT NULL,
    dead_lettered     INTEGER NOT NULL,
    on_time           INTEGER NOT NULL,
    retried           INTEGER NOT NULL,
    max_retries       INTEGER NOT NULL,
    latency_sum_us    INTEGER NOT NULL,
    target_latency_ms INTEGER NOT NULL,
    latency_hist      BLOB    NOT NULL,
    PRIMARY KEY (source, tenant, platform, bucket_start_ms)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS buckets_by_tenant ON buckets (tenant, bucket_start_ms);
CREATE TABLE IF NOT EXISTS rejects (
    source          TEXT    NOT NULL,
    tenant          TEXT    NOT NULL,
    platform        TEXT    NOT NULL,
    bucket_start_ms INTEGER NOT NULL,
    reason          TEXT    NOT NULL,
    count           INTEGER NOT NULL,
    PRIMARY KEY (source, tenant, platform, bucket_start_ms, reason)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS checkpoints (
    source     TEXT PRIMARY KEY,
    version    INTEGER NOT NULL,
    next_offset INTEGER NOT NULL,
    state      BLOB    NOT NULL,
    updated_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS dedup_keys (
    source          TEXT    NOT NULL,
    bucket_start_us INTEGER NOT NULL,
    keys            BLOB    NOT NULL
);
CREATE INDEX IF NOT EXISTS dedup_keys_by_bucket ON dedup_keys (source, bucket_start_us);
";

/// The schema version of an open file: `user_version`, or for a file from before that
/// was kept there, 1 if it has the `meta` row, 0 if it is new (no tables).
fn schema_version(conn: &Connection) -> Result<i64, rusqlite::Error> {
    let v: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if v > 0 {
        return Ok(v);
    }
    let has_meta: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta')",
        [],
        |r| r.get(0),
    )?;
    if !has_meta {
        return Ok(0);
    }
    let legacy: Option<String> = conn
        .query_row(
            "SELECT value FROM meta WHERE key = 'schema_version'",
            [],
            |r| r.get(0),
        )
        .optional()?;
    Ok(legacy.and_then(|v| v.parse().ok()).unwrap_or(0))
}

/// How long [`SqliteStore::open`] retries an open that another process's open refused.
const OPEN_PATIENCE: std::time::Duration = std::time::Duration::from_secs(10);

fn is_busy(e: &StoreError) -> bool {
    let sql = match e {
        StoreError::Open { source, .. } => source,
        StoreError::Sql(e) => e,
        _ => return false,
    };
    matches!(
        sql.sqlite_error_code(),
        Some(rusqlite::ffi::ErrorCode::DatabaseBusy | rusqlite::ffi::ErrorCode::DatabaseLocked)
    )
}

fn cannot_create_shm(e: &rusqlite::Error) -> bool {
    use rusqlite::ffi::ErrorCode;
    matches!(
        e.sqlite_error_code(),
        Some(ErrorCode::ReadOnly | ErrorCode::CannotOpen)
    )
}

fn wal_of(path: &Path) -> std::path::PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push("-wal");
    p.into()
}

/// `path` for a `file:` URI: the characters a URI gives meaning to, percent-encoded.
fn uri_path(path: &Path) -> String {
    let mut out = String::new();
    for c in path.to_string_lossy().chars() {
        match c {
            '%' => out.push_str("%25"),
            '?' => out.push_str("%3f"),
            '#' => out.push_str("%23"),
            c => out.push(c),
        }
    }
    out
}

/// Brings the file to [`SCHEMA_VERSION`], one step at a time, in one transaction.
/// Reads first: a store already current takes no write lock here, so opening it never
/// waits on a running writer.
fn migrate(conn: &Connection, path: &str) -> Result<(), StoreError> {
    let open_err = |source| StoreError::Open {
        path: path.to_string(),
        source,
    };
    let too_new = |found| StoreError::SchemaVersion {
        path: path.to_string(),
        found,
        expected: SCHEMA_VERSION,
    };
    let found = schema_version(conn).map_err(open_err)?;
    if found == SCHEMA_VERSION {
        return Ok(());
    }
    if found > SCHEMA_VERSION {
        return Err(too_new(found));
    }
    conn.execute_batch("BEGIN IMMEDIATE").map_err(open_err)?;
    let steps = || -> Result<(), StoreError> {
        // Again under the lock: another process may have migrated it meanwhile.
        let found = schema_version(conn)?;
        if found > SCHEMA_VERSION {
            return Err(too_new(found));
        }
        if found == 1 {
            rebuild_checkpoints(conn)?;
        }
        // New tables and indexes of every version (all `IF NOT EXISTS`).
        conn.execute_batch(SCHEMA)?;
        conn.pragma_update(None, "user_version", SCHEMA_VERSION)?;
        conn.execute(
            "INSERT INTO meta (key, value) VALUES ('schema_version', ?1)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            params![SCHEMA_VERSION.to_string()],
        )?;
        Ok(())
    };
    match steps() {
        Ok(()) => conn.execute_batch("COMMIT").map_err(open_err),
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK");
            Err(e)
        }
    }
}

/// Version 1 → 2: a `WITHOUT ROWID` `checkpoints` table rebuilt as a rowid table with the
/// same columns and rows. In a `WITHOUT ROWID` table the row is the primary key's B-tree
/// entry, so each fence read and each upsert of a checkpoint read its whole blob; in a
/// rowid table the key sits in a small index and the blob is read only when selected.
fn rebuild_checkpoints(conn: &Connection) -> Result<(), rusqlite::Error> {
    let sql: Option<String> = conn
        .query_row(
            "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'checkpoints'",
            [],
            |r| r.get(0),
        )
        .optional()?;
    if !sql.is_some_and(|s| s.to_ascii_uppercase().contains("WITHOUT ROWID")) {
        return Ok(());
    }
    // The new table comes from `SCHEMA` itself (its other tables exist, so only
    // `checkpoints` is created), so the two definitions cannot drift apart.
    conn.execute_batch("ALTER TABLE checkpoints RENAME TO checkpoints_old")?;
    conn.execute_batch(SCHEMA)?;
    conn.execute_batch(
        "INSERT INTO checkpoints SELECT * FROM checkpoints_old;
         DROP TABLE checkpoints_old;",
    )
}

/// One tenant's data in a store: buckets from `from` to `to` (µs), `events` in them.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Coverage {
    pub tenant: String,
    pub from: Micros,
    pub to: Micros,
    pub events: u64,
}

pub struct SqliteStore {
    conn: Connection,
    path: String,
}

/// One atomic unit of writes: everything a replay run or a checkpoint produced.
pub struct StoreWriter<'a> {
    tx: Transaction<'a>,
}

impl SqliteStore {
    /// Opens (creating or upgrading) a store for writing. Several processes may open one
    /// new store at once: SQLite then refuses one of them at once rather than let two
    /// lock upgrades wait on each other (a busy error the busy timeout does not cover),
    /// so a refused open is retried for up to [`OPEN_PATIENCE`].
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let deadline = std::time::Instant::now() + OPEN_PATIENCE;
        loop {
            match Self::open_once(path) {
                Err(e) if is_busy(&e) && std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                other => return other,
            }
        }
    }

    fn open_once(path: &Path) -> Result<Self, StoreError> {
        let p = path.display().to_string();
        let open_err = |source| StoreError::Open {
            path: p.clone(),
            source,
        };
        let conn = Connection::open(path).map_err(open_err)?;
        // First: switching to WAL and creating the schema take the write lock, and a
        // process opening the store while another writes it must wait, not fail.
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(open_err)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(open_err)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(open_err)?;
        // 64 MiB of page cache (default 2 MiB): with a million bucket rows the primary-key
        // B-tree would no longer fit, and every upsert would re-read pages from disk.
        conn.pragma_update(None, "cache_size", -65536)
            .map_err(open_err)?;
        migrate(&conn, &p)?;
        Ok(Self { conn, path: p })
    }

    /// Opens an existing store for reading only (`scorecard`): nothing is created or
    /// written, so a user who may only read the file can read it. Any schema version up to
    /// this build's is read as it is.
    pub fn open_read_only(path: &Path) -> Result<Self, StoreError> {
        use rusqlite::OpenFlags;
        let p = path.display().to_string();
        let open_err = |source| StoreError::Open {
            path: p.clone(),
            source,
        };
        if !path.exists() {
            return Err(StoreError::Missing { path: p });
        }
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags).map_err(open_err)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(open_err)?;
        let (conn, found) = match schema_version(&conn) {
            Ok(v) => (conn, v),
            // A WAL file needs its `-shm` beside it; a reader who may not create one in
            // the directory reads the file as immutable, which is exact while no writer
            // has a `-wal` open (none exists).
            Err(e) if cannot_create_shm(&e) && !wal_of(path).exists() => {
                drop(conn);
                let uri = format!("file:{}?immutable=1", uri_path(path));
                let conn = Connection::open_with_flags(uri, flags | OpenFlags::SQLITE_OPEN_URI)
                    .map_err(open_err)?;
                let v = schema_version(&conn).map_err(open_err)?;
                (conn, v)
            }
            Err(e) => return Err(open_err(e)),
        };
        if found > SCHEMA_VERSION {
            return Err(StoreError::SchemaVersion {
                path: p,
                found,
                expected: SCHEMA_VERSION,
            });
        }
        if found == 0 {
            return Err(StoreError::Missing { path: p });
        }
        Ok(Self { conn, path: p })
    }

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

    /// What the store holds per tenant (of one source, or all): the span of its buckets
    /// and its events. For messages that tell a user which tenants and dates to ask for.
    pub fn coverage(&self, source: Option<&str>) -> Result<Vec<Coverage>, StoreError> {
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

    /// Closed buckets of one tenant with `from <= start < to`, all sources.
    pub fn buckets(
        &self,
        tenant: &str,
        from: Micros,
        to: Micros,
    ) -> Result<Vec<StoredBucket>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT source, platform, direction, bucket_start_ms, attempts, events, delivered, failed,
                    dead_lettered, on_time, retried, max_retries, latency_sum_us, latency_hist
             FROM buckets WHERE tenant = ?1 AND bucket_start_ms >= ?2 AND bucket_start_ms < ?3
             ORDER BY bucket_start_ms, platform, source",
        )?;
        let rows = stmt.query_map(
            params![tenant, from / MICROS_PER_MILLI, to / MICROS_PER_MILLI],
            |r| {
                let n = |i: usize| r.get::<_, i64>(i).map(|v| v as u64);
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, i64>(3)?,
                    Counters {
                        attempts: n(4)?,
                        events: n(5)?,
                        delivered: n(6)?,
                        failed: n(7)?,
                        dead_lettered: n(8)?,
                        on_time: n(9)?,
                        retried: n(10)?,
                        max_retries: n(11)?,
                        latency_sum_us: n(12)?,
                    },
                    r.get::<_, Vec<u8>>(13)?,
                ))
            },
        )?;
        let mut out = Vec::new();
        for row in rows {
            let (source, platform, direction, start_ms, counters, hist) = row?;
            let what = || format!("({source}, {tenant}, {platform}, {start_ms})");
            let latency = Stats::latencies_from_bytes(&hist)
                .map_err(|why| StoreError::Corrupt { what: what(), why })?;
            let direction = Direction::parse(&direction).ok_or_else(|| StoreError::Corrupt {
                what: what(),
                why: format!("direction {direction:?}"),
            })?;
            out.push(StoredBucket {
                source,
                tenant: tenant.to_string(),
                platform,
                direction,
                start: start_ms * MICROS_PER_MILLI,
                stats: Stats { counters, latency },
            });
        }
        Ok(out)
    }

    /// Rejected records attributed to `tenant` with completed_at in `[from, to)`, by reason.
    pub fn rejects(
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
            open_rejects: Vec::new(),
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

impl StoreWriter<'_> {
    /// Deletes every row a source wrote (a replay run re-executed replaces its output).
    pub fn clear_source(&self, source: &str) -> Result<(), StoreError> {
        self.tx
            .execute("DELETE FROM buckets WHERE source = ?1", params![source])?;
        self.tx
            .execute("DELETE FROM rejects WHERE source = ?1", params![source])?;
        Ok(())
    }

    pub fn put_bucket(&self, source: &str, b: &ClosedBucket) -> Result<(), StoreError> {
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

    /// Adds rejection counts. Exactly-once because the caller commits them in the same
    /// transaction as the checkpoint (live) or after `clear_source` (replay).
    pub fn add_rejects(
        &self,
        source: &str,
        tenant: &str,
        platform: &str,
        bucket: Micros,
        reason: RejectReason,
        n: u64,
    ) -> Result<(), StoreError> {
        let mut stmt = self.tx.prepare_cached(
            "INSERT INTO rejects (source, tenant, platform, bucket_start_ms, reason, count)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (source, tenant, platform, bucket_start_ms, reason)
             DO UPDATE SET count = count + excluded.count",
        )?;
        stmt.execute(params![
            source,
            tenant,
            platform,
            bucket / MICROS_PER_MILLI,
            reason.code(),
            n as i64
        ])?;
        Ok(())
    }

    /// The next offset of the source's stored checkpoint, read inside this transaction.
    pub fn checkpoint_offset(&self, source: &str) -> Result<Option<i64>, StoreError> {
        Ok(self
            .tx
            .query_row(
                "SELECT next_offset FROM checkpoints WHERE source = ?1",
                params![source],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// Applies a commit's dedup rows (see [`DedupRows`]): one row per bucket per commit,
    /// so a commit writes the keys of its interval and closing a bucket deletes its rows.
    pub fn put_dedup(&self, source: &str, d: &DedupRows) -> Result<(), StoreError> {
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

    pub fn put_checkpoint(
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

    pub fn commit(self) -> Result<(), StoreError> {
        self.tx.commit()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Version 1 as it was first written: `checkpoints` without rowid, no `dedup_keys`,
    /// the version in `meta` only.
    fn version_1_schema() -> String {
        let without_dedup = &SCHEMA[..SCHEMA
            .find("CREATE TABLE IF NOT EXISTS dedup_keys")
            .unwrap_or(SCHEMA.len())];
        without_dedup.replace(
            "    updated_ms INTEGER NOT NULL\n);\n",
            "    updated_ms INTEGER NOT NULL\n) WITHOUT ROWID;\n",
        )
    }

    /// Version 1 files as later releases left them: `checkpoints` already a rowid table
    /// and `dedup_keys` present, the version still 1 in `meta`.
    fn version_1_late_schema() -> String {
        SCHEMA.to_string()
    }

    fn table_sql(s: &SqliteStore, name: &str) -> Option<String> {
        s.conn
            .query_row(
                "SELECT sql FROM sqlite_master WHERE name = ?1",
                params![name],
                |r| r.get(0),
            )
            .optional()
            .expect("schema row")
    }

    /// A store of every earlier schema opens with its rows intact at the current version,
    /// and opening it again changes nothing.
    #[test]
    fn stores_of_every_earlier_schema_open_at_the_current_version() {
        for (name, schema) in [
            ("v1", version_1_schema()),
            ("v1-late", version_1_late_schema()),
        ] {
            let dir = tempfile::tempdir().expect("temp dir");
            let path = dir.path().join("old.db");
            let blob: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
            {
                let c = Connection::open(&path).expect("open");
                c.execute_batch(&schema).expect("old schema");
                c.execute(
                    "INSERT INTO meta (key, value) VALUES ('schema_version', '1')",
                    [],
                )
                .expect("meta");
                c.execute(
                    "INSERT INTO checkpoints VALUES ('kafka:t/0', 1, 42, ?1, 7)",
                    params![blob],
                )
                .expect("row");
            }
            // Read-only: read as it is, nothing written.
            let before = std::fs::read(&path).expect("bytes");
            let r = SqliteStore::open_read_only(&path).expect("read-only open");
            assert_eq!(schema_version(&r.conn).expect("version"), 1, "{name}");
            drop(r);
            assert_eq!(std::fs::read(&path).expect("bytes"), before, "{name}");
            for _ in 0..2 {
                let s = SqliteStore::open(&path).expect("open old store");
                let v: i64 = s
                    .conn
                    .pragma_query_value(None, "user_version", |r| r.get(0))
                    .expect("user_version");
                assert_eq!(v, SCHEMA_VERSION, "{name}");
                let cp = table_sql(&s, "checkpoints").expect("checkpoints table");
                assert!(!cp.to_uppercase().contains("WITHOUT ROWID"), "{name}: {cp}");
                assert!(table_sql(&s, "dedup_keys").is_some(), "{name}");
                assert_eq!(
                    s.checkpoint("kafka:t/0").expect("read"),
                    Some((1, 42, blob.clone())),
                    "{name}"
                );
            }
        }
    }

    /// A store written by a newer release is refused with its version, read or write.
    #[test]
    fn a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("new.db");
        drop(SqliteStore::open(&path).expect("create"));
        {
            let c = Connection::open(&path).expect("open");
            c.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
                .expect("bump");
        }
        for r in [SqliteStore::open(&path), SqliteStore::open_read_only(&path)] {
            match r {
                Err(StoreError::SchemaVersion { found, .. }) => {
                    assert_eq!(found, SCHEMA_VERSION + 1)
                }
                Err(e) => panic!("unexpected error: {e}"),
                Ok(_) => panic!("a newer schema opened"),
            }
        }
    }

    /// Instances started together open one new store at once: every open succeeds.
    #[test]
    fn many_writers_may_open_one_new_store_at_once() {
        for _ in 0..20 {
            let dir = tempfile::tempdir().expect("temp dir");
            let path = dir.path().join("shared.db");
            let opens: Vec<_> = (0..4)
                .map(|_| {
                    let path = path.clone();
                    std::thread::spawn(move || SqliteStore::open(&path).map(|_| ()))
                })
                .collect();
            for o in opens {
                let r = o.join().expect("thread");
                assert!(r.is_ok(), "{r:?}");
            }
        }
    }

    /// Opening for reading never creates a file.
    #[test]
    fn read_only_open_of_a_missing_store_creates_nothing() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("none.db");
        assert!(matches!(
            SqliteStore::open_read_only(&path),
            Err(StoreError::Missing { .. })
        ));
        assert!(!path.exists());
    }
}
