//! Findings: the lines a person used to write under a scorecard's "Key concerns", computed
//! from the rows a report counted (exclusions applied) and each with the test that found
//! it (docs/findings.md):
//! - `outage`: a platform's hours where most events failed, far above its own rate;
//! - `step_change`: the week a platform's weekly on-time, failed, retry or slow-attempt
//!   level shifted;
//! - `peak_hours`: local hours of the day where a platform's retries or failures
//!   concentrate beyond their share of its traffic;
//! - `tail`: platforms that make up the overall P99 beyond their share of attempts;
//! - `recovery`: an on-time step up that every later week holds.
//!
//! Every test is one-sided or two-sided on counts, with the significance level divided
//! by the number of comparisons the report makes of that kind (Bonferroni), so on data
//! whose rates do not change (over time, hours of the day or platforms) the chance that
//! a report shows any finding of a kind is at most [`ALPHA`]. Each finding also needs an
//! effect a reader would act on (stated per kind), so a large tenant's trivial shifts
//! stay out.

use super::PlatformReport;
use crate::engine::{Counters, Stats};
use crate::store::StoredBucket;
use crate::time::{Micros, MICROS_PER_HOUR};
use chrono_tz::Tz;
use std::collections::{BTreeMap, HashMap};

/// Family-wise false-positive rate per kind of finding and report.
pub const ALPHA: f64 = 0.01;

/// A weekly or hourly level a finding is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Metric {
    /// On-time events ÷ events.
    OnTime,
    /// Failed and dead-lettered events ÷ events.
    Failed,
    /// Events that needed a retry ÷ events.
    Retry,
    /// Attempts slower than the P95 target ÷ attempts.
    SlowAttempts,
}

impl Metric {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::OnTime => "on_time",
            Self::Failed => "failed",
            Self::Retry => "retry",
            Self::SlowAttempts => "slow_attempts",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Self::OnTime => "on-time rate",
            Self::Failed => "failure rate",
            Self::Retry => "retry rate",
            Self::SlowAttempts => "share of attempts over the P95 target",
        }
    }

    /// (hits, trials) of this level in `s`; `slow_us`: the P95 target.
    fn count(self, s: &Stats, slow_us: u64) -> (u64, u64) {
        let c = &s.counters;
        match self {
            Self::OnTime => (c.on_time, c.events),
            Self::Failed => (c.failed + c.dead_lettered, c.events),
            Self::Retry => (c.retried, c.events),
            Self::SlowAttempts => {
                let slow = s
                    .latency
                    .to_sparse()
                    .iter()
                    .filter(|(top, _)| *top > slow_us)
                    .map(|(_, n)| n)
                    .sum();
                (slow, s.latency.len())
            }
        }
    }
}

/// The test behind a finding: its name, its p-value, and the comparisons it was one of.
#[derive(Debug, Clone, PartialEq)]
pub struct Test {
    pub name: &'static str,
    pub p_value: f64,
    pub comparisons: usize,
}

impl Test {
    /// The level a p-value must be under: [`ALPHA`] ÷ the comparisons.
    pub fn threshold(&self) -> f64 {
        ALPHA / self.comparisons.max(1) as f64
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Finding {
    Outage {
        platform: String,
        from: Micros,
        to: Micros,
        events: u64,
        failed: u64,
        /// The platform's failure rate over the report.
        baseline: f64,
        test: Test,
    },
    StepChange {
        platform: String,
        metric: Metric,
        /// 1-based week of the report from which the new level holds.
        week: usize,
        before: f64,
        after: f64,
        test: Test,
    },
    PeakHours {
        platform: String,
        metric: Metric,
        /// Local hours of the day (0–23).
        hours: Vec<u32>,
        traffic_share: f64,
        metric_share: f64,
        test: Test,
    },
    Tail {
        platform: String,
        p99_ms: f64,
        /// Its share of the attempts slower than the overall P99.
        tail_share: f64,
        /// Its share of all attempts.
        traffic_share: f64,
        test: Test,
    },
    Recovery {
        platform: String,
        week: usize,
        before: f64,
        after: f64,
        /// Weeks from `week` on, every one of them above the midpoint.
        weeks_held: usize,
        test: Test,
    },
}

impl Finding {
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Outage { .. } => "outage",
            Self::StepChange { .. } => "step_change",
            Self::PeakHours { .. } => "peak_hours",
            Self::Tail { .. } => "tail",
            Self::Recovery { .. } => "recovery",
        }
    }

