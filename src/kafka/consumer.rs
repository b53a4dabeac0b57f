//! The service's Kafka consumer: its librdkafka context (rebalances handed to a
//! [`Rebalance`] handler, broker health, high watermarks from the statistics), polling
//! into [`Batch`]es, fetch moves, pause/resume and advisory group-offset commits.
//!
//! Rebalance callbacks run inside `poll`, on the polling thread. An assignment carries the
//! offsets the handler returns (the store's checkpoints), so fetching starts where the
//! store says, not at the group offset.

use super::fetch_queue::{FetchQueue, Forwarder};
use super::{consumer_config, redact, ClientError};
use crate::config::KafkaConfig;
use crate::runtime::RuntimeStatus;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer as _, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::{ClientContext, Message, Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A topic's partition, by name.
pub type TopicPartition = (String, i32);

/// What the consumer asks of its owner when the group moves partitions.
pub trait Rebalance: Send + Sync + 'static {
    /// Partitions given to this instance: restore them and return each one's offset to
    /// fetch from (`None`: the group offset or `auto.offset.reset` decides).
    fn assigned(&self, partitions: &[TopicPartition]) -> Vec<Option<i64>>;
    /// The log of an assigned partition starts at offset `low`; its checkpoint says
    /// fetching continues at `next`. Returns where to fetch from.
    fn log_start(&self, partition: &TopicPartition, next: i64, low: i64) -> i64;
    /// The log of an assigned partition ends (at `end`) before its checkpoint's last
    /// record: it is not the log the checkpoint was taken on. Fetching is left at the
    /// checkpoint; the owner stops the partition.
    fn log_ended(&self, partition: &TopicPartition, end: i64);
    /// Partitions taken away: checkpoint and drop them.
    fn revoked(&self, partitions: &[TopicPartition]);
    /// librdkafka dropped the whole assignment after a rebalance error.
    fn lost(&self);
}

/// How long an assignment waits for where a partition's log starts.
const WATERMARK_PATIENCE: Duration = Duration::from_secs(10);

/// librdkafka context of the service's consumer.
pub struct ConsumerCtx {
    handler: Arc<dyn Rebalance>,
    status: Arc<RuntimeStatus>,
    high: HighWatermarks,
    /// Client settings for a log probe ([`holds_offset`]).
    probe: rdkafka::ClientConfig,
    /// Where assigned partitions' records go ([`FetchQueue`]); `None` before the queue
    /// exists and once it is gone.
    forwarder: Mutex<Option<Forwarder>>,
}

/// How long a probe waits for the record it asks for.
const PROBE_PATIENCE: Duration = Duration::from_secs(5);

/// Whether the partition's log still holds `offset` (or a later record): read with a
/// short-lived consumer of its own, outside the group. Asked when the broker's high
/// watermark says a checkpoint lies beyond the log's end, because some brokers' high
/// watermarks lag (tansu's does) and a broker that is right makes the probe rare. An
/// offset out of range, or no record within [`PROBE_PATIENCE`], is a log that ends before
/// it.
fn holds_offset(config: &rdkafka::ClientConfig, topic: &str, partition: i32, offset: i64) -> bool {
    let mut c = config.clone();
    c.set("auto.offset.reset", "error")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false");
    let probe = match c.create::<BaseConsumer>() {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(%topic, partition, error = %e, "cannot probe the partition's log: trusting the checkpoint");
            return true;
        }
    };
    let mut tpl = TopicPartitionList::new();
    if tpl
        .add_partition_offset(topic, partition, Offset::Offset(offset))
        .is_err()
        || probe.assign(&tpl).is_err()
    {
        tracing::warn!(%topic, partition, "cannot probe the partition's log: trusting the checkpoint");
        return true;
    }
    let deadline = std::time::Instant::now() + PROBE_PATIENCE;
    while std::time::Instant::now() < deadline {
        match probe.poll(Duration::from_millis(100)) {
            Some(Ok(m)) if m.partition() == partition => return m.offset() >= offset,
            Some(Err(KafkaError::MessageConsumption(
                rdkafka::types::RDKafkaErrorCode::OffsetOutOfRange,
            ))) => return false,
            _ => {}
        }
    }
    false
}

