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
use slatrack::runtime::RuntimeStatus;
use slatrack::service;
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
    let events =
        slatrack::synthetic::pilot(7, "globex", start, 24 * slatrack::time::MICROS_PER_HOUR, n);
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
        // The fetch setting slatrack uses by default (src/source/kafka.rs): with
        // librdkafka's 1 s the fetcher idles whenever its queue is full, and two of five
        // bare runs in one sitting stalled at 0.6 M msgs/s, which flattered the ratio.
        .set("fetch.queue.backoff.ms", "10")
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
    let status = Arc::new(RuntimeStatus::default());
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
        // The watcher is the bench's, not slatrack's: at 200 µs it woke 5,000 times a
        // second on the two cores slatrack and tansu share (the bare consumer has no
        // watcher). 1 ms costs at most 1 ms at each end of a run of about a second,
        // and both ends are late alike.
        std::thread::sleep(Duration::from_millis(1));
    }
    let el = first.map(|t| t.elapsed()).unwrap_or_default();
    stop.store(true, Ordering::Relaxed);
    if let Ok(Err(e)) = h.join() {
        panic!("slatrack run failed: {e}");
    }
    (n - 1) as f64 / el.as_secs_f64()
}

/// CPU seconds (user + system, all threads) of a process so far, from /proc: what the
/// CPU-per-message figures are made of. `None` off Linux.
fn cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name; in
    // USER_HZ, which Linux fixes at 100 for /proc.
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

/// Runs `f` and returns its result with the CPU seconds this process and the broker spent.
fn with_cpu<T>(broker_pid: u32, f: impl FnOnce() -> T) -> (T, f64, f64) {
    let broker = broker_pid.to_string();
    let (a0, b0) = (cpu_seconds("self"), cpu_seconds(&broker));
    let out = f();
    let (a1, b1) = (cpu_seconds("self"), cpu_seconds(&broker));
    let d = |x: Option<f64>, y: Option<f64>| x.zip(y).map_or(f64::NAN, |(x, y)| y - x);
    (out, d(a0, a1), d(b0, b1))
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
    // CPU per message (µs), consumer process and broker: on this 2-core machine the
    // two share the cores, so the CPU each consumer needs per message bounds its rate.
    let (mut bcpu, mut scpu) = (Vec::new(), Vec::new());
    let us = |secs: f64| secs * 1e6 / n as f64;
    for run in 0..runs {
        let (rate, own, brk) = with_cpu(broker.pid(), || bare(&brokers, &format!("bare-{run}"), n));
        b.push(rate);
        bcpu.push((us(own), us(brk)));
        let (rate, own, brk) = with_cpu(broker.pid(), || {
            slatrack(&brokers, &format!("slatrack-{run}"), n, dir.path())
        });
        s.push(rate);
        scpu.push((us(own), us(brk)));
        println!(
            "run {run}: bare {:>9.0} msg/s ({:.2} + {:.2} µs CPU/msg consumer + broker)   slatrack {:>9.0} msg/s ({:.2} + {:.2})",
            b[b.len() - 1],
            bcpu[bcpu.len() - 1].0,
            bcpu[bcpu.len() - 1].1,
            s[s.len() - 1],
            scpu[scpu.len() - 1].0,
            scpu[scpu.len() - 1].1,
        );
    }
    let cpu_med = |v: &[(f64, f64)]| {
        let (_, own, _) = med(v.iter().map(|x| x.0).collect());
        let (_, brk, _) = med(v.iter().map(|x| x.1).collect());
        (own, brk)
    };
    let (bo, bb) = cpu_med(&bcpu);
    let (so, sb) = cpu_med(&scpu);
    println!("CPU per message, medians (µs; the whole run incl. group join and shutdown): bare {bo:.2} + broker {bb:.2}; slatrack {so:.2} + broker {sb:.2}");
    let (bmin, bmed, bmax) = med(b);
    let (smin, smed, smax) = med(s);
    println!("bare rdkafka consumer (count only)   min/median/max {bmin:.0} / {bmed:.0} / {bmax:.0} msg/s");
    println!("slatrack run (SQLite store)          min/median/max {smin:.0} / {smed:.0} / {smax:.0} msg/s");
    println!("ratio of medians slatrack / bare = {:.2}", smed / bmed);
}
