//! The one configuration tree (TOML), parsed with serde and validated once at start-up.
//!
//! Every error names the offending key and value and says what would be accepted, so an
//! operator can fix the file without reading code. Defaults reproduce the Globex pilot's
//! SLA targets; `config/slatrack.toml` spells them out.

mod contract;
mod report;
mod service;
mod validate;

pub use contract::{
    CreditTier, ExclusionCategory, ExclusionConfig, TenantConfig, TenantPlatformConfig,
};
pub use report::{NotifyConfig, ReportConfig, LOGO_TYPES};
pub use service::{
    resolve_secret, AlertsConfig, KafkaConfig, MetricsConfig, ServiceConfig, TopicConfig,
    DEFAULT_FETCH_CONNECTIONS, DEFAULT_METRICS_LISTEN,
};

use crate::event::Direction;
use crate::time::{self, Micros};
use serde::{Deserialize, Deserializer};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source} (check the --config path)")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config key `{key}`{} has bad value {value}: {why}", line.map(|l| format!(" (line {l})")).unwrap_or_default())]
    Invalid {
        key: String,
        value: String,
        why: String,
        /// Where the key is written, when the config came from a file or text.
        line: Option<usize>,
    },
}

/// Upper bound of `limits.max_keys`.
pub const MAX_KEYS_LIMIT: usize = 1_000_000;

pub(crate) fn invalid(
    key: impl Into<String>,
    value: impl std::fmt::Display,
    why: &str,
) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        value: value.to_string(),
        why: why.to_string(),
        line: None,
    }
}

/// A duration written as `"500ms"`, `"2m"`, `"7d"` in the TOML file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConfigDuration(pub Micros);

impl<'de> Deserialize<'de> for ConfigDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        time::parse_duration(&s).map(ConfigDuration).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "invalid duration {s:?}: write a whole number and a unit (us, ms, s, m, h, d), e.g. \"2m\""
            ))
        })
    }
}

impl std::fmt::Display for ConfigDuration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "\"{}\"", time::format_duration(self.0))
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub engine: EngineConfig,
    #[serde(default)]
    pub validation: ValidationConfig,
    #[serde(default)]
    pub limits: LimitsConfig,
    #[serde(default)]
    pub store: StoreConfig,
    #[serde(default)]
    pub sla: SlaConfig,
    #[serde(default = "default_platforms")]
    pub platforms: Vec<PlatformConfig>,
    /// Required by `slatrack run`; `demo` fills it in for its embedded cluster.
    #[serde(default)]
    pub kafka: Option<KafkaConfig>,
    #[serde(default)]
    pub service: ServiceConfig,
    #[serde(default)]
    pub metrics: MetricsConfig,
    #[serde(default)]
    pub alerts: AlertsConfig,
    /// Exit criteria judged week by week in scorecards (`[[criteria]]`).
    #[serde(default = "default_criteria")]
    pub criteria: Vec<ExitCriterion>,
    /// Tenants' SLA contracts (`[[tenants]]`, docs/contracts.md).
    #[serde(default)]
    pub tenants: Vec<TenantConfig>,
    /// Windows excluded from every figure (`[[exclusions]]`, docs/contracts.md).
    #[serde(default)]
    pub exclusions: Vec<ExclusionConfig>,
    /// The scorecard job: branding and notifications (`[report]`).
    #[serde(default)]
    pub report: ReportConfig,
    /// The TOML text this tree was read from, to say on which line a bad key is written
    /// ([`Config::locate`]).
    #[serde(skip)]
    source: Source,
}

/// The text a config was read from; not part of its value (two trees with the same
/// settings are the same config), so it debug-prints as nothing.
#[derive(Clone, Default)]
struct Source(Option<std::sync::Arc<str>>);

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("_")
    }
}

/// "Platform on-time ≥ `on_time` for `consecutive_weeks` weeks in a row", as a pilot's
/// GA exit criterion reads.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExitCriterion {
    pub platform: String,
    pub on_time: f64,
    pub consecutive_weeks: u32,
}

