//! The store contract, run against every store of record: a SQLite file and a real
//! PostgreSQL server (Debian's, started on 127.0.0.1 by `support/postgres.rs`). Each test
//! drives a store through the live path's own interface ([`PartitionStore`]) with one
//! sequence — closed buckets, corrections, closed-bucket keys, rejects, checkpoints with
//! fencing, folding of rows older than `store.minute_retention` — and checks what a
//! scorecard reads back against figures counted here from the raw records, independently
//! of the engine and the stores. The same sequence then gives the same scorecard JSON on
//! every store.
//!
//! Data is dated 70 days back (rows that fold) and today (rows that do not). Built with
//! `--features integration` (scripts/test-all.sh), which provides the PostgreSQL server.
#![cfg(feature = "integration")]

#[path = "support/postgres.rs"]
mod postgres;

use postgres::Postgres;
use slatrack::config::Config;
use slatrack::engine::correction::Correction;
use slatrack::engine::{ClosedBucket, KeyInfo, Stats};
use slatrack::event::{DeliveryEvent, Direction, Outcome, RejectReason};
use slatrack::store::checkpoint::pack;
use slatrack::store::{
    open, Access, ClosedKeys, Location, PartitionCommit, PartitionStore, RejectRow, StoreError,
};
use slatrack::time::{Micros, MICROS_PER_DAY, MICROS_PER_HOUR, MICROS_PER_MIN};
use std::sync::Arc;

const TENANT: &str = "globex";
const TARGET_MS: u64 = 500;

/// One store of record under test, with what keeps it alive.
struct Under {
    name: &'static str,
    location: Location,
    _dir: tempfile::TempDir,
    _pg: Option<Postgres>,
}

/// Every store of record, empty.
fn stores() -> Vec<Under> {
    let dir = tempfile::tempdir().expect("dir");
    let sqlite = Location::Sqlite(dir.path().join("contract.db"));
    let pg = Postgres::start();
    pg.create_db("contract");
    let location = Location::parse(&pg.url("contract")).expect("postgres url");
    vec![
        Under {
            name: "sqlite",
            location: sqlite,
            _dir: dir,
            _pg: None,
        },
        Under {
            name: "postgres",
            location,
            _dir: tempfile::tempdir().expect("dir"),
            _pg: Some(pg),
        },
    ]
}

/// One shared key per platform, as a shard hands out (a commit's rows merge per key).
fn key(platform: &str) -> Arc<KeyInfo> {
    static KEYS: std::sync::Mutex<Vec<Arc<KeyInfo>>> = std::sync::Mutex::new(Vec::new());
    let mut keys = KEYS.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(k) = keys.iter().find(|k| &*k.platform == platform) {
        return k.clone();
    }
    let k = Arc::new(KeyInfo {
        tenant: TENANT.into(),
        platform: platform.into(),
        direction: Direction::Outbound,
        target_latency_us: TARGET_MS * 1000,
    });
    keys.push(k.clone());
    k
}

/// A record of one attempt completing at `at`, `latency_ms` after it started (and was
/// enqueued); every seventh is a failed second attempt.
fn record(n: u64, platform: &str, at: Micros, latency_ms: u64) -> DeliveryEvent {
    let failed = n % 7 == 3;
    DeliveryEvent {
        event_id: format!("e{n}"),
        tenant: TENANT.into(),
        platform: platform.into(),
        direction: Direction::Outbound,
        attempt: if failed { 2 } else { 1 },
        max_attempts: 3,
        outcome: if failed {
            Outcome::Failed
        } else {
            Outcome::Delivered
        },
        enqueued_at: at - latency_ms as i64 * 1000,
        started_at: at - latency_ms as i64 * 1000,
        completed_at: at,
        http_status: None,
        error: None,
    }
}

/// Figures counted from raw records, without the engine: what a scorecard must read.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Truth {
    attempts: u64,
    events: u64,
    failed: u64,
    on_time: u64,
    retried: u64,
    latency_sum_us: u64,
}