/// High watermark per (topic, partition) from librdkafka's statistics, shared with
/// whoever reports lag.
pub type HighWatermarks = Arc<Mutex<BTreeMap<TopicPartition, i64>>>;

impl ClientContext for ConsumerCtx {
    fn error(&self, error: KafkaError, reason: &str) {
        if error.rdkafka_error_code() == Some(rdkafka::types::RDKafkaErrorCode::AllBrokersDown) {
            if !self.status.brokers_down.swap(true, Ordering::Relaxed) {
                tracing::warn!(%reason, "no Kafka broker reachable: not ready; librdkafka keeps reconnecting and the service resumes where it was");
            }
        } else {
            tracing::warn!(error = %redact(&error), %reason, "Kafka client error (librdkafka retries by itself)");
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

impl ConsumerContext for ConsumerCtx {
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
        let partitions: Vec<TopicPartition> = tpl
            .elements()
            .iter()
            .map(|e| (e.topic().to_string(), e.partition()))
            .collect();
        let result = match err {
            E::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let offsets = self.handler.assigned(&partitions);
                for ((topic, partition), next) in partitions.iter().zip(offsets) {
                    let Some(next) = next else { continue };
                    let next = match consumer.fetch_watermarks(
                        topic,
                        *partition,
                        WATERMARK_PATIENCE,
                    ) {
                        Ok((_, high))
                            if next > high
                                && next > 0
                                && !holds_offset(&self.probe, topic, *partition, next - 1) =>
                        {
                            self.handler.log_ended(&(topic.clone(), *partition), high);
                            next
                        }
                        Ok((low, _)) => {
                            self.handler
                                .log_start(&(topic.clone(), *partition), next, low)
                        }
                        Err(e) => {
                            tracing::warn!(%topic, partition, error = %e, "cannot read where the partition's log starts: fetching from the checkpoint unchecked");
                            next
                        }
                    };
                    if let Err(e) =
                        tpl.set_partition_offset(topic, *partition, Offset::Offset(next))
                    {
                        // The partition then starts at the group offset; the service still
                        // skips what is below the checkpoint.
                        tracing::warn!(%topic, partition, error = %e, "cannot set the fetch offset to the checkpoint's");
                    }
                }
                // Before fetching starts, so every record takes the batch queue's way.
                let forwarder = *self.forwarder.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(f) = forwarder {
                    for (topic, partition) in &partitions {
                        if !f.forward(topic, *partition) {
                            // Its records then come through the consumer queue: slower, not lost.
                            tracing::warn!(%topic, partition, "cannot route the partition's records to the batch queue");
                        }
                    }
                }
                if cooperative {
                    consumer.incremental_assign(tpl)
                } else {
                    consumer.assign(tpl)
                }
            }
            E::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                self.handler.revoked(&partitions);
                if cooperative {
                    consumer.incremental_unassign(tpl)
                } else {
                    consumer.unassign()
                }
            }
            other => {
                tracing::warn!(error = ?other, "rebalance error: giving up every partition until the next assignment");
                self.handler.lost();
                consumer.unassign()
            }
        };
        if let Err(e) = result {
            tracing::warn!(error = %e, "cannot apply the rebalance to the consumer");
        }
    }
}

/// One polled record: where it is in [`Batch::bytes`] and where it came from.
#[derive(Default, Debug, Clone)]
pub struct Item {
    /// Index into the subscribed topics.
    pub topic: usize,
    pub partition: i32,
    pub offset: i64,
    /// Assignment generation when it was polled (see [`Consumer`]'s `generation`).
    pub generation: u64,
    pub start: usize,
    pub end: usize,
}

/// Polled records, copied out of librdkafka's buffers so they can be applied under one
/// lock after polling (polling may run the rebalance callback, which takes that lock).
#[derive(Default)]
pub struct Batch {
    pub bytes: Vec<u8>,
    pub items: Vec<Item>,
}

impl Batch {
    pub fn clear(&mut self) {
        self.bytes.clear();
        self.items.clear();
    }

