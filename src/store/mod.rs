//! The stores of record: durable closed buckets, rejection counts, partition checkpoints
//! and the queue of windows to publish. SQLite (one instance) and PostgreSQL (shared by
//! several) implement one contract, [`Store`]; their schema is documented in
//! docs/stores.md so a scorecard job in any language can read it. [`open`] is the one
//! place a store is opened from its location.

pub mod access;
pub mod checkpoint;
pub mod fold;
pub mod key_blocks;
pub mod postgres;
pub mod rows;
pub mod sqlite;

pub use access::{apply_commit, write_output, Coverage, ReplayStore, StoreRead, StoreTx};

pub use postgres::{PgStore, PgTarget};
pub use sqlite::{SqliteStore, StoreWriter};

use crate::engine::correction::Correction;
use crate::engine::dedup::DedupKey;
use crate::engine::ClosedBucket;
use crate::event::{Direction, RejectReason};
use crate::time::Micros;
use checkpoint::{DedupRows, StoredKeys};
use std::path::PathBuf;

/// Why a store operation failed, the same shape for every store: which store, what it
/// was doing, why, and the operator's next step.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{store}{}: {why} ({hint})", op_part(.op))]
    Failed {
        /// "SQLite store PATH" or "PostgreSQL store URL (password hidden)".
        store: String,
        /// The operation or statement; empty where the store does not say.
        op: String,
        why: String,
        hint: &'static str,
        /// Another writer holds the store's lock (SQLite busy or locked): worth retrying.
        busy: bool,
    },
    #[error("no scorecard store at {path}: run `slatrack replay` or `slatrack run` first, or pass --store")]
    Missing { path: String },
    #[error("scorecard store {path} has schema version {found}, this slatrack understands {expected}: use a matching slatrack release or a new store file")]
    SchemaVersion {
        path: String,
        found: i64,
        expected: i64,
    },
    #[error("--store / store.path {0:?} is not a store: use a SQLite file path or postgres://USER@HOST:PORT/DB")]
    BadLocation(String),
    #[error("--store / store.path {0:?}: Kafka is not a store of record. Keep windows and checkpoints in PostgreSQL (store.path = \"postgres://USER@HOST:PORT/DB\", shared by several instances) or a SQLite file (one instance), and publish closed windows to Kafka with kafka.windows_topic = \"TOPIC\" (docs/stores.md, \"Publishing windows\")")]
    KafkaIsNotAStore(String),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(
        "scorecard store row {what} is corrupt: {why} (the store was modified outside slatrack: restore it from a backup, or replay into a new store)"
    )]
    Corrupt { what: String, why: String },
    #[error("partition {source_id}'s checkpoint in the store is at {found:?}, not at {expected:?} where this owner continued from: another instance owns it too (a rebalance overlapped them); this owner resumes from the store's checkpoint")]
    Superseded {
        source_id: String,
        expected: Option<i64>,
        found: Option<i64>,
    },
}

/// A closed bucket as read back from the store.
#[derive(Debug, Clone)]
pub struct StoredBucket {
    pub source: String,
    pub tenant: String,
    pub platform: String,
    pub direction: Direction,
    pub start: Micros,
    /// How long a span the row covers (a minute, merged minutes, an hour…).
    pub width: Micros,
    pub stats: crate::engine::Stats,
}

fn op_part(op: &str) -> String {
    if op.is_empty() {
        String::new()
    } else {
        format!(": {op}")
    }
}

impl StoreError {
    /// A SQLite store's file could not be opened.
    pub fn sqlite_open(path: &str, e: rusqlite::Error) -> Self {
        let hint = match sql_hint(&e) {
            h if is_sqlite_busy(&e) || h != SQL_RETRY_HINT => h,
            _ => "check store.path / --store and the directory's permissions",
        };
        StoreError::Failed {
            store: format!("SQLite store {path}"),
            op: "open".into(),
            why: e.to_string(),
            hint,
            busy: is_sqlite_busy(&e),
        }
    }

    /// A PostgreSQL store's operation failed (`location` without the password).
    pub fn postgres(location: &str, op: &str, why: String, hint: &'static str) -> Self {
        StoreError::Failed {
            store: format!("PostgreSQL store {location}"),
            op: op.to_string(),
            why,
            hint,
            busy: false,
        }
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Failed {
            store: "SQLite store".into(),
            op: String::new(),
            why: e.to_string(),
            hint: sql_hint(&e),
            busy: is_sqlite_busy(&e),
        }
    }
}

fn is_sqlite_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    )
}

const SQL_RETRY_HINT: &str =
    "checkpoints are retried; fetching pauses until the store accepts writes";