impl Truth {
    fn of(records: &[DeliveryEvent]) -> Truth {
        let mut t = Truth::default();
        for r in records {
            let latency_us = (r.completed_at - r.started_at) as u64;
            t.attempts += 1;
            t.events += 1; // every record here is terminal
            t.failed += u64::from(r.outcome == Outcome::Failed);
            t.retried += u64::from(r.attempt > 1);
            t.on_time +=
                u64::from(r.outcome == Outcome::Delivered && latency_us <= TARGET_MS * 1000);
            t.latency_sum_us += latency_us;
        }
        t
    }

    /// A store's summed counters, in the same terms.
    fn of_stats(s: &Stats) -> Truth {
        let c = s.counters;
        Truth {
            attempts: c.attempts,
            events: c.events,
            failed: c.failed,
            on_time: c.on_time,
            retried: c.retried,
            latency_sum_us: c.latency_sum_us,
        }
    }
}

/// A closed bucket of `width` holding `records` (each recorded once).
fn bucket(platform: &str, start: Micros, width: Micros, records: &[DeliveryEvent]) -> ClosedBucket {
    let k = key(platform);
    let mut stats = Stats::default();
    for r in records {
        stats.record(r, k.target_latency_us);
    }
    ClosedBucket {
        key: k,
        start,
        width_us: width,
        stats,
    }
}