    /// Appends one record (tests and callers that build batches by hand use it too).
    pub fn push(
        &mut self,
        topic: usize,
        partition: i32,
        offset: i64,
        generation: u64,
        payload: &[u8],
    ) {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(payload);
        self.items.push(Item {
            topic,
            partition,
            offset,
            generation,
            start,
            end: self.bytes.len(),
        });
    }

    pub fn payload(&self, it: &Item) -> &[u8] {
        &self.bytes[it.start..it.end]
    }
}

/// Records per batch at most.
pub const BATCH: usize = 2048;

/// Payload bytes after which a batch is sent even if it holds fewer than [`BATCH`]
/// records: with the service's batches in flight, what bounds the memory between polling
/// and applying, whatever the record size (a batch ends within [`READ_CHUNK`] records of
/// it).
pub const BATCH_BYTES: usize = 256 * 1024;

/// Records taken from the fetch queue per read: small enough that a batch ends near
/// [`BATCH_BYTES`], large enough that a read's fixed cost is spread thin.
const READ_CHUNK: usize = 128;

/// A fetch position to move: the partition restarts at `offset`. `tag` is the caller's,
/// handed back with the completed move.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchMove {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub tag: u64,
}

/// The service's consumer, subscribed to its topics.
///
/// Records are read from a [`FetchQueue`] in batches; the consumer queue carries the
/// events (rebalances, commits, errors), served by `BaseConsumer::poll`.
pub struct Consumer {
    /// Declared before `inner`: a queue is destroyed before its client.
    fetch: FetchQueue,
    inner: BaseConsumer<ConsumerCtx>,
    topics: Vec<String>,
    /// Bumped by every assignment and every completed fetch move: records carry the value
    /// at the time they were polled, so a partition can refuse records polled before its
    /// latest assignment or move.
    generation: Arc<AtomicU64>,
    paused: bool,
}

impl Consumer {
    pub fn subscribe(
        kafka: &KafkaConfig,
        handler: Arc<dyn Rebalance>,
        status: Arc<RuntimeStatus>,
        generation: Arc<AtomicU64>,
    ) -> Result<Self, ClientError> {
        let config = consumer_config(kafka)?;
        let mut probe = config.clone();
        // librdkafka assigns only with a group id; a probe never joins or commits to it.
        probe
            .set("group.id", format!("{}.log-probe", kafka.group_id))
            .set("statistics.interval.ms", "0");
        let ctx = ConsumerCtx {
            handler,
            status,
            high: HighWatermarks::default(),
            probe,
            forwarder: Mutex::new(None),
        };
        let inner: BaseConsumer<ConsumerCtx> =
            config.create_with_context(ctx).map_err(ClientError::from)?;
        // SAFETY: the client is live, and `Consumer` drops the queue before it.
        #[allow(unsafe_code)]
        let fetch = unsafe { FetchQueue::new(inner.client().native_ptr()) }.ok_or_else(|| {
            ClientError::Client("librdkafka could not create a queue (out of memory?)".into())
        })?;
        *inner
            .context()
            .forwarder
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(fetch.forwarder());
        let topics: Vec<String> = kafka.topics.iter().map(|t| t.name.clone()).collect();
        let names: Vec<&str> = topics.iter().map(String::as_str).collect();
        inner.subscribe(&names).map_err(ClientError::from)?;
        Ok(Self {
            fetch,
            inner,
            topics,
            generation,
            paused: false,
        })
    }

