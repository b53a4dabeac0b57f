//! Property tests of the aggregation maths: random attempt streams with duplicates and
//! disorder within the allowed lateness give exactly the naive computation's numbers.

mod common;

use common::{assert_quantile, oracle, Expected};
use proptest::prelude::*;
use slatrack::config::Config;
use slatrack::engine::{Ingest, Shard, Stats};
use slatrack::event::{DeliveryEvent, Direction, Outcome};
use slatrack::time::{MICROS_PER_MIN, MICROS_PER_SEC};
use std::collections::BTreeMap;
use std::sync::Arc;

const T0: i64 = 1_759_309_200_000_000; // 2025-10-01T09:00:00Z

#[derive(Debug, Clone)]
struct Spec {
    tenant: u8,
    platform: u8,
    attempts: u32,
    max_attempts: u32,
    terminal: u8,
    enqueue_offset_s: u32,
    queue_ms: u32,
    latencies_us: Vec<u32>,
}

fn spec() -> impl Strategy<Value = Spec> {
    (0u8..2, 0u8..4, 1u32..5, 0u8..3, 0u32..1800, 0u32..700)
        .prop_flat_map(|(tenant, platform, attempts, terminal, off, queue)| {
            (
                Just((tenant, platform, attempts, terminal, off, queue)),
                attempts..=6,
                prop::collection::vec(1u32..3_000_000, attempts as usize),
            )
        })
        .prop_map(
            |((tenant, platform, attempts, terminal, off, queue), max_attempts, latencies_us)| {
                Spec {
                    tenant,
                    platform,
                    attempts,
                    max_attempts,
                    terminal,
                    enqueue_offset_s: off,
                    queue_ms: queue,
                    latencies_us,
                }
            },
        )
}

fn records(i: usize, s: &Spec) -> Vec<DeliveryEvent> {
    let platforms = ["benevity", "workday", "impact_in", "not-configured"];
    let enq = T0 + i64::from(s.enqueue_offset_s) * MICROS_PER_SEC;
    let mut start = enq + i64::from(s.queue_ms) * 1000;
    let mut out = Vec::new();
    for a in 1..=s.attempts {
        let done = start + i64::from(s.latencies_us[(a - 1) as usize]);
        let outcome = if a < s.attempts {
            Outcome::Retrying
        } else {
            [Outcome::Delivered, Outcome::Failed, Outcome::DeadLettered][s.terminal as usize]
        };
        out.push(DeliveryEvent {
            event_id: format!("ev-{i}"),
            tenant: format!("tenant{}", s.tenant),
            platform: platforms[s.platform as usize].into(),
            direction: Direction::Inbound,
            attempt: a,
            max_attempts: s.max_attempts,
            outcome,
            enqueued_at: enq,
            started_at: start,
            completed_at: done,
            http_status: None,
            error: None,
        });
        start = done + MICROS_PER_SEC;
    }
    out
}

/// Arrival order: completion time plus a jitter below half the lateness, so nothing is
/// late; `dups` re-sends copies with their own jitter.
fn arrival(
    all: &[DeliveryEvent],
    jitter: &[u32],
    dups: &[usize],
    lateness: i64,
) -> Vec<DeliveryEvent> {
    let mut tagged: Vec<(i64, usize, DeliveryEvent)> = Vec::new();
    let j = |k: usize| i64::from(jitter[k % jitter.len()]) % (lateness / 2);
    for (k, r) in all.iter().enumerate() {
        tagged.push((r.completed_at + j(k), k, r.clone()));
    }
    for (n, d) in dups.iter().enumerate() {
        let r = &all[d % all.len()];
        tagged.push((r.completed_at + j(n * 7 + 3), all.len() + n, r.clone()));
    }
    tagged.sort_by_key(|(t, k, _)| (*t, *k));
    tagged.into_iter().map(|(_, _, r)| r).collect()
}

fn run_engine(
    config: Arc<Config>,
    input: &[DeliveryEvent],
) -> (BTreeMap<(String, String), Stats>, Vec<Ingest>) {
    let mut shard = Shard::new(config);
    let verdicts: Vec<Ingest> = input.iter().map(|r| shard.ingest(r)).collect();
    shard.flush();
    let mut merged: BTreeMap<(String, String), Stats> = BTreeMap::new();
    for b in shard.take_closed() {
        merged
            .entry((b.key.tenant.to_string(), b.key.platform.to_string()))
            .or_default()
            .merge(&b.stats);
    }
    (merged, verdicts)
}

