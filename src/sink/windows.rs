//! Publishing closed windows to Kafka (`kafka.windows_topic`), for downstream consumers
//! (a data warehouse, another team's dashboards). Kafka is an output here, never a store.
//!
//! The delivery guarantee is at-least-once with an idempotent key, so a consumer that
//! counts each key once counts every window exactly once:
//! - A commit queues its closed buckets and corrections in the store, in the transaction
//!   that moves the checkpoint (`window_queue`, numbered per source). A window is queued
//!   if and only if its records are counted; a fenced-out owner queues nothing.
//! - The publisher reads the queue, produces each window under the key
//!   `WindowKey { source, seq }` ([`crate::codec::window`]), waits for every
//!   acknowledgement, and only then removes what it published from the queue.
//! - A crash, a broker outage or two instances publishing the same queue (PostgreSQL)
//!   produce a window again under the same key with the same value; nothing is lost,
//!   because the queue is emptied only after the broker has the records.
//!
//! Consumers sum the windows they have not seen (by key) per tenant, platform and
//! bucket; a compacted topic keeps one record per key.

use crate::kafka::producer::{Outgoing, ProduceError, Producer};
use crate::kafka::ClientConfig;
use crate::store::{PartitionStore, StoreError};
use metrics::counter;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Windows read from the queue and published per round.
const BATCH: usize = 4096;
/// How long a round waits for room in librdkafka's queue and for acknowledgements.
const PATIENCE: Duration = Duration::from_secs(30);
/// How often the queue is read while it is empty.
pub const INTERVAL: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("reading or trimming the window queue: {0}")]
    Store(#[from] StoreError),
    #[error("publishing windows to Kafka topic {topic}: {source} (check that the topic exists and this principal may write it; the windows stay queued in the store and are published once it accepts them)")]
    Kafka { topic: String, source: ProduceError },
}

/// One round's result.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Round {
    pub published: usize,
    /// The round took a full batch: more may be queued.
    pub more: bool,
}

pub struct WindowPublisher {
    topic: String,
    producer: Producer,
    store: Box<dyn PartitionStore>,
}

impl WindowPublisher {
    /// A publisher of `store`'s queue (its own connection: publishing never holds the
    /// apply thread's) to `topic`.
    pub fn new(
        topic: &str,
        client: &ClientConfig,
        store: Box<dyn PartitionStore>,
    ) -> Result<Self, PublishError> {
        let producer = Producer::new(client).map_err(|source| PublishError::Kafka {
            topic: topic.to_string(),
            source,
        })?;
        counter!("slatrack_windows_published_total").increment(0);
        counter!("slatrack_window_publish_failures_total").increment(0);
        Ok(Self {
            topic: topic.to_string(),
            producer,
            store,
        })
    }

    /// Publishes up to one batch of queued windows and removes them from the queue once
    /// the broker has acknowledged all of them.
    pub fn publish_queued(&mut self) -> Result<Round, PublishError> {
        let queued = self.store.queued_windows(BATCH)?;
        if queued.is_empty() {
            return Ok(Round::default());
        }
        let kafka = |source| PublishError::Kafka {
            topic: self.topic.clone(),
            source,
        };
        // A failure reported for an earlier round is that round's; it was re-queued.
        let _ = self.producer.take_failure();
        let mut through: BTreeMap<&str, i64> = BTreeMap::new();
        for w in &queued {
            let key = crate::codec::window::key(&w.source, w.seq);
            let record = Outgoing {
                topic: &self.topic,
                key: &key,
                payload: Some(&w.summary),
                partition: None,
                headers: &[],
            };
            self.producer.send(&record, PATIENCE).map_err(kafka)?;
            let last = through.entry(&w.source).or_insert(w.seq);
            *last = (*last).max(w.seq);
        }
        self.producer.flush(PATIENCE).map_err(kafka)?;
        if let Some(why) = self.producer.take_failure() {
            return Err(kafka(ProduceError::Send(why)));
        }
        for (source, seq) in through {
            self.store.dequeue_windows(source, seq)?;
        }
        counter!("slatrack_windows_published_total").increment(queued.len() as u64);
        Ok(Round {
            published: queued.len(),
            more: queued.len() == BATCH,
        })
    }

    /// Publishes until `stop` is set, then until the queue is empty (or a round fails):
    /// the caller sets `stop` after the last checkpoint, so what it queued goes out too.
    pub fn run(mut self, stop: &AtomicBool) {
        let mut failing = false;
        loop {
            let stopping = stop.load(Ordering::Acquire);
            let round = self.publish_queued();
            match &round {
                Ok(r) if failing => {
                    tracing::info!(topic = %self.topic, published = r.published, "publishing windows again");
                    failing = false;
                }
                Ok(_) => {}
                Err(e) => {
                    counter!("slatrack_window_publish_failures_total").increment(1);
                    if !failing {
                        tracing::error!(error = %e, "windows not published");
                    }
                    failing = true;
                }
            }
            let more = matches!(round, Ok(Round { more: true, .. }));
            if stopping && !more {
                if failing {
                    tracing::warn!(topic = %self.topic, "stopping with windows still queued in the store; the next start publishes them");
                }
                return;
            }
            if !more {
                wait(stop, INTERVAL);
            }
        }
    }
}

/// Sleeps up to `d`, returning early once `stop` is set.
fn wait(stop: &AtomicBool, d: Duration) {
    let until = Instant::now() + d;
    while Instant::now() < until && !stop.load(Ordering::Acquire) {
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The running publisher thread.
pub struct PublisherThread {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

impl PublisherThread {
    /// Starts publishing `publisher`'s queue on a thread of its own.
    pub fn spawn(publisher: WindowPublisher) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("slatrack-publish".into())
            .spawn(move || publisher.run(&flag))?;
        Ok(Self { stop, thread })
    }

    /// Publishes what is still queued (call it after the last checkpoint) and stops.
    pub fn finish(self) {
        self.stop.store(true, Ordering::Release);
        if self.thread.join().is_err() {
            tracing::error!("the window publisher panicked; unpublished windows stay queued in the store for the next start");
        }
    }
}