    pub fn platform(&self) -> &str {
        match self {
            Self::Outage { platform, .. }
            | Self::StepChange { platform, .. }
            | Self::PeakHours { platform, .. }
            | Self::Tail { platform, .. }
            | Self::Recovery { platform, .. } => platform,
        }
    }

    pub fn test(&self) -> &Test {
        match self {
            Self::Outage { test, .. }
            | Self::StepChange { test, .. }
            | Self::PeakHours { test, .. }
            | Self::Tail { test, .. }
            | Self::Recovery { test, .. } => test,
        }
    }
}

/// The upper tail of the standard normal distribution, P(Z > z), from the complementary
/// error function (Chebyshev fit, relative error under 1.2e-7).
pub fn normal_sf(z: f64) -> f64 {
    let x = z / std::f64::consts::SQRT_2;
    let t = 1.0 / (1.0 + 0.5 * x.abs());
    let poly = -x * x - 1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98
                                + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let erfc = t * poly.exp();
    let erfc = if x >= 0.0 { erfc } else { 2.0 - erfc };
    0.5 * erfc
}

/// One-sided p-value of `hits` of `n` trials against a rate `p` (normal approximation).
fn binomial_above(hits: u64, n: u64, p: f64) -> f64 {
    if n == 0 || p <= 0.0 {
        return if hits > 0 { 0.0 } else { 1.0 };
    }
    if p >= 1.0 {
        return 1.0;
    }
    let (n, x) = (n as f64, hits as f64);
    let sd = (n * p * (1.0 - p)).sqrt();
    normal_sf((x - 0.5 - n * p) / sd)
}

/// |z| of a two-proportion z-test (0 when both sides are all or nothing).
fn two_proportions_z(x1: u64, n1: u64, x2: u64, n2: u64) -> f64 {
    let (a, b) = (x1 as f64 / n1 as f64, x2 as f64 / n2 as f64);
    let pooled = (x1 + x2) as f64 / (n1 + n2) as f64;
    let sd = (pooled * (1.0 - pooled) * (1.0 / n1 as f64 + 1.0 / n2 as f64)).sqrt();
    if sd == 0.0 {
        return 0.0;
    }
    ((b - a) / sd).abs()
}

/// What the findings are computed from.
pub struct Input<'a> {
    pub time_zone: Tz,
    pub platforms: &'a [PlatformReport],
    /// The rows the report counted (exclusions applied), any order.
    pub rows: &'a [&'a StoredBucket],
    pub overall: &'a Stats,
    /// `sla.p95_target` in µs.
    pub p95_target_us: u64,
}

/// Every finding, in the order of the module doc, platforms in report order.
pub fn find(input: &Input) -> Vec<Finding> {
    let hourly = hourly_rows(input);
    let mut out = outages(input, &hourly);
    let steps = step_changes(input);
    out.extend(steps.iter().cloned());
    out.extend(peak_hours(input, &hourly, &out));
    out.extend(tails(input));
    out.extend(recoveries(input, &steps));
    out
}

/// Each platform's rows an hour wide or narrower (wider ones cannot be placed in an
/// hour), grouped once for the hour-level kinds.
type HourlyRows<'a> = HashMap<&'a str, Vec<&'a StoredBucket>>;

fn hourly_rows<'a>(input: &Input<'a>) -> HourlyRows<'a> {
    let mut by: HourlyRows<'a> = HashMap::new();
    for &r in input.rows {
        if r.width <= MICROS_PER_HOUR {
            by.entry(r.platform.as_str()).or_default().push(r);
        }
    }
    by
}

fn bad(c: &Counters) -> u64 {
    c.failed + c.dead_lettered
}

