//! `slatrack demo`: the real service against librdkafka's in-process mock cluster, fed by
//! the live generator, printing the scorecard every few seconds. No broker to install.
//!
//! Demo settings differ from production defaults so something is visible within seconds:
//! 10 s buckets, 10 s allowed lateness, checkpoints every second.

use super::{run, ServiceError};
use crate::codec::Format;
use crate::config::{Config, ConfigDuration, KafkaConfig, TopicConfig, DEFAULT_METRICS_LISTEN};
use crate::kafka::mock::MockKafka;
use crate::runtime::RuntimeStatus;
use crate::store::SqliteStore;
use crate::synthetic::live::{produce, LiveGenerator, Scenario};
use crate::time::{now_micros, MICROS_PER_DAY, MICROS_PER_SEC};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const TOPIC: &str = "deliveries";

/// `println!` that returns a closed stdout (`slatrack demo | head`) as an error instead of
/// panicking.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($arg)*).map_err(ServiceError::Output)?
    }};
}

/// The demo's settings, its one topic carrying records in `format`.
pub fn demo_config(brokers: String, store: &Path, format: Format) -> Config {
    let mut c = Config::default();
    c.engine.bucket = ConfigDuration(10 * MICROS_PER_SEC);
    c.engine.allowed_lateness = ConfigDuration(10 * MICROS_PER_SEC);
    c.service.checkpoint_interval = ConfigDuration(MICROS_PER_SEC);
    c.service.idle_timeout = ConfigDuration(10 * MICROS_PER_SEC);
    c.store.path = store.to_path_buf();
    c.kafka = Some(KafkaConfig {
        brokers,
        group_id: "slatrack-demo".into(),
        topics: vec![TopicConfig {
            name: TOPIC.into(),
            format,
        }],
        quarantine_topic: "slatrack-quarantine".into(),
        windows_topic: String::new(),
        fetch_connections: crate::config::DEFAULT_FETCH_CONNECTIONS,
        properties: Default::default(),
    });
    c
}

/// The demo's options.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Stop after this long (default: until `shutdown`).
    pub duration: Option<Duration>,
    /// Logical events per second.
    pub rate: f64,
    /// How the generator encodes records, and so how the service decodes them.
    pub format: Format,
    /// Where to serve `/metrics`, `/healthz`, `/readyz`. `None`: `metrics.listen`'s default, or a
    /// free port when another process holds it; `Some("")`: no listener.
    pub listen: Option<String>,
}

/// The address to serve metrics on: the asked one, or the default while it is free, or
/// any free loopback port (said on stdout).
fn listen_address(asked: Option<&str>) -> Result<String, ServiceError> {
    if let Some(a) = asked {
        return Ok(a.to_string());
    }
    Ok(match std::net::TcpListener::bind(DEFAULT_METRICS_LISTEN) {
        Ok(_) => DEFAULT_METRICS_LISTEN.to_string(),
        Err(e) => {
            say!("demo: {DEFAULT_METRICS_LISTEN} is taken ({e}); serving metrics on a free port instead (choose one with --listen)");
            "127.0.0.1:0".to_string()
        }
    })
}

/// Runs until `duration` passes or `shutdown` is set. Each run starts a new in-process
/// cluster, so the demo's store from an earlier run (whose checkpoints name offsets of a
/// cluster that is gone) is removed first.
pub fn demo(dir: &Path, opts: &DemoOptions, shutdown: Arc<AtomicBool>) -> Result<(), ServiceError> {
    let (duration, rate) = (opts.duration, opts.rate);
    std::fs::create_dir_all(dir).map_err(|source| ServiceError::Io {
        what: "cannot create the demo directory",
        path: dir.to_path_buf(),
        source,
    })?;
    let store_path = dir.join("slatrack.db");
    SqliteStore::remove(&store_path).map_err(|source| ServiceError::Io {
        what: "cannot remove the previous demo store",
        path: store_path.clone(),
        source,
    })?;
    let mock = MockKafka::start(&[(TOPIC, 4), ("slatrack-quarantine", 1)])?;
    let mut config = demo_config(mock.brokers(), &store_path, opts.format);
    config.metrics.listen = listen_address(opts.listen.as_deref())?;
    let config = Arc::new(config);
    say!(
        "demo: mock Kafka cluster at {}, topic {TOPIC} (4 partitions), store {}",
        mock.brokers(),
        store_path.display()
    );
    say!("demo: producing Globex-shaped traffic at {rate} events/s; scorecard every 5 s (Ctrl-C to stop)");

    let status = Arc::new(RuntimeStatus::default());
    let stop_gen = Arc::new(AtomicBool::new(false));
    let client = crate::kafka::client_config(config.kafka.as_ref().ok_or(ServiceError::NoKafka)?)?;
    let generator = LiveGenerator::new(
        now_micros() as u64,
        "globex",
        Scenario::Steady,
        opts.format,
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
    wait_for_metrics_url(&status, &service)?;
    let mut last_print = Instant::now();
    while !shutdown.load(Ordering::Relaxed)
        && duration.is_none_or(|d| start.elapsed() < d)
        && !service.is_finished()
    {
        std::thread::sleep(Duration::from_millis(200));
        if last_print.elapsed() >= Duration::from_secs(5) {
            last_print = Instant::now();
            print_scorecard(&config, &store_path, &status, start.elapsed())?;
        }
    }
    stop_gen.store(true, Ordering::Relaxed);
    let produced = producer
        .join()
        .map_err(|_| ServiceError::Panicked("generator"))??;
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
        .map_err(|_| ServiceError::Panicked("service"))??;
    say!("demo: produced {produced} records; final scorecard:");
    print_scorecard(&config, &store_path, &status, start.elapsed())?;
    Ok(())
}

fn wait_for_metrics_url(
    status: &RuntimeStatus,
    service: &std::thread::JoinHandle<Result<(), ServiceError>>,
) -> Result<(), ServiceError> {
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(10) && !service.is_finished() {
        if let Some(addr) = status.metrics_addr.lock().ok().and_then(|a| *a) {
            say!("demo: Prometheus metrics at http://{addr}/metrics (also /healthz, /readyz)");
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

fn print_scorecard(
    config: &Arc<Config>,
    store_path: &Path,
    status: &RuntimeStatus,
    elapsed: Duration,
) -> Result<(), ServiceError> {
    let today = now_micros().div_euclid(MICROS_PER_DAY) * MICROS_PER_DAY;
    say!(
        "\n--- {:>4}s: records {} counted {} duplicates {} rejected {} checkpoints {} ---",
        elapsed.as_secs(),
        status.records.load(Ordering::Relaxed),
        status.counted.load(Ordering::Relaxed),
        status.duplicates.load(Ordering::Relaxed),
        status.rejected.load(Ordering::Relaxed),
        status.commits.load(Ordering::Relaxed),
    );
    match SqliteStore::open_read_only(store_path).and_then(|s| {
        // The demo's config has no contracts: UTC days.
        let contracts = crate::contract::Contracts::default();
        crate::scorecard::build(
            &s,
            config.clone(),
            &contracts,
            "globex",
            today,
            today + MICROS_PER_DAY,
        )
    }) {
        Ok(sc) => {
            let md = crate::scorecard::markdown::render(&sc);
            // The live view: the status table and the headline figures.
            for line in md.lines().take_while(|l| !l.starts_with("### Weekly")) {
                say!("{line}");
            }
        }
        Err(e) => say!("(scorecard not available yet: {e})"),
    }
    Ok(())
}
