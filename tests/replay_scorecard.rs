//! Whole-program behaviour of the offline path: the 10-week Globex fixture through
//! `replay` into the store and back out as a scorecard.

mod common;

#[path = "support/scorecard.rs"]
mod scorecard;

use common::{assert_quantile, oracle, Expected};
use scorecard::scorecard;
use serde_json::Value;
use slatrack::codec::Format;
use slatrack::config::Config;
use slatrack::event::{DeliveryEvent, TimeBounds};
use slatrack::replay::{self, ReplayOptions, ReplaySummary};
use slatrack::store::SqliteStore;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

fn write_jsonl(path: &Path, events: &[DeliveryEvent]) {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    for e in events {
        writeln!(f, "{}", slatrack::codec::json::encode(e)).unwrap();
    }
}

fn write_pb(path: &Path, events: &[DeliveryEvent]) {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    for e in events {
        let m = slatrack::codec::protobuf::to_message(e);
        f.write_all(&prost::Message::encode_length_delimited_to_vec(&m))
            .unwrap();
    }
}

fn replay_files(store: &Path, inputs: &[PathBuf]) -> ReplaySummary {
    let mut s = SqliteStore::open(store).unwrap();
    let opts = ReplayOptions {
        inputs: inputs.to_vec(),
        format: None,
        bounds: None,
    };
    replay::run(Arc::new(Config::default()), &mut s, &opts, |_| {}).unwrap()
}

fn check_metrics(what: &str, got: &Value, want: &Expected) {
    let f = |k: &str| got[k].as_f64();
    assert_eq!(got["events"].as_u64(), Some(want.events), "{what} events");
    assert_eq!(
        got["attempts"].as_u64(),
        Some(want.attempts),
        "{what} attempts"
    );
    assert_eq!(
        f("on_time_ratio"),
        want.ratio(want.on_time),
        "{what} on_time_ratio"
    );
    assert_eq!(
        f("retry_ratio"),
        want.ratio(want.retried),
        "{what} retry_ratio"
    );
    assert_eq!(
        f("failed_ratio"),
        want.ratio(want.failed_or_dlq),
        "{what} failed_ratio"
    );
    assert_eq!(
        f("max_retries_ratio"),
        want.ratio(want.max_retries),
        "{what} max_retries_ratio"
    );
    assert_eq!(f("dlq_ratio"), want.ratio(want.dlq), "{what} dlq_ratio");
    let avg =
        (want.attempts > 0).then(|| want.latency_sum_us as f64 / want.attempts as f64 / 1000.0);
    assert_eq!(f("avg_latency_ms"), avg, "{what} avg_latency_ms");
    assert_quantile(&format!("{what} p50"), f("p50_ms"), want.quantile_ms(500));
    assert_quantile(&format!("{what} p95"), f("p95_ms"), want.quantile_ms(950));
    assert_quantile(&format!("{what} p99"), f("p99_ms"), want.quantile_ms(990));
}

