//! The live path against librdkafka's in-process mock cluster (fast; the tansu suite is
//! the proof on a real broker): Kafka and `replay` give identical scorecards over the same
//! records, across a graceful stop and restart mid-stream; malformed records land in the
//! quarantine topic with their reason and the partitions keep flowing.

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Headers;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{ClientConfig, Message};
use slatrack::config::Config;
use slatrack::service::{self, demo::demo_config, Status};
use slatrack::store::kafka::{KafkaStore, Mode};
use slatrack::store::{PartitionStore, Store};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[path = "support/http.rs"]
mod http;
#[path = "support/replay.rs"]
mod replay;
#[path = "support/wait.rs"]
mod wait;
use http::http_get;
use wait::wait_until;

/// The exporter's counters are process-wide: the tests of this file, which assert them,
/// run one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn records() -> (Vec<(String, Vec<u8>)>, usize) {
    let start = slatrack::time::parse_date("2025-10-01").unwrap();
    let events = slatrack::source::generator::pilot(
        9,
        "globex",
        start,
        30 * slatrack::time::MICROS_PER_MIN,
        2_500,
    );
    let mut out = Vec::new();
    let mut malformed = 0;
    for (i, e) in events.iter().enumerate() {
        out.push((e.event_id.clone(), slatrack::codec::protobuf::encode(e)));
        if i % 50 == 0 {
            out.push((e.event_id.clone(), slatrack::codec::protobuf::encode(e)));
            // duplicate
        }
        if i % 97 == 0 {
            out.push((e.event_id.clone(), b"\x0a\x50truncated".to_vec()));
            malformed += 1;
        }
    }
    (out, malformed)
}

fn scorecard(store: &std::path::Path, config: &Arc<Config>) -> serde_json::Value {
    scorecard_of(&Store::open(store).unwrap(), config)
}

fn scorecard_of(s: &Store, config: &Arc<Config>) -> serde_json::Value {
    let from = slatrack::time::parse_date("2025-09-29").unwrap();
    let to = slatrack::time::parse_date("2025-10-06").unwrap();
    slatrack::scorecard::json::render(
        &slatrack::scorecard::build(s, config.clone(), "globex", from, to).unwrap(),
    )
}

fn run_until(
    config: &Arc<Config>,
    store: &std::path::Path,
    stop_after: Option<u64>,
    total: u64,
    drained: bool,
) -> Arc<Status> {
    let status = Arc::new(Status::default());
    let shutdown = Arc::new(AtomicBool::new(false));
    let (c, p, s, st) = (
        config.clone(),
        store.to_path_buf(),
        shutdown.clone(),
        status.clone(),
    );
    let handle =
        std::thread::spawn(move || service::run(c, slatrack::store::Location::Sqlite(p), s, st));
    let target = stop_after.unwrap_or(total);
    wait_until(
        "the service to consume the records",
        Duration::from_secs(90),
        || status.records.load(Ordering::Relaxed) >= target || handle.is_finished(),
    );
    if drained {
        // Consumed to the end: every owned partition reports zero lag (high watermarks
        // come from librdkafka's statistics, once a second).
        wait_until("lag to reach zero", Duration::from_secs(30), || {
            let lags = status.lags();
            lags.len() == 4 && lags.values().all(|l| *l == 0) || handle.is_finished()
        });
    }
    shutdown.store(true, Ordering::Relaxed);
    handle.join().unwrap().expect("service stops cleanly");
    status
}

