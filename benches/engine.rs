//! Engine floor: decode + validate + aggregate from protobuf bytes on one core, against
//! prost decode alone on the same bytes, in the same run (ratios survive machine noise).
//! JSON is measured too (reported, no target).
//!
//! Run: `cargo bench --bench engine` (prints min/median/max of 7 runs per case).

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

/// Records per chunk of [`interleaved`]: ≈ 10–30 ms of work, and ≈ 6 MB of input, past
/// L2, so neither side finds the other's input still in cache.
const CHUNK: usize = 50_000;

/// One case over one chunk of records; returns the records it counted.
type ChunkFn<'a> = dyn FnMut(&[Vec<u8>]) -> usize + 'a;

/// Case `a` (stateless, over chunks of `records`) and case `b` (stateful across the
/// chunks of a round, `end` closing it) timed alternately a chunk at a time: `b` on chunk
/// `c`, `a` on the chunk half a round away (so `a` never warms `b`'s input, nor the
/// reverse). A slow spell of this shared machine longer than a chunk then slows both
/// alike; alternating whole runs (the method until session 7) let spells of seconds skew
/// a round. Returns the median ns per record of each, and min / median / max over the
/// rounds of `b`'s throughput as a fraction of `a`'s.
fn interleaved(
    records: &[Vec<u8>],
    (name_a, a): (&str, &mut ChunkFn),
    (name_b, b): (&str, &mut ChunkFn),
    end: &mut dyn FnMut(),
) -> (f64, f64, (f64, f64, f64)) {
    let (sa, sb) = (selected(name_a), selected(name_b));
    let chunks: Vec<&[Vec<u8>]> = records.chunks(CHUNK).collect();
    let n = records.len() as f64;
    let (mut ta, mut tb, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..runs() {
        let (mut na, mut nb) = (0u128, 0u128);
        for c in 0..chunks.len() {
            // A case filter that selects one of the two runs only that one (profiling).
            if sb {
                let t = Instant::now();
                black_box(b(chunks[c]));
                nb += t.elapsed().as_nanos();
            }
            if sa {
                let t = Instant::now();
                black_box(a(chunks[(c + chunks.len() / 2) % chunks.len()]));
                na += t.elapsed().as_nanos();
            }
        }
        end();
        let (x, y) = (na as f64 / n, nb as f64 / n);
        ta.push(if sa { x } else { f64::NAN });
        tb.push(if sb { y } else { f64::NAN });
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
/// and their key sets drained after every record (as `replay` and the service do).
/// Returns records counted.
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
        black_box(p.shard.take_closed_keys());
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
        events.extend(slatrack::synthetic::pilot(
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

    // The floor: prost alone and the whole path, interleaved a chunk at a time (see
    // `interleaved`).
    let mut scratch = slatrack::proto::DeliveryEvent::default();
    let p = std::cell::RefCell::new(None);
    let (decode, full, floor) = interleaved(
        &pb,
        (
            "prost decode only (reused message)",
            &mut |chunk: &[Vec<u8>]| {
                let mut ok = 0;
                for b in chunk {
                    // The same machine code as the path's decode (see `merge_reused`).
                    if slatrack::codec::protobuf::merge_reused(&mut scratch, b).is_ok() {
                        ok += 1;
                    }
                    black_box(&scratch);
                }
                ok
            },
        ),
        (
            "protobuf decode+validate+aggregate",
            &mut |chunk: &[Vec<u8>]| {
                let mut p = p.borrow_mut();
                let p = p
                    .get_or_insert_with(|| Pipeline::new(config.clone(), Format::Protobuf, bounds));
                let (mut counted, mut closed) = (0, 0);
                for b in chunk {
                    if p.process(b, now) == Verdict::Counted {
                        counted += 1;
                    }
                    closed += p.shard.take_closed().len();
                    // The live path hands these to the store at its next commit.
                    black_box(p.shard.take_closed_keys());
                }
                assert_eq!(counted, chunk.len(), "every record counted");
                black_box(closed);
                counted
            },
        ),
        &mut || {
            // End of a round: the pipeline's last buckets close, and the next round
            // starts from an empty one.
            if let Some(mut p) = p.borrow_mut().take() {
                p.shard.flush();
                black_box(p.shard.take_closed().len());
            }
        },
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
            black_box(shard.take_closed_keys());
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
                            black_box(p.shard.take_closed_keys());
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
