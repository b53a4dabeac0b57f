//! The consumer's librdkafka context: rebalances handed to a [`Rebalance`] handler
//! (with the store's offsets, the log checks and the fetch connections' shares), broker
//! health and high watermarks from the statistics.

use super::super::fetch_queue::{forward_all, Forwarder};
use super::super::fetchers::Fetchers;
use super::super::redact;
use crate::runtime::RuntimeStatus;
use rdkafka::consumer::{BaseConsumer, Consumer as _, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::{ClientContext, Message, Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
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
    pub(super) handler: Arc<dyn Rebalance>,
    pub(super) status: Arc<RuntimeStatus>,
    pub(super) high: HighWatermarks,
    /// Client settings for a log probe ([`holds_offset`]).
    pub(super) probe: rdkafka::ClientConfig,
    /// Where assigned partitions' records go ([`FetchQueue`]); `None` before the queue
    /// exists and once it is gone.
    pub(super) forwarder: Mutex<Option<Forwarder>>,
    /// Extra connections fetching some of the assigned partitions, and who fetches what.
    pub(super) fetchers: Fetchers,
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

/// Records the high watermark of every partition in librdkafka's statistics.
pub(in crate::kafka) fn record_high(high: &HighWatermarks, statistics: &rdkafka::Statistics) {
    if let Ok(mut h) = high.lock() {
        for (name, t) in &statistics.topics {
            for (&p, part) in &t.partitions {
                if p >= 0 && part.hi_offset >= 0 {
                    h.insert((name.clone(), p), part.hi_offset);
                }
            }
        }
    }
}

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
                forward_all(&self.forwarder, &mine);
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
