//! A real Prometheus (Debian's package) for the tests: started on a free port scraping
//! given targets with given rules, queried through its HTTP API; and the dashboard's
//! queries as Grafana would send them.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Kills a child process when the test ends, however it ends.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn spawn(cmd: &mut Command, log: &Path) -> Proc {
    let out = std::fs::File::create(log).unwrap();
    Proc(
        cmd.stdout(Stdio::from(out.try_clone().unwrap()))
            .stderr(Stdio::from(out))
            .spawn()
            .unwrap(),
    )
}

/// A Prometheus server and its port.
pub struct Prometheus {
    pub port: u16,
    _proc: Proc,
}

impl Prometheus {
    /// Scrapes `targets` (host:port) every second as job `slatrack`, evaluating `rules`
    /// every second; `native` enables native histograms (the scrape then asks for the
    /// protobuf exposition). Its files live in `dir`.
    pub fn start(dir: &Path, rules: &Path, targets: &[String], native: bool) -> Prometheus {
        std::fs::create_dir_all(dir).unwrap();
        let port = free_port();
        let list: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
        std::fs::write(
            dir.join("prometheus.yml"),
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files: [{}]\nscrape_configs:\n  - job_name: slatrack\n    static_configs:\n      - targets: [{}]\n",
                rules.display(),
                list.join(", ")
            ),
        )
        .unwrap();
        let mut cmd = Command::new("prometheus");
        cmd.arg(format!(
            "--config.file={}",
            dir.join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("tsdb").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"));
        if native {
            cmd.arg("--enable-feature=native-histograms");
        }
        let proc = spawn(&mut cmd, &dir.join("prometheus.log"));
        Prometheus { port, _proc: proc }
    }

    pub fn query(&self, promql: &str) -> Result<Vec<serde_json::Value>, String> {
        query(self.port, promql)
    }
}

/// HTTP/1.0 GET (no chunked encoding, the server closes): (status line, body).
pub fn get(port: u16, path: &str) -> Option<(String, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).ok()?;
    let (head, body) = raw.split_once("\r\n\r\n")?;
    Some((head.lines().next()?.to_string(), body.to_string()))
}

fn encode(q: &str) -> String {
    q.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Instant query through Prometheus' HTTP API: Err(error text) or the result vector.
pub fn query(port: u16, promql: &str) -> Result<Vec<serde_json::Value>, String> {
    let (_, body) = get(port, &format!("/api/v1/query?query={}", encode(promql)))
        .ok_or_else(|| "no answer".to_string())?;
    let v: serde_json::Value = serde_json::from_str(&body).map_err(|e| format!("{e}: {body}"))?;
    if v["status"] != "success" {
        return Err(body);
    }
    Ok(v["data"]["result"].as_array().cloned().unwrap_or_default())
}

/// A result's value as a number.
pub fn value(sample: &serde_json::Value) -> f64 {
    sample["value"][1]
        .as_str()
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN)
}

pub fn alerts(port: u16) -> Vec<serde_json::Value> {
    get(port, "/api/v1/alerts")
        .and_then(|(_, b)| serde_json::from_str::<serde_json::Value>(&b).ok())
        .and_then(|v| v["data"]["alerts"].as_array().cloned())
        .unwrap_or_default()
}

/// Metric and recording-rule names an expression reads.
pub fn names(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = expr;
    while let Some(i) = rest.find("slatrack") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
            .unwrap_or(tail.len());
        let name = &tail[..end];
        if name.starts_with("slatrack_") || name.starts_with("slatrack:") {
            out.push(name.to_string()); // not the job label value "slatrack"
        }
        rest = &tail[end..];
    }
    out.sort();
    out.dedup();
    out
}

/// Every `expr` of the dashboard (panels and variable queries), variables substituted
/// as Grafana does with "All" selected.
pub fn dashboard_exprs() -> Vec<String> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/grafana/dashboards/slatrack.json"
    );
    let d: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap())
        .expect("the dashboard is valid JSON");
    let mut out = Vec::new();
    for p in d["panels"].as_array().unwrap() {
        if p["datasource"]["type"] == "grafana-postgresql-datasource" {
            continue; // SQL on the PostgreSQL store: tests/postgres_store.rs runs it
        }
        for t in p["targets"].as_array().into_iter().flatten() {
            out.push(t["expr"].as_str().unwrap().to_string());
        }
    }
    for v in d["templating"]["list"].as_array().unwrap() {
        if let Some(q) = v["query"]["query"].as_str() {
            // label_values(SELECTOR, label) is Grafana's; the selector is PromQL.
            let inner = q
                .strip_prefix("label_values(")
                .and_then(|r| r.rsplit_once(','))
                .map(|(sel, _)| sel.to_string())
                .unwrap_or_else(|| q.to_string());
            out.push(inner);
        }
    }
    assert!(out.len() >= 15, "the dashboard has its panels: {out:?}");
    out.into_iter()
        .map(|e| e.replace("$tenant", ".*").replace("$platform", ".*"))
        .collect()
}
