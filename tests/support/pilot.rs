//! The Globex pilot as the live tests send it: its events at their 2025 dates or moved by
//! whole weeks to end a day ago, and a producer that spreads them round robin.
#![allow(dead_code)]

use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::ClientConfig;
use slatrack::event::DeliveryEvent;
use slatrack::time::{Micros, MICROS_PER_DAY, MICROS_PER_MIN};
use std::time::Duration;

/// Moves every event by whole weeks so the last one completes about a day ago (weekdays
/// and hours of the day stay what they were).
pub fn end_yesterday(evs: &mut [DeliveryEvent]) {
    let last = evs.iter().map(|e| e.completed_at).max().unwrap();
    let weeks = (slatrack::time::now_micros() - MICROS_PER_DAY - last) / (7 * MICROS_PER_DAY);
    for e in evs {
        for t in [&mut e.enqueued_at, &mut e.started_at, &mut e.completed_at] {
            *t += weeks * 7 * MICROS_PER_DAY;
        }
    }
}

/// Sends `evs` (protobuf) to `topic`, the i-th to partition `(first_index + i) % partitions`.
pub fn produce_round_robin(
    brokers: &str,
    topic: &str,
    partitions: usize,
    evs: &[DeliveryEvent],
    first_index: usize,
) {
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "20")
        .create()
        .unwrap();
    for (i, e) in evs.iter().enumerate() {
        let payload = slatrack::codec::protobuf::encode(e);
        super::tansu::send_blocking(
            &producer,
            BaseRecord::to(topic)
                .partition(((first_index + i) % partitions) as i32)
                .key("k")
                .payload(&payload),
        );
    }
    producer.flush(Duration::from_secs(60)).unwrap();
}

/// The end of the last one-minute bucket of each partition, `evs` sent as
/// [`produce_round_robin`] from index 0 sends them.
pub fn last_bucket_ends(evs: &[DeliveryEvent], partitions: usize) -> Vec<Micros> {
    let mut out = vec![Micros::MIN; partitions];
    for (i, e) in evs.iter().enumerate() {
        let end = (e.completed_at.div_euclid(MICROS_PER_MIN) + 1) * MICROS_PER_MIN;
        out[i % partitions] = out[i % partitions].max(end);
    }
    out
}
