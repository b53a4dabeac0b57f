//! SLA contracts where users get them: `slatrack scorecard` over a store written by
//! `slatrack replay` or by `slatrack run` on a real broker (tansu), on SQLite and
//! PostgreSQL, with the Globex pilot at its 2025 dates (rows older than
//! `store.minute_retention`: hours) and moved to end a day ago (the last weeks: minutes).
//! Every figure is checked against what this file counts from the records with chrono-tz
//! alone (not `slatrack::contract`):
//! - a month in America/Los_Angeles, its local weeks, a one-off window in New York time
//!   and a weekly Berlin window across the EU daylight-saving change, the per-tenant
//!   Workday target and the service credit;
//! - business hours with a holiday, beside the same windows (the window takes what they
//!   share);
//! - an exclusion added after the data was written, at 10:17–11:43 local: exact where the
//!   rows are minutes, and where they are hours within what the report says it cannot
//!   split.
//!
//! Built with `--features integration` (scripts/test-all.sh).
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

use chrono::{Datelike, Duration as Days, NaiveDate, TimeZone, Timelike, Weekday};
use chrono_tz::Tz;
use serde_json::Value;
use slatrack::event::{DeliveryEvent, Outcome};
use slatrack::time::{Micros, MICROS_PER_HOUR};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const LA: Tz = chrono_tz::America::Los_Angeles;
const NY: Tz = chrono_tz::America::New_York;
const BERLIN: Tz = chrono_tz::Europe::Berlin;
const PLATFORMS: [&str; 5] = [
    "benevity",
    "goodera",
    "workday",
    "sap_successfactors",
    "impact_in",
];

#[derive(Clone, Copy, Debug)]
enum Path_ {
    Replay,
    Run,
}

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

/// A local time in `tz` as an instant (the times used here exist and are unambiguous).
fn at(tz: Tz, d: NaiveDate, h: u32, m: u32) -> Micros {
    tz.with_ymd_and_hms(d.year(), d.month(), d.day(), h, m, 0)
        .single()
        .expect("one instant")
        .timestamp_micros()
}

fn local(tz: Tz, t: Micros) -> chrono::DateTime<Tz> {
    chrono::DateTime::from_timestamp_micros(t)
        .unwrap()
        .with_timezone(&tz)
}

/// The `n`-th (1-based) `weekday` of a month.
fn nth(year: i32, month: u32, weekday: Weekday, n: u32) -> NaiveDate {
    NaiveDate::from_weekday_of_month_opt(year, month, weekday, n as u8).unwrap()
}

/// The dates and windows of one dating of the pilot, chosen from its records.
struct Calendar {
    /// The LA month reported: (year, month), its span.
    month: (i32, u32),
    month_span: (Micros, Micros),
    /// The New York window: the month's second Saturday, 02:00–06:00 New York time.
    ny_day: NaiveDate,
    ny: (Micros, Micros),
    /// The Berlin window's first Saturday (then weekly, 02:00–04:00 Berlin time).
    berlin_first: NaiveDate,
    /// The month's second Monday.
    holiday: NaiveDate,
    /// The day the late exclusion is added for (three days before the last record).
    retro_day: NaiveDate,
}

impl Calendar {
    fn of(evs: &[DeliveryEvent]) -> Self {
        let first = evs.iter().map(|e| e.completed_at).min().unwrap();
        let last = evs.iter().map(|e| e.completed_at).max().unwrap();
        let mid = local(LA, first + 35 * 24 * MICROS_PER_HOUR).date_naive();
        let month = (mid.year(), mid.month());
        let next = if month.1 == 12 {
            (month.0 + 1, 1)
        } else {
            (month.0, month.1 + 1)
        };
        let month_span = (
            at(
                LA,
                NaiveDate::from_ymd_opt(month.0, month.1, 1).unwrap(),
                0,
                0,
            ),
            at(
                LA,
                NaiveDate::from_ymd_opt(next.0, next.1, 1).unwrap(),
                0,
                0,
            ),
        );
        let ny_day = nth(month.0, month.1, Weekday::Sat, 2);
        let mut berlin_first = local(BERLIN, first).date_naive();
        while berlin_first.weekday() != Weekday::Sat {
            berlin_first += Days::days(1);
        }
        Self {
            month,
            month_span,
            ny_day,
            ny: (at(NY, ny_day, 2, 0), at(NY, ny_day, 6, 0)),
            berlin_first,
            holiday: nth(month.0, month.1, Weekday::Mon, 2),
            retro_day: local(LA, last).date_naive() - Days::days(3),
        }
    }

