//! The partition set: one single-writer [`Pipeline`] per assigned partition, owned by
//! the apply thread. Records are applied under the set's mutex, taken once per batch: the
//! only other taker is the rebalance callback, which librdkafka runs inside `poll` on the
//! poll thread, so the lock is never on the per-record path.
//!
//! Its parts, each a set of [`PartitionSet`] methods:
//! - this file: the set and its partitions, the lock (a panic under it poisons the set:
//!   nothing is checkpointed after), the rebalance handler;
//! - [`lifecycle`]: assign (restore the checkpoint, check the log), stop on a new log,
//!   revoke after a final checkpoint;
//! - [`apply`]: a batch into the partitions' pipelines; freshness and lag gauges;
//! - [`checkpoints`]: when each partition commits, pacing, idle watermarks, store
//!   failures, folding;
//! - [`takeover`]: resuming from another owner's checkpoint.

mod apply;
pub(super) mod checkpoints;
mod lifecycle;
pub(super) mod takeover;

use crate::codec::Format;
use crate::config::Config;
use crate::engine::ShardTally;
use crate::kafka::consumer::{FetchMove, Rebalance, TopicPartition};
use crate::pipeline::Pipeline;
use crate::runtime::RuntimeStatus;
use crate::sink::prometheus::Telemetry;
use crate::sink::quarantine::Quarantine;
use crate::store::PartitionStore;
use crate::time::Micros;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

pub(super) struct Partition {
    pub(super) pipeline: Pipeline,
    pub(super) source: String,
    pub(super) next_offset: i64,
    pub(super) checkpointed_offset: i64,
    pub(super) last_commit: Instant,
    /// How long the partition's last commit took (see `checkpoints::COMMIT_SHARE`).
    pub(super) commit_cost: Duration,
    pub(super) last_record: Instant,
    /// Newest event time when the partition went idle (for the idle-timeout watermark).
    pub(super) idle_base: Option<Micros>,
    /// The shard's overflow count already reported to `RuntimeStatus::keys_overflowed`.
    pub(super) overflow_reported: u64,
    /// The shard's tally as last added to the status counters ([`Partition::report`]).
    pub(super) tally_reported: ShardTally,
    /// Newest event time per key id as last handed to the exporter (only changes are).
    pub(super) seen_published: Vec<Micros>,
    /// Assignment generation that assigned it: records polled earlier are stale.
    /// `takeover::AWAITING_SEEK` while fetching is being moved to a new checkpoint.
    pub(super) generation: u64,
    /// Id of its latest resumption from another owner's checkpoint (`resume_superseded`);
    /// 0 if none.
    pub(super) resumed: u64,
    /// A record has been applied since it was restored (the first one tells whether
    /// fetching continued at the checkpoint).
    pub(super) fetched: bool,
}

impl Partition {
    /// Adds what the shard's tally (the one count of records counted, duplicates and
    /// corrections) gained since the last report to the process's status counters.
    pub(super) fn report(&mut self, status: &RuntimeStatus) {
        let (t, r) = (self.pipeline.shard.tally, &mut self.tally_reported);
        status
            .counted
            .fetch_add(t.counted.saturating_sub(r.counted), Ordering::Relaxed);
        status
            .duplicates
            .fetch_add(t.duplicates.saturating_sub(r.duplicates), Ordering::Relaxed);
        status
            .corrected
            .fetch_add(t.corrected.saturating_sub(r.corrected), Ordering::Relaxed);
        *r = t;
    }
}

