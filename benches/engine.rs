//! Engine floor: decode + validate + aggregate from protobuf bytes on one core, against
//! prost decode alone on the same bytes, in the same run (ratios survive machine noise).
//! JSON is measured too (reported, no target).
//!
//! Run: `cargo bench --bench engine` (prints min/median/max of 7 runs per case).

use prost::Message;
use slatrack::codec::Format;
use slatrack::config::Config;
use slatrack::pipeline::{Pipeline, Verdict};
use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

/// Runs per case; `SLATRACK_BENCH_RUNS=1` under callgrind (instruction counts repeat).
fn runs() -> usize {
    std::env::var("SLATRACK_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(7)
}

/// `SLATRACK_BENCH_CASE=protobuf` runs only the cases whose name contains it (for
/// profiling one path: `perf record --call-graph dwarf`, or callgrind).
fn selected(name: &str) -> bool {
    std::env::var("SLATRACK_BENCH_CASE").map_or(true, |c| name.contains(&c))
}

fn stats(mut ns: Vec<f64>) -> (f64, f64, f64) {
    ns.sort_by(f64::total_cmp);
    (ns[0], ns[ns.len() / 2], ns[ns.len() - 1])
}

fn report(name: &str, per_event: Vec<f64>) -> f64 {
    let (min, med, max) = stats(per_event);
    println!(
        "{name:<44} {min:>8.1} {med:>8.1} {max:>8.1} ns/event   {:>6.2} M events/s (median)",
        1e3 / med
    );
    med
}

/// ns per event of one run of `f`.
fn time_run(n: usize, f: &mut dyn FnMut() -> usize) -> f64 {
    let t = Instant::now();
    let counted = f();
    let el = t.elapsed().as_nanos() as f64;
    black_box(counted);
    el / n as f64
}

fn measure(name: &str, n: usize, mut f: impl FnMut() -> usize) -> f64 {
    if !selected(name) {
        return f64::NAN;
    }
    let per_event = (0..runs()).map(|_| time_run(n, &mut f)).collect();
    report(name, per_event)
}

/// Two cases run alternately, a run of each per round, so a slow spell of this shared
/// machine hits both alike; the ratio is taken per round (`a / b` of ns per event, i.e.
/// b's throughput over a's) and reported as min / median / max over the rounds.
fn measure_pair(
    n: usize,
    (name_a, mut a): (&str, impl FnMut() -> usize),
    (name_b, mut b): (&str, impl FnMut() -> usize),
) -> (f64, f64, (f64, f64, f64)) {
    let (sa, sb) = (selected(name_a), selected(name_b));
    let (mut ta, mut tb, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..runs() {
        // A case filter that selects one of the two runs only that one (profiling).
        let x = if sa { time_run(n, &mut a) } else { f64::NAN };
        let y = if sb { time_run(n, &mut b) } else { f64::NAN };
        ta.push(x);
        tb.push(y);
        ratios.push(x / y);
    }
    let ra = if sa { report(name_a, ta) } else { f64::NAN };
    let rb = if sb { report(name_b, tb) } else { f64::NAN };
    (ra, rb, stats(ratios))
}

fn main() {
    // The in-process peer comparison (benches/peers/inprocess.py) times the JSON path on
    // its own lines file, the same lines the Python peer reads.
    if let Some(path) = std::env::var_os("SLATRACK_BENCH_JSONL") {
        json_file(std::path::Path::new(&path));
        return;
    }
    let start = slatrack::time::parse_date("2025-09-08").unwrap_or_default();
    // Sparse: ~1.1M records over 4 weeks for 20 tenants (80 keys): about one record per
    // key-minute, so nearly every record opens and closes a bucket — the worst case.
    // Dense: the same volume within 2 hours: ~110 records per key-minute.
    for (label, span) in [
        ("sparse", 28 * slatrack::time::MICROS_PER_DAY),
        ("dense", 2 * slatrack::time::MICROS_PER_HOUR),
    ] {
        // `SLATRACK_BENCH_TRAFFIC=sparse` (or `dense`) runs one of the two (profiling).
        if std::env::var("SLATRACK_BENCH_TRAFFIC").is_ok_and(|t| t != label) {
            continue;
        }
        println!("== {label} traffic");
        bench_case(start, span);
        println!();
    }
}

/// One pass of the JSON path over `lines`: decode, validate, aggregate, closed buckets
/// drained after every record (as `replay` and the service do). Returns records counted.
fn json_pass<'a>(
    config: &Arc<Config>,
    bounds: slatrack::event::TimeBounds,
    now: i64,
    lines: impl Iterator<Item = &'a [u8]>,
) -> usize {
    let mut p = Pipeline::new(config.clone(), Format::Json, bounds);
    let mut counted = 0;
    for l in lines {
        if p.process(l, now) == Verdict::Counted {
            counted += 1;
        }
        black_box(p.shard.take_closed());
    }
    p.shard.flush();
    black_box(p.shard.take_closed());
    counted
}

/// The JSON path (decode, validate, aggregate, closed buckets drained) over a JSON-lines
/// file held in memory.
fn json_file(path: &std::path::Path) {
    let text = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let lines: Vec<&[u8]> = text
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    let n = lines.len();
    let config = Arc::new(Config::default());
    let bounds = Pipeline::bounds(&config);
    let now = slatrack::time::now_micros();
    println!("{n} JSON lines from {}; {} runs", path.display(), runs());
    measure("JSON lines file: decode+validate+aggregate", n, || {
        json_pass(&config, bounds, now, lines.iter().copied())
    });
}

fn bench_case(start: i64, span: i64) {
    let mut events = Vec::new();
    for t in 0..20u64 {
        events.extend(slatrack::source::generator::pilot(
            t,
            &format!("tenant{t:02}"),
            start,
            span,
            50_000,
        ));
    }
    events.sort_by_key(|e| e.completed_at);
    let pb: Vec<Vec<u8>> = events
        .iter()
        .map(slatrack::codec::protobuf::encode)
        .collect();
    let js: Vec<Vec<u8>> = events
        .iter()
        .map(|e| slatrack::codec::json::encode(e).into_bytes())
        .collect();
    let n = events.len();
    let avg_pb = pb.iter().map(Vec::len).sum::<usize>() as f64 / n as f64;
    let avg_js = js.iter().map(Vec::len).sum::<usize>() as f64 / n as f64;
    println!(
        "{n} records, protobuf {avg_pb:.0} B avg, JSON {avg_js:.0} B avg; {} runs each",
        runs()
    );
    println!("{:<44} {:>8} {:>8} {:>8}", "case", "min", "median", "max");

    let config = Arc::new(Config::default());
    let bounds = Pipeline::bounds(&config);
    let now = slatrack::time::now_micros();

    let mut scratch = slatrack::proto::DeliveryEvent::default();
    let (decode, full, floor) = measure_pair(
        n,
        ("prost decode only (reused message)", || {
            let mut ok = 0;
            for b in &pb {
                scratch.clear();
                if scratch.merge(b.as_slice()).is_ok() {
                    ok += 1;
                }
                black_box(&scratch);
            }
            ok
        }),
        ("protobuf decode+validate+aggregate", || {
            let mut p = Pipeline::new(config.clone(), Format::Protobuf, bounds);
            let (mut counted, mut closed) = (0, 0);
            for b in &pb {
                if p.process(b, now) == Verdict::Counted {
                    counted += 1;
                }
                closed += p.shard.take_closed().len();
            }
            p.shard.flush();
            closed += p.shard.take_closed().len();
            assert_eq!(counted, n, "every record counted");
            black_box(closed);
            counted
        }),
    );
    let json = measure("JSON decode+validate+aggregate", n, || {
        json_pass(&config, bounds, now, js.iter().map(Vec::as_slice))
    });
    let mut shard_only = None;
    let agg = measure("aggregate only (validated events)", n, || {
        let mut shard = slatrack::engine::Shard::new(config.clone());
        let mut c = 0;
        for e in &events {
            if shard.ingest(e) == slatrack::engine::Ingest::Counted {
                c += 1;
            }
            black_box(shard.take_closed());
        }
        shard.flush();
        shard_only = Some(shard.take_closed().len());
        c
    });
    // Scaling: the same records split by key over two shards on two threads (what two
    // partitions are in the service), against one shard on one thread.
    let halves: [Vec<&Vec<u8>>; 2] = {
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for (e, bytes) in events.iter().zip(&pb) {
            if e.tenant.bytes().map(u32::from).sum::<u32>() % 2 == 0 {
                a.push(bytes);
            } else {
                b.push(bytes);
            }
        }
        [a, b]
    };
    let two = measure("protobuf path, 2 shards on 2 threads", n, || {
        std::thread::scope(|s| {
            let handles: Vec<_> = halves
                .iter()
                .map(|half| {
                    let config = config.clone();
                    s.spawn(move || {
                        let mut p = Pipeline::new(config, Format::Protobuf, bounds);
                        let mut counted = 0;
                        for b in half {
                            if p.process(b, now) == Verdict::Counted {
                                counted += 1;
                            }
                            black_box(p.shard.take_closed());
                        }
                        counted
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap_or(0)).sum()
        })
    });
    println!();
    println!(
        "ratio  2 shards on 2 threads / 1 shard (throughput):    {:.2}  (ideal 2.00 on 2 idle cores)",
        full / two
    );
    println!(
        "ratio  protobuf path / prost decode alone (throughput): {:.2}  (target >= 0.60; per round min {:.2} max {:.2}; ratio of medians {:.2})",
        floor.1,
        floor.0,
        floor.2,
        decode / full
    );
    println!(
        "ratio  JSON path / protobuf path (throughput):          {:.2}",
        full / json
    );
    println!(
        "share  aggregation of the protobuf path's time:          {:.0}%",
        100.0 * agg / full
    );
}