/// The pilot seed's criterion: Workday SLA ≥ 94% for 2 consecutive weeks.
fn default_criteria() -> Vec<ExitCriterion> {
    vec![ExitCriterion {
        platform: "workday".into(),
        on_time: 0.94,
        consecutive_weeks: 2,
    }]
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EngineConfig {
    /// Width of the event-time tumbling buckets.
    pub bucket: ConfigDuration,
    /// How far behind the newest event time a bucket stays open for late records.
    pub allowed_lateness: ConfigDuration,
    /// How long after its bucket closed a record is still counted, as a correction of
    /// that bucket (deduplicated against everything it counted); older ones are
    /// rejected as `too_late`. `"0s"`: every record for a closed bucket is `too_late`.
    pub correction_horizon: ConfigDuration,
    /// Rolling windows published from closed buckets.
    pub windows: Vec<ConfigDuration>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            bucket: ConfigDuration(time::MICROS_PER_MIN),
            allowed_lateness: ConfigDuration(2 * time::MICROS_PER_MIN),
            correction_horizon: ConfigDuration(7 * time::MICROS_PER_DAY),
            windows: vec![
                ConfigDuration(5 * time::MICROS_PER_MIN),
                ConfigDuration(time::MICROS_PER_HOUR),
                ConfigDuration(time::MICROS_PER_DAY),
                ConfigDuration(7 * time::MICROS_PER_DAY),
            ],
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ValidationConfig {
    /// Timestamps further than this ahead of the wall clock are rejected as
    /// `timestamp_out_of_range`, so one absurd clock cannot drag the watermark forward.
    pub max_future_skew: ConfigDuration,
}

impl Default for ValidationConfig {
    fn default() -> Self {
        Self {
            max_future_skew: ConfigDuration(10 * time::MICROS_PER_MIN),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Distinct (tenant, platform) keys per shard before new keys fold into `__overflow__`.
    pub max_keys: usize,
    /// Records larger than this are rejected as `too_large` before decoding.
    pub max_record_bytes: usize,
    /// Dedup keys of closed buckets a partition keeps in memory to resolve corrections
    /// (≈ 20 bytes each); the rest are read from the store when needed.
    pub correction_cache_keys: usize,
    /// Closed buckets a partition holds before it commits them, whatever the checkpoint
    /// pacing (≈ 128 bytes each plus 16 per dedup key): what bounds a backfill's memory,
    /// where nearly every record closes a bucket of its own.
    pub max_uncommitted_buckets: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_keys: 10_000,
            max_record_bytes: 1 << 20,
            correction_cache_keys: 1_000_000,
            max_uncommitted_buckets: 32_768,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// A SQLite file or `postgres://USER@HOST:PORT/DB[?sslmode=…&sslrootcert=…]`.
    pub path: PathBuf,
    /// Bucket rows older than this are folded into hourly rows, exactly ("0s": never).
    pub minute_retention: ConfigDuration,
    /// PostgreSQL password: `env:NAME` or `file:PATH` (or, not advised, the password).
    pub password: Option<String>,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            path: PathBuf::from("slatrack.db"),
            minute_retention: ConfigDuration(35 * time::MICROS_PER_DAY),
            password: None,
        }
    }
}

/// Default targets and status thresholds; a platform may override its two SLA targets.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SlaConfig {
    /// Fraction of events delivered within `latency_target` (green at or above).
    pub on_time_target: f64,
    /// End-to-end (`completed_at − enqueued_at`) bound for an event to count as on time.
    pub latency_target: ConfigDuration,
    /// On-time ratio within this many points (fraction) below target is yellow, else red.
    pub yellow_margin: f64,
    pub failed_target: f64,
    pub retry_target: f64,
    pub max_retries_target: f64,
    pub dlq_target: f64,
    /// A rate up to `rate_yellow_factor ×` its target is yellow, above is red.
    pub rate_yellow_factor: f64,
    /// Soft latency targets: missing them is yellow.
    pub p50_target: ConfigDuration,
    pub p95_target: ConfigDuration,
    /// Hard latency threshold: exceeding it is red.
    pub p99_threshold: ConfigDuration,
}

impl Default for SlaConfig {
    fn default() -> Self {
        Self {
            on_time_target: 0.95,
            latency_target: ConfigDuration(500 * time::MICROS_PER_MILLI),
            yellow_margin: 0.05,
            failed_target: 0.02,
            retry_target: 0.05,
            max_retries_target: 0.005,
            dlq_target: 0.001,
            rate_yellow_factor: 2.0,
            p50_target: ConfigDuration(300 * time::MICROS_PER_MILLI),
            p95_target: ConfigDuration(500 * time::MICROS_PER_MILLI),
            p99_threshold: ConfigDuration(1000 * time::MICROS_PER_MILLI),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlatformConfig {
    /// Id as it appears in events (`platform` field).
    pub id: String,
    /// Display name for reports.
    pub name: String,
    #[serde(deserialize_with = "de_direction")]
    pub direction: Direction,
    pub on_time_target: Option<f64>,
    pub latency_target: Option<ConfigDuration>,
}

fn de_direction<'de, D: Deserializer<'de>>(d: D) -> Result<Direction, D::Error> {
    let s = String::deserialize(d)?;
    Direction::parse(&s).ok_or_else(|| {
        serde::de::Error::custom(format!(
            "invalid direction {s:?}: use \"inbound\" or \"outbound\""
        ))
    })
}

fn default_platforms() -> Vec<PlatformConfig> {
    let p = |id: &str, name: &str, direction, target: Option<f64>, latency_ms: Option<i64>| {
        PlatformConfig {
            id: id.into(),
            name: name.into(),
            direction,
            on_time_target: target,
            latency_target: latency_ms.map(|ms| ConfigDuration(ms * time::MICROS_PER_MILLI)),
        }
    };
    vec![
        p("benevity", "Benevity", Direction::Inbound, None, None),
        p("goodera", "Goodera", Direction::Inbound, None, None),
        p("workday", "Workday", Direction::Inbound, None, None),
        p(
            "sap_successfactors",
            "SAP SuccessFactors",
            Direction::Inbound,
            None,
            None,
        ),
        p(
            "impact_in",
            "Impact-In (Outbound)",
            Direction::Outbound,
            Some(0.98),
            Some(300),
        ),
    ]
}

/// The two SLA targets that apply to one platform after defaults are resolved.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Targets {
    pub on_time_target: f64,
    pub latency_target_us: Micros,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            engine: EngineConfig::default(),
            validation: ValidationConfig::default(),
            limits: LimitsConfig::default(),
            store: StoreConfig::default(),
            sla: SlaConfig::default(),
            platforms: default_platforms(),
            kafka: None,
            service: ServiceConfig::default(),
            metrics: MetricsConfig::default(),
            alerts: AlertsConfig::default(),
            criteria: default_criteria(),
            tenants: Vec::new(),
            exclusions: Vec::new(),
            report: ReportConfig::default(),
            source: Source::default(),
        }
    }
}

impl Config {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_toml(&text).map_err(|e| match e {
            ConfigError::Parse { message, .. } => ConfigError::Parse {
                path: path.to_path_buf(),
                message,
            },
            other => other,
        })
    }

    /// Environment overrides for containers (one image, config file mounted, per-deployment
    /// values from the environment): `SLATRACK_BROKERS` → `kafka.brokers`,
    /// `SLATRACK_STORE` → `store.path`, `SLATRACK_METRICS_LISTEN` → `metrics.listen`.
    /// The result is validated again.
    pub fn apply_env(&mut self, env: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        if let Some(b) = env("SLATRACK_BROKERS") {
            match self.kafka.as_mut() {
                Some(k) => k.brokers = b,
                None => {
                    return Err(invalid(
                        "SLATRACK_BROKERS",
                        b,
                        "is set but the config has no [kafka] section to apply it to",
                    ))
                }
            }
        }
        if let Some(s) = env("SLATRACK_STORE") {
            self.store.path = PathBuf::from(s);
        }
        if let Some(l) = env("SLATRACK_METRICS_LISTEN") {
            self.metrics.listen = l;
        }
        self.validate()
    }

    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let mut cfg: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: PathBuf::from("<inline>"),
            message: e.to_string(),
        })?;
        cfg.source = Source(Some(text.into()));
        cfg.validate().map_err(|e| cfg.locate(e))?;
        Ok(cfg)
    }

    /// `e` with the line its key is written on, when this tree was read from text.
    pub fn locate(&self, e: ConfigError) -> ConfigError {
        match (e, &self.source.0) {
            (
                ConfigError::Invalid {
                    key, value, why, ..
                },
                Some(text),
            ) => ConfigError::Invalid {
                line: line_of(text, &key),
                key,
                value,
                why,
            },
            (e, _) => e,
        }
    }

    pub fn platform(&self, id: &str) -> Option<&PlatformConfig> {
        self.platforms.iter().find(|p| p.id == id)
    }

    /// Targets for a platform id; unknown platforms get the defaults (aggregated, not rejected).
    pub fn targets(&self, platform: &str) -> Targets {
        let p = self.platform(platform);
        Targets {
            on_time_target: p
                .and_then(|p| p.on_time_target)
                .unwrap_or(self.sla.on_time_target),
            latency_target_us: p
                .and_then(|p| p.latency_target)
                .unwrap_or(self.sla.latency_target)
                .0,
        }
    }
}

