//! The aggregation engine: validated events in, closed buckets and rolling windows out.
//! Knows nothing of Kafka, protobuf, JSON, SQLite or Prometheus: a shard's checkpoint is
//! plain state ([`state::ShardState`]) that the store edge encodes.

pub mod bucket;
pub mod correction;
pub mod counters;
pub mod dedup;
pub mod few;
pub mod hdr;
pub mod keys;
mod prefetch;
pub mod shard;
pub mod state;
pub mod stats;
pub mod window;

pub use shard::{Ingest, Shard, ShardTally};
pub use stats::{Counters, Stats};
pub use window::{WindowSet, WindowSummary};

use crate::time::Micros;
pub use keys::KeyInfo;
use std::sync::Arc;

/// An event-time bucket that the watermark has closed: final for its source.
#[derive(Debug, Clone)]
pub struct ClosedBucket {
    /// Tenant, platform, direction and latency target: one shared pointer per bucket, so
    /// closing a bucket clones one `Arc`, not two strings.
    pub key: Arc<KeyInfo>,
    pub start: Micros,
    pub width_us: Micros,
    pub stats: Stats,
}
