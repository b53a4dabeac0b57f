//! The partition set: one single-writer [`Pipeline`] per assigned partition, owned by
//! the apply thread. Records are applied under the set's mutex, taken once per batch: the
//! only other taker is the rebalance callback, which librdkafka runs inside `poll` on the
//! poll thread, so the lock is never on the per-record path.

use crate::codec::Format;
use crate::config::Config;
use crate::event::RejectReason;
use crate::kafka::consumer::{Batch, FetchMove, Rebalance, TopicPartition};
use crate::pipeline::{Pipeline, Verdict};
use crate::runtime::RuntimeStatus;
use crate::sink::prometheus::Telemetry;
use crate::sink::quarantine::Quarantine;
use crate::store::{PartitionStore, StoreError};
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

pub(super) struct PartitionSet {
    pub(super) config: Arc<Config>,
    pub(super) store: Box<dyn PartitionStore>,
    pub(super) topics: Vec<(String, Format)>,
    pub(super) parts: BTreeMap<(usize, i32), Partition>,
    pub(super) quarantine: Option<Quarantine>,
    pub(super) status: Arc<RuntimeStatus>,
    pub(super) telemetry: Arc<Telemetry>,
    pub(super) fatal: Option<String>,
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
            s.fatal.get_or_insert_with(|| POISONED.to_string());
        }
        s
    })
}

/// What the service stops with after a panic in the partition set.
pub(super) const POISONED: &str = "the apply thread panicked (our bug: please report the panic above): no checkpoint was written after it, so restarting slatrack resumes every partition from its last checkpoint and counts nothing twice";

impl PartitionSet {
    pub(super) fn topic_index(&self, name: &str) -> Option<usize> {
        self.topics.iter().position(|(t, _)| t == name)
    }

    /// Restores the partition's checkpoint. Returns the offset to fetch from: the
    /// checkpoint's, or `None` without one (then the group offset or
    /// `auto.offset.reset` decides, and the partition counts from there).
    pub(super) fn assign(&mut self, topic: &str, partition: i32) -> Option<i64> {
        self.restore(topic, partition, false)
    }

    /// [`PartitionSet::assign`], or (`superseded`) the same after another owner's commit.
    pub(super) fn restore(&mut self, topic: &str, partition: i32, superseded: bool) -> Option<i64> {
        let ti = self.topic_index(topic)?;
        let source = crate::kafka::source_id(topic, partition);
        let bounds = Pipeline::bounds(&self.config);
        match Pipeline::resume(
            self.config.clone(),
            self.topics[ti].1,
            bounds,
            self.store.as_mut(),
            &source,
        ) {
            Ok((pipeline, restored)) => {
                let next = restored.unwrap_or(0);
                // Overflow before this assignment was reported by whoever counted it.
                let overflow_reported = pipeline.shard.keys().overflowed;
                if superseded {
                    tracing::info!(%source, next_offset = next, "partition resumed from its other owner's checkpoint");
                } else {
                    tracing::info!(%source, next_offset = next, "partition assigned, checkpoint restored");
                }
                // A new assignment checks the log again (see `stop_on_new_log`).
                if let Ok(mut m) = self.status.stopped.lock() {
                    m.remove(&(topic.to_string(), partition));
                }
                let now = Instant::now();
                self.parts.insert(
                    (ti, partition),
                    Partition {
                        pipeline,
                        source,
                        next_offset: next,
                        checkpointed_offset: next,
                        last_commit: now,
                        commit_cost: Duration::ZERO,
                        last_record: now,
                        idle_base: None,
                        overflow_reported,
                        seen_published: Vec::new(),
                        generation: self.generation.load(Ordering::Relaxed),
                        resumed: 0,
                        fetched: false,
                    },
                );
                restored
            }
            Err(e) => {
                tracing::error!(%source, error = %e, "cannot restore the partition's checkpoint");
                self.fatal = Some(e.to_string());
                None
            }
        }
    }

