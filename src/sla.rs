//! SLA status rules, one place for the scorecard, Prometheus and the alert rules.
//!
//! - On-time ratio: green at or above target, yellow within `yellow_margin` below it,
//!   red further below.
//! - Rates (failed, retry, max-retry, DLQ): green at or below target, yellow up to
//!   `rate_yellow_factor ×` target, red above.
//! - P50/P95: soft targets, yellow when exceeded. P99: hard threshold, red when exceeded.
//! - No events: `n/a`.

use crate::config::SlaConfig;
use serde::Serialize;

/// Tolerance for comparing ratios computed from integers against decimal targets.
const EPS: f64 = 1e-9;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Green,
    Yellow,
    Red,
    #[serde(rename = "n/a")]
    NotApplicable,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Green => "green",
            Self::Yellow => "yellow",
            Self::Red => "red",
            Self::NotApplicable => "n/a",
        }
    }
    pub fn emoji(self) -> &'static str {
        match self {
            Self::Green => "🟢",
            Self::Yellow => "🟡",
            Self::Red => "🔴",
            Self::NotApplicable => "N/A",
        }
    }
    /// The worse of two statuses (n/a never wins over a real status).
    pub fn worst(self, o: Status) -> Status {
        match (self, o) {
            (Self::NotApplicable, x) | (x, Self::NotApplicable) => x,
            (a, b) => a.max(b),
        }
    }
}

pub fn on_time(ratio: Option<f64>, target: f64, sla: &SlaConfig) -> Status {
    match ratio {
        None => Status::NotApplicable,
        Some(r) if r + EPS >= target => Status::Green,
        Some(r) if r + EPS >= target - sla.yellow_margin => Status::Yellow,
        Some(_) => Status::Red,
    }
}

pub fn rate(ratio: Option<f64>, target: f64, sla: &SlaConfig) -> Status {
    match ratio {
        None => Status::NotApplicable,
        Some(r) if r <= target + EPS => Status::Green,
        Some(r) if r <= target * sla.rate_yellow_factor + EPS => Status::Yellow,
        Some(_) => Status::Red,
    }
}

/// Soft latency target (P50, P95): yellow when exceeded.
pub fn soft_latency(ms: Option<f64>, target_ms: f64) -> Status {
    match ms {
        None => Status::NotApplicable,
        Some(v) if v <= target_ms => Status::Green,
        Some(_) => Status::Yellow,
    }
}

/// Hard latency threshold (P99): red when exceeded.
pub fn hard_latency(ms: Option<f64>, threshold_ms: f64) -> Status {
    match ms {
        None => Status::NotApplicable,
        Some(v) if v <= threshold_ms => Status::Green,
        Some(_) => Status::Red,
    }
}

#[cfg(test)]
mod tests {
    //! The seed report (`shared/reference/pilot-scorecard-globex.md`) fed back in, table by
    //! table: its own numbers must give its own statuses under the default config.
    use super::*;
    use crate::config::Config;

    #[test]
    fn seed_platform_integration_status() {
        let cfg = Config::default();
        let rows = [
            ("benevity", 0.968, Status::Green),
            ("goodera", 0.924, Status::Yellow),
            ("workday", 0.891, Status::Red),
            ("impact_in", 0.981, Status::Green),
        ];
        for (platform, ratio, want) in rows {
            let t = cfg.targets(platform).on_time_target;
            assert_eq!(on_time(Some(ratio), t, &cfg.sla), want, "{platform}");
        }
        assert_eq!(
            on_time(None, 0.95, &cfg.sla),
            Status::NotApplicable,
            "SAP SuccessFactors has no events"
        );
    }

    #[test]
    fn seed_overall_sla_compliance() {
        let cfg = Config::default();
        assert_eq!(
            on_time(Some(0.932), cfg.sla.on_time_target, &cfg.sla),
            Status::Yellow
        );
    }

    #[test]
    fn seed_delivery_performance_details() {
        let s = Config::default().sla;
        assert_eq!(rate(Some(0.031), s.failed_target, &s), Status::Yellow);
        assert_eq!(rate(Some(0.068), s.retry_target, &s), Status::Yellow);
        assert_eq!(rate(Some(0.012), s.max_retries_target, &s), Status::Red);
        assert_eq!(rate(Some(0.0018), s.dlq_target, &s), Status::Yellow);
    }

    #[test]
    fn seed_latency_distribution() {
        let s = Config::default().sla;
        let ms = |span: crate::config::ConfigDuration| span.0 as f64 / 1000.0;
        assert_eq!(soft_latency(Some(341.0), ms(s.p50_target)), Status::Yellow);
        assert_eq!(soft_latency(Some(623.0), ms(s.p95_target)), Status::Yellow);
        assert_eq!(hard_latency(Some(1247.0), ms(s.p99_threshold)), Status::Red);
    }

    #[test]
    fn boundaries_are_inclusive() {
        let s = Config::default().sla;
        assert_eq!(on_time(Some(95.0 / 100.0), 0.95, &s), Status::Green);
        assert_eq!(on_time(Some(90.0 / 100.0), 0.95, &s), Status::Yellow);
        assert_eq!(on_time(Some(0.8999), 0.95, &s), Status::Red);
        assert_eq!(rate(Some(0.02), 0.02, &s), Status::Green);
        assert_eq!(rate(Some(0.04), 0.02, &s), Status::Yellow);
        assert_eq!(rate(Some(0.0401), 0.02, &s), Status::Red);
        assert_eq!(Status::Yellow.worst(Status::NotApplicable), Status::Yellow);
        assert_eq!(Status::Yellow.worst(Status::Red), Status::Red);
    }
}
