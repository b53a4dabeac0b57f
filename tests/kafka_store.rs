//! The Kafka scorecard store's exactly-once-effect rules, on librdkafka's mock cluster:
//! a partition that re-commits from the same checkpoint (it crashed after its windows were
//! acknowledged but before its checkpoint) replaces what the lost attempt wrote instead of
//! adding to it; two owners of one partition at once write the same records; and a
//! reader merges the partitions' partials.

use rdkafka::mocking::MockCluster;
use slatrack::codec::Format;
use slatrack::config::Config;
use slatrack::engine::{ClosedBucket, KeyInfo, Stats};
use slatrack::event::TimeBounds;
use slatrack::event::{DeliveryEvent, Direction, Outcome, RejectReason};
use slatrack::pipeline::Pipeline;
use slatrack::store::kafka::{KafkaStore, Mode};
use slatrack::store::{PartitionCommit, PartitionStore, RejectRow, SegmentRejects, SEGMENT_BITS};
use std::sync::Arc;

fn bucket(tenant: &str, start: i64, latencies_ms: &[u64]) -> ClosedBucket {
    let mut stats = Stats::default();
    for (i, ms) in latencies_ms.iter().enumerate() {
        let ev = DeliveryEvent {
            event_id: format!("e{i}"),
            tenant: tenant.into(),
            platform: "workday".into(),
            direction: Direction::Outbound,
            attempt: 1,
            max_attempts: 5,
            outcome: Outcome::Delivered,
            enqueued_at: start,
            started_at: start,
            completed_at: start + (*ms as i64) * 1000,
            http_status: Some(200),
            error: None,
        };
        stats.record(&ev, 500_000);
    }
    ClosedBucket {
        key: std::sync::Arc::new(KeyInfo {
            tenant: tenant.into(),
            platform: "workday".into(),
            direction: Direction::Outbound,
            target_latency_us: 500_000,
        }),
        start,
        width_us: 60_000_000,
        stats,
    }
}

fn late(n: u64) -> RejectRow<'static> {
    RejectRow {
        tenant: "globex",
        platform: "workday",
        bucket: 1_700_000_040_000_000,
        reason: RejectReason::TooLate,
        count: n,
    }
}

fn commit<'a>(
    w: &mut KafkaStore,
    source: &'a str,
    next_offset: i64,
    state: &'a [u8],
    buckets: &'a [ClosedBucket],
    sealed: &'a [SegmentRejects<'a>],
    open: &'a [RejectRow<'a>],
) {
    w.commit(&PartitionCommit {
        source,
        expected: None, // the Kafka store is not fenced: overlapping owners write alike
        next_offset,
        state,
        buckets,
        corrections: &[],
        closed_keys: &[],
        keys_before: i64::MIN,
        unread: None,
        rejects: &[],
        sealed,
        open,
        dedup: None,
    })
    .unwrap();
}

