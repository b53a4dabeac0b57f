//! The partition set driven by hand: batches applied, checkpoints, takeover.

use super::partition_set::checkpoints::{commit_spacing, Pace};
use super::partition_set::takeover::AWAITING_SEEK;
use super::partition_set::PartitionSet;
use crate::codec::Format;
use crate::config::Config;
use crate::kafka::consumer::Batch;
use crate::runtime::RuntimeStatus;
use crate::sink::prometheus::Telemetry;
use crate::store::StoreRead;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

fn set_on(generation: u64, store: crate::store::SqliteStore) -> PartitionSet {
    set_with(generation, store, Config::default())
}

fn set_with(generation: u64, store: crate::store::SqliteStore, config: Config) -> PartitionSet {
    let config = Arc::new(config);
    let status = Arc::new(RuntimeStatus::default());
    PartitionSet {
        telemetry: Telemetry::new(config.clone(), Default::default(), status.clone()),
        config,
        store: Box::new(store),
        topics: vec![("deliveries".into(), Format::Protobuf)],
        parts: BTreeMap::new(),
        quarantine: None,
        status,
        fatal: None,
        poisoned: false,
        to_commit: Vec::new(),
        generation: Arc::new(AtomicU64::new(generation)),
        seeks: Vec::new(),
        resumptions: 0,
        busy_records: 0,
        store_location: crate::store::Location::Sqlite("test.db".into()),
    }
}

/// Commits are spaced so that, together, they take about a tenth of the apply thread;
/// cheap ones keep the configured interval.
#[test]
fn costly_commits_are_spaced_out() {
    let ms = Duration::from_millis;
    assert_eq!(commit_spacing(ms(1000), ms(2), 4), ms(1000));
    assert_eq!(commit_spacing(ms(1000), ms(50), 4), ms(2000));
    assert_eq!(commit_spacing(ms(1000), ms(50), 1), ms(1000));
    assert_eq!(commit_spacing(ms(10), ms(0), 6), ms(10));
}

/// A partition whose last commit was costly waits its spacing while records are waiting,
/// and commits at the configured interval once nothing is (the end of a backlog is
/// durable about `service.checkpoint_interval` after it is applied, not tens of commit
/// durations later).
#[test]
fn a_costly_commit_is_spaced_while_busy_and_not_once_idle() {
    let recs = records();
    let mut s = set(1);
    s.assign("deliveries", 0);
    s.apply(
        &batch_of(&recs, 0, recs.len(), 1),
        crate::time::now_micros(),
    );
    let before = checkpointed(&s);
    for p in s.parts.values_mut() {
        p.commit_cost = Duration::from_secs(10);
        p.last_commit = std::time::Instant::now() - Duration::from_secs(2);
    }
    assert!(s.checkpoint_due(Pace::Busy));
    assert_eq!(
        checkpointed(&s),
        before,
        "busy: spaced by its last commit's cost"
    );
    for p in s.parts.values_mut() {
        p.last_commit = std::time::Instant::now() - Duration::from_secs(2);
    }
    assert!(s.checkpoint_due(Pace::Idle));
    assert_eq!(checkpointed(&s), recs.len() as i64, "idle: at the interval");
}

/// The tail of a backlog becomes durable once it is applied: with nothing waiting, a
/// partition holding an eighth of `limits.max_uncommitted_buckets` closed buckets commits
/// at once, however recently it last committed; one holding fewer waits for the interval.
#[test]
fn a_drained_backlog_commits_at_once_and_a_trickle_at_the_interval() {
    let recs = records();
    let run = |max_uncommitted: usize| {
        let mut s = applied_with(max_uncommitted, &recs);
        let p = s.parts.values_mut().next().expect("a partition");
        let waiting = p.pipeline.uncommitted_buckets();
        p.last_commit = std::time::Instant::now();
        assert!(s.checkpoint_due(Pace::Idle));
        let p = s.parts.values().next().expect("a partition");
        (waiting, p.checkpointed_offset)
    };
    let (waiting, committed) = run(8);
    assert!(waiting >= 1, "the records close buckets");
    assert_eq!(committed, recs.len() as i64, "a backlog's tail: at once");
    let (waiting, committed) = run(1_000_000);
    assert!(waiting < 1_000_000 / super::partition_set::checkpoints::DRAINED);
    assert!((recs.len() as u64) < super::partition_set::checkpoints::DRAINED_RECORDS);
    assert_eq!(committed, 0, "a trickle: at the interval");
}

