//! Prometheus export. The hot path never touches `metrics`: the consumer thread hands
//! over closed buckets at each checkpoint (counters move then) and key freshness every
//! `metrics.publish_interval` (its gauge is set then); the window gauges and histograms
//! and the service status are set every `metrics.gauge_interval` by a thread of their own
//! ([`GaugeThread`]). A scrape only renders what was set: it changes nothing.
//! Metric names, labels and meanings: README.md, "Metrics".

use crate::config::Config;
use crate::contract::Contracts;
use crate::engine::{ClosedBucket, WindowSet};
use crate::event::RejectReason;
use crate::pipeline::Committed;
use crate::runtime::RuntimeStatus;
use crate::time::{format_duration, Micros};
use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use metrics_util::MetricKindMask;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, OnceLock};

mod excluded;
pub mod exposition;
pub mod latency;

/// How long a gauge survives without being set (see [`handle`]).
pub const GAUGE_IDLE: std::time::Duration = std::time::Duration::from_secs(120);

/// Bucket bounds of `slatrack_correction_age_seconds`: how far behind the newest event a
/// corrected record arrived, from just past the lateness allowance to the 7-day horizon.
const CORRECTION_AGE_BUCKETS: [f64; 10] = [
    180.0,
    300.0,
    900.0,
    1800.0,
    3600.0,
    3.0 * 3600.0,
    6.0 * 3600.0,
    86400.0,
    3.0 * 86400.0,
    7.0 * 86400.0,
];

/// The process-wide recorder (a process has one; tests may start the service twice).
fn handle() -> Option<&'static PrometheusHandle> {
    static H: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    // Gauges not set for GAUGE_IDLE disappear from the scrape: every live gauge is set on
    // each publish, so these are the series of keys and partitions that went away.
    let recorder = PrometheusBuilder::new()
        .idle_timeout(MetricKindMask::GAUGE, Some(GAUGE_IDLE))
        .set_buckets_for_metric(
            metrics_exporter_prometheus::Matcher::Full("slatrack_correction_age_seconds".into()),
            &CORRECTION_AGE_BUCKETS,
        );
    H.get_or_init(|| match recorder.and_then(|r| r.install_recorder()) {
        Ok(h) => Some(h),
        Err(e) => {
            tracing::warn!(error = %e, "Prometheus recorder not installed; /metrics will be empty");
            None
        }
    })
    .as_ref()
}

/// The per-window count gauges, in the order [`Telemetry::set_gauges`] fills them.
pub const WINDOW_COUNTS: [&str; 7] = [
    "slatrack_window_events",
    "slatrack_window_attempts",
    "slatrack_window_on_time_events",
    "slatrack_window_retried_events",
    "slatrack_window_failed_events",
    "slatrack_window_max_retries_events",
    "slatrack_window_dlq_events",
];