/// A partition commit with only the given parts, queueing its windows when `publish`.
#[allow(clippy::too_many_arguments)]
fn commit(
    s: &mut dyn PartitionStore,
    expected: Option<i64>,
    next_offset: i64,
    buckets: &[ClosedBucket],
    corrections: &[Correction],
    closed_keys: &[ClosedKeys],
    rejects: &[RejectRow<'_>],
    publish: bool,
) -> Result<(), StoreError> {
    s.commit(&PartitionCommit {
        source: "deliveries/0",
        expected,
        next_offset,
        state: b"opaque shard state",
        output: slatrack::store::CommitOutput {
            buckets,
            corrections,
            closed_keys,
            grain: &slatrack::store::rows::RowGrain::from_config(&Default::default()),
        },
        keys_before: 0,
        unread: None,
        rejects,
        dedup: &slatrack::store::checkpoint::DedupRows {
            replace: false,
            before: i64::MIN,
            buckets: Vec::new(),
        },
        publish,
    })
}

/// What the store gives a scorecard for `[from, to)`: summed counters, and the merged
/// latencies.
fn read(location: &Location, from: Micros, to: Micros) -> (Truth, Stats) {
    let s = open(location, Access::ReadOnly).expect("open for reading");
    let mut merged = Stats::default();
    for b in s.buckets(TENANT, from, to).expect("buckets") {
        merged.merge(&b.stats);
    }
    (Truth::of_stats(&merged), merged)
}

fn scorecard_json(location: &Location, from: Micros, to: Micros) -> serde_json::Value {
    let s = open(location, Access::ReadOnly).expect("open for reading");
    let sc = slatrack::scorecard::build_at(
        &*s,
        Arc::new(Config::default()),
        &slatrack::contract::Contracts::default(),
        TENANT,
        from,
        to,
        to + MICROS_PER_DAY,
    )
    .expect("scorecard");
    let mut v = slatrack::scorecard::json::render(&sc);
    // The store is named in the report; everything else must be equal.
    if let Some(o) = v.as_object_mut() {
        o.remove("store");
    }
    v
}

/// Records of `platform` every `step` from `from` to `to`, numbered from `n`.
fn records(
    n: &mut u64,
    platform: &str,
    from: Micros,
    to: Micros,
    step: Micros,
) -> Vec<DeliveryEvent> {
    let mut out = Vec::new();
    let mut at = from;
    while at < to {
        *n += 1;
        out.push(record(*n, platform, at, 40 + (*n * 37) % 900));
        at += step;
    }
    out
}

/// Minute buckets of the records, one per minute that has any.
fn minute_buckets(platform: &str, rs: &[DeliveryEvent]) -> Vec<ClosedBucket> {
    let mut by_minute: std::collections::BTreeMap<Micros, Vec<DeliveryEvent>> = Default::default();
    for r in rs {
        by_minute
            .entry(r.completed_at.div_euclid(MICROS_PER_MIN) * MICROS_PER_MIN)
            .or_default()
            .push(r.clone());
    }
    by_minute
        .into_iter()
        .map(|(m, rs)| bucket(platform, m, MICROS_PER_MIN, &rs))
        .collect()
}

/// The sequence every store runs, for a day starting at `day`: a backfill commit that
/// closes hours of minutes per key (written as rows spanning hours), a live-like commit
/// of single minutes, corrections into buckets inside those rows and into a folded hour,
/// folding, and folding again. Returns the records counted.
fn backfill_corrections_and_folding(under: &Under, day: Micros) -> Vec<DeliveryEvent> {
    let mut s = open(&under.location, Access::Create).expect("open");
    let mut n = 0;
    let mut all = Vec::new();

    // A backfill: 10:05..15:30 of two platforms in one commit.
    let mut buckets = Vec::new();
    for p in ["workday", "benevity"] {
        let rs = records(
            &mut n,
            p,
            day + 10 * MICROS_PER_HOUR + 5 * MICROS_PER_MIN,
            day + 15 * MICROS_PER_HOUR + 30 * MICROS_PER_MIN,
            97 * 1_000_000,
        );
        buckets.extend(minute_buckets(p, &rs));
        all.extend(rs);
    }
    commit(&mut *s, None, 1_000, &buckets, &[], &[], &[], false).expect("backfill commit");

    // Then one minute per commit, as live traffic closes them.
    let mut next = 1_000;
    for m in 0..5 {
        let at = day + 16 * MICROS_PER_HOUR + m * MICROS_PER_MIN;
        let rs = records(&mut n, "workday", at, at + MICROS_PER_MIN, 13 * 1_000_000);
        commit(
            &mut *s,
            Some(next),
            next + 10,
            &minute_buckets("workday", &rs),
            &[],
            &[],
            &[],
            false,
        )
        .expect("live commit");
        next += 10;
        all.extend(rs);
    }

    // Corrections: into a minute inside the backfill's row, and into a minute of its own.
    let late = vec![
        record(
            9_001,
            "workday",
            day + 10 * MICROS_PER_HOUR + 7 * MICROS_PER_MIN + 1,
            120,
        ),
        record(
            9_002,
            "workday",
            day + 10 * MICROS_PER_HOUR + 7 * MICROS_PER_MIN + 2,
            900,
        ),
        record(
            9_003,
            "benevity",
            day + 16 * MICROS_PER_HOUR + 2 * MICROS_PER_MIN + 3,
            80,
        ),
    ];
    let corrections: Vec<Correction> = late
        .iter()
        .map(|r| Correction {
            bucket: bucket(
                &r.platform,
                r.completed_at.div_euclid(MICROS_PER_MIN) * MICROS_PER_MIN,
                MICROS_PER_MIN,
                std::slice::from_ref(r),
            ),
        })
        .collect();
    commit(
        &mut *s,
        Some(next),
        next + 3,
        &[],
        &corrections,
        &[],
        &[],
        false,
    )
    .expect("corrections");
    next += 3;
    all.extend(late);

    let truth = Truth::of(&all);
    let (from, to) = (day, day + MICROS_PER_DAY);
    assert_eq!(
        read(&under.location, from, to).0,
        truth,
        "{}: before folding",
        under.name
    );

    // Fold everything older than the default retention, a day per call, until done.
    let retention = slatrack::time::now_micros() - 35 * MICROS_PER_DAY;
    while s.fold_before(retention, 2).expect("fold").more {}
    assert_eq!(
        read(&under.location, from, to).0,
        truth,
        "{}: after folding",
        under.name
    );
    let f = s.fold_before(retention, 10).expect("fold again");
    assert_eq!(f.rows, 0, "{}: nothing left to fold", under.name);
    assert_eq!(
        read(&under.location, from, to).0,
        truth,
        "{}: folded twice",
        under.name
    );

    // A correction into an hour that folded, then folding again.
    let later = record(
        9_004,
        "workday",
        day + 11 * MICROS_PER_HOUR + 30 * MICROS_PER_MIN,
        300,
    );
    let c = Correction {
        bucket: bucket(
            "workday",
            later.completed_at.div_euclid(MICROS_PER_MIN) * MICROS_PER_MIN,
            MICROS_PER_MIN,
            std::slice::from_ref(&later),
        ),
    };
    commit(&mut *s, Some(next), next + 1, &[], &[c], &[], &[], false).expect("late correction");
    all.push(later);
    while s.fold_before(retention, 2).expect("fold").more {}
    let truth = Truth::of(&all);
    let (got, merged) = read(&under.location, from, to);
    assert_eq!(
        got, truth,
        "{}: a correction into a folded hour",
        under.name
    );
    let mut expect = Stats::default();
    for r in &all {
        expect.record(r, TARGET_MS * 1000);
    }
    assert_eq!(
        merged.latency.len(),
        expect.latency.len(),
        "{}: latencies",
        under.name
    );
    for q in [500, 950, 990] {
        assert_eq!(
            merged.quantile_ms(q),
            expect.quantile_ms(q),
            "{}: P{q}",
            under.name
        );
    }
    all
}

/// The sequence on every store for the day starting at `day`; the stores' scorecards of
/// that day are equal.
fn every_store_gives_the_same_scorecard(day: Micros) {
    let stores = stores();
    let mut cards = Vec::new();
    for under in &stores {
        backfill_corrections_and_folding(under, day);
        cards.push(scorecard_json(&under.location, day, day + MICROS_PER_DAY));
    }
    assert_eq!(cards[0], cards[1], "sqlite and postgres scorecards");
}

#[test]
fn old_data_folds_exactly_and_every_store_gives_the_same_scorecard() {
    every_store_gives_the_same_scorecard(days_ago(70));
}

#[test]
fn todays_data_is_exact_and_every_store_gives_the_same_scorecard() {
    // Yesterday's rows are within the retention: folding leaves them, the figures hold.
    every_store_gives_the_same_scorecard(days_ago(1));
}

/// The tenant's rejects of the day starting at `day`, by reason.
fn rejects_of(location: &Location, day: Micros) -> Vec<(RejectReason, u64)> {
    open(location, Access::ReadOnly)
        .expect("read")
        .rejects(TENANT, day, day + MICROS_PER_DAY)
        .expect("rejects")
}

/// The start of the UTC day `n` days before today.
fn days_ago(n: i64) -> Micros {
    (slatrack::time::now_micros() - n * MICROS_PER_DAY).div_euclid(MICROS_PER_DAY) * MICROS_PER_DAY
}

#[test]
fn a_second_owner_is_fenced_and_a_resumed_one_continues() {
    let day = days_ago(70);
    for under in stores() {
        let mut a = open(&under.location, Access::Create).expect("open a");
        let mut b = open(&under.location, Access::Create).expect("open b");
        let mut n = 0;
        let rs = records(
            &mut n,
            "goodera",
            day + MICROS_PER_HOUR,
            day + 2 * MICROS_PER_HOUR,
            60 * 1_000_000,
        );
        let buckets = minute_buckets("goodera", &rs);
        commit(&mut *a, None, 500, &buckets, &[], &[], &[], false).expect("first owner");
        // The second owner restored nothing (it started with no checkpoint), so it is refused.
        let e =
            commit(&mut *b, None, 500, &buckets, &[], &[], &[], false).expect_err("second owner");
        assert!(
            matches!(
                e,
                StoreError::Superseded {
                    found: Some(500),
                    ..
                }
            ),
            "{}: {e}",
            under.name
        );
        let e = commit(&mut *b, Some(400), 600, &buckets, &[], &[], &[], false)
            .expect_err("stale owner");
        assert!(
            matches!(e, StoreError::Superseded { .. }),
            "{}: {e}",
            under.name
        );
        assert_eq!(
            read(&under.location, day, day + MICROS_PER_DAY).0,
            Truth::of(&rs),
            "{}: counted once",
            under.name
        );

        // A resumed owner reads the checkpoint it must continue from.
        drop(a);
        let mut resumed = open(&under.location, Access::Create).expect("reopen");
        let c = resumed
            .checkpoint("deliveries/0")
            .expect("read")
            .expect("a checkpoint");
        assert_eq!(
            (c.next_offset, c.state.as_slice()),
            (500, &b"opaque shard state"[..]),
            "{}",
            under.name
        );
        commit(&mut *resumed, Some(500), 700, &[], &[], &[], &[], false).expect("resumed commit");
    }
}

#[test]
fn closed_keys_and_rejects_are_kept_once() {
    let day = days_ago(70);
    for under in stores() {
        let mut s = open(&under.location, Access::Create).expect("open");
        let start = day + 3 * MICROS_PER_HOUR;
        let keys: Vec<u128> = (1..=5u128).map(|k| k << 64 | k).collect();
        let more: Vec<u128> = (6..=7u128).map(|k| k << 64 | k).collect();
        let closed = [
            ClosedKeys {
                start,
                keys: pack(&keys),
            },
            ClosedKeys {
                start,
                keys: pack(&more),
            },
        ];
        let rejects = [RejectRow {
            tenant: TENANT,
            platform: "workday",
            bucket: start,
            reason: RejectReason::TooLate,
            count: 3,
        }];
        commit(&mut *s, None, 10, &[], &[], &closed, &rejects, false).expect("commit");
        commit(&mut *s, Some(10), 20, &[], &[], &[], &rejects, false).expect("commit");
        let mut got = s.closed_keys("deliveries/0", start).expect("closed keys");
        got.sort_unstable();
        assert_eq!(got, [keys.clone(), more.clone()].concat(), "{}", under.name);
        let r = rejects_of(&under.location, day);
        assert_eq!(r, vec![(RejectReason::TooLate, 6)], "{}", under.name);
        // A fenced commit adds nothing.
        assert!(commit(&mut *s, Some(10), 30, &[], &[], &[], &rejects, false).is_err());
        let r = rejects_of(&under.location, day);
        assert_eq!(
            r,
            vec![(RejectReason::TooLate, 6)],
            "{}: after a fenced commit",
            under.name
        );
    }
}

/// A backfill's commit closes hours of buckets at once; the store keeps their keys in
/// blocks (`store::key_blocks`). Every bucket reads back exactly its keys — its set and
/// each later correction's — and a bucket whose every block is past the horizon is gone.
#[test]
fn a_backfills_keys_read_back_per_bucket_and_leave_with_the_horizon() {
    let start = days_ago(3);
    let at = |i: i64| start + i * MICROS_PER_MIN;
    let keys_of = |i: i64, from: u128, n: u128| -> Vec<u128> {
        (from + 1..=from + n)
            .map(|k| (i as u128) << 80 | k << 64 | k)
            .collect()
    };
    let sets: Vec<ClosedKeys> = (0..150)
        .map(|i| ClosedKeys {
            start: at(i),
            keys: pack(&keys_of(i, 0, 3)),
        })
        .collect();
    let later = [5, 100].map(|i| ClosedKeys {
        start: at(i),
        keys: pack(&keys_of(i, 10, 2)),
    });
    let want = |i: i64| {
        let mut k = keys_of(i, 0, 3);
        if i == 5 || i == 100 {
            k.extend(keys_of(i, 10, 2));
        }
        k.sort_unstable();
        k
    };
    for under in stores() {
        let mut s = open(&under.location, Access::Create).expect("open");
        let commit_keys =
            |s: &mut dyn PartitionStore, expected, next, closed: &[ClosedKeys], keys_before| {
                s.commit(&PartitionCommit {
                    source: "deliveries/0",
                    expected,
                    next_offset: next,
                    state: b"state",
                    output: slatrack::store::CommitOutput {
                        buckets: &[],
                        corrections: &[],
                        closed_keys: closed,
                        grain: &slatrack::store::rows::RowGrain::from_config(&Default::default()),
                    },
                    keys_before,
                    unread: None,
                    rejects: &[],
                    dedup: &slatrack::store::checkpoint::DedupRows {
                        replace: false,
                        before: i64::MIN,
                        buckets: Vec::new(),
                    },
                    publish: false,
                })
                .expect("commit");
            };
        commit_keys(&mut *s, None, 10, &sets, 0);
        commit_keys(&mut *s, Some(10), 20, &later, 0);
        for i in 0..150 {
            let mut got = s.closed_keys("deliveries/0", at(i)).expect("keys");
            got.sort_unstable();
            assert_eq!(got, want(i), "{}: bucket {i}", under.name);
        }
        assert!(s
            .closed_keys("deliveries/0", at(150))
            .expect("keys")
            .is_empty());
        let horizon = 90;
        commit_keys(&mut *s, Some(20), 30, &[], at(horizon));
        for i in 0..150 {
            let mut got = s.closed_keys("deliveries/0", at(i)).expect("keys");
            got.sort_unstable();
            if i >= horizon {
                assert_eq!(
                    got,
                    want(i),
                    "{}: bucket {i} within the horizon",
                    under.name
                );
            } else if at(i) + slatrack::store::key_blocks::BLOCK_SPAN <= at(horizon) {
                assert!(
                    got.is_empty(),
                    "{}: bucket {i} past the horizon",
                    under.name
                );
            }
        }
    }
}

#[test]
fn windows_are_queued_with_their_commit_numbered_once_and_dequeued_once_published() {
    let day = days_ago(70);
    for under in stores() {
        let mut s = open(&under.location, Access::Create).expect("open");
        let mut n = 0;
        let rs = records(
            &mut n,
            "workday",
            day + MICROS_PER_HOUR,
            day + MICROS_PER_HOUR + 3 * MICROS_PER_MIN,
            30 * 1_000_000,
        );
        let buckets = minute_buckets("workday", &rs);
        commit(&mut *s, None, 10, &buckets, &[], &[], &[], true).expect("commit");
        // A fenced-out owner's commit queues nothing.
        commit(&mut *s, None, 10, &buckets, &[], &[], &[], true).expect_err("fenced");
        let late = [record(999, "workday", day + MICROS_PER_HOUR, 40)];
        let correction = Correction {
            bucket: bucket("workday", day + MICROS_PER_HOUR, MICROS_PER_MIN, &late),
        };
        commit(
            &mut *s,
            Some(10),
            20,
            &[],
            std::slice::from_ref(&correction),
            &[],
            &[],
            true,
        )
        .expect("correction");

        let queued = s.queued_windows(100).expect("queued");
        let seqs: Vec<i64> = queued.iter().map(|w| w.seq).collect();
        // The first commit's minutes of one day are one row; then the correction.
        assert_eq!(seqs, vec![1, 2], "{}", under.name);
        let mut sum = Stats::default();
        for w in &queued {
            assert_eq!(w.source, "deliveries/0");
            let (source, b, is_correction) =
                slatrack::codec::window::decode(&w.summary).expect("a WindowSummary");
            assert_eq!(source, "deliveries/0");
            assert_eq!(is_correction, w.seq == 2, "{}", under.name);
            sum.merge(&b.stats);
        }
        let mut all = rs.clone();
        all.extend(late);
        assert_eq!(Truth::of_stats(&sum), Truth::of(&all), "{}", under.name);

        // Published windows leave the queue; numbering goes on, never reusing a key.
        s.dequeue_windows("deliveries/0", 2).expect("dequeue");
        assert!(s.queued_windows(100).expect("queued").is_empty());
        commit(&mut *s, Some(20), 30, &buckets[..1], &[], &[], &[], true).expect("commit");
        let again: Vec<i64> = s
            .queued_windows(100)
            .expect("queued")
            .iter()
            .map(|w| w.seq)
            .collect();
        assert_eq!(again, vec![3], "{}", under.name);
    }
}
