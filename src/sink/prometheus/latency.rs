//! `slatrack_window_attempt_latency_seconds`: each rolling window's attempt latencies as a
//! Prometheus histogram (`_bucket{le}`, `_sum`, `_count`), so
//! `histogram_quantile(q, sum by (le, tenant, platform) (…))` gives a tenant's quantile
//! however many instances share its partitions and however the topic is keyed.
//!
//! The bounds are a fixed ladder plus every configured latency target (the global and each
//! platform's `latency_target`, `p50_target`, `p95_target`, `p99_threshold`), so a panel
//! can read "attempts within target" at the target itself. A count at a bound is taken from
//! the window's HDR buckets: an HDR bucket counts at `le` when its highest value is at
//! most `le`, so an attempt is never counted below a bound it exceeds; attempts within the
//! HDR resolution (1/128) under a bound count at the next one. `_sum` and `_count` are
//! exact (the latency sum and the attempts).
//!
//! The gauge thread builds these from the windows ([`Snapshot::from_windows`]); a scrape
//! renders the last snapshot and changes nothing.

use crate::config::Config;
use crate::engine::WindowSet;
use crate::proto::prometheus::{Bucket, Histogram, LabelPair, Metric, MetricFamily, MetricType};
use crate::time::{format_duration, Micros, MICROS_PER_MILLI, MICROS_PER_SEC};
use std::fmt::Write as _;

pub const NAME: &str = "slatrack_window_attempt_latency_seconds";

/// The ladder every histogram has, in µs: 10 ms to an hour.
const LADDER_US: [Micros; 15] = [
    10 * MICROS_PER_MILLI,
    25 * MICROS_PER_MILLI,
    50 * MICROS_PER_MILLI,
    100 * MICROS_PER_MILLI,
    250 * MICROS_PER_MILLI,
    500 * MICROS_PER_MILLI,
    MICROS_PER_SEC,
    2_500 * MICROS_PER_MILLI,
    5 * MICROS_PER_SEC,
    10 * MICROS_PER_SEC,
    30 * MICROS_PER_SEC,
    60 * MICROS_PER_SEC,
    300 * MICROS_PER_SEC,
    900 * MICROS_PER_SEC,
    3_600 * MICROS_PER_SEC,
];

/// The `le` bounds in µs, ascending, without `+Inf`.
pub fn bounds(config: &Config) -> Vec<u64> {
    let s = &config.sla;
    let mut b: Vec<Micros> = LADDER_US.to_vec();
    b.extend([
        s.latency_target.0,
        s.p50_target.0,
        s.p95_target.0,
        s.p99_threshold.0,
    ]);
    b.extend(
        config
            .platforms
            .iter()
            .map(|p| config.targets(&p.id).latency_target_us),
    );
    let mut b: Vec<u64> = b.into_iter().filter(|&v| v > 0).map(|v| v as u64).collect();
    b.sort_unstable();
    b.dedup();
    b
}

/// Cumulative counts at each bound from HDR bucket tops and counts (sorted by top).
pub fn cumulative(pairs: &[(u64, u64)], bounds: &[u64]) -> Vec<u64> {
    let mut out = Vec::with_capacity(bounds.len());
    let (mut i, mut acc) = (0, 0u64);
    for &b in bounds {
        while i < pairs.len() && pairs[i].0 <= b {
            acc += pairs[i].1;
            i += 1;
        }
        out.push(acc);
    }
    out
}

/// The native histograms' schema: bucket bounds grow by 2^(1/32) (≈ 2.2 %), so a
/// quantile read from them is within that of the HDR value (itself within 1/128 of the
/// exact one).
pub const NATIVE_SCHEMA: i32 = 5;

/// One (tenant label, platform, window) histogram.
pub struct WindowLatency {
    pub tenant: String,
    pub platform: String,
    pub window: String,
    /// Cumulative count at each of [`Snapshot::bounds`].
    pub cumulative: Vec<u64>,
    /// Attempts (the `+Inf` bucket and `_count`).
    pub count: u64,
    pub sum_us: u64,
    /// The window's HDR buckets (highest value µs, count), for the native buckets.
    pub pairs: Vec<(u64, u64)>,
}

/// What the gauge thread last built, for the scrape to render.
#[derive(Default)]
pub struct Snapshot {
    pub bounds: Vec<u64>,
    pub windows: Vec<WindowLatency>,
}

impl Snapshot {
    pub fn from_windows(bounds: &[u64], windows: &WindowSet) -> Self {
        let windows = windows
            .summaries()
            .map(|s| {
                let pairs = s.stats.latency.to_sparse();
                WindowLatency {
                    tenant: s.tenant.to_string(),
                    platform: s.platform.to_string(),
                    window: format_duration(s.window_us),
                    cumulative: cumulative(&pairs, bounds),
                    count: s.stats.counters.attempts,
                    sum_us: s.stats.counters.latency_sum_us,
                    pairs,
                }
            })
            .collect();
        Self {
            bounds: bounds.to_vec(),
            windows,
        }
    }