/// The end of a catch-up of dense traffic closes few buckets: after
/// [`DRAINED_RECORDS`] records applied back to back, the first round with nothing waiting
/// commits every partition at once, including a remainder of a few records behind a
/// commit made during the catch-up; the round after it is back to the interval.
///
/// [`DRAINED_RECORDS`]: super::partition_set::checkpoints::DRAINED_RECORDS
#[test]
fn a_drained_catch_up_commits_at_once_whatever_is_left() {
    let start = crate::time::parse_date("2025-10-01").unwrap_or_default();
    let n = super::partition_set::checkpoints::DRAINED_RECORDS + 20;
    let recs: Vec<Vec<u8>> = crate::synthetic::pilot(5, "globex", start, 20 * 60_000_000, n)
        .iter()
        .map(crate::codec::protobuf::encode)
        .collect();
    let mut s = applied_with(1_000_000, &recs[..recs.len() - 10]);
    let p = s.parts.values_mut().next().expect("a partition");
    assert!(
        p.pipeline.uncommitted_buckets() < 1_000_000 / super::partition_set::checkpoints::DRAINED,
        "few closed buckets"
    );
    // A commit during the catch-up, then its last ten records.
    assert!(s.checkpoint_due(Pace::All));
    let before = checkpointed(&s);
    let last = recs.len() - 10;
    s.apply(
        &batch_of(&recs, last, recs.len(), 1),
        crate::time::now_micros(),
    );
    assert!(s.checkpoint_due(Pace::Busy));
    assert_eq!(checkpointed(&s), before, "busy: at the interval");
    assert!(s.checkpoint_due(Pace::Idle));
    assert_eq!(checkpointed(&s), recs.len() as i64, "drained: at once");
    // Light traffic after it: back to the interval.
    let more: Vec<Vec<u8>> =
        crate::synthetic::pilot(6, "globex", start + 30 * 60_000_000, 60_000_000, 5)
            .iter()
            .map(crate::codec::protobuf::encode)
            .collect();
    s.apply(
        &batch_at(&more, recs.len() as i64, 1),
        crate::time::now_micros(),
    );
    assert!(s.checkpoint_due(Pace::Idle));
    assert_eq!(
        checkpointed(&s),
        recs.len() as i64,
        "a trickle: at the interval"
    );
}

/// A partition holding `limits.max_uncommitted_buckets` closed buckets commits at once,
/// however costly its last commit: its memory is bounded by configuration, not by how
/// long the pacing waits.
#[test]
fn a_partition_full_of_closed_buckets_commits_whatever_the_pacing() {
    let recs = records();
    let mut s = applied_with(3, &recs);
    let p = s.parts.values_mut().next().expect("a partition");
    assert!(
        p.pipeline.uncommitted_buckets() >= 3,
        "the records close buckets"
    );
    p.commit_cost = Duration::from_secs(10);
    p.last_commit = std::time::Instant::now();
    assert!(s.checkpoint_due(Pace::Busy));
    let p = s.parts.values().next().expect("a partition");
    assert_eq!(
        p.checkpointed_offset,
        recs.len() as i64,
        "committed at the bound"
    );
    assert_eq!(p.pipeline.uncommitted_buckets(), 0);
}

