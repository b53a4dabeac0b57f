//! The HTML scorecard in a real browser: Debian's Chromium, headless, renders the page of
//! the 10-week Globex fixture. Its DOM has the four charts with one point per week (per
//! platform with events that week), the page logs nothing to the console, a screenshot
//! shows it, and it prints to a PDF of several pages. Built with `--features integration`
//! (scripts/test-all.sh installs `chromium`; `SLATRACK_CHROMIUM` names another binary).
#![cfg(feature = "integration")]

#[path = "support/scorecard.rs"]
mod scorecard;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn chromium() -> PathBuf {
    let bin = std::env::var_os("SLATRACK_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    assert!(
        bin.exists(),
        "{} not found: run the suite via scripts/test-all.sh (installs Debian's chromium) or set SLATRACK_CHROMIUM",
        bin.display()
    );
    bin
}

/// Headless Chromium on `page` with `args`, as the machine's closed network needs it (no
/// background networking, no component updates), console messages logged to stderr.
fn browse(profile: &Path, page: &Path, args: &[&str]) -> Output {
    let out = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            "--enable-logging=stderr",
            "--v=0",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("chromium runs");
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Console messages the page logged (Chromium writes them as `CONSOLE` lines).
fn console(out: &Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| l.contains(":CONSOLE"))
        .map(str::to_string)
        .collect()
}

/// The markup of chart `id` in the DOM: from its `<svg` to its `</svg>`.
fn chart<'a>(dom: &'a str, id: &str) -> &'a str {
    let at = dom
        .find(&format!("data-chart=\"{id}\""))
        .unwrap_or_else(|| panic!("chart {id} is in the DOM"));
    let start = dom[..at].rfind("<svg").expect("its svg");
    let end = at + dom[at..].find("</svg>").expect("its end");
    &dom[start..end]
}

fn points(svg: &str, series: Option<&str>) -> usize {
    let class = svg.matches("class=\"point\"").count();
    match series {
        None => class,
        Some(s) => svg.matches(&format!("data-series=\"{s}\"")).count(),
    }
}

#[test]
fn the_page_renders_in_chromium_with_a_point_per_week_and_no_console_errors() {
    let dir = tempfile::tempdir().expect("dir");
    let input = scorecard::globex_lines(dir.path(), "globex.jsonl", None);
    let store = dir.path().join("s.db");
    scorecard::replay(&input, &store.to_string_lossy());
    let page = dir.path().join("report.html");
    std::fs::write(&page, scorecard::scorecard(&store, "html")).expect("page");
    let json: serde_json::Value =
        serde_json::from_str(&scorecard::scorecard(&store, "json")).expect("json");
    let weeks = json["weekly"].as_array().expect("weeks").len();
    assert_eq!(weeks, 10);
    let profile = dir.path().join("profile");

    let out = browse(&profile, &page, &["--dump-dom"]);
    assert_eq!(console(&out), Vec::<String>::new(), "no console messages");
    let dom = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        dom.matches("<svg class=\"chart\"").count(),
        4,
        "four charts"
    );

    // On-time: each platform, a point for each week it had events.
    let on_time = chart(&dom, "on-time");
    let mut plotted = 0;
    for p in json["platforms"].as_array().expect("platforms") {
        let with_events = p["weekly"]
            .as_array()
            .expect("weekly")
            .iter()
            .filter(|w| w["events"].as_u64() > Some(0))
            .count();
        let name = p["name"].as_str().expect("name").replace('&', "&amp;");
        assert_eq!(points(on_time, Some(&name)), with_events, "{name}");
        plotted += with_events;
    }
    assert_eq!(points(on_time, None), plotted);
    assert!(plotted >= 4 * weeks, "four active platforms, every week");
    assert!(on_time.contains("class=\"target\""), "target lines");

    let latency = chart(&dom, "latency");
    for q in ["P50", "P95", "P99"] {
        assert_eq!(points(latency, Some(q)), weeks, "{q}");
    }
    assert_eq!(latency.matches("class=\"target\"").count(), 3);
    assert_eq!(points(chart(&dom, "outcomes"), None), weeks);
    let budgets = json["error_budgets"].as_array().expect("budgets").len();
    assert_eq!(points(chart(&dom, "budget"), None), budgets);

    // A screenshot (what the README shows), and a PDF of the print layout.
    let shot = dir.path().join("shot.png");
    browse(
        &profile,
        &page,
        &[
            "--window-size=1100,760",
            &format!("--screenshot={}", shot.display()),
        ],
    );
    let png = std::fs::read(&shot).expect("screenshot");
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    assert!(png.len() > 40_000, "charts drawn: {} bytes", png.len());
    if let Some(keep) = std::env::var_os("SLATRACK_SCREENSHOT") {
        std::fs::copy(&shot, keep).expect("keep the screenshot");
    }
    let pdf = dir.path().join("report.pdf");
    browse(
        &profile,
        &page,
        &[
            "--no-pdf-header-footer",
            &format!("--print-to-pdf={}", pdf.display()),
        ],
    );
    let bytes = std::fs::read(&pdf).expect("pdf");
    assert!(bytes.starts_with(b"%PDF"));
    // The page tree's `/Count`: the number of pages.
    let text = String::from_utf8_lossy(&bytes);
    let pages: u32 = text
        .split("/Count ")
        .nth(1)
        .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .expect("a page count");
    assert!(pages >= 2, "prints to several pages: {pages}");
}

/// The console check can fail: a page with a script error is caught.
#[test]
fn a_page_that_logs_an_error_is_caught() {
    let dir = tempfile::tempdir().expect("dir");
    let page = dir.path().join("bad.html");
    std::fs::write(
        &page,
        "<!DOCTYPE html><html><body><p>x</p><script>throw new Error('boom')</script></body></html>",
    )
    .expect("page");
    let out = browse(&dir.path().join("profile"), &page, &["--dump-dom"]);
    let logged = console(&out);
    assert!(
        logged.iter().any(|l| l.contains("boom")),
        "the error is seen: {logged:?}"
    );
}
