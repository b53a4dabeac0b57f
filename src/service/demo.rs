//! `slatrack demo`: the real service against librdkafka's in-process mock cluster, fed by
//! the live generator, printing the scorecard every few seconds. No broker to install.
//!
//! Demo settings differ from production defaults so something is visible within seconds:
//! 10 s buckets, 10 s allowed lateness, checkpoints every second.

use super::generate::{produce, LiveGenerator, Scenario};
use super::{run, ServiceError, Status};
use crate::codec::Format;
use crate::config::{Config, KafkaConfig, Span, TopicConfig};
use crate::store::Store;
use crate::time::{now_micros, MICROS_PER_DAY, MICROS_PER_SEC};
use rdkafka::mocking::MockCluster;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const TOPIC: &str = "deliveries";

pub fn demo_config(brokers: String, store: &Path) -> Config {
    let mut c = Config::default();
    c.engine.bucket = Span(10 * MICROS_PER_SEC);
    c.engine.allowed_lateness = Span(10 * MICROS_PER_SEC);
    c.service.checkpoint_interval = Span(MICROS_PER_SEC);
    c.service.idle_timeout = Span(10 * MICROS_PER_SEC);
    c.store.path = store.to_path_buf();
    c.kafka = Some(KafkaConfig {
        brokers,
        group_id: "slatrack-demo".into(),
        topics: vec![TopicConfig {
            name: TOPIC.into(),
            format: Format::Protobuf,
        }],
        quarantine_topic: "slatrack-quarantine".into(),
        properties: Default::default(),
    });
    c
}

/// Runs until `duration` passes or `shutdown` is set.
pub fn demo(
    dir: &Path,
    duration: Option<Duration>,
    rate: f64,
    shutdown: Arc<AtomicBool>,
) -> Result<(), ServiceError> {
    std::fs::create_dir_all(dir)
        .map_err(|e| ServiceError::Fatal(format!("cannot create {}: {e}", dir.display())))?;
    let store_path = dir.join("slatrack.db");
    let mock = MockCluster::new(1)?;
    mock.create_topic(TOPIC, 4, 1)?;
    mock.create_topic("slatrack-quarantine", 1, 1)?;
    let config = Arc::new(demo_config(mock.bootstrap_servers(), &store_path));
    println!(
        "demo: mock Kafka cluster at {}, topic {TOPIC} (4 partitions), store {}",
        mock.bootstrap_servers(),
        store_path.display()
    );
    println!("demo: producing Globex-shaped traffic at {rate} events/s; scorecard every 5 s (Ctrl-C to stop)");

    let status = Arc::new(Status::default());
    let stop_gen = Arc::new(AtomicBool::new(false));
    let client =
        crate::source::kafka::client_config(config.kafka.as_ref().ok_or(ServiceError::NoKafka)?)?;
    let generator = LiveGenerator::new(
        now_micros() as u64,
        "globex",
        Scenario::Steady,
        Format::Protobuf,
        now_micros(),
    );
    let gen_stop = stop_gen.clone();
    let producer =
        std::thread::spawn(move || produce(&client, TOPIC, generator, rate, None, &gen_stop));
    let svc_stop = shutdown.clone();
    let (svc_cfg, svc_status, svc_store) = (config.clone(), status.clone(), store_path.clone());
    let service = std::thread::spawn(move || {
        run(
            svc_cfg,
            crate::store::Location::Sqlite(svc_store),
            svc_stop,
            svc_status,
        )
    });

    let start = Instant::now();
    wait_for_metrics_url(&status, &service);
    let mut last_print = Instant::now();
    while !shutdown.load(Ordering::Relaxed)
        && duration.is_none_or(|d| start.elapsed() < d)
        && !service.is_finished()
    {
        std::thread::sleep(Duration::from_millis(200));
        if last_print.elapsed() >= Duration::from_secs(5) {
            last_print = Instant::now();
            print_scorecard(&config, &store_path, &status, start.elapsed());
        }
    }
    stop_gen.store(true, Ordering::Relaxed);
    let produced = producer
        .join()
        .map_err(|_| ServiceError::Fatal("generator thread panicked (our bug)".into()))??;
    // Let the service drain what was produced, then stop it.
    let drain = Instant::now();
    while status.records.load(Ordering::Relaxed)
        + status.skipped_below_checkpoint.load(Ordering::Relaxed)
        < produced
        && drain.elapsed() < Duration::from_secs(10)
        && !service.is_finished()
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    shutdown.store(true, Ordering::Relaxed);
    service
        .join()
        .map_err(|_| ServiceError::Fatal("service thread panicked (our bug)".into()))??;
    println!("demo: produced {produced} records; final scorecard:");
    print_scorecard(&config, &store_path, &status, start.elapsed());
    Ok(())
}

fn wait_for_metrics_url(
    status: &Status,
    service: &std::thread::JoinHandle<Result<(), ServiceError>>,
) {
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(10) && !service.is_finished() {
        if let Some(addr) = status.metrics_addr.lock().ok().and_then(|a| *a) {
            println!("demo: Prometheus metrics at http://{addr}/metrics (also /healthz, /readyz)");
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn print_scorecard(config: &Arc<Config>, store_path: &Path, status: &Status, elapsed: Duration) {
    let today = now_micros().div_euclid(MICROS_PER_DAY) * MICROS_PER_DAY;
    println!(
        "\n--- {:>4}s: records {} counted {} duplicates {} rejected {} checkpoints {} ---",
        elapsed.as_secs(),
        status.records.load(Ordering::Relaxed),
        status.counted.load(Ordering::Relaxed),
        status.duplicates.load(Ordering::Relaxed),
        status.rejected.load(Ordering::Relaxed),
        status.commits.load(Ordering::Relaxed),
    );
    match Store::open(store_path).and_then(|s| {
        crate::scorecard::build(&s, config.clone(), "globex", today, today + MICROS_PER_DAY)
    }) {
        Ok(sc) => {
            let md = crate::scorecard::markdown::render(&sc);
            // The live view: the status table and the headline figures.
            for line in md.lines().take_while(|l| !l.starts_with("### Weekly")) {
                println!("{line}");
            }
        }
        Err(e) => println!("(scorecard not available yet: {e})"),
    }
}
