//! [`Config::validate`]: every rule a settings tree must meet, checked once at start-up.

use super::{check_fraction, invalid, Config, ConfigError, MAX_KEYS_LIMIT};
use crate::time;

impl Config {
    /// Checks every setting; the error names the key, the value and what is accepted.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.report.validate()?;
        if self.alerts.drift_for.0 < time::MICROS_PER_SEC
            || self.alerts.drift_for.0 % time::MICROS_PER_SEC != 0
        {
            return Err(invalid(
                "alerts.drift_for",
                self.alerts.drift_for,
                "must be a whole number of seconds, at least 1s",
            ));
        }
        let e = &self.engine;
        if e.bucket.0 < time::MICROS_PER_SEC || time::MICROS_PER_DAY % e.bucket.0 != 0 {
            return Err(invalid(
                "engine.bucket",
                e.bucket,
                "must be at least 1s and divide a day evenly (e.g. \"10s\", \"1m\", \"5m\")",
            ));
        }
        if e.allowed_lateness.0 < 0 {
            return Err(invalid(
                "engine.allowed_lateness",
                e.allowed_lateness,
                "must not be negative",
            ));
        }
        if e.correction_horizon.0 < 0 || e.correction_horizon.0 % e.bucket.0 != 0 {
            return Err(invalid(
                "engine.correction_horizon",
                e.correction_horizon,
                "must be \"0s\" or a whole multiple of engine.bucket (e.g. \"7d\")",
            ));
        }
        for (i, c) in self.criteria.iter().enumerate() {
            if !(c.on_time > 0.0 && c.on_time <= 1.0) {
                return Err(invalid(
                    format!("criteria[{i}].on_time"),
                    c.on_time,
                    "must be a fraction in (0, 1], e.g. 0.94",
                ));
            }
            if c.consecutive_weeks == 0 {
                return Err(invalid(
                    format!("criteria[{i}].consecutive_weeks"),
                    c.consecutive_weeks,
                    "must be at least 1",
                ));
            }
        }
        let retention = self.store.minute_retention;
        if retention.0 != 0
            && (retention.0 % time::MICROS_PER_HOUR != 0 || retention.0 < e.correction_horizon.0)
        {
            return Err(invalid(
                "store.minute_retention",
                retention,
                "must be \"0s\" (never fold) or whole hours, at least engine.correction_horizon (e.g. \"35d\")",
            ));
        }
        if e.windows.is_empty() {
            return Err(invalid(
                "engine.windows",
                "[]",
                "list at least one window, e.g. [\"5m\", \"1h\"]",
            ));
        }
        for (i, w) in e.windows.iter().enumerate() {
            if w.0 < e.bucket.0 || w.0 % e.bucket.0 != 0 {
                return Err(invalid(
                    format!("engine.windows[{i}]"),
                    w,
                    "must be a whole multiple of engine.bucket",
                ));
            }
            if w.0 > time::MICROS_PER_HOUR && w.0 % time::MICROS_PER_HOUR != 0 {
                return Err(invalid(
                    format!("engine.windows[{i}]"),
                    w,
                    "windows longer than 1h advance by whole hours and must be a whole number of hours",
                ));
            }
        }
        if self.validation.max_future_skew.0 <= 0 {
            return Err(invalid(
                "validation.max_future_skew",
                self.validation.max_future_skew,
                "must be positive",
            ));
        }
        if self.limits.max_keys == 0 {
            return Err(invalid("limits.max_keys", 0, "must be at least 1"));
        }
        if self.limits.max_uncommitted_buckets == 0 {
            return Err(invalid(
                "limits.max_uncommitted_buckets",
                0,
                "must be at least 1 (32768 by default)",
            ));
        }
        if self.limits.max_keys > MAX_KEYS_LIMIT {
            // Far past what memory allows anyway (tens of KB a key once the windows are
            // full), and what keeps the key table's name buffer addressable with 32-bit
            // offsets.
            return Err(invalid(
                "limits.max_keys",
                self.limits.max_keys,
                "must be at most 1000000 per shard",
            ));
        }
        if self.limits.max_record_bytes < 64 {
            return Err(invalid(
                "limits.max_record_bytes",
                self.limits.max_record_bytes,
                "must be at least 64",
            ));
        }
        let s = &self.sla;
        check_fraction("sla.on_time_target", s.on_time_target)?;
        check_fraction("sla.yellow_margin", s.yellow_margin)?;
        check_fraction("sla.failed_target", s.failed_target)?;
        check_fraction("sla.retry_target", s.retry_target)?;
        check_fraction("sla.max_retries_target", s.max_retries_target)?;
        check_fraction("sla.dlq_target", s.dlq_target)?;
        if s.rate_yellow_factor.is_nan() || s.rate_yellow_factor < 1.0 {
            return Err(invalid(
                "sla.rate_yellow_factor",
                s.rate_yellow_factor,
                "must be at least 1.0",
            ));
        }
        for (key, v) in [
            ("sla.latency_target", s.latency_target),
            ("sla.p50_target", s.p50_target),
            ("sla.p95_target", s.p95_target),
            ("sla.p99_threshold", s.p99_threshold),
        ] {
            if v.0 <= 0 {
                return Err(invalid(key, v, "must be positive"));
            }
        }
        if self.service.checkpoint_interval.0 <= 0 {
            return Err(invalid(
                "service.checkpoint_interval",
                self.service.checkpoint_interval,
                "must be positive",
            ));
        }
        if self.service.idle_timeout.0 <= 0 {
            return Err(invalid(
                "service.idle_timeout",
                self.service.idle_timeout,
                "must be positive",
            ));
        }
        if !self.metrics.listen.is_empty()
            && self.metrics.listen.parse::<std::net::SocketAddr>().is_err()
        {
            return Err(invalid(
                "metrics.listen",
                format!("{:?}", self.metrics.listen),
                "write host:port with a numeric address, e.g. \"127.0.0.1:9898\" or \"0.0.0.0:9898\"; \"\" disables",
            ));
        }
        if self.metrics.max_series_keys == 0 {
            return Err(invalid(
                "metrics.max_series_keys",
                0,
                "must be at least 1 (set metrics.tenant_label = false to drop tenants)",
            ));
        }
        if self.metrics.publish_interval.0 <= 0 {
            return Err(invalid(
                "metrics.publish_interval",
                self.metrics.publish_interval,
                "must be positive",
            ));
        }
        if let Some(k) = &self.kafka {
            if k.brokers.trim().is_empty() {
                return Err(invalid(
                    "kafka.brokers",
                    "\"\"",
                    "list at least one host:port",
                ));
            }
            if k.topics.is_empty() {
                return Err(invalid(
                    "kafka.topics",
                    "[]",
                    "list at least one topic to consume",
                ));
            }
            if !(1..=8).contains(&k.fetch_connections) {
                return Err(invalid(
                    "kafka.fetch_connections",
                    k.fetch_connections,
                    "must be 1 to 8 (2 overlaps the broker's work and the client's)",
                ));
            }
            for key in k.properties.keys() {
                if matches!(
                    key.as_str(),
                    "group.id" | "bootstrap.servers" | "enable.auto.commit"
                ) {
                    return Err(invalid(
                        format!("kafka.properties.{key:?}"),
                        "(set)",
                        "is managed by slatrack: use kafka.group_id / kafka.brokers; offsets are committed by slatrack after each checkpoint",
                    ));
                }
            }
        }
        let mut seen = std::collections::HashSet::new();
        for (i, p) in self.platforms.iter().enumerate() {
            if p.id.is_empty()
                || !p
                    .id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            {
                return Err(invalid(
                    format!("platforms[{i}].id"),
                    format!("{:?}", p.id),
                    "use lowercase letters, digits, '_' or '-' as in the events' platform field",
                ));
            }
            if !seen.insert(p.id.as_str()) {
                return Err(invalid(
                    format!("platforms[{i}].id"),
                    format!("{:?}", p.id),
                    "is listed twice",
                ));
            }
            if let Some(t) = p.on_time_target {
                check_fraction(&format!("platforms[{i}].on_time_target"), t)?;
            }
            if let Some(l) = p.latency_target {
                if l.0 <= 0 {
                    return Err(invalid(
                        format!("platforms[{i}].latency_target"),
                        l,
                        "must be positive",
                    ));
                }
            }
        }
        Ok(())
    }
}
