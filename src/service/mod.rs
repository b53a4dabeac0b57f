//! `slatrack run`: the long-running consumer.
//!
//! One consumer thread owns a [`PartitionSet`]: one [`Pipeline`] (single-writer shard) per
//! assigned partition. Records are polled in batches (payloads copied into an arena),
//! then applied under the set's mutex, taken once per batch: the only other taker is the
//! rebalance callback, which librdkafka runs inside `poll` on this same thread, so the
//! lock is never contended and never on the per-record path.
//!
//! Exactly-once effect: every `service.checkpoint_interval` each partition commits its
//! closed buckets, pending rejections and checkpoint in one SQLite transaction
//! ([`Pipeline::commit`]). On assignment a partition resumes from its checkpoint and
//! fetching starts at the checkpoint's offset (set in the assignment itself), so group
//! offsets (committed after each checkpoint) are advisory: they are used only where the
//! store has no checkpoint. On revocation the partition checkpoints before it is given up.
//!
//! Records polled before a partition's latest assignment are never applied to it: each
//! polled record carries the assignment generation it was polled under, and a partition
//! remembers the generation that assigned it. (A batch polled just before a revocation
//! can reach the apply thread after the partition came back, with the checkpoint and the
//! fetch position moved on.)

pub mod demo;
pub mod generate;

