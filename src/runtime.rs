//! What the running service reports about itself: counters, readiness, store health,
//! watermarks, lag. Written by the service and the Kafka client context, read by the
//! metrics sink, the demo and tests. Plain atomics and small maps: no I/O here.

use crate::event::RejectReason;
use crate::time::Micros;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::Mutex;

/// The service's runtime state, shared by `Arc` (one per `slatrack run`).
#[derive(Debug, Default)]
pub struct RuntimeStatus {
    pub records: AtomicU64,
    pub counted: AtomicU64,
    /// Records counted as corrections of closed buckets (part of `counted`).
    pub corrected: AtomicU64,
    pub duplicates: AtomicU64,
    pub rejected: AtomicU64,
    /// By `RejectReason::ALL` index.
    pub rejected_by_reason: [AtomicU64; RejectReason::ALL.len()],
    /// Duration of the latest checkpoint transaction, µs.
    pub last_checkpoint_us: AtomicU64,
    /// Watermark per (topic, partition), µs; refreshed at each checkpoint.
    pub watermark: Mutex<BTreeMap<(String, i32), Micros>>,
    pub skipped_below_checkpoint: AtomicU64,
    pub commits: AtomicU64,
    pub store_errors: AtomicU64,
    pub quarantined: AtomicU64,
    /// Rejected records whose bytes never reached the quarantine topic.
    pub quarantine_dropped: AtomicU64,
    /// Records aggregated into `__overflow__` because `limits.max_keys` was reached.
    pub keys_overflowed: AtomicU64,
    /// Partitions resumed from another owner's checkpoint (commits refused by the store).
    pub superseded: AtomicU64,
    /// True once partitions are assigned and their checkpoints restored.
    pub ready: AtomicBool,
    /// No broker reachable (librdkafka's all-brokers-down error, or no broker `UP` in its
    /// statistics); cleared when one is up again.
    pub brokers_down: AtomicBool,
    /// Why the latest checkpoint attempt failed, while the store refuses writes (fetching
    /// is paused meanwhile); `None` once a checkpoint succeeds again.
    pub store_failure: Mutex<Option<String>>,
    /// Records behind the partition's high watermark (as of the last fetch), per (topic,
    /// partition); only partitions this instance owns.
    pub lag: Mutex<BTreeMap<(String, i32), i64>>,
    /// Next offset covered by the latest checkpoint, per (topic, partition).
    pub checkpointed: Mutex<BTreeMap<(String, i32), i64>>,
    /// Partitions stopped because their log is not the one their checkpoint was taken on
    /// (recreated topic, new cluster), with what to do; `/readyz` fails while any is.
    pub stopped: Mutex<BTreeMap<(String, i32), String>>,
    /// Records deleted from a log (retention) before they were read, since start.
    pub records_unread: AtomicU64,
    /// Where /metrics is served, once it is.
    pub metrics_addr: Mutex<Option<std::net::SocketAddr>>,
}

impl RuntimeStatus {
    pub fn watermarks(&self) -> BTreeMap<(String, i32), Micros> {
        self.watermark.lock().map(|g| g.clone()).unwrap_or_default()
    }

    pub fn store_failure(&self) -> Option<String> {
        self.store_failure
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Whether the store refuses writes, without copying the reason (read every batch).
    pub fn store_failing(&self) -> bool {
        // A poisoned lock (a panic while it was held) fails closed: fetching pauses.
        self.store_failure.lock().map_or(true, |g| g.is_some())
    }

    pub fn lags(&self) -> BTreeMap<(String, i32), i64> {
        self.lag.lock().map(|g| g.clone()).unwrap_or_default()
    }

    pub fn checkpointed(&self) -> BTreeMap<(String, i32), i64> {
        self.checkpointed
            .lock()
            .map(|g| g.clone())
            .unwrap_or_default()
    }
}