    fn berlin(&self, t: Micros) -> bool {
        let mut d = self.berlin_first;
        while at(BERLIN, d, 2, 0) <= t {
            if t < at(BERLIN, d, 4, 0) {
                return true;
            }
            d += Days::days(7);
        }
        false
    }

    /// Report A's windows: the New York one (Workday only), then the weekly Berlin one.
    fn window(&self, e: &DeliveryEvent) -> Option<&'static str> {
        let t = e.completed_at;
        if e.platform == "workday" && self.ny.0 <= t && t < self.ny.1 {
            Some("Workday firewall change")
        } else if self.berlin(t) {
            Some("Weekly maintenance")
        } else {
            None
        }
    }

    fn business_hours(&self, t: Micros) -> Option<&'static str> {
        let l = local(LA, t);
        if l.date_naive() == self.holiday {
            return Some("holiday");
        }
        let weekday = l.weekday().num_days_from_monday() < 5;
        (!weekday || !(8..18).contains(&l.hour())).then_some("outside business hours")
    }

    fn retro(&self) -> (Micros, Micros) {
        (
            at(LA, self.retro_day, 10, 17),
            at(LA, self.retro_day, 11, 43),
        )
    }

    /// The contract of report A (month, windows, credits), B (with business hours) or
    /// C (the late exclusion only), as TOML.
    fn contract(&self, report: char) -> String {
        let mut t =
            String::from("[[tenants]]\nid = \"globex\"\ntime_zone = \"America/Los_Angeles\"\n");
        if report == 'B' {
            t += &format!(
                "business_hours = \"Mon-Fri 08:00-18:00\"\nholidays = [\"{}\"]\n",
                self.holiday
            );
        }
        if report == 'C' {
            let d = self.retro_day;
            return t + &format!(
                "\n[[exclusions]]\nname = \"Late change\"\ntenant = \"globex\"\ntime_zone = \"America/Los_Angeles\"\nstart = \"{d}T10:17:00\"\nend = \"{d}T11:43:00\"\ncategory = \"other\"\n"
            );
        }
        t += "[[tenants.credits]]\nbelow = 0.95\ncredit = 10\n[[tenants.credits]]\nbelow = 0.90\ncredit = 25\n";
        t += "[[tenants.platforms]]\nid = \"workday\"\non_time_target = 0.94\n";
        t + &format!(
            "\n[[exclusions]]\nname = \"Workday firewall change\"\ntenant = \"globex\"\nplatform = \"workday\"\ntime_zone = \"America/New_York\"\nstart = \"{d}T02:00:00\"\nend = \"{d}T06:00:00\"\ncategory = \"maintenance\"\n\n[[exclusions]]\nname = \"Weekly maintenance\"\ntime_zone = \"Europe/Berlin\"\nstart = \"{b}T02:00:00\"\nrrule = \"FREQ=WEEKLY;BYDAY=SA\"\nduration = \"2h\"\ncategory = \"maintenance\"\n",
            d = self.ny_day,
            b = self.berlin_first
        )
    }
}

/// Per platform: (attempts, events, on-time events).
type Counts = BTreeMap<String, (u64, u64, u64)>;

/// What a report over `[from, to)` must say, counted from the records.
#[derive(Default, Debug)]
struct Expected {
    counted: Counts,
    excluded: BTreeMap<&'static str, u64>,
    /// Events per local week from `from`.
    weeks: Vec<u64>,
}

