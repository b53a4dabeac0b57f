//! The command line as a new user meets it: each finding a whole-program run of the
//! binary, asserting what the user sees (exit status, stdout, stderr, files left behind).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn slatrack() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_slatrack"));
    c.env("SLATRACK_LOG", "warn");
    for k in [
        "SLATRACK_BROKERS",
        "SLATRACK_STORE",
        "SLATRACK_METRICS_LISTEN",
    ] {
        c.env_remove(k);
    }
    c
}

fn run(c: &mut Command) -> Output {
    c.output().expect("the slatrack binary runs")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A JSON-lines file of one tenant's events over three days from 2025-10-06.
fn events_file(dir: &Path, tenant: &str) -> PathBuf {
    let start = slatrack::time::parse_date("2025-10-06").expect("date");
    let events = slatrack::synthetic::pilot(7, tenant, start, 3 * 86_400_000_000, 300);
    let path = dir.join(format!("{tenant}.jsonl"));
    let mut f = std::fs::File::create(&path).expect("create");
    for e in &events {
        writeln!(f, "{}", slatrack::codec::json::encode(e)).expect("write");
    }
    path
}

/// `scorecard` over the days of [`events_file`], before `--store`'s value.
const GLOBEX_SCORECARD: [&str; 8] = [
    "scorecard",
    "--tenant",
    "globex",
    "--from",
    "2025-10-06",
    "--to",
    "2025-10-09",
    "--store",
];

fn replay(store: &Path, input: &Path) -> Output {
    run(slatrack()
        .arg("replay")
        .arg("--store")
        .arg(store)
        .arg("--input")
        .arg(input))
}

#[test]
fn a_replay_summary_names_the_tenants_and_dates_it_covers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = events_file(dir.path(), "globex");
    let out = replay(&dir.path().join("s.db"), &input);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("tenant \"globex\"") && stdout.contains("--from 2025-10-06"),
        "{stdout}"
    );
    let summary: serde_json::Value = serde_json::from_slice(
        &run(slatrack()
            .args(["replay", "--json", "--store"])
            .arg(dir.path().join("s.db"))
            .arg("--input")
            .arg(&input))
        .stdout,
    )
    .expect("JSON summary");
    assert_eq!(summary["coverage"][0]["tenant"], "globex", "{summary}");
}

#[test]
fn a_scorecard_without_data_names_what_the_store_holds_and_fails() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("s.db");
    assert!(replay(&store, &events_file(dir.path(), "globex"))
        .status
        .success());
    for (tenant, from, to) in [
        ("Globex", "2025-10-06", "2025-10-09"),
        ("globex", "2024-01-01", "2024-02-01"),
    ] {
        let out = run(slatrack()
            .args([
                "scorecard",
                "--tenant",
                tenant,
                "--from",
                from,
                "--to",
                to,
                "--store",
            ])
            .arg(&store));
        assert!(!out.status.success(), "{tenant} {from}: exit 0");
        let err = text(&out.stderr);
        assert!(
            err.contains("no data for tenant")
                && err.contains("tenant \"globex\"")
                && err.contains("--from 2025-10-06"),
            "{err}"
        );
        assert!(
            out.stdout.is_empty(),
            "no all-N/A report: {}",
            text(&out.stdout)
        );
    }
    let ok = run(slatrack().args(GLOBEX_SCORECARD).arg(&store));
    assert!(ok.status.success(), "{}", text(&ok.stderr));
}

#[test]
fn a_replay_that_counts_nothing_fails_and_leaves_no_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    let binary = dir.path().join("garbage.jsonl");
    std::fs::write(
        &binary,
        (0..4096u32)
            .map(|i| (i * 7 % 256) as u8)
            .collect::<Vec<_>>(),
    )
    .expect("write");
    let store = dir.path().join("s.db");
    let out = replay(&store, &binary);
    assert!(
        !out.status.success(),
        "exit 0 for a replay that counted nothing"
    );
    assert!(
        text(&out.stderr).contains("none of the 17 records decodes as JSON")
            && text(&out.stderr).contains("Nothing was written"),
        "{}",
        text(&out.stderr)
    );
    assert!(!store.exists(), "a failed replay left a store behind");
}

#[test]
fn a_missing_input_says_its_cause_once_and_creates_no_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("s.db");
    let out = replay(&store, &dir.path().join("missing.jsonl"));
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert_eq!(err.matches("No such file or directory").count(), 1, "{err}");
    assert!(err.contains("missing.jsonl"), "{err}");
    assert!(
        !store.exists(),
        "a failed replay created {}",
        store.display()
    );
    let out = run(slatrack().args(["rules", "--config", "/nonexistent/slatrack.toml"]));
    let err = text(&out.stderr);
    assert!(!out.status.success());
    assert_eq!(err.matches("No such file or directory").count(), 1, "{err}");
}

#[test]
fn every_command_takes_the_config_the_same_way() {
    // `run` without --config reads the defaults (no [kafka]) and says what is missing.
    let out = run(slatrack().arg("run"));
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("[kafka]") && !err.contains("required"),
        "{err}"
    );
}

