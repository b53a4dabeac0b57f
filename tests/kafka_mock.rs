//! The live path against librdkafka's in-process mock cluster (fast; the tansu suite is
//! the proof on a real broker): Kafka and `replay` give identical scorecards over the same
//! records, across a graceful stop and restart mid-stream; malformed records land in the
//! quarantine topic with their reason and the partitions keep flowing.

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Headers;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{ClientConfig, Message};
use slatrack::codec::Format;
use slatrack::config::Config;
use slatrack::runtime::RuntimeStatus;
use slatrack::service::{self, demo::demo_config};
use slatrack::store::SqliteStore;
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

fn records() -> (Vec<(String, Vec<u8>)>, usize) {
    let start = slatrack::time::parse_date("2025-10-01").unwrap();
    let events = slatrack::synthetic::pilot(
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
    let s = SqliteStore::open(store).unwrap();
    let from = slatrack::time::parse_date("2025-09-29").unwrap();
    let to = slatrack::time::parse_date("2025-10-06").unwrap();
    slatrack::scorecard::json::render(
        &slatrack::scorecard::build(
            &s,
            config.clone(),
            &slatrack::contract::Contracts::default(),
            "globex",
            from,
            to,
        )
        .unwrap(),
    )
}

fn run_until(
    config: &Arc<Config>,
    store: &std::path::Path,
    stop_after: Option<u64>,
    total: u64,
    drained: bool,
) -> Arc<RuntimeStatus> {
    let status = Arc::new(RuntimeStatus::default());
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
        let mut e = slatrack::synthetic::pilot(1, "zz-sentinel", start, 1000, 1).remove(0);
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
    let config = Arc::new(demo_config(
        mock.bootstrap_servers(),
        &store,
        Format::Protobuf,
    ));
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
            "slatrack_window_on_time_events{{tenant=\"globex\",platform=\"{p}\",window=\"7d\"}}"
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

/// Quarantined records the broker never acknowledges are not silent: once the producer
/// gives up on them, `settle` counts them as dropped (`slatrack_quarantine_dropped_total`)
/// while the checkpoint goes on (their rejections are counted in the store).
#[test]
fn quarantined_records_the_broker_never_acknowledges_are_counted_as_dropped() {
    let mock = MockCluster::new(2).unwrap();
    mock.create_topic("slatrack-quarantine", 1, 1).unwrap();
    mock.partition_leader("slatrack-quarantine", 0, Some(2))
        .unwrap();
    mock.broker_down(2).unwrap();
    let mut client = ClientConfig::new();
    client
        .set("bootstrap.servers", mock.bootstrap_servers())
        .set("message.timeout.ms", "500");
    let status = Arc::new(RuntimeStatus::default());
    let mut q =
        slatrack::sink::quarantine::Quarantine::new("slatrack-quarantine", &client, status.clone())
            .unwrap();
    for offset in 0..3 {
        q.send(
            b"not a record",
            slatrack::event::RejectReason::MalformedProtobuf,
            "deliveries",
            0,
            offset,
        );
    }
    assert_eq!(status.quarantined.load(Ordering::Relaxed), 3, "handed over");
    assert!(q.settle(), "every delivery ended (failed) within the flush");
    assert_eq!(
        status.quarantine_dropped.load(Ordering::Relaxed),
        3,
        "every undelivered record counted as dropped"
    );
}
