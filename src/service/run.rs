//! Wiring of `slatrack run`: two stages, one core each. The poll thread (the caller's)
//! polls records into batches; the apply thread decodes, aggregates and checkpoints them.
//! A bounded channel of batches is the backpressure between them.
//!
//! Batches queued across a rebalance are safe: a partition's records stay contiguous in
//! offset order and the partition set skips offsets below the restored checkpoint, so
//! nothing is applied twice and nothing is skipped.

use super::partition_set::checkpoints::Pace;
use super::partition_set::{lock, PartitionSet, RebalanceHandler};
use super::ServiceError;
use crate::codec::Format;
use crate::config::Config;
use crate::kafka::consumer::{Batch, Consumer, FetchMove, HighWatermarks};
use crate::runtime::RuntimeStatus;
use crate::sink::prometheus::{GaugeThread, Telemetry};
use crate::sink::quarantine::Quarantine;
use crate::sink::windows::{PublisherThread, WindowPublisher};
use crate::store::{Access, Location};
use crate::time::now_micros;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Batches polled but not yet applied (besides the one being filled and the one being
/// applied). Deep enough to ride out either thread being descheduled: on two cores shared
/// with librdkafka's threads, a thread loses the CPU for scheduler slices of
/// milliseconds, and a shallow queue then stalls the other stage. 32 batches are tens
/// of milliseconds of records at full speed.
const IN_FLIGHT: usize = 32;

/// How long the poll thread waits for a first record before it hands over an empty
/// batch. An empty batch tells the apply thread that nothing is waiting
/// (`Pace::Idle`), as does a batch that read every partition up to its high watermark
/// (`Batch::caught_up`); either commits a backlog's tail at once. The wait is how long
/// the end of a catch-up stays uncommitted where high watermarks cannot tell (see
/// `Consumer::fill`). An idle input costs one empty batch per wait.
const FILL_WAIT: Duration = Duration::from_millis(20);

/// How often the apply thread refreshes the lag gauges.
const LAG_INTERVAL: Duration = Duration::from_secs(1);

/// What the apply thread tells the poll thread.
struct Shared {
    /// The last checkpoint attempt succeeded (false: pause fetching).
    stored: AtomicBool,
    /// Group offsets to commit (advisory).
    commits: Mutex<Vec<(String, i32, i64)>>,
    /// A fatal error is waiting in the partition set.
    fatal: AtomicBool,
    /// Fetch positions the poll thread is to move.
    moves: Mutex<Vec<FetchMove>>,
    /// Moves done, with the generation of the records polled after them.
    moved: Mutex<Vec<(FetchMove, u64)>>,
}

impl Default for Shared {
    fn default() -> Self {
        Self {
            stored: AtomicBool::new(true),
            commits: Mutex::default(),
            fatal: AtomicBool::new(false),
            moves: Mutex::default(),
            moved: Mutex::default(),
        }
    }
}

fn take<T>(m: &Mutex<Vec<T>>) -> Vec<T> {
    std::mem::take(&mut *m.lock().unwrap_or_else(|p| p.into_inner()))
}

fn extend<T>(m: &Mutex<Vec<T>>, items: Vec<T>) {
    if !items.is_empty() {
        m.lock().unwrap_or_else(|p| p.into_inner()).extend(items);
    }
}

/// Runs until `shutdown` is set; then checkpoints every partition and returns.
pub fn run(
    config: Arc<Config>,
    store: Location,
    shutdown: Arc<AtomicBool>,
    status: Arc<RuntimeStatus>,
) -> Result<(), ServiceError> {
    let kafka = config.kafka.clone().ok_or(ServiceError::NoKafka)?;
    tracing::info!(kafka = %crate::kafka::describe(&kafka), store = %store, "starting");
    let store_location = store.clone();
    let store = crate::store::open(&store, Access::Create)?;
    let publisher = start_publisher(&kafka, &store_location)?;
    let quarantine = if kafka.quarantine_topic.is_empty() {
        None
    } else {
        let client = crate::kafka::client_config(&kafka)?;
        Some(Quarantine::new(
            &kafka.quarantine_topic,
            &client,
            status.clone(),
        )?)
    };
    let topics: Vec<(String, Format)> = kafka
        .topics
        .iter()
        .map(|t| (t.name.clone(), t.format))
        .collect();
    let contracts = Arc::new(crate::contract::Contracts::from_config(&config)?);
    let telemetry = Telemetry::new(config.clone(), contracts, status.clone());
    // Gauges are set on their own interval; the listener only renders them.
    let gauges = if config.metrics.listen.is_empty() {
        None
    } else {
        let gauges =
            GaugeThread::spawn(telemetry.clone()).map_err(|source| ServiceError::Thread {
                name: "gauge",
                source,
            })?;
        serve_metrics(&config.metrics.listen, &telemetry, &status)?;
        Some(gauges)
    };
    let generation = Arc::new(AtomicU64::new(0));
    let set = Arc::new(Mutex::new(PartitionSet {
        config: config.clone(),
        store,
        topics,
        parts: BTreeMap::new(),
        quarantine,
        status: status.clone(),
        telemetry,
        fatal: None,
        poisoned: false,
        to_commit: Vec::new(),
        generation: generation.clone(),
        seeks: Vec::new(),
        resumptions: 0,
        busy_records: 0,
        store_location,
    }));
    let handler = Arc::new(RebalanceHandler(set.clone()));
    let mut consumer = Consumer::subscribe(&kafka, handler, status, generation)?;

    let (full_tx, full_rx) = std::sync::mpsc::sync_channel::<Batch>(IN_FLIGHT);
    let (empty_tx, empty_rx) = std::sync::mpsc::channel::<Batch>();
    for _ in 0..IN_FLIGHT + 1 {
        let _ = empty_tx.send(Batch::default());
    }
    let shared = Arc::new(Shared::default());
    let publish = Duration::from_micros(config.metrics.publish_interval.0 as u64);
    let worker = {
        let (set, shared, high) = (set.clone(), shared.clone(), consumer.high_watermarks());
        std::thread::Builder::new()
            .name("slatrack-apply".into())
            .spawn(move || apply_loop(&set, &shared, &high, publish, full_rx, empty_tx))
            .map_err(|source| ServiceError::Thread {
                name: "apply",
                source,
            })?
    };

    let result = poll_loop(&mut consumer, &set, &shared, &shutdown, &full_tx, &empty_rx);
    drop(full_tx);
    let panicked = worker.join().is_err();
    let mut s = lock(&set);
    if panicked {
        // The panic may have left a record half applied, whether or not it held the lock.
        s.poisoned = true;
        tracing::error!("{}", ServiceError::Poisoned);
    } else {
        tracing::info!("shutting down: checkpointing every partition");
    }
    s.checkpoint_due(Pace::All);
    if let Some(q) = s.quarantine.as_mut() {
        q.flush();
    }
    let mut commits = std::mem::take(&mut s.to_commit);
    drop(s);
    commits.extend(take(&shared.commits));
    // What the last checkpoints committed is published, and the gauges show it.
    if let Some(p) = publisher {
        p.finish();
    }
    if let Some(g) = gauges {
        g.finish();
    }
    if panicked {
        drop(consumer);
        return Err(ServiceError::Poisoned);
    }
    consumer.commit_offsets(&commits);
    drop(consumer);
    if result.is_ok() {
        tracing::info!("stopped cleanly");
    }
    result
}

/// Starts the thread that publishes queued windows to `kafka.windows_topic`, if set, on
/// its own store connection.
fn start_publisher(
    kafka: &crate::config::KafkaConfig,
    location: &Location,
) -> Result<Option<PublisherThread>, ServiceError> {
    if kafka.windows_topic.is_empty() {
        return Ok(None);
    }
    let client = crate::kafka::client_config(kafka)?;
    let store = crate::store::open(location, Access::Create)?;
    let publisher = WindowPublisher::new(&kafka.windows_topic, &client, store)?;
    let thread = PublisherThread::spawn(publisher).map_err(|source| ServiceError::Thread {
        name: "window publisher",
        source,
    })?;
    tracing::info!(topic = %kafka.windows_topic, "publishing closed windows");
    Ok(Some(thread))
}

/// Starts the `/metrics`, `/healthz`, `/readyz` listener and records its address.
fn serve_metrics(
    listen: &str,
    telemetry: &Arc<Telemetry>,
    status: &RuntimeStatus,
) -> Result<(), ServiceError> {
    let addr = crate::sink::http::serve(listen, telemetry.clone()).map_err(|source| {
        ServiceError::Listen {
            listen: listen.to_string(),
            source,
        }
    })?;
    tracing::info!(url = %format!("http://{addr}/metrics"), "metrics endpoint up (/healthz, /readyz too)");
    if let Ok(mut a) = status.metrics_addr.lock() {
        *a = Some(addr);
    }
    Ok(())
}

/// The poll thread: fills batches until `shutdown` is set or a fatal error waits.
fn poll_loop(
    consumer: &mut Consumer,
    set: &Mutex<PartitionSet>,
    shared: &Shared,
    shutdown: &AtomicBool,
    full: &SyncSender<Batch>,
    empty: &Receiver<Batch>,
) -> Result<(), ServiceError> {
    while !shutdown.load(Ordering::Relaxed) {
        if shared.fatal.load(Ordering::Relaxed) {
            if let Some(f) = lock(set).fatal.take() {
                return Err(f);
            }
        }
        // Never poll without a batch to hold what comes back: a polled record that is not
        // applied would be skipped for good (librdkafka has moved past it). The apply
        // thread returns batches within one batch's work, well inside max.poll.interval.ms.
        let mut batch = match empty.recv_timeout(Duration::from_millis(100)) {
            Ok(b) => b,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => return Err(ServiceError::ApplyStopped),
        };
        batch.clear();
        consumer.fill(&mut batch, FILL_WAIT);
        if full.send(batch).is_err() {
            return Err(ServiceError::ApplyStopped);
        }
        consumer.commit_offsets(&take(&shared.commits));
        let moves = take(&shared.moves);
        if !moves.is_empty() {
            let (done, retry) = consumer.move_fetching(moves);
            extend(&shared.moved, done);
            extend(&shared.moves, retry);
        }
        // Backpressure: while the store refuses writes, stop fetching (polling goes on so
        // the group membership stays alive) instead of buffering without bound.
        consumer.set_paused(!shared.stored.load(Ordering::Relaxed));
    }
    Ok(())
}

/// The apply thread: applies batches, checkpoints what is due, publishes freshness and
/// lag, and hands batches back for reuse.
fn apply_loop(
    set: &Mutex<PartitionSet>,
    shared: &Shared,
    high: &HighWatermarks,
    publish: Duration,
    full: Receiver<Batch>,
    empty: Sender<Batch>,
) {
    let mut last_lag = Instant::now();
    let mut last_freshness = Instant::now();
    // Folding starts a minute after start-up, then goes a day per loop while days remain.
    let mut next_fold = Instant::now() + Duration::from_secs(60);
    loop {
        let batch = match full.recv_timeout(Duration::from_millis(100)) {
            Ok(b) => Some(b),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => return,
        };
        // Taken after the batch: a move is published before any record polled after it.
        let moved = take(&shared.moved);
        let mut s = lock(set);
        if !moved.is_empty() {
            s.seeked(moved);
        }
        if let Some(b) = &batch {
            s.apply(b, now_micros());
        }
        // Nothing is waiting after a batch that read every partition up to its high
        // watermark, or one the poll thread closed empty (nothing arrived within its
        // wait), as after a timed-out wait.
        let pace = if batch
            .as_ref()
            .is_some_and(|b| !b.items.is_empty() && !b.caught_up)
        {
            Pace::Busy
        } else {
            Pace::Idle
        };
        let stored = s.checkpoint_due(pace);
        shared.stored.store(stored, Ordering::Relaxed);
        if s.fatal.is_some() {
            shared.fatal.store(true, Ordering::Relaxed);
        }
        let commits = std::mem::take(&mut s.to_commit);
        let moves = std::mem::take(&mut s.seeks);
        if last_freshness.elapsed() >= publish {
            last_freshness = Instant::now();
            s.publish_freshness();
        }
        if last_lag.elapsed() >= LAG_INTERVAL {
            last_lag = Instant::now();
            let high = high.lock().map(|h| h.clone()).unwrap_or_default();
            s.update_lag(&high);
        }
        if Instant::now() >= next_fold && !s.status.store_failing() {
            next_fold = if s.fold_old_rows() {
                Instant::now()
            } else {
                Instant::now() + super::partition_set::checkpoints::FOLD_INTERVAL
            };
        }
        drop(s);
        extend(&shared.commits, commits);
        extend(&shared.moves, moves);
        if !stored {
            std::thread::sleep(Duration::from_millis(500));
        }
        if let Some(b) = batch {
            let _ = empty.send(b);
        }
    }
}