/// What to do about a SQLite failure, by its code: the operator's next step.
fn sql_hint(e: &rusqlite::Error) -> &'static str {
    use rusqlite::ErrorCode as C;
    match e.sqlite_error_code() {
        Some(C::DiskFull) => "the disk is full: free space or grow the volume; checkpoints resume by themselves",
        Some(C::DatabaseBusy | C::DatabaseLocked) => "another process holds the store's write lock: only one slatrack may write a SQLite store; checkpoints resume once it is released",
        Some(C::ReadOnly | C::PermissionDenied) => "the store file or its directory is read-only: fix permissions; checkpoints resume by themselves",
        Some(C::CannotOpen) => "the store file cannot be opened: check store.path and its directory",
        _ => SQL_RETRY_HINT,
    }
}

/// Where closed windows and checkpoints go: `store.path` / `--store` is a SQLite file or
/// a `postgres://` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    Sqlite(PathBuf),
    Postgres(Box<PgTarget>),
}

impl Location {
    pub fn parse(s: &str) -> Result<Self, StoreError> {
        if PgTarget::is_url(s) {
            return Ok(Location::Postgres(Box::new(PgTarget::parse(s)?)));
        }
        if s.starts_with("kafka://") {
            return Err(StoreError::KafkaIsNotAStore(s.to_string()));
        }
        if s.is_empty() {
            return Err(StoreError::BadLocation(s.to_string()));
        }
        Ok(Location::Sqlite(PathBuf::from(s)))
    }

    pub fn of_path(p: &std::path::Path) -> Result<Self, StoreError> {
        Self::parse(&p.to_string_lossy())
    }

    /// The store at `path` (`--store`, else `store.path`), with `store.password` resolved
    /// for a PostgreSQL store.
    pub fn of_config(
        path: Option<&std::path::Path>,
        cfg: &crate::config::StoreConfig,
    ) -> Result<Self, StoreError> {
        let mut location = Self::of_path(path.unwrap_or(&cfg.path))?;
        if let (Location::Postgres(t), Some(p)) = (&mut location, &cfg.password) {
            t.set_password(&crate::config::resolve_secret("store.password", p)?);
        }
        Ok(location)
    }
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::Sqlite(p) => write!(f, "{}", p.display()),
            Location::Postgres(t) => write!(f, "{t}"),
        }
    }
}

/// A partition's durable checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub version: i64,
    pub next_offset: i64,
    pub state: Vec<u8>,
    /// The dedup keys kept beside the checkpoint, read with it.
    pub dedup: Vec<StoredKeys>,
}

/// One rejection count not yet stored.
#[derive(Debug, Clone, Copy)]
pub struct RejectRow<'a> {
    pub tenant: &'a str,
    pub platform: &'a str,
    pub bucket: Micros,
    pub reason: RejectReason,
    pub count: u64,
}

/// Everything one partition makes durable at a checkpoint, in one transaction: after a
/// crash either all of it is there or none.
pub struct PartitionCommit<'a> {
    pub source: &'a str,
    /// The checkpoint this owner restored or last wrote (`None`: it started without one).
    /// The store refuses the commit unless its checkpoint is still that one.
    pub expected: Option<i64>,
    pub next_offset: i64,
    pub state: &'a [u8],
    /// The buckets, corrections and key sets since the previous commit.
    pub output: CommitOutput<'a>,
    /// Closed buckets' keys starting before this are past the horizon: drop them.
    pub keys_before: Micros,
    /// Offsets of this source deleted from the log before they were read.
    pub unread: Option<Unread>,
    /// Counted since the previous commit.
    pub rejects: &'a [RejectRow<'a>],
    /// The dedup keys to write beside the checkpoint (`state` holds none).
    pub dedup: &'a DedupRows,
    /// Queue the buckets and corrections for publishing (`kafka.windows_topic` is set;
    /// see [`crate::sink::windows`]).
    pub publish: bool,
}

/// What a pipeline makes durable at a commit, live or replay (`crate::pipeline`), written
/// by [`access::write_output`].
#[derive(Clone, Copy)]
pub struct CommitOutput<'a> {
    pub buckets: &'a [ClosedBucket],
    /// Partial buckets to add to stored ones: records counted for buckets that had
    /// closed (see [`crate::engine::correction`]).
    pub corrections: &'a [Correction],
    /// Dedup keys of closed buckets to keep (until the correction horizon passes, live):
    /// each closed bucket's set, and the keys each correction counted.
    pub closed_keys: &'a [ClosedKeys],
    /// How the closed buckets merge into rows ([`rows::commit_rows`]).
    pub grain: &'a rows::RowGrain,
}

/// Dedup keys of one closed bucket, packed ([`checkpoint::pack`]): the bucket's set as it
/// closed, or the keys one commit's corrections counted in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClosedKeys {
    pub start: Micros,
    pub keys: Vec<u8>,
}

/// Offsets `from..to` of a source that its log no longer held when slatrack came to read
/// them (retention deleted them), noticed at `noticed_ms` (epoch ms).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Unread {
    pub from: i64,
    pub to: i64,
    pub noticed_ms: i64,
}

/// What a fold did: rows folded, and whether days remain to fold before the same bound.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Folded {
    pub rows: u64,
    pub more: bool,
}

