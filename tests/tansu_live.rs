//! The live path on a real Kafka-protocol broker (tansu, memory storage, 127.0.0.1),
//! with `slatrack run` as a real process: SIGKILLed at several points, SIGTERMed,
//! rebalanced between two instances — the final scorecard always equals `replay` of the
//! same records. Built with `--features integration` (scripts/test-all.sh).
#![cfg(feature = "integration")]

#[path = "support/http.rs"]
mod http;
#[path = "support/pilot.rs"]
mod pilot;
#[path = "support/postgres.rs"]
mod postgres;
#[path = "support/replay.rs"]
mod replay;
#[path = "support/tansu.rs"]
mod tansu;
#[path = "support/wait.rs"]
mod wait;
#[path = "support/windows.rs"]
mod windows;

use postgres::Postgres;
use prost::Message as _;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Headers;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{ClientConfig, Message};
use slatrack::config::Config;
use slatrack::store::{Location, PartitionStore, PgStore, SqliteStore};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;
use tansu::Tansu;
use wait::wait_until;

const TOPIC: &str = "deliveries";

const PARTITIONS: u32 = 4;

/// How producers pick a record's partition.
#[derive(Clone, Copy)]
enum Keying {
    /// By event id: an event's attempts share a partition.
    EventId,
    /// Round robin over logical events: a (tenant, platform) bucket is split across every
    /// partition, so the scorecard must merge partials.
    RoundRobin,
}

struct Fixture {
    /// (partition, payload) in production order.
    records: Vec<(i32, Vec<u8>)>,
    /// Each record's completion time (a malformed record: its predecessor's), for the
    /// replay of the records sorted by it.
    times: Vec<i64>,
    per_partition: Vec<i64>,
    malformed: usize,
    late: usize,
}

fn fixture(events: u64, partitions: u32, keying: Keying) -> Fixture {
    let start = slatrack::time::parse_date("2025-10-01").unwrap();
    let evs = slatrack::synthetic::pilot(
        21,
        "globex",
        start,
        6 * slatrack::time::MICROS_PER_HOUR,
        events,
    );
    let mut logical = std::collections::HashMap::new();
    let mut part = |id: &str| {
        let n = logical.len() as u32;
        let rr = *logical.entry(id.to_string()).or_insert(n);
        (match keying {
            Keying::EventId => id
                .bytes()
                .fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b))),
            // Attempts of one event still share a partition (a producer retry resends to
            // the partition it chose), logical events rotate.
            Keying::RoundRobin => rr,
        } % partitions) as i32
    };
    let mut records = Vec::new();
    let mut times = Vec::new();
    let (mut malformed, mut late) = (0, 0);
    for (i, e) in evs.iter().enumerate() {
        let p = part(&e.event_id);
        records.push((p, slatrack::codec::protobuf::encode(e)));
        times.push(e.completed_at);
        if i % 1999 == 1998 {
            // Eight days behind the stream: past the 7-day correction horizon, too late for
            // the live shard and for the replay alike.
            let mut l = e.clone();
            l.event_id = format!("late-{i}");
            for t in [&mut l.enqueued_at, &mut l.started_at, &mut l.completed_at] {
                *t -= 8 * slatrack::time::MICROS_PER_DAY;
            }
            records.push((p, slatrack::codec::protobuf::encode(&l)));
            times.push(l.completed_at);
            late += 1;
        }
        if i % 50 == 0 {
            records.push((p, slatrack::codec::protobuf::encode(e)));
            times.push(e.completed_at);
        }
        if i % 997 == 0 {
            records.push((p, b"\x0a\x50truncated".to_vec()));
            times.push(e.completed_at);
            malformed += 1;
        }
    }
    // Disorder within the allowed lateness: every third run of 8 records (≈1.5 s of event
    // time) is produced backwards. The replay reads the same order, so parity still holds.
    for (i, run) in records.chunks_mut(8).enumerate() {
        if i % 3 == 0 {
            run.reverse();
        }
    }
    for (i, run) in times.chunks_mut(8).enumerate() {
        if i % 3 == 0 {
            run.reverse();
        }
    }
    // One record per partition a day later closes every bucket of the test period.
    let mut s = evs[0].clone();
    for p in 0..partitions as i32 {
        s.tenant = "zz-sentinel".into();
        s.event_id = format!("sentinel-{p}");
        s.outcome = slatrack::event::Outcome::Delivered;
        s.attempt = 1;
        for t in [&mut s.enqueued_at, &mut s.started_at, &mut s.completed_at] {
            *t += slatrack::time::MICROS_PER_DAY;
        }
        records.push((p, slatrack::codec::protobuf::encode(&s)));
        times.push(s.completed_at);
    }
    let mut per_partition = vec![0; partitions as usize];
    for (p, _) in &records {
        per_partition[*p as usize] += 1;
    }
    Fixture {
        records,
        times,
        per_partition,
        malformed,
        late,
    }
}