#[test]
fn a_closed_stdout_is_not_a_panic() {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = events_file(dir.path(), "globex");
    let store = dir.path().join("s.db");
    assert!(replay(&store, &input).status.success());
    for args in [vec!["rules"], GLOBEX_SCORECARD.to_vec()] {
        // The read end is closed before the child starts: its first write fails.
        let (reader, writer) = std::io::pipe().expect("pipe");
        drop(reader);
        let mut c = slatrack();
        c.args(&args)
            .stdout(writer)
            .stderr(std::process::Stdio::piped());
        if args[0] == "scorecard" {
            c.arg(&store);
        }
        let out = c.spawn().expect("spawn").wait_with_output().expect("wait");
        let err = text(&out.stderr);
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert_eq!(out.status.code(), Some(0), "{args:?}: {err}");
    }
}

#[test]
fn a_scorecard_reads_a_store_its_user_may_not_write() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("s.db");
    assert!(replay(&store, &events_file(dir.path(), "globex"))
        .status
        .success());
    let mut c = slatrack();
    // As root, permissions do not stop writes: read as the unprivileged `nobody` instead.
    let root = text(&run(Command::new("id").arg("-u")).stdout).trim() == "0";
    use std::os::unix::fs::PermissionsExt;
    let set = |p: &Path, mode: u32| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).expect("chmod")
    };
    if root {
        set(dir.path(), 0o755);
        set(&store, 0o644);
        c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(env!("CARGO_BIN_EXE_slatrack"))
            .env("SLATRACK_LOG", "warn");
    } else {
        set(&store, 0o444);
        set(dir.path(), 0o555);
    }
    let before = std::fs::read(&store).expect("bytes");
    let out = run(c.args(GLOBEX_SCORECARD).arg(&store));
    set(dir.path(), 0o755);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("Delivery SLA"),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(
        std::fs::read(&store).expect("bytes"),
        before,
        "reading changed the store"
    );
}

#[test]
fn durations_on_the_command_line_take_units() {
    let out = run(slatrack().args(["demo", "--duration", "1x"]));
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("is not a duration") && err.contains("5m"),
        "{err}"
    );
}

/// The demo serves metrics where asked, falls back to a free port when the default one is
/// taken, and starts clean when run again in the same directory.
#[test]
fn the_demo_listens_where_asked_and_survives_a_busy_default_port() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Hold the default port (if another process already does, the demo must cope too).
    let _held = std::net::TcpListener::bind("127.0.0.1:9898");
    for listen in [None, Some("127.0.0.1:0")] {
        let mut c = slatrack();
        c.args(["demo", "--duration", "2s", "--rate", "200", "--dir"])
            .arg(dir.path().join("demo"));
        if let Some(l) = listen {
            c.args(["--listen", l]);
        }
        let out = run(&mut c);
        let stdout = text(&out.stdout);
        assert!(
            out.status.success(),
            "{listen:?}: {}\n{stdout}",
            text(&out.stderr)
        );
        assert!(
            stdout.contains("Prometheus metrics at http://127.0.0.1:"),
            "{stdout}"
        );
        assert!(!stdout.contains("127.0.0.1:9898/metrics"), "{stdout}");
        if listen.is_none() {
            assert!(stdout.contains("9898 is taken"), "{stdout}");
        }
        let last = stdout
            .lines()
            .rev()
            .find(|l| l.contains("records "))
            .unwrap_or_else(|| panic!("{listen:?}: no line counts records:\n{stdout}"))
            .to_string();
        assert!(
            !last.contains("records 0 "),
            "{listen:?}: the final line counts nothing: {last}"
        );
    }
}

/// `demo --format json` publishes JSON records and the service decodes them as JSON: every
/// record is counted, none rejected.
#[test]
fn the_demo_runs_on_json_records() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = run(slatrack()
        .args(["demo", "--format", "json", "--duration", "2s"])
        .args(["--rate", "200", "--listen", "", "--dir"])
        .arg(dir.path().join("demo")));
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}\n{stdout}", text(&out.stderr));
    let last = stdout
        .lines()
        .rev()
        .find(|l| l.contains("records "))
        .unwrap_or_else(|| panic!("no line counts records:\n{stdout}"));
    let field = |name: &str| -> u64 {
        let rest = last.split(&format!("{name} ")).nth(1).unwrap_or("");
        let n = rest.split_whitespace().next().unwrap_or("");
        n.parse()
            .unwrap_or_else(|_| panic!("no {name} count in {last:?}"))
    };
    assert!(field("records") > 0, "{last}");
    assert_eq!(field("rejected"), 0, "{last}");
    assert_eq!(field("counted"), field("records"), "{last}");
}

