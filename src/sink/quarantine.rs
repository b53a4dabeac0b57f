//! The quarantine topic: every rejected record's original bytes, with headers saying why
//! and where it came from (`reason`, `explanation`, `source.topic`, `source.partition`,
//! `source.offset`). It holds raw payloads: restrict who can read it and give it a
//! retention that matches the input topic's (docs/exactly-once.md).
//!
//! At-least-once: after a crash the records since the last checkpoint are processed
//! again and their rejections produced again; consumers of the quarantine dedupe on
//! (source.topic, source.partition, source.offset).

use crate::event::RejectReason;
use crate::kafka::producer::{Outgoing, ProduceError, Producer};
use crate::kafka::ClientConfig;
use crate::runtime::RuntimeStatus;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// Payloads are quarantined up to this size; a larger one (a `too_large` record) keeps its
/// first bytes and says so in `original.size` / `truncated` headers: it is evidence, not
/// data to replay, and Kafka's default message size (1 MB) must not drop it.
pub const MAX_QUARANTINED_BYTES: usize = 512 * 1024;

/// How long a send waits for room in librdkafka's queue before the record counts as
/// dropped.
const SEND_PATIENCE: Duration = Duration::from_secs(5);

/// Records handed to librdkafka (`produced`) and records lost on the way (`dropped`: its
/// queue stayed full, or the broker never acknowledged them) are counted in the
/// [`RuntimeStatus`] (`quarantined`, `quarantine_dropped`), which the exporter reads
/// (`slatrack_quarantined_total`, `slatrack_quarantine_dropped_total`).
pub struct Quarantine {
    topic: String,
    producer: Producer,
    status: Arc<RuntimeStatus>,
    produced: u64,
    /// `produced` at the last flush that completed.
    settled: u64,
    /// Failed deliveries already counted as dropped.
    failures_seen: u64,
}

impl Quarantine {
    pub fn new(
        topic: &str,
        client: &ClientConfig,
        status: Arc<RuntimeStatus>,
    ) -> Result<Self, ProduceError> {
        Ok(Self {
            topic: topic.to_string(),
            producer: Producer::new(client)?,
            status,
            produced: 0,
            settled: 0,
            failures_seen: 0,
        })
    }

    fn drop_records(&self, n: u64) {
        self.status
            .quarantine_dropped
            .fetch_add(n, Ordering::Relaxed);
    }

    /// Counts the deliveries that failed since the last look as dropped, and says so.
    fn check_deliveries(&mut self) {
        let failed = self.producer.failed_deliveries();
        let new = failed - self.failures_seen;
        if new == 0 {
            return;
        }
        self.failures_seen = failed;
        self.drop_records(new);
        let why = self.producer.take_failure().unwrap_or_default();
        tracing::error!(topic = %self.topic, records = new, error = %why, "quarantined records not delivered: their rejections are counted, their bytes are not in the quarantine topic (check the topic exists and this principal may write it)");
    }

    pub fn send(
        &mut self,
        payload: &[u8],
        reason: RejectReason,
        topic: &str,
        partition: i32,
        offset: i64,
    ) {
        let (p, o) = (partition.to_string(), offset.to_string());
        let size = payload.len().to_string();
        let truncated = payload.len() > MAX_QUARANTINED_BYTES;
        let payload = &payload[..payload.len().min(MAX_QUARANTINED_BYTES)];
        let mut headers = vec![
            ("reason", reason.code()),
            ("explanation", reason.explain()),
            ("source.topic", topic),
            ("source.partition", p.as_str()),
            ("source.offset", o.as_str()),
        ];
        if truncated {
            headers.push(("truncated", "true"));
            headers.push(("original.size", size.as_str()));
        }
        let key = format!("{topic}/{partition}/{offset}");
        let record = Outgoing {
            topic: &self.topic,
            key: key.as_bytes(),
            payload: Some(payload),
            partition: None,
            headers: &headers,
        };
        // A full local queue is transient; past `SEND_PATIENCE` the record is counted as
        // dropped: a stalled quarantine never stalls the partition.
        match self.producer.send(&record, SEND_PATIENCE) {
            Ok(()) => {
                self.produced += 1;
                self.status.quarantined.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot produce to the quarantine topic; record counted as dropped");
                self.drop_records(1);
            }
        }
    }

    /// Waits until every record produced so far has left librdkafka's queue (delivered, or
    /// failed for good). The service calls it before a checkpoint moves past the offsets
    /// of quarantined records: after a crash the restart resumes past them, so a record
    /// still queued then would be lost rather than produced again. False if the queue did
    /// not drain within 10 s (the checkpoint then waits for a later round).
    pub fn settle(&mut self) -> bool {
        if self.settled == self.produced {
            return true;
        }
        match self.drain() {
            Ok(()) => {
                self.settled = self.produced;
                self.check_deliveries();
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "quarantine producer did not flush within 10 s; checkpoints wait for it");
                false
            }
        }
    }

    /// Everything produced so far delivered or failed, within 10 s. (The producer's own
    /// thread serves delivery reports, so waiting between checks is a sleep.)
    fn drain(&self) -> Result<(), ProduceError> {
        self.producer.flush(Duration::from_secs(10))
    }

    pub fn flush(&mut self) {
        if let Err(e) = self.drain() {
            tracing::warn!(error = %e, "quarantine producer did not flush within 10 s");
        }
        self.check_deliveries();
    }
}