    /// Serves the consumer queue's events (a rebalance runs its handler here), then reads
    /// records into `batch` until it holds [`BATCH`] records or [`BATCH_BYTES`], or
    /// nothing arrives within `wait` (the first read) or at once (the following ones).
    pub fn fill(&mut self, batch: &mut Batch, wait: Duration) {
        // Events; and a record only if its partition could not be forwarded.
        loop {
            match self.inner.poll(Duration::ZERO) {
                None => break,
                Some(Err(e)) => {
                    tracing::warn!(error = %redact(&e), "consumer error (librdkafka retries by itself)");
                    break;
                }
                Some(Ok(m)) => {
                    let Some(topic) = topic_index(&self.topics, || m.topic()) else {
                        continue;
                    };
                    // Bumped by the rebalance callback, which runs inside `poll` on this
                    // thread: what comes next is of the new assignment.
                    let generation = self.generation.load(Ordering::Relaxed);
                    batch.push(
                        topic,
                        m.partition(),
                        m.offset(),
                        generation,
                        m.payload().unwrap_or(&[]),
                    );
                }
            }
        }
        let mut wait = if batch.items.is_empty() {
            wait
        } else {
            Duration::ZERO
        };
        let generation = self.generation.load(Ordering::Relaxed);
        while batch.items.len() < BATCH && batch.bytes.len() < BATCH_BYTES {
            let room = (BATCH - batch.items.len()).min(READ_CHUNK);
            let (topics, fetch) = (&self.topics, &mut self.fetch);
            let read = fetch.read(
                room,
                wait,
                |r| {
                    if let Some(topic) = topic_index(topics, || r.topic()) {
                        batch.push(topic, r.partition, r.offset, generation, r.payload);
                    }
                },
                |e| tracing::warn!(error = %e, "consumer error (librdkafka retries by itself)"),
            );
            if read == 0 {
                break;
            }
            wait = Duration::ZERO;
        }
    }

    /// Moves fetching of these partitions; returns the moves done, with the generation of
    /// the records polled after them, and the moves to retry later.
    pub fn move_fetching(&self, moves: Vec<FetchMove>) -> (Vec<(FetchMove, u64)>, Vec<FetchMove>) {
        let (mut done, mut retry) = (Vec::new(), Vec::new());
        for m in moves {
            match self.inner.seek(
                &m.topic,
                m.partition,
                Offset::Offset(m.offset),
                Duration::from_secs(1),
            ) {
                Ok(()) => done.push(m),
                Err(e) => {
                    tracing::warn!(topic = %m.topic, partition = m.partition, error = %e, "cannot move fetching to the store's checkpoint yet; retrying");
                    retry.push(m);
                }
            }
        }
        if done.is_empty() {
            return (Vec::new(), retry);
        }
        let g = self.generation.fetch_add(1, Ordering::Relaxed) + 1;
        (done.into_iter().map(|m| (m, g)).collect(), retry)
    }

    /// Pauses (or resumes) fetching of every assigned partition; polling goes on, so the
    /// group membership stays alive.
    pub fn set_paused(&mut self, paused: bool) {
        if paused == self.paused {
            return;
        }
        if let Ok(assignment) = self.inner.assignment() {
            let r = if paused {
                self.inner.pause(&assignment)
            } else {
                self.inner.resume(&assignment)
            };
            if let Err(e) = r {
                tracing::warn!(error = %e, "cannot pause/resume fetching");
                return;
            }
        }
        self.paused = paused;
    }

    /// Commits group offsets: advisory, they let a consumer without the store start near
    /// the right place.
    pub fn commit_offsets(&self, commits: &[(String, i32, i64)]) {
        if commits.is_empty() {
            return;
        }
        let mut tpl = TopicPartitionList::new();
        for (t, p, next) in commits {
            if let Err(e) = tpl.add_partition_offset(t, *p, Offset::Offset(*next)) {
                tracing::debug!(error = %e, "skipping group offset commit");
            }
        }
        if let Err(e) = self.inner.commit(&tpl, CommitMode::Async) {
            tracing::debug!(error = %e, "group offset commit failed (advisory only)");
        }
    }

    /// High watermarks as of librdkafka's latest statistics (no broker round trip).
    pub fn high_watermarks(&self) -> HighWatermarks {
        self.inner.context().high.clone()
    }
}

/// The index of a polled record's topic among the subscribed ones. With one topic
/// subscribed (the usual case) every record is from it: no name compared per record.
fn topic_index<'n>(topics: &[String], name: impl FnOnce() -> &'n str) -> Option<usize> {
    if topics.len() == 1 {
        Some(0)
    } else {
        let name = name();
        topics.iter().position(|t| t == name)
    }
}

impl Drop for Consumer {
    /// The rebalance callback stops forwarding before the queue goes (closing the client
    /// runs a last revocation).
    fn drop(&mut self) {
        *self
            .inner
            .context()
            .forwarder
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = None;
    }
}
