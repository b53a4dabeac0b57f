//! The Kafka scorecard store's exactly-once-effect rules, on librdkafka's mock cluster:
//! a partition that re-commits from the same checkpoint (it crashed after its windows were
//! acknowledged but before its checkpoint) replaces what the lost attempt wrote instead of
//! adding to it, and a reader merges the partitions' partials.

use rdkafka::mocking::MockCluster;
use slatrack::engine::{ClosedBucket, KeyInfo, Stats};
use slatrack::event::{DeliveryEvent, Direction, Outcome, RejectReason};
use slatrack::store::kafka::{KafkaStore, Mode};
use slatrack::store::{PartitionCommit, PartitionStore, RejectRow};

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
        reason: RejectReason::Late,
        count: n,
    }
}

#[test]
fn a_recommit_from_the_same_checkpoint_replaces_and_partitions_merge() {
    let mock = MockCluster::new(1).unwrap();
    mock.create_topic("windows", 1, 1).unwrap();
    let brokers = mock.bootstrap_servers();
    let t0 = 1_700_000_040_000_000;
    let mut w = KafkaStore::open(&brokers, "windows", None, Mode::Checkpoints).unwrap();

    // Attempt 1 of partition 0 from checkpoint 0: 3 events, 4 late records. Its checkpoint
    // is then superseded by attempt 2 from the same checkpoint (what a resumed partition
    // does when attempt 1's checkpoint never became durable).
    let first = [bucket("globex", t0, &[100, 200, 900])];
    w.commit(&PartitionCommit {
        source: "kafka:d/0",
        from_offset: 0,
        next_offset: 10,
        state: b"s1",
        buckets: &first,
        rejects: &[late(4)],
    })
    .unwrap();
    let second = [bucket("globex", t0, &[100, 200])];
    w.commit(&PartitionCommit {
        source: "kafka:d/0",
        from_offset: 0,
        next_offset: 8,
        state: b"s2",
        buckets: &second,
        rejects: &[late(1)],
    })
    .unwrap();
    // Then it continues from its new checkpoint with no rejections, and partition 1
    // contributes a partial of the same bucket.
    let third = [bucket("globex", t0 + 60_000_000, &[50])];
    w.commit(&PartitionCommit {
        source: "kafka:d/0",
        from_offset: 8,
        next_offset: 12,
        state: b"s3",
        buckets: &third,
        rejects: &[],
    })
    .unwrap();
    let other = [bucket("globex", t0, &[700])];
    w.commit(&PartitionCommit {
        source: "kafka:d/1",
        from_offset: 0,
        next_offset: 1,
        state: b"p1",
        buckets: &other,
        rejects: &[late(2)],
    })
    .unwrap();

    // A fresh reader (another instance) sees the latest checkpoint per partition.
    let mut r = KafkaStore::open(&brokers, "windows", None, Mode::Checkpoints).unwrap();
    r.refresh().unwrap();
    let cp = r.checkpoint("kafka:d/0").unwrap().unwrap();
    assert_eq!((cp.next_offset, cp.state.as_slice()), (12, &b"s3"[..]));
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
        vec![(RejectReason::Late, 1 + 2)]
    );
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
