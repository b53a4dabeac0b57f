//! The scorecard job as users run it: `slatrack scorecard --all-tenants --out DIR` over a
//! store of two tenants (one report each and an index; the same files when run again;
//! exit 3 for a period without data), the summary posted to a local webhook receiver
//! (and a refusing one: exit 4, the reports kept, the URL's secret not printed), and
//! with `--features integration`, a branded page as Chromium renders it and `--format
//! pdf` with and without Chromium.

use serde_json::Value;
use slatrack::time::MICROS_PER_DAY;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};

/// Two tenants' pilots (globex, initech) as JSON lines, replayed into `dir/s.db`.
fn store_of_two(dir: &Path) -> PathBuf {
    let start = slatrack::time::parse_date("2025-09-08").unwrap();
    let mut evs = slatrack::synthetic::globex_fixture();
    evs.extend(slatrack::synthetic::pilot(
        9,
        "initech",
        start,
        70 * MICROS_PER_DAY,
        6_000,
    ));
    // One log, in completion order (as the delivery service publishes it).
    evs.sort_by_key(|e| (e.completed_at, e.attempt));
    let input = dir.join("two.jsonl");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&input).unwrap());
    for e in &evs {
        writeln!(f, "{}", slatrack::codec::json::encode(e)).unwrap();
    }
    drop(f);
    let store = dir.join("s.db");
    let out = slatrack(
        &[
            "replay",
            "--input",
            input.to_str().unwrap(),
            "--store",
            store.to_str().unwrap(),
        ],
        &[],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    store
}

fn slatrack(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_slatrack"))
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("slatrack runs")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `scorecard --all-tenants --period P --format F --out OUT` with `config`.
fn all_tenants(
    store: &Path,
    config: &Path,
    period: &str,
    format: &str,
    out: &Path,
    env: &[(&str, &str)],
) -> Output {
    slatrack(
        &[
            "scorecard",
            "--all-tenants",
            "--config",
            config.to_str().unwrap(),
            "--store",
            store.to_str().unwrap(),
            "--period",
            period,
            "--format",
            format,
            "--out",
            out.to_str().unwrap(),
        ],
        env,
    )
}

#[test]
fn every_tenant_gets_a_report_and_the_index_lists_them() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_of_two(dir.path());
    let config = dir.path().join("c.toml");
    std::fs::write(
        &config,
        "[[tenants]]\nid = \"initech\"\ntime_zone = \"Europe/Berlin\"\n",
    )
    .unwrap();
    let out = dir.path().join("out");
    let run = all_tenants(&store, &config, "2025-10", "json", &out, &[]);
    assert!(run.status.success(), "{}", text(&run.stderr));
    let mut files: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(files, ["globex.json", "index.html", "initech.json"]);
    let report = |t: &str| -> Value {
        serde_json::from_str(&std::fs::read_to_string(out.join(format!("{t}.json"))).unwrap())
            .unwrap()
    };
    let (globex, initech) = (report("globex"), report("initech"));
    assert_eq!(
        (globex["tenant"].as_str(), globex["time_zone"].as_str()),
        (Some("globex"), Some("UTC"))
    );
    assert_eq!(initech["time_zone"], "Europe/Berlin");
    assert_eq!(
        initech["from_instant"], "2025-09-30T22:00:00.000Z",
        "Berlin's October"
    );
    // The index: each tenant's status, on-time % and criteria, linked.
    let index = std::fs::read_to_string(out.join("index.html")).unwrap();
    for (t, j) in [("globex", &globex), ("initech", &initech)] {
        let on_time = format!(
            "{:.1}%",
            j["overall"]["on_time_ratio"]
                .as_f64()
                .unwrap_or_else(|| panic!("{t}: {}", j["overall"]))
                * 100.0
        );
        let row = index
            .lines()
            .find(|l| l.starts_with(&format!("<tr><td>{t}</td>")))
            .unwrap_or_else(|| panic!("{t} in {index}"));
        assert!(row.contains(&on_time), "{row}");
        assert!(
            row.contains(j["overall"]["status"].as_str().unwrap()),
            "{row}"
        );
        let met = j["criteria"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["met"] == true)
            .count();
        assert!(
            row.contains(&format!(
                "{met} of {}",
                j["criteria"].as_array().unwrap().len()
            )),
            "{row}"
        );
        assert!(row.contains(&format!("href=\"{t}.json\"")), "{row}");
    }
    // Run again: the same bytes.
    let before: Vec<Vec<u8>> = ["globex.json", "initech.json", "index.html"]
        .iter()
        .map(|f| std::fs::read(out.join(f)).unwrap())
        .collect();
    let again = all_tenants(&store, &config, "2025-10", "json", &out, &[]);
    assert!(again.status.success());
    for (f, b) in ["globex.json", "initech.json", "index.html"]
        .iter()
        .zip(before)
    {
        assert_eq!(
            std::fs::read(out.join(f)).unwrap(),
            b,
            "{f} rewritten the same"
        );
    }
    // A period with no data anywhere: exit 3, nothing but the index.
    let empty = dir.path().join("empty");
    let none = all_tenants(&store, &config, "2024-01", "json", &empty, &[]);
    assert_eq!(none.status.code(), Some(3), "{}", text(&none.stderr));
    assert!(
        text(&none.stderr).contains("no tenant has data"),
        "{}",
        text(&none.stderr)
    );
}