#[test]
fn a_recommit_from_the_same_checkpoint_replaces_and_partitions_merge() {
    let mock = MockCluster::new(1).unwrap();
    mock.create_topic("windows", 1, 1).unwrap();
    let brokers = mock.bootstrap_servers();
    let t0 = 1_700_000_040_000_000;
    let mut w = KafkaStore::open(&brokers, "windows", None, Mode::Checkpoints).unwrap();
    let seg1 = 1i64 << SEGMENT_BITS;

    // Attempt 1 of partition 0 from its start: 3 events, 4 late records. Its checkpoint
    // is then superseded by attempt 2 from the same start (what a resumed partition does
    // when attempt 1's checkpoint never became durable).
    let first = [bucket("globex", t0, &[100, 200, 900])];
    commit(&mut w, "kafka:d/0", 10, b"s1", &first, &[], &[late(4)]);
    let second = [bucket("globex", t0, &[100, 200])];
    commit(&mut w, "kafka:d/0", 8, b"s2", &second, &[], &[late(1)]);
    // It continues into segment 1: segment 0 is sealed with its one late record, and the
    // open segment has 2 so far. Partition 1 contributes a partial of the first bucket.
    let third = [bucket("globex", t0 + 60_000_000, &[50])];
    let sealed = [SegmentRejects {
        segment: 0,
        rows: &[late(1)],
    }];
    commit(
        &mut w,
        "kafka:d/0",
        seg1 + 12,
        b"s3",
        &third,
        &sealed,
        &[late(2)],
    );
    let other = [bucket("globex", t0, &[700])];
    commit(&mut w, "kafka:d/1", 1, b"p1", &other, &[], &[late(2)]);
    // An owner that got further wrote segment 1 sealed, but the latest checkpoint of
    // partition 1 is still in segment 0: the sealed record waits for a checkpoint past it.
    let ahead = [SegmentRejects {
        segment: 0,
        rows: &[late(5)],
    }];
    commit(&mut w, "kafka:d/1", seg1 + 1, b"p2", &[], &ahead, &[]);
    commit(&mut w, "kafka:d/1", 1, b"p1", &other, &[], &[late(2)]);

    // A fresh reader (another instance) sees the latest checkpoint per partition, with its
    // open segment's rejections.
    let mut r = KafkaStore::open(&brokers, "windows", None, Mode::Checkpoints).unwrap();
    r.refresh().unwrap();
    let cp = r.checkpoint("kafka:d/0").unwrap().unwrap();
    assert_eq!(
        (cp.next_offset, cp.state.as_slice()),
        (seg1 + 12, &b"s3"[..])
    );
    assert_eq!(cp.open_rejects.len(), 1);
    assert_eq!(cp.open_rejects[0].count, 2);
    assert_eq!(r.checkpoint("kafka:d/1").unwrap().unwrap().next_offset, 1);
    assert!(r.checkpoint("kafka:d/2").unwrap().is_none());

    // The scorecard reader: attempt 1 replaced, partitions merged.
    let loc = slatrack::store::Location::parse(&format!("kafka://{brokers}/windows")).unwrap();
    let s = slatrack::store::open_for_reading(&loc, None).unwrap();
    let rows = s.buckets("globex", t0, t0 + 120_000_000).unwrap();
    let events: u64 = rows.iter().map(|b| b.stats.counters.events).sum();
    let on_time: u64 = rows.iter().map(|b| b.stats.counters.on_time).sum();
    assert_eq!(
        events,
        2 + 1 + 1,
        "attempt 2 replaced attempt 1; partition 1 added"
    );
    assert_eq!(on_time, 2 + 1, "the 700 ms event of partition 1 is late");
    assert_eq!(
        s.rejects("globex", t0, t0 + 120_000_000).unwrap(),
        vec![(RejectReason::TooLate, 1 + 2 + 2)],
        "partition 0: sealed segment 0 and open segment 1; partition 1: its open segment"
    );
}

const SOURCE: &str = "kafka:deliveries/0";

/// One partition's records across three rejection segments: pilot traffic, every 50th
/// record delivered twice, a copy a day behind of every 997th (late), and a truncated
/// record every 1 499th (malformed). Returns the records and the planted (late, malformed).
fn partition_records() -> (Vec<Vec<u8>>, u64, u64) {
    let start = slatrack::time::parse_date("2025-10-01").unwrap();
    let evs = slatrack::synthetic::pilot(
        7,
        "globex",
        start,
        // 12 hours: ≈ 2 900 windows, so that the store topic stays well inside the mock
        // cluster's ≈ 5 MiB a partition (it drops the oldest records past that).
        12 * slatrack::time::MICROS_PER_HOUR,
        150_000,
    );
    let (mut out, mut late, mut malformed) = (Vec::new(), 0, 0);
    for (i, e) in evs.iter().enumerate() {
        out.push(slatrack::codec::protobuf::encode(e));
        if i % 50 == 0 {
            out.push(slatrack::codec::protobuf::encode(e));
        }
        if i % 997 == 996 {
            let mut l = e.clone();
            l.event_id = format!("late-{i}");
            for t in [&mut l.enqueued_at, &mut l.started_at, &mut l.completed_at] {
                *t -= slatrack::time::MICROS_PER_DAY;
            }
            out.push(slatrack::codec::protobuf::encode(&l));
            late += 1;
        }
        if i % 1499 == 0 {
            out.push(b"\x0a\x50truncated".to_vec());
            malformed += 1;
        }
    }
    assert!(out.len() as i64 > 2 << SEGMENT_BITS, "three segments");
    (out, late, malformed)
}

/// A partition's owner, as the service runs one: restores the store's checkpoint, applies
/// records from there, commits every `every` records.
struct Owner {
    pipeline: Pipeline,
    next: i64,
    store: KafkaStore,
}

