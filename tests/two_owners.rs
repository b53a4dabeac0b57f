//! Two owners of every partition at once, on librdkafka's mock cluster: two instances in
//! different consumer groups, so each is assigned every partition for the whole run. (Its
//! own test binary: the exporter's counters are process-wide, and `tests/kafka_mock.rs`
//! asserts them.) SQLite always; PostgreSQL with `--features integration`.

use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::ClientConfig;
use slatrack::codec::Format;
use slatrack::config::Config;
use slatrack::runtime::RuntimeStatus;
use slatrack::service::{self, demo::demo_config};
use slatrack::store::SqliteStore;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[cfg(feature = "integration")]
#[path = "support/postgres.rs"]
mod postgres;
#[path = "support/replay.rs"]
mod replay;
#[path = "support/wait.rs"]
mod wait;
use wait::wait_until;

/// Half an hour of one tenant's traffic, each 97th record followed by a truncated one.
fn records() -> Vec<(String, Vec<u8>)> {
    let start = slatrack::time::parse_date("2025-10-01").unwrap();
    let events = slatrack::synthetic::pilot(
        11,
        "globex",
        start,
        30 * slatrack::time::MICROS_PER_MIN,
        2_500,
    );
    let mut out = Vec::new();
    for (i, e) in events.iter().enumerate() {
        out.push((e.event_id.clone(), slatrack::codec::protobuf::encode(e)));
        if i % 97 == 0 {
            out.push((e.event_id.clone(), b"\x0a\x50truncated".to_vec()));
        }
    }
    out
}

fn scorecard_of(s: &dyn slatrack::store::StoreRead, config: &Arc<Config>) -> serde_json::Value {
    let from = slatrack::time::parse_date("2025-09-29").unwrap();
    let to = slatrack::time::parse_date("2025-10-06").unwrap();
    slatrack::scorecard::json::render(
        &slatrack::scorecard::build(
            s,
            config.clone(),
            &slatrack::contract::Contracts::default(),
            "globex",
            from,
            to,
        )
        .unwrap(),
    )
}

/// Two instances in different consumer groups on one store: each owns every partition for
/// the whole run, the permanent form of a rebalance that overlaps two owners. On SQLite
/// their commits are fenced on the stored checkpoint, so one resumes from the other's
/// checkpoint again and again, and the scorecard equals replay's.
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Sqlite,
    /// Built with `--features integration`: a real PostgreSQL server.
    #[cfg_attr(not(feature = "integration"), allow(dead_code))]
    Postgres,
}