fn check(key: &(String, String), got: &Stats, want: &Expected) {
    let c = &got.counters;
    assert_eq!(c.attempts, want.attempts, "{key:?} attempts");
    assert_eq!(c.events, want.events, "{key:?} events");
    assert_eq!(
        c.on_time_ratio(),
        want.ratio(want.on_time),
        "{key:?} on_time_ratio"
    );
    assert_eq!(
        c.retry_ratio(),
        want.ratio(want.retried),
        "{key:?} retry_ratio"
    );
    assert_eq!(
        c.failed_ratio(),
        want.ratio(want.failed_or_dlq),
        "{key:?} failed_ratio"
    );
    assert_eq!(
        c.max_retries_ratio(),
        want.ratio(want.max_retries),
        "{key:?} max_retries_ratio"
    );
    assert_eq!(c.dlq_ratio(), want.ratio(want.dlq), "{key:?} dlq_ratio");
    assert_eq!(c.latency_sum_us, want.latency_sum_us, "{key:?} latency sum");
    for q in [500, 950, 990] {
        assert_quantile(
            &format!("{key:?} q{q}"),
            got.quantile_ms(q),
            want.quantile_ms(q),
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn engine_matches_naive_computation(
        specs in prop::collection::vec(spec(), 1..120),
        jitter in prop::collection::vec(0u32..u32::MAX, 1..64),
        dups in prop::collection::vec(0usize..10_000, 0..60),
    ) {
        let config = Arc::new(Config::default());
        let all: Vec<DeliveryEvent> = specs.iter().enumerate().flat_map(|(i, s)| records(i, s)).collect();
        let input = arrival(&all, &jitter, &dups, config.engine.allowed_lateness.0);
        let (got, verdicts) = run_engine(config.clone(), &input);
        let want = oracle(&input, &config);
        prop_assert!(!verdicts.contains(&Ingest::Staged), "disorder stays within the lateness");
        prop_assert_eq!(
            verdicts.iter().filter(|v| **v == Ingest::Duplicate).count(),
            input.len() - all.len()
        );
        prop_assert_eq!(got.keys().collect::<Vec<_>>(), want.keys().collect::<Vec<_>>());
        for (key, w) in &want {
            check(key, &got[key], w);
        }
        // Overall = union: merged histograms, summed counters.
        let mut overall = Stats::default();
        let mut exact = Expected::default();
        for (k, s) in &got { overall.merge(s); exact.merge(&want[k]); }
        check(&("*".into(), "*".into()), &overall, &exact);
    }

    #[test]
    fn records_beyond_the_lateness_without_a_horizon_are_too_late_and_never_counted(
        specs in prop::collection::vec(spec(), 2..60),
        late_by_min in 3i64..60,
    ) {
        let mut c = Config::default();
        c.engine.correction_horizon = slatrack::config::ConfigDuration(0);
        let config = Arc::new(c);
        let mut all: Vec<DeliveryEvent> = specs.iter().enumerate().flat_map(|(i, s)| records(i, s)).collect();
        all.sort_by_key(|r| r.completed_at);
        let newest = all.last().map(|r| r.completed_at).unwrap_or(T0);
        // One straggler from far behind the watermark, sent last.
        let mut straggler = all[0].clone();
        straggler.event_id = "straggler".into();
        straggler.enqueued_at = newest - late_by_min * MICROS_PER_MIN - 10 * MICROS_PER_SEC;
        straggler.started_at = straggler.enqueued_at;
        straggler.completed_at = straggler.enqueued_at + 1;
        let mut input = all.clone();
        input.push(straggler);
        let (got, verdicts) = run_engine(config.clone(), &input);
        prop_assert_eq!(verdicts.last(), Some(&Ingest::TooLate));
        let want = oracle(&all, &config);
        for (key, w) in &want {
            check(key, &got[key], w);
        }
    }
}

/// What counts as a duplicate (docs/engine.md, "Duplicates"): the same `(event_id, attempt)`
/// completing in the same bucket, however many later buckets have opened in between. The
/// same pair completing in another bucket is another record.
#[test]
fn a_duplicate_is_the_same_attempt_in_the_same_bucket() {
    let config = Arc::new(Config::default());
    let spec = Spec {
        tenant: 0,
        platform: 1,
        attempts: 1,
        max_attempts: 3,
        terminal: 0,
        enqueue_offset_s: 0,
        queue_ms: 5,
        latencies_us: vec![200_000],
    };
    let original = records(0, &spec).remove(0);
    let mut next_minute = records(1, &spec).remove(0);
    next_minute.completed_at += MICROS_PER_MIN;
    let mut restamped = original.clone();
    restamped.completed_at += MICROS_PER_MIN;
    let input = [original.clone(), next_minute, original.clone(), restamped];
    let (got, verdicts) = run_engine(config, &input);
    assert_eq!(
        verdicts,
        [
            Ingest::Counted,
            Ingest::Counted,
            Ingest::Duplicate,
            Ingest::Counted
        ]
    );
    let total: u64 = got.values().map(|s| s.counters.attempts).sum();
    assert_eq!(total, 3);
}
