//! Backlog: records/s when 10 % of the records arrive an hour late (corrections of closed
//! buckets, resolved at each commit against the SQLite store's key sets), against the same
//! records all on time, in one run; and what the correction horizon costs in memory and
//! on disk.
//!
//! Both cases run the live path's pipeline (decode from protobuf bytes, aggregate, commit
//! every 5,000 records with dedup rows and checkpoint) into a SQLite store in a temporary
//! directory, interleaved run by run so machine noise hits both alike.
//!
//! Run: `cargo bench --bench backlog` (min/median/max of 5 runs per case).

use slatrack::codec::Format;
use slatrack::config::Config;
use slatrack::pipeline::Pipeline;
use slatrack::store::SqliteStore;
use slatrack::synthetic::{pilot, Rng};
use slatrack::time::MICROS_PER_HOUR;
use std::sync::Arc;
use std::time::Instant;

const COMMIT_EVERY: usize = 5_000;

fn records(late_pct: u64) -> Vec<Vec<u8>> {
    let start = slatrack::time::parse_date("2025-10-01").expect("date");
    // 12 hours at ≈ 14 records/s: a partition's share of a busy topic.
    let evs = pilot(42, "globex", start, 12 * MICROS_PER_HOUR, 600_000);
    let mut rng = Rng::new(7);
    let mut keyed: Vec<(i64, usize)> = evs
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let delay = if rng.below(100) < late_pct {
                MICROS_PER_HOUR
            } else {
                0
            };
            (e.completed_at + delay, i)
        })
        .collect();
    keyed.sort_by_key(|k| *k);
    keyed
        .into_iter()
        .map(|(_, i)| slatrack::codec::protobuf::encode(&evs[i]))
        .collect()
}

struct Outcome {
    ns_per_record: f64,
    corrected: u64,
    cache_keys: usize,
    closed_key_bytes: u64,
    store_bytes: u64,
}

fn run(config: &Arc<Config>, input: &[Vec<u8>]) -> Outcome {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("bench.db");
    let mut store = SqliteStore::open(&path).expect("store");
    let now = slatrack::time::now_micros();
    let (mut p, _) = Pipeline::resume(
        config.clone(),
        Format::Protobuf,
        Pipeline::bounds(config),
        &mut store,
        "kafka:bench/0",
    )
    .expect("resume");
    let t = Instant::now();
    for (i, r) in input.iter().enumerate() {
        p.process(r, now);
        if (i + 1) % COMMIT_EVERY == 0 {
            p.commit(&mut store, "kafka:bench/0", i as i64 + 1)
                .expect("commit");
        }
    }
    p.commit(&mut store, "kafka:bench/0", input.len() as i64)
        .expect("commit");
    let ns = t.elapsed().as_nanos() as f64 / input.len() as f64;
    let closed_key_bytes = store.closed_key_bytes().expect("size");
    drop(store);
    let store_bytes = ["", "-wal"]
        .iter()
        .map(|s| std::fs::metadata(format!("{}{s}", path.display())).map_or(0, |m| m.len()))
        .sum();
    Outcome {
        ns_per_record: ns,
        corrected: p.shard.tally.corrected,
        cache_keys: p.key_cache_len(),
        closed_key_bytes,
        store_bytes,
    }
}

fn median(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    (v[0], v[v.len() / 2], v[v.len() - 1])
}

fn main() {
    let runs: usize = std::env::var("SLATRACK_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let config = Arc::new(Config::default());
    let on_time = records(0);
    let backlog = records(10);
    let (mut a, mut b) = (Vec::new(), Vec::new());
    let mut last = None;
    for _ in 0..runs {
        a.push(run(&config, &on_time).ns_per_record);
        let o = run(&config, &backlog);
        b.push(o.ns_per_record);
        last = Some(o);
    }
    let (amin, amed, amax) = median(a);
    let (bmin, bmed, bmax) = median(b);
    println!(
        "records: {} per case, commit every {COMMIT_EVERY}",
        on_time.len()
    );
    println!("all on time           {amin:>8.0} {amed:>8.0} {amax:>8.0} ns/record   {:>8.0} records/s (median)", 1e9 / amed);
    println!("10 % an hour late     {bmin:>8.0} {bmed:>8.0} {bmax:>8.0} ns/record   {:>8.0} records/s (median)", 1e9 / bmed);
    println!("backlog / on time (records/s): {:.2}", amed / bmed);
    if let Some(o) = last {
        println!(
            "corrections counted: {}; closed-bucket keys cached at the end: {} (≈ {} KiB)",
            o.corrected,
            o.cache_keys,
            o.cache_keys * 20 / 1024
        );
        println!(
            "closed_keys on disk: {} bytes = {:.1} bytes per record; store file {:.1} bytes per record",
            o.closed_key_bytes,
            o.closed_key_bytes as f64 / backlog.len() as f64,
            o.store_bytes as f64 / backlog.len() as f64
        );
    }
}