/// The labels of one window's series: tenant, platform, window.
type WindowLabels = [(&'static str, String); 3];

struct Inner {
    windows: WindowSet,
    /// The window series set at the last tick.
    exported: HashSet<WindowLabels>,
    last_event: BTreeMap<(String, String), Micros>,
    /// Keys exported with their own tenant label (at most `metrics.max_series_keys`).
    admitted: HashSet<(Arc<str>, Arc<str>)>,
    /// Closed buckets exported under tenant `__overflow__` because the series cap was hit.
    folded_buckets: u64,
    /// Registered counter handles per exported (tenant label, platform): a `counter!` call
    /// with labels looks the series up each time, which a backfill would pay per bucket.
    handles: HashMap<(Arc<str>, Arc<str>), KeyCounters>,
    /// The two fixed tenant labels, allocated once.
    all: Arc<str>,
    overflow: Arc<str>,
    /// What the contracts exclude, and its counters.
    exclusions: excluded::Exclusions,
}

/// The exact counters of one exported key.
struct KeyCounters {
    delivered: metrics::Counter,
    failed: metrics::Counter,
    dead_lettered: metrics::Counter,
    on_time: metrics::Counter,
    attempts: metrics::Counter,
    retried: metrics::Counter,
}

impl KeyCounters {
    /// Moves the counters by what `c` counted.
    fn add(&self, c: &crate::engine::Counters) {
        self.delivered.increment(c.delivered);
        self.failed.increment(c.failed);
        self.dead_lettered.increment(c.dead_lettered);
        self.on_time.increment(c.on_time);
        self.attempts.increment(c.attempts);
        self.retried.increment(c.retried);
    }

    fn register(t: &str, p: &str) -> Self {
        let (t, p) = (t.to_string(), p.to_string());
        let events = |outcome: &'static str| counter!("slatrack_events_total", "tenant" => t.clone(), "platform" => p.clone(), "outcome" => outcome);
        Self {
            delivered: events("delivered"),
            failed: events("failed"),
            dead_lettered: events("dead_lettered"),
            on_time: counter!("slatrack_on_time_events_total", "tenant" => t.clone(), "platform" => p.clone()),
            attempts: counter!("slatrack_attempts_total", "tenant" => t.clone(), "platform" => p.clone()),
            retried: counter!("slatrack_retried_events_total", "tenant" => t.clone(), "platform" => p.clone()),
        }
    }
}

pub struct Telemetry {
    config: Arc<Config>,
    contracts: Arc<Contracts>,
    status: Arc<RuntimeStatus>,
    inner: Mutex<Inner>,
    /// The `le` bounds of the window latency histograms (µs).
    bounds: Vec<u64>,
    /// The window latency histograms the gauge thread built last. Also the tick lock: the
    /// gauge thread holds it while it sets a tick's gauges and a scrape while it renders,
    /// so a scrape shows one tick whole (never one window's counts from two ticks).
    tick: Mutex<latency::Snapshot>,
}

impl Telemetry {
    pub fn new(
        config: Arc<Config>,
        contracts: Arc<Contracts>,
        status: Arc<RuntimeStatus>,
    ) -> Arc<Self> {
        let _ = handle();
        let lengths: Vec<Micros> = config.engine.windows.iter().map(|s| s.0).collect();
        Arc::new(Self {
            inner: Mutex::new(Inner {
                windows: WindowSet::new(&lengths),
                exported: HashSet::new(),
                last_event: BTreeMap::new(),
                admitted: Default::default(),
                folded_buckets: 0,
                handles: Default::default(),
                all: "all".into(),
                overflow: crate::engine::keys::OVERFLOW.into(),
                exclusions: excluded::Exclusions::new(contracts.clone()),
            }),
            contracts,
            bounds: latency::bounds(&config),
            tick: Mutex::default(),
            config,
            status,
        })
    }

    /// The tenant label of a key: itself while the series cap allows, `__overflow__`
    /// after, `all` when tenant labels are off.
    /// Keys are the buckets' own `Arc`s, so a closed bucket is labelled without
    /// allocating (a backfill labels one per record).
    fn tenant(&self, inner: &mut Inner, t: &Arc<str>, p: &Arc<str>) -> Arc<str> {
        if !self.config.metrics.tenant_label {
            return inner.all.clone();
        }
        let key = (t.clone(), p.clone());
        if inner.admitted.contains(&key) {
            return key.0;
        }
        if inner.admitted.len() < self.config.metrics.max_series_keys {
            inner.admitted.insert(key);
            return t.clone();
        }
        inner.folded_buckets += 1;
        inner.overflow.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Buckets just made durable: counters move, windows slide. `round` is what one
    /// round of checkpoints committed, a commit per partition: partitions read side by
    /// side hold the same event time, so their buckets are taken together, key by key (one
    /// label, one set of counter increments and one window push per key, not per bucket
    /// or per partition): a backfill commit holds thousands of one-attempt buckets of the
    /// same few keys, and a key's buckets of one partition pushed after another's would
    /// reach the windows as corrections.
    pub fn absorb(&self, round: &[Committed]) {
        self.absorb_buckets(round.iter().flat_map(|c| &c.buckets));
        for committed in round {
            if !committed.corrections.is_empty() || committed.correction_duplicates > 0 {
                self.absorb_corrections(committed);
            }
        }
    }

    /// Corrections just made durable: the event counters move by what they add, windows
    /// still covering their buckets take them in, and the correction counters and the
    /// age histogram show a backlog draining.
    fn absorb_corrections(&self, committed: &Committed) {
        let mut inner = self.lock();
        for b in &committed.corrections {
            let t = self.tenant(&mut inner, &b.key.tenant, &b.key.platform);
            let c = &b.stats.counters;
            if let Some(reason) = inner.exclusions.reason(b) {
                inner.exclusions.count(&t, &b.key.platform, reason, c);
                continue;
            }
            let h = inner
                .handles
                .entry((t.clone(), b.key.platform.clone()))
                .or_insert_with(|| KeyCounters::register(&t, &b.key.platform));
            h.add(c);
            counter!("slatrack_corrections_total", "platform" => b.key.platform.to_string())
                .increment(c.attempts);
            inner.windows.correct(&t, &b.key.platform, b);
        }
        drop(inner);
        counter!("slatrack_correction_duplicates_total").increment(committed.correction_duplicates);
        let ages = histogram!("slatrack_correction_age_seconds");
        for age in &committed.correction_ages_us {
            ages.record(*age as f64 / 1e6);
        }
    }

    fn absorb_buckets<'b>(&self, buckets: impl Iterator<Item = &'b ClosedBucket> + Clone) {
        let mut inner = self.lock();
        let end = buckets
            .clone()
            .map(|b| b.start + b.width_us)
            .max()
            .unwrap_or(Micros::MIN);
        struct Group<'b> {
            tenant: Arc<str>,
            platform: Arc<str>,
            counters: crate::engine::Counters,
            buckets: Vec<&'b ClosedBucket>,
        }
        let since = inner.windows.frontier();
        let mut groups: Vec<Group> = Vec::new();
        // A shard hands out one `Arc<KeyInfo>` per key, so its buckets group by pointer
        // without hashing strings; keys folded under one label share a group (by label
        // content).
        let mut by_key: HashMap<usize, (usize, bool)> = HashMap::new();
        let mut by_label: HashMap<(Arc<str>, Arc<str>), usize> = HashMap::new();
        for b in buckets {
            if let Some(reason) = inner.exclusions.reason(b) {
                let t = self.tenant(&mut inner, &b.key.tenant, &b.key.platform);
                inner
                    .exclusions
                    .count(&t, &b.key.platform, reason, &b.stats.counters);
                continue;
            }
            let ptr = Arc::as_ptr(&b.key) as usize;
            let g = match by_key.get(&ptr) {
                Some(&(g, folded)) => {
                    if folded {
                        inner.folded_buckets += 1;
                    }
                    g
                }
                None => {
                    let t = self.tenant(&mut inner, &b.key.tenant, &b.key.platform);
                    // `tenant` counted this bucket if it folded it; the rest are counted below.
                    let folded = Arc::ptr_eq(&t, &inner.overflow);
                    let g = *by_label
                        .entry((t.clone(), b.key.platform.clone()))
                        .or_insert_with(|| {
                            groups.push(Group {
                                tenant: t,
                                platform: b.key.platform.clone(),
                                counters: Default::default(),
                                buckets: Vec::new(),
                            });
                            groups.len() - 1
                        });
                    by_key.insert(ptr, (g, folded));
                    g
                }
            };
            groups[g].counters.add(&b.stats.counters);
            groups[g].buckets.push(b);
        }
        for g in &mut groups {
            // In start order, as a window push takes them: a commit's buckets of a key
            // are, several partitions' commits taken together are not.
            if !g.buckets.is_sorted_by_key(|b| b.start) {
                g.buckets.sort_by_key(|b| b.start);
            }
            let c = &g.counters;
            let h = inner
                .handles
                .entry((g.tenant.clone(), g.platform.clone()))
                .or_insert_with(|| KeyCounters::register(&g.tenant, &g.platform));
            h.add(c);
            let of_group = g.buckets.iter().copied();
            inner
                .windows
                .push_key_batch(&g.tenant, &g.platform, of_group, since, end);
        }
    }

    /// Newest event time per key, from the apply thread every `metrics.publish_interval`
    /// (changed keys only): its gauge moves here, where the fact arrives.
    pub fn freshness(&self, keys: impl Iterator<Item = (String, String, Micros)>) {
        let mut inner = self.lock();
        for (t, p, at) in keys.filter(|k| k.2 != Micros::MIN) {
            let t = self.tenant(&mut inner, &Arc::from(t), &Arc::from(p.as_str()));
            let e = inner
                .last_event
                .entry((t.to_string(), p.clone()))
                .or_insert(at);
            *e = (*e).max(at);
            let at = *e;
            gauge!("slatrack_last_event_timestamp_seconds", "tenant" => t.to_string(), "platform" => p)
                .set(at as f64 / 1e6);
        }
    }

    /// Sets every gauge from the current windows and the service status: what
    /// [`GaugeThread`] runs every `metrics.gauge_interval`.
    pub fn set_gauges(&self) {
        let mut tick = self.tick.lock().unwrap_or_else(|p| p.into_inner());
        // Read before the windows: a partition's watermark is published after its buckets
        // reach the windows, so every watermark read here is covered by the windows below.
        let watermarks = self.status.watermarks();
        gauge!("slatrack_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
        let mut inner = self.lock();
        inner.windows.sweep();
        // A key silent for longer than the longest window leaves the windows (and so the
        // scrape); its freshness goes with it.
        let horizon = inner
            .windows
            .frontier()
            .saturating_sub(inner.windows.longest());
        inner.last_event.retain(|_, at| *at >= horizon);
        // Keys gone from the windows free their series slot for new ones.
        let Inner {
            windows, admitted, ..
        } = &mut *inner;
        admitted.retain(|key| windows.contains(key));
        let Inner {
            windows, handles, ..
        } = &mut *inner;
        handles.retain(|key, _| windows.contains(key));
        let frontier = inner.windows.frontier();
        let Inner {
            handles,
            exclusions,
            ..
        } = &mut *inner;
        exclusions.set_active(handles.keys(), frontier);
        gauge!("slatrack_series_keys").set(inner.admitted.len() as f64);
        gauge!("slatrack_window_keys").set(inner.windows.key_count() as f64);
        counter!("slatrack_series_overflow_buckets_total").absolute(inner.folded_buckets);
        // Each window as mergeable parts: counts and a latency histogram that sum across
        // instances (ratios and quantiles are computed in PromQL, after the sum).
        let mut exported = HashSet::new();
        for s in inner.windows.summaries() {
            let labels = [
                ("tenant", s.tenant.to_string()),
                ("platform", s.platform.to_string()),
                ("window", format_duration(s.window_us)),
            ];
            let c = &s.stats.counters;
            let counts = [
                c.events,
                c.attempts,
                c.on_time,
                c.retried,
                c.failed + c.dead_lettered,
                c.max_retries,
                c.dead_lettered,
            ];
            for (name, n) in WINDOW_COUNTS.iter().zip(counts) {
                gauge!(*name, &labels).set(n as f64);
            }
            // The objective, per key, for the alert rules to join on.
            let targets = self.config.targets(s.platform);
            let on_time = self
                .contracts
                .on_time_target(&self.config, s.tenant, s.platform);
            gauge!("slatrack_target_on_time_ratio", &labels[..2]).set(on_time);
            gauge!("slatrack_target_latency_seconds", &labels[..2])
                .set(targets.latency_target_us as f64 / 1e6);
            exported.insert(labels);
        }
        // A key gone from the windows reads 0 until its series expire (GAUGE_IDLE): its
        // last counts, left standing, would be added to another instance's.
        for labels in inner.exported.difference(&exported) {
            for name in WINDOW_COUNTS {
                gauge!(name, labels).set(0.0);
            }
        }
        inner.exported = exported;
        *tick = latency::Snapshot::from_windows(&self.bounds, &inner.windows);
        // The newest bucket in the windows (a scrape sees this tick whole: `tick`).
        let end = inner.windows.frontier();
        if end != Micros::MIN {
            gauge!("slatrack_window_end_timestamp_seconds").set(end as f64 / 1e6);
        }
        for ((t, p), at) in &inner.last_event {
            gauge!("slatrack_last_event_timestamp_seconds", "tenant" => t.clone(), "platform" => p.clone()).set(*at as f64 / 1e6);
        }
        drop(inner);
        let st = &self.status;
        counter!("slatrack_records_total").absolute(st.records.load(Ordering::Relaxed));
        counter!("slatrack_duplicates_total").absolute(st.duplicates.load(Ordering::Relaxed));
        for (i, reason) in RejectReason::ALL.iter().enumerate() {
            counter!("slatrack_rejected_total", "reason" => reason.code())
                .absolute(st.rejected_by_reason[i].load(Ordering::Relaxed));
        }
        counter!("slatrack_quarantined_total").absolute(st.quarantined.load(Ordering::Relaxed));
        counter!("slatrack_quarantine_dropped_total")
            .absolute(st.quarantine_dropped.load(Ordering::Relaxed));
        // The correction series exist from the start (at 0 for each configured platform),
        // so a dashboard shows "no backlog" rather than "no data".
        for p in &self.config.platforms {
            counter!("slatrack_corrections_total", "platform" => p.id.clone()).increment(0);
        }
        counter!("slatrack_correction_duplicates_total").increment(0);
        let _ = histogram!("slatrack_correction_age_seconds");
        counter!("slatrack_keys_overflowed_total")
            .absolute(st.keys_overflowed.load(Ordering::Relaxed));
        counter!("slatrack_checkpoints_total").absolute(st.commits.load(Ordering::Relaxed));
        counter!("slatrack_store_errors_total").absolute(st.store_errors.load(Ordering::Relaxed));
        counter!("slatrack_records_unread_total")
            .absolute(st.records_unread.load(Ordering::Relaxed));
        gauge!("slatrack_partitions_stopped").set(st.stopped.lock().map_or(0, |m| m.len()) as f64);
        counter!("slatrack_partitions_superseded_total")
            .absolute(st.superseded.load(Ordering::Relaxed));
        gauge!("slatrack_checkpoint_duration_seconds")
            .set(st.last_checkpoint_us.load(Ordering::Relaxed) as f64 / 1e6);
        gauge!("slatrack_brokers_reachable").set(if st.brokers_down.load(Ordering::Relaxed) {
            0.0
        } else {
            1.0
        });
        gauge!("slatrack_store_writable").set(if st.store_failing() { 0.0 } else { 1.0 });
        gauge!("slatrack_ready").set(if st.ready.load(Ordering::Relaxed) {
            1.0
        } else {
            0.0
        });
        for ((topic, partition), lag) in st.lags() {
            gauge!("slatrack_consumer_lag_records", "topic" => topic, "partition" => partition.to_string()).set(lag as f64);
        }
        for ((topic, partition), wm) in watermarks {
            gauge!("slatrack_watermark_timestamp_seconds", "topic" => topic, "partition" => partition.to_string()).set(wm as f64 / 1e6);
        }
        if let Some(h) = handle() {
            h.run_upkeep();
        }
    }
}

/// The thread that sets the gauges every `metrics.gauge_interval`.
pub struct GaugeThread {
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

impl GaugeThread {
    pub fn spawn(telemetry: Arc<Telemetry>) -> std::io::Result<Self> {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let interval = std::time::Duration::from_micros(
            telemetry.config.metrics.gauge_interval.0.max(1000) as u64,
        );
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("slatrack-gauges".into())
            .spawn(move || {
                while !flag.load(Ordering::Acquire) {
                    telemetry.set_gauges();
                    let until = std::time::Instant::now() + interval;
                    while std::time::Instant::now() < until && !flag.load(Ordering::Acquire) {
                        std::thread::sleep(interval.min(std::time::Duration::from_millis(20)));
                    }
                }
                // The last state (the final checkpoints) stays readable after a stop.
                telemetry.set_gauges();
            })?;
        Ok(Self { stop, thread })
    }

    /// Sets the gauges one last time and stops.
    pub fn finish(self) {
        self.stop.store(true, Ordering::Release);
        if self.thread.join().is_err() {
            tracing::error!("the gauge thread panicked");
        }
    }
}

impl Telemetry {
    /// The recorder's text, rendered under the tick lock, with the lock still held for the
    /// tick's latency histograms: both renderings show one tick whole.
    fn render(&self) -> (std::sync::MutexGuard<'_, latency::Snapshot>, String) {
        let tick = self.tick.lock().unwrap_or_else(|p| p.into_inner());
        let text = handle().map(|h| h.render()).unwrap_or_default();
        (tick, text)
    }
}

impl crate::sink::http::Endpoints for Telemetry {
    /// Renders what the gauge thread and the counters set: a scrape changes nothing.
    fn metrics(&self) -> String {
        let (tick, mut out) = self.render();
        tick.render_text(&mut out);
        out
    }

    /// The same, as protobuf, with the window histograms' native buckets.
    fn metrics_protobuf(&self) -> Vec<u8> {
        let (tick, text) = self.render();
        let mut families = exposition::families_from_text(&text);
        if let Some(f) = tick.family() {
            families.push(f);
        }
        drop(tick);
        exposition::encode(&families)
    }

    fn ready(&self) -> Result<(), String> {
        if self.status.brokers_down.load(Ordering::Relaxed) {
            return Err("no Kafka broker reachable (librdkafka is reconnecting)".into());
        }
        if let Some(why) = self.status.store_failure() {
            return Err(format!(
                "the scorecard store refuses writes, fetching paused until it accepts them: {why}"
            ));
        }
        if let Some(why) = self
            .status
            .stopped
            .lock()
            .ok()
            .and_then(|m| m.values().next().cloned())
        {
            return Err(why);
        }
        if self.status.ready.load(Ordering::Relaxed) {
            Ok(())
        } else {
            Err("no partitions assigned with restored checkpoints yet (or the last rebalance failed)".into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::http::Endpoints as _;

    fn bucket(tenant: &str, start: Micros) -> ClosedBucket {
        let mut stats = crate::engine::Stats::default();
        stats.counters.attempts = 1;
        stats.counters.events = 1;
        ClosedBucket {
            key: Arc::new(crate::engine::KeyInfo {
                tenant: tenant.into(),
                platform: "workday".into(),
                direction: crate::event::Direction::Outbound,
                target_latency_us: 500_000,
            }),
            start,
            width_us: crate::time::MICROS_PER_MIN,
            stats,
        }
    }

    #[test]
    fn a_scrape_reads_and_the_gauge_tick_slides_the_windows() {
        let t = Telemetry::new(
            Arc::new(Config::default()),
            Default::default(),
            Default::default(),
        );
        let day = crate::time::MICROS_PER_DAY;
        let absorb = |b| {
            t.absorb(&[Committed {
                buckets: vec![b],
                ..Default::default()
            }])
        };
        absorb(bucket("old", 100 * day));
        // Eight days later: "old" is past the longest window (7d), but only a sweep
        // removes it.
        absorb(bucket("new", 108 * day));
        assert_eq!(t.lock().windows.key_count(), 2);
        let _ = t.metrics();
        let _ = t.metrics();
        assert_eq!(t.lock().windows.key_count(), 2, "a scrape changes nothing");
        t.set_gauges();
        assert_eq!(
            t.lock().windows.key_count(),
            1,
            "the gauge tick slides the windows"
        );
    }

    /// The service's order, raced: a bucket reaches the windows, then the watermark moves
    /// past it; meanwhile the gauge thread ticks and a reader scrapes. A scrape must show
    /// one tick (a window's events and attempts, one each per bucket, agree) and never a
    /// watermark its windows do not cover.
    #[test]
    fn a_scrape_shows_one_tick_and_no_watermark_ahead_of_its_windows() {
        use std::sync::atomic::AtomicBool;
        let status = Arc::new(RuntimeStatus::default());
        let t = Telemetry::new(
            Arc::new(Config::default()),
            Default::default(),
            status.clone(),
        );
        let minute = crate::time::MICROS_PER_MIN;
        let base = 300 * crate::time::MICROS_PER_DAY;
        // Under the 7d window's length: every bucket stays in it.
        let buckets = 3000;
        let topic = "tick-test";
        let series =
            |name: &str| format!("{name}{{tenant=\"tick\",platform=\"workday\",window=\"7d\"}} ");
        let (events, attempts) = (
            series("slatrack_window_events"),
            series("slatrack_window_attempts"),
        );
        let watermark =
            format!("slatrack_watermark_timestamp_seconds{{topic=\"{topic}\",partition=\"0\"}} ");
        let value = |scrape: &str, prefix: &str| {
            scrape
                .lines()
                .find_map(|l| l.strip_prefix(prefix))
                .and_then(|v| v.parse::<f64>().ok())
        };
        let done = AtomicBool::new(false);
        let mut checked = 0;
        std::thread::scope(|s| {
            s.spawn(|| {
                for i in 0..buckets {
                    t.absorb(&[Committed {
                        buckets: vec![bucket("tick", base + i * minute)],
                        ..Default::default()
                    }]);
                    if let Ok(mut m) = status.watermark.lock() {
                        m.insert((topic.to_string(), 0), base + (i + 1) * minute);
                    }
                }
                done.store(true, Ordering::Release);
            });
            s.spawn(|| {
                while !done.load(Ordering::Acquire) {
                    t.set_gauges();
                }
                t.set_gauges();
            });
            loop {
                let finished = done.load(Ordering::Acquire);
                let scrape = t.metrics();
                if let (Some(e), Some(a), Some(w)) = (
                    value(&scrape, &events),
                    value(&scrape, &attempts),
                    value(&scrape, &watermark),
                ) {
                    assert_eq!(e, a, "one tick: events and attempts agree");
                    let covered = ((w * 1e6) as i64 - base) / minute;
                    assert!(
                        e >= covered as f64,
                        "the watermark covers {covered} buckets, the windows hold {e}"
                    );
                    checked += 1;
                }
                if finished {
                    break;
                }
            }
        });
        assert!(checked > 0, "no scrape showed the series");
    }
}