impl Fixture {
    /// The producer of Workday's records stalls for the first 15 minutes of event time,
    /// then flushes its backlog while the others go on: the held records are spread evenly
    /// over the stream from its first to its last eighth, up to hours behind it (within
    /// the correction horizon, far past the lateness).
    fn stall_workday(&mut self) {
        let start = self.stream_start();
        let stalled = |p: &[u8], t: i64| {
            t < start + 15 * 60_000_000
                && slatrack::proto::DeliveryEvent::decode(p).is_ok_and(|e| e.platform == "workday")
        };
        let (mut held, mut rest) = (Vec::new(), Vec::new());
        for (r, t) in self.records.drain(..).zip(self.times.drain(..)) {
            if stalled(&r.1, t) {
                held.push((r, t));
            } else {
                rest.push((r, t));
            }
        }
        assert!(held.len() > 500, "a backlog: {}", held.len());
        let n = rest.len();
        let (from, to) = (n / 8, 7 * n / 8);
        let mut held = held.into_iter().peekable();
        let per = (to - from) as f64 / held.len() as f64;
        let mut next_at = from as f64;
        for (i, (r, t)) in rest.into_iter().enumerate() {
            while i >= from && i as f64 >= next_at {
                let Some((hr, ht)) = held.next() else { break };
                self.records.push(hr);
                self.times.push(ht);
                next_at += per;
            }
            self.records.push(r);
            self.times.push(t);
        }
        for (hr, ht) in held {
            self.records.push(hr);
            self.times.push(ht);
        }
    }

    /// The first completion time of the stream (the planted too-late records are days
    /// before it).
    fn stream_start(&self) -> i64 {
        self.times
            .iter()
            .take(64)
            .copied()
            .min()
            .unwrap_or_default()
    }

    /// The records sorted by completion time (stable: each partition's records keep their
    /// order within an instant), but for the planted too-late records: they stay where
    /// they were produced, days behind the stream, and are too late in any replay.
    fn sorted(&self) -> Vec<&Vec<u8>> {
        let start = self.stream_start();
        let n = self.records.len();
        let mut in_stream: Vec<usize> = (0..n).filter(|&i| self.times[i] >= start).collect();
        in_stream.sort_by_key(|&i| self.times[i]);
        let mut next = in_stream.into_iter();
        (0..n)
            .filter_map(|i| {
                if self.times[i] < start {
                    Some(i)
                } else {
                    next.next()
                }
            })
            .map(|i| &self.records[i].1)
            .collect()
    }
}

fn produce(brokers: &str, records: &[(i32, Vec<u8>)]) {
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "20")
        .create()
        .unwrap();
    for (p, v) in records {
        tansu::send_blocking(
            &producer,
            BaseRecord::to(TOPIC).partition(*p).key("k").payload(v),
        );
    }
    producer.flush(Duration::from_secs(60)).unwrap();
}

