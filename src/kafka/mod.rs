//! Every use of the Kafka client (librdkafka through `rdkafka`) lives here:
//!
//! - this file: client settings from `[kafka]` (secrets resolved from `env:`/`file:`
//!   references, never logged) and redaction of client errors;
//! - [`consumer`]: the service's consumer: its librdkafka context (rebalances, broker
//!   health, high watermarks), polling into batches, fetch moves and group commits;
//! - [`fetch_queue`]: the queues the consumer reads records from in batches (librdkafka's
//!   C API, the crate's only use of it);
//! - `fetchers`: extra connections that fetch some of the consumer's partitions;
//! - [`producer`]: the one producer (quarantine, published windows, traffic generator);
//! - [`mock`]: librdkafka's in-process mock cluster (the demo).
//!
//! The rest of slatrack sees plain Rust: partitions as `(topic, partition)`, offsets as
//! `i64`, errors as text safe to log.

pub mod consumer;
pub mod fetch_queue;
mod fetchers;
pub mod mock;
pub mod producer;

use crate::config::{ConfigError, KafkaConfig};
pub use rdkafka::config::ClientConfig;

/// A Kafka client could not be set up or used.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Redacted text, not the `KafkaError`: its `Display` (and so any error chain that
    /// keeps it as a source) can include a configuration value, i.e. a password.
    #[error("Kafka client error: {0} (check kafka.brokers and kafka.properties; the broker may be unreachable)")]
    Client(String),
}

impl From<rdkafka::error::KafkaError> for ClientError {
    fn from(e: rdkafka::error::KafkaError) -> Self {
        ClientError::Client(redact(&e))
    }
}

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
        // librdkafka's default (1 s) idles the fetcher each time its local queue is full,
        // so catching up a backlog would run in 1 s bursts.
        ("fetch.queue.backoff.ms", "10"),
        // Records fetched ahead, per partition: librdkafka's default (64 MiB) made a
        // catch-up hold most of a backlog in memory, 2 GiB at 32 partitions; 8 MiB is
        // about 25,000 records of 300 B, tens of fetches ahead of the apply thread.
        ("queued.max.messages.kbytes", "8192"),
        // How long the broker may hold a fetch that has less than fetch.min.bytes. Kafka
        // answers as soon as data exists; tansu holds it to the limit, so this bounds the
        // delay an event adds on its way to the gauges. Idle partitions cost ten fetches
        // a second.
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

/// The store source of a Kafka partition: `kafka:TOPIC/PARTITION`.
pub fn source_id(topic: &str, partition: i32) -> String {
    format!("kafka:{topic}/{partition}")
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
