//! Scorecard reads at scale: `slatrack scorecard` (the release binary, as a user runs it)
//! over 10 weeks for one tenant out of 1,000 tenants × 5 platforms, from PostgreSQL and
//! SQLite holding the same rows, in one run.
//!
//! The data: tenant `globex` busy on all five platforms, with minute rows for the last 35
//! days (the default `store.minute_retention`) and hourly rows before (folded); 999 other
//! tenants with one row per platform per day (what a backfill commit writes). That is
//! 252,000 + 4,200 rows for the tenant and 349,650 for the others.
//!
//! Run: `cargo bench --bench store_read` (PostgreSQL from Debian's package, as the tests
//! use it). Median of 5 runs per store. `SLATRACK_BENCH_BINARIES=A,B` times those
//! binaries instead of this build's, alternated run by run (the shipped build is
//! `target/pgo/release/slatrack`, from `scripts/build-release.sh`).

#[path = "../tests/support/postgres.rs"]
mod postgres;

use slatrack::engine::{ClosedBucket, KeyInfo, Stats};
use slatrack::event::Direction;
use slatrack::store::ReplayStore;
use slatrack::time::{MICROS_PER_DAY, MICROS_PER_HOUR, MICROS_PER_MIN};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

const PLATFORMS: [&str; 5] = [
    "benevity",
    "goodera",
    "workday",
    "successfactors",
    "impact_in",
];
const TENANTS: usize = 1_000;
const DAYS: i64 = 70;
const RUNS: usize = 5;

fn bucket(tenant: &str, platform: &str, start: i64, width: i64, n: u64, seed: u64) -> ClosedBucket {
    let mut stats = Stats::default();
    for i in 0..n {
        let us = 80_000 + (seed.wrapping_mul(2_654_435_761).wrapping_add(i * 7_919) % 900_000);
        stats.counters.attempts += 1;
        stats.counters.events += 1;
        stats.counters.delivered += 1;
        stats.counters.on_time += u64::from(us < 500_000);
        stats.counters.latency_sum_us += us;
        stats.latency.record(us);
    }
    ClosedBucket {
        key: Arc::new(KeyInfo {
            tenant: tenant.into(),
            platform: platform.into(),
            direction: Direction::Outbound,
            target_latency_us: 500_000,
        }),
        start,
        width_us: width,
        stats,
    }
}

/// Every row, by source (a source per platform: a partition's share).
fn rows(from: i64) -> Vec<(String, Vec<ClosedBucket>)> {
    let folded_until = from + 35 * MICROS_PER_DAY;
    PLATFORMS
        .iter()
        .enumerate()
        .map(|(p, platform)| {
            let mut out = Vec::new();
            let mut t = from;
            while t < folded_until {
                out.push(bucket("globex", platform, t, MICROS_PER_HOUR, 12, t as u64));
                t += MICROS_PER_HOUR;
            }
            while t < from + DAYS * MICROS_PER_DAY {
                out.push(bucket("globex", platform, t, MICROS_PER_MIN, 3, t as u64));
                t += MICROS_PER_MIN;
            }
            for i in 1..TENANTS {
                let tenant = format!("tenant-{i:04}");
                for d in 0..DAYS {
                    let start = from + d * MICROS_PER_DAY;
                    out.push(bucket(
                        &tenant,
                        platform,
                        start,
                        MICROS_PER_DAY,
                        6,
                        (i * 97 + p) as u64 + d as u64,
                    ));
                }
            }
            (format!("bench:{platform}"), out)
        })
        .collect()
}

fn write_rows(store: &mut dyn ReplayStore, rows: &[(String, Vec<ClosedBucket>)]) {
    let tx = store.begin().expect("transaction");
    for (source, buckets) in rows {
        for b in buckets {
            tx.put_bucket(source, b).expect("row");
        }
    }
    tx.commit().expect("commit");
}

