//! Folding bucket rows past `store.minute_retention` into hourly rows is exact: the
//! scorecards (markdown and JSON) of the 10-week Globex fixture are the same before, half
//! way and after, and folding again changes nothing.

#[path = "support/scorecard.rs"]
mod scorecard;

use scorecard::cards;
use slatrack::config::Config;
use slatrack::replay::{self, ReplayOptions};
use slatrack::store::SqliteStore;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

fn rows(store: &Path) -> (i64, i64) {
    let c = rusqlite::Connection::open(store).expect("open");
    let n = |sql: &str| c.query_row(sql, [], |r| r.get::<_, i64>(0)).expect("count");
    (
        n("SELECT COUNT(*) FROM buckets WHERE bucket_secs < 3600"),
        n("SELECT COUNT(*) FROM buckets WHERE bucket_secs = 3600"),
    )
}

#[test]
fn folded_rows_give_the_same_scorecards() {
    let dir = tempfile::tempdir().expect("dir");
    let input = dir.path().join("globex.jsonl");
    {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&input).expect("create"));
        for e in slatrack::synthetic::globex_fixture() {
            writeln!(f, "{}", slatrack::codec::json::encode(&e)).expect("write");
        }
    }
    let store = dir.path().join("s.db");
    {
        let mut s = SqliteStore::open(&store).expect("store");
        let opts = ReplayOptions {
            inputs: vec![input],
            format: None,
            bounds: None,
        };
        replay::run(Arc::new(Config::default()), &mut s, &opts, |_| {}).expect("replay");
    }
    let want = cards(&store);
    let (minutes, hours) = rows(&store);
    assert!(minutes > 20_000 && hours == 0, "{minutes} {hours}");

    // Half way: the first five weeks, three days per call.
    let mid = slatrack::time::parse_date("2025-10-13").expect("date");
    let mut s = SqliteStore::open(&store).expect("store");
    let mut calls = 0;
    loop {
        let f = s.fold_before(mid, 3).expect("fold");
        calls += 1;
        if !f.more {
            break;
        }
    }
    assert!(calls > 5, "a bounded number of days per call: {calls}");
    let (m, h) = rows(&store);
    assert!(h > 0 && m < minutes && m > 0, "{m} {h}");
    assert_eq!(cards(&store), want, "half folded");

    // All of it; then again, which finds nothing.
    let now = slatrack::time::now_micros();
    let f = s.fold_before(now, usize::MAX).expect("fold");
    assert!(f.rows > 0 && !f.more);
    let (m, h) = rows(&store);
    assert_eq!(m, 0);
    // The fixture is sparse (a few events per key-hour, minutes of one key that close
    // together already one row): 3 rows or more become one.
    assert!(h * 3 < minutes, "{h} hourly rows for {minutes} minute rows");
    assert_eq!(cards(&store), want, "all folded");
    assert_eq!(s.fold_before(now, usize::MAX).expect("fold").rows, 0);
    assert_eq!(cards(&store), want, "folded twice");

    // A row written later into a folded hour (five minutes in, a copy of the hour's own
    // figures) is added to the hourly row when folded again, not written over it.
    let c = rusqlite::Connection::open(&store).expect("open");
    let (source, platform, hour, attempts): (String, String, i64, i64) = c
        .query_row(
            "SELECT source, platform, bucket_start_ms, attempts FROM buckets
             WHERE tenant = 'globex' ORDER BY bucket_start_ms LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .expect("an hourly row");
    c.execute(
        "INSERT INTO buckets (source, tenant, platform, direction, bucket_start_ms, bucket_secs,
            attempts, events, delivered, failed, dead_lettered, on_time, retried, max_retries,
            latency_sum_us, target_latency_ms, latency_hist)
         SELECT source, tenant, platform, direction, bucket_start_ms + 300000, 60,
            attempts, events, delivered, failed, dead_lettered, on_time, retried, max_retries,
            latency_sum_us, target_latency_ms, latency_hist
         FROM buckets WHERE source = ?1 AND tenant = 'globex' AND platform = ?2
           AND bucket_start_ms = ?3",
        rusqlite::params![source, platform, hour],
    )
    .expect("a late minute row");
    assert_eq!(s.fold_before(now, usize::MAX).expect("fold").rows, 1);
    let merged: (i64, i64) = c
        .query_row(
            "SELECT attempts, bucket_secs FROM buckets
             WHERE source = ?1 AND tenant = 'globex' AND platform = ?2 AND bucket_start_ms = ?3",
            rusqlite::params![source, platform, hour],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .expect("the hourly row");
    assert_eq!(merged, (2 * attempts, 3600));
}
