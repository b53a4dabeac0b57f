//! librdkafka client settings shared by the consumer, the quarantine producer and the
//! generator. Secrets come from `kafka.properties` (resolved `env:`/`file:` references)
//! and are never logged.

use crate::config::{ConfigError, KafkaConfig};
use rdkafka::config::ClientConfig;

/// Base settings for any client of this cluster.
pub fn client_config(k: &KafkaConfig) -> Result<ClientConfig, ConfigError> {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &k.brokers);
    for (key, value) in k.resolved_properties()? {
        c.set(key, value);
    }
    Ok(c)
}

/// Consumer settings: classic group protocol (what tansu supports), no auto commit
/// (offsets are committed after each checkpoint, advisory only), earliest start.
pub fn consumer_config(k: &KafkaConfig) -> Result<ClientConfig, ConfigError> {
    let mut c = client_config(k)?;
    c.set("group.id", &k.group_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false");
    for (key, default) in [
        ("auto.offset.reset", "earliest"),
        ("session.timeout.ms", "6000"),
        ("heartbeat.interval.ms", "1000"),
        ("partition.assignment.strategy", "range,roundrobin"),
        // High watermarks for the lag metric come from the statistics callback.
        ("statistics.interval.ms", "1000"),
        // librdkafka's default (1 s) idles the fetcher each time its local queue is full;
        // catching up a backlog then runs in 1 s bursts (measured: 0.29M vs 1.4M msg/s).
        ("fetch.queue.backoff.ms", "10"),
        // How long the broker may hold a fetch that has less than fetch.min.bytes. Kafka
        // answers as soon as data exists; tansu holds it to the limit, and librdkafka's
        // 500 ms default made the probe latency p99 1.1–1.4 s at 50k events/s (100 ms:
        // BENCHMARKS.md "Freshness"). Idle partitions cost ten fetches a second.
        ("fetch.wait.max.ms", "100"),
    ] {
        if !k.properties.contains_key(key) {
            c.set(key, default);
        }
    }
    Ok(c)
}

/// The names of properties set, for the start-up log: keys only, never values.
pub fn describe(k: &KafkaConfig) -> String {
    let keys: Vec<&str> = k.properties.keys().map(String::as_str).collect();
    format!(
        "brokers={} group={} properties=[{}]",
        k.brokers,
        k.group_id,
        keys.join(", ")
    )
}

/// A Kafka error as text safe for logs: librdkafka's configuration errors carry the
/// offending *value* (which may be a password); this keeps the property name only.
pub fn redact(e: &rdkafka::error::KafkaError) -> String {
    match e {
        rdkafka::error::KafkaError::ClientConfig(_, desc, key, _value) => {
            format!("client configuration rejected: {desc} (property {key}; value not shown)")
        }
        other => other.to_string(),
    }
}

/// Waits until everything `producer` queued is acknowledged or failed, checking every
/// millisecond; `poll` serves its delivery reports (a `BaseProducer` must be polled; a
/// `ThreadedProducer`'s own thread does it, so `poll` may just sleep).
///
/// Why not `Producer::flush`: rust-rdkafka's polls in 100 ms slices that each run to their
/// end, so any flush took ≥ 100 ms however fast the broker acknowledged. A Kafka-store
/// checkpoint flushes twice: 200 ms per partition of the apply thread's time, and a
/// revocation of 6 partitions took 1.2 s (the tansu suite's logs), while the group waited.
pub fn flush<C, P>(
    producer: &P,
    timeout: std::time::Duration,
    poll: impl Fn(),
) -> rdkafka::error::KafkaResult<()>
where
    C: rdkafka::producer::ProducerContext + 'static,
    P: rdkafka::producer::Producer<C>,
{
    use rdkafka::error::{KafkaError, RDKafkaErrorCode};
    let deadline = std::time::Instant::now() + timeout;
    loop {
        // A zero timeout: librdkafka sends what lingers, and answers at once.
        match producer.flush(std::time::Duration::ZERO) {
            Ok(()) => return Ok(()),
            Err(KafkaError::Flush(RDKafkaErrorCode::OperationTimedOut))
                if std::time::Instant::now() < deadline =>
            {
                poll()
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn configuration_errors_keep_the_key_and_drop_the_value() {
        let e = rdkafka::error::KafkaError::ClientConfig(
            rdkafka::types::RDKafkaConfRes::RD_KAFKA_CONF_INVALID,
            "bad".into(),
            "sasl.password".into(),
            "hunter2".into(),
        );
        let s = super::redact(&e);
        assert!(s.contains("sasl.password") && !s.contains("hunter2"), "{s}");
    }
}
