//! A deliberately naive, exact reference computation of the SLA definitions, written
//! straight from docs/engine.md without sharing code with the engine.
#![allow(dead_code)]

use slatrack::config::Config;
use slatrack::event::{DeliveryEvent, Outcome};
use std::collections::{BTreeMap, HashSet};

#[derive(Debug, Default, Clone)]
pub struct Expected {
    pub attempts: u64,
    pub events: u64,
    pub on_time: u64,
    pub retried: u64,
    pub failed_or_dlq: u64,
    pub max_retries: u64,
    pub dlq: u64,
    pub latency_sum_us: u64,
    pub latencies_us: Vec<u64>,
}

impl Expected {
    pub fn merge(&mut self, o: &Expected) {
        self.attempts += o.attempts;
        self.events += o.events;
        self.on_time += o.on_time;
        self.retried += o.retried;
        self.failed_or_dlq += o.failed_or_dlq;
        self.max_retries += o.max_retries;
        self.dlq += o.dlq;
        self.latency_sum_us += o.latency_sum_us;
        self.latencies_us.extend_from_slice(&o.latencies_us);
    }

    /// Exact nearest-rank quantile in ms: the ceil(q·n)-th smallest value.
    pub fn quantile_ms(&self, q_permille: u64) -> Option<f64> {
        if self.latencies_us.is_empty() {
            return None;
        }
        let mut v = self.latencies_us.clone();
        v.sort_unstable();
        let n = v.len() as u64;
        let rank = (q_permille * n).div_ceil(1000).max(1);
        Some(v[(rank - 1) as usize] as f64 / 1000.0)
    }

    pub fn ratio(&self, n: u64) -> Option<f64> {
        (self.events > 0).then(|| n as f64 / self.events as f64)
    }
}

/// Per (tenant, platform), counting each (event_id, attempt) once.
pub fn oracle(records: &[DeliveryEvent], config: &Config) -> BTreeMap<(String, String), Expected> {
    let mut seen = HashSet::new();
    let mut out: BTreeMap<(String, String), Expected> = BTreeMap::new();
    for r in records {
        if !seen.insert((r.event_id.clone(), r.attempt)) {
            continue;
        }
        let e = out
            .entry((r.tenant.clone(), r.platform.clone()))
            .or_default();
        let latency = (r.completed_at - r.started_at) as u64;
        e.attempts += 1;
        e.latency_sum_us += latency;
        e.latencies_us.push(latency.min(3_600_000_000));
        if r.outcome == Outcome::Retrying {
            continue;
        }
        e.events += 1;
        let target = config.targets(&r.platform).latency_target_us;
        if r.outcome == Outcome::Delivered && r.completed_at - r.enqueued_at <= target {
            e.on_time += 1;
        }
        if r.attempt > 1 {
            e.retried += 1;
        }
        if matches!(r.outcome, Outcome::Failed | Outcome::DeadLettered) {
            e.failed_or_dlq += 1;
        }
        if r.outcome == Outcome::DeadLettered {
            e.dlq += 1;
        }
        if r.attempt >= r.max_attempts {
            e.max_retries += 1;
        }
    }
    out
}

/// `got` (HDR) is never below the exact value and at most 1% above it.
pub fn assert_quantile(what: &str, got: Option<f64>, exact: Option<f64>) {
    match (got, exact) {
        (None, None) => {}
        (Some(g), Some(x)) => assert!(
            g + 1e-9 >= x && g <= x * 1.01 + 0.001,
            "{what}: HDR {g} ms vs exact {x} ms (must be within 1%)"
        ),
        _ => panic!("{what}: {got:?} vs {exact:?}"),
    }
}