/// A panic while the partition set is locked (a record possibly half applied): the set
/// writes no checkpoint afterwards, and says why the service stops.
#[test]
fn a_panic_while_applying_leaves_no_checkpoint() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("s.db");
    let recs = records();
    let set = std::sync::Mutex::new(set_on(
        1,
        crate::store::SqliteStore::open(&path).expect("store"),
    ));
    {
        let mut s = super::partition_set::lock(&set);
        s.assign("deliveries", 0);
        s.apply(
            &batch_of(&recs, 0, recs.len(), 1),
            crate::time::now_micros(),
        );
    }
    std::thread::scope(|t| {
        let panicked = t
            .spawn(|| {
                let _held = set.lock();
                panic!("a bug while applying");
            })
            .join();
        assert!(panicked.is_err());
    });
    let mut s = super::partition_set::lock(&set);
    assert!(!s.checkpoint_due(Pace::All), "refuses to checkpoint");
    assert!(matches!(s.fatal, Some(super::ServiceError::Poisoned)));
    let stored = crate::store::SqliteStore::open(&path).expect("store");
    assert_eq!(
        stored.checkpoint("kafka:deliveries/0").expect("read"),
        None,
        "nothing written"
    );
}

/// The store's failure state fails closed when its lock was poisoned: fetching pauses.
#[test]
fn a_poisoned_store_failure_lock_counts_as_failing() {
    let status = RuntimeStatus::default();
    assert!(!status.store_failing());
    std::thread::scope(|t| {
        let _ = t
            .spawn(|| {
                let _held = status.store_failure.lock();
                panic!("a bug while recording");
            })
            .join();
    });
    assert!(status.store_failing());
}

/// One partition on an in-memory store holding at most `max_uncommitted` closed buckets,
/// with every record of `recs` applied and nothing committed.
fn applied_with(max_uncommitted: usize, recs: &[Vec<u8>]) -> PartitionSet {
    let store =
        crate::store::SqliteStore::open(std::path::Path::new(":memory:")).expect("in-memory store");
    let mut config = Config::default();
    config.limits.max_uncommitted_buckets = max_uncommitted;
    let mut s = set_with(1, store, config);
    s.assign("deliveries", 0);
    s.apply(&batch_of(recs, 0, recs.len(), 1), crate::time::now_micros());
    s
}

fn set(generation: u64) -> PartitionSet {
    let store =
        crate::store::SqliteStore::open(std::path::Path::new(":memory:")).expect("in-memory store");
    set_on(generation, store)
}

/// One partition's records: 40 events over 80 minutes (so buckets close as they go),
/// every 7th followed by a truncated record.
fn records() -> Vec<Vec<u8>> {
    let start = crate::time::parse_date("2025-10-01").unwrap_or_default();
    let evs = crate::synthetic::pilot(3, "globex", start, 80 * 60_000_000, 40);
    let mut out = Vec::new();
    for (i, e) in evs.iter().enumerate() {
        out.push(crate::codec::protobuf::encode(e));
        if i % 7 == 0 {
            out.push(b"\x0a\x50truncated".to_vec());
        }
    }
    out
}

/// The checkpointed offset of the set's one partition.
fn checkpointed(s: &PartitionSet) -> i64 {
    s.parts
        .values()
        .map(|p| p.checkpointed_offset)
        .next()
        .expect("a partition")
}

/// Records `from..to` of partition 0 (a record's offset is its index), polled under
/// `generation`.
fn batch_of(records: &[Vec<u8>], from: usize, to: usize, generation: u64) -> Batch {
    batch_at(&records[from..to], from as i64, generation)
}

/// These records of partition 0 at offsets from `first` on, polled under `generation`.
fn batch_at(records: &[Vec<u8>], first: i64, generation: u64) -> Batch {
    let mut b = Batch::default();
    for (i, r) in records.iter().enumerate() {
        b.push(0, 0, first + i as i64, generation, r);
    }
    b
}