#[test]
fn kafka_equals_replay_across_a_restart_and_quarantines_bad_records() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let mock = MockCluster::new(1).unwrap();
    mock.create_topic("deliveries", 4, 1).unwrap();
    mock.create_topic("slatrack-quarantine", 1, 1).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (recs, malformed) = records();

    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", mock.bootstrap_servers())
        .create()
        .unwrap();
    let produce = |part: &[(String, Vec<u8>)]| {
        for (k, v) in part {
            producer
                .send(BaseRecord::to("deliveries").key(k).payload(v))
                .map_err(|(e, _)| e)
                .unwrap();
        }
        producer.flush(Duration::from_secs(30)).unwrap();
    };
    let half = recs.len() / 2;
    produce(&recs[..half]);
    // One record per partition a day later (another tenant): moves every partition's
    // watermark past the test period, so every bucket of it closes, live and in replay.
    let sentinel = {
        let start = slatrack::time::parse_date("2025-10-02").unwrap();
        let mut e = slatrack::source::generator::pilot(1, "zz-sentinel", start, 1000, 1).remove(0);
        e.outcome = slatrack::event::Outcome::Delivered;
        e
    };
    let sentinels: Vec<Vec<u8>> = (0..4)
        .map(|p| {
            let mut e = sentinel.clone();
            e.event_id = format!("sentinel-{p}");
            slatrack::codec::protobuf::encode(&e)
        })
        .collect();

    let store = dir.path().join("live.db");
    let config = Arc::new(demo_config(mock.bootstrap_servers(), &store));
    let mut cfg = (*config).clone();
    cfg.engine = Config::default().engine;
    cfg.metrics.listen = "127.0.0.1:0".into();
    let config = Arc::new(cfg);
    let total = recs.len() as u64;

    // The first run consumes half the stream and stops gracefully with buckets still open;
    // the second resumes from the checkpoints while the rest is produced.
    let first = run_until(&config, &store, Some(half as u64), total, false);
    assert_eq!(first.records.load(Ordering::Relaxed), half as u64);
    produce(&recs[half..]);
    for (p, v) in sentinels.iter().enumerate() {
        producer
            .send(
                BaseRecord::to("deliveries")
                    .partition(p as i32)
                    .key("s")
                    .payload(v),
            )
            .map_err(|(e, _)| e)
            .unwrap();
    }
    producer.flush(Duration::from_secs(30)).unwrap();
    let rest = (recs.len() - half + sentinels.len()) as u64;
    let second = run_until(&config, &store, Some(rest), total, true);
    assert_eq!(
        second.records.load(Ordering::Relaxed),
        rest,
        "nothing re-applied after the restart"
    );

    // The same records through replay.
    let (replay_store, summary) = replay::replay(
        dir.path(),
        config.clone(),
        recs.iter().map(|(_, v)| v).chain(&sentinels),
    );
    assert_eq!(
        summary.rejected.get("malformed_protobuf"),
        Some(&(malformed as u64))
    );

    let live = scorecard(&store, &config);
    let offline = scorecard(&replay_store, &config);
    assert_eq!(
        live["overall"]["events"],
        summary.events - sentinels.len() as u64
    );
    assert_eq!(live["platforms"], offline["platforms"]);
    assert_eq!(live["overall"], offline["overall"]);

    // Prometheus endpoint (still served by this process): counters add up to the same
    // events, every platform has its window gauges, health and readiness answer.
    let addr = second
        .metrics_addr
        .lock()
        .unwrap()
        .expect("metrics endpoint was served");
    let metrics = http_get(addr, "/metrics");
    let events_total: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("slatrack_events_total{") && l.contains("tenant=\"globex\""))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum();
    assert_eq!(
        events_total as u64,
        summary.events - sentinels.len() as u64,
        "{metrics}"
    );
    for p in ["benevity", "goodera", "workday", "impact_in"] {
        let series = format!(
            "slatrack_window_on_time_ratio{{tenant=\"globex\",platform=\"{p}\",window=\"7d\"}}"
        );
        assert!(metrics.contains(&series), "missing {series}");
    }
    assert!(metrics.contains("slatrack_build_info{version="));
    for p in 0..4 {
        let series =
            format!("slatrack_consumer_lag_records{{topic=\"deliveries\",partition=\"{p}\"}} 0");
        assert!(metrics.contains(&series), "missing {series}\n{metrics}");
    }
    assert!(http_get(addr, "/healthz").starts_with("HTTP/1.1 200"));
    assert!(
        http_get(addr, "/readyz").starts_with("HTTP/1.1 503"),
        "stopped service is not ready"
    );

    // Quarantine: every malformed record, with its reason and origin.
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", mock.bootstrap_servers())
        .set("group.id", "quarantine-reader")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    consumer.subscribe(&["slatrack-quarantine"]).unwrap();
    let mut seen = std::collections::BTreeSet::new();
    wait_until("the quarantine records", Duration::from_secs(60), || {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            let h = m.headers().expect("quarantine records carry headers");
            let get = |k: &str| {
                h.iter()
                    .find(|x| x.key == k)
                    .and_then(|x| x.value)
                    .map(|v| String::from_utf8_lossy(v).to_string())
            };
            assert_eq!(get("reason").as_deref(), Some("malformed_protobuf"));
            assert_eq!(m.payload(), Some(&b"\x0a\x50truncated"[..]));
            seen.insert((
                get("source.partition").unwrap(),
                get("source.offset").unwrap(),
            ));
        }
        seen.len() >= malformed
    });
    assert_eq!(seen.len(), malformed);
}

