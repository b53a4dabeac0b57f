//! Three instances, one tenant's numbers: ten weeks of the Globex pilot on a 4-partition
//! tansu topic keyed round robin, read by three `slatrack run` instances (one group, a
//! PostgreSQL store): 40 % of it is a backlog when they start, one instance stops
//! mid-stream. Two real Prometheus servers (Debian's 2.42) scrape them: one the text
//! format (classic buckets), one with `--enable-feature=native-histograms` (protobuf,
//! native buckets). Once every partition is read:
//! - every window count summed in PromQL, and every ratio the rules record, equals what
//!   one instance reading the same topic alone exports;
//! - the 1d P99 from summed classic buckets lies in the bucket holding the P99 counted from
//!   the records, and from native histograms within their stated error (3 %);
//! - every dashboard query returns data.
//!
//! Built with `--features integration` (scripts/test-all.sh).
#![cfg(feature = "integration")]

#[path = "support/http.rs"]
mod http;
#[path = "support/pilot.rs"]
mod pilot;
#[path = "support/postgres.rs"]
mod postgres;
#[path = "support/prometheus.rs"]
mod prometheus;
#[path = "support/service.rs"]
mod service;
#[path = "support/tansu.rs"]
mod tansu;
#[path = "support/wait.rs"]
mod wait;

use prometheus::{free_port, value, Prometheus};
use slatrack::event::DeliveryEvent;
use slatrack::time::{MICROS_PER_DAY, MICROS_PER_HOUR, MICROS_PER_MIN};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;
use wait::wait_until;

const TOPIC: &str = "deliveries";
const PARTITIONS: usize = 4;
/// The window count gauges.
const COUNTS: [&str; 7] = slatrack::sink::prometheus::WINDOW_COUNTS;

/// The pilot in completion order, moved by whole weeks to end a day ago.
fn pilot() -> Vec<DeliveryEvent> {
    let mut evs = slatrack::synthetic::globex_fixture();
    pilot::end_yesterday(&mut evs);
    evs.sort_by_key(|e| e.completed_at);
    evs
}

fn produce(brokers: &str, evs: &[DeliveryEvent], first_index: usize) {
    pilot::produce_round_robin(brokers, TOPIC, PARTITIONS, evs, first_index);
}

fn config(dir: &Path, name: &str, brokers: &str, store: &str, group: &str) -> PathBuf {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(
        &path,
        format!(
            r#"[store]
path = "{store}"
[engine]
allowed_lateness = "0s"
[service]
checkpoint_interval = "100ms"
idle_timeout = "2s"
[kafka]
brokers = "{brokers}"
group_id = "{group}"
[[kafka.topics]]
name = "{TOPIC}"
format = "protobuf"
[kafka.properties]
"session.timeout.ms" = "2000"
"heartbeat.interval.ms" = "500"
"#
        ),
    )
    .unwrap();
    path
}

/// `slatrack run` with its metrics on `port`.
fn start(config: &Path, log: &Path, port: u16) -> service::Killed {
    let listen = format!("127.0.0.1:{port}");
    service::run_with_env(config, log, &[("SLATRACK_METRICS_LISTEN", &listen)])
}

fn ready(port: u16) -> bool {
    http::is_ready(format!("127.0.0.1:{port}").parse().unwrap())
}

/// Each partition's last bucket end (seconds), records sent round robin.
fn last_ends(evs: &[DeliveryEvent]) -> Vec<f64> {
    pilot::last_bucket_ends(evs, PARTITIONS)
        .into_iter()
        .map(|e| e as f64 / 1e6)
        .collect()
}

/// Every partition's watermark (the newest of any instance) past its last bucket.
fn all_read(watermarks: &BTreeMap<usize, f64>, ends: &[f64]) -> bool {
    (0..PARTITIONS).all(|p| watermarks.get(&p).is_some_and(|w| *w >= ends[p]))
}

/// One instance's window counts by (name, tenant, platform, window), from its scrape.
fn scrape_counts(port: u16) -> BTreeMap<(String, String, String, String), f64> {
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let text = http::http_get(addr, "/metrics");
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let Some((series, v)) = line.rsplit_once(' ') else {
            continue;
        };
        let Some((name, labels)) = series.split_once('{') else {
            continue;
        };
        if !COUNTS.contains(&name) {
            continue;
        }
        let label = |k: &str| {
            labels
                .split(&format!("{k}=\""))
                .nth(1)
                .and_then(|r| r.split('"').next())
                .unwrap_or("")
                .to_string()
        };
        out.insert(
            (
                name.to_string(),
                label("tenant"),
                label("platform"),
                label("window"),
            ),
            v.parse::<f64>().unwrap(),
        );
    }
    out
}

/// Nearest-rank P99 (seconds) and count of the attempt latencies of `platform` in the
/// buckets from `from` to `end`.
fn p99_between(evs: &[DeliveryEvent], platform: &str, from: i64, end: i64) -> Option<(f64, usize)> {
    let mut v: Vec<u64> = evs
        .iter()
        .filter(|e| e.platform == platform)
        .filter(|e| {
            let b = e.completed_at.div_euclid(MICROS_PER_MIN) * MICROS_PER_MIN;
            b >= from && b < end
        })
        .map(|e| e.attempt_latency_us())
        .collect();
    if v.is_empty() {
        return None;
    }
    v.sort_unstable();
    let rank = (v.len() * 99).div_ceil(100);
    Some((v[rank - 1] as f64 / 1e6, v.len()))
}