/// Counts every record completed in `[from, to)`: an attempt each, an event when
/// terminal (docs/engine.md, "Definitions"; on time within 300 ms for Impact-In and
/// 500 ms for the others, the default targets), unless `excluded` names what takes it.
fn expect(
    evs: &[DeliveryEvent],
    from: Micros,
    to: Micros,
    excluded: impl Fn(&DeliveryEvent) -> Option<&'static str>,
) -> Expected {
    let mut week_ends = Vec::new();
    let mut d = local(LA, from).date_naive();
    loop {
        d += Days::days(7);
        let end = at(LA, d, 0, 0).min(to);
        week_ends.push(end);
        if end >= to {
            break;
        }
    }
    let mut x = Expected {
        weeks: vec![0; week_ends.len()],
        ..Expected::default()
    };
    for e in evs.iter().filter(|e| e.tenant == "globex") {
        if e.completed_at < from || e.completed_at >= to {
            continue;
        }
        let terminal = e.outcome != Outcome::Retrying;
        if let Some(name) = excluded(e) {
            *x.excluded.entry(name).or_default() += u64::from(terminal);
            continue;
        }
        let c = x.counted.entry(e.platform.clone()).or_default();
        c.0 += 1;
        if terminal {
            let target = if e.platform == "impact_in" {
                300_000
            } else {
                500_000
            };
            c.1 += 1;
            c.2 += u64::from(
                e.outcome == Outcome::Delivered && e.completed_at - e.enqueued_at <= target,
            );
            let w = week_ends.partition_point(|&end| end <= e.completed_at);
            x.weeks[w] += 1;
        }
    }
    x
}

fn slatrack(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_slatrack"))
        .args(args)
        .output()
        .expect("slatrack runs")
}

