//! What a bucket or window counts exactly: attempts, events by outcome, on-time events,
//! retries, latency sum. Every ratio a report or gauge shows is computed from these
//! integers, so ratios are exact; only quantiles come from the latency histogram
//! ([`super::stats`]).

use crate::event::{DeliveryEvent, Outcome};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Every record (attempt).
    pub attempts: u64,
    /// Terminal records (logical events).
    pub events: u64,
    pub delivered: u64,
    pub failed: u64,
    pub dead_lettered: u64,
    /// Terminal `delivered` within the platform's latency target, end to end.
    pub on_time: u64,
    /// Terminal with `attempt > 1`.
    pub retried: u64,
    /// Terminal with `attempt >= max_attempts`.
    pub max_retries: u64,
    /// Sum of attempt latencies, for an exact mean.
    pub latency_sum_us: u64,
}

impl Counters {
    pub fn add(&mut self, o: &Counters) {
        self.attempts += o.attempts;
        self.events += o.events;
        self.delivered += o.delivered;
        self.failed += o.failed;
        self.dead_lettered += o.dead_lettered;
        self.on_time += o.on_time;
        self.retried += o.retried;
        self.max_retries += o.max_retries;
        self.latency_sum_us += o.latency_sum_us;
    }

    pub fn sub(&mut self, o: &Counters) {
        self.attempts -= o.attempts;
        self.events -= o.events;
        self.delivered -= o.delivered;
        self.failed -= o.failed;
        self.dead_lettered -= o.dead_lettered;
        self.on_time -= o.on_time;
        self.retried -= o.retried;
        self.max_retries -= o.max_retries;
        self.latency_sum_us -= o.latency_sum_us;
    }

    /// Counts one validated attempt. `target_us` is the platform's end-to-end latency target.
    ///
    /// Branch-free: the outcome, retry and on-time tests follow the traffic, not the code,
    /// so as branches they were mispredicted on a large share of records.
    #[inline]
    pub fn record(&mut self, ev: &DeliveryEvent, target_us: u64) {
        let terminal = u64::from(ev.is_terminal());
        let delivered = u64::from(ev.outcome == Outcome::Delivered);
        self.attempts += 1;
        self.latency_sum_us += ev.attempt_latency_us();
        self.events += terminal;
        self.delivered += delivered;
        self.on_time += delivered & u64::from(ev.end_to_end_us() <= target_us);
        self.failed += u64::from(ev.outcome == Outcome::Failed);
        self.dead_lettered += u64::from(ev.outcome == Outcome::DeadLettered);
        self.retried += terminal & u64::from(ev.attempt > 1);
        self.max_retries += terminal & u64::from(ev.attempt >= ev.max_attempts);
    }

    fn ratio(&self, n: u64) -> Option<f64> {
        (self.events > 0).then(|| n as f64 / self.events as f64)
    }
    pub fn on_time_ratio(&self) -> Option<f64> {
        self.ratio(self.on_time)
    }
    pub fn retry_ratio(&self) -> Option<f64> {
        self.ratio(self.retried)
    }
    /// Failed or dead-lettered, over events.
    pub fn failed_ratio(&self) -> Option<f64> {
        self.ratio(self.failed + self.dead_lettered)
    }
    pub fn max_retries_ratio(&self) -> Option<f64> {
        self.ratio(self.max_retries)
    }
    pub fn dlq_ratio(&self) -> Option<f64> {
        self.ratio(self.dead_lettered)
    }
    pub fn avg_latency_ms(&self) -> Option<f64> {
        (self.attempts > 0).then(|| self.latency_sum_us as f64 / self.attempts as f64 / 1000.0)
    }
}