#[test]
fn three_instances_with_a_backlog_and_a_departure_add_up_to_one() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let broker = tansu::Tansu::start(&d.join("tansu.log"));
    broker.create_topic(TOPIC, PARTITIONS as u32);
    let pg = postgres::Postgres::start();
    pg.create_db("trio");
    let evs = pilot();
    let n = evs.len();
    let ends = last_ends(&evs);
    let end = evs.last().unwrap().completed_at.div_euclid(MICROS_PER_MIN) * MICROS_PER_MIN
        + MICROS_PER_MIN;

    let rules = d.join("rules.yml");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_slatrack"))
        .arg("rules")
        .output()
        .unwrap();
    assert!(out.status.success());
    std::fs::write(&rules, out.stdout).unwrap();
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let targets: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let classic = Prometheus::start(&d.join("prom-text"), &rules, &targets, false);
    let native = Prometheus::start(&d.join("prom-native"), &rules, &targets, true);

    // 40 % is waiting when the three start.
    let (backlog, rest) = evs.split_at(n * 4 / 10);
    let (middle, tail) = rest.split_at(n * 2 / 10);
    produce(&broker.brokers(), backlog, 0);
    let trio = config(d, "trio", &broker.brokers(), &pg.url("trio"), "trio");
    let mut instances: Vec<Option<service::Killed>> = ports
        .iter()
        .enumerate()
        .map(|(i, &p)| Some(start(&trio, &d.join(format!("trio-{i}.log")), p)))
        .collect();
    wait_until("three instances ready", Duration::from_secs(90), || {
        ports.iter().all(|&p| ready(p))
    });
    produce(&broker.brokers(), middle, backlog.len());
    // The first instance leaves once half the records are read (SIGTERM: its last
    // checkpoint, then the others take its partitions).
    wait_until("half the records read", Duration::from_secs(120), || {
        classic
            .query("sum(slatrack_records_total)")
            .ok()
            .and_then(|r| r.first().map(value))
            .is_some_and(|v| v >= (n / 2) as f64)
    });
    let mut first = instances[0].take().unwrap();
    let st = std::process::Command::new("kill")
        .args(["-TERM", &first.0.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    assert!(first.0.wait().unwrap().success(), "SIGTERM ends cleanly");
    produce(&broker.brokers(), tail, backlog.len() + middle.len());

    let watermarks = |p: &Prometheus| -> BTreeMap<usize, f64> {
        p.query("max by (partition) (slatrack_watermark_timestamp_seconds)")
            .unwrap_or_default()
            .iter()
            .filter_map(|s| Some((s["metric"]["partition"].as_str()?.parse().ok()?, value(s))))
            .collect()
    };
    wait_until(
        "every partition read, seen by both servers",
        Duration::from_secs(180),
        || all_read(&watermarks(&classic), &ends) && all_read(&watermarks(&native), &ends),
    );

    // The same topic read by one instance alone.
    let alone_port = free_port();
    let alone = config(
        d,
        "alone",
        &broker.brokers(),
        &d.join("alone.db").display().to_string(),
        "alone",
    );
    let _alone = start(&alone, &d.join("alone.log"), alone_port);
    let addr: std::net::SocketAddr = format!("127.0.0.1:{alone_port}").parse().unwrap();
    wait_until(
        "the lone instance to read every partition",
        Duration::from_secs(180),
        || {
            let text = http::http_get(addr, "/metrics");
            let w: BTreeMap<usize, f64> = text
                .lines()
                .filter_map(|l| {
                    let rest = l.strip_prefix("slatrack_watermark_timestamp_seconds{")?;
                    let p = rest
                        .split("partition=\"")
                        .nth(1)?
                        .split('"')
                        .next()?
                        .parse()
                        .ok()?;
                    Some((p, l.rsplit_once(' ')?.1.parse().ok()?))
                })
                .collect();
            all_read(&w, &ends)
        },
    );
    let single = scrape_counts(alone_port);
    assert!(
        single.len() >= 7 * 4 * 2,
        "the lone instance exports its windows: {single:?}"
    );

    // Counts summed over the instances, in both servers, equal the lone instance's.
    for p in [&classic, &native] {
        for name in COUNTS {
            let got: BTreeMap<(String, String, String, String), f64> = p
                .query(&format!("sum by (tenant, platform, window) ({name})"))
                .unwrap()
                .iter()
                .map(|s| {
                    let m = &s["metric"];
                    let l = |k: &str| m[k].as_str().unwrap_or("").to_string();
                    (
                        (name.to_string(), l("tenant"), l("platform"), l("window")),
                        value(s),
                    )
                })
                .collect();
            let want: BTreeMap<_, _> = single
                .iter()
                .filter(|(k, _)| k.0 == name)
                .map(|(k, v)| (k.clone(), *v))
                .collect();
            let differ: Vec<String> = want
                .iter()
                .filter(|(k, v)| got.get(*k) != Some(*v))
                .map(|(k, v)| format!("{k:?}: one instance {v}, three {:?}", got.get(k)))
                .chain(
                    got.keys()
                        .filter(|k| !want.contains_key(*k))
                        .map(|k| format!("{k:?} only with three")),
                )
                .collect();
            let ends = p
                .query("slatrack_window_end_timestamp_seconds")
                .unwrap_or_default();
            assert!(
                differ.is_empty(),
                "{name} (port {}): {differ:#?}\nwindow ends: {ends:?}",
                p.port
            );
        }
    }
    // The ratios the rules record, against the lone instance's counts.
    let ratios = classic.query("slatrack:window_on_time_ratio").unwrap();
    assert!(!ratios.is_empty());
    for s in &ratios {
        let m = &s["metric"];
        let key = |name: &str| {
            (
                name.to_string(),
                m["tenant"].as_str().unwrap().to_string(),
                m["platform"].as_str().unwrap().to_string(),
                m["window"].as_str().unwrap().to_string(),
            )
        };
        let want =
            single[&key("slatrack_window_on_time_events")] / single[&key("slatrack_window_events")];
        // 0 ÷ 0 in an empty window is NaN on both sides.
        let same = (value(s) - want).abs() < 1e-12 || (want.is_nan() && value(s).is_nan());
        assert!(same, "{m}: {} against {want}", value(s));
    }

    // The 1d P99 of each platform with enough attempts for one. The 1d window holds whole
    // hours: from the hour holding `end − 1d` to `end` (docs/engine.md); the count of
    // attempts there must be the window's, or the comparison is of different things.
    let bounds: Vec<f64> =
        slatrack::sink::prometheus::latency::bounds(&slatrack::config::Config::default())
            .iter()
            .map(|&b| b as f64 / 1e6)
            .collect();
    let from = (end - MICROS_PER_DAY).div_euclid(MICROS_PER_HOUR) * MICROS_PER_HOUR;
    let mut judged = 0;
    for platform in [
        "benevity",
        "goodera",
        "workday",
        "sap_successfactors",
        "impact_in",
    ] {
        let Some((exact, attempts)) = p99_between(&evs, platform, from, end) else {
            continue;
        };
        if attempts < 100 {
            continue;
        }
        let held = classic
            .query(&format!(
                "sum(slatrack_window_attempts{{platform=\"{platform}\",window=\"1d\"}})"
            ))
            .unwrap()
            .first()
            .map(value);
        assert_eq!(
            held,
            Some(attempts as f64),
            "{platform}: the 1d window's span"
        );
        let q = |p: &Prometheus, expr: &str| {
            p.query(expr)
                .unwrap()
                .first()
                .map(value)
                .unwrap_or_else(|| panic!("{expr} has no result"))
        };
        let from_classic = q(&classic, &format!("histogram_quantile(0.99, sum by (tenant, platform, window, le) (slatrack_window_attempt_latency_seconds_bucket{{platform=\"{platform}\",window=\"1d\"}}))"));
        let from_native = q(&native, &format!("histogram_quantile(0.99, sum by (tenant, platform, window) (slatrack_window_attempt_latency_seconds{{platform=\"{platform}\",window=\"1d\"}}))"));
        // Classic: in the bucket (between two bounds) that holds the exact value, give or
        // take the HDR resolution at a bound.
        let hi = bounds
            .iter()
            .copied()
            .find(|&b| b >= exact)
            .unwrap_or(f64::INFINITY);
        let lo = bounds
            .iter()
            .copied()
            .rev()
            .find(|&b| b < exact)
            .unwrap_or(0.0);
        assert!(
            from_classic >= lo * (1.0 - 1.0 / 64.0) && from_classic <= hi * (1.0 + 1.0 / 64.0),
            "{platform}: classic P99 {from_classic} outside ({lo}, {hi}] holding the exact {exact}"
        );
        assert!(
            (from_native - exact).abs() <= 0.03 * exact,
            "{platform}: native P99 {from_native} against the exact {exact}"
        );
        judged += 1;
    }
    assert!(judged >= 2, "{judged} platforms' 1d P99 judged");

    // The recorded P99 exists on both servers (from classic buckets on one, native on the
    // other).
    for p in [&classic, &native] {
        let mut res = Vec::new();
        wait_until("the recorded 1d P99", Duration::from_secs(30), || {
            res = p
                .query("slatrack:window_attempt_latency_seconds:p99{window=\"1d\"}")
                .unwrap_or_default();
            !res.is_empty()
        });
    }
    // Every dashboard query finds data on the classic server.
    for expr in prometheus::dashboard_exprs() {
        let mut res = Vec::new();
        wait_until(
            &format!("dashboard query {expr}"),
            Duration::from_secs(30),
            || {
                res = classic.query(&expr).unwrap_or_default();
                !res.is_empty()
            },
        );
    }
    drop(instances);
    drop(pg);
}