#[test]
fn globex_fixture_replays_to_exact_scorecard_idempotently() {
    let dir = tempfile::tempdir().unwrap();
    let events = slatrack::synthetic::globex_fixture();
    let input = dir.path().join("globex.jsonl");
    write_jsonl(&input, &events);
    let store = dir.path().join("s.db");

    let first = replay_files(&store, std::slice::from_ref(&input));
    assert_eq!(first.records, events.len() as u64);
    assert_eq!(first.events, 28_947);
    assert!(first.rejected.is_empty() && first.too_late == 0 && first.duplicates == 0);
    let json_once = scorecard(&store, "json");
    let rows_once = SqliteStore::open(&store).unwrap().bucket_rows().unwrap();

    // Replaying the same input again changes nothing.
    let second = replay_files(&store, std::slice::from_ref(&input));
    assert_eq!(first, second);
    assert_eq!(
        SqliteStore::open(&store).unwrap().bucket_rows().unwrap(),
        rows_once
    );
    assert_eq!(scorecard(&store, "json"), json_once);

    let v: Value = serde_json::from_str(&json_once).unwrap();
    let config = Config::default();
    let want = oracle(&events, &config);
    let mut overall = Expected::default();
    for p in v["platforms"].as_array().unwrap() {
        let id = p["platform"].as_str().unwrap();
        let empty = Expected::default();
        let w = want
            .get(&("globex".to_string(), id.to_string()))
            .unwrap_or(&empty);
        overall.merge(w);
        check_metrics(id, p, w);
    }
    check_metrics("overall", &v["overall"], &overall);

    // The seed report's statuses, reproduced from raw events.
    let status = |i: usize| v["platforms"][i]["status"].as_str().unwrap().to_string();
    let names: Vec<_> = v["platforms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["platform"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "benevity",
            "goodera",
            "workday",
            "sap_successfactors",
            "impact_in"
        ]
    );
    assert_eq!(
        [status(0), status(1), status(2), status(3), status(4)],
        ["green", "yellow", "red", "n/a", "green"]
    );
    let st = &v["overall"]["statuses"];
    assert_eq!(v["overall"]["status"], "yellow");
    assert_eq!(
        [
            &st["failed"],
            &st["retry"],
            &st["max_retries"],
            &st["dlq"],
            &st["p50"],
            &st["p95"],
            &st["p99"]
        ],
        ["yellow", "yellow", "red", "yellow", "yellow", "yellow", "red"]
    );
    assert_eq!(v["weekly"].as_array().unwrap().len(), 10);
    let weekly_events: u64 = v["weekly"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["events"].as_u64().unwrap())
        .sum();
    assert_eq!(weekly_events, 28_947);
    assert_eq!(v["rejected"], 0);

    // Golden markdown: the rendered section is reviewed like code.
    let md = scorecard(&store, "markdown");
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/globex-scorecard.md");
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&golden, &md).unwrap();
    }
    let expected =
        std::fs::read_to_string(&golden).expect("golden file (UPDATE_GOLDEN=1 to create)");
    assert_eq!(
        md,
        expected,
        "scorecard markdown differs from {}",
        golden.display()
    );

    // Golden HTML: the page's layout, charts included (tests/report_html.rs renders it
    // in Chromium).
    let html = scorecard(&store, "html");
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/globex-scorecard.html");
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&golden, &html).unwrap();
    }
    let expected =
        std::fs::read_to_string(&golden).expect("golden file (UPDATE_GOLDEN=1 to create)");
    assert!(
        html == expected,
        "scorecard HTML differs from {} (UPDATE_GOLDEN=1 to accept)",
        golden.display()
    );
    for external in ["<script", "src=\"http", "href=\"http", "@import", "url("] {
        assert!(!html.contains(external), "self-contained: {external}");
    }
}

#[test]
fn protobuf_and_json_inputs_give_the_same_scorecard() {
    let dir = tempfile::tempdir().unwrap();
    let start = slatrack::time::parse_date("2025-09-08").unwrap();
    let events = slatrack::synthetic::pilot(
        7,
        "globex",
        start,
        14 * slatrack::time::MICROS_PER_DAY,
        3_000,
    );
    let (j, p) = (dir.path().join("a.jsonl"), dir.path().join("a.pb"));
    write_jsonl(&j, &events);
    write_pb(&p, &events);
    let (sj, sp) = (dir.path().join("j.db"), dir.path().join("p.db"));
    let a = replay_files(&sj, &[j]);
    let b = replay_files(&sp, &[p]);
    assert_eq!(
        (a.records, a.events, a.counted),
        (b.records, b.events, b.counted)
    );
    assert_eq!(scorecard(&sj, "json"), scorecard(&sp, "json"));
}

