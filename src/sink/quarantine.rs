//! The quarantine topic: every rejected record's original bytes, with headers saying why
//! and where it came from (`reason`, `explanation`, `source.topic`, `source.partition`,
//! `source.offset`). It holds raw payloads: restrict who can read it and give it a
//! retention that matches the input topic's (see README "Quarantine").
//!
//! At-least-once: after a crash the records since the last checkpoint are processed
//! again and their rejections produced again; consumers of the quarantine dedupe on
//! (source.topic, source.partition, source.offset).

use crate::event::RejectReason;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, ThreadedProducer};
use std::time::Duration;

/// Payloads are quarantined up to this size; a larger one (a `too_large` record) keeps its
/// first bytes and says so in `original.size` / `truncated` headers: it is evidence, not
/// data to replay, and Kafka's default message size (1 MB) must not drop it.
pub const MAX_QUARANTINED_BYTES: usize = 512 * 1024;

pub struct Quarantine {
    topic: String,
    producer: ThreadedProducer<DefaultProducerContext>,
    pub produced: u64,
    pub dropped: u64,
    /// `produced` at the last flush that completed.
    settled: u64,
}

impl Quarantine {
    pub fn new(topic: &str, client: &ClientConfig) -> Result<Self, KafkaError> {
        Ok(Self {
            topic: topic.to_string(),
            producer: client.create()?,
            produced: 0,
            settled: 0,
            dropped: 0,
        })
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
        let mut headers = OwnedHeaders::new()
            .insert(Header {
                key: "reason",
                value: Some(reason.code()),
            })
            .insert(Header {
                key: "explanation",
                value: Some(reason.explain()),
            })
            .insert(Header {
                key: "source.topic",
                value: Some(topic),
            })
            .insert(Header {
                key: "source.partition",
                value: Some(&p),
            })
            .insert(Header {
                key: "source.offset",
                value: Some(&o),
            });
        if truncated {
            headers = headers
                .insert(Header {
                    key: "truncated",
                    value: Some("true"),
                })
                .insert(Header {
                    key: "original.size",
                    value: Some(&size),
                });
        }
        let key = format!("{topic}/{partition}/{offset}");
        let mut record = BaseRecord::to(&self.topic)
            .payload(payload)
            .key(&key)
            .headers(headers);
        // A full local queue is a transient condition: wait for deliveries, then retry,
        // for at most ~5 s; past that the record is counted as dropped, never blocks forever.
        for _ in 0..50 {
            match self.producer.send(record) {
                Ok(()) => {
                    self.produced += 1;
                    return;
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err((e, _)) => {
                    tracing::error!(error = %e, "cannot produce to the quarantine topic; record counted as dropped");
                    break;
                }
            }
        }
        self.dropped += 1;
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
    fn drain(&self) -> rdkafka::error::KafkaResult<()> {
        crate::source::kafka::flush(&self.producer, Duration::from_secs(10), || {
            std::thread::sleep(Duration::from_millis(1))
        })
    }

    pub fn flush(&self) {
        if let Err(e) = self.drain() {
            tracing::warn!(error = %e, "quarantine producer did not flush within 10 s");
        }
    }
}
