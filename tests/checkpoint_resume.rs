//! Exactly-once effect: a shard checkpointed at any record, restored from the bytes and
//! fed the rest of the stream closes exactly the buckets an uninterrupted shard closes.

use proptest::prelude::*;
use slatrack::config::Config;
use slatrack::engine::{ClosedBucket, Shard};
use slatrack::event::DeliveryEvent;
use slatrack::store::{StoreRead, StoreTx as _};
use slatrack::synthetic::{pilot, Rng};
use slatrack::time::{MICROS_PER_HOUR, MICROS_PER_SEC};
use std::sync::Arc;

/// Pilot traffic re-sent at least once: duplicates and disorder within the lateness.
fn stream(seed: u64, events: u64) -> Vec<DeliveryEvent> {
    let start = slatrack::time::parse_date("2025-10-01").unwrap();
    let mut all = pilot(seed, "globex", start, 3 * MICROS_PER_HOUR, events);
    let mut rng = Rng::new(seed ^ 0xdead_beef);
    let dups: Vec<DeliveryEvent> = all.iter().filter(|_| rng.below(10) == 0).cloned().collect();
    all.extend(dups);
    let mut keyed: Vec<(i64, DeliveryEvent)> = all
        .into_iter()
        .map(|e| (e.completed_at + rng.below(50) as i64 * MICROS_PER_SEC, e))
        .collect();
    keyed.sort_by_key(|(t, _)| *t);
    keyed.into_iter().map(|(_, e)| e).collect()
}

fn key(b: &ClosedBucket) -> (String, String, i64) {
    (
        b.key.tenant.to_string(),
        b.key.platform.to_string(),
        b.start,
    )
}

fn run(
    config: &Arc<Config>,
    input: &[DeliveryEvent],
    cut: Option<usize>,
) -> (Vec<ClosedBucket>, slatrack::engine::ShardTally) {
    let mut shard = Shard::new(config.clone());
    let mut out = Vec::new();
    for (i, e) in input.iter().enumerate() {
        if Some(i) == cut {
            let bytes = slatrack::store::checkpoint::encode_inline(&shard, i as i64);
            let (restored, next) = slatrack::store::checkpoint::decode(config.clone(), &bytes)
                .expect("own checkpoint restores");
            assert_eq!(next, i as i64);
            shard = restored;
        }
        shard.ingest(e);
        out.extend(shard.take_closed());
    }
    shard.flush();
    out.extend(shard.take_closed());
    (out, shard.tally)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn resume_from_checkpoint_equals_uninterrupted(seed in 0u64..1_000_000, events in 200u64..1500, cut_frac in 0.0f64..1.0) {
        let config = Arc::new(Config::default());
        let input = stream(seed, events);
        let cut = ((input.len() as f64) * cut_frac) as usize;
        let (want, want_tally) = run(&config, &input, None);
        let (got, got_tally) = run(&config, &input, Some(cut));
        prop_assert_eq!(want_tally, got_tally);
        prop_assert!(want_tally.duplicates > 0);
        prop_assert_eq!(want.len(), got.len());
        for (w, g) in want.iter().zip(&got) {
            prop_assert_eq!(key(w), key(g));
            prop_assert_eq!(&w.stats, &g.stats, "bucket {:?}", key(w));
            prop_assert_eq!(w.key.target_latency_us, g.key.target_latency_us);
        }
    }
}