/// Ten records of partition 0 at offsets `from..from + 10`, polled under `generation`.
fn batch(from: i64, generation: u64) -> Batch {
    let start = crate::time::parse_date("2025-10-01").unwrap_or_default();
    let evs = crate::synthetic::pilot(3, "globex", start, 60_000_000, 10);
    let recs: Vec<Vec<u8>> = evs.iter().map(crate::codec::protobuf::encode).collect();
    batch_at(&recs, from, generation)
}

/// What the store says about globex: events in closed buckets, rejections.
fn stored(path: &std::path::Path) -> (u64, u64) {
    let s = crate::store::SqliteStore::open(path).expect("store");
    let events = s
        .buckets("globex", 0, i64::MAX / 2)
        .expect("buckets")
        .iter()
        .map(|b| b.stats.counters.events)
        .sum();
    let rejects = s
        .rejects("", 0, i64::MAX / 2)
        .expect("rejects")
        .iter()
        .map(|(_, n)| n)
        .sum();
    (events, rejects)
}

/// Two owners of one partition at once on one SQLite store (a rebalance that overlaps
/// them): the one whose checkpoint is no longer the stored one is refused, resumes from
/// the store's, applies nothing until fetching has moved there, and the store ends as
/// with a single owner.
#[test]
fn an_owner_superseded_by_another_resumes_from_its_checkpoint() {
    let dir = tempfile::tempdir().expect("tempdir");
    let open = |name: &str| {
        let path = dir.path().join(name);
        (crate::store::SqliteStore::open(&path).expect("store"), path)
    };
    let recs = records();
    let n = recs.len();
    let now = crate::time::now_micros();

    let (store, reference) = open("reference.db");
    let mut r = set_on(1, store);
    r.assign("deliveries", 0);
    for (from, to) in [(0, 15), (15, 30), (30, n)] {
        r.apply(&batch_of(&recs, from, to, 1), now);
        assert!(r.checkpoint_due(Pace::All));
    }

    let (store, shared) = open("shared.db");
    let mut b = set_on(1, store);
    b.assign("deliveries", 0);
    b.apply(&batch_of(&recs, 0, 15, 1), now);
    assert!(b.checkpoint_due(Pace::All));
    let mut a = set_on(1, crate::store::SqliteStore::open(&shared).expect("store"));
    assert_eq!(
        a.assign("deliveries", 0),
        Some(15),
        "A restores B's checkpoint"
    );
    // Both go on from 15; B commits first, so A's commit is refused.
    b.apply(&batch_of(&recs, 15, 30, 1), now);
    assert!(b.checkpoint_due(Pace::All));
    a.apply(&batch_of(&recs, 15, 25, 1), now);
    assert!(
        a.checkpoint_due(Pace::All),
        "a refused commit is not a store failure"
    );
    assert_eq!(
        a.parts[&(0, 0)].next_offset,
        30,
        "A resumed from B's checkpoint"
    );
    assert_eq!(a.parts[&(0, 0)].generation, AWAITING_SEEK);
    let seek = a.seeks.pop().expect("a seek to B's checkpoint");
    assert_eq!((seek.partition, seek.offset), (0, 30));
    // What A fetched before the seek is not applied; B leaves (its revoke commit is
    // refused in turn if A had committed, here it is not); then the seek lands.
    a.apply(&batch_of(&recs, 25, 35, 1), now);
    assert_eq!(a.parts[&(0, 0)].next_offset, 30);
    b.revoke("deliveries", 0);
    a.seeked(vec![(seek, 2)]);
    a.apply(&batch_of(&recs, 30, n, 2), now);
    assert_eq!(a.parts[&(0, 0)].next_offset, n as i64);
    assert!(a.checkpoint_due(Pace::All));

    let expected = stored(&reference);
    assert!(
        expected.0 > 0 && expected.1 > 0,
        "buckets closed, records rejected: {expected:?}"
    );
    assert_eq!(stored(&shared), expected);
}