impl Owner {
    fn resume(brokers: &str, topic: &str) -> Owner {
        let mut store = KafkaStore::open(brokers, topic, None, Mode::Checkpoints).unwrap();
        store.refresh().unwrap();
        let config = Arc::new(Config::default());
        let bounds = TimeBounds {
            min: TimeBounds::MIN_PLAUSIBLE,
            max_future_skew: None,
        };
        let (pipeline, next) =
            Pipeline::resume(config, Format::Protobuf, bounds, &mut store, SOURCE).unwrap();
        Owner {
            pipeline,
            next: next.unwrap_or(0),
            store,
        }
    }

    fn run(&mut self, records: &[Vec<u8>], until: i64, every: i64) {
        let until = until.min(records.len() as i64);
        while self.next < until {
            self.pipeline.rejects.at_offset(self.next);
            self.pipeline.process(&records[self.next as usize], 0);
            self.next += 1;
            if self.next % every == 0 {
                self.commit();
            }
        }
        self.commit();
    }

    fn commit(&mut self) {
        self.pipeline
            .commit(&mut self.store, SOURCE, self.next)
            .unwrap();
    }
}

/// What a scorecard reads back: globex's rejections, the unattributed ones (malformed
/// records carry no tenant), globex's events.
#[derive(Debug, PartialEq)]
struct Totals {
    rejects: Vec<(RejectReason, u64)>,
    unattributed: Vec<(RejectReason, u64)>,
    events: u64,
}

fn totals(s: &dyn slatrack::store::StoreRead) -> Totals {
    let (lo, hi) = (0, i64::MAX / 2);
    Totals {
        rejects: s.rejects("globex", lo, hi).unwrap(),
        unattributed: s.rejects("", lo, hi).unwrap(),
        events: s
            .buckets("globex", lo, hi)
            .unwrap()
            .iter()
            .map(|b| b.stats.counters.events)
            .sum(),
    }
}

/// Two owners of one partition at once — what a rebalance that overlaps them does (tansu
/// 0.6 assigns a partition before its previous owner has revoked it; any broker does for
/// a consumer stalled past its session) — with different commit cadences, interleaved,
/// the older owner's checkpoint landing last; then a third owner resumes from that older
/// checkpoint and finishes. The store reads as if one owner had applied every record once.
#[test]
fn overlapping_owners_of_a_partition_count_every_rejection_once() {
    let mock = MockCluster::new(1).unwrap();
    for t in ["reference", "overlapped"] {
        mock.create_topic(t, 1, 1).unwrap();
    }
    let brokers = mock.bootstrap_servers();
    let (records, late, malformed) = partition_records();
    let n = records.len() as i64;

    let mut reference = Owner::resume(&brokers, "reference");
    reference.run(&records, n, 10_000);

    let mut b = Owner::resume(&brokers, "overlapped");
    b.run(&records, 50_000, 7_000);
    // A is assigned the partition while B still applies it: both go on from B's 50 000.
    let mut a = Owner::resume(&brokers, "overlapped");
    assert_eq!(a.next, 50_000);
    for (b_until, a_until) in [(70_000, 60_000), (140_000, 100_000)] {
        b.run(&records, b_until, 7_000);
        a.run(&records, a_until, 13_000);
    }
    // A's checkpoint (100 000) is the latest record: C resumes from it, behind B.
    let mut c = Owner::resume(&brokers, "overlapped");
    assert_eq!(c.next, 100_000);
    c.run(&records, n, 20_000);

    let read = |topic: &str| {
        let loc = slatrack::store::Location::parse(&format!("kafka://{brokers}/{topic}")).unwrap();
        totals(&*slatrack::store::open_for_reading(&loc, None).unwrap())
    };
    let expected = read("reference");
    assert_eq!(
        expected.rejects,
        vec![(RejectReason::TooLate, late)],
        "the planted late records"
    );
    assert_eq!(
        expected.unattributed,
        vec![(RejectReason::MalformedProtobuf, malformed)],
        "the planted malformed records"
    );
    assert_eq!(read("overlapped"), expected);
}

#[test]
fn an_unreachable_store_is_an_error_naming_the_topic() {
    // Nothing listens on port 1: opening fails with the topic and what to check.
    let e = match KafkaStore::open("127.0.0.1:1", "windows", None, Mode::Checkpoints) {
        Ok(_) => panic!("opened a store on a closed port"),
        Err(e) => e.to_string(),
    };
    assert!(e.contains("windows") && e.contains("broker"), "{e}");
}
