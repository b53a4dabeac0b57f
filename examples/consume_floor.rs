//! The client floor under `benches/process.py`: slatrack's own Kafka consumer
//! (`kafka::consumer`, batch reads from the fetch queue) on the bench's topic, doing
//! nothing else with the records (`count`), or also decoding and validating each one as
//! the apply thread does (`decode`). What `slatrack run` spends beyond these is its own
//! work: counting, the store, the windows.
//!
//! usage: consume_floor BROKERS TOPIC N GROUP count|decode
//!   -> one JSON line, as benches/peers/py_count.py prints: {"rate": records/s from the
//!      first record to the Nth, "cpu_s": process CPU seconds, "rss_mib": peak RSS}

use slatrack::codec::{Decoder, Format};
use slatrack::config::{Config, KafkaConfig};
use slatrack::kafka::consumer::{Batch, Consumer, Rebalance, TopicPartition};
use slatrack::pipeline::Pipeline;
use slatrack::runtime::RuntimeStatus;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Takes what the group assigns from the group offset (`auto.offset.reset` earliest).
struct FromTheStart;

impl Rebalance for FromTheStart {
    fn assigned(&self, partitions: &[TopicPartition]) -> Vec<Option<i64>> {
        vec![None; partitions.len()]
    }
    fn log_start(&self, _: &TopicPartition, next: i64, _: i64) -> i64 {
        next
    }
    fn log_ended(&self, _: &TopicPartition, _: i64) {}
    fn revoked(&self, _: &[TopicPartition]) {}
    fn lost(&self) {}
}

/// User + system CPU seconds and peak RSS (MiB) of this process, from /proc.
fn usage() -> (f64, f64) {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let tick = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of stat, 12 and 13 after the command name.
    // SAFETY: sysconf only reads a system constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let cpu = (tick(11) + tick(12)) / hz;
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let hwm_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .unwrap_or(0.0);
    (cpu, hwm_kib / 1024.0)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, brokers, topic, n, group, mode] = args.as_slice() else {
        return Err("usage: consume_floor BROKERS TOPIC N GROUP count|decode".into());
    };
    let n: u64 = n.parse()?;
    let decode = match mode.as_str() {
        "count" => false,
        "decode" => true,
        other => return Err(format!("mode {other:?}: count or decode").into()),
    };
    let kafka: KafkaConfig = toml::from_str(&format!(
        "brokers = {brokers:?}\ngroup_id = {group:?}\n[[topics]]\nname = {topic:?}\n\
         format = \"json\"\n[properties]\n\"session.timeout.ms\" = \"2000\"\n\
         \"heartbeat.interval.ms\" = \"500\"\n"
    ))?;
    let config = Config::default();
    let mut decoder = Decoder::new(
        Format::Json,
        Pipeline::bounds(&config),
        config.limits.max_record_bytes,
    );
    let mut consumer = Consumer::subscribe(
        &kafka,
        Arc::new(FromTheStart),
        Arc::new(RuntimeStatus::default()),
        Arc::new(AtomicU64::new(0)),
    )?;
    let mut batch = Batch::default();
    let (mut seen, mut valid, mut first) = (0u64, 0u64, None);
    let now = slatrack::time::now_micros();
    while seen < n {
        batch.clear();
        consumer.fill(&mut batch, Duration::from_millis(20));
        if first.is_none() && !batch.items.is_empty() {
            first = Some(Instant::now());
        }
        for it in &batch.items {
            if decode && decoder.decode(batch.payload(it), now).is_ok() {
                valid += 1;
            }
        }
        seen += batch.items.len() as u64;
    }
    let elapsed = first.map_or(0.0, |t| t.elapsed().as_secs_f64());
    let (cpu_s, rss_mib) = usage();
    drop(consumer);
    if decode && valid == 0 {
        return Err("no record decoded".into());
    }
    println!(
        "{{\"rate\": {}, \"cpu_s\": {cpu_s}, \"rss_mib\": {rss_mib}, \"valid\": {valid}}}",
        (n.saturating_sub(1)) as f64 / elapsed.max(1e-9)
    );
    Ok(())
}
