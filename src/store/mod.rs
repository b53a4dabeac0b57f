//! The scorecard store: durable closed buckets, rejection counts and (for the live
//! path) partition checkpoints. SQLite is the single-machine default; its schema is
//! documented in README "Store schema" so a scorecard job in any language can read it.

pub mod sqlite;

pub use sqlite::{Store, StoreWriter};

use crate::event::Direction;
use crate::time::Micros;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the scorecard store at {path}: {source} (check store.path / --store and the directory's permissions)")]
    Open {
        path: String,
        source: rusqlite::Error,
    },
    #[error("scorecard store {path} has schema version {found}, this slatrack understands {expected}: use a matching slatrack release or a new store file")]
    SchemaVersion {
        path: String,
        found: i64,
        expected: i64,
    },
    #[error("scorecard store I/O failed: {0} (disk full or file read-only? writes resume once it is writable)")]
    Sql(#[from] rusqlite::Error),
    #[error(
        "scorecard store row {what} is corrupt: {why} (the file was modified outside slatrack)"
    )]
    Corrupt { what: String, why: String },
}

/// A closed bucket as read back from the store.
#[derive(Debug, Clone)]
pub struct StoredBucket {
    pub source: String,
    pub tenant: String,
    pub platform: String,
    pub direction: Direction,
    pub start: Micros,
    pub stats: crate::engine::Stats,
}