/// Outage: an hour with at least 5 events, half or more failed, and a failure count a
/// one-sided binomial test against the platform's own rate finds significant (over every
/// platform-hour with events). Adjacent such hours (or with only silent hours between)
/// are one outage, from its first failed row to the end of its last.
fn outages(input: &Input, hourly: &HourlyRows) -> Vec<Finding> {
    let mut per: Vec<(&PlatformReport, BTreeMap<i64, Counters>)> = Vec::new();
    let mut comparisons = 0;
    for p in input.platforms {
        let mut hours: BTreeMap<i64, Counters> = BTreeMap::new();
        for r in hourly.get(p.platform.as_str()).into_iter().flatten() {
            hours
                .entry(r.start.div_euclid(MICROS_PER_HOUR))
                .or_default()
                .add(&r.stats.counters);
        }
        comparisons += hours.values().filter(|c| c.events > 0).count();
        per.push((p, hours));
    }
    let mut out = Vec::new();
    for (p, hours) in per {
        let c = &p.stats.counters;
        if c.events == 0 {
            continue;
        }
        let baseline = bad(c) as f64 / c.events as f64;
        // (first hour, last hour, events, failed, smallest p-value); hours without
        // events do not break a run, an hour with events that is not down does.
        let mut runs: Vec<(i64, i64, u64, u64, f64)> = Vec::new();
        let mut open = false;
        for (&h, hc) in &hours {
            if hc.events == 0 {
                continue;
            }
            let p_value = binomial_above(bad(hc), hc.events, baseline);
            let down = hc.events >= 5
                && bad(hc) * 2 >= hc.events
                && p_value < ALPHA / comparisons.max(1) as f64;
            match runs.last_mut() {
                Some(run) if down && open => {
                    run.1 = h;
                    run.2 += hc.events;
                    run.3 += bad(hc);
                    run.4 = run.4.min(p_value);
                }
                _ if down => runs.push((h, h, hc.events, bad(hc), p_value)),
                _ => {}
            }
            open = down;
        }
        for (first, last, events, failed, p_value) in runs {
            let failing = hourly
                .get(p.platform.as_str())
                .into_iter()
                .flatten()
                .filter(|r| {
                    let h = r.start.div_euclid(MICROS_PER_HOUR);
                    h >= first && h <= last && bad(&r.stats.counters) > 0
                });
            let (mut from, mut to) = (Micros::MAX, Micros::MIN);
            for r in failing {
                from = from.min(r.start);
                to = to.max(r.start + r.width);
            }
            out.push(Finding::Outage {
                platform: p.platform.clone(),
                from,
                to,
                events,
                failed,
                baseline,
                test: Test {
                    name: "one-sided binomial test of the hour's failures against the platform's rate",
                    p_value,
                    comparisons,
                },
            });
        }
    }
    out
}

const METRICS: [Metric; 4] = [
    Metric::OnTime,
    Metric::Failed,
    Metric::Retry,
    Metric::SlowAttempts,
];

/// Step change: per platform and metric, the week split with the largest two-proportion
/// z; a finding when its p-value is under ALPHA ÷ (splits × metrics × platforms) and the
/// level moved by at least 2 points, with 50 trials or more on each side.
fn step_changes(input: &Input) -> Vec<Finding> {
    let active: Vec<&PlatformReport> = input
        .platforms
        .iter()
        .filter(|p| p.stats.counters.events > 0)
        .collect();
    let weeks = input.platforms.first().map_or(0, |p| p.weekly.len());
    if weeks < 2 {
        return Vec::new();
    }
    let comparisons = (weeks - 1) * METRICS.len() * active.len();
    let mut out = Vec::new();
    for p in active {
        for m in METRICS {
            let counts: Vec<(u64, u64)> = p
                .weekly
                .iter()
                .map(|w| m.count(&w.stats, input.p95_target_us))
                .collect();
            let best = (1..weeks)
                .filter_map(|k| {
                    let (x1, n1) = sum(&counts[..k]);
                    let (x2, n2) = sum(&counts[k..]);
                    (n1 >= 50 && n2 >= 50)
                        .then(|| (k, two_proportions_z(x1, n1, x2, n2), x1, n1, x2, n2))
                })
                // The largest |z| (p-values underflow to 0 for strong shifts).
                .max_by(|a, b| a.1.total_cmp(&b.1));
            let Some((k, z, x1, n1, x2, n2)) = best else {
                continue;
            };
            let p_value = 2.0 * normal_sf(z);
            let (before, after) = (x1 as f64 / n1 as f64, x2 as f64 / n2 as f64);
            let test = Test {
                name: "two-proportion z-test at the strongest week split",
                p_value,
                comparisons,
            };
            if p_value < test.threshold() && (after - before).abs() >= 0.02 {
                out.push(Finding::StepChange {
                    platform: p.platform.clone(),
                    metric: m,
                    week: k + 1,
                    before,
                    after,
                    test,
                });
            }
        }
    }
    out
}

