//! Awaiting a condition, bounded, instead of sleeping a guessed time.

use std::time::{Duration, Instant};

/// Polls `cond` every 20 ms; fails the test with `what` after `limit`.
pub fn wait_until(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let t = Instant::now();
    while !cond() {
        assert!(
            t.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