/// A partition consumed with periodic commits and crashes (state dropped without a
/// commit) at random points, resumed from the store each time: the store ends up exactly
/// as after one uninterrupted pass, rejections included.
#[test]
fn crashes_between_commits_change_nothing_in_the_store() {
    use slatrack::codec::Format;
    use slatrack::pipeline::Pipeline;
    use slatrack::store::SqliteStore;

    let config = Arc::new(Config::default());
    let mut records: Vec<Vec<u8>> = stream(11, 3_000)
        .iter()
        .map(slatrack::codec::protobuf::encode)
        .collect();
    for i in (0..records.len()).step_by(97) {
        records[i] = b"\x0a\x50garbage".to_vec(); // malformed, quarantined by reason
    }
    let bounds = Pipeline::bounds(&config);
    let now = slatrack::time::now_micros();
    let dir = tempfile::tempdir().unwrap();

    let consume = |store: &mut SqliteStore, crash_at: &[usize]| {
        let mut crashes = crash_at.iter().copied().peekable();
        loop {
            let (mut p, next) =
                Pipeline::resume(config.clone(), Format::Protobuf, bounds, store, "kafka:t/0")
                    .unwrap();
            let mut offset = next.unwrap_or(0) as usize;
            let mut crashed = false;
            while offset < records.len() {
                p.process(&records[offset], now);
                offset += 1;
                if crashes.peek() == Some(&offset) {
                    crashes.next();
                    crashed = true; // drop everything since the last commit
                    break;
                }
                if offset.is_multiple_of(250) {
                    p.commit(store, "kafka:t/0", offset as i64).unwrap();
                }
            }
            if !crashed {
                p.shard.flush();
                p.commit(store, "kafka:t/0", offset as i64).unwrap();
                return;
            }
        }
    };
    let mut clean = SqliteStore::open(&dir.path().join("clean.db")).unwrap();
    consume(&mut clean, &[]);
    let mut crashy = SqliteStore::open(&dir.path().join("crashy.db")).unwrap();
    let mut rng = Rng::new(5);
    let mut points: Vec<usize> = (0..7)
        .map(|_| 1 + rng.below(records.len() as u64 - 1) as usize)
        .collect();
    points.sort_unstable();
    points.dedup();
    consume(&mut crashy, &points);

    let (from, to) = (0, i64::MAX / 2);
    let a = clean.buckets("globex", from, to).unwrap();
    let b = crashy.buckets("globex", from, to).unwrap();
    assert!(!a.is_empty());
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(&b) {
        assert_eq!((&x.platform, x.start), (&y.platform, y.start));
        assert_eq!(x.stats, y.stats);
    }
    let rejected = |s: &SqliteStore| {
        let n: u64 = s
            .rejects("", from, to)
            .unwrap()
            .iter()
            .map(|(_, n)| n)
            .sum();
        n
    };
    assert_eq!(rejected(&clean), records.len().div_ceil(97) as u64);
    assert_eq!(rejected(&clean), rejected(&crashy));
}

/// A commit that fails (store read-only) loses nothing: the next successful commit writes
/// the same buckets and rejections an uninterrupted run writes.
#[test]
fn a_failed_commit_keeps_its_buckets_and_rejections_pending() {
    use slatrack::codec::Format;
    use slatrack::pipeline::Pipeline;
    use slatrack::store::SqliteStore;

    let config = Arc::new(Config::default());
    let mut records: Vec<Vec<u8>> = stream(3, 1_000)
        .iter()
        .map(slatrack::codec::protobuf::encode)
        .collect();
    records[10] = b"\x0a\x50garbage".to_vec();
    let bounds = Pipeline::bounds(&config);
    let now = slatrack::time::now_micros();
    let dir = tempfile::tempdir().unwrap();
    let run = |store: &mut SqliteStore, fail_midway: bool| {
        let mut p = Pipeline::new(config.clone(), Format::Protobuf, bounds);
        for (i, r) in records.iter().enumerate() {
            p.process(r, now);
            if i == records.len() / 2 && fail_midway {
                store.set_read_only_for_tests(true);
                assert!(p.commit(store, "kafka:t/0", i as i64 + 1).is_err());
                store.set_read_only_for_tests(false);
            }
        }
        p.shard.flush();
        p.commit(store, "kafka:t/0", records.len() as i64).unwrap();
    };
    let mut a = SqliteStore::open(&dir.path().join("a.db")).unwrap();
    let mut b = SqliteStore::open(&dir.path().join("b.db")).unwrap();
    run(&mut a, false);
    run(&mut b, true);
    let (from, to) = (0, i64::MAX / 2);
    let (x, y) = (
        a.buckets("globex", from, to).unwrap(),
        b.buckets("globex", from, to).unwrap(),
    );
    assert!(!x.is_empty());
    assert_eq!(x.len(), y.len());
    for (p, q) in x.iter().zip(&y) {
        assert_eq!(
            (&p.platform, p.start, &p.stats),
            (&q.platform, q.start, &q.stats)
        );
    }
    assert_eq!(
        a.rejects("", from, to).unwrap(),
        b.rejects("", from, to).unwrap()
    );
    assert_eq!(a.rejects("", from, to).unwrap().len(), 1);
}

