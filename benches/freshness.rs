//! Freshness under load: how long from producing an event to seeing it on `/metrics`.
//!
//! `slatrack run` (in process, SQLite store, metrics on 127.0.0.1) consumes a 4-partition
//! tansu topic that a producer thread fills at a steady rate with event times at the wall
//! clock (100 keys). Meanwhile probes — one event of tenant `probe`, stamped now — are
//! produced one at a time into the same partitions, and `/metrics` is scraped every 50 ms
//! until `slatrack_last_event_timestamp_seconds{tenant="probe",platform=…}` reaches the
//! probe's timestamp: the event was fetched, decoded, deduplicated, applied and published.
//! (Window gauges and counters move when the event's bucket closes: bucket width plus
//! allowed lateness of event time, by design — BENCHMARKS.md "Freshness".)
//!
//! Run: `bash scripts/fetch-tansu.sh && SLATRACK_TANSU=.tools/tansu cargo bench --bench freshness`
//! (`SLATRACK_BENCH_RATE` events/s, default 20,000; `SLATRACK_BENCH_RUNS` rounds of
//! `SLATRACK_BENCH_PROBES` probes, defaults 5 × 100). Diagnosis knobs: `SLATRACK_BENCH_TRACE`
//! (each probe and the lag), `SLATRACK_BENCH_FETCH_WAIT_MS` (librdkafka `fetch.wait.max.ms`),
//! `SLATRACK_BENCH_LINGER_MS` (the load producer's `linger.ms`, default 50),
//! `SLATRACK_BENCH_CHECKPOINT_MS` (`service.checkpoint_interval`).

#[path = "../tests/support/http.rs"]
mod http;
#[path = "../tests/support/tansu.rs"]
mod tansu;

use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::ClientConfig;
use slatrack::config::Config;
use slatrack::event::DeliveryEvent;
use slatrack::runtime::RuntimeStatus;
use slatrack::service;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const TOPIC: &str = "fresh";
/// How often the probe loop scrapes `/metrics` (each scrape renders every series, so a
/// tighter loop would load the service it measures); latencies are ± this.
const SCRAPE_EVERY: Duration = Duration::from_millis(50);
const PARTITIONS: i32 = 4;
const PLATFORMS: [&str; 5] = [
    "benevity",
    "goodera",
    "workday",
    "impact_in",
    "sap_successfactors",
];

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn producer(brokers: &str, linger_ms: u64) -> ThreadedProducer<DefaultProducerContext> {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", linger_ms.to_string())
        .set("batch.num.messages", "10000")
        .set("queue.buffering.max.messages", "1000000")
        .create()
        .expect("producer")
}

/// `e` moved so that it completes now (its latency kept), under a fresh id.
fn restamp(e: &DeliveryEvent, id: String) -> DeliveryEvent {
    let shift = slatrack::time::now_micros() - e.completed_at;
    let mut e = e.clone();
    e.event_id = id;
    e.enqueued_at += shift;
    e.started_at += shift;
    e.completed_at += shift;
    e
}

fn send(p: &ThreadedProducer<DefaultProducerContext>, partition: i32, v: &[u8]) {
    tansu::send_blocking(
        p,
        BaseRecord::<(), [u8]>::to(TOPIC)
            .partition(partition)
            .payload(v),
    );
}

/// Produces `rate` events/s until `stop`, counting them in `sent`.
fn load(brokers: String, rate: u64, stop: Arc<AtomicBool>, sent: Arc<AtomicU64>) {
    let start = slatrack::time::now_micros();
    let templates: Vec<DeliveryEvent> = (0..20)
        .flat_map(|t| {
            slatrack::synthetic::pilot(
                t,
                &format!("tenant-{t:02}"),
                start,
                slatrack::time::MICROS_PER_HOUR,
                2_000,
            )
        })
        .collect();
    // The load batches as a busy producer would: tansu's memory storage pays per stored
    // batch, and at `linger.ms` 2 the broker took both cores from 5,000 events/s on
    // (BENCHMARKS.md "Freshness"). Probes have their own producer, flushed at once.
    let p = producer(&brokers, env_or("SLATRACK_BENCH_LINGER_MS", 50));
    let began = Instant::now();
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let due = (began.elapsed().as_secs_f64() * rate as f64) as u64;
        if n >= due {
            std::thread::sleep(Duration::from_micros(500));
            continue;
        }
        while n < due {
            let t = &templates[(n % templates.len() as u64) as usize];
            let e = restamp(t, format!("{}-{n}", t.event_id));
            send(
                &p,
                (n % PARTITIONS as u64) as i32,
                &slatrack::codec::protobuf::encode(&e),
            );
            n += 1;
        }
        sent.store(n, Ordering::Relaxed);
    }
    let _ = p.flush(Duration::from_secs(10));
}

