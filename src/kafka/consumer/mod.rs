//! The service's Kafka consumer: polling into [`Batch`]es, fetch moves, pause/resume and
//! advisory group-offset commits. Its librdkafka context (rebalances handed to a
//! [`Rebalance`] handler, broker health, high watermarks) is in `context`, batches and
//! how they are filled in `batch`.
//!
//! Rebalance callbacks run inside `poll`, on the polling thread. An assignment carries the
//! offsets the handler returns (the store's checkpoints), so fetching starts where the
//! store says, not at the group offset.

mod batch;
mod context;

pub use batch::{Batch, Item, BATCH, BATCH_BYTES};
pub(super) use context::record_high;
pub use context::{ConsumerCtx, HighWatermarks, Rebalance, TopicPartition};

use super::fetch_queue::{FetchQueue, FetchQueues};
use super::fetchers::{Fetcher, Fetchers};
use super::{consumer_config, redact, ClientError};
use crate::config::KafkaConfig;
use crate::runtime::RuntimeStatus;
use batch::{topic_index, Filling, READ_CHUNK};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer as _, ConsumerContext};
use rdkafka::{Message, Offset, TopicPartitionList};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

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