/// The SQLite store keeps the dedup keys in rows beside the checkpoint, a row per bucket
/// per commit: after every commit the rows hold exactly the shard's keys, buckets closed
/// since are gone, and a commit that failed leaves its keys to the next one. A restart
/// from the rows then changes nothing, duplicates included.
#[test]
fn dedup_rows_hold_the_shards_keys_across_failed_commits_and_restarts() {
    use slatrack::codec::Format;
    use slatrack::pipeline::Pipeline;
    use slatrack::store::{PartitionStore, SqliteStore};

    let config = Arc::new(Config::default());
    let records: Vec<Vec<u8>> = stream(21, 3_000)
        .iter()
        .map(slatrack::codec::protobuf::encode)
        .collect();
    let bounds = Pipeline::bounds(&config);
    let now = slatrack::time::now_micros();
    let dir = tempfile::tempdir().unwrap();
    let source = "kafka:t/0";
    let stored_keys = |store: &mut SqliteStore| {
        let cp = PartitionStore::checkpoint(store, source).unwrap().unwrap();
        let mut by_bucket: std::collections::BTreeMap<i64, Vec<u128>> = Default::default();
        for (start, keys) in &cp.dedup {
            assert_eq!(keys.len() % 12, 0);
            for c in keys.chunks_exact(12) {
                let hi = u64::from_le_bytes(c[..8].try_into().unwrap());
                let lo = u32::from_le_bytes(c[8..].try_into().unwrap());
                by_bucket
                    .entry(*start)
                    .or_default()
                    .push(u128::from(hi) << 64 | u128::from(lo));
            }
        }
        let mut rows: Vec<(i64, Vec<u128>)> = by_bucket.into_iter().collect();
        for (_, k) in &mut rows {
            k.sort_unstable();
        }
        // Rows beyond one per bucket: buckets written by more than one commit.
        let extra = cp.dedup.len() - rows.len();
        (rows, extra)
    };

    let consume = |store: &mut SqliteStore, faults: bool| -> (u64, u64) {
        let (mut p, _) =
            Pipeline::resume(config.clone(), Format::Protobuf, bounds, store, source).unwrap();
        let (mut failed, mut extra_rows) = (0u64, 0usize);
        let mut restarted = false;
        for (i, r) in records.iter().enumerate() {
            let offset = i + 1;
            if faults && !restarted && offset == 2_000 {
                // Crash: everything since the last commit is dropped, re-read from there.
                restarted = true;
                let (q, next) =
                    Pipeline::resume(config.clone(), Format::Protobuf, bounds, store, source)
                        .unwrap();
                p = q;
                for r in &records[next.unwrap() as usize..=i] {
                    p.process(r, now);
                }
            } else {
                p.process(r, now);
            }
            if offset % 10 == 0 {
                let fail = faults && offset % 70 == 0;
                store.set_read_only_for_tests(fail);
                let ok = p.commit(store, source, offset as i64).is_ok();
                store.set_read_only_for_tests(false);
                assert_eq!(ok, !fail);
                if fail {
                    failed += 1;
                    continue;
                }
                let (rows, n) = stored_keys(store);
                extra_rows = extra_rows.max(n);
                assert_eq!(
                    rows,
                    p.shard.dedup_entries(),
                    "after the commit at {offset}"
                );
            }
        }
        p.shard.flush();
        p.commit(store, source, records.len() as i64).unwrap();
        assert_eq!(
            stored_keys(store).0,
            vec![],
            "every bucket closed: no rows left"
        );
        (failed, extra_rows as u64)
    };
    let mut clean = SqliteStore::open(&dir.path().join("clean.db")).unwrap();
    let mut faulty = SqliteStore::open(&dir.path().join("faulty.db")).unwrap();
    consume(&mut clean, false);
    let (failed, extra_rows) = consume(&mut faulty, true);
    assert!(failed >= 3);
    assert!(
        extra_rows > 0,
        "commits wrote deltas: a bucket's keys in several rows"
    );
    // Failed commits move commit boundaries, and a commit merges the minutes it closes
    // per key and day (`store::rows`), so rows differ; the totals may not.
    let totals = |s: &SqliteStore| {
        let mut t: std::collections::BTreeMap<String, slatrack::engine::Stats> = Default::default();
        for b in s.buckets("globex", 0, i64::MAX / 2).unwrap() {
            t.entry(b.platform).or_default().merge(&b.stats);
        }
        t
    };
    let want = totals(&clean);
    assert!(want.len() >= 4, "{:?}", want.keys());
    assert!(want.values().all(|s| s.counters.events > 0));
    assert_eq!(want, totals(&faulty));
}