/// The line (1-based) of an entry's field in the TOML text, for a key such as
/// `exclusions[1].start`: the field's line in the `[[exclusions]]` table of that index, or
/// the table's header when the field is not written there.
fn line_of(text: &str, key: &str) -> Option<usize> {
    let (table, rest) = key.split_once('[')?;
    let (index, rest) = rest.split_once(']')?;
    let index: usize = index.parse().ok()?;
    let field = rest
        .trim_start_matches('.')
        .split(['.', '['])
        .next()
        .unwrap_or("");
    let header = format!("[[{table}]]");
    let lines: Vec<&str> = text.lines().collect();
    let start = lines
        .iter()
        .enumerate()
        .filter(|(_, l)| l.trim() == header)
        .nth(index)?
        .0;
    let nested = format!("[[{table}.{field}]]");
    for (i, l) in lines.iter().enumerate().skip(start + 1) {
        let t = l.trim();
        if t == header || (t.starts_with('[') && !t.starts_with(&format!("[[{table}."))) {
            break;
        }
        let is_field = t
            .strip_prefix(field)
            .is_some_and(|r| r.trim_start().starts_with('='));
        if !field.is_empty() && (is_field || t == nested) {
            return Some(i + 1);
        }
    }
    Some(start + 1)
}

pub(crate) fn check_fraction(key: &str, v: f64) -> Result<(), ConfigError> {
    if (0.0..=1.0).contains(&v) {
        Ok(())
    } else {
        Err(invalid(
            key,
            v,
            "must be a fraction between 0 and 1 (0.95 means 95%)",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_config_parses_and_matches_defaults() {
        let text = include_str!("../../config/slatrack.toml");
        let cfg = Config::from_toml(text).expect("config/slatrack.toml is valid");
        let d = Config::default();
        assert_eq!(cfg.platforms.len(), 5);
        assert_eq!(cfg.targets("impact_in"), d.targets("impact_in"));
        assert_eq!(cfg.targets("impact_in").latency_target_us, 300_000);
        assert_eq!(cfg.targets("benevity").on_time_target, 0.95);
        assert_eq!(cfg.targets("unknown-platform"), d.targets("workday"));
        assert_eq!(cfg.engine.windows, d.engine.windows);
        assert_eq!(cfg.criteria, d.criteria);
    }

    #[test]
    fn errors_name_key_and_value() {
        // (config text, what the error must name: the key and the bad value)
        let cases: &[(&str, &[&str])] = &[
            ("[engine]\nbucket = \"7s\"\n", &["engine.bucket", "7s"]),
            (
                "[sla]\non_time_target = 95.0\n",
                &["sla.on_time_target", "95"],
            ),
            (
                "[engine]\nallowed_lateness = \"2 minutes\"\n",
                &["allowed_lateness", "2 minutes"],
            ),
            (
                "[limits]\nmax_keys = 2000000\n",
                &["limits.max_keys", "2000000"],
            ),
            ("[engine]\nbukket = \"1m\"\n", &["bukket"]),
            (
                "[kafka]\nbrokers = \"b:9092\"\nfetch_connections = 0\n[[kafka.topics]]\nname = \"t\"\n",
                &["kafka.fetch_connections", "0"],
            ),
            (
                "[store]\nminute_retention = \"90m\"\n",
                &["store.minute_retention", "90m"],
            ),
            (
                "[store]\nminute_retention = \"2d\"\n",
                &["store.minute_retention", "correction_horizon"],
            ),
            (
                "[[platforms]]\nid = \"a\"\nname = \"A\"\ndirection = \"sideways\"\n",
                &["sideways"],
            ),
        ];
        for (text, names) in cases {
            let err = Config::from_toml(text).unwrap_err().to_string();
            assert!(names.iter().all(|n| err.contains(n)), "{text}: {err}");
        }
        assert!(Config::from_toml("[limits]\nmax_keys = 1000000\n").is_ok());
        assert!(Config::from_toml("[store]\nminute_retention = \"0s\"\n").is_ok());
    }

    #[test]
    fn environment_overrides_apply_and_are_validated() {
        let mut c =
            Config::from_toml("[kafka]\nbrokers = \"a:1\"\n[[kafka.topics]]\nname = \"t\"\n")
                .unwrap();
        let env = |k: &str| match k {
            "SLATRACK_BROKERS" => Some("b:2".to_string()),
            "SLATRACK_STORE" => Some("postgres://u@b:2/w".to_string()),
            "SLATRACK_METRICS_LISTEN" => Some("0.0.0.0:9898".to_string()),
            _ => None,
        };
        c.apply_env(env).unwrap();
        assert_eq!(c.kafka.as_ref().unwrap().brokers, "b:2");
        assert_eq!(c.store.path, PathBuf::from("postgres://u@b:2/w"));
        assert_eq!(c.metrics.listen, "0.0.0.0:9898");
        let e = Config::default()
            .apply_env(|k| (k == "SLATRACK_BROKERS").then(|| "x:1".to_string()))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("SLATRACK_BROKERS") && e.contains("[kafka]"),
            "{e}"
        );
    }
}