fn sum(counts: &[(u64, u64)]) -> (u64, u64) {
    counts.iter().fold((0, 0), |(x, n), (a, b)| (x + a, n + b))
}

/// Peak hours: per platform and metric (retry, failed), the local hours of the day whose
/// count a one-sided binomial test against the hour's share of the platform's events
/// finds significant (over 24 hours × 2 metrics × platforms) at 1.5 times that share or
/// more, with 30 or more retried (failed) events in all. Rows inside an outage are left
/// out: an outage is its own finding.
fn peak_hours(input: &Input, hourly: &HourlyRows, outages: &[Finding]) -> Vec<Finding> {
    let active: Vec<&PlatformReport> = input
        .platforms
        .iter()
        .filter(|p| p.stats.counters.events > 0)
        .collect();
    let comparisons = 24 * 2 * active.len();
    let mut out = Vec::new();
    for p in active {
        let down: Vec<(Micros, Micros)> = outages
            .iter()
            .filter_map(|f| match f {
                Finding::Outage {
                    platform, from, to, ..
                } if *platform == p.platform => {
                    Some((from.div_euclid(MICROS_PER_HOUR) * MICROS_PER_HOUR, *to))
                }
                _ => None,
            })
            .collect();
        let mut hours = [Counters::default(); 24];
        for r in hourly.get(p.platform.as_str()).into_iter().flatten() {
            if down.iter().any(|&(a, b)| a <= r.start && r.start < b) {
                continue;
            }
            let h = crate::contract::calendar::local_hour(input.time_zone, r.start);
            hours[h as usize].add(&r.stats.counters);
        }
        let n: u64 = hours.iter().map(|c| c.events).sum();
        for m in [Metric::Retry, Metric::Failed] {
            let x_of = |c: &Counters| match m {
                Metric::Retry => c.retried,
                _ => bad(c),
            };
            let x: u64 = hours.iter().map(x_of).sum();
            if x < 30 || n == 0 {
                continue;
            }
            let mut found: Vec<(u32, f64)> = Vec::new();
            for (h, c) in hours.iter().enumerate() {
                let share = c.events as f64 / n as f64;
                let p_value = binomial_above(x_of(c), x, share);
                let lift = (x_of(c) as f64 / x as f64) / share;
                if c.events > 0 && lift >= 1.5 && p_value < ALPHA / comparisons as f64 {
                    found.push((h as u32, p_value));
                }
            }
            if found.is_empty() {
                continue;
            }
            let hs: Vec<u32> = found.iter().map(|f| f.0).collect();
            let traffic: u64 = hs.iter().map(|&h| hours[h as usize].events).sum();
            let hits: u64 = hs.iter().map(|&h| x_of(&hours[h as usize])).sum();
            out.push(Finding::PeakHours {
                platform: p.platform.clone(),
                metric: m,
                hours: hs,
                traffic_share: traffic as f64 / n as f64,
                metric_share: hits as f64 / x as f64,
                test: Test {
                    name: "one-sided binomial test of the hour's count against its share of events",
                    p_value: found.iter().map(|f| f.1).fold(1.0, f64::min),
                    comparisons,
                },
            });
        }
    }
    out
}