/// A SQLite store whose checkpoint carries its dedup keys inline (version 1: written
/// before the keys moved to rows) resumes with those keys, and its next commit replaces
/// whatever rows the store held for the source with the shard's keys.
#[test]
fn an_inline_checkpoint_resumes_and_its_next_commit_rewrites_the_rows() {
    use slatrack::codec::Format;
    use slatrack::pipeline::Pipeline;
    use slatrack::store::{PartitionStore, SqliteStore};

    let config = Arc::new(Config::default());
    let events = stream(8, 800);
    let bounds = Pipeline::bounds(&config);
    let dir = tempfile::tempdir().unwrap();
    let mut store = SqliteStore::open(&dir.path().join("s.db")).unwrap();
    let source = "kafka:t/0";
    let half = events.len() / 2;

    let mut shard = Shard::new(config.clone());
    for e in &events[..half] {
        shard.ingest(e);
    }
    let keys = shard.dedup_entries();
    assert!(!keys.is_empty());
    let inline = slatrack::store::checkpoint::encode_inline(&shard, half as i64);
    {
        let w = store.writer().unwrap();
        w.put_checkpoint(source, 1, half as i64, &inline, 0)
            .unwrap();
        // A stray row (say, of a store restored from a backup): the replace removes it.
        w.put_dedup(
            source,
            &slatrack::store::checkpoint::DedupRows {
                replace: false,
                before: i64::MIN,
                buckets: vec![(0, vec![7; 12])],
            },
        )
        .unwrap();
        w.commit().unwrap();
    }
    let (mut p, next) =
        Pipeline::resume(config.clone(), Format::Protobuf, bounds, &mut store, source).unwrap();
    assert_eq!(next, Some(half as i64));
    assert_eq!(
        p.shard.dedup_entries(),
        keys,
        "restored from the inline keys"
    );
    // A redelivery of the first half is recognised.
    for e in &events[..half] {
        assert_ne!(p.ingest(e), slatrack::pipeline::Verdict::Counted);
    }
    p.commit(&mut store, source, half as i64).unwrap();
    let cp = PartitionStore::checkpoint(&mut store, source)
        .unwrap()
        .unwrap();
    assert_eq!(cp.version, 2);
    assert!(cp.state.len() < inline.len());
    let (q, _) =
        Pipeline::resume(config.clone(), Format::Protobuf, bounds, &mut store, source).unwrap();
    assert_eq!(
        q.shard.dedup_entries(),
        keys,
        "restored from the rows alone"
    );
}