fn two_owners_of_every_partition(kind: Kind) {
    let mock = MockCluster::new(1).unwrap();
    mock.create_topic("deliveries", 4, 1).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let recs = records();
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", mock.bootstrap_servers())
        .create()
        .unwrap();
    for (k, v) in &recs {
        producer
            .send(BaseRecord::to("deliveries").key(k).payload(v))
            .map_err(|(e, _)| e)
            .unwrap();
    }
    // A day later on every partition: closes every bucket of the test period.
    let start = slatrack::time::parse_date("2025-10-02").unwrap();
    let mut sentinel = slatrack::synthetic::pilot(1, "zz-sentinel", start, 1000, 1).remove(0);
    sentinel.outcome = slatrack::event::Outcome::Delivered;
    let mut sentinels = Vec::new();
    for p in 0..4 {
        sentinel.event_id = format!("sentinel-{p}");
        let v = slatrack::codec::protobuf::encode(&sentinel);
        producer
            .send(
                BaseRecord::to("deliveries")
                    .partition(p)
                    .key("s")
                    .payload(&v),
            )
            .map_err(|(e, _)| e)
            .unwrap();
        sentinels.push(v);
    }
    producer.flush(Duration::from_secs(30)).unwrap();
    let total = (recs.len() + sentinels.len()) as i64;

    let store = dir.path().join("live.db");
    // The PostgreSQL server lives until the end of the test.
    #[cfg(feature = "integration")]
    let pg = (kind == Kind::Postgres).then(|| {
        let pg = postgres::Postgres::start();
        pg.create_db("owners");
        pg
    });
    let location = match kind {
        Kind::Sqlite => slatrack::store::Location::Sqlite(store.clone()),
        #[cfg(feature = "integration")]
        Kind::Postgres => slatrack::store::Location::parse(
            &pg.as_ref().expect("a PostgreSQL server").url("owners"),
        )
        .unwrap(),
        #[cfg(not(feature = "integration"))]
        Kind::Postgres => unreachable!("PostgreSQL tests need --features integration"),
    };
    let instance = |group: &str| {
        let mut cfg = demo_config(mock.bootstrap_servers(), &store, Format::Protobuf);
        cfg.engine = Config::default().engine;
        cfg.metrics.listen = String::new();
        // Often, so that the two owners' commits interleave.
        cfg.service.checkpoint_interval = slatrack::config::ConfigDuration(20_000);
        if let Some(k) = cfg.kafka.as_mut() {
            k.group_id = group.to_string();
            k.quarantine_topic = String::new();
        }
        let config = Arc::new(cfg);
        let (status, shutdown) = (
            Arc::new(RuntimeStatus::default()),
            Arc::new(AtomicBool::new(false)),
        );
        let (c, l, s, st) = (
            config.clone(),
            location.clone(),
            shutdown.clone(),
            status.clone(),
        );
        let handle = std::thread::spawn(move || service::run(c, l, s, st));
        (config, status, shutdown, handle)
    };
    let a = instance("slatrack-a");
    let b = instance("slatrack-b");
    let mut reader = slatrack::store::open(&location, slatrack::store::Access::Create).unwrap();
    let mut progress = || -> i64 {
        (0..4)
            .filter_map(|p| {
                reader
                    .checkpoint(&format!("kafka:deliveries/{p}"))
                    .ok()
                    .flatten()
            })
            .map(|c| c.next_offset)
            .sum()
    };
    wait_until(
        "both instances applying and checkpoints at every partition's end",
        Duration::from_secs(120),
        || {
            (progress() >= total
                && a.1.records.load(Ordering::Relaxed) > 0
                && b.1.records.load(Ordering::Relaxed) > 0)
                || a.3.is_finished()
                || b.3.is_finished()
        },
    );
    for (_, _, shutdown, _) in [&a, &b] {
        shutdown.store(true, Ordering::Relaxed);
    }
    let config = a.0.clone();
    let (sa, sb) = (a.1.clone(), b.1.clone());
    a.3.join().unwrap().expect("A stops cleanly");
    b.3.join().unwrap().expect("B stops cleanly");
    assert_eq!(progress(), total, "checkpoints end at each partition's end");
    let superseded = sa.superseded.load(Ordering::Relaxed) + sb.superseded.load(Ordering::Relaxed);
    assert!(
        superseded > 0,
        "both started without a checkpoint, so the later one's first commit was refused"
    );

    let (replay_store, _) = replay::replay(
        dir.path(),
        config.clone(),
        recs.iter().map(|(_, v)| v).chain(&sentinels),
    );
    let live = scorecard_of(
        &*slatrack::store::open(&location, slatrack::store::Access::ReadOnly).unwrap(),
        &config,
    );
    let offline = scorecard_of(&SqliteStore::open(&replay_store).unwrap(), &config);
    assert_eq!(live["platforms"], offline["platforms"]);
    assert_eq!(live["overall"], offline["overall"]);
    assert_eq!(live["rejected_by_reason"], offline["rejected_by_reason"]);
}

#[test]
fn two_owners_of_every_partition_on_one_sqlite_store_equal_replay() {
    two_owners_of_every_partition(Kind::Sqlite);
}

/// PostgreSQL: the partition's advisory lock serialises the two owners' commits, and the
/// fence refuses the one whose checkpoint was superseded.
#[cfg(feature = "integration")]
#[test]
fn two_owners_of_every_partition_on_one_postgres_store_equal_replay() {
    two_owners_of_every_partition(Kind::Postgres);
}
