//! The service's Kafka consumer: its librdkafka context (rebalances handed to a
//! [`Rebalance`] handler, broker health, high watermarks from the statistics), polling
//! into [`Batch`]es, fetch moves, pause/resume and advisory group-offset commits.
//!
//! Rebalance callbacks run inside `poll`, on the polling thread. An assignment carries the
//! offsets the handler returns (the store's checkpoints), so fetching starts where the
//! store says, not at the group offset.

use super::fetch_queue::{FetchQueue, FetchQueues, Fetched, Forwarder, Reader};
use super::fetchers::{record_high, Fetcher, Fetchers};
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
    /// Extra connections fetching some of the assigned partitions, and who fetches what.
    fetchers: Fetchers,
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
        record_high(&self.high, &statistics);
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
                let (mine, theirs) = self.fetchers.share_out(consumer, tpl, WATERMARK_PATIENCE);
                // Before fetching starts, so every record takes the batch queue's way.
                let forwarder = *self.forwarder.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(f) = forwarder {
                    for e in mine.elements() {
                        if !f.forward(e.topic(), e.partition()) {
                            // Its records then come through the consumer queue: slower, not lost.
                            tracing::warn!(topic = %e.topic(), partition = e.partition(), "cannot route the partition's records to the batch queue");
                        }
                    }
                }
                self.fetchers.start(&theirs);
                if cooperative {
                    consumer.incremental_assign(&mine)
                } else {
                    consumer.assign(&mine)
                }
            }
            E::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                self.handler.revoked(&partitions);
                if cooperative {
                    consumer.incremental_unassign(&self.fetchers.take_back(&partitions))
                } else {
                    self.fetchers.take_back_all();
                    consumer.unassign()
                }
            }
            other => {
                tracing::warn!(error = ?other, "rebalance error: giving up every partition until the next assignment");
                self.handler.lost();
                self.fetchers.take_back_all();
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
    /// When the batch closed, every assigned partition had been read up to the high
    /// watermark of its last fetch: nothing else was waiting on the broker, so the batch
    /// ends a backlog (or is live traffic keeping up). Only a batch that emptied the fetch
    /// queues can be.
    pub caught_up: bool,
}

