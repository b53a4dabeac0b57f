//! The rolling windows as Prometheus reads them, after a backlog: `slatrack run` is up and
//! idle on a real broker (tansu) when ten weeks of the Globex pilot arrive in one burst,
//! round robin over four partitions. Once the windows end at the pilot's last minute, each
//! window's exported parts (counts and the latency histogram) hold the events of that
//! window's span of event time, not the backlog: checked against figures counted from the
//! records here, on SQLite and PostgreSQL, at the pilot's 2025 dates (rows fold) and
//! ending a day ago. Built with `--features integration` (scripts/test-all.sh). Each run
//! has its own broker and store and spends most of its time waiting for idle partitions to
//! close their last minute, so the four run side by side.
#![cfg(feature = "integration")]

#[path = "support/http.rs"]
mod http;
#[path = "support/pilot.rs"]
mod pilot;
#[path = "support/postgres.rs"]
mod postgres;
#[path = "support/service.rs"]
mod service;
#[path = "support/tansu.rs"]
mod tansu;
#[path = "support/wait.rs"]
mod wait;

use slatrack::event::{DeliveryEvent, Outcome};
use slatrack::time::{MICROS_PER_DAY, MICROS_PER_HOUR, MICROS_PER_MIN};
use std::collections::BTreeMap;
use std::time::Duration;
use wait::wait_until;

const TOPIC: &str = "deliveries";
const PARTITIONS: i32 = 4;

#[derive(Clone, Copy, Debug)]
enum Store {
    Sqlite,
    Postgres,
}

#[derive(Clone, Copy, Debug)]
enum Dated {
    Pilot2025,
    EndingYesterday,
}

/// The pilot's events, moved by whole weeks to end a day ago when asked.
fn pilot(dated: Dated) -> Vec<DeliveryEvent> {
    let mut evs = slatrack::synthetic::globex_fixture();
    if let Dated::EndingYesterday = dated {
        pilot::end_yesterday(&mut evs);
    }
    evs
}

/// What one window holds, counted from the records without the engine.
#[derive(Debug, Default, Clone, Copy, PartialEq, PartialOrd)]
struct Counts {
    attempts: u64,
    events: u64,
    on_time: u64,
    retried: u64,
    failed: u64,
    max_retries: u64,
    dlq: u64,
}

impl Counts {
    fn fields(&self) -> [(&'static str, u64); 7] {
        [
            ("slatrack_window_attempts", self.attempts),
            ("slatrack_window_events", self.events),
            ("slatrack_window_on_time_events", self.on_time),
            ("slatrack_window_retried_events", self.retried),
            ("slatrack_window_failed_events", self.failed),
            ("slatrack_window_max_retries_events", self.max_retries),
            ("slatrack_window_dlq_events", self.dlq),
        ]
    }
}

/// The records of `platform` whose one-minute bucket starts in `[from, to)`: every record
/// is an attempt; a terminal one is an event (docs/engine.md, "Definitions"; the targets
/// of config/slatrack.toml: 300 ms for Impact-In, 500 ms for the others).
fn truth(evs: &[DeliveryEvent], platform: &str, from: i64, to: i64) -> Counts {
    let mut c = Counts::default();
    for e in evs
        .iter()
        .filter(|e| e.tenant == "globex" && e.platform == platform)
    {
        let bucket = e.completed_at.div_euclid(MICROS_PER_MIN) * MICROS_PER_MIN;
        if bucket < from || bucket >= to {
            continue;
        }
        c.attempts += 1;
        if e.outcome == Outcome::Retrying {
            continue;
        }
        let target = if platform == "impact_in" {
            300_000
        } else {
            500_000
        };
        c.events += 1;
        c.on_time +=
            u64::from(e.outcome == Outcome::Delivered && e.completed_at - e.enqueued_at <= target);
        c.retried += u64::from(e.attempt > 1);
        c.max_retries += u64::from(e.attempt >= e.max_attempts);
        c.failed += u64::from(matches!(e.outcome, Outcome::Failed | Outcome::DeadLettered));
        c.dlq += u64::from(e.outcome == Outcome::DeadLettered);
    }
    c
}

/// Attempts of `platform` in `[from, to)` with an attempt latency at most `us`.
fn within(evs: &[DeliveryEvent], platform: &str, from: i64, to: i64, us: u64) -> u64 {
    evs.iter()
        .filter(|e| e.tenant == "globex" && e.platform == platform)
        .filter(|e| {
            let b = e.completed_at.div_euclid(MICROS_PER_MIN) * MICROS_PER_MIN;
            b >= from && b < to && e.attempt_latency_us() <= us
        })
        .count() as u64
}

/// Sample values of a scrape by series (`name{labels}` as written).
fn samples(scrape: &str) -> BTreeMap<String, f64> {
    scrape
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_string(), value.parse().ok()?))
        })
        .collect()
}

