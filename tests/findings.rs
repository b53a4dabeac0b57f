//! Findings as users get them: `slatrack replay` of generated traffic, then `slatrack
//! scorecard --format json` (and markdown). Patterns are planted at known places in
//! traffic whose rates never change (every platform one profile, no incident weeks): an
//! outage, a step change at a known week and retries at known local hours. Each is
//! found where it was planted and nothing else is; the same traffic without them, under
//! three seeds, gives no finding; the Globex fixture gives the seed report's story.

use chrono::{TimeZone, Timelike};
use serde_json::Value;
use slatrack::event::{DeliveryEvent, Outcome};
use slatrack::synthetic::{globex_profiles, pilot_of, Profile};
use slatrack::time::{parse_rfc3339, Micros, MICROS_PER_DAY};
use std::io::Write;
use std::path::Path;
use std::process::Command;

const LA: chrono_tz::Tz = chrono_tz::America::Los_Angeles;
const CONFIG: &str = "[[tenants]]\nid = \"globex\"\ntime_zone = \"America/Los_Angeles\"\n";

/// Four platforms behaving alike (Benevity's profile), in the pilot's shares.
fn alike() -> Vec<Profile> {
    let benevity = globex_profiles()
        .into_iter()
        .find(|p| p.platform == "benevity")
        .unwrap();
    globex_profiles()
        .into_iter()
        .map(|p| Profile {
            platform: p.platform,
            direction: p.direction,
            share: p.share,
            ..benevity.clone()
        })
        .collect()
}

/// Ten weeks from Monday 2025-09-08 (Los Angeles), 100,000 events.
fn stationary(seed: u64) -> Vec<DeliveryEvent> {
    let start = LA
        .with_ymd_and_hms(2025, 9, 8, 0, 0, 0)
        .unwrap()
        .timestamp_micros();
    pilot_of(
        &alike(),
        seed,
        "globex",
        start,
        70 * MICROS_PER_DAY,
        100_000,
    )
}

