//! Memory at a fixed key count under steady traffic, with the default windows (5m, 1h,
//! 24h, 7d): the engine shard plus the rolling windows the exporter keeps, driven through
//! ten days of event time so the 7-day window fills and then must stay flat.
//!
//! Run: `cargo bench --bench memory` (`SLATRACK_BENCH_KEYS=1000,10000`,
//! `SLATRACK_BENCH_EVERY_MIN=10`: one attempt per key every N minutes of event time).
//! Reports RSS after each simulated day and bytes per key; RSS is this process's (VmRSS).

use slatrack::config::Config;
use slatrack::engine::WindowSet;
use slatrack::event::{DeliveryEvent, Direction, Outcome};
use slatrack::pipeline::Pipeline;
use slatrack::time::MICROS_PER_MIN;
use std::sync::Arc;

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

fn run(keys: usize, every_min: i64) {
    let config = Arc::new(Config::default());
    let platforms = [
        "benevity",
        "goodera",
        "workday",
        "impact_in",
        "sap_successfactors",
    ];
    let tenants = keys.div_ceil(platforms.len());
    let base = rss_kib();
    let mut p = Pipeline::new(
        config.clone(),
        slatrack::codec::Format::Protobuf,
        Pipeline::bounds(&config),
    );
    let lengths: Vec<i64> = config.engine.windows.iter().map(|s| s.0).collect();
    let mut windows = WindowSet::new(&lengths);
    let t0 = slatrack::time::parse_date("2025-10-01").unwrap_or_default();
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut ev = DeliveryEvent {
        direction: Direction::Inbound,
        attempt: 1,
        max_attempts: 5,
        outcome: Outcome::Delivered,
        http_status: Some(200),
        ..Default::default()
    };
    let ids: Vec<(String, &str)> = (0..keys)
        .map(|k| {
            (
                format!("tenant-{:05}", k / platforms.len()),
                platforms[k % platforms.len()],
            )
        })
        .collect();
    let mut seq = 0u64;
    let mut closed = 0usize;
    println!("== {keys} keys ({tenants} tenants x {} platforms), one attempt per key every {every_min} min", platforms.len());
    println!(
        "{:>4} {:>10} {:>12} {:>12}",
        "day", "RSS MiB", "bytes/key", "window keys"
    );
    for minute in 0..10 * 24 * 60 {
        let now = t0 + minute * MICROS_PER_MIN;
        for (k, (tenant, platform)) in ids.iter().enumerate() {
            if (k as i64 + minute) % every_min != 0 {
                continue;
            }
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            seq += 1;
            ev.event_id.clear();
            ev.event_id.push_str(&seq.to_string());
            ev.tenant.clear();
            ev.tenant.push_str(tenant);
            ev.platform.clear();
            ev.platform.push_str(platform);
            let latency = 50_000 + (x % 900_000) as i64;
            ev.enqueued_at = now;
            ev.started_at = now;
            ev.completed_at = now + latency;
            p.ingest(&ev);
        }
        for b in p.shard.take_closed() {
            windows.push(&b);
            closed += 1;
        }
        if (minute + 1) % 60 == 0 {
            windows.sweep(); // what each publish does (every scrape); hourly is enough here
        }
        if (minute + 1) % (24 * 60) == 0 {
            let rss = rss_kib().saturating_sub(base);
            println!(
                "{:>4} {:>10.1} {:>12} {:>12}",
                (minute + 1) / (24 * 60),
                rss as f64 / 1024.0,
                rss * 1024 / keys as u64,
                windows.key_count()
            );
        }
    }
    std::hint::black_box((&p, &windows, closed));
}

fn main() {
    let keys: Vec<usize> = std::env::var("SLATRACK_BENCH_KEYS")
        .unwrap_or_else(|_| "1000,10000".into())
        .split(',')
        .filter_map(|k| k.trim().parse().ok())
        .collect();
    let every: i64 = std::env::var("SLATRACK_BENCH_EVERY_MIN")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    for k in keys {
        // Each size in its own process would be cleaner; in one process the second run
        // starts from the first's freed (but possibly retained) heap: report per run deltas.
        run(k, every);
        println!();
    }
}