#[test]
fn records_polled_before_the_latest_assignment_are_not_applied() {
    let mut s = set(2);
    assert_eq!(s.assign("deliveries", 0), None, "no checkpoint yet");
    let now = crate::time::now_micros();
    // Polled under generation 1, before the partition was (re)assigned: stale.
    s.apply(&batch(0, 1), now);
    assert_eq!(s.status.records.load(Ordering::Relaxed), 0);
    assert_eq!(
        s.status.skipped_below_checkpoint.load(Ordering::Relaxed),
        10
    );
    assert_eq!(s.parts[&(0, 0)].next_offset, 0, "nothing applied");
    // Polled since: applied; then a re-delivery below the new offset is skipped.
    s.apply(&batch(0, 2), now);
    assert_eq!(s.status.records.load(Ordering::Relaxed), 10);
    assert_eq!(s.parts[&(0, 0)].next_offset, 10);
    s.apply(&batch(5, 3), now);
    assert_eq!(
        s.status.records.load(Ordering::Relaxed),
        15,
        "offsets 10..15 only"
    );
    assert_eq!(
        s.status.skipped_below_checkpoint.load(Ordering::Relaxed),
        15
    );
}

/// A first owner (generation 1) of partition 0 on a store at `path`: [`records`] applied
/// and checkpointed.
fn checkpointed_records(path: &std::path::Path) -> PartitionSet {
    let mut s = set_on(1, crate::store::SqliteStore::open(path).expect("store"));
    s.assign("deliveries", 0);
    let recs = records();
    s.apply(
        &batch_of(&recs, 0, recs.len(), 1),
        crate::time::now_micros(),
    );
    s.checkpoint_due(Pace::All);
    s
}

/// A checkpoint beyond its log's end (a recreated topic, a new cluster): librdkafka resets
/// fetching below the checkpoint; the first such record stops the partition with an error
/// naming the command that accepts the new log, and nothing is applied.
#[test]
fn a_checkpoint_beyond_the_log_end_stops_the_partition() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("s.db");
    checkpointed_records(&path);
    let recs = records();
    let n = recs.len() as i64;
    let now = crate::time::now_micros();
    let (events_before, _) = stored(&path);
    assert!(events_before > 0);
    let mut s = set_on(2, crate::store::SqliteStore::open(&path).expect("store"));
    assert_eq!(s.assign("deliveries", 0), Some(n));
    // The new log, from offset 0.
    s.apply(&batch(0, 2), now);
    assert!(s.parts.is_empty(), "the partition stopped");
    assert_eq!(
        s.status.records.load(Ordering::Relaxed),
        0,
        "nothing applied"
    );
    let why = stop_reason(&s);
    assert!(
        why.contains(&format!("offset {n}")) && why.contains("slatrack accept-new-log"),
        "{why}"
    );
    s.checkpoint_due(Pace::All);
    assert_eq!(stored(&path).0, events_before);
    // Accepted: the checkpoint moves to the new log's start, with the engine state kept.
    let accepted = crate::service::accept_new_log(
        Arc::new(Config::default()),
        &crate::store::Location::Sqlite(path.clone()),
        "deliveries",
        0,
    )
    .expect("accepted");
    assert_eq!(accepted.old_next_offset, n);
    let mut s = set_on(3, crate::store::SqliteStore::open(&path).expect("store"));
    assert_eq!(
        s.assign("deliveries", 0),
        Some(0),
        "reads the new log from 0"
    );
    assert!(s.status.stopped.lock().expect("lock").is_empty());
    // The new log repeats the old one's first records (a mirrored cluster): applied, and
    // duplicates of what the old log counted.
    s.apply(&batch_of(&recs, 0, recs.len(), 3), now);
    assert_eq!(
        s.status.records.load(Ordering::Relaxed),
        n as u64,
        "the new log is applied"
    );
    s.checkpoint_due(Pace::All);
    assert_eq!(
        stored(&path).0,
        events_before,
        "the old log's figures stay, its repeated records are not counted twice"
    );
}