/// Tail: the attempts slower than the overall P99, by platform; a platform whose share
/// of them is at least a fifth and twice its share of attempts, by a one-sided binomial
/// test over the platforms, with 20 or more such attempts in all.
fn tails(input: &Input) -> Vec<Finding> {
    let Some(p99_ms) = input.overall.quantile_ms(990) else {
        return Vec::new();
    };
    let p99_us = (p99_ms * 1000.0).round() as u64;
    let above = |s: &Stats| -> u64 {
        s.latency
            .to_sparse()
            .iter()
            .filter(|(top, _)| *top > p99_us)
            .map(|(_, n)| n)
            .sum()
    };
    let parts: Vec<(&PlatformReport, u64, u64)> = input
        .platforms
        .iter()
        .filter(|p| !p.stats.latency.is_empty())
        .map(|p| (p, above(&p.stats), p.stats.latency.len()))
        .collect();
    let tail: u64 = parts.iter().map(|p| p.1).sum();
    let all: u64 = parts.iter().map(|p| p.2).sum();
    if tail < 20 || parts.len() < 2 {
        return Vec::new();
    }
    let comparisons = parts.len();
    parts
        .into_iter()
        .filter_map(|(p, x, n)| {
            let traffic_share = n as f64 / all as f64;
            let tail_share = x as f64 / tail as f64;
            let test = Test {
                name: "one-sided binomial test of the platform's share of the slowest 1 % against its share of attempts",
                p_value: binomial_above(x, tail, traffic_share),
                comparisons,
            };
            (tail_share >= 0.2 && tail_share >= 2.0 * traffic_share && test.p_value < test.threshold())
                .then(|| Finding::Tail {
                    platform: p.platform.clone(),
                    p99_ms,
                    tail_share,
                    traffic_share,
                    test,
                })
        })
        .collect()
}

/// Recovery: an on-time step change up, with two or more weeks after it and every one
/// of them (with 20 events or more) above the midpoint of the two levels.
fn recoveries(input: &Input, steps: &[Finding]) -> Vec<Finding> {
    let mut out = Vec::new();
    for f in steps {
        let Finding::StepChange {
            platform,
            metric: Metric::OnTime,
            week,
            before,
            after,
            test,
        } = f
        else {
            continue;
        };
        if after <= before {
            continue;
        }
        let Some(p) = input.platforms.iter().find(|p| &p.platform == platform) else {
            continue;
        };
        let later: Vec<f64> = p.weekly[week - 1..]
            .iter()
            .filter(|w| w.stats.counters.events >= 20)
            .filter_map(|w| w.stats.counters.on_time_ratio())
            .collect();
        let mid = (before + after) / 2.0;
        if later.len() >= 2 && later.iter().all(|&r| r > mid) {
            out.push(Finding::Recovery {
                platform: platform.clone(),
                week: *week,
                before: *before,
                after: *after,
                weeks_held: later.len(),
                test: Test {
                    name: "the on-time step change's test; every later week above the midpoint",
                    ..test.clone()
                },
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_normal_tail_matches_known_values() {
        for (z, p) in [
            (0.0, 0.5),
            (1.0, 0.158_655_25),
            (1.959_964, 0.025),
            (3.0, 0.001_349_898),
            (5.0, 2.866_515_7e-7),
            (-1.0, 0.841_344_75),
        ] {
            let got = normal_sf(z);
            assert!(
                (got - p).abs() <= 1e-6 * p.max(1e-3),
                "P(Z > {z}) = {got}, not {p}"
            );
        }
    }

    #[test]
    fn tests_on_counts() {
        // 10 of 100 against 2 %: far above; 2 of 100: not.
        assert!(binomial_above(10, 100, 0.02) < 1e-6);
        assert!(binomial_above(2, 100, 0.02) > 0.3);
        // 87 % of 1,000 against 94 % of 1,000: z ≈ 5.34; 90 % against 90.5 %: z ≈ 0.38.
        assert!((two_proportions_z(870, 1000, 940, 1000) - 5.338).abs() < 0.01);
        assert!((two_proportions_z(900, 1000, 905, 1000) - 0.377).abs() < 0.01);
        assert_eq!(two_proportions_z(0, 100, 0, 100), 0.0);
    }
}