/// The requests a receiver got: request line and JSON body.
type Received = Arc<Mutex<Vec<(String, Value)>>>;

/// A webhook receiver on 127.0.0.1 answering `status` to every POST; the bodies it got.
fn receiver(status: u16) -> (String, Received) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!(
        "http://{}/hooks/T0/secret-token",
        listener.local_addr().unwrap()
    );
    let got: Received = Arc::default();
    let seen = got.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request_line = String::new();
            reader.read_line(&mut request_line).unwrap();
            let mut length = 0;
            loop {
                let mut h = String::new();
                reader.read_line(&mut h).unwrap();
                if h.trim().is_empty() {
                    break;
                }
                if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap();
                }
            }
            let mut body = vec![0; length];
            reader.read_exact(&mut body).unwrap();
            let json = serde_json::from_slice(&body).unwrap_or(Value::Null);
            seen.lock()
                .unwrap()
                .push((request_line.trim().to_string(), json));
            let reason = if status == 200 {
                "OK"
            } else {
                "Internal Server Error"
            };
            let _ = write!(
                stream,
                "HTTP/1.1 {status} {reason}\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok"
            );
        }
    });
    (url, got)
}

#[test]
fn a_summary_per_tenant_is_posted_and_a_refusal_exits_4_keeping_the_reports() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_of_two(dir.path());
    let config = dir.path().join("c.toml");
    std::fs::write(
        &config,
        "[report.notify]\nwebhook = \"env:SLATRACK_TEST_HOOK\"\n",
    )
    .unwrap();
    let (url, got) = receiver(200);
    let out = dir.path().join("out");
    let run = all_tenants(
        &store,
        &config,
        "2025-10",
        "html",
        &out,
        &[("SLATRACK_TEST_HOOK", &url)],
    );
    assert!(run.status.success(), "{}", text(&run.stderr));
    let got = got.lock().unwrap().clone();
    assert_eq!(got.len(), 2, "one POST per tenant");
    for ((line, body), tenant) in got.iter().zip(["globex", "initech"]) {
        assert_eq!(line, "POST /hooks/T0/secret-token HTTP/1.1");
        let s = &body["slatrack"];
        assert_eq!(s["tenant"], tenant);
        let report: Value = serde_json::from_slice(
            &slatrack(
                &[
                    "scorecard",
                    "--store",
                    store.to_str().unwrap(),
                    "--tenant",
                    tenant,
                    "--period",
                    "2025-10",
                    "--format",
                    "json",
                ],
                &[],
            )
            .stdout,
        )
        .unwrap();
        assert_eq!(s["status"], report["overall"]["status"]);
        assert_eq!(s["on_time_ratio"], report["overall"]["on_time_ratio"]);
        assert_eq!(
            s["findings"].as_array().unwrap().len(),
            report["findings"].as_array().unwrap().len()
        );
        assert!(s["report"]
            .as_str()
            .unwrap()
            .ends_with(&format!("{tenant}.html")));
        // What Slack and Teams show.
        let t = body["text"].as_str().unwrap();
        assert!(
            t.starts_with(&format!(
                "Delivery SLA report for {tenant} (2025-10-01 to 2025-10-31"
            )),
            "{t}"
        );
    }
    // A receiver that refuses: exit 4, why, the reports kept, the token not printed.
    let (url, _) = receiver(500);
    let out = dir.path().join("refused");
    let run = all_tenants(
        &store,
        &config,
        "2025-10",
        "html",
        &out,
        &[("SLATRACK_TEST_HOOK", &url)],
    );
    assert_eq!(run.status.code(), Some(4), "{}", text(&run.stderr));
    let err = text(&run.stderr);
    assert!(
        err.contains("HTTP 500") && err.contains("did not take"),
        "{err}"
    );
    assert!(
        !err.contains("secret-token"),
        "the URL's secret stays out: {err}"
    );
    assert!(out.join("globex.html").exists() && out.join("initech.html").exists());
}