/// Every invalid kind of the contract, each between valid neighbours.
#[test]
fn bad_input_is_rejected_with_its_reason_and_neighbours_count() {
    let valid = |id: &str| {
        format!(
            r#"{{"event_id":"{id}","tenant":"globex","platform":"workday","direction":"inbound","attempt":1,"max_attempts":4,"outcome":"delivered","enqueued_at":"2025-10-01T09:00:00.000Z","started_at":"2025-10-01T09:00:00.100Z","completed_at":"2025-10-01T09:00:00.412Z","http_status":200,"error":""}}"#
        )
    };
    let bad = [
        ("malformed_json", "{not json".to_string()),
        (
            "malformed_json",
            r#"{"event_id":"x","attempt":"two"}"#.to_string(),
        ),
        ("missing_event_id", valid("").to_string()),
        (
            "missing_tenant",
            valid("t1").replace(r#""tenant":"globex""#, r#""tenant":"""#),
        ),
        (
            "missing_platform",
            valid("p1").replace(r#""platform":"workday","#, ""),
        ),
        (
            "unknown_outcome",
            valid("o1").replace("\"delivered\"", "\"teleported\""),
        ),
        (
            "unknown_direction",
            valid("d1").replace("\"inbound\"", "\"sideways\""),
        ),
        (
            "bad_timestamp",
            valid("ts1").replace("2025-10-01T09:00:00.412Z", "yesterday"),
        ),
        (
            "bad_timestamp",
            valid("ts2").replace("2025-10-01T09:00:00.100Z", "2025-02-30T09:00:00Z"),
        ),
        (
            "attempt_zero",
            valid("a0").replace("\"attempt\":1", "\"attempt\":0"),
        ),
        (
            "attempt_exceeds_max",
            valid("a5").replace("\"attempt\":1", "\"attempt\":5"),
        ),
        (
            "started_before_enqueued",
            valid("s1").replace("09:00:00.100Z", "08:59:59.000Z"),
        ),
        (
            "completed_before_started",
            valid("c1").replace("09:00:00.412Z", "09:00:00.050Z"),
        ),
        (
            "timestamp_out_of_range",
            valid("y1").replace("2025-10-01T09:00:00.000Z", "1970-01-01T00:00:00.000Z"),
        ),
        (
            "timestamp_out_of_range",
            valid("y2").replace("2025-10-01T09:00:00.412Z", "9999-12-31T23:59:59.000Z"),
        ),
        (
            "id_too_long",
            valid("long").replace("\"long\"", &format!("\"{}\"", "x".repeat(257))),
        ),
    ];
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("bad.jsonl");
    let mut lines = vec![valid("ok-0")];
    for (i, (_, line)) in bad.iter().enumerate() {
        lines.push(line.clone());
        lines.push(valid(&format!("ok-{}", i + 1)));
    }
    lines.push(valid("ok-0")); // an at-least-once duplicate
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();
    let store = dir.path().join("s.db");
    let summary = replay_files(&store, &[input]);
    assert_eq!(
        summary.counted,
        bad.len() as u64 + 1,
        "every valid neighbour counted"
    );
    assert_eq!(summary.events, bad.len() as u64 + 1);
    assert_eq!(summary.duplicates, 1);
    let mut want = std::collections::BTreeMap::new();
    for (reason, _) in &bad {
        *want.entry(reason.to_string()).or_insert(0u64) += 1;
    }
    assert_eq!(summary.rejected, want);

    // Attributable rejections (tenant and time readable) reach the tenant's scorecard.
    let v: Value = serde_json::from_str(&scorecard(&store, "json")).unwrap();
    assert_eq!(v["platforms"][2]["events"], bad.len() as u64 + 1);
    assert_eq!(v["rejected_by_reason"]["attempt_zero"], 1);
    assert_eq!(v["rejected_by_reason"]["completed_before_started"], 1);
    assert!(
        v["rejected_by_reason"].get("malformed_json").is_none(),
        "no tenant to attribute to"
    );
    assert!(
        v["rejected_by_reason"].get("id_too_long").is_none(),
        "an oversized id is never attributed"
    );
}

#[test]
fn protobuf_specific_rejections() {
    use prost::Message;
    let config = Config::default();
    let bounds = TimeBounds {
        min: TimeBounds::MIN_PLAUSIBLE,
        max_future_skew: Some(config.validation.max_future_skew.0),
    };
    let mut dec = slatrack::codec::Decoder::new(Format::Protobuf, bounds, 1024);
    let now = slatrack::time::now_micros();
    let ev = slatrack::synthetic::globex_fixture().swap_remove(0);
    let good = slatrack::codec::protobuf::to_message(&ev);
    assert_eq!(dec.decode(&good.encode_to_vec(), now).unwrap(), &ev);
    let reason = |dec: &mut slatrack::codec::Decoder, bytes: &[u8]| {
        dec.decode(bytes, now).unwrap_err().reason.code()
    };
    let mut m = good.clone();
    m.outcome = 9;
    assert_eq!(reason(&mut dec, &m.encode_to_vec()), "unknown_outcome");
    let mut m = good.clone();
    m.direction = 0;
    assert_eq!(reason(&mut dec, &m.encode_to_vec()), "unknown_direction");
    let mut m = good.clone();
    m.completed_at = None;
    assert_eq!(reason(&mut dec, &m.encode_to_vec()), "bad_timestamp");
    let mut m = good.clone();
    m.started_at.as_mut().unwrap().nanos = -5;
    assert_eq!(reason(&mut dec, &m.encode_to_vec()), "bad_timestamp");
    // event_id declared 80 bytes long, 1 byte present: a truncated record.
    assert_eq!(reason(&mut dec, &[0x0a, 0x50, b'a']), "malformed_protobuf");
    assert_eq!(reason(&mut dec, &[0xff; 2000]), "too_large");
    let mut m = good;
    m.attempt = u32::MAX;
    assert_eq!(reason(&mut dec, &m.encode_to_vec()), "attempt_exceeds_max");
    // The decoder recovers: the next good record decodes.
    assert!(dec
        .decode(&slatrack::codec::protobuf::encode(&ev), now)
        .is_ok());
}

#[test]
fn config_errors_reach_the_user_with_key_and_value() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bad.toml");
    std::fs::write(&cfg, "[sla]\ndlq_target = 3\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_slatrack"))
        .args(["replay", "--input", "x.jsonl", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("sla.dlq_target") && err.contains('3'), "{err}");
}

/// Each platform's weekly figures add up to its period figures and, across platforms, to
/// the overall week; each week's on-time ratio equals the naive computation of that
/// platform's events in that week; the seed's exit criterion is judged.
#[test]
fn per_platform_weeks_add_up_and_match_the_events() {
    let dir = tempfile::tempdir().unwrap();
    let events = slatrack::synthetic::globex_fixture();
    let input = dir.path().join("globex.jsonl");
    write_jsonl(&input, &events);
    let store = dir.path().join("s.db");
    replay_files(&store, &[input]);
    let v: Value = serde_json::from_str(&scorecard(&store, "json")).unwrap();
    let from = slatrack::time::parse_date("2025-09-08").unwrap();
    let week_ms = 7 * slatrack::time::MICROS_PER_DAY;
    let mut per_week = [0u64; 10];
    for p in v["platforms"].as_array().unwrap() {
        let weekly = p["weekly"].as_array().unwrap();
        assert_eq!(weekly.len(), 10, "{}", p["platform"]);
        let sum: u64 = weekly.iter().map(|w| w["events"].as_u64().unwrap()).sum();
        assert_eq!(sum, p["events"].as_u64().unwrap(), "{}", p["platform"]);
        for (i, w) in weekly.iter().enumerate() {
            per_week[i] += w["events"].as_u64().unwrap();
            // Terminal records of this platform completed in week i, on time or not.
            let (n, on_time) = events
                .iter()
                .filter(|e| {
                    e.is_terminal()
                        && e.platform == p["platform"].as_str().unwrap()
                        && (e.completed_at - from).div_euclid(week_ms) == i as i64
                })
                .fold((0u64, 0u64), |(n, ok), e| {
                    let target = Config::default().targets(&e.platform).latency_target_us;
                    let on_time = e.outcome == slatrack::event::Outcome::Delivered
                        && e.end_to_end_us() as i64 <= target;
                    (n + 1, ok + u64::from(on_time))
                });
            assert_eq!(w["events"].as_u64().unwrap(), n);
            if n > 0 {
                let want = on_time as f64 / n as f64;
                let got = w["on_time_ratio"].as_f64().unwrap();
                assert!(
                    (got - want).abs() < 1e-12,
                    "{} week {i}: {got} {want}",
                    p["platform"]
                );
            }
        }
    }
    let overall: Vec<u64> = v["weekly"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["events"].as_u64().unwrap())
        .collect();
    assert_eq!(per_week.to_vec(), overall);
    let c = &v["criteria"][0];
    assert_eq!(c["platform"], "workday");
    assert_eq!(
        (c["met"].as_bool(), c["streak"].as_u64()),
        (Some(false), Some(0))
    );
    // Error budgets: per platform with events, then overall, from the same figures.
    let budgets = v["error_budgets"].as_array().unwrap();
    let active: Vec<&Value> = v["platforms"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["events"].as_u64() > Some(0))
        .collect();
    assert_eq!(budgets.len(), active.len() + 1);
    for (b, p) in budgets
        .iter()
        .zip(active.iter().copied().chain([&v["overall"]]))
    {
        let events = p["events"].as_u64().unwrap();
        let target = p["target_on_time_ratio"].as_f64().unwrap();
        let on_time = (p["on_time_ratio"].as_f64().unwrap() * events as f64).round() as u64;
        assert_eq!(b["events"].as_u64(), Some(events));
        assert_eq!(b["missed"].as_u64(), Some(events - on_time));
        let allowed = (1.0 - target) * events as f64;
        assert!((b["allowed_misses"].as_f64().unwrap() - allowed).abs() < 1e-6);
        let remaining = allowed - (events - on_time) as f64;
        assert!((b["remaining"].as_f64().unwrap() - remaining).abs() < 1e-6);
        assert!(b["projected_remaining"].is_null(), "the period has ended");
    }
    // Workday misses 13 % against a 5 % budget: overspent.
    let workday = budgets.iter().find(|b| b["platform"] == "workday").unwrap();
    assert!(workday["remaining"].as_f64() < Some(0.0));
}