/// `connections`: `kafka.fetch_connections` (the default is 2; tests vary it so the one
/// connection and several fetchers are exercised too).
fn write_config(dir: &Path, brokers: &str, store: &str, connections: usize) -> PathBuf {
    let path = dir.join("slatrack.toml");
    // SLATRACK_TEST_KAFKA_DEBUG=cgrp,… turns on librdkafka's debug contexts for a failure
    // to be read in the kept logs (with SLATRACK_TEST_LOG=info,librdkafka=debug).
    let debug = std::env::var("SLATRACK_TEST_KAFKA_DEBUG")
        .map(|d| format!("\"debug\" = \"{d}\"\n"))
        .unwrap_or_default();
    let text = format!(
        r#"[store]
path = "{store}"
[service]
checkpoint_interval = "100ms"
[metrics]
listen = "127.0.0.1:0"
[kafka]
brokers = "{brokers}"
group_id = "slatrack-it"
fetch_connections = {connections}
quarantine_topic = "slatrack-quarantine"
windows_topic = "slatrack-windows"
[[kafka.topics]]
name = "{TOPIC}"
format = "protobuf"
[kafka.properties]
"session.timeout.ms" = "2000"
"heartbeat.interval.ms" = "500"
{debug}"#
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// A `slatrack run` process writing its log to a file. Killed on drop, so a failing test
/// leaves no instance behind to hold a port or spin on a vanished broker.
struct Instance {
    child: Child,
    log: PathBuf,
}

impl Instance {
    fn spawn(config: &Path, log: &Path) -> Instance {
        Self::spawn_env(config, log, &[])
    }

    /// As [`Instance::spawn`], with environment overrides (`SLATRACK_METRICS_LISTEN`).
    fn spawn_env(config: &Path, log: &Path, env: &[(&str, &str)]) -> Instance {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_slatrack"))
            .args(["run", "--config"])
            .arg(config)
            .env(
                "SLATRACK_LOG",
                std::env::var("SLATRACK_TEST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::from(out))
            .spawn()
            .unwrap();
        Instance {
            child,
            log: log.to_path_buf(),
        }
    }

    /// [`Instance::spawn_env`], returned once it owns partitions (`name` for the failure
    /// message; `limit` as the group may first have to settle).
    fn joined(config: &Path, log: &Path, env: &[(&str, &str)], name: &str, limit: u64) -> Instance {
        let i = Self::spawn_env(config, log, env);
        wait_until(
            &format!("{name} to own partitions"),
            Duration::from_secs(limit),
            || !i.assigned().is_empty(),
        );
        i
    }

    /// Partitions of every "partition assigned" line so far, in log order.
    fn assigned(&self) -> Vec<i32> {
        assigned_in(&self.log)
    }

    /// No flush, no final checkpoint.
    fn sigkill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    fn sigterm(&mut self) -> std::process::ExitStatus {
        let st = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(st.success());
        self.child.wait().unwrap()
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The last `n` lines of a `slatrack run` log, for assertion messages.
fn log_tail(log: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn assigned_in(log: &Path) -> Vec<i32> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("partition assigned"))
        .filter_map(|l| {
            let src = l.split("source=kafka:").nth(1)?;
            let part = src.split_whitespace().next()?.rsplit('/').next()?;
            part.parse().ok()
        })
        .collect()
}

/// Where `slatrack run` keeps windows and checkpoints in a test.
enum StoreKind {
    Sqlite,
    Postgres,
}

/// Reads a store's checkpoints while the service writes it.
enum Watch {
    Sqlite(PathBuf, u32),
    Postgres(Box<slatrack::store::PgTarget>, u32),
}

impl Watch {
    fn new(location: &str, partitions: u32) -> Watch {
        match Location::parse(location).unwrap() {
            Location::Sqlite(p) => Watch::Sqlite(p, partitions),
            Location::Postgres(t) => Watch::Postgres(t, partitions),
        }
    }

    /// Records covered by checkpoints, summed over partitions.
    fn progress(&mut self) -> i64 {
        let n = match self {
            Watch::Sqlite(_, n) | Watch::Postgres(_, n) => *n,
        };
        let sources = (0..n).map(|p| format!("kafka:{TOPIC}/{p}"));
        match self {
            Watch::Sqlite(path, _) => {
                let Ok(mut s) = SqliteStore::open(path) else {
                    return 0;
                };
                sources.map(|src| next_offset(&mut s, &src)).sum()
            }
            // A connection per look: the server may be down and back meanwhile.
            Watch::Postgres(t, _) => {
                let Ok(mut s) = PgStore::open_read_only((**t).clone()) else {
                    return 0;
                };
                sources.map(|src| next_offset(&mut s, &src)).sum()
            }
        }
    }
}

fn next_offset(s: &mut dyn PartitionStore, source: &str) -> i64 {
    s.checkpoint(source)
        .ok()
        .flatten()
        .map_or(0, |c| c.next_offset)
}

fn scorecard(location: &str) -> serde_json::Value {
    let s = slatrack::store::open(
        &Location::parse(location).unwrap(),
        slatrack::store::Access::ReadOnly,
    )
    .unwrap();
    // From a week before the events: the planted too-late records are eight days behind.
    let from = slatrack::time::parse_date("2025-09-22").unwrap();
    let to = slatrack::time::parse_date("2025-10-06").unwrap();
    let sc = slatrack::scorecard::build(
        &*s,
        Arc::new(Config::default()),
        &slatrack::contract::Contracts::default(),
        "globex",
        from,
        to,
    )
    .unwrap();
    let v = slatrack::scorecard::json::render(&sc);
    assert!(
        v["rejected_by_reason"]["too_late"].as_u64() > Some(0),
        "late records are part of the tenant's scorecard: {v}"
    );
    v
}

fn replay_scorecard(dir: &Path, f: &Fixture) -> serde_json::Value {
    // Production order: each partition's records keep their relative order.
    let (store, _) = replay::replay(
        dir,
        Arc::new(Config::default()),
        f.records.iter().map(|(_, v)| v),
    );
    scorecard(&store.display().to_string())
}

/// Quarantined records by reason, each a distinct (partition, offset) origin, read until
/// `expected` origins arrived (bounded); quarantine is at-least-once, so copies after a
/// crash collapse here.
fn quarantined(brokers: &str, expected: usize) -> BTreeMap<String, BTreeSet<(String, String)>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "quarantine-reader")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "2000")
        .create()
        .unwrap();
    consumer.subscribe(&["slatrack-quarantine"]).unwrap();
    let mut seen: BTreeMap<String, BTreeSet<(String, String)>> = BTreeMap::new();
    wait_until("the quarantined records", Duration::from_secs(60), || {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            let h = m.headers().unwrap();
            let get = |k: &str| {
                h.iter()
                    .find(|x| x.key == k)
                    .and_then(|x| x.value)
                    .map(|v| String::from_utf8_lossy(v).to_string())
                    .unwrap()
            };
            let reason = get("reason");
            match reason.as_str() {
                "malformed_protobuf" => {
                    assert_eq!(m.payload(), Some(&b"\x0a\x50truncated"[..]))
                }
                "too_late" => {
                    let ev = slatrack::proto::DeliveryEvent::decode(m.payload().unwrap()).unwrap();
                    assert!(
                        ev.event_id.starts_with("late-"),
                        "only the planted records are late: {}",
                        ev.event_id
                    );
                }
                other => panic!("unexpected quarantine reason {other}"),
            }
            seen.entry(reason)
                .or_default()
                .insert((get("source.partition"), get("source.offset")));
        }
        seen.values().map(BTreeSet::len).sum::<usize>() >= expected
    });
    seen
}

/// What every live test ends with: the scorecard read from the store equals the replay of
/// the produced records; with a flushed backlog, the corrections are counted as such; the
/// quarantine holds exactly the planted bad records.
fn assert_live_equals_replay(
    dir: &Path,
    broker: &Tansu,
    f: &Fixture,
    store: &str,
    producers: Producers,
) {
    let live = scorecard(store);
    assert_eq!(live, replay_scorecard(dir, f));
    if producers == Producers::WorkdayStallsThenFlushes {
        assert_backlog_counted(dir, f, store, &live);
    }
    assert_quarantine(&broker.brokers(), f);
    windows::assert_windows_published(&broker.brokers(), store);
}

/// A broker with the topics, the fixture produced to it, and a config for `slatrack run`.
struct Setup {
    dir: tempfile::TempDir,
    broker: Tansu,
    f: Fixture,
    total: i64,
    /// `store.path`: a SQLite file or postgres://….
    store: String,
    config: PathBuf,
    /// The PostgreSQL server of a [`StoreKind::Postgres`] setup.
    pg: Option<Postgres>,
}

/// [`setup_with`] the fixture's usual topic: [`PARTITIONS`] partitions keyed by event id.
fn setup(
    kind: StoreKind,
    upfront: fn(usize) -> usize,
    producers: Producers,
    connections: usize,
) -> Setup {
    setup_with(
        kind,
        upfront,
        PARTITIONS,
        Keying::EventId,
        producers,
        connections,
    )
}

/// `upfront`: how much of the fixture is produced before the test starts (the rest is the
/// test's to produce, `f.records[upfront..]`).
fn setup_with(
    kind: StoreKind,
    upfront: fn(usize) -> usize,
    partitions: u32,
    keying: Keying,
    producers: Producers,
    connections: usize,
) -> Setup {
    let mut dir = tempfile::tempdir().unwrap();
    if std::env::var_os("SLATRACK_KEEP_TEST_DIR").is_some() {
        // Logs of the broker and every instance, for a failure to be read afterwards.
        dir.disable_cleanup(true);
        eprintln!("test dir kept: {}", dir.path().display());
    }
    let broker = Tansu::start(&dir.path().join("tansu.log"));
    broker.create_topic(TOPIC, partitions);
    broker.create_topic("slatrack-quarantine", 1);
    broker.create_topic("slatrack-windows", 2);
    let mut f = fixture(120_000, partitions, keying);
    if producers == Producers::WorkdayStallsThenFlushes {
        f.stall_workday();
    }
    let total: i64 = f.per_partition.iter().sum();
    produce(&broker.brokers(), &f.records[..upfront(f.records.len())]);
    let mut pg = None;
    let store = match kind {
        StoreKind::Sqlite => dir.path().join("live.db").display().to_string(),
        StoreKind::Postgres => {
            let server = Postgres::start();
            server.create_db("slatrack");
            let url = server.url("slatrack");
            pg = Some(server);
            url
        }
    };
    let config = write_config(dir.path(), &broker.brokers(), &store, connections);
    Setup {
        dir,
        broker,
        f,
        total,
        store,
        config,
        pg,
    }
}

/// The quarantine holds each malformed and each late record once (deduped by origin).
fn assert_quarantine(brokers: &str, f: &Fixture) {
    let q = quarantined(brokers, f.malformed + f.late);
    assert_eq!(
        q.get("malformed_protobuf").map_or(0, BTreeSet::len),
        f.malformed
    );
    assert_eq!(q.get("too_late").map_or(0, BTreeSet::len), f.late);
}

/// The live scorecard of a stalled-then-flushed run equals the replay of the records sorted
/// by completion time, and the live run counted the backlog as corrections.
fn assert_backlog_counted(dir: &Path, f: &Fixture, store: &str, live: &serde_json::Value) {
    let sorted_dir = dir.join("sorted");
    std::fs::create_dir_all(&sorted_dir).unwrap();
    let (sorted, summary) = replay::replay(&sorted_dir, Arc::new(Config::default()), f.sorted());
    assert_eq!(summary.corrected, 0, "sorted: nothing is late");
    assert_eq!(live, &scorecard(&sorted.display().to_string()));
    // Each partition's checkpoint carries its tally: records counted as corrections.
    let sources: Vec<String> = rusqlite::Connection::open(store)
        .unwrap()
        .prepare("SELECT source FROM checkpoints")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let mut s = SqliteStore::open(Path::new(store)).unwrap();
    let corrected: u64 = sources
        .iter()
        .map(|source| {
            let cp = PartitionStore::checkpoint(&mut s, source)
                .unwrap()
                .expect("a checkpoint");
            let (shard, _) = slatrack::store::checkpoint::decode_with_rows(
                Arc::new(Config::default()),
                &cp.state,
                &cp.dedup,
            )
            .unwrap();
            shard.tally.corrected
        })
        .sum();
    assert!(corrected > 0, "the backlog went through corrections");
}

/// What the producers do besides the fixture's own disorder.
#[derive(Clone, Copy, PartialEq)]
enum Producers {
    Steady,
    /// [`Fixture::stall_workday`]: the scorecard must equal the replay of the records
    /// sorted by completion time.
    WorkdayStallsThenFlushes,
}

fn sigkill_at_several_points_then_sigterm(
    kind: StoreKind,
    producers: Producers,
    connections: usize,
) {
    let Setup {
        dir,
        broker,
        f,
        total,
        store,
        config,
        pg: _pg,
    } = setup(kind, |n| n / 8, producers, connections);
    let log = dir.path().join("slatrack.log");
    let mut watch = Watch::new(&store, PARTITIONS);
    let n = f.records.len();

    // Each stage's instance starts with the next eighth produced, and is killed once the
    // checkpoints pass the previous one's end: every kill lands mid-stream, with the rest
    // of the fixture not yet produced. (With everything produced up front, a fast instance
    // could finish the topic before the kill, and the test then killed an idle one.)
    let assignments = || assigned_in(&log).len();
    for stage in 1..=6 {
        produce(
            &broker.brokers(),
            &f.records[stage * n / 8..(stage + 1) * n / 8],
        );
        let before = assignments();
        let mut instance = Instance::spawn(&config, &log);
        let target = total * stage as i64 / 8;
        wait_until("checkpointed progress", Duration::from_secs(120), || {
            watch.progress() >= target && assignments() > before
        });
        if stage < 6 {
            instance.sigkill();
        } else {
            let st = instance.sigterm();
            assert!(
                st.success(),
                "SIGTERM exits 0, got {st:?}; the log ends:\n{}",
                log_tail(&log, 30)
            );
        }
    }
    produce(&broker.brokers(), &f.records[7 * n / 8..]);
    // The last instance finishes the topic. It is signalled only once it runs (assigned:
    // its SIGTERM handler is installed), or the signal meets the default action of a
    // process still starting.
    let before = assignments();
    let mut instance = Instance::spawn(&config, &log);
    wait_until(
        "the whole topic checkpointed",
        Duration::from_secs(120),
        || watch.progress() >= total && assignments() > before,
    );
    let st = instance.sigterm();
    assert!(
        st.success(),
        "SIGTERM exits 0, got {st:?}; the log ends:\n{}",
        log_tail(&log, 30)
    );
    assert_eq!(
        watch.progress(),
        total,
        "checkpoints end exactly at the end of each partition"
    );

    assert_live_equals_replay(dir.path(), &broker, &f, &store, producers);
}

#[test]
fn sigkill_at_several_points_then_sigterm_equals_replay() {
    sigkill_at_several_points_then_sigterm(StoreKind::Sqlite, Producers::Steady, 2);
}

#[test]
fn postgres_store_sigkill_at_several_points_then_sigterm_equals_replay() {
    // One fetch connection: the consumer fetches every partition itself.
    sigkill_at_several_points_then_sigterm(StoreKind::Postgres, Producers::Steady, 1);
}

/// One producer stalls for 15 minutes of event time, then flushes its backlog while the
/// others go on; `slatrack run` is SIGKILLed five times during the flush. The scorecard
/// equals the replay of the records sorted by completion time.
#[test]
fn a_backlog_flushed_through_five_sigkills_equals_the_sorted_replay() {
    // Three fetch connections: two fetchers share the partitions with the consumer.
    sigkill_at_several_points_then_sigterm(
        StoreKind::Sqlite,
        Producers::WorkdayStallsThenFlushes,
        3,
    );
}

fn two_instances_rebalance_mid_stream(kind: StoreKind, producers: Producers) {
    let Setup {
        dir,
        broker,
        f,
        total,
        store,
        config,
        pg: _pg,
    } = setup(kind, |n| n / 2, producers, 2);
    let mut watch = Watch::new(&store, PARTITIONS);
    // A starts alone and owns every partition; B joins mid-stream (scale-out), then A
    // leaves mid-stream (scale-in) and B takes its partitions over.
    let mut a = Instance::joined(&config, &dir.path().join("a.log"), &[], "A", 60);
    let mut b = Instance::joined(&config, &dir.path().join("b.log"), &[], "B", 120);
    wait_until("some progress", Duration::from_secs(120), || {
        watch.progress() >= total / 4
    });
    assert!(watch.progress() < total, "stopped A mid-stream");
    assert!(a.sigterm().success());
    // The second half arrives after A left: B can only finish by taking A's partitions.
    produce(&broker.brokers(), &f.records[f.records.len() / 2..]);
    wait_until(
        "B to finish every partition",
        Duration::from_secs(120),
        || watch.progress() >= total,
    );
    assert!(b.sigterm().success());
    let b_log = std::fs::read_to_string(&b.log).unwrap();
    assert!(
        b.assigned().len() > 2,
        "B took over A's partitions:\n{b_log}"
    );

    assert_live_equals_replay(dir.path(), &broker, &f, &store, producers);
}

#[test]
fn two_instances_rebalance_mid_stream_equals_replay() {
    two_instances_rebalance_mid_stream(StoreKind::Sqlite, Producers::Steady);
}

#[test]
fn postgres_store_two_instances_rebalance_mid_stream_equals_replay() {
    two_instances_rebalance_mid_stream(StoreKind::Postgres, Producers::Steady);
}

/// The stalled producer's backlog flushed while partitions move from one instance to
/// another: the scorecard equals the replay of the sorted records (SQLite store).
#[test]
fn a_backlog_flushed_across_a_rebalance_equals_the_sorted_replay() {
    two_instances_rebalance_mid_stream(StoreKind::Sqlite, Producers::WorkdayStallsThenFlushes);
}

/// Scale-out: three instances in one group on a 6-partition topic keyed round robin (every
/// bucket split across partitions), one SQLite store (the instances' commits are fenced on
/// its checkpoints). Instances join and leave mid-stream while the stream is still being
/// produced; the merged scorecard equals replay.
#[test]
fn three_instances_join_and_leave_on_six_partitions_equal_replay() {
    let Setup {
        dir,
        broker,
        f,
        total,
        store,
        config,
        pg: _pg,
    } = setup_with(
        StoreKind::Sqlite,
        |n| n / 3,
        6,
        Keying::RoundRobin,
        Producers::Steady,
        2,
    );
    let mut watch = Watch::new(&store, 6);
    let n = f.records.len();
    let log = |x: &str| dir.path().join(format!("{x}.log"));
    // Joins and leaves happen one at a time, each once the group is stable again: tansu
    // 0.6.0 mishandles a membership change during a rebalance (a member leaving while one
    // is in progress can stay the leader of the next generation, and the others then loop
    // on SyncGroup "rebalance in progress" for good; two joining at once can leave one
    // without partitions). See docs/testing.md.
    let mut a = Instance::joined(&config, &log("a"), &[], "A", 60);
    let mut b = Instance::joined(&config, &log("b"), &[], "B", 120);
    produce(&broker.brokers(), &f.records[n / 3..2 * n / 3]);
    let mut c = Instance::joined(&config, &log("c"), &[], "C", 120);
    wait_until(
        "progress past the first third",
        Duration::from_secs(120),
        || watch.progress() >= total / 3,
    );
    // A leaves while two thirds are in; the last third arrives after it left.
    let (seen_b, seen_c) = (b.assigned().len(), c.assigned().len());
    assert!(a.sigterm().success());
    wait_until(
        "B and C to share every partition after A left",
        Duration::from_secs(120),
        || {
            let mut now: BTreeSet<i32> = b.assigned()[seen_b..].iter().copied().collect();
            now.extend(&c.assigned()[seen_c..]);
            now.len() == 6
        },
    );
    produce(&broker.brokers(), &f.records[2 * n / 3..]);
    wait_until("progress past two thirds", Duration::from_secs(120), || {
        watch.progress() >= 2 * total / 3
    });
    let seen_c = c.assigned().len();
    assert!(b.sigterm().success());
    c_finishes_alone(&mut c, seen_c, &mut watch, total);
    assert_live_equals_replay(dir.path(), &broker, &f, &store, Producers::Steady);
}

/// After B left: C takes every one of the six partitions, finishes them and stops on
/// SIGTERM, with checkpoints exactly at each partition's end.
fn c_finishes_alone(c: &mut Instance, seen_c: usize, watch: &mut Watch, total: i64) {
    wait_until("C to own every partition", Duration::from_secs(120), || {
        c.assigned()[seen_c..].iter().collect::<BTreeSet<_>>().len() == 6
    });
    wait_until(
        "C to finish every partition",
        Duration::from_secs(180),
        || watch.progress() >= total,
    );
    assert!(c.sigterm().success());
    assert_eq!(
        watch.progress(),
        total,
        "checkpoints end at each partition's end"
    );
}

/// The PostgreSQL store shared by three instances in one group on a 6-partition topic
/// keyed round robin: B joins, C joins, A is SIGKILLed mid-stream (a rebalance hands its
/// partitions over), PostgreSQL crashes (`pg_ctl stop -m immediate`) and comes back while
/// B and C write, B is SIGKILLed, C finishes. The scorecard equals replay.
#[test]
fn postgres_store_three_instances_sigkills_and_a_server_crash_equal_replay() {
    let Setup {
        dir,
        broker,
        f,
        total,
        store,
        config,
        pg,
    } = setup_with(
        StoreKind::Postgres,
        |n| n / 3,
        6,
        Keying::RoundRobin,
        Producers::Steady,
        2,
    );
    let pg = pg.expect("a PostgreSQL server");
    let mut watch = Watch::new(&store, 6);
    let n = f.records.len();
    let log = |x: &str| dir.path().join(format!("{x}.log"));
    let mut a = Instance::joined(&config, &log("a"), &[], "A", 60);
    let b = Instance::joined(&config, &log("b"), &[], "B", 120);
    // C's listener on a known port: its /readyz during the outage.
    let c_listen = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap();
    let c_addr = c_listen.to_string();
    let mut c = Instance::joined(
        &config,
        &log("c"),
        &[("SLATRACK_METRICS_LISTEN", c_addr.as_str())],
        "C",
        120,
    );
    let readyz = || http::http_get(c_listen, "/readyz");
    wait_until(
        "progress into the first third",
        Duration::from_secs(120),
        || watch.progress() >= total / 6,
    );
    let (seen_b, seen_c) = (b.assigned().len(), c.assigned().len());
    a.sigkill();
    wait_until(
        "B and C to share every partition after A died",
        Duration::from_secs(120),
        || {
            let mut now: BTreeSet<i32> = b.assigned()[seen_b..].iter().copied().collect();
            now.extend(&c.assigned()[seen_c..]);
            now.len() == 6
        },
    );
    produce(&broker.brokers(), &f.records[n / 3..2 * n / 3]);
    wait_until("progress past a third", Duration::from_secs(120), || {
        watch.progress() >= total / 3
    });

    // The server crashes mid-stream: commits fail, fetching pauses, nothing is lost.
    let failed = |l: &Path| {
        std::fs::read_to_string(l)
            .unwrap_or_default()
            .matches("PostgreSQL store")
            .count()
    };
    let before = failed(&log("b")) + failed(&log("c"));
    // The last third is produced while the server is down: there is something to commit,
    // the commits fail, fetching pauses, /readyz answers 503 with the store's error.
    pg.stop_immediate();
    produce(&broker.brokers(), &f.records[2 * n / 3..]);
    wait_until(
        "an instance to report the store unreachable",
        Duration::from_secs(60),
        || failed(&log("b")) + failed(&log("c")) > before,
    );
    wait_until("C's /readyz to answer 503", Duration::from_secs(60), || {
        let r = readyz();
        r.starts_with("HTTP/1.1 503") && r.contains("PostgreSQL")
    });
    pg.start_again();
    wait_until(
        "C's /readyz to answer 200 again",
        Duration::from_secs(60),
        || readyz().starts_with("HTTP/1.1 200"),
    );
    wait_until("progress past two thirds", Duration::from_secs(120), || {
        watch.progress() >= 2 * total / 3
    });
    let mut b = b;
    let seen_c = c.assigned().len();
    b.sigkill();
    c_finishes_alone(&mut c, seen_c, &mut watch, total);
    assert_live_equals_replay(dir.path(), &broker, &f, &store, Producers::Steady);
}

/// When the pilot's events happened: at their 2025 dates (every row is past
/// `store.minute_retention` and folds), or moved by whole weeks to end a day ago (the last
/// five weeks stay minute rows).
#[derive(Clone, Copy, Debug)]
enum Dated {
    Pilot2025,
    EndingNow,
}

/// The 10-week Globex pilot as a live topic would carry it: logical events round robin over
/// [`PARTITIONS`] partitions (every bucket split across them), 5 % of the records sent
/// twice, records up to 30 minutes out of order, one sentinel per partition a day after
/// the last so every bucket closes. Returns the records and the events they hold.
fn pilot_topic(dated: Dated) -> (Vec<(i32, Vec<u8>)>, Vec<slatrack::event::DeliveryEvent>) {
    use slatrack::time::MICROS_PER_DAY;
    let mut evs = slatrack::synthetic::globex_fixture();
    if let Dated::EndingNow = dated {
        pilot::end_yesterday(&mut evs);
    }
    let mut partition_of = std::collections::HashMap::new();
    // (send order key, partition, event): sent in completion order plus a jitter of up
    // to 30 minutes, so records arrive up to 30 minutes out of order.
    let mut sends = Vec::new();
    for (i, e) in evs.iter().enumerate() {
        let n = partition_of.len() as i32;
        let p = *partition_of
            .entry(e.event_id.clone())
            .or_insert(n % PARTITIONS as i32);
        let jitter = (i as i64 * 7_919 % 1_800) * 1_000_000;
        sends.push((e.completed_at + jitter, p, e.clone()));
        if i % 20 == 7 {
            // The duplicate a producer's retry sends, up to an hour after the original.
            sends.push((
                e.completed_at + jitter + (i as i64 % 3_600) * 1_000_000,
                p,
                e.clone(),
            ));
        }
    }
    sends.sort_by_key(|(at, ..)| *at);
    let mut records: Vec<(i32, Vec<u8>)> = sends
        .iter()
        .map(|(_, p, e)| (*p, slatrack::codec::protobuf::encode(e)))
        .collect();
    let mut s = evs.iter().max_by_key(|e| e.completed_at).unwrap().clone();
    s.tenant = "zz-sentinel".into();
    s.outcome = slatrack::event::Outcome::Delivered;
    s.attempt = 1;
    for t in [&mut s.enqueued_at, &mut s.started_at, &mut s.completed_at] {
        *t += MICROS_PER_DAY;
    }
    for p in 0..PARTITIONS as i32 {
        s.event_id = format!("sentinel-{p}");
        records.push((p, slatrack::codec::protobuf::encode(&s)));
    }
    (records, evs)
}

/// Per platform: (attempts, events, on-time events), counted from the records without the
/// engine: each (event id, attempt) once; an event is its terminal record; on time when
/// delivered within the platform's target end to end (config/slatrack.toml: 300 ms for
/// Impact-In, 500 ms for the others).
fn pilot_truth(evs: &[slatrack::event::DeliveryEvent]) -> BTreeMap<String, (u64, u64, u64)> {
    let mut seen = BTreeSet::new();
    let mut out: BTreeMap<String, (u64, u64, u64)> = BTreeMap::new();
    for e in evs {
        if !seen.insert((e.event_id.clone(), e.attempt)) {
            continue;
        }
        let t = out.entry(e.platform.clone()).or_default();
        t.0 += 1;
        if e.outcome != slatrack::event::Outcome::Retrying {
            t.1 += 1;
            let target = if e.platform == "impact_in" {
                300_000
            } else {
                500_000
            };
            if e.outcome == slatrack::event::Outcome::Delivered
                && e.completed_at - e.enqueued_at <= target
            {
                t.2 += 1;
            }
        }
    }
    out
}

/// The pilot's scorecard JSON from a store, over every day of the events.
fn pilot_scorecard(location: &str, evs: &[slatrack::event::DeliveryEvent]) -> serde_json::Value {
    use slatrack::time::MICROS_PER_DAY;
    let first = evs.iter().map(|e| e.completed_at).min().unwrap();
    let last = evs.iter().map(|e| e.completed_at).max().unwrap();
    let from = first.div_euclid(MICROS_PER_DAY) * MICROS_PER_DAY;
    let to = (last.div_euclid(MICROS_PER_DAY) + 1) * MICROS_PER_DAY;
    let s = slatrack::store::open(
        &Location::parse(location).unwrap(),
        slatrack::store::Access::ReadOnly,
    )
    .unwrap();
    let sc = slatrack::scorecard::build_at(
        &*s,
        Arc::new(Config::default()),
        &slatrack::contract::Contracts::default(),
        "globex",
        from,
        to,
        to + MICROS_PER_DAY,
    )
    .unwrap();
    slatrack::scorecard::json::render(&sc)
}

/// The scorecard's per-platform (attempts, events, on-time events).
fn scorecard_counts(v: &serde_json::Value) -> BTreeMap<String, (u64, u64, u64)> {
    v["platforms"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["events"].as_u64() > Some(0))
        .map(|p| {
            let events = p["events"].as_u64().unwrap();
            let on_time = (p["on_time_ratio"].as_f64().unwrap() * events as f64).round() as u64;
            let attempts = p["attempts"].as_u64().unwrap();
            (
                p["platform"].as_str().unwrap().to_string(),
                (attempts, events, on_time),
            )
        })
        .collect()
}

/// The issue's run: the 10-week pilot on a 4-partition topic, read by `slatrack run` with
/// the default config but for a short checkpoint interval — two instances, a rebalance, two
/// SIGKILLs and a SIGTERM — on the given store, with the data at the given dates. The
/// scorecard equals figures counted from the records, and the replay of the same records
/// into a store of the same kind.
fn pilot_live_on(kind: StoreKind, dated: Dated) {
    let dir = tempfile::tempdir().unwrap();
    let broker = Tansu::start(&dir.path().join("tansu.log"));
    broker.create_topic(TOPIC, PARTITIONS);
    broker.create_topic("slatrack-quarantine", 1);
    broker.create_topic("slatrack-windows", 2);
    let (records, evs) = pilot_topic(dated);
    let truth = pilot_truth(&evs);
    let total = records.len() as i64;
    let (mut pg, mut replay_store) = (None, dir.path().join("replay.db").display().to_string());
    let store = match kind {
        StoreKind::Sqlite => dir.path().join("live.db").display().to_string(),
        StoreKind::Postgres => {
            let server = Postgres::start();
            server.create_db("live");
            server.create_db("replay");
            replay_store = server.url("replay");
            let url = server.url("live");
            pg = Some(server);
            url
        }
    };
    let config = write_config(dir.path(), &broker.brokers(), &store, 2);
    let mut watch = Watch::new(&store, PARTITIONS);
    let n = records.len();
    let log = |x: &str| dir.path().join(format!("{x}.log"));
    let quarter = |k: usize| &records[k * n / 4..(k + 1) * n / 4];

    // A alone reads the first quarter (weeks of event time in one commit); B joins and is
    // SIGKILLed mid-stream; A takes its partitions back and (2025 data) folds the rows past
    // the retention, a minute after it started; C joins, A is SIGKILLed, C finishes and
    // stops on SIGTERM.
    produce(&broker.brokers(), quarter(0));
    let mut a = Instance::joined(&config, &log("a"), &[], "A", 60);
    wait_until("the first quarter", Duration::from_secs(120), || {
        watch.progress() >= (n / 4) as i64
    });
    let mut b = Instance::joined(&config, &log("b"), &[], "B", 120);
    produce(&broker.brokers(), quarter(1));
    wait_until(
        "some of the second quarter",
        Duration::from_secs(120),
        || watch.progress() > (n / 4) as i64,
    );
    b.sigkill();
    wait_until("A past half", Duration::from_secs(120), || {
        watch.progress() >= (n / 2) as i64
    });
    if let Dated::Pilot2025 = dated {
        wait_until(
            "A to fold rows past the retention",
            Duration::from_secs(150),
            || {
                std::fs::read_to_string(log("a"))
                    .unwrap_or_default()
                    .contains("folded bucket rows")
            },
        );
    }
    produce(&broker.brokers(), quarter(2));
    let mut c = Instance::joined(&config, &log("c"), &[], "C", 120);
    produce(&broker.brokers(), quarter(3));
    a.sigkill();
    wait_until("the whole topic", Duration::from_secs(180), || {
        watch.progress() >= total
    });
    assert!(c.sigterm().success(), "{}", log_tail(&log("c"), 30));
    assert_eq!(
        watch.progress(),
        total,
        "checkpoints end at each partition's end"
    );

    let live = pilot_scorecard(&store, &evs);
    assert_eq!(
        scorecard_counts(&live),
        truth,
        "{dated:?} live: the records' own figures"
    );
    let file = dir.path().join("pilot.pb");
    {
        let mut w = std::io::BufWriter::new(std::fs::File::create(&file).unwrap());
        for (_, v) in &records {
            let mut len = Vec::new();
            prost::encoding::encode_varint(v.len() as u64, &mut len);
            std::io::Write::write_all(&mut w, &len).unwrap();
            std::io::Write::write_all(&mut w, v).unwrap();
        }
    }
    let out = Command::new(env!("CARGO_BIN_EXE_slatrack"))
        .args(["replay", "--input"])
        .arg(&file)
        .args(["--store", &replay_store])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        live,
        pilot_scorecard(&replay_store, &evs),
        "{dated:?}: live equals replay"
    );
    windows::assert_windows_published(&broker.brokers(), &store);
    drop(pg);
}

#[test]
fn pilot_dated_2025_live_on_sqlite_is_exact() {
    pilot_live_on(StoreKind::Sqlite, Dated::Pilot2025);
}

#[test]
fn pilot_dated_2025_live_on_postgres_is_exact() {
    pilot_live_on(StoreKind::Postgres, Dated::Pilot2025);
}

#[test]
fn pilot_ending_now_live_on_sqlite_is_exact() {
    pilot_live_on(StoreKind::Sqlite, Dated::EndingNow);
}

#[test]
fn pilot_ending_now_live_on_postgres_is_exact() {
    pilot_live_on(StoreKind::Postgres, Dated::EndingNow);
}
