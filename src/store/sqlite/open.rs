//! Opening a SQLite store: connection settings, the schema and its versions, migration
//! of older files, and read-only access for readers who may not write the file.

use super::SqliteStore;
use crate::store::StoreError;
use rusqlite::{params, Connection, OptionalExtension};
use std::path::Path;

/// The schema this build writes, kept in `PRAGMA user_version` (and, for readers of
/// the documented schema, in `meta.schema_version`). Versions:
///
/// 1. `buckets`, `rejects`, `meta`, and `checkpoints` as a `WITHOUT ROWID` table.
/// 2. `checkpoints` as a rowid table (its key in a small index, so a fence read or an
///    upsert never reads the whole state blob) and `dedup_keys` beside it.
/// 3. `closed_keys`: the dedup keys of closed buckets within the correction horizon;
///    `unread`: offsets a log lost before they were read.
/// 4. `window_queue` and `window_queue_seq`: windows committed but not yet published to
///    `kafka.windows_topic`.
/// 5. `closed_keys.last_start_us`: key sets in blocks of buckets (`store::key_blocks`);
///    a per-bucket row of an older file is a block of one bucket.
///
/// Files written before the version moved to `user_version` have `user_version` 0 and a
/// `meta` row saying 1; whatever their `checkpoints` table looks like, the steps of
/// [`migrate`] bring them to the current version.
pub const SCHEMA_VERSION: i64 = 5;

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
CREATE TABLE IF NOT EXISTS closed_keys (
    source          TEXT    NOT NULL,
    bucket_start_us INTEGER NOT NULL,
    segment         INTEGER,
    keys            BLOB    NOT NULL,
    last_start_us   INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS closed_keys_by_bucket ON closed_keys (source, bucket_start_us);
CREATE INDEX IF NOT EXISTS closed_keys_by_start ON closed_keys (bucket_start_us);
CREATE INDEX IF NOT EXISTS buckets_to_fold ON buckets (bucket_start_ms) WHERE bucket_secs < 3600;
CREATE TABLE IF NOT EXISTS replay_rejects (
    source      TEXT    NOT NULL,
    record_hash INTEGER NOT NULL,
    PRIMARY KEY (source, record_hash)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS window_queue (
    source  TEXT    NOT NULL,
    seq     INTEGER NOT NULL,
    summary BLOB    NOT NULL,
    PRIMARY KEY (source, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS window_queue_seq (
    source   TEXT    PRIMARY KEY,
    last_seq INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS unread (
    source      TEXT    NOT NULL,
    from_offset INTEGER NOT NULL,
    to_offset   INTEGER NOT NULL,
    noticed_ms  INTEGER NOT NULL,
    PRIMARY KEY (source, from_offset)
);
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
    matches!(e, StoreError::Failed { busy: true, .. })
}

fn cannot_create_shm(e: &rusqlite::Error) -> bool {
    use rusqlite::ffi::ErrorCode;
    matches!(
        e.sqlite_error_code(),
        Some(ErrorCode::ReadOnly | ErrorCode::CannotOpen)
    )
}

/// A store file's companion: `-wal` or `-shm` beside it.
fn companion(path: &Path, suffix: &str) -> std::path::PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(suffix);
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
    let open_err = |source| StoreError::sqlite_open(path, source);
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
        block_closed_keys(conn)?;
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

/// Version 3 or 4 → 5: `closed_keys` rows of one bucket each become blocks of one
/// bucket (`last_start_us` = `bucket_start_us`), which is what they are.
fn block_closed_keys(conn: &Connection) -> Result<(), rusqlite::Error> {
    let has: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM pragma_table_info('closed_keys') WHERE name = 'last_start_us')",
        [],
        |r| r.get(0),
    )?;
    if has {
        return Ok(());
    }
    conn.execute_batch(
        "ALTER TABLE closed_keys ADD COLUMN last_start_us INTEGER NOT NULL DEFAULT 0;
         UPDATE closed_keys SET last_start_us = bucket_start_us;",
    )
}

/// Page size of a new store file (SQLite's default is 4,096).
const PAGE_SIZE: i64 = 16_384;

/// How often the [`Checkpointer`] copies the write-ahead log into the store file.
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(200);

/// A thread with its own connection that checkpoints the write-ahead log (copies its
/// committed pages into the store file, then syncs it) every [`CHECKPOINT_EVERY`], so the
/// writer never does. SQLite's default has the writer checkpoint inside a commit once the
/// log passes 1,000 pages: on the live path that is the apply thread writing and syncing
/// the store file, about a fifteenth of its time in a backfill, while records wait.
/// Passive checkpoints never block the writer; the log restarts from its beginning after
/// one that copied everything.
pub(super) struct Checkpointer {
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Checkpointer {
    /// `None` for an in-memory store (it has no log), and when its connection or thread
    /// cannot be had: the writer then checkpoints by itself, as SQLite does by default.
    fn start(path: &Path) -> Option<Self> {
        if path == Path::new(":memory:") {
            return None;
        }
        let conn = Connection::open(path).ok()?;
        conn.busy_timeout(std::time::Duration::from_secs(5)).ok()?;
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("slatrack-sqlite-wal".into())
            .spawn(move || {
                while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                    stopped.recv_timeout(CHECKPOINT_EVERY)
                {
                    if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
                    {
                        tracing::debug!(error = %e, "write-ahead log checkpoint deferred");
                    }
                }
            })
            .ok()?;
        Some(Self {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl SqliteStore {
    /// Removes a store file with its `-wal` and `-shm` companions; those already absent
    /// are fine. Only for a store no process has open.
    pub fn remove(path: &Path) -> std::io::Result<()> {
        for p in [
            path.to_path_buf(),
            companion(path, "-wal"),
            companion(path, "-shm"),
        ] {
            match std::fs::remove_file(&p) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        Ok(())
    }

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
        let open_err = |source| StoreError::sqlite_open(&p, source);
        let conn = Connection::open(path).map_err(open_err)?;
        // First: switching to WAL and creating the schema take the write lock, and a
        // process opening the store while another writes it must wait, not fail.
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(open_err)?;
        // 16 KiB pages for a new file (an existing one keeps its own): a commit's rows
        // and index entries land on a quarter as many pages, so the B-trees split and the
        // write-ahead log takes fewer, fuller frames. About 5 % of a backfill's CPU.
        conn.pragma_update(None, "page_size", PAGE_SIZE)
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
        let checkpointer = Checkpointer::start(path);
        if checkpointer.is_some() {
            conn.pragma_update(None, "wal_autocheckpoint", 0)
                .map_err(open_err)?;
        }
        Ok(Self {
            conn,
            path: p,
            _checkpointer: checkpointer,
        })
    }

    /// Opens an existing store for reading only (`scorecard`): nothing is created or
    /// written, so a user who may only read the file can read it. Any schema version up to
    /// this build's is read as it is.
    pub fn open_read_only(path: &Path) -> Result<Self, StoreError> {
        use rusqlite::OpenFlags;
        let p = path.display().to_string();
        let open_err = |source| StoreError::sqlite_open(&p, source);
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
            Err(e) if cannot_create_shm(&e) && !companion(path, "-wal").exists() => {
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
        Ok(Self {
            conn,
            path: p,
            _checkpointer: None,
        })
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
        SCHEMA[..SCHEMA
            .find("CREATE TABLE IF NOT EXISTS closed_keys")
            .unwrap_or(SCHEMA.len())]
            .to_string()
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
        for (name, schema, version) in [
            ("v1", version_1_schema(), 1),
            ("v1-late", version_1_late_schema(), 1),
            ("v2", version_1_late_schema(), 2),
        ] {
            let dir = tempfile::tempdir().expect("temp dir");
            let path = dir.path().join("old.db");
            let blob: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
            {
                let c = Connection::open(&path).expect("open");
                c.execute_batch(&schema).expect("old schema");
                c.execute(
                    "INSERT INTO meta (key, value) VALUES ('schema_version', ?1)",
                    params![version.to_string()],
                )
                .expect("meta");
                if version > 1 {
                    c.pragma_update(None, "user_version", version)
                        .expect("user_version");
                }
                c.execute(
                    "INSERT INTO checkpoints VALUES ('kafka:t/0', 1, 42, ?1, 7)",
                    params![blob],
                )
                .expect("row");
            }
            // Read-only: read as it is, nothing written.
            let before = std::fs::read(&path).expect("bytes");
            let r = SqliteStore::open_read_only(&path).expect("read-only open");
            assert_eq!(schema_version(&r.conn).expect("version"), version, "{name}");
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
                assert!(table_sql(&s, "closed_keys").is_some(), "{name}");
                assert_eq!(
                    s.checkpoint("kafka:t/0").expect("read"),
                    Some((1, 42, blob.clone())),
                    "{name}"
                );
            }
        }
    }

    /// A version 4 file's per-bucket `closed_keys` rows read back, after the upgrade, as
    /// the keys of their bucket, beside blocks written since.
    #[test]
    fn per_bucket_key_rows_of_version_4_read_as_blocks() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("v4.db");
        let old = [7u8; 24];
        {
            let c = Connection::open(&path).expect("open");
            c.execute_batch(&SCHEMA.replace(
                "    keys            BLOB    NOT NULL,\n    last_start_us   INTEGER NOT NULL\n",
                "    keys            BLOB    NOT NULL\n",
            ))
            .expect("v4 schema");
            c.pragma_update(None, "user_version", 4).expect("version");
            c.execute(
                "INSERT INTO closed_keys (source, bucket_start_us, keys) VALUES ('s', 60000000, ?1)",
                params![old.to_vec()],
            )
            .expect("row");
        }
        let mut s = SqliteStore::open(&path).expect("upgrade");
        let page: i64 = s
            .conn
            .pragma_query_value(None, "page_size", |r| r.get(0))
            .expect("pragma");
        assert_eq!(page, 4096, "an existing file keeps its pages");
        let w = s.writer().expect("writer");
        let new = crate::store::ClosedKeys {
            start: 60_000_000,
            keys: vec![9u8; 12],
        };
        let other = crate::store::ClosedKeys {
            start: 120_000_000,
            keys: vec![3u8; 12],
        };
        let blocks = crate::store::key_blocks::blocks(&[new.clone(), other.clone()]);
        crate::store::StoreTx::add_closed_keys(&w, "s", &blocks).expect("add");
        w.commit().expect("commit");
        let mut want = old.to_vec();
        want.extend(&new.keys);
        assert_eq!(s.closed_keys("s", 60_000_000).expect("read"), want);
        assert_eq!(s.closed_keys("s", 120_000_000).expect("read"), other.keys);
    }

    /// The writer never checkpoints; the checkpointer thread copies what it commits into
    /// the store file while the store stays open.
    #[test]
    fn the_log_is_copied_into_the_file_while_the_writer_goes_on() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("wal.db");
        let mut s = SqliteStore::open(&path).expect("open");
        let blob = vec![7u8; 2 << 20];
        let w = s.writer().expect("writer");
        crate::store::StoreTx::put_checkpoint(&w, "s", 2, 1, &blob, 0).expect("write");
        w.commit().expect("commit");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while std::fs::metadata(&path).expect("file").len() < blob.len() as u64 {
            assert!(
                std::time::Instant::now() < deadline,
                "the store file never took the committed pages"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let autocheckpoint: i64 = s
            .conn
            .pragma_query_value(None, "wal_autocheckpoint", |r| r.get(0))
            .expect("pragma");
        assert_eq!(autocheckpoint, 0, "the writer does not checkpoint");
        let page: i64 = s
            .conn
            .pragma_query_value(None, "page_size", |r| r.get(0))
            .expect("pragma");
        assert_eq!(page, PAGE_SIZE, "a new file");
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
