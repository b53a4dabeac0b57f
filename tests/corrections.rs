//! Late, backlogged input within the correction horizon: whatever the arrival order, with
//! duplicates among the late records, late copies of on-time records and crashes between
//! commits, the store ends up with exactly what a naive oracle counts.

use proptest::prelude::*;
use slatrack::codec::Format;
use slatrack::config::Config;
use slatrack::engine::Stats;
use slatrack::event::{DeliveryEvent, RejectReason};
use slatrack::pipeline::{Pipeline, Verdict};
use slatrack::store::SqliteStore;
use slatrack::store::StoreRead;
use slatrack::synthetic::{pilot, Rng};
use slatrack::time::{Micros, MICROS_PER_DAY, MICROS_PER_HOUR, MICROS_PER_MIN};
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

const SOURCE: &str = "kafka:t/0";

/// Six hours of pilot traffic; `late_pct` % of it delayed by up to `max_delay` (one
/// producer's backlog), `dup_pct` % re-sent (some copies late, some on time).
fn disordered(
    seed: u64,
    events: u64,
    late_pct: u64,
    dup_pct: u64,
    max_delay: Micros,
) -> Vec<DeliveryEvent> {
    let start = slatrack::time::parse_date("2025-10-01").expect("date");
    let all = pilot(seed, "globex", start, 6 * MICROS_PER_HOUR, events);
    let mut rng = Rng::new(seed ^ 0x5eed);
    let mut keyed: Vec<(Micros, DeliveryEvent)> = Vec::new();
    for e in all {
        let delay = if rng.below(100) < late_pct {
            rng.below(max_delay as u64) as Micros
        } else {
            0
        };
        if rng.below(100) < dup_pct {
            let again = rng.below(max_delay as u64) as Micros;
            keyed.push((e.completed_at + again, e.clone()));
        }
        keyed.push((e.completed_at + delay, e));
    }
    keyed.sort_by_key(|(t, _)| *t);
    keyed.into_iter().map(|(_, e)| e).collect()
}

/// What must be counted: each distinct (event_id, attempt, bucket) once, per
/// (platform, UTC day).
fn oracle(config: &Config, input: &[DeliveryEvent]) -> BTreeMap<(String, i64), Stats> {
    let width = config.engine.bucket.0;
    let mut seen = HashSet::new();
    let mut out: BTreeMap<(String, i64), Stats> = BTreeMap::new();
    for e in input {
        if !seen.insert((
            e.event_id.clone(),
            e.attempt,
            e.completed_at.div_euclid(width),
        )) {
            continue;
        }
        let day = e.completed_at.div_euclid(MICROS_PER_DAY);
        let target = config.targets(&e.platform).latency_target_us as u64;
        out.entry((e.platform.clone(), day))
            .or_default()
            .record(e, target);
    }
    out
}

fn stored(store: &SqliteStore) -> BTreeMap<(String, i64), Stats> {
    let mut out: BTreeMap<(String, i64), Stats> = BTreeMap::new();
    for b in store.buckets("globex", 0, i64::MAX / 2).expect("read") {
        out.entry((b.platform.clone(), b.start.div_euclid(MICROS_PER_DAY)))
            .or_default()
            .merge(&b.stats);
    }
    out
}

fn assert_same(got: &BTreeMap<(String, i64), Stats>, want: &BTreeMap<(String, i64), Stats>) {
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>()
    );
    for (k, w) in want {
        let g = &got[k];
        assert_eq!(g.counters, w.counters, "{k:?}");
        assert_eq!(
            g.latency.to_sparse(),
            w.latency.to_sparse(),
            "{k:?} latencies"
        );
    }
}