/// The probe key's last event time on `/metrics`, seconds.
fn seen(addr: std::net::SocketAddr, platform: &str) -> Option<f64> {
    let body = http::http_get(addr, "/metrics");
    let needle = format!(
        "slatrack_last_event_timestamp_seconds{{tenant=\"probe\",platform=\"{platform}\"}} "
    );
    body.lines()
        .find_map(|l| l.strip_prefix(needle.as_str()))
        .and_then(|v| v.trim().parse().ok())
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    let i = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

fn main() {
    if std::env::var_os("SLATRACK_TANSU").is_none() {
        eprintln!(
            "SLATRACK_TANSU must name the tansu binary: bash scripts/fetch-tansu.sh prints it"
        );
        std::process::exit(2);
    }
    let rate = env_or("SLATRACK_BENCH_RATE", 20_000);
    let runs = env_or("SLATRACK_BENCH_RUNS", 5);
    let probes = env_or("SLATRACK_BENCH_PROBES", 100);
    let dir = tempfile::tempdir().expect("temp dir");
    let broker = tansu::Tansu::start(&dir.path().join("tansu.log"));
    broker.create_topic(TOPIC, PARTITIONS as u32);
    let brokers = broker.brokers();

    let mut cfg = Config::default();
    cfg.metrics.listen = "127.0.0.1:0".into();
    if let Ok(ms) = std::env::var("SLATRACK_BENCH_CHECKPOINT_MS") {
        let ms: i64 = ms
            .parse()
            .expect("SLATRACK_BENCH_CHECKPOINT_MS: milliseconds");
        cfg.service.checkpoint_interval = slatrack::config::ConfigDuration(ms * 1000);
    }
    let mut kafka = tansu::kafka_config(&brokers, "freshness", TOPIC);
    if let Ok(ms) = std::env::var("SLATRACK_BENCH_FETCH_WAIT_MS") {
        kafka.properties.insert("fetch.wait.max.ms".into(), ms);
    }
    cfg.kafka = Some(kafka);
    let status = Arc::new(RuntimeStatus::default());
    let stop_service = Arc::new(AtomicBool::new(false));
    let store = slatrack::store::Location::Sqlite(dir.path().join("fresh.db"));
    let service = {
        let (c, s, st) = (Arc::new(cfg), stop_service.clone(), status.clone());
        std::thread::spawn(move || service::run(c, store, s, st))
    };

    let stop_load = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let loader = {
        let (b, s, n) = (brokers.clone(), stop_load.clone(), sent.clone());
        std::thread::spawn(move || load(b, rate, s, n))
    };
    // Warm-up: the group joined and the service keeps up with the load.
    let t = Instant::now();
    while status.records.load(Ordering::Relaxed) < rate * 3 {
        assert!(
            t.elapsed() < Duration::from_secs(120),
            "the service never caught up with the load"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let addr = status
        .metrics_addr
        .lock()
        .ok()
        .and_then(|a| *a)
        .expect("metrics served");

    let template = slatrack::synthetic::pilot(99, "probe", 0, 1_000_000, 1)
        .pop()
        .expect("a probe template");
    let p = producer(&brokers, 2);
    println!("load {rate} events/s into {PARTITIONS} partitions (100 keys), probes one at a time");
    let mut p99s = Vec::new();
    let mut all = Vec::new();
    let mut k = 0u64;
    for run in 0..runs {
        let (sent0, applied0, t0) = (
            sent.load(Ordering::Relaxed),
            status.records.load(Ordering::Relaxed),
            Instant::now(),
        );
        let mut lat = Vec::new();
        for _ in 0..probes {
            let platform = PLATFORMS[(k % 5) as usize];
            let mut e = restamp(&template, format!("probe-{k}"));
            e.platform = platform.into();
            let at = e.completed_at as f64 / 1e6;
            let t = Instant::now();
            send(
                &p,
                (k % PARTITIONS as u64) as i32,
                &slatrack::codec::protobuf::encode(&e),
            );
            p.flush(Duration::from_secs(10)).expect("probe delivered");
            loop {
                if seen(addr, platform).is_some_and(|v| v >= at - 0.000_5) {
                    break;
                }
                assert!(
                    t.elapsed() < Duration::from_secs(60),
                    "probe {k} never appeared: produced {} applied {} (lag {})",
                    sent.load(Ordering::Relaxed),
                    status.records.load(Ordering::Relaxed),
                    sent.load(Ordering::Relaxed) as i64
                        - status.records.load(Ordering::Relaxed) as i64
                );
                std::thread::sleep(SCRAPE_EVERY);
            }
            lat.push(t.elapsed().as_secs_f64() * 1000.0);
            if std::env::var_os("SLATRACK_BENCH_TRACE").is_some() {
                eprintln!(
                    "probe {k}: {:.1} ms, last checkpoint {} µs, lag {}",
                    lat[lat.len() - 1],
                    status.last_checkpoint_us.load(Ordering::Relaxed),
                    sent.load(Ordering::Relaxed) as i64
                        - status.records.load(Ordering::Relaxed) as i64
                );
            }
            k += 1;
            std::thread::sleep(Duration::from_millis(50));
        }
        let secs = t0.elapsed().as_secs_f64();
        let produced = (sent.load(Ordering::Relaxed) - sent0) as f64 / secs;
        let applied = (status.records.load(Ordering::Relaxed) - applied0) as f64 / secs;
        lat.sort_by(f64::total_cmp);
        let p99 = quantile(&lat, 0.99);
        println!(
            "run {run}: produced {produced:>8.0}/s applied {applied:>8.0}/s   probe ms: p50 {:>6.1}  p90 {:>6.1}  p99 {:>6.1}  max {:>6.1}",
            quantile(&lat, 0.5),
            quantile(&lat, 0.9),
            p99,
            lat[lat.len() - 1]
        );
        p99s.push(p99);
        all.extend(lat);
    }
    stop_load.store(true, Ordering::Relaxed);
    let _ = loader.join();
    stop_service.store(true, Ordering::Relaxed);
    if let Ok(Err(e)) = service.join() {
        panic!("slatrack run failed: {e}");
    }
    p99s.sort_by(f64::total_cmp);
    all.sort_by(f64::total_cmp);
    println!(
        "p99 per run (ms): min {:.1}  median {:.1}  max {:.1};  all {} probes: p50 {:.1}  p99 {:.1}  max {:.1}",
        p99s[0],
        p99s[p99s.len() / 2],
        p99s[p99s.len() - 1],
        all.len(),
        quantile(&all, 0.5),
        quantile(&all, 0.99),
        all[all.len() - 1]
    );
}
