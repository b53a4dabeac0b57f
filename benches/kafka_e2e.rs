//! Kafka end to end on a real broker: `slatrack run` (in process, SQLite store) against a
//! bare rdkafka consumer that only counts, both reading the same pre-filled 4-partition
//! topic on tansu, alternated in one run so the ratio survives machine noise.
//!
//! Run: `bash scripts/fetch-tansu.sh && SLATRACK_TANSU=.tools/tansu cargo bench --bench kafka_e2e`
//! (`SLATRACK_BENCH_EVENTS`, default 1,000,000; `SLATRACK_BENCH_RUNS`, default 5).
//! Both clocks start at the first record received, so group-join time is excluded.

#[path = "../tests/support/tansu.rs"]
mod tansu;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::ClientConfig;
use slatrack::config::Config;
use slatrack::service::{self, Status};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const TOPIC: &str = "bench";
const PARTITIONS: i32 = 4;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn prefill(brokers: &str, n: u64) -> (u64, usize) {
    let start = slatrack::time::parse_date("2025-10-01").unwrap_or_default();
    let events = slatrack::source::generator::pilot(
        7,
        "globex",
        start,
        24 * slatrack::time::MICROS_PER_HOUR,
        n,
    );
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "20")
        .set("batch.num.messages", "10000")
        .create()
        .expect("producer");
    let mut bytes = 0;
    for (i, e) in events.iter().enumerate() {
        let v = slatrack::codec::protobuf::encode(e);
        bytes += v.len();
        tansu::send_blocking(
            &producer,
            BaseRecord::to(TOPIC)
                .partition(i as i32 % PARTITIONS)
                .key(&e.event_id)
                .payload(&v),
        );
    }
    producer.flush(Duration::from_secs(120)).expect("flush");
    (events.len() as u64, bytes / events.len().max(1))
}

/// Messages per second of a consumer that only counts.
fn bare(brokers: &str, group: &str, n: u64) -> f64 {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("session.timeout.ms", "2000")
        .set("heartbeat.interval.ms", "500")
        .set("partition.assignment.strategy", "range,roundrobin")
        .create()
        .expect("consumer");
    c.subscribe(&[TOPIC]).expect("subscribe");
    let mut count = 0u64;
    let mut first = None;
    while count < n {
        match c.poll(Duration::from_millis(100)) {
            Some(Ok(_)) => {
                first.get_or_insert_with(Instant::now);
                count += 1;
            }
            Some(Err(e)) => eprintln!("bare consumer: {e}"),
            None => {}
        }
    }
    let el = first.map(|t| t.elapsed()).unwrap_or_default();
    (n - 1) as f64 / el.as_secs_f64()
}

/// Messages per second of `slatrack run` (decode, validate, aggregate, checkpoint).
fn slatrack(brokers: &str, group: &str, n: u64, dir: &std::path::Path) -> f64 {
    let mut cfg = Config::default();
    cfg.metrics.listen = String::new();
    cfg.kafka = Some(tansu::kafka_config(brokers, group, TOPIC));
    let status = Arc::new(Status::default());
    let stop = Arc::new(AtomicBool::new(false));
    let store = slatrack::store::Location::Sqlite(dir.join(format!("{group}.db")));
    let (c, s, st) = (Arc::new(cfg), stop.clone(), status.clone());
    let h = std::thread::spawn(move || service::run(c, store, s, st));
    let mut first = None;
    let trace = std::env::var_os("SLATRACK_BENCH_TRACE").is_some();
    let mut last_print = Instant::now();
    loop {
        let r = status.records.load(Ordering::Relaxed);
        if trace && last_print.elapsed() >= Duration::from_millis(250) {
            last_print = Instant::now();
            eprintln!(
                "{:?} records {r} commits {} ckpt_us {} store_errors {}",
                first.map(|t: Instant| t.elapsed()),
                status.commits.load(Ordering::Relaxed),
                status.last_checkpoint_us.load(Ordering::Relaxed),
                status.store_errors.load(Ordering::Relaxed)
            );
        }
        if r > 0 {
            first.get_or_insert_with(Instant::now);
        }
        if r >= n || h.is_finished() {
            break;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    let el = first.map(|t| t.elapsed()).unwrap_or_default();
    stop.store(true, Ordering::Relaxed);
    if let Ok(Err(e)) = h.join() {
        panic!("slatrack run failed: {e}");
    }
    (n - 1) as f64 / el.as_secs_f64()
}

fn med(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    (v[0], v[v.len() / 2], v[v.len() - 1])
}

fn main() {
    if std::env::var_os("SLATRACK_TANSU").is_none() {
        eprintln!(
            "SLATRACK_TANSU must name the tansu binary: bash scripts/fetch-tansu.sh prints it"
        );
        std::process::exit(2);
    }
    if std::env::var_os("SLATRACK_BENCH_TRACE").is_some() {
        tracing_subscriber::fmt()
            .with_writer(std::io::stderr)
            .with_env_filter("info")
            .init();
    }
    let n = env_or("SLATRACK_BENCH_EVENTS", 1_000_000);
    let runs = env_or("SLATRACK_BENCH_RUNS", 5);
    let dir = tempfile::tempdir().expect("temp dir");
    // The integration suite's launcher: free 127.0.0.1 port, memory storage, killed on drop.
    let broker = tansu::Tansu::start(&dir.path().join("tansu.log"));
    broker.create_topic(TOPIC, PARTITIONS as u32);
    let brokers = broker.brokers();
    let t = Instant::now();
    let (n, size) = prefill(&brokers, n);
    println!(
        "pre-filled {n} protobuf records (≈{size} B) into {PARTITIONS} partitions in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let (mut b, mut s) = (Vec::new(), Vec::new());
    for run in 0..runs {
        b.push(bare(&brokers, &format!("bare-{run}"), n));
        s.push(slatrack(
            &brokers,
            &format!("slatrack-{run}"),
            n,
            dir.path(),
        ));
        println!(
            "run {run}: bare {:>9.0} msg/s   slatrack {:>9.0} msg/s",
            b[b.len() - 1],
            s[s.len() - 1]
        );
    }
    let (bmin, bmed, bmax) = med(b);
    let (smin, smed, smax) = med(s);
    println!("bare rdkafka consumer (count only)   min/median/max {bmin:.0} / {bmed:.0} / {bmax:.0} msg/s");
    println!("slatrack run (SQLite store)          min/median/max {smin:.0} / {smed:.0} / {smax:.0} msg/s");
    println!("ratio of medians slatrack / bare = {:.2}", smed / bmed);
}