/// Two instances in different consumer groups on one store: each owns every partition for
/// the whole run, the permanent form of a rebalance that overlaps two owners. On SQLite
/// their commits are fenced on the stored checkpoint, so one resumes from the other's
/// checkpoint again and again; on the Kafka store both go on, writing the same records.
/// Either way the scorecard equals replay's.
fn two_owners_of_every_partition(kafka_store: bool) {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let mock = MockCluster::new(1).unwrap();
    mock.create_topic("deliveries", 4, 1).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (recs, _) = records();
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
    let mut sentinel =
        slatrack::source::generator::pilot(1, "zz-sentinel", start, 1000, 1).remove(0);
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
    if kafka_store {
        mock.create_topic("slatrack-windows", 1, 1).unwrap();
    }
    let location = if kafka_store {
        slatrack::store::Location::Kafka {
            brokers: mock.bootstrap_servers(),
            topic: "slatrack-windows".into(),
        }
    } else {
        slatrack::store::Location::Sqlite(store.clone())
    };
    let instance = |group: &str| {
        let mut cfg = demo_config(mock.bootstrap_servers(), &store);
        cfg.engine = Config::default().engine;
        cfg.metrics.listen = String::new();
        // SQLite: often, so that the two owners' commits interleave. Kafka: the mock
        // cluster keeps ≈ 5 MiB a partition, and each checkpoint carries the state.
        let interval_ms = if kafka_store { 1000 } else { 20 };
        cfg.service.checkpoint_interval = slatrack::config::Span(interval_ms * 1000);
        if let Some(k) = cfg.kafka.as_mut() {
            k.group_id = group.to_string();
            k.quarantine_topic = String::new();
        }
        let config = Arc::new(cfg);
        let (status, shutdown) = (
            Arc::new(Status::default()),
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
    let mut reader: Box<dyn PartitionStore> = match &location {
        slatrack::store::Location::Kafka { brokers, topic } => {
            Box::new(KafkaStore::open(brokers, topic, None, Mode::Checkpoints).unwrap())
        }
        slatrack::store::Location::Sqlite(p) => Box::new(Store::open(p).unwrap()),
    };
    let mut progress = || -> i64 {
        if reader.refresh().is_err() {
            return 0;
        }
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
    if kafka_store {
        assert_eq!(superseded, 0, "the Kafka store is not fenced");
    } else {
        assert!(
            superseded > 0,
            "both started without a checkpoint, so the later one's first commit was refused"
        );
    }

    let (replay_store, _) = replay::replay(
        dir.path(),
        config.clone(),
        recs.iter().map(|(_, v)| v).chain(&sentinels),
    );
    let live = scorecard_of(
        &slatrack::store::open_for_reading(&location, None).unwrap(),
        &config,
    );
    let offline = scorecard(&replay_store, &config);
    assert_eq!(live["platforms"], offline["platforms"]);
    assert_eq!(live["overall"], offline["overall"]);
    assert_eq!(live["rejected_by_reason"], offline["rejected_by_reason"]);
}

#[test]
fn two_owners_of_every_partition_on_one_sqlite_store_equal_replay() {
    two_owners_of_every_partition(false);
}

#[test]
fn two_owners_of_every_partition_on_one_kafka_store_equal_replay() {
    two_owners_of_every_partition(true);
}