    /// Checks a restored partition's checkpoint against where its log starts: below it,
    /// retention deleted records before they were read. They are counted, logged and
    /// written with the next checkpoint for the scorecard to report, and fetching starts
    /// at the log's start. Returns where to fetch from.
    pub(super) fn check_log_start(
        &mut self,
        topic: &str,
        partition: i32,
        next: i64,
        low: i64,
    ) -> i64 {
        let Some(p) = self
            .topic_index(topic)
            .and_then(|ti| self.parts.get_mut(&(ti, partition)))
        else {
            return next;
        };
        if next >= low {
            return next;
        }
        let lost = (low - next) as u64;
        tracing::warn!(source = %p.source, checkpoint = next, log_start = low, records = lost, "records were deleted from the log (retention) before slatrack read them: they are missing from every figure; the scorecard reports them");
        self.status
            .records_unread
            .fetch_add(lost, Ordering::Relaxed);
        p.pipeline.note_unread(next, low);
        p.next_offset = low;
        low
    }

    /// A restored partition's log ends below its checkpoint (`offset`: where the log ends,
    /// or the first record fetched, below the checkpoint, after librdkafka reset fetching
    /// because the checkpoint's offset is out of range): the topic was recreated, or the
    /// brokers are a new cluster. The partition stops
    /// (its records are not applied; its checkpoint stays) with an error saying how to
    /// accept the new log; never skipped through silently.
    pub(super) fn stop_on_new_log(&mut self, ti: usize, partition: i32, offset: i64) {
        let Some(p) = self.parts.remove(&(ti, partition)) else {
            return;
        };
        let topic = self.topics[ti].0.clone();
        let next = p.next_offset;
        let store = &self.store_location;
        let what_to_do = format!(
            "stop every slatrack writing {store}, check that this is the log you mean to read, run `slatrack accept-new-log --store '{store}' --topic {topic} --partition {partition}` (it keeps what the old log counted and reads the new one from offset 0, repeated records as duplicates), and start slatrack again"
        );
        let why = format!(
            "partition {topic}/{partition}: its checkpoint continues at offset {next} but its log ends below it (at offset {offset}): the topic was recreated or the brokers are a new cluster. Nothing of the new log is counted until you accept it: {what_to_do}"
        );
        tracing::error!(source = %p.source, checkpoint = next, fetched = offset, "{why}");
        if let Ok(mut m) = self.status.stopped.lock() {
            m.insert((topic, partition), why);
        }
    }

    pub(super) fn revoke(&mut self, topic: &str, partition: i32) {
        let Some(ti) = self.topic_index(topic) else {
            return;
        };
        if let Ok(mut m) = self.status.stopped.lock() {
            m.remove(&(topic.to_string(), partition));
        }
        if let Ok(mut m) = self.status.watermark.lock() {
            m.remove(&(topic.to_string(), partition));
        }
        if let Some(mut p) = self.parts.remove(&(ti, partition)) {
            // As before a periodic checkpoint: quarantined copies first (`Quarantine::settle`).
            if self.quarantine.as_mut().is_some_and(|q| !q.settle()) {
                tracing::warn!(source = %p.source, "partition revoked without a final checkpoint: its quarantined records are not yet on the broker; its next owner re-reads since the last checkpoint");
                return;
            }
            match p
                .pipeline
                .commit(self.store.as_mut(), &p.source, p.next_offset)
            {
                Ok(committed) => {
                    super::checkpoints::absorb(&self.telemetry, &self.status, &committed);
                    self.note_checkpoint(topic, partition, p.next_offset);
                    tracing::info!(source = %p.source, next_offset = p.next_offset, "partition revoked after its checkpoint");
                }
                Err(e @ StoreError::Superseded { .. }) => {
                    tracing::info!(source = %p.source, error = %e, "partition revoked; its other owner's checkpoint stands");
                }
                Err(e) => {
                    // Nothing is lost: the next owner resumes from the previous checkpoint.
                    self.status.store_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(source = %p.source, error = %e, "partition revoked without a final checkpoint; its next owner re-reads since the last one");
                }
            }
        }
    }