/// Seconds per `slatrack scorecard` run, and the JSON's event count (to check the stores
/// agree).
fn scorecard(binary: &Path, store: &str, config: Option<&Path>) -> (f64, u64) {
    let mut c = Command::new(binary);
    c.args(["scorecard", "--tenant", "globex", "--from", "2025-09-08"])
        .args(["--to", "2025-11-17", "--format", "json", "--store", store]);
    if let Some(cfg) = config {
        c.arg("--config").arg(cfg);
    }
    let t = Instant::now();
    let out = c.output().expect("slatrack runs");
    let secs = t.elapsed().as_secs_f64();
    assert!(
        out.status.success(),
        "scorecard from {store}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    (secs, v["overall"]["events"].as_u64().unwrap_or(0))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The binaries to time: `SLATRACK_BENCH_BINARIES`, or this build's.
fn binaries() -> Vec<PathBuf> {
    match std::env::var("SLATRACK_BENCH_BINARIES") {
        Ok(list) if !list.trim().is_empty() => list.split(',').map(PathBuf::from).collect(),
        _ => vec![PathBuf::from(env!("CARGO_BIN_EXE_slatrack"))],
    }
}

/// Times every binary `RUNS` times on one store, alternated; the events every run reported.
fn measure(name: &str, store: &str, config: Option<&Path>, binaries: &[PathBuf]) -> u64 {
    let mut times = vec![Vec::new(); binaries.len()];
    let mut events = None;
    for run in 0..RUNS {
        for k in 0..binaries.len() {
            let k = if run % 2 == 0 {
                k
            } else {
                binaries.len() - 1 - k
            };
            let (s, e) = scorecard(&binaries[k], store, config);
            times[k].push(s);
            assert!(events.is_none_or(|x| x == e), "{name}: runs disagree");
            events = Some(e);
        }
    }
    let events = events.unwrap_or(0);
    for (binary, times) in binaries.iter().zip(times) {
        let min = times.iter().copied().fold(f64::INFINITY, f64::min);
        let max = times.iter().copied().fold(0.0, f64::max);
        let which = if binaries.len() > 1 {
            format!(" ({})", binary.display())
        } else {
            String::new()
        };
        println!(
            "{name:<10} scorecard {:.3} s median (min {min:.3}, max {max:.3}); {events} events{which}",
            median(times)
        );
    }
    events
}

fn main() {
    let from = slatrack::time::parse_date("2025-09-08").expect("date");
    let t = Instant::now();
    let data = rows(from);
    let n: usize = data.iter().map(|(_, b)| b.len()).sum();
    println!(
        "{n} rows ({} for globex), built in {:.1} s",
        5 * (35 * 24 + 35 * 1440),
        t.elapsed().as_secs_f64()
    );

    let mut dir = tempfile::tempdir().expect("dir");
    if std::env::var_os("SLATRACK_BENCH_KEEP").is_some() {
        dir.disable_cleanup(true);
        println!("kept: {}", dir.path().display());
    }
    let sqlite = dir.path().join("read.db");
    let t = Instant::now();
    write_rows(
        &mut slatrack::store::SqliteStore::open(&sqlite).expect("sqlite"),
        &data,
    );
    println!("sqlite     written in {:.1} s", t.elapsed().as_secs_f64());

    let pg = postgres::Postgres::start();
    pg.create_db("bench");
    let url = pg.url("bench");
    let t = Instant::now();
    write_rows(
        &mut slatrack::store::PgStore::open(pg.target("bench")).expect("pg"),
        &data,
    );
    pg.psql("bench", "ANALYZE");
    println!("postgres   written in {:.1} s", t.elapsed().as_secs_f64());

    let binaries = binaries();
    let e_pg = measure("postgres", &url, None, &binaries);
    let e_sqlite = measure("sqlite", &sqlite.to_string_lossy(), None, &binaries);
    assert_eq!(e_pg, e_sqlite, "the stores agree");
}