fn scorecard(config: &Path, store: &str, span: &[&str], format: &str) -> String {
    let mut args = vec!["scorecard", "--config"];
    let config = config.to_str().unwrap();
    args.push(config);
    args.extend(["--tenant", "globex", "--store", store, "--format", format]);
    args.extend(span);
    let out = slatrack(&args);
    assert!(
        out.status.success(),
        "scorecard failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn platform<'a>(j: &'a Value, id: &str) -> &'a Value {
    j["platforms"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["platform"] == id)
        .unwrap_or_else(|| panic!("platform {id} in the report"))
}

fn excluded_by(j: &Value, name: &str) -> u64 {
    j["contract"]["exclusions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["name"] == name)
        .map_or(0, |x| x["events"].as_u64().unwrap())
}

/// The report's counted figures equal `x`'s, platform by platform.
fn assert_counted(j: &Value, x: &Expected, what: &str) {
    for id in PLATFORMS {
        let (attempts, events, on_time) = x.counted.get(id).copied().unwrap_or_default();
        let p = platform(j, id);
        assert_eq!(p["attempts"], attempts, "{what}: {id} attempts");
        assert_eq!(p["events"], events, "{what}: {id} events");
        if events > 0 {
            let ratio = p["on_time_ratio"].as_f64().unwrap();
            assert!(
                (ratio * events as f64 - on_time as f64).abs() < 1e-6,
                "{what}: {id} on time {ratio} of {events}, expected {on_time}"
            );
        }
    }
}

fn check_reports(dir: &Path, store: &str, evs: &[DeliveryEvent], what: &str) {
    let cal = Calendar::of(evs);
    let write = |name: &str, report: char| {
        let p = dir.join(name);
        std::fs::write(&p, cal.contract(report)).unwrap();
        p
    };
    let period = format!("{}-{:02}", cal.month.0, cal.month.1);
    let (from, to) = cal.month_span;

    // A: the month in Los Angeles, the New York and Berlin windows, credits.
    let a = write("a.toml", 'A');
    let j: Value =
        serde_json::from_str(&scorecard(&a, store, &["--period", &period], "json")).unwrap();
    let x = expect(evs, from, to, |e| cal.window(e));
    assert_eq!(j["time_zone"], "America/Los_Angeles");
    assert_eq!(j["from"], format!("{period}-01"));
    assert_counted(&j, &x, &format!("{what}, report A"));
    for name in ["Workday firewall change", "Weekly maintenance"] {
        let want = x.excluded.get(name).copied().unwrap_or_default();
        assert!(want > 0, "{what}: the pilot has events in {name:?}");
        assert_eq!(excluded_by(&j, name), want, "{what}: excluded by {name:?}");
    }
    let weeks: Vec<u64> = j["weekly"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["events"].as_u64().unwrap())
        .collect();
    assert_eq!(weeks, x.weeks, "{what}: local weeks");
    let (events, on_time) = x
        .counted
        .values()
        .fold((0, 0), |(e, o), c| (e + c.1, o + c.2));
    let attainment = on_time as f64 / events as f64;
    let credit = if attainment < 0.90 {
        25.0
    } else if attainment < 0.95 {
        10.0
    } else {
        0.0
    };
    assert_eq!(j["contract"]["credit"]["percent"], credit, "{what}: credit");
    assert_eq!(platform(&j, "workday")["target_on_time_ratio"], 0.94);
    assert_eq!(j["contract"]["precision"]["crossing_events"], 0, "{what}");
    let md = scorecard(&a, store, &["--period", &period], "markdown");
    assert!(md.contains("America/Los_Angeles days"), "{md}");
    assert!(
        md.contains("| Workday firewall change | maintenance | 1 |"),
        "{md}"
    );

    // B: business hours and a holiday, beside the windows.
    let b = write("b.toml", 'B');
    let j: Value =
        serde_json::from_str(&scorecard(&b, store, &["--period", &period], "json")).unwrap();
    let x = expect(evs, from, to, |e| {
        cal.window(e).or_else(|| cal.business_hours(e.completed_at))
    });
    assert_counted(&j, &x, &format!("{what}, report B"));
    for name in [
        "Workday firewall change",
        "Weekly maintenance",
        "holiday",
        "outside business hours",
    ] {
        let want = x.excluded.get(name).copied().unwrap_or_default();
        assert!(want > 0, "{what}: the pilot has events in {name:?}");
        assert_eq!(excluded_by(&j, name), want, "{what}: excluded by {name:?}");
    }
    assert_eq!(j["contract"]["precision"]["crossing_events"], 0, "{what}");

    // C: an exclusion the data was written without, at minutes that are no hour's edge.
    let c = write("c.toml", 'C');
    let (day_from, day_to) = (
        (cal.retro_day - Days::days(1)).to_string(),
        (cal.retro_day + Days::days(2)).to_string(),
    );
    let span = ["--from", day_from.as_str(), "--to", day_to.as_str()];
    let j: Value = serde_json::from_str(&scorecard(&c, store, &span, "json")).unwrap();
    let (r0, r1) = cal.retro();
    let (from, to) = (
        at(LA, cal.retro_day - Days::days(1), 0, 0),
        at(LA, cal.retro_day + Days::days(2), 0, 0),
    );
    let exact = expect(evs, from, to, |e| {
        (r0 <= e.completed_at && e.completed_at < r1).then_some("Late change")
    });
    let got = excluded_by(&j, "Late change");
    let want = exact
        .excluded
        .get("Late change")
        .copied()
        .unwrap_or_default();
    assert!(want > 0, "{what}: the pilot has events at 10:17–11:43");
    let precision = &j["contract"]["precision"];
    let crossing = precision["crossing_events"].as_u64().unwrap();
    let recent = r0 >= slatrack::time::now_micros() - 35 * 24 * MICROS_PER_HOUR;
    if recent {
        // Minutes: exact, and the report says every figure is.
        assert_eq!(got, want, "{what}: minute rows");
        assert_eq!(crossing, 0, "{what}");
        assert_counted(&j, &exact, &format!("{what}, report C"));
    } else {
        // Hours (or parts of one): the report is off by at most what it says crosses an
        // edge, and that is within the two hours the window's edges fall in.
        let edge_hours = expect(evs, from, to, |e| {
            let h = e.completed_at.div_euclid(MICROS_PER_HOUR) * MICROS_PER_HOUR;
            (h == r0.div_euclid(MICROS_PER_HOUR) * MICROS_PER_HOUR
                || h == r1.div_euclid(MICROS_PER_HOUR) * MICROS_PER_HOUR)
                .then_some("edge")
        });
        assert!(
            crossing <= edge_hours.excluded["edge"],
            "{what}: {crossing} crossing events, {} in the edge hours",
            edge_hours.excluded["edge"]
        );
        assert!(
            got.abs_diff(want) <= crossing,
            "{what}: {got} excluded, {want} exactly, {crossing} said to cross"
        );
        assert!(precision["widest_crossing_row_seconds"].as_u64().unwrap() <= 3600);
        let md = scorecard(&c, store, &span, "markdown");
        assert!(md.contains("_Precision: "), "{md}");
        if crossing > 0 {
            let line = format!("{crossing} events in ");
            assert!(md.contains(&line), "{md}");
            assert!(md.contains("are counted where their row starts"), "{md}");
        }
    }
    // Nothing lost: counted and excluded events add up to every event of the span.
    let all = expect(evs, from, to, |_| None);
    let counted: u64 = PLATFORMS
        .iter()
        .map(|id| platform(&j, id)["events"].as_u64().unwrap())
        .sum();
    let total: u64 = all.counted.values().map(|c| c.1).sum();
    assert_eq!(counted + got, total, "{what}: counted + excluded");
}

/// The live counters of a service counting with report A's windows: what they exclude
/// goes to `slatrack_excluded_events_total` by category, the rest to the SLO counters,
/// all time long (the counters are monotonic), as counted from the records.
fn check_live(port: u16, evs: &[DeliveryEvent], what: &str) {
    let cal = Calendar::of(evs);
    let all = expect(evs, Micros::MIN / 2, Micros::MAX / 2, |e| {
        cal.window(e).map(|_| "maintenance")
    });
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut scrape = String::new();
    let value = |scrape: &str, series: &str| -> u64 {
        scrape
            .lines()
            .find_map(|l| {
                l.strip_prefix(series)?
                    .strip_prefix(' ')?
                    .parse::<f64>()
                    .ok()
            })
            .unwrap_or(0.0) as u64
    };
    let excluded = |scrape: &str| -> u64 {
        PLATFORMS
            .iter()
            .map(|p| {
                value(
                    scrape,
                    &format!("slatrack_excluded_events_total{{tenant=\"globex\",platform=\"{p}\",category=\"maintenance\"}}"),
                )
            })
            .sum()
    };
    let want = all.excluded["maintenance"];
    // The counters move at the commit after the store's: awaited, not assumed.
    wait::wait_until("the excluded counter", Duration::from_secs(30), || {
        scrape = http::http_get(addr, "/metrics");
        excluded(&scrape) == want
    });
    for id in PLATFORMS {
        let (attempts, events, on_time) = all.counted.get(id).copied().unwrap_or_default();
        let labels = format!("{{tenant=\"globex\",platform=\"{id}\"}}");
        assert_eq!(
            value(&scrape, &format!("slatrack_attempts_total{labels}")),
            attempts,
            "{what}: {id}"
        );
        assert_eq!(
            value(&scrape, &format!("slatrack_on_time_events_total{labels}")),
            on_time,
            "{what}: {id}"
        );
        let counted: u64 = ["delivered", "failed", "dead_lettered"]
            .iter()
            .map(|o| {
                value(
                    &scrape,
                    &format!("slatrack_events_total{{tenant=\"globex\",platform=\"{id}\",outcome=\"{o}\"}}"),
                )
            })
            .sum();
        assert_eq!(counted, events, "{what}: {id} events");
    }
}

/// Writes the pilot into a store by `path` with a contract for globex (so its rows stay
/// fine) and checks the three reports.
fn contracts_on(path: Path_, store: Store, dated: Dated) {
    let what = format!("{path:?}, {store:?}, {dated:?}");
    let dir = tempfile::tempdir().unwrap();
    let mut evs = slatrack::synthetic::globex_fixture();
    if let Dated::EndingYesterday = dated {
        pilot::end_yesterday(&mut evs);
    }
    let pg = matches!(store, Store::Postgres).then(postgres::Postgres::start);
    let location = match &pg {
        Some(server) => {
            server.create_db("contracts");
            server.url("contracts")
        }
        None => dir.path().join("contracts.db").display().to_string(),
    };
    let tenant = "[[tenants]]\nid = \"globex\"\ntime_zone = \"America/Los_Angeles\"\n";
    let total: u64 = evs
        .iter()
        .filter(|e| e.outcome != Outcome::Retrying)
        .count() as u64;
    match path {
        Path_::Replay => {
            let input = dir.path().join("pilot.jsonl");
            let mut f = std::io::BufWriter::new(std::fs::File::create(&input).unwrap());
            for e in &evs {
                writeln!(f, "{}", slatrack::codec::json::encode(e)).unwrap();
            }
            drop(f);
            let config = dir.path().join("write.toml");
            std::fs::write(&config, tenant).unwrap();
            let out = slatrack(&[
                "replay",
                "--config",
                config.to_str().unwrap(),
                "--store",
                &location,
                "--input",
                input.to_str().unwrap(),
            ]);
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            check_reports(dir.path(), &location, &evs, &what);
        }
        Path_::Run => {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let broker = tansu::Tansu::start(&dir.path().join("tansu.log"));
            broker.create_topic("deliveries", 4);
            let config = dir.path().join("write.toml");
            std::fs::write(
                &config,
                format!(
                    "[store]\npath = \"{location}\"\n[engine]\nallowed_lateness = \"0s\"\n[service]\ncheckpoint_interval = \"100ms\"\nidle_timeout = \"2s\"\n[kafka]\nbrokers = \"{}\"\ngroup_id = \"contracts\"\n[[kafka.topics]]\nname = \"deliveries\"\nformat = \"protobuf\"\n[kafka.properties]\n\"session.timeout.ms\" = \"2000\"\n\"heartbeat.interval.ms\" = \"500\"\n\n{}",
                    broker.brokers(),
                    // The live path applies report A's windows as it counts.
                    Calendar::of(&evs).contract('A'),
                ),
            )
            .unwrap();
            let log = dir.path().join("slatrack.log");
            let _run = service::run_with_env(
                &config,
                &log,
                &[("SLATRACK_METRICS_LISTEN", &format!("127.0.0.1:{port}"))],
            );
            pilot::produce_round_robin(&broker.brokers(), "deliveries", 4, &evs, 0);
            let loc = slatrack::store::Location::parse(&location).unwrap();
            let mut seen = 0;
            wait::wait_until("every event in the store", Duration::from_secs(180), || {
                let Ok(s) = slatrack::store::open(&loc, slatrack::store::Access::ReadOnly) else {
                    return false;
                };
                seen = s
                    .buckets("globex", 0, i64::MAX / 2)
                    .map(|b| b.iter().map(|b| b.stats.counters.events).sum())
                    .unwrap_or(0);
                seen == total
            });
            assert_eq!(seen, total);
            check_live(port, &evs, &what);
            check_reports(dir.path(), &location, &evs, &what);
        }
    }
}

#[test]
fn contracts_apply_on_every_store_and_path_at_both_datings() {
    let mut runs = Vec::new();
    for path in [Path_::Replay, Path_::Run] {
        for store in [Store::Sqlite, Store::Postgres] {
            for dated in [Dated::Pilot2025, Dated::EndingYesterday] {
                runs.push(std::thread::spawn(move || contracts_on(path, store, dated)));
            }
        }
    }
    let failed: Vec<String> = runs
        .into_iter()
        .filter_map(|r| r.join().err())
        .map(|e| {
            e.downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default()
        })
        .collect();
    assert!(
        failed.is_empty(),
        "{} runs failed:\n{}",
        failed.len(),
        failed.join("\n")
    );
}
