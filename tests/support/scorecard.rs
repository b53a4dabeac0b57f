//! `slatrack scorecard` as a user runs it, over the Globex pilot's ten weeks
//! (2025-09-08 to 2025-11-17) for tenant globex: the report the whole-program tests
//! compare.
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The Globex fixture as JSON lines in `dir/name`; with `first` only that many lines.
pub fn globex_lines(dir: &Path, name: &str, first: Option<usize>) -> PathBuf {
    let path = dir.join(name);
    let mut f = std::io::BufWriter::new(std::fs::File::create(&path).expect("create"));
    let events = slatrack::synthetic::globex_fixture();
    let n = first.unwrap_or(events.len());
    for e in &events[..n] {
        writeln!(f, "{}", slatrack::codec::json::encode(e)).expect("write");
    }
    path
}

/// `slatrack replay --store STORE --input INPUT`, which must succeed; its summary.
pub fn replay(input: &Path, store: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_slatrack"))
        .args(["replay", "--store", store, "--input"])
        .arg(input)
        .output()
        .expect("slatrack runs");
    assert!(
        out.status.success(),
        "replay failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The report in `format` (`markdown` or `json`) from the store at `store`.
pub fn scorecard(store: &Path, format: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_slatrack"))
        .args(["scorecard", "--tenant", "globex"])
        .args(["--from", "2025-09-08", "--to", "2025-11-17"])
        .args(["--format", format, "--store"])
        .arg(store)
        .output()
        .expect("scorecard runs");
    assert!(
        out.status.success(),
        "scorecard failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

/// Both renderings: (markdown, JSON).
pub fn cards(store: &Path) -> (String, String) {
    (scorecard(store, "markdown"), scorecard(store, "json"))
}
