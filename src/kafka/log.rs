//! A compacted topic read from its start: the Kafka scorecard store's view of what every
//! instance wrote. [`TopicLog::open`] creates the topic (compacted, one partition) when it
//! does not exist yet.

use super::redact;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One record as read: its partition, key and payload (`None`: a tombstone).
pub struct LogRecord<'a> {
    pub partition: i32,
    pub key: Option<&'a [u8]>,
    pub payload: Option<&'a [u8]>,
}

pub struct TopicLog {
    tail: BaseConsumer,
    partitions: i32,
}

impl TopicLog {
    /// Assigns every partition of `topic` from the beginning, creating the topic first if
    /// the cluster does not have it. Errors are text for the store's error.
    pub fn open(base: &ClientConfig, topic: &str) -> Result<Self, String> {
        let mut cc = base.clone();
        cc.set("group.id", "slatrack-store-reader")
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "false");
        let tail: BaseConsumer = cc
            .create()
            .map_err(|e| format!("cannot create the reader: {}", redact(&e)))?;
        let partitions = ensure_topic(base, &tail, topic)?;
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions {
            tpl.add_partition_offset(topic, p, Offset::Beginning)
                .map_err(|e| e.to_string())?;
        }
        tail.assign(&tpl).map_err(|e| e.to_string())?;
        Ok(Self { tail, partitions })
    }

    pub fn partitions(&self) -> i32 {
        self.partitions
    }

    /// The next record, if one arrives within `timeout`, handed to `f`.
    pub fn poll<T>(
        &self,
        timeout: Duration,
        f: impl FnOnce(LogRecord<'_>) -> T,
    ) -> Result<Option<T>, String> {
        match self.tail.poll(timeout) {
            None => Ok(None),
            Some(Err(e)) => Err(format!("read failed: {}", redact(&e))),
            Some(Ok(m)) => Ok(Some(f(LogRecord {
                partition: m.partition(),
                key: m.key(),
                payload: m.payload(),
            }))),
        }
    }
}

/// The topic's partition count, creating it (compacted) if it does not exist.
fn ensure_topic(base: &ClientConfig, probe: &BaseConsumer, topic: &str) -> Result<i32, String> {
    let count = |probe: &BaseConsumer| -> Result<Option<i32>, String> {
        let md = probe
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .map_err(|e| format!("broker unreachable: {}", redact(&e)))?;
        Ok(md
            .topics()
            .iter()
            .find(|t| t.name() == topic && t.error().is_none() && !t.partitions().is_empty())
            .map(|t| t.partitions().len() as i32))
    };
    if let Some(n) = count(probe)? {
        return Ok(n);
    }
    tracing::info!(%topic, "creating the scorecard store topic (1 partition, cleanup.policy=compact)");
    let admin: AdminClient<DefaultClientContext> = base
        .create()
        .map_err(|e| format!("cannot create an admin client: {}", redact(&e)))?;
    let new = NewTopic::new(topic, 1, TopicReplication::Fixed(1)).set("cleanup.policy", "compact");
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let results = block_on(admin.create_topics([&new], &opts))
        .map_err(|e| format!("cannot create the topic: {}", redact(&e)))?;
    for r in results {
        match r {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((_, code)) => {
                return Err(format!(
                    "cannot create the topic ({code}); create it yourself, compacted"
                ))
            }
        }
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(n) = count(probe)? {
            return Ok(n);
        }
        if Instant::now() > deadline {
            return Err("created, but its metadata did not appear within 10 s".into());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Drives one future on this thread. rdkafka's admin futures are completed by
/// librdkafka's own thread, so no async runtime is needed (and this also works from
/// inside one, where a nested runtime would panic).
fn block_on<F: std::future::Future>(f: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl std::task::Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = std::task::Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = std::task::Context::from_waker(&waker);
    let mut f = std::pin::pin!(f);
    loop {
        if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::park();
    }
}