pub(super) struct PartitionSet {
    pub(super) config: Arc<Config>,
    pub(super) store: Box<dyn PartitionStore>,
    pub(super) topics: Vec<(String, Format)>,
    pub(super) parts: BTreeMap<(usize, i32), Partition>,
    pub(super) quarantine: Option<Quarantine>,
    pub(super) status: Arc<RuntimeStatus>,
    pub(super) telemetry: Arc<Telemetry>,
    /// Why the service must stop, for the poll thread to return.
    pub(super) fatal: Option<super::ServiceError>,
    /// A panic happened while the set was locked (see [`lock`]): nothing is checkpointed.
    pub(super) poisoned: bool,
    /// (topic, partition, next offset) checkpointed since the last group commit.
    pub(super) to_commit: Vec<(String, i32, i64)>,
    /// Assignments so far (see the module doc); the poll thread tags records with it.
    pub(super) generation: Arc<AtomicU64>,
    /// Fetch positions the poll thread is to move.
    pub(super) seeks: Vec<FetchMove>,
    /// Resumptions from another owner's checkpoint so far (ids for `Partition::resumed`).
    pub(super) resumptions: u64,
    /// Records applied since the last round with nothing waiting ([`Pace::Idle`]): how
    /// long the stretch of back-to-back batches that just ended was.
    ///
    /// [`Pace::Idle`]: checkpoints::Pace::Idle
    pub(super) busy_records: u64,
    /// Where the store is (for messages).
    pub(super) store_location: crate::store::Location,
}

pub(super) fn lock(set: &Mutex<PartitionSet>) -> MutexGuard<'_, PartitionSet> {
    // A panic while holding the lock is our bug, and it may have left a record half
    // applied (its dedup key kept, its count not). The set is then marked poisoned: it
    // writes no checkpoint again and the service stops, so every partition resumes from
    // its last checkpoint, which is consistent.
    set.lock().unwrap_or_else(|p| {
        let mut s = p.into_inner();
        if !s.poisoned {
            s.poisoned = true;
            s.fatal.get_or_insert(super::ServiceError::Poisoned);
        }
        s
    })
}

impl PartitionSet {
    pub(super) fn topic_index(&self, name: &str) -> Option<usize> {
        self.topics.iter().position(|(t, _)| t == name)
    }

    pub(super) fn note_checkpoint(&mut self, topic: &str, partition: i32, next: i64) {
        self.status.commits.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut m) = self.status.checkpointed.lock() {
            m.insert((topic.to_string(), partition), next);
        }
        self.to_commit.push((topic.to_string(), partition, next));
    }
}

/// The partition set as the consumer's rebalance handler (callbacks run inside `poll` on
/// the poll thread; each takes the set's lock once).
pub(super) struct RebalanceHandler(pub(super) Arc<Mutex<PartitionSet>>);

impl Rebalance for RebalanceHandler {
    /// Restores each assigned partition; its checkpoint's offset is where fetching starts.
    fn assigned(&self, partitions: &[TopicPartition]) -> Vec<Option<i64>> {
        let mut set = lock(&self.0);
        set.generation.fetch_add(1, Ordering::Relaxed);
        let offsets = partitions
            .iter()
            .map(|(topic, partition)| set.assign(topic, *partition))
            .collect();
        let ready = set.fatal.is_none();
        set.status.ready.store(ready, Ordering::Relaxed);
        offsets
    }

    fn log_ended(&self, (topic, partition): &TopicPartition, end: i64) {
        let mut set = lock(&self.0);
        if let Some(ti) = set.topic_index(topic) {
            set.stop_on_new_log(ti, *partition, end);
        }
    }

    fn log_start(&self, (topic, partition): &TopicPartition, next: i64, low: i64) -> i64 {
        lock(&self.0).check_log_start(topic, *partition, next, low)
    }

    fn revoked(&self, partitions: &[TopicPartition]) {
        let mut set = lock(&self.0);
        for (topic, partition) in partitions {
            set.revoke(topic, *partition);
        }
        set.status.ready.store(false, Ordering::Relaxed);
    }

    /// Gives every partition up as on a revoke.
    fn lost(&self) {
        let owned: Vec<TopicPartition> = {
            let set = lock(&self.0);
            set.parts
                .keys()
                .map(|&(ti, p)| (set.topics[ti].0.clone(), p))
                .collect()
        };
        self.revoked(&owned);
    }
}
