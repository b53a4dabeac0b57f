//! The running service's settings: Kafka (`[kafka]`, its topics and librdkafka
//! properties with `env:`/`file:` secrets), checkpoints (`[service]`), the metrics
//! listener (`[metrics]`) and the generated alert rules (`[alerts]`).

use super::{invalid, ConfigDuration, ConfigError};
use crate::time;
use serde::Deserialize;

/// Knobs of the generated Prometheus rules (`slatrack rules`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertsConfig {
    /// How long the 1h on-time ratio must stay below target before `SlatrackSLADrift`
    /// fires. 10 minutes by default; the end-to-end test shortens it.
    pub drift_for: ConfigDuration,
    /// Where the runbook (docs/operations.md, as the operator publishes it) lives: each
    /// generated alert links to `RUNBOOK_URL#<alert name in lower case>`. Empty: no links.
    pub runbook_url: String,
    /// Events a window must hold before a ratio or latency alert over it fires: with
    /// fewer, one late event is a large share (1 of 3 is 33 %) and pages nobody should get.
    pub min_events: u64,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        Self {
            drift_for: ConfigDuration(10 * time::MICROS_PER_MIN),
            runbook_url: String::new(),
            min_events: 30,
        }
    }
}

/// `metrics.listen`'s default: loopback only.
pub const DEFAULT_METRICS_LISTEN: &str = "127.0.0.1:9898";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Address of the /metrics, /healthz, /readyz listener; `""` disables it. Serves no
    /// payload data: tenant ids appear only as label values (see `tenant_label`).
    pub listen: String,
    /// `false` drops the tenant label: series aggregate over tenants (tenant="all").
    pub tenant_label: bool,
    /// How often the live service refreshes the freshness gauges
    /// (`slatrack_last_event_timestamp_seconds`) from its partitions; they lag the input
    /// by the fetch plus at most this.
    pub publish_interval: ConfigDuration,
    /// How often the window gauges and the service's own gauges are set from the rolling
    /// windows and the status; a scrape of `/metrics` only reads what was set last.
    pub gauge_interval: ConfigDuration,
    /// (tenant, platform) keys with their own series; further keys are exported as
    /// tenant `__overflow__` (per platform), so the scrape stays bounded (≈6 KB per key).
    pub max_series_keys: usize,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            listen: DEFAULT_METRICS_LISTEN.into(),
            tenant_label: true,
            publish_interval: ConfigDuration(100 * time::MICROS_PER_MILLI),
            gauge_interval: ConfigDuration(time::MICROS_PER_SEC),
            max_series_keys: 1_000,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// `bootstrap.servers`.
    pub brokers: String,
    #[serde(default = "default_group")]
    pub group_id: String,
    pub topics: Vec<TopicConfig>,
    /// Rejected records go here with their reason in headers; `""` disables.
    #[serde(default = "default_quarantine")]
    pub quarantine_topic: String,
    /// Closed windows and their corrections are published here after each store commit
    /// (`WindowSummary` records, docs/stores.md "Publishing windows"); `""` disables.
    #[serde(default)]
    pub windows_topic: String,
    /// Connections the consumer fetches its partitions over (each partition over one of
    /// them): on a backlog, one connection alternates the broker building a fetch and
    /// the client parsing it, two overlap them (`kafka::fetchers`). 1 to 8.
    #[serde(default = "default_fetch_connections")]
    pub fetch_connections: usize,
    /// Passed to librdkafka as is (SASL, TLS, timeouts), for consumer and producer.
    /// A value `env:NAME` is read from the environment variable NAME, `file:PATH` from a
    /// file, so secrets need not sit in the config file. Values are never logged.
    #[serde(default)]
    pub properties: std::collections::BTreeMap<String, String>,
}

fn default_group() -> String {
    "slatrack".into()
}

/// `kafka.fetch_connections` unless set.
pub const DEFAULT_FETCH_CONNECTIONS: usize = 2;

fn default_fetch_connections() -> usize {
    DEFAULT_FETCH_CONNECTIONS
}

fn default_quarantine() -> String {
    "slatrack-quarantine".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicConfig {
    pub name: String,
    #[serde(default = "default_format")]
    pub format: crate::codec::Format,
}

fn default_format() -> crate::codec::Format {
    crate::codec::Format::Protobuf
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServiceConfig {
    /// How often each partition writes its closed buckets and checkpoint.
    pub checkpoint_interval: ConfigDuration,
    /// A partition with no record for this long advances its watermark with the wall
    /// clock, so its open buckets still close.
    pub idle_timeout: ConfigDuration,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        Self {
            checkpoint_interval: ConfigDuration(time::MICROS_PER_SEC),
            idle_timeout: ConfigDuration(30 * time::MICROS_PER_SEC),
        }
    }
}

impl KafkaConfig {
    /// librdkafka properties with `env:`/`file:` references resolved.
    pub fn resolved_properties(&self) -> Result<Vec<(String, String)>, ConfigError> {
        self.properties
            .iter()
            .map(|(k, v)| {
                let key = format!("kafka.properties.{k:?}");
                Ok((k.clone(), resolve_secret(&key, v)?))
            })
            .collect()
    }
}

/// A secret's value: `env:NAME` from the environment variable NAME, `file:PATH` from the
/// file (trailing newline dropped), anything else as written. `key` names the setting in
/// errors; the value itself is never shown.
pub fn resolve_secret(key: &str, v: &str) -> Result<String, ConfigError> {
    if let Some(var) = v.strip_prefix("env:") {
        std::env::var(var).map_err(|_| {
            invalid(
                key,
                format!("\"env:{var}\""),
                "the environment variable is not set",
            )
        })
    } else if let Some(path) = v.strip_prefix("file:") {
        Ok(std::fs::read_to_string(path)
            .map_err(|e| {
                invalid(
                    key,
                    format!("\"file:{path}\""),
                    &format!("cannot read the file: {e}"),
                )
            })?
            .trim_end()
            .to_string())
    } else {
        Ok(v.to_string())
    }
}