    pub(super) fn note_checkpoint(&mut self, topic: &str, partition: i32, next: i64) {
        self.status.commits.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut m) = self.status.checkpointed.lock() {
            m.insert((topic.to_string(), partition), next);
        }
        self.to_commit.push((topic.to_string(), partition, next));
    }

    pub(super) fn apply(&mut self, batch: &Batch, now: Micros) {
        // One clock read per batch, not per record, and the status counters added once
        // per batch: an atomic add per record and counter
        // is a locked instruction on a line the exporter reads.
        let arrived = Instant::now();
        let (mut records, mut counted, mut duplicates, mut skipped) = (0u64, 0u64, 0u64, 0u64);
        for it in &batch.items {
            let Some(p) = self.parts.get_mut(&(it.topic, it.partition)) else {
                continue; // revoked while the batch was being polled, or stopped
            };
            if !p.fetched && it.generation >= p.generation && it.offset < p.next_offset {
                self.stop_on_new_log(it.topic, it.partition, it.offset);
                continue;
            }
            if it.offset < p.next_offset || it.generation < p.generation {
                skipped += 1;
                continue;
            }
            let bytes = batch.payload(it);
            records += 1;
            match p.pipeline.process(bytes, now) {
                Verdict::Counted => counted += 1,
                Verdict::Duplicate => duplicates += 1,
                // Counted (or found a duplicate) when its correction is committed.
                Verdict::Staged => {}
                Verdict::Rejected(reason) => {
                    self.status.rejected.fetch_add(1, Ordering::Relaxed);
                    if let Some(i) = RejectReason::ALL.iter().position(|r| *r == reason) {
                        self.status.rejected_by_reason[i].fetch_add(1, Ordering::Relaxed);
                    }
                    if let Some(q) = self.quarantine.as_mut() {
                        q.send(
                            bytes,
                            reason,
                            &self.topics[it.topic].0,
                            it.partition,
                            it.offset,
                        );
                    }
                }
            }
            p.next_offset = it.offset + 1;
            p.fetched = true;
            p.last_record = arrived;
            p.idle_base = None;
        }
        // `records` last, with release: a reader that loads it with acquire also sees the
        // verdicts of those records.
        let s = &self.status;
        s.counted.fetch_add(counted, Ordering::Relaxed);
        s.duplicates.fetch_add(duplicates, Ordering::Relaxed);
        s.skipped_below_checkpoint
            .fetch_add(skipped, Ordering::Relaxed);
        s.records.fetch_add(records, Ordering::Release);
    }

    /// Newest event time per key, for `slatrack_last_event_timestamp_seconds`: what an
    /// operator reads to know an event reached slatrack (applied, deduplicated, in an open
    /// bucket). Published on its own cadence rather than with checkpoints, so that it lags
    /// the input by the fetch and this interval, not the checkpoint interval.
    pub(super) fn publish_freshness(&mut self) {
        for p in self.parts.values_mut() {
            let keys = p.pipeline.shard.keys();
            let infos = keys.infos();
            p.seen_published.resize(infos.len(), Micros::MIN);
            let changed = infos.iter().enumerate().filter_map(|(i, k)| {
                let at = keys.last_seen(i as u32);
                (at > p.seen_published[i]).then(|| {
                    p.seen_published[i] = at;
                    (k.tenant.to_string(), k.platform.to_string(), at)
                })
            });
            self.telemetry.freshness(changed);
        }
    }

    /// Lag = high watermark (from librdkafka's statistics, no extra broker round trip)
    /// minus the next offset to apply. Only owned partitions are reported, so revoked ones
    /// disappear.
    pub(super) fn update_lag(&self, high: &BTreeMap<TopicPartition, i64>) {
        let mut lag = BTreeMap::new();
        for (&(ti, partition), p) in &self.parts {
            let key = (self.topics[ti].0.clone(), partition);
            if let Some(&h) = high.get(&key) {
                lag.insert(key, (h - p.next_offset).max(0));
            }
        }
        if let Ok(mut m) = self.status.lag.lock() {
            *m = lag;
        }
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