    /// The histogram family in the text exposition format (0.0.4).
    pub fn render_text(&self, out: &mut String) {
        if self.windows.is_empty() {
            return;
        }
        let _ = writeln!(
            out,
            "# HELP {NAME} Attempt latency of the records in the rolling window (HDR-bucketed)."
        );
        let _ = writeln!(out, "# TYPE {NAME} histogram");
        let les: Vec<String> = self
            .bounds
            .iter()
            .map(|&b| format!("{}", b as f64 / 1e6))
            .collect();
        for w in &self.windows {
            let labels = format!(
                "tenant=\"{}\",platform=\"{}\",window=\"{}\"",
                escape(&w.tenant),
                escape(&w.platform),
                w.window
            );
            for (le, n) in les.iter().zip(&w.cumulative) {
                let _ = writeln!(out, "{NAME}_bucket{{{labels},le=\"{le}\"}} {n}");
            }
            let _ = writeln!(out, "{NAME}_bucket{{{labels},le=\"+Inf\"}} {}", w.count);
            let _ = writeln!(out, "{NAME}_sum{{{labels}}} {}", w.sum_us as f64 / 1e6);
            let _ = writeln!(out, "{NAME}_count{{{labels}}} {}", w.count);
        }
    }
}

impl Snapshot {
    /// The histogram family for the protobuf exposition: classic buckets at the same
    /// bounds as the text, and native buckets at [`NATIVE_SCHEMA`].
    pub fn family(&self) -> Option<MetricFamily> {
        if self.windows.is_empty() {
            return None;
        }
        let label = |n: &str, v: &str| LabelPair {
            name: Some(n.into()),
            value: Some(v.into()),
        };
        let metric = self
            .windows
            .iter()
            .map(|w| {
                let mut h = Histogram {
                    sample_count: Some(w.count),
                    sample_sum: Some(w.sum_us as f64 / 1e6),
                    bucket: self
                        .bounds
                        .iter()
                        .zip(&w.cumulative)
                        .map(|(&b, &n)| Bucket {
                            cumulative_count: Some(n),
                            upper_bound: Some(b as f64 / 1e6),
                        })
                        .collect(),
                    ..Default::default()
                };
                super::exposition::native(
                    &mut h,
                    NATIVE_SCHEMA,
                    w.pairs.iter().map(|&(top, n)| (top as f64 / 1e6, n)),
                );
                Metric {
                    label: vec![
                        label("tenant", &w.tenant),
                        label("platform", &w.platform),
                        label("window", &w.window),
                    ],
                    histogram: Some(h),
                    ..Default::default()
                }
            })
            .collect();
        Some(MetricFamily {
            name: Some(NAME.into()),
            help: Some(
                "Attempt latency of the records in the rolling window (HDR-bucketed).".into(),
            ),
            r#type: Some(MetricType::Histogram as i32),
            metric,
        })
    }
}

/// A label value as the text format writes it.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_hold_every_configured_target() {
        let c = Config::default();
        let b = bounds(&c);
        for t in [
            c.sla.latency_target.0,
            c.sla.p50_target.0,
            c.sla.p95_target.0,
            c.sla.p99_threshold.0,
            c.targets("impact_in").latency_target_us,
        ] {
            assert!(b.contains(&(t as u64)), "{t} µs is a bound");
        }
        assert!(b.windows(2).all(|w| w[0] < w[1]), "ascending, no repeats");
    }

    #[test]
    fn a_bucket_counts_at_a_bound_only_when_all_of_it_is_below() {
        // HDR bucket tops 90 ms ×2, 300 ms ×3, 500 ms ×1 (a top at the bound counts),
        // 501 ms ×4.
        let pairs = [(90_000, 2), (300_000, 3), (500_000, 1), (501_000, 4)];
        assert_eq!(
            cumulative(&pairs, &[100_000, 300_000, 500_000, 1_000_000]),
            vec![2, 5, 6, 10]
        );
        assert_eq!(cumulative(&[], &[1, 2]), vec![0, 0]);
    }

    #[test]
    fn text_has_cumulative_buckets_inf_sum_and_count() {
        let s = Snapshot {
            bounds: vec![250_000, 500_000],
            windows: vec![WindowLatency {
                tenant: "a\"b".into(),
                platform: "workday".into(),
                window: "1h".into(),
                cumulative: vec![1, 3],
                count: 4,
                sum_us: 2_500_000,
                pairs: vec![(200_000, 1), (400_000, 2), (900_000, 1)],
            }],
        };
        let mut out = String::new();
        s.render_text(&mut out);
        let l = "tenant=\"a\\\"b\",platform=\"workday\",window=\"1h\"";
        for line in [
            format!("{NAME}_bucket{{{l},le=\"0.25\"}} 1"),
            format!("{NAME}_bucket{{{l},le=\"0.5\"}} 3"),
            format!("{NAME}_bucket{{{l},le=\"+Inf\"}} 4"),
            format!("{NAME}_sum{{{l}}} 2.5"),
            format!("{NAME}_count{{{l}}} 4"),
        ] {
            assert!(out.lines().any(|x| x == line), "{line} in\n{out}");
        }
        assert!(out.contains(&format!("# TYPE {NAME} histogram")));
    }
}