/// Prints the service's log when the test fails.
struct LogOnFailure(std::path::PathBuf);

impl Drop for LogOnFailure {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.0).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!("slatrack log (last 40 lines):");
            for l in tail.iter().rev() {
                eprintln!("{l}");
            }
        }
    }
}

fn backlog_on(store: Store, dated: Dated) {
    let dir = tempfile::tempdir().unwrap();
    let broker = tansu::Tansu::start(&dir.path().join("tansu.log"));
    broker.create_topic(TOPIC, PARTITIONS as u32);
    let pg = matches!(store, Store::Postgres).then(postgres::Postgres::start);
    let location = match &pg {
        Some(server) => {
            server.create_db("live");
            server.url("live")
        }
        None => dir.path().join("live.db").display().to_string(),
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = dir.path().join("slatrack.toml");
    std::fs::write(
        &config,
        format!(
            r#"[store]
path = "{location}"
[engine]
allowed_lateness = "0s"
[service]
checkpoint_interval = "100ms"
idle_timeout = "2s"
[metrics]
listen = "127.0.0.1:{port}"
[kafka]
brokers = "{}"
group_id = "live-windows"
[[kafka.topics]]
name = "{TOPIC}"
format = "protobuf"
[kafka.properties]
"session.timeout.ms" = "2000"
"heartbeat.interval.ms" = "500"
"#,
            broker.brokers()
        ),
    )
    .unwrap();
    let log = dir.path().join("slatrack.log");
    let _log_on_failure = LogOnFailure(log.clone());
    let _run = service::run(&config, &log);
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    wait_until("slatrack ready", Duration::from_secs(60), || {
        http::is_ready(addr)
    });

    // The backlog: ten weeks in one burst while the service runs.
    let evs = pilot(dated);
    pilot::produce_round_robin(&broker.brokers(), TOPIC, PARTITIONS as usize, &evs, 0);

    // The windows end at the pilot's last minute once the idle partitions close their
    // last buckets (no lateness allowed: within a minute of quiet; records out of order
    // within a partition are corrections, which the windows take in as well).
    let last = evs.iter().map(|e| e.completed_at).max().unwrap();
    let end = (last.div_euclid(MICROS_PER_MIN) + 1) * MICROS_PER_MIN;
    let last_end = pilot::last_bucket_ends(&evs, PARTITIONS as usize);
    let mut scrape = String::new();
    let mut seen = String::new();
    wait_until(
        "the windows to end at the pilot's last minute",
        Duration::from_secs(120),
        || {
            scrape = http::http_get(addr, "/metrics");
            let line = scrape
                .lines()
                .find(|l| l.starts_with("slatrack_window_end_timestamp_seconds "))
                .unwrap_or("no window end yet");
            if line != seen {
                eprintln!("{line} (waiting for {})", end as f64 / 1e6);
                seen = line.to_string();
            }
            // Every partition's watermark past its own last bucket (the window end is the
            // newest bucket of any partition; the others may still hold older open ones).
            // A gauge tick reads the watermarks before the windows, and a watermark moves
            // only once its buckets are in the windows: a scrape showing a watermark shows
            // windows that hold them.
            let watermarks = (0..PARTITIONS)
                .filter(|p| {
                    let series = format!("slatrack_watermark_timestamp_seconds{{topic=\"{TOPIC}\",partition=\"{p}\"}} ");
                    scrape.lines().any(|l| {
                        l.strip_prefix(series.as_str())
                            .and_then(|v| v.parse::<f64>().ok())
                            .is_some_and(|v| v >= last_end[*p as usize] as f64 / 1e6)
                    })
                })
                .count();
            watermarks == PARTITIONS as usize
                && scrape.lines().any(|l| {
                    l.strip_prefix("slatrack_window_end_timestamp_seconds ")
                        .and_then(|v| v.parse::<f64>().ok())
                        .is_some_and(|v| v == end as f64 / 1e6)
                })
        },
    );
    let got = samples(&scrape);
    let bucket = |w: &str, p: &str, le: &str| {
        got.get(&format!(
            "slatrack_window_attempt_latency_seconds_bucket{{tenant=\"globex\",platform=\"{p}\",window=\"{w}\",le=\"{le}\"}}"
        ))
        .copied()
    };
    // (window, its length, how much more a window of that length may cover: whole hours
    // for 1d, six-hour blocks beyond a day; docs/engine.md "Rolling windows").
    let windows = [
        ("5m", 5 * MICROS_PER_MIN, 0),
        ("1h", MICROS_PER_HOUR, 0),
        ("1d", MICROS_PER_DAY, MICROS_PER_HOUR),
        ("7d", 7 * MICROS_PER_DAY, 6 * MICROS_PER_HOUR),
    ];
    let mut checked = 0;
    for platform in [
        "benevity",
        "goodera",
        "workday",
        "sap_successfactors",
        "impact_in",
    ] {
        for (w, len, slack) in windows {
            let (narrow, wide) = (end - len, end - len - slack);
            let lo = truth(&evs, platform, narrow, end);
            let hi = truth(&evs, platform, wide, end);
            if hi.attempts == 0 {
                continue;
            }
            let labels = format!("{{tenant=\"globex\",platform=\"{platform}\",window=\"{w}\"}}");
            for ((name, l), (_, h)) in lo.fields().into_iter().zip(hi.fields()) {
                let v = got
                    .get(&format!("{name}{labels}"))
                    .copied()
                    .unwrap_or_else(|| panic!("{name}{labels} missing ({dated:?}, {store:?})"));
                assert!(
                    l as f64 <= v && v <= h as f64,
                    "{name}{labels} = {v}, event time says {l}..={h} ({dated:?}, {store:?}); the whole backlog holds {}",
                    truth(&evs, platform, i64::MIN, end).fields().iter().find(|f| f.0 == name).map_or(0, |f| f.1)
                );
                checked += 1;
            }
            // The histogram: every attempt once, and at the 500 ms bound what the HDR
            // resolution (1/128) allows.
            let count = got
                .get(&format!(
                    "slatrack_window_attempt_latency_seconds_count{labels}"
                ))
                .copied();
            assert_eq!(
                count,
                got.get(&format!("slatrack_window_attempts{labels}"))
                    .copied()
            );
            assert_eq!(bucket(w, platform, "+Inf"), count, "{labels}");
            let at = bucket(w, platform, "0.5").expect("a bucket at the 500 ms target");
            let (l, h) = (
                within(&evs, platform, narrow, end, 500_000 * 64 / 65),
                within(&evs, platform, wide, end, 500_000),
            );
            assert!(
                l as f64 <= at && at <= h as f64,
                "le=0.5 {labels} = {at}, records say {l}..={h}"
            );
        }
    }
    // Most (platform, window) pairs have traffic in the pilot's last minutes: at least the
    // four windows of the two busiest platforms and the long windows of every platform.
    assert!(
        checked >= 7 * (2 * 4 + 3 * 2),
        "{checked} window figures checked"
    );
    // The bug this guards against: the long windows holding the whole backlog.
    let backlog = truth(&evs, "benevity", i64::MIN, end).events as f64;
    let day = got["slatrack_window_events{tenant=\"globex\",platform=\"benevity\",window=\"1d\"}"];
    assert!(
        day * 20.0 < backlog,
        "1d holds {day} of a {backlog}-event backlog"
    );
    drop(pg);
}

#[test]
fn a_backlog_fills_each_window_with_its_own_span_sqlite_2025() {
    backlog_on(Store::Sqlite, Dated::Pilot2025);
}

#[test]
fn a_backlog_fills_each_window_with_its_own_span_postgres_2025() {
    backlog_on(Store::Postgres, Dated::Pilot2025);
}

#[test]
fn a_backlog_fills_each_window_with_its_own_span_sqlite_ending_yesterday() {
    backlog_on(Store::Sqlite, Dated::EndingYesterday);
}

#[test]
fn a_backlog_fills_each_window_with_its_own_span_postgres_ending_yesterday() {
    backlog_on(Store::Postgres, Dated::EndingYesterday);
}