impl Batch {
    pub fn clear(&mut self) {
        self.bytes.clear();
        self.items.clear();
        self.caught_up = false;
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
    /// The consumer's queue, then its fetchers' (their clients live in the context).
    /// Declared before `inner`: a queue is destroyed before its client.
    queues: FetchQueues,
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
        let high = HighWatermarks::default();
        let mut fetchers = Vec::new();
        let mut fetcher_queues = Vec::new();
        for k in 1..kafka.fetch_connections.max(1) {
            let (f, q) = Fetcher::new(&config, kafka, k, high.clone())?;
            fetchers.push(f);
            fetcher_queues.push(q);
        }
        let ctx = ConsumerCtx {
            handler,
            status,
            high,
            probe,
            forwarder: Mutex::new(None),
            fetchers: Fetchers::new(fetchers, &config),
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
        let queues = FetchQueues::new(std::iter::once(fetch).chain(fetcher_queues).collect())
            .ok_or_else(|| {
                ClientError::Client("cannot create a pipe to wait on the fetch queues".into())
            })?;
        Ok(Self {
            queues,
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
        serve(&self.inner, &self.topics, &self.generation, batch);
        for f in &self.inner.context().fetchers.list {
            serve(&f.client, &self.topics, &self.generation, batch);
        }
        let wait = if batch.items.is_empty() {
            wait
        } else {
            Duration::ZERO
        };
        let mut into = Filling {
            generation: self.generation.load(Ordering::Relaxed),
            topics: &self.topics,
            batch,
        };
        let drained = self.queues.read(
            &mut into,
            READ_CHUNK,
            wait,
            |e| tracing::warn!(error = %e, "consumer error (librdkafka retries by itself)"),
        );
        if drained && !batch.items.is_empty() {
            batch.caught_up = self.caught_up(batch);
        }
    }

    /// Whether every assigned partition has been read up to the high watermark of its
    /// last fetch response (a partition read from nothing: when its log is empty). Asked
    /// once the fetch queues are empty: a fetch answered after a queue was read set its
    /// high watermark before queueing its records, so they show as waiting. First the
    /// partition of the batch's last record, which on a backlog is still behind: a
    /// lookup rather than every partition's position.
    ///
    /// A broker whose high watermark counts records a consumer never sees (transaction
    /// markers, an open transaction under `read_committed`) leaves this false; the end of
    /// a backlog is then found by the poll thread's wait, as on an idle input.
    fn caught_up(&self, batch: &Batch) -> bool {
        if self.paused {
            return false;
        }
        let fetchers = &self.inner.context().fetchers;
        if let Some(last) = batch.items.last() {
            let tp = (self.topics[last.topic].clone(), last.partition);
            let queue = self.queues.queue(fetchers.connection_of(&tp));
            match queue.fetched_bounds(&tp.0, tp.1) {
                Some((_, high)) if last.offset + 1 >= high => {}
                _ => return false,
            }
        }
        let clients = std::iter::once(self.inner.position().map(|p| (p, 0))).chain(
            fetchers
                .list
                .iter()
                .enumerate()
                .map(|(k, f)| f.client.position().map(|p| (p, k + 1))),
        );
        for client in clients {
            let Ok((positions, k)) = client else {
                return false;
            };
            for p in positions.elements() {
                let Some((low, high)) = self
                    .queues
                    .queue(k)
                    .fetched_bounds(p.topic(), p.partition())
                else {
                    return false;
                };
                let read_to = match p.offset() {
                    Offset::Offset(next) => next,
                    _ => low,
                };
                if read_to < high {
                    return false;
                }
            }
        }
        true
    }

    /// Moves fetching of these partitions; returns the moves done, with the generation of
    /// the records polled after them, and the moves to retry later.
    pub fn move_fetching(&self, moves: Vec<FetchMove>) -> (Vec<(FetchMove, u64)>, Vec<FetchMove>) {
        let (mut done, mut retry) = (Vec::new(), Vec::new());
        let ctx = self.inner.context();
        for m in moves {
            let (at, patience) = (Offset::Offset(m.offset), Duration::from_secs(1));
            let result = match ctx.fetchers.fetcher_of(&(m.topic.clone(), m.partition)) {
                Some(f) => f.client.seek(&m.topic, m.partition, at, patience),
                None => self.inner.seek(&m.topic, m.partition, at, patience),
            };
            match result {
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
        fn switch<C: ConsumerContext>(c: &BaseConsumer<C>, paused: bool) -> bool {
            let Ok(assignment) = c.assignment() else {
                return true;
            };
            let r = if paused {
                c.pause(&assignment)
            } else {
                c.resume(&assignment)
            };
            if let Err(e) = &r {
                tracing::warn!(error = %e, "cannot pause/resume fetching");
            }
            r.is_ok()
        }
        let mut ok = switch(&self.inner, paused);
        for f in &self.inner.context().fetchers.list {
            ok &= switch(&f.client, paused);
        }
        if ok {
            self.paused = paused;
        }
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

/// A batch being filled from the fetch queues.
struct Filling<'a> {
    batch: &'a mut Batch,
    topics: &'a [String],
    generation: u64,
}

impl Reader for Filling<'_> {
    fn room(&self) -> usize {
        let b = &self.batch;
        if b.bytes.len() >= BATCH_BYTES {
            0
        } else {
            BATCH.saturating_sub(b.items.len())
        }
    }

    fn take(&mut self, r: Fetched<'_>) {
        if let Some(topic) = topic_index(self.topics, || r.topic()) {
            self.batch
                .push(topic, r.partition, r.offset, self.generation, r.payload);
        }
    }
}

/// Serves a client's queued events (a rebalance runs its handler here); a record among
/// them (its partition could not be forwarded to a fetch queue) goes into `batch`.
fn serve<C: ConsumerContext>(
    client: &BaseConsumer<C>,
    topics: &[String],
    generation: &AtomicU64,
    batch: &mut Batch,
) {
    loop {
        match client.poll(Duration::ZERO) {
            None => break,
            Some(Err(e)) => {
                tracing::warn!(error = %redact(&e), "consumer error (librdkafka retries by itself)");
                break;
            }
            Some(Ok(m)) => {
                let Some(topic) = topic_index(topics, || m.topic()) else {
                    continue;
                };
                // Bumped by the rebalance callback, which runs inside `poll` on this
                // thread: what comes next is of the new assignment.
                let generation = generation.load(Ordering::Relaxed);
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
        let ctx = self.inner.context();
        *ctx.forwarder.lock().unwrap_or_else(|p| p.into_inner()) = None;
        for f in &ctx.fetchers.list {
            *f.forwarder.lock().unwrap_or_else(|p| p.into_inner()) = None;
        }
    }
}
