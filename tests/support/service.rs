//! `slatrack run` as a real process for the whole-program tests: its output in a log
//! file, killed on drop so a failing test leaves nothing running; and what it counted.
#![allow(dead_code)]

use slatrack::store::SqliteStore;
use slatrack::store::StoreRead;
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// A child process killed (and reaped) on drop.
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `slatrack run --config CONFIG` at log level info, stdout and stderr into `log`.
pub fn run(config: &Path, log: &Path) -> Killed {
    run_with_env(config, log, &[])
}

/// [`run`] with environment overrides (`SLATRACK_METRICS_LISTEN`, …).
pub fn run_with_env(config: &Path, log: &Path, env: &[(&str, &str)]) -> Killed {
    let out = std::fs::File::create(log).expect("log");
    Killed(
        Command::new(env!("CARGO_BIN_EXE_slatrack"))
            .args(["run", "--config"])
            .arg(config)
            .env("SLATRACK_LOG", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::from(out.try_clone().expect("log")))
            .stderr(Stdio::from(out))
            .spawn()
            .expect("slatrack run starts"),
    )
}

/// Tenant globex's events in the closed buckets of the SQLite store at `store` (0 while
/// there is no store yet).
pub fn events(store: &Path) -> u64 {
    let Ok(s) = SqliteStore::open_read_only(store) else {
        return 0;
    };
    s.buckets("globex", 0, i64::MAX / 2)
        .map(|b| b.iter().map(|b| b.stats.counters.events).sum())
        .unwrap_or(0)
}