/// `--period` is a calendar month or an ISO week: the same report as the equal
/// `--from`/`--to`; a period that has not ended is marked partial; a bad one is explained.
#[test]
fn periods_are_months_and_iso_weeks() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("s.db");
    let input = events_file(dir.path(), "globex");
    assert!(replay(&store, &input).status.success());
    // `scorecard --tenant globex ARGS --store STORE`.
    let scorecard = |args: &[&str]| {
        run(slatrack()
            .args(["scorecard", "--tenant", "globex"])
            .args(args)
            .arg("--store")
            .arg(&store))
    };
    let card = |args: &[&str]| {
        let out = scorecard(&[args, &["--format", "json"]].concat());
        assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
        serde_json::from_slice::<serde_json::Value>(&out.stdout).expect("json")
    };
    // The events: 6 to 9 October 2025, all inside ISO week 41 and October.
    let month = card(&["--period", "2025-10"]);
    assert_eq!(month, card(&["--from", "2025-10-01", "--to", "2025-11-01"]));
    assert_eq!(
        (&month["from"], &month["to"]),
        (&"2025-10-01".into(), &"2025-11-01".into())
    );
    assert_eq!(month["partial"], false);
    let week = card(&["--period", "2025-W41"]);
    assert_eq!(week, card(&["--from", "2025-10-06", "--to", "2025-10-13"]));
    assert_eq!(week["overall"]["events"], month["overall"]["events"]);
    // The current month has not ended (no data there: the error names the range).
    let now = slatrack::time::now_micros();
    let out = scorecard(&["--period", &slatrack::time::format_date(now)[..7]]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("no data for tenant"),
        "{}",
        text(&out.stderr)
    );
    // A range that has not ended, with data in it: marked partial.
    let recent = slatrack::synthetic::pilot(9, "globex", now - 7_200_000_000, 3_600_000_000, 50);
    let recent_file = dir.path().join("recent.jsonl");
    std::fs::write(
        &recent_file,
        recent
            .iter()
            .map(|e| slatrack::codec::json::encode(e) + "\n")
            .collect::<String>(),
    )
    .expect("write");
    assert!(replay(&store, &recent_file).status.success());
    let day = slatrack::time::MICROS_PER_DAY;
    let (yesterday, tomorrow) = (
        slatrack::time::format_date(now - day),
        slatrack::time::format_date(now + day),
    );
    let open = card(&["--from", &yesterday, "--to", &tomorrow]);
    assert_eq!(open["partial"], true);
    let overall = open["error_budgets"]
        .as_array()
        .and_then(|b| b.last())
        .cloned();
    assert!(
        overall.is_some_and(|b| b["projected_remaining"].is_number()),
        "a period that has not ended projects its budget: {open}"
    );
    let out = scorecard(&["--from", &yesterday, "--to", &tomorrow]);
    assert!(text(&out.stdout).contains("partial: the period has not ended"));
    for bad in ["2025-13", "2025-W54", "October"] {
        let out = scorecard(&["--period", bad]);
        assert!(!out.status.success(), "{bad}");
        assert!(
            text(&out.stderr).contains("YYYY-Www"),
            "{bad}: {}",
            text(&out.stderr)
        );
    }
    let out = scorecard(&["--from", "2025-10-06"]);
    assert!(!out.status.success(), "--from without --to");
}

#[test]
fn a_kafka_store_is_refused_with_the_store_and_the_output_to_use() {
    for args in [
        &["run", "--store", "kafka://127.0.0.1:9092/slatrack-windows"][..],
        &[
            "scorecard",
            "--tenant",
            "globex",
            "--period",
            "2025-10",
            "--store",
            "kafka://127.0.0.1:9092/slatrack-windows",
        ][..],
    ] {
        let out = run(slatrack().args(args));
        assert!(!out.status.success(), "{args:?}");
        let err = text(&out.stderr);
        assert!(err.contains("postgres://"), "{args:?}: {err}");
        assert!(err.contains("kafka.windows_topic"), "{args:?}: {err}");
    }
}

/// SLA contract sections are checked when any command starts: a bad entry stops it with
/// its line and a remedy; a good one is accepted with a warning that figures do not apply
/// it yet (docs/contracts.md).
#[test]
fn contracts_are_checked_at_start_with_the_line_and_a_remedy() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[[tenants]]\nid = \"globex\"\ntime_zone = \"America/Los_Angeles\"\n\n[[exclusions]]\nname = \"Weekly maintenance\"\ntime_zone = \"Europe/Berlin\"\nstart = \"2025-09-06T02:00:00\"\nrrule = \"FREQ=WEEKLY;BYDAY=SATURDAY\"\nduration = \"2h\"\ncategory = \"maintenance\"\n",
    )
    .unwrap();
    let out = run(slatrack().args(["rules", "--config"]).arg(&bad));
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("exclusions[0].rrule") && err.contains("(line 9)"),
        "{err}"
    );
    assert!(err.contains("FREQ=WEEKLY;BYDAY=SA\""), "the remedy: {err}");
    let good = dir.path().join("good.toml");
    std::fs::write(
        &good,
        "[[tenants]]\nid = \"globex\"\ntime_zone = \"America/Los_Angeles\"\n",
    )
    .unwrap();
    let out = run(slatrack().args(["rules", "--config"]).arg(&good));
    assert!(out.status.success(), "{}", text(&out.stderr));
}
