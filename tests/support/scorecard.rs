//! `slatrack scorecard` as a user runs it, over the Globex pilot's ten weeks
//! (2025-09-08 to 2025-11-17) for tenant globex: the report the whole-program tests
//! compare.
#![allow(dead_code)]

use std::path::Path;
use std::process::Command;

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