/// `slatrack replay` then `slatrack scorecard` over the ten local weeks: (JSON, markdown).
fn report(dir: &Path, evs: &[DeliveryEvent]) -> (Value, String) {
    let input = dir.join("events.jsonl");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&input).unwrap());
    for e in evs {
        writeln!(f, "{}", slatrack::codec::json::encode(e)).unwrap();
    }
    drop(f);
    let (config, store) = (dir.join("c.toml"), dir.join("s.db"));
    std::fs::write(&config, CONFIG).unwrap();
    let _ = std::fs::remove_file(&store);
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_slatrack"))
            .args(args)
            .args(["--config", config.to_str().unwrap()])
            .args(["--store", store.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    run(&["replay", "--input", input.to_str().unwrap()]);
    let span = [
        "scorecard",
        "--tenant",
        "globex",
        "--from",
        "2025-09-08",
        "--to",
        "2025-11-17",
    ];
    let json: Value =
        serde_json::from_str(&run(&[&span[..], &["--format", "json"]].concat())).unwrap();
    let md = run(&[&span[..], &["--format", "markdown"]].concat());
    (json, md)
}

fn findings(j: &Value) -> Vec<&Value> {
    j["findings"].as_array().unwrap().iter().collect()
}

fn local_hour(t: Micros) -> u32 {
    chrono::DateTime::from_timestamp_micros(t)
        .unwrap()
        .with_timezone(&LA)
        .hour()
}

#[test]
fn planted_patterns_are_found_where_they_were_planted() {
    let dir = tempfile::tempdir().unwrap();
    let mut evs = stationary(7);
    let (down_from, down_to) = (
        parse_rfc3339("2025-10-15T14:00:00Z").unwrap(),
        parse_rfc3339("2025-10-15T16:00:00Z").unwrap(),
    );
    // Week 6 starts at local midnight on Monday October 13.
    let week6 = LA
        .with_ymd_and_hms(2025, 10, 13, 0, 0, 0)
        .unwrap()
        .timestamp_micros();
    for (i, e) in evs.iter_mut().enumerate() {
        if e.outcome == Outcome::Retrying {
            continue;
        }
        let t = e.completed_at;
        // Workday down for two hours: every event fails.
        if e.platform == "workday" && down_from <= t && t < down_to {
            e.outcome = Outcome::Failed;
        }
        // Benevity fails one delivery in eight from week 6 on.
        if e.platform == "benevity" && t >= week6 && e.outcome == Outcome::Delivered && i % 8 == 0 {
            e.outcome = Outcome::Failed;
        }
        // Goodera is throttled 08:00-10:00 Los Angeles time: most events need a retry.
        if e.platform == "goodera"
            && (8..10).contains(&local_hour(t))
            && e.attempt == 1
            && i % 5 != 0
        {
            e.attempt = 2;
        }
    }
    let (j, md) = report(dir.path(), &evs);
    let found = findings(&j);
    let kinds: Vec<(&str, &str)> = found
        .iter()
        .map(|f| (f["kind"].as_str().unwrap(), f["platform"].as_str().unwrap()))
        .collect();
    let outage = found
        .iter()
        .find(|f| f["kind"] == "outage")
        .expect("an outage");
    assert_eq!(outage["platform"], "workday");
    let from = parse_rfc3339(outage["from"].as_str().unwrap()).unwrap();
    let to = parse_rfc3339(outage["to"].as_str().unwrap()).unwrap();
    // Minute rows: its edges are the first and last failed minute within the two hours.
    assert!(
        down_from <= from && from < down_from + 20 * 60_000_000,
        "{outage}"
    );
    assert!(down_to - 20 * 60_000_000 < to && to <= down_to, "{outage}");
    let planted = evs
        .iter()
        .filter(|e| e.platform == "workday" && e.outcome != Outcome::Retrying)
        .filter(|e| down_from <= e.completed_at && e.completed_at < down_to)
        .count() as u64;
    assert_eq!(outage["events"], planted, "{outage}");
    assert_eq!(outage["failed"], planted);

    let step = found
        .iter()
        .find(|f| f["kind"] == "step_change" && f["metric"] == "failed")
        .expect("a step change of the failure rate");
    assert_eq!(
        (step["platform"].as_str(), step["metric"].as_str()),
        (Some("benevity"), Some("failed"))
    );
    assert_eq!(step["week"], 6, "{step}");
    let (before, after) = (
        step["before"].as_f64().unwrap(),
        step["after"].as_f64().unwrap(),
    );
    assert!(after - before > 0.08, "{step}");
    assert!(
        step["test"]["p_value"].as_f64().unwrap() < step["test"]["threshold"].as_f64().unwrap()
    );

    let peak = found
        .iter()
        .find(|f| f["kind"] == "peak_hours")
        .expect("peak hours");
    assert_eq!(
        (peak["platform"].as_str(), peak["metric"].as_str()),
        (Some("goodera"), Some("retry"))
    );
    assert_eq!(peak["hours"], serde_json::json!([8, 9]), "{peak}");
    assert_eq!(peak["time_zone"], "America/Los_Angeles");

    // Nothing else: the outage is not also peak hours, the retries are not a step.
    // Nothing else: the outage is not also peak hours, the retries are not a step. (The
    // failed deliveries are late deliveries too: Benevity's on-time rate steps as well.)
    assert_eq!(
        kinds,
        [
            ("outage", "workday"),
            ("step_change", "benevity"),
            ("step_change", "benevity"),
            ("peak_hours", "goodera")
        ],
        "{j:#}"
    );
    assert!(md.contains("### Findings"), "{md}");
    assert!(
        md.contains("Goodera's retries concentrate at 08:00–10:00 (America/Los_Angeles)"),
        "{md}"
    );
    assert!(md.contains("Benevity's failure rate moved from"), "{md}");
}

#[test]
fn stationary_traffic_gives_no_findings() {
    let dir = tempfile::tempdir().unwrap();
    for seed in [1, 2, 3] {
        let (j, md) = report(dir.path(), &stationary(seed));
        assert_eq!(findings(&j), Vec::<&Value>::new(), "seed {seed}: {j:#}");
        assert!(md.contains("No findings"), "{md}");
    }
}

/// The seed report's story, from the fixture: Workday's failures fall at week 4 (its
/// firewall incident took weeks 1-3), its on-time rate recovers and holds, and it makes
/// most of the P99.
#[test]
fn the_globex_fixture_tells_the_seed_reports_story() {
    let dir = tempfile::tempdir().unwrap();
    let start = parse_rfc3339("2025-09-08T00:00:00Z").unwrap();
    let mut evs = slatrack::synthetic::globex_fixture();
    // Its weeks are UTC weeks: move it to start at Los Angeles midnight.
    let shift = LA
        .with_ymd_and_hms(2025, 9, 8, 0, 0, 0)
        .unwrap()
        .timestamp_micros()
        - start;
    for e in &mut evs {
        for t in [&mut e.enqueued_at, &mut e.started_at, &mut e.completed_at] {
            *t += shift;
        }
    }
    let (j, _) = report(dir.path(), &evs);
    let has = |kind: &str, metric: Option<&str>| {
        findings(&j).into_iter().find(|f| {
            f["kind"] == kind
                && f["platform"] == "workday"
                && metric.is_none_or(|m| f["metric"] == m)
        })
    };
    let failed = has("step_change", Some("failed")).expect("Workday's failure rate steps");
    assert_eq!(failed["week"], 4, "{j:#}");
    assert!(failed["before"].as_f64().unwrap() > failed["after"].as_f64().unwrap());
    let recovery = has("recovery", None).expect("a recovery");
    assert_eq!(recovery["week"], 4);
    assert!(has("tail", None).is_some(), "Workday makes the P99: {j:#}");
    assert!(
        findings(&j).iter().all(|f| f["platform"] == "workday"),
        "only Workday changes: {j:#}"
    );
}