#[cfg(feature = "integration")]
mod chromium {
    use super::*;

    fn chromium() -> PathBuf {
        let bin = std::env::var_os("SLATRACK_CHROMIUM")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
        assert!(bin.exists(), "{} not found: run the suite via scripts/test-all.sh (installs Debian's chromium) or set SLATRACK_CHROMIUM", bin.display());
        bin
    }

    /// The branded page as Chromium lays it out: a probe appended to a copy of the page
    /// writes what the browser computed (the title's colour, the logo's decoded size)
    /// into the DOM, which `--dump-dom` prints.
    #[test]
    fn a_branded_page_shows_its_title_logo_colour_and_footer() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_of_two(dir.path());
        let logo = dir.path().join("logo.svg");
        std::fs::write(&logo, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"120\" height=\"40\"><rect width=\"120\" height=\"40\" fill=\"#5b2a86\"/></svg>").unwrap();
        let config = dir.path().join("c.toml");
        std::fs::write(
            &config,
            format!("[report]\ntitle = \"Acme Delivery Review\"\nlogo = \"{}\"\naccent = \"#5b2a86\"\nfooter = \"Prepared by Acme Customer Success\"\n", logo.display()),
        )
        .unwrap();
        let out = dir.path().join("out");
        let run = all_tenants(&store, &config, "2025-10", "html", &out, &[]);
        assert!(run.status.success(), "{}", text(&run.stderr));
        let page = std::fs::read_to_string(out.join("globex.html")).unwrap();
        let probe = "<script>const b = document.body; b.dataset.h1 = getComputedStyle(document.querySelector('h1')).color; const i = document.querySelector('img.logo'); b.dataset.logo = i.naturalWidth + 'x' + i.naturalHeight; b.dataset.footer = document.querySelector('footer').innerText;</script>";
        let probed = dir.path().join("probed.html");
        std::fs::write(&probed, page.replace("</body>", &format!("{probe}</body>"))).unwrap();
        let shown = Command::new(chromium())
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--dump-dom",
            ])
            .arg(format!(
                "--user-data-dir={}",
                dir.path().join("profile").display()
            ))
            .arg(format!("file://{}", probed.display()))
            .output()
            .unwrap();
        let dom = text(&shown.stdout);
        assert!(dom.contains("<h1>Acme Delivery Review</h1>"), "{dom}");
        assert!(
            dom.contains("data-h1=\"rgb(91, 42, 134)\""),
            "the accent colour: {}",
            &dom[..dom.len().min(2000)]
        );
        assert!(dom.contains("data-logo=\"120x40\""), "the logo decoded");
        assert!(dom.contains("data-footer=\"Prepared by Acme Customer Success\""));
        assert!(
            dom.contains("<title>Acme Delivery Review — globex"),
            "the title"
        );
        // The default page is unchanged: no logo, slatrack's title.
        let plain = slatrack(
            &[
                "scorecard",
                "--store",
                store.to_str().unwrap(),
                "--tenant",
                "globex",
                "--period",
                "2025-10",
                "--format",
                "html",
            ],
            &[],
        );
        let plain = text(&plain.stdout);
        assert!(
            plain.contains("<h1>Delivery SLA Performance</h1>")
                && !plain.contains("img class=\"logo\"")
        );
    }

    #[test]
    fn pdf_through_chromium_and_a_remedy_without_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_of_two(dir.path());
        let args = [
            "scorecard",
            "--store",
            store.to_str().unwrap(),
            "--tenant",
            "globex",
            "--period",
            "2025-10",
            "--format",
            "pdf",
        ];
        let chromium = chromium();
        let pdf = slatrack(&args, &[("SLATRACK_CHROMIUM", chromium.to_str().unwrap())]);
        assert!(pdf.status.success(), "{}", text(&pdf.stderr));
        assert!(pdf.stdout.starts_with(b"%PDF"), "a PDF on stdout");
        let body = String::from_utf8_lossy(&pdf.stdout);
        let pages: u32 = body
            .split("/Count ")
            .nth(1)
            .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|n| n.parse().ok())
            .expect("a page count");
        assert!(pages >= 2, "{pages} pages");
        // No Chromium on PATH and none named: the error says how to get one.
        let none = Command::new(env!("CARGO_BIN_EXE_slatrack"))
            .args(args)
            .env_remove("SLATRACK_CHROMIUM")
            .env("PATH", "")
            .output()
            .unwrap();
        assert!(!none.status.success());
        let err = text(&none.stderr);
        assert!(
            err.contains("apt-get install chromium") && err.contains("SLATRACK_CHROMIUM"),
            "{err}"
        );
    }
}