/// A window queued for publishing: its source, its sequence number in that source's
/// queue (what makes its output key unique), and the encoded `WindowSummary`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedWindow {
    pub source: String,
    pub seq: i64,
    pub summary: Vec<u8>,
}

/// What the live path needs from a store.
pub trait PartitionStore: Send {
    /// The partition's checkpoint and the dedup rows beside it, read together.
    fn checkpoint(&mut self, source: &str) -> Result<Option<Checkpoint>, StoreError>;
    /// Applies a commit atomically, fenced on [`PartitionCommit::expected`].
    fn commit(&mut self, c: &PartitionCommit<'_>) -> Result<(), StoreError>;
    /// Folds bucket rows starting before `before` into hourly rows (docs/stores.md,
    /// "Growth"), at most `max_days` days of them.
    fn fold_before(&mut self, before: Micros, max_days: usize) -> Result<Folded, StoreError>;
    /// Every dedup key stored for the closed bucket of `source` starting at `start`: what
    /// a correction is deduplicated against.
    fn closed_keys(&mut self, source: &str, start: Micros) -> Result<Vec<DedupKey>, StoreError>;
    /// Up to `limit` queued windows, oldest first per source.
    fn queued_windows(&mut self, limit: usize) -> Result<Vec<QueuedWindow>, StoreError>;
    /// Removes the queued windows of `source` up to and including `through` (published).
    fn dequeue_windows(&mut self, source: &str, through: i64) -> Result<(), StoreError>;
}

/// A store of record: what `run` writes ([`PartitionStore`]), what `replay` writes
/// ([`ReplayStore`]) and what a scorecard reads ([`StoreRead`]). SQLite and PostgreSQL
/// implement all of it, and `tests/store_contract.rs` runs one suite on both.
pub trait Store: PartitionStore + ReplayStore {}
impl<T: PartitionStore + ReplayStore> Store for T {}

/// How a command uses its store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Writes; a SQLite file is created if absent (`run`, `replay`).
    Create,
    /// Writes to a store that must exist (`accept-new-log`).
    Existing,
    /// Reads only (`scorecard`, `status`): a reader may lack write rights.
    ReadOnly,
}

/// Opens the store at `location`: the one place a location becomes a store.
pub fn open(location: &Location, access: Access) -> Result<Box<dyn Store>, StoreError> {
    Ok(match (location, access) {
        (Location::Sqlite(p), Access::ReadOnly) => Box::new(SqliteStore::open_read_only(p)?),
        (Location::Sqlite(p), Access::Existing) if !p.exists() => {
            return Err(StoreError::Missing {
                path: p.display().to_string(),
            })
        }
        (Location::Sqlite(p), _) => Box::new(SqliteStore::open(p)?),
        (Location::Postgres(t), Access::ReadOnly) => {
            Box::new(PgStore::open_read_only((**t).clone())?)
        }
        (Location::Postgres(t), _) => Box::new(PgStore::open((**t).clone())?),
    })
}

impl PartitionStore for SqliteStore {
    fn fold_before(&mut self, before: Micros, max_days: usize) -> Result<Folded, StoreError> {
        SqliteStore::fold_before(self, before, max_days)
    }

    /// The checkpoint and its dedup rows in one read transaction: a writer committing
    /// meanwhile (another owner) cannot pair one checkpoint with another's rows.
    fn checkpoint(&mut self, source: &str) -> Result<Option<Checkpoint>, StoreError> {
        SqliteStore::checkpoint_with_dedup(self, source)
    }

    fn closed_keys(&mut self, source: &str, start: Micros) -> Result<Vec<DedupKey>, StoreError> {
        checkpoint::unpack_keys(&SqliteStore::closed_keys(self, source, start)?, source)
    }

    /// Fenced on the stored checkpoint ([`apply_commit`]); the write transaction holds
    /// SQLite's write lock from its start, so the fence cannot move before it commits.
    fn commit(&mut self, c: &PartitionCommit<'_>) -> Result<(), StoreError> {
        let w = self.writer()?;
        apply_commit(&w, c)?;
        w.commit()
    }

    fn queued_windows(&mut self, limit: usize) -> Result<Vec<QueuedWindow>, StoreError> {
        SqliteStore::queued_windows(self, limit)
    }

    fn dequeue_windows(&mut self, source: &str, through: i64) -> Result<(), StoreError> {
        SqliteStore::dequeue_windows(self, source, through)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations() {
        assert_eq!(
            Location::parse("a/b.db").unwrap(),
            Location::Sqlite("a/b.db".into())
        );
        assert!(matches!(
            Location::parse(""),
            Err(StoreError::BadLocation(_))
        ));
        // Kafka is an output: the refusal names the store to use and the output setting.
        let e = Location::parse("kafka://h1:9092,h2:9092/windows").unwrap_err();
        assert!(matches!(e, StoreError::KafkaIsNotAStore(_)));
        let msg = e.to_string();
        assert!(msg.contains("postgres://"), "{msg}");
        assert!(msg.contains("kafka.windows_topic"), "{msg}");
    }
}