/// Consumes `input` as one partition with commits every `every` records and crashes
/// (everything since the last commit dropped, resumed from the store) at `crashes`.
fn consume(
    config: &Arc<Config>,
    store: &mut SqliteStore,
    input: &[DeliveryEvent],
    every: usize,
    crashes: &[usize],
) -> u64 {
    let bounds = Pipeline::bounds(config);
    let mut crashes = crashes.iter().copied().peekable();
    let mut staged = 0;
    loop {
        let (mut p, next) =
            Pipeline::resume(config.clone(), Format::Json, bounds, store, SOURCE).expect("resume");
        let mut offset = next.unwrap_or(0) as usize;
        let mut crashed = false;
        while offset < input.len() {
            if p.ingest(&input[offset]) == Verdict::Staged {
                staged += 1;
            }
            offset += 1;
            if crashes.peek() == Some(&offset) {
                crashes.next();
                crashed = true;
                break;
            }
            if offset.is_multiple_of(every) {
                p.commit(store, SOURCE, offset as i64).expect("commit");
            }
        }
        if !crashed {
            p.shard.flush();
            p.commit(store, SOURCE, offset as i64).expect("commit");
            assert_eq!(
                p.shard.tally.too_late, 0,
                "nothing is older than the horizon"
            );
            return staged;
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]

    /// Disorder up to 90 minutes against 2 minutes of allowed lateness: most late records
    /// are corrections. Duplicates among them and of on-time records, restarts anywhere.
    #[test]
    fn late_records_within_the_horizon_count_exactly_once(
        seed in 0u64..1_000_000,
        events in 300u64..1500,
        late_pct in 1u64..40,
        dup_pct in 0u64..30,
        every in 17usize..400,
        crash_fracs in proptest::collection::vec(0.0f64..1.0, 0..5),
    ) {
        let config = Arc::new(Config::default());
        let input = disordered(seed, events, late_pct, dup_pct, 90 * MICROS_PER_MIN);
        let mut crashes: Vec<usize> = crash_fracs
            .iter()
            .map(|f| 1 + ((input.len() - 1) as f64 * f) as usize)
            .collect();
        crashes.sort_unstable();
        crashes.dedup();
        let dir = tempfile::tempdir().expect("dir");
        let mut store = SqliteStore::open(&dir.path().join("s.db")).expect("store");
        let staged = consume(&config, &mut store, &input, every, &crashes);
        prop_assert!(staged > 0, "the input has corrections");
        assert_same(&stored(&store), &oracle(&config, &input));
    }
}

/// The same events in completion order and with a 15-minute backlog of one platform
/// flushed late give one scorecard (JSON), across commits and crashes.
#[test]
fn a_backlog_gives_the_scorecard_of_the_sorted_events() {
    let config = Arc::new(Config::default());
    let mut sorted = disordered(7, 12_000, 0, 5, 10 * MICROS_PER_MIN);
    sorted.sort_by_key(|e| e.completed_at);
    // Workday's records of a 15-minute stretch are held back and flushed after it.
    let hold_from = sorted[sorted.len() / 3].completed_at;
    let hold_to = hold_from + 15 * MICROS_PER_MIN;
    let (mut held, mut backlog): (Vec<DeliveryEvent>, Vec<DeliveryEvent>) =
        (Vec::new(), Vec::new());
    let mut flushed = false;
    for e in &sorted {
        if !flushed && e.completed_at >= hold_to {
            backlog.append(&mut held);
            flushed = true;
        }
        if e.platform == "workday" && (hold_from..hold_to).contains(&e.completed_at) {
            held.push(e.clone());
        } else {
            backlog.push(e.clone());
        }
    }
    backlog.append(&mut held);
    assert_eq!(backlog.len(), sorted.len());
    let dir = tempfile::tempdir().expect("dir");
    let mut a = SqliteStore::open(&dir.path().join("sorted.db")).expect("store");
    let mut b = SqliteStore::open(&dir.path().join("backlog.db")).expect("store");
    assert_eq!(consume(&config, &mut a, &sorted, 100, &[]), 0);
    let staged = consume(&config, &mut b, &backlog, 100, &[500, 5_100, 5_101, 8_900]);
    assert!(staged > 100, "the backlog is corrections: {staged}");
    let (from, to) = (
        0,
        2 * slatrack::time::parse_date("2025-10-02").expect("date"),
    );
    let card = |s: &SqliteStore| {
        let sc = slatrack::scorecard::build_at(
            s,
            config.clone(),
            &slatrack::contract::Contracts::default(),
            "globex",
            from,
            to,
            to,
        )
        .expect("scorecard");
        slatrack::scorecard::json::render(&sc)
    };
    assert_eq!(card(&a), card(&b));
}

/// A record older than the horizon is `too_late`: rejected by reason, counted nowhere.
#[test]
fn a_record_older_than_the_horizon_is_too_late() {
    let mut c = Config::default();
    c.engine.correction_horizon = slatrack::config::ConfigDuration(10 * MICROS_PER_MIN);
    let config = Arc::new(c);
    let input = disordered(3, 600, 0, 0, MICROS_PER_MIN);
    let dir = tempfile::tempdir().expect("dir");
    let mut store = SqliteStore::open(&dir.path().join("s.db")).expect("store");
    let (mut p, _) = Pipeline::resume(
        config.clone(),
        Format::Json,
        Pipeline::bounds(&config),
        &mut store,
        SOURCE,
    )
    .expect("resume");
    for e in &input {
        p.ingest(e);
    }
    p.commit(&mut store, SOURCE, input.len() as i64)
        .expect("commit");
    let before = stored(&store);
    let newest = input.iter().map(|e| e.completed_at).max().expect("events");
    // A commit keeps the keys of the closed buckets within the horizon only: the
    // others are never read again (their records are too late).
    let width = config.engine.bucket.0;
    let first = input.iter().map(|e| e.completed_at).min().expect("events");
    let within = input
        .iter()
        .map(|e| e.completed_at)
        .filter(|&t| t < newest - 3 * MICROS_PER_MIN)
        .max()
        .expect("a closed bucket within the horizon");
    let keys_of = |t: Micros| {
        store
            .closed_keys(SOURCE, t.div_euclid(width) * width)
            .expect("keys")
    };
    assert!(
        keys_of(first).is_empty(),
        "keys of a bucket 6 h past the horizon"
    );
    assert!(
        !keys_of(within).is_empty(),
        "keys of a bucket within the horizon"
    );
    // 20 minutes behind the close boundary: past the 10-minute horizon.
    let mut old = input[input.len() / 2].clone();
    old.event_id = "too-old".into();
    old.completed_at = newest - 25 * MICROS_PER_MIN;
    old.started_at = old.completed_at - 1_000;
    old.enqueued_at = old.started_at - 1_000;
    assert_eq!(p.ingest(&old), Verdict::Rejected(RejectReason::TooLate));
    // Within it: a correction.
    let mut recent = old.clone();
    recent.event_id = "recent".into();
    recent.completed_at = newest - 6 * MICROS_PER_MIN;
    recent.started_at = recent.completed_at - 1_000;
    recent.enqueued_at = recent.started_at - 1_000;
    assert_eq!(p.ingest(&recent), Verdict::Staged);
    let made = p
        .commit(&mut store, SOURCE, input.len() as i64 + 2)
        .expect("commit");
    assert_eq!(made.corrections.len(), 1);
    assert_eq!(p.shard.tally.too_late, 1);
    assert_eq!(p.shard.tally.corrected, 1);
    let after = stored(&store);
    let added: u64 = after.values().map(|s| s.counters.attempts).sum::<u64>()
        - before.values().map(|s| s.counters.attempts).sum::<u64>();
    assert_eq!(added, 1, "only the record within the horizon is counted");
    let rejected = store.rejects("globex", 0, i64::MAX / 2).expect("rejects");
    assert_eq!(
        rejected
            .iter()
            .find(|(r, _)| *r == RejectReason::TooLate)
            .map(|(_, n)| *n),
        Some(1)
    );
}
