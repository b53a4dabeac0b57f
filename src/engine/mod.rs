//! The aggregation engine: validated events in, closed buckets and rolling windows out.
//! Knows nothing of Kafka, protobuf, JSON, SQLite or Prometheus.

pub mod bucket;
pub mod checkpoint;
pub mod dedup;
pub mod few;
pub mod hash;
pub mod hdr;
pub mod keys;
pub mod shard;
pub mod stats;
pub mod window;

pub use shard::{Ingest, Shard, ShardTally};
pub use stats::{Counters, Stats};
pub use window::{WindowSet, WindowSummary};

use crate::event::Direction;
use crate::time::Micros;
use std::sync::Arc;

/// An event-time bucket that the watermark has closed: final for its source.
#[derive(Debug, Clone)]
pub struct ClosedBucket {
    pub tenant: Arc<str>,
    pub platform: Arc<str>,
    pub direction: Direction,
    pub start: Micros,
    pub width_us: Micros,
    pub target_latency_us: u64,
    pub stats: Stats,
}