use crate::codec::Format;
use crate::config::{Config, ConfigError};
use crate::event::RejectReason;
use crate::pipeline::{Pipeline, ResumeError, Verdict};
use crate::sink::prometheus::Telemetry;
use crate::sink::quarantine::Quarantine;
use crate::store::{Location, PartitionStore, StoreError};
use crate::time::{now_micros, Micros};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::{ClientContext, Message, Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("`slatrack run` needs a [kafka] section in the config (brokers, topics)")]
    NoKafka,
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Redacted text, not the `KafkaError`: its `Display` (and so any error chain that
    /// keeps it as a source) can include a configuration value, i.e. a password.
    #[error("Kafka client error: {0} (check kafka.brokers and kafka.properties; the broker may be unreachable)")]
    Kafka(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Resume(#[from] ResumeError),
    #[error("{0}")]
    Fatal(String),
}

impl From<KafkaError> for ServiceError {
    fn from(e: KafkaError) -> Self {
        ServiceError::Kafka(crate::source::kafka::redact(&e))
    }
}

/// What the service reports about itself (read by tests, the demo and, later, /metrics).
#[derive(Debug, Default)]
pub struct Status {
    pub records: AtomicU64,
    pub counted: AtomicU64,
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
    /// Where /metrics is served, once it is.
    pub metrics_addr: Mutex<Option<std::net::SocketAddr>>,
}

impl Status {
    pub fn watermarks(&self) -> BTreeMap<(String, i32), Micros> {
        self.watermark.lock().map(|g| g.clone()).unwrap_or_default()
    }

    pub fn store_failure(&self) -> Option<String> {
        self.store_failure.lock().ok().and_then(|g| g.clone())
    }

    /// Whether the store refuses writes, without copying the reason (read every batch).
    pub fn store_failing(&self) -> bool {
        self.store_failure.lock().is_ok_and(|g| g.is_some())
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

/// Checkpoints take at most about one part in this many of the apply thread: a
/// partition's next commit waits at least this many times its last commit's duration,
/// times the partitions owned, when that is longer than `service.checkpoint_interval`.
/// With the Kafka store a checkpoint holds the dedup keys of the whole lateness horizon,
/// so its cost grows with the input rate (16 bytes a key: 12 MB a partition at 5,000
/// events/s each, measured); the SQLite store writes only each commit's new keys, but its
/// commits still grow with what they close. Committing every second regardless let
/// commits take the apply thread over and the lag run away (freshness bench, 50,000
/// events/s, when SQLite checkpoints held every key too). Spaced out, buckets become durable
/// later (the counters move later) and a crash re-reads more, but freshness holds.
const COMMIT_SHARE: u32 = 10;

/// The least time between two commits of one partition (see [`COMMIT_SHARE`]).
fn commit_spacing(interval: Duration, last_cost: Duration, owned: u32) -> Duration {
    interval.max(last_cost.saturating_mul(COMMIT_SHARE.saturating_mul(owned)))
}

struct Partition {
    pipeline: Pipeline,
    source: String,
    next_offset: i64,
    checkpointed_offset: i64,
    last_commit: Instant,
    /// How long the partition's last commit took (see [`COMMIT_SHARE`]).
    commit_cost: Duration,
    last_record: Instant,
    /// Newest event time when the partition went idle (for the idle-timeout watermark).
    idle_base: Option<Micros>,
    /// The shard's overflow count already reported to `Status::keys_overflowed`.
    overflow_reported: u64,
    /// Newest event time per key id as last handed to the exporter (only changes are).
    seen_published: Vec<Micros>,
    /// Assignment generation that assigned it: records polled earlier are stale.
    /// [`AWAITING_SEEK`] while fetching is being moved to a new checkpoint.
    generation: u64,
    /// Id of its latest resumption from another owner's checkpoint (`resume_superseded`);
    /// 0 if none.
    resumed: u64,
}

/// A partition's generation while none of its records may be applied: it was resumed
/// from another owner's checkpoint and the poll thread has not yet moved fetching there.
const AWAITING_SEEK: u64 = u64::MAX;

pub struct PartitionSet {
    config: Arc<Config>,
    store: Box<dyn PartitionStore>,
    topics: Vec<(String, Format)>,
    parts: BTreeMap<(usize, i32), Partition>,
    quarantine: Option<Quarantine>,
    status: Arc<Status>,
    telemetry: Arc<Telemetry>,
    fatal: Option<String>,
    /// (topic, partition, next offset) checkpointed since the last group commit.
    to_commit: Vec<(String, i32, i64)>,
    /// Assignments so far (see the module doc); the poll thread tags records with it.
    generation: Arc<AtomicU64>,
    /// Fetch positions the poll thread is to move.
    seeks: Vec<Seek>,
    /// Resumptions from another owner's checkpoint so far (ids for `Partition::resumed`).
    resumptions: u64,
}

/// A partition whose fetching must restart at `offset`, for the resumption with id
/// `resumed` (see `Partition::resumed`).
#[derive(Debug, Clone)]
struct Seek {
    topic: String,
    partition: i32,
    offset: i64,
    resumed: u64,
}

fn lock(set: &Mutex<PartitionSet>) -> MutexGuard<'_, PartitionSet> {
    // A panic while holding the lock is our bug; the state is still consistent enough to
    // checkpoint-or-not, and the next checkpoint decides what is durable.
    set.lock().unwrap_or_else(|p| p.into_inner())
}

impl PartitionSet {
    fn topic_index(&self, name: &str) -> Option<usize> {
        self.topics.iter().position(|(t, _)| t == name)
    }

    /// Restores the partition's checkpoint. Returns the offset to fetch from: the
    /// checkpoint's, or `None` without one (then the group offset or
    /// `auto.offset.reset` decides, and the partition counts from there).
    fn assign(&mut self, topic: &str, partition: i32) -> Option<i64> {
        self.restore(topic, partition, false)
    }

    /// [`PartitionSet::assign`], or (`superseded`) the same after another owner's commit.
    fn restore(&mut self, topic: &str, partition: i32, superseded: bool) -> Option<i64> {
        let ti = self.topic_index(topic)?;
        let source = format!("kafka:{topic}/{partition}");
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

    fn revoke(&mut self, topic: &str, partition: i32) {
        let Some(ti) = self.topic_index(topic) else {
            return;
        };
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
                Ok(buckets) => {
                    self.telemetry.absorb(&buckets);
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

    fn note_checkpoint(&mut self, topic: &str, partition: i32, next: i64) {
        self.status.commits.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut m) = self.status.checkpointed.lock() {
            m.insert((topic.to_string(), partition), next);
        }
        self.to_commit.push((topic.to_string(), partition, next));
    }

    fn apply(&mut self, batch: &Batch, now: Micros) {
        // One clock read per batch, not per record (it was ≈2 % of the apply thread), and
        // the status counters added once per batch: an atomic add per record and counter
        // is a locked instruction on a line the exporter reads.
        let arrived = Instant::now();
        let (mut records, mut counted, mut duplicates, mut skipped) = (0u64, 0u64, 0u64, 0u64);
        for it in &batch.items {
            let Some(p) = self.parts.get_mut(&(it.topic, it.partition)) else {
                continue; // revoked while the batch was being polled
            };
            if it.offset < p.next_offset || it.generation < p.generation {
                skipped += 1;
                continue;
            }
            let bytes = &batch.bytes[it.start..it.end];
            records += 1;
            p.pipeline.rejects.at_offset(it.offset);
            match p.pipeline.process(bytes, now) {
                Verdict::Counted => counted += 1,
                Verdict::Duplicate => duplicates += 1,
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
                        self.status.quarantined.store(q.produced, Ordering::Relaxed);
                    }
                }
            }
            p.next_offset = it.offset + 1;
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

    /// Advances idle partitions' watermarks with the wall clock, then checkpoints the
    /// partitions that are due (`force`: all). Returns false while the store refuses
    /// writes: from a failed attempt until the next successful one (a round with nothing
    /// due keeps the previous state, so fetching does not flap).
    fn checkpoint_due(&mut self, force: bool) -> bool {
        let interval = Duration::from_micros(self.config.service.checkpoint_interval.0 as u64);
        let idle = Duration::from_micros(self.config.service.idle_timeout.0 as u64);
        let lateness = self.config.engine.allowed_lateness.0;
        let owned = self.parts.len() as u32;
        let mut ok = true;
        let mut committed = false;
        let mut settled = false;
        let mut done = Vec::new();
        let mut superseded = Vec::new();
        // Quiet is idle only while we fetch: paused for the store or cut off from every
        // broker, a partition delivers nothing though records wait, and advancing its
        // watermark by the wall clock would turn them into `late` ones once they arrive.
        // The idle clock restarts when fetching does.
        let fetching =
            !self.status.store_failing() && !self.status.brokers_down.load(Ordering::Relaxed);
        for (&(ti, partition), p) in self.parts.iter_mut() {
            if !fetching {
                p.last_record = Instant::now();
                p.idle_base = None;
            }
            let quiet = p.last_record.elapsed();
            if quiet >= idle {
                let base = *p.idle_base.get_or_insert_with(|| {
                    p.pipeline.shard.max_event_time().unwrap_or(Micros::MIN)
                });
                if base != Micros::MIN {
                    p.pipeline
                        .shard
                        .advance_watermark(base - lateness + quiet.as_micros() as Micros);
                }
            }
            let spacing = commit_spacing(interval, p.commit_cost, owned);
            if !force && p.last_commit.elapsed() < spacing {
                continue;
            }
            p.last_commit = Instant::now();
            if !force
                && p.next_offset == p.checkpointed_offset
                && p.pipeline.shard.open_buckets() == 0
            {
                continue;
            }
            // Quarantined records up to here must be on the broker before a checkpoint
            // moves past their offsets (see `Quarantine::settle`); paid once per round,
            // and only when something was quarantined since the last one.
            if !settled {
                if let Some(q) = self.quarantine.as_mut() {
                    if !q.settle() {
                        ok = false;
                        break;
                    }
                }
                settled = true;
            }
            let t = Instant::now();
            match p
                .pipeline
                .commit(self.store.as_mut(), &p.source, p.next_offset)
            {
                Ok(buckets) => {
                    p.commit_cost = t.elapsed();
                    self.status
                        .last_checkpoint_us
                        .store(p.commit_cost.as_micros() as u64, Ordering::Relaxed);
                    self.telemetry.absorb(&buckets);
                    let keys = p.pipeline.shard.keys();
                    let overflowed = keys.overflowed;
                    self.status.keys_overflowed.fetch_add(
                        overflowed.saturating_sub(p.overflow_reported),
                        Ordering::Relaxed,
                    );
                    p.overflow_reported = overflowed;
                    if let (Some(wm), Ok(mut m)) =
                        (p.pipeline.shard.watermark(), self.status.watermark.lock())
                    {
                        m.insert((self.topics[ti].0.clone(), partition), wm);
                    }
                    p.checkpointed_offset = p.next_offset;
                    done.push((ti, partition, p.next_offset));
                    committed = true;
                }
                Err(e @ StoreError::Superseded { .. }) => {
                    tracing::warn!(source = %p.source, error = %e, "partition committed by another owner");
                    superseded.push((ti, partition));
                }
                Err(e) => {
                    self.status.store_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(source = %p.source, error = %e, "checkpoint failed; fetching pauses until the store accepts writes (nothing is dropped: the partition's buckets stay pending)");
                    if let Ok(mut f) = self.status.store_failure.lock() {
                        *f = Some(e.to_string());
                    }
                    ok = false;
                    // The store is shared by every partition: one refusal per round is
                    // enough (each attempt can block for the store's timeout).
                    break;
                }
            }
        }
        if ok && committed {
            if let Ok(mut f) = self.status.store_failure.lock() {
                if f.take().is_some() {
                    tracing::info!("the scorecard store accepts writes again; fetching resumes");
                }
            }
        }
        for (ti, partition, next) in done {
            let topic = self.topics[ti].0.clone();
            self.note_checkpoint(&topic, partition, next);
        }
        for (ti, partition) in superseded {
            self.resume_superseded(ti, partition);
        }
        ok && !self.status.store_failing()
    }

    /// Another owner committed this partition since this one restored or wrote its
    /// checkpoint (a rebalance overlapped them; the store refused the commit). This owner
    /// drops its state and resumes from the store's checkpoint; no record is applied until
    /// the poll thread has moved fetching there ([`AWAITING_SEEK`]), since records already
    /// fetched may lie past it.
    fn resume_superseded(&mut self, ti: usize, partition: i32) {
        self.status.superseded.fetch_add(1, Ordering::Relaxed);
        let topic = self.topics[ti].0.clone();
        // Unique across partitions and assignments: a seek meant for an earlier state of
        // this partition never matches a later one.
        self.resumptions += 1;
        let resumed = self.resumptions;
        let Some(next) = self.restore(&topic, partition, true) else {
            return; // no checkpoint (cannot be: one was found) or a fatal restore error
        };
        if let Some(p) = self.parts.get_mut(&(ti, partition)) {
            p.generation = AWAITING_SEEK;
            p.resumed = resumed;
            self.seeks.push(Seek {
                topic,
                partition,
                offset: next,
                resumed,
            });
        }
    }

    /// Fetching of these partitions restarted at their seek's offset: records polled
    /// from `generation` on are theirs to apply.
    fn seeked(&mut self, done: Vec<(Seek, u64)>) {
        for (seek, generation) in done {
            let Some(ti) = self.topic_index(&seek.topic) else {
                continue;
            };
            if let Some(p) = self.parts.get_mut(&(ti, seek.partition)) {
                // Only the latest resumption's seek: an older one may have moved fetching
                // to an offset this state is already past.
                if p.generation == AWAITING_SEEK && p.resumed == seek.resumed {
                    p.generation = generation;
                    tracing::info!(source = %p.source, next_offset = seek.offset, "fetching moved to the store's checkpoint");
                }
            }
        }
    }
}

impl PartitionSet {
    /// Newest event time per key, for `slatrack_last_event_timestamp_seconds`: what an
    /// operator reads to know an event reached slatrack (applied, deduplicated, in an open
    /// bucket). Published on its own cadence rather than with checkpoints, so that it lags
    /// the input by the fetch and this interval, not the checkpoint interval.
    fn publish_freshness(&mut self) {
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
    fn update_lag(&self, high: &BTreeMap<(String, i32), i64>) {
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

/// librdkafka context: forwards rebalances to the partition set.
pub struct ServiceContext {
    set: Arc<Mutex<PartitionSet>>,
    status: Arc<Status>,
    /// High watermark per (topic, partition) from librdkafka's statistics.
    high: Arc<Mutex<BTreeMap<(String, i32), i64>>>,
}

impl ClientContext for ServiceContext {
    fn error(&self, error: KafkaError, reason: &str) {
        if error.rdkafka_error_code() == Some(rdkafka::types::RDKafkaErrorCode::AllBrokersDown) {
            if !self.status.brokers_down.swap(true, Ordering::Relaxed) {
                tracing::warn!(%reason, "no Kafka broker reachable: not ready; librdkafka keeps reconnecting and the service resumes where it was");
            }
        } else {
            tracing::warn!(error = %crate::source::kafka::redact(&error), %reason, "Kafka client error (librdkafka retries by itself)");
        }
    }

    fn stats(&self, statistics: rdkafka::Statistics) {
        let up = statistics
            .brokers
            .values()
            .any(|b| b.nodeid >= 0 && b.state == "UP");
        if up && self.status.brokers_down.swap(false, Ordering::Relaxed) {
            tracing::info!("a Kafka broker is reachable again");
        }
        if let Ok(mut h) = self.high.lock() {
            for (name, t) in statistics.topics {
                for (&p, part) in &t.partitions {
                    if p >= 0 && part.hi_offset >= 0 {
                        h.insert((name.clone(), p), part.hi_offset);
                    }
                }
            }
        }
    }
}

impl ConsumerContext for ServiceContext {
    /// Replaces rust-rdkafka's default handler so that an assignment can carry the
    /// checkpoints' offsets: fetching then starts where the store says, not at the group
    /// offset (advisory, and ahead of the store when another owner committed it after a
    /// checkpoint that a later, overlapping owner's older one replaced).
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: rdkafka::types::RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        use rdkafka::consumer::RebalanceProtocol;
        use rdkafka::types::RDKafkaRespErr as E;
        let cooperative = matches!(
            consumer.rebalance_protocol(),
            RebalanceProtocol::Cooperative
        );
        let result = match err {
            E::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                self.assign(tpl);
                if cooperative {
                    consumer.incremental_assign(tpl)
                } else {
                    consumer.assign(tpl)
                }
            }
            E::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                self.revoke(tpl);
                if cooperative {
                    consumer.incremental_unassign(tpl)
                } else {
                    consumer.unassign()
                }
            }
            other => {
                // librdkafka drops the assignment: give every partition up as on a revoke.
                tracing::warn!(error = ?other, "rebalance error: giving up every partition until the next assignment");
                let mut set = lock(&self.set);
                let owned: Vec<(String, i32)> = set
                    .parts
                    .keys()
                    .map(|&(ti, p)| (set.topics[ti].0.clone(), p))
                    .collect();
                for (t, p) in owned {
                    set.revoke(&t, p);
                }
                set.status.ready.store(false, Ordering::Relaxed);
                consumer.unassign()
            }
        };
        if let Err(e) = result {
            tracing::warn!(error = %e, "cannot apply the rebalance to the consumer");
        }
    }
}

impl ServiceContext {
    fn revoke(&self, tpl: &TopicPartitionList) {
        let mut set = lock(&self.set);
        for e in tpl.elements() {
            set.revoke(e.topic(), e.partition());
        }
        set.status.ready.store(false, Ordering::Relaxed);
    }

    /// Restores each assigned partition and sets its fetch offset to its checkpoint's.
    fn assign(&self, tpl: &mut TopicPartitionList) {
        let mut set = lock(&self.set);
        set.generation.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = set.store.refresh() {
            // Restoring from a stale view of a shared store could double count.
            tracing::error!(error = %e, "cannot read the scorecard store before restoring checkpoints");
            set.fatal = Some(e.to_string());
            set.status.ready.store(false, Ordering::Relaxed);
            return;
        }
        let assigned: Vec<(String, i32)> = tpl
            .elements()
            .iter()
            .map(|e| (e.topic().to_string(), e.partition()))
            .collect();
        for (topic, partition) in assigned {
            if let Some(next) = set.assign(&topic, partition) {
                if let Err(e) = tpl.set_partition_offset(&topic, partition, Offset::Offset(next)) {
                    // The partition then starts at the group offset; `apply` still skips
                    // what is below the checkpoint.
                    tracing::warn!(%topic, partition, error = %e, "cannot set the fetch offset to the checkpoint's");
                }
            }
        }
        let ready = set.fatal.is_none();
        set.status.ready.store(ready, Ordering::Relaxed);
    }
}

#[derive(Default)]
struct Item {
    topic: usize,
    partition: i32,
    offset: i64,
    /// Assignment generation when it was polled.
    generation: u64,
    start: usize,
    end: usize,
}

/// Polled records, copied out of librdkafka's buffers so they can be applied under one
/// lock after polling (polling may run the rebalance callback, which takes the lock).
#[derive(Default)]
struct Batch {
    bytes: Vec<u8>,
    items: Vec<Item>,
}

const BATCH: usize = 2048;

/// Payload bytes after which a batch is sent even if it holds fewer than [`BATCH`]
/// records: with [`IN_FLIGHT`], what bounds the memory between the two stages
/// (33 batches × 256 KiB, plus one record each, ≈ 9 MiB whatever the record size).
const BATCH_BYTES: usize = 256 * 1024;

/// Runs until `shutdown` is set; then checkpoints every partition and returns.
pub fn run(
    config: Arc<Config>,
    store: Location,
    shutdown: Arc<AtomicBool>,
    status: Arc<Status>,
) -> Result<(), ServiceError> {
    let kafka = config.kafka.clone().ok_or(ServiceError::NoKafka)?;
    tracing::info!(kafka = %crate::source::kafka::describe(&kafka), store = %store, "starting");
    let store = crate::store::open_partition_store(&store, Some(&kafka))?;
    let quarantine = if kafka.quarantine_topic.is_empty() {
        None
    } else {
        Some(Quarantine::new(
            &kafka.quarantine_topic,
            &crate::source::kafka::client_config(&kafka)?,
        )?)
    };
    let topics: Vec<(String, Format)> = kafka
        .topics
        .iter()
        .map(|t| (t.name.clone(), t.format))
        .collect();
    let telemetry = Telemetry::new(config.clone(), status.clone());
    if !config.metrics.listen.is_empty() {
        let addr = crate::sink::http::serve(&config.metrics.listen, telemetry.clone()).map_err(|e| {
            ServiceError::Fatal(format!(
                "cannot listen on metrics.listen = {:?}: {e} (port in use? set another or \"\" to disable)",
                config.metrics.listen
            ))
        })?;
        tracing::info!(url = %format!("http://{addr}/metrics"), "metrics endpoint up (/healthz, /readyz too)");
        if let Ok(mut a) = status.metrics_addr.lock() {
            *a = Some(addr);
        }
    }
    let generation = Arc::new(AtomicU64::new(0));
    let set = Arc::new(Mutex::new(PartitionSet {
        config: config.clone(),
        store,
        topics: topics.clone(),
        parts: BTreeMap::new(),
        quarantine,
        status: status.clone(),
        telemetry,
        fatal: None,
        to_commit: Vec::new(),
        generation: generation.clone(),
        seeks: Vec::new(),
        resumptions: 0,
    }));
    let high = Arc::new(Mutex::new(BTreeMap::new()));
    let consumer: BaseConsumer<ServiceContext> = crate::source::kafka::consumer_config(&kafka)?
        .create_with_context(ServiceContext {
            set: set.clone(),
            status: status.clone(),
            high: high.clone(),
        })?;
    let names: Vec<&str> = topics.iter().map(|(t, _)| t.as_str()).collect();
    consumer.subscribe(&names)?;

    // Two stages, one core each: this thread polls and copies records into batches; the
    // apply thread decodes, aggregates and checkpoints. A bounded channel of batches is the
    // backpressure between them. Batches queued across a rebalance are safe: a partition's
    // records stay contiguous in offset order and `apply` skips offsets below the restored
    // checkpoint, so nothing is applied twice and nothing is skipped.
    let (full_tx, full_rx) = std::sync::mpsc::sync_channel::<Batch>(IN_FLIGHT);
    let (empty_tx, empty_rx) = std::sync::mpsc::channel::<Batch>();
    for _ in 0..IN_FLIGHT + 1 {
        let _ = empty_tx.send(Batch::default());
    }
    let shared = Arc::new(Shared::default());
    let worker = {
        let (set, shared, high) = (set.clone(), shared.clone(), high.clone());
        std::thread::Builder::new()
            .name("slatrack-apply".into())
            .spawn(move || apply_loop(&set, &shared, &high, full_rx, empty_tx))
            .map_err(|e| ServiceError::Fatal(format!("cannot start the apply thread: {e}")))?
    };

    let mut paused = false;
    let mut result = Ok(());
    while !shutdown.load(Ordering::Relaxed) {
        if shared.fatal.load(Ordering::Relaxed) {
            if let Some(f) = lock(&set).fatal.take() {
                result = Err(ServiceError::Fatal(f));
                break;
            }
        }
        // Never poll without a batch to hold what comes back: a polled record that is not
        // applied would be skipped for good (librdkafka has moved past it). The apply
        // thread returns batches within one batch's work, well inside max.poll.interval.ms.
        let mut batch = match empty_rx.recv_timeout(Duration::from_millis(100)) {
            Ok(b) => b,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => continue,
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                result = Err(ServiceError::Fatal("the apply thread stopped".into()));
                break;
            }
        };
        batch.bytes.clear();
        batch.items.clear();
        let mut wait = Duration::from_millis(100);
        while batch.items.len() < BATCH && batch.bytes.len() < BATCH_BYTES {
            match consumer.poll(wait) {
                None => break,
                Some(Err(e)) => {
                    tracing::warn!(error = %crate::source::kafka::redact(&e), "consumer error (librdkafka retries by itself)");
                    break;
                }
                Some(Ok(m)) => {
                    wait = Duration::ZERO;
                    // With one topic subscribed (the usual case) every record is from it:
                    // `topic()` is a C-string length and UTF-8 check per record.
                    let topic = if topics.len() == 1 {
                        0
                    } else {
                        match topics.iter().position(|(t, _)| t == m.topic()) {
                            Some(i) => i,
                            None => continue,
                        }
                    };
                    let payload = m.payload().unwrap_or(&[]);
                    let start = batch.bytes.len();
                    batch.bytes.extend_from_slice(payload);
                    batch.items.push(Item {
                        topic,
                        partition: m.partition(),
                        offset: m.offset(),
                        // Bumped by the rebalance callback, which runs inside `poll` on
                        // this thread: what it returns next is of the new assignment.
                        generation: generation.load(Ordering::Relaxed),
                        start,
                        end: batch.bytes.len(),
                    });
                }
            }
        }
        if full_tx.send(batch).is_err() {
            result = Err(ServiceError::Fatal("the apply thread stopped".into()));
            break;
        }
        let commits =
            std::mem::take(&mut *shared.commits.lock().unwrap_or_else(|p| p.into_inner()));
        commit_group_offsets(&consumer, &commits);
        move_fetching(&consumer, &shared, &generation);
        // Backpressure: while the store refuses writes, stop fetching (keep polling so the
        // group membership stays alive) instead of buffering without bound.
        let stored = shared.stored.load(Ordering::Relaxed);
        if stored == paused {
            if let Ok(assignment) = consumer.assignment() {
                let r = if stored {
                    consumer.resume(&assignment)
                } else {
                    consumer.pause(&assignment)
                };
                if let Err(e) = r {
                    tracing::warn!(error = %e, "cannot pause/resume fetching");
                }
            }
            paused = !stored;
        }
    }
    drop(full_tx);
    if worker.join().is_err() {
        tracing::error!("the apply thread panicked (our bug); checkpointing what is consistent");
    }
    tracing::info!("shutting down: checkpointing every partition");
    let mut s = lock(&set);
    s.checkpoint_due(true);
    if let Some(q) = &s.quarantine {
        q.flush();
    }
    let mut commits = std::mem::take(&mut s.to_commit);
    drop(s);
    commits.extend(std::mem::take(
        &mut *shared.commits.lock().unwrap_or_else(|p| p.into_inner()),
    ));
    commit_group_offsets(&consumer, &commits);
    drop(consumer);
    if result.is_ok() {
        tracing::info!("stopped cleanly");
    }
    result
}

/// How often the newest event time per key is handed to the exporter (see
/// `PartitionSet::publish_freshness`; BENCHMARKS.md "Freshness").
const FRESHNESS_INTERVAL: Duration = Duration::from_millis(100);

/// Batches polled but not yet applied (besides the one being filled and the one being
/// applied). Deep enough to ride out either thread being descheduled: on two cores shared
/// with librdkafka's threads (and, in the bench, the broker) a thread loses the CPU for
/// scheduler slices of milliseconds, and with 2 batches (≈ 2 ms of work) the other stage
/// then stalled. `kafka_e2e`, same sitting, ratio to the bare consumer: 2 → 0.74, 8 →
/// 0.78–0.86, 32 → 0.83 (BENCHMARKS.md). 32 batches are ≈ 45 ms of records at 1.4 M/s.
const IN_FLIGHT: usize = 32;

/// What the apply thread tells the poll thread.
struct Shared {
    /// The last checkpoint attempt succeeded (false: pause fetching).
    stored: AtomicBool,
    /// Group offsets to commit (advisory).
    commits: Mutex<Vec<(String, i32, i64)>>,
    /// A fatal error is waiting in the partition set.
    fatal: AtomicBool,
    /// Fetch positions the poll thread is to move.
    seeks: Mutex<Vec<Seek>>,
    /// Seeks done, with the generation of the records polled after them.
    seeked: Mutex<Vec<(Seek, u64)>>,
}

impl Default for Shared {
    fn default() -> Self {
        Self {
            stored: AtomicBool::new(true),
            commits: Mutex::default(),
            fatal: AtomicBool::new(false),
            seeks: Mutex::default(),
            seeked: Mutex::default(),
        }
    }
}

fn apply_loop(
    set: &Mutex<PartitionSet>,
    shared: &Shared,
    high: &Mutex<BTreeMap<(String, i32), i64>>,
    full: std::sync::mpsc::Receiver<Batch>,
    empty: std::sync::mpsc::Sender<Batch>,
) {
    let mut last_lag = Instant::now();
    let mut last_freshness = Instant::now();
    loop {
        let batch = match full.recv_timeout(Duration::from_millis(100)) {
            Ok(b) => Some(b),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => None,
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
        };
        // Taken after the batch: a seek is published before any record polled after it.
        let seeked = std::mem::take(&mut *shared.seeked.lock().unwrap_or_else(|p| p.into_inner()));
        let mut s = lock(set);
        if !seeked.is_empty() {
            s.seeked(seeked);
        }
        if let Some(b) = &batch {
            s.apply(b, now_micros());
        }
        let stored = s.checkpoint_due(false);
        shared.stored.store(stored, Ordering::Relaxed);
        if s.fatal.is_some() {
            shared.fatal.store(true, Ordering::Relaxed);
        }
        let commits = std::mem::take(&mut s.to_commit);
        let seeks = std::mem::take(&mut s.seeks);
        if last_freshness.elapsed() >= FRESHNESS_INTERVAL {
            last_freshness = Instant::now();
            s.publish_freshness();
        }
        if last_lag.elapsed() >= Duration::from_secs(1) {
            last_lag = Instant::now();
            let high = high.lock().map(|h| h.clone()).unwrap_or_default();
            s.update_lag(&high);
        }
        drop(s);
        if !commits.is_empty() {
            if let Ok(mut c) = shared.commits.lock() {
                c.extend(commits);
            }
        }
        if !seeks.is_empty() {
            if let Ok(mut q) = shared.seeks.lock() {
                q.extend(seeks);
            }
        }
        if !stored {
            std::thread::sleep(Duration::from_millis(500));
        }
        if let Some(b) = batch {
            let _ = empty.send(b);
        }
    }
}

/// Performs the seeks the apply thread asked for (partitions resumed from another
/// owner's checkpoint), then bumps the generation so that what is polled next is known to
/// come from the new position. A seek that fails is retried on the next round.
fn move_fetching<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    shared: &Shared,
    generation: &AtomicU64,
) {
    let seeks = std::mem::take(&mut *shared.seeks.lock().unwrap_or_else(|p| p.into_inner()));
    if seeks.is_empty() {
        return;
    }
    let (mut done, mut retry) = (Vec::new(), Vec::new());
    for seek in seeks {
        match consumer.seek(
            &seek.topic,
            seek.partition,
            Offset::Offset(seek.offset),
            Duration::from_secs(1),
        ) {
            Ok(()) => done.push(seek),
            Err(e) => {
                tracing::warn!(topic = %seek.topic, partition = seek.partition, error = %e, "cannot move fetching to the store's checkpoint yet; retrying");
                retry.push(seek);
            }
        }
    }
    if !done.is_empty() {
        let g = generation.fetch_add(1, Ordering::Relaxed) + 1;
        let mut q = shared.seeked.lock().unwrap_or_else(|p| p.into_inner());
        q.extend(done.into_iter().map(|s| (s, g)));
    }
    if !retry.is_empty() {
        shared
            .seeks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(retry);
    }
}

/// Advisory: lets a consumer without the store start near the right place.
fn commit_group_offsets<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    commits: &[(String, i32, i64)],
) {
    if commits.is_empty() {
        return;
    }
    let mut tpl = TopicPartitionList::new();
    for (t, p, next) in commits {
        if let Err(e) = tpl.add_partition_offset(t, *p, Offset::Offset(*next)) {
            tracing::debug!(error = %e, "skipping group offset commit");
        }
    }
    if let Err(e) = consumer.commit(&tpl, CommitMode::Async) {
        tracing::debug!(error = %e, "group offset commit failed (advisory only)");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set_on(generation: u64, store: crate::store::Store) -> PartitionSet {
        let config = Arc::new(Config::default());
        let status = Arc::new(Status::default());
        PartitionSet {
            telemetry: Telemetry::new(config.clone(), status.clone()),
            config,
            store: Box::new(store),
            topics: vec![("deliveries".into(), Format::Protobuf)],
            parts: BTreeMap::new(),
            quarantine: None,
            status,
            fatal: None,
            to_commit: Vec::new(),
            generation: Arc::new(AtomicU64::new(generation)),
            seeks: Vec::new(),
            resumptions: 0,
        }
    }

    /// Commits are spaced so that, together, they take about a tenth of the apply thread;
    /// cheap ones keep the configured interval.
    #[test]
    fn costly_commits_are_spaced_out() {
        let ms = Duration::from_millis;
        assert_eq!(commit_spacing(ms(1000), ms(2), 4), ms(1000));
        assert_eq!(commit_spacing(ms(1000), ms(50), 4), ms(2000));
        assert_eq!(commit_spacing(ms(1000), ms(50), 1), ms(1000));
        assert_eq!(commit_spacing(ms(10), ms(0), 6), ms(10));
    }

    fn set(generation: u64) -> PartitionSet {
        let store =
            crate::store::Store::open(std::path::Path::new(":memory:")).expect("in-memory store");
        set_on(generation, store)
    }

    /// One partition's records: 40 events over 80 minutes (so buckets close as they go),
    /// every 7th followed by a truncated record.
    fn records() -> Vec<Vec<u8>> {
        let start = crate::time::parse_date("2025-10-01").unwrap_or_default();
        let evs = crate::source::generator::pilot(3, "globex", start, 80 * 60_000_000, 40);
        let mut out = Vec::new();
        for (i, e) in evs.iter().enumerate() {
            out.push(crate::codec::protobuf::encode(e));
            if i % 7 == 0 {
                out.push(b"\x0a\x50truncated".to_vec());
            }
        }
        out
    }

    /// Records `from..to` of partition 0 (a record's offset is its index), polled under
    /// `generation`.
    fn batch_of(records: &[Vec<u8>], from: usize, to: usize, generation: u64) -> Batch {
        batch_at(&records[from..to], from as i64, generation)
    }

    /// These records of partition 0 at offsets from `first` on, polled under `generation`.
    fn batch_at(records: &[Vec<u8>], first: i64, generation: u64) -> Batch {
        let mut b = Batch::default();
        for (i, r) in records.iter().enumerate() {
            let at = b.bytes.len();
            b.bytes.extend_from_slice(r);
            b.items.push(Item {
                topic: 0,
                partition: 0,
                offset: first + i as i64,
                generation,
                start: at,
                end: b.bytes.len(),
            });
        }
        b
    }

    /// Ten records of partition 0 at offsets `from..from + 10`, polled under `generation`.
    fn batch(from: i64, generation: u64) -> Batch {
        let start = crate::time::parse_date("2025-10-01").unwrap_or_default();
        let evs = crate::source::generator::pilot(3, "globex", start, 60_000_000, 10);
        let recs: Vec<Vec<u8>> = evs.iter().map(crate::codec::protobuf::encode).collect();
        batch_at(&recs, from, generation)
    }

    /// What the store says about globex: events in closed buckets, rejections.
    fn stored(path: &std::path::Path) -> (u64, u64) {
        let s = crate::store::Store::open(path).expect("store");
        let events = s
            .buckets("globex", 0, i64::MAX / 2)
            .expect("buckets")
            .iter()
            .map(|b| b.stats.counters.events)
            .sum();
        let rejects = s
            .rejects("", 0, i64::MAX / 2)
            .expect("rejects")
            .iter()
            .map(|(_, n)| n)
            .sum();
        (events, rejects)
    }

    /// Two owners of one partition at once on one SQLite store (a rebalance that overlaps
    /// them): the one whose checkpoint is no longer the stored one is refused, resumes from
    /// the store's, applies nothing until fetching has moved there, and the store ends as
    /// with a single owner.
    #[test]
    fn an_owner_superseded_by_another_resumes_from_its_checkpoint() {
        let dir = tempfile::tempdir().expect("tempdir");
        let open = |name: &str| {
            let path = dir.path().join(name);
            (crate::store::Store::open(&path).expect("store"), path)
        };
        let recs = records();
        let n = recs.len();
        let now = crate::time::now_micros();

        let (store, reference) = open("reference.db");
        let mut r = set_on(1, store);
        r.assign("deliveries", 0);
        for (from, to) in [(0, 15), (15, 30), (30, n)] {
            r.apply(&batch_of(&recs, from, to, 1), now);
            assert!(r.checkpoint_due(true));
        }

        let (store, shared) = open("shared.db");
        let mut b = set_on(1, store);
        b.assign("deliveries", 0);
        b.apply(&batch_of(&recs, 0, 15, 1), now);
        assert!(b.checkpoint_due(true));
        let mut a = set_on(1, crate::store::Store::open(&shared).expect("store"));
        assert_eq!(
            a.assign("deliveries", 0),
            Some(15),
            "A restores B's checkpoint"
        );
        // Both go on from 15; B commits first, so A's commit is refused.
        b.apply(&batch_of(&recs, 15, 30, 1), now);
        assert!(b.checkpoint_due(true));
        a.apply(&batch_of(&recs, 15, 25, 1), now);
        assert!(
            a.checkpoint_due(true),
            "a refused commit is not a store failure"
        );
        assert_eq!(
            a.parts[&(0, 0)].next_offset,
            30,
            "A resumed from B's checkpoint"
        );
        assert_eq!(a.parts[&(0, 0)].generation, AWAITING_SEEK);
        let seek = a.seeks.pop().expect("a seek to B's checkpoint");
        assert_eq!((seek.partition, seek.offset), (0, 30));
        // What A fetched before the seek is not applied; B leaves (its revoke commit is
        // refused in turn if A had committed, here it is not); then the seek lands.
        a.apply(&batch_of(&recs, 25, 35, 1), now);
        assert_eq!(a.parts[&(0, 0)].next_offset, 30);
        b.revoke("deliveries", 0);
        a.seeked(vec![(seek, 2)]);
        a.apply(&batch_of(&recs, 30, n, 2), now);
        assert_eq!(a.parts[&(0, 0)].next_offset, n as i64);
        assert!(a.checkpoint_due(true));

        let expected = stored(&reference);
        assert!(
            expected.0 > 0 && expected.1 > 0,
            "buckets closed, records rejected: {expected:?}"
        );
        assert_eq!(stored(&shared), expected);
    }

    #[test]
    fn records_polled_before_the_latest_assignment_are_not_applied() {
        let mut s = set(2);
        assert_eq!(s.assign("deliveries", 0), None, "no checkpoint yet");
        let now = crate::time::now_micros();
        // Polled under generation 1, before the partition was (re)assigned: stale.
        s.apply(&batch(0, 1), now);
        assert_eq!(s.status.records.load(Ordering::Relaxed), 0);
        assert_eq!(
            s.status.skipped_below_checkpoint.load(Ordering::Relaxed),
            10
        );
        assert_eq!(s.parts[&(0, 0)].next_offset, 0, "nothing applied");
        // Polled since: applied; then a re-delivery below the new offset is skipped.
        s.apply(&batch(0, 2), now);
        assert_eq!(s.status.records.load(Ordering::Relaxed), 10);
        assert_eq!(s.parts[&(0, 0)].next_offset, 10);
        s.apply(&batch(5, 3), now);
        assert_eq!(
            s.status.records.load(Ordering::Relaxed),
            15,
            "offsets 10..15 only"
        );
        assert_eq!(
            s.status.skipped_below_checkpoint.load(Ordering::Relaxed),
            15
        );
    }
}