/// Why the set's one stopped partition stopped.
fn stop_reason(s: &PartitionSet) -> String {
    let why = s
        .status
        .stopped
        .lock()
        .expect("lock")
        .values()
        .next()
        .cloned();
    why.expect("the stop is reported")
}

/// A PostgreSQL store's owner is told to run accept-new-log on that store, not the Kafka
/// store's remedy.
#[test]
fn a_stopped_partition_on_postgres_is_told_to_accept_the_new_log_there() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("s.db");
    checkpointed_records(&path);
    let mut s = set_on(2, crate::store::SqliteStore::open(&path).expect("store"));
    s.store_location =
        crate::store::Location::parse("postgres://slatrack@db.example:5432/slatrack")
            .expect("a postgres location");
    s.assign("deliveries", 0);
    s.apply(&batch(0, 2), crate::time::now_micros());
    let why = stop_reason(&s);
    assert!(
        why.contains(
            "slatrack accept-new-log --store 'postgres://slatrack@db.example:5432/slatrack'"
        ),
        "{why}"
    );
}

/// A checkpoint below its log's start (retention deleted records before they were read):
/// fetching starts at the log's start, and the lost offsets are counted and stored with
/// the next checkpoint, once.
#[test]
fn a_checkpoint_below_the_log_start_counts_and_stores_what_was_lost() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("s.db");
    let mut s = set_on(1, crate::store::SqliteStore::open(&path).expect("store"));
    s.assign("deliveries", 0);
    s.apply(&batch(0, 1), crate::time::now_micros());
    s.checkpoint_due(Pace::All);
    for generation in [2, 3] {
        let mut s = set_on(
            generation,
            crate::store::SqliteStore::open(&path).expect("store"),
        );
        assert_eq!(s.assign("deliveries", 0), Some(10));
        assert_eq!(s.check_log_start("deliveries", 0, 10, 25), 25);
        assert_eq!(s.status.records_unread.load(Ordering::Relaxed), 15);
        assert_eq!(s.parts[&(0, 0)].next_offset, 25);
        // Crashed before a checkpoint the first time: noticed again, stored once.
        if generation == 3 {
            s.apply(&batch(25, 3), crate::time::now_micros());
            assert!(
                !s.parts.is_empty(),
                "records from the log's start are applied"
            );
            s.checkpoint_due(Pace::All);
        }
    }
    let store = crate::store::SqliteStore::open(&path).expect("store");
    let unread = store.unread().expect("unread");
    assert_eq!(unread.len(), 1);
    assert_eq!((unread[0].1.from, unread[0].1.to), (10, 25));
    let mut s = set_on(4, crate::store::SqliteStore::open(&path).expect("store"));
    assert_eq!(
        s.assign("deliveries", 0),
        Some(35),
        "the checkpoint moved past the gap"
    );
    assert_eq!(s.check_log_start("deliveries", 0, 35, 25), 35);
}

/// The service folds bucket rows past `store.minute_retention` into hourly rows, a day per
/// call, without changing what the store sums to.
#[test]
fn rows_past_the_retention_are_folded_a_day_at_a_time() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("s.db");
    let mut s = checkpointed_records(&path);
    let before = stored(&path);
    let minute_rows = || {
        rusqlite::Connection::open(&path)
            .and_then(|c| {
                c.query_row(
                    "SELECT COUNT(*) FROM buckets WHERE bucket_secs < 3600",
                    [],
                    |r| r.get::<_, i64>(0),
                )
            })
            .expect("count")
    };
    assert!(minute_rows() > 0);
    // The records are from 2025: past the default 35 days. One day of them per call.
    assert!(!s.fold_old_rows(), "all within one day");
    assert_eq!(minute_rows(), 0);
    assert_eq!(stored(&path), before);
}
