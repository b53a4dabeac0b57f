//! A flood of 1 000 000 distinct tenant ids (a misbehaving producer, or an attack) through
//! the engine and the Prometheus export: the engine keeps at most `limits.max_keys` keys
//! and counts the rest into `__overflow__`; the scrape keeps at most
//! `metrics.max_series_keys` tenants and stays under the documented size; memory stays
//! bounded. Its own test binary: it installs the process-wide metrics recorder.

use slatrack::config::Config;
use slatrack::event::{DeliveryEvent, Direction, Outcome};
use slatrack::pipeline::{Pipeline, Verdict};
use slatrack::runtime::RuntimeStatus;
use slatrack::sink::http::Endpoints;
use slatrack::sink::prometheus::Telemetry;
use std::collections::BTreeSet;
use std::sync::Arc;

const TENANTS: usize = 1_000_000;
/// docs/engine.md "Cardinality": the scrape is at most ≈12 KB per exported key.
const SCRAPE_BYTES_PER_KEY: usize = 12 * 1024;

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[test]
fn a_million_tenants_stay_bounded_in_memory_and_in_the_scrape() {
    let config = Arc::new(Config::default());
    let (max_keys, max_series) = (config.limits.max_keys, config.metrics.max_series_keys);
    let platforms = ["benevity", "goodera", "workday", "impact_in"];
    let mut p = Pipeline::new(
        config.clone(),
        slatrack::codec::Format::Protobuf,
        Pipeline::bounds(&config),
    );
    let t0 = slatrack::time::parse_date("2025-10-01").unwrap();
    let rss_before = rss_kib();
    for i in 0..TENANTS {
        let at = t0 + (i as i64) * 1_000; // 1000 s of event time
        let ev = DeliveryEvent {
            event_id: format!("flood-{i}"),
            tenant: format!("tenant-{i:06}"),
            platform: platforms[i % platforms.len()].into(),
            direction: Direction::Inbound,
            attempt: 1,
            max_attempts: 5,
            outcome: Outcome::Delivered,
            enqueued_at: at - 200_000,
            started_at: at - 100_000,
            completed_at: at,
            http_status: Some(200),
            error: None,
        };
        assert_eq!(p.ingest(&ev), Verdict::Counted, "every record still counts");
        // Its copy is a duplicate, and is not counted as an overflow either (the key is
        // looked up before the dedup probe, but interned only after it).
        assert_eq!(p.ingest(&ev), Verdict::Duplicate);
    }
    p.shard.flush();
    let closed: Vec<_> = p.shard.take_closed().collect();

    // Engine: the key table is capped; every record beyond it is counted in __overflow__.
    let keys = p.shard.keys();
    assert!(
        keys.len() <= max_keys + platforms.len() + 1,
        "{} keys",
        keys.len()
    );
    assert_eq!(keys.overflowed, (TENANTS - max_keys) as u64);
    let events: u64 = closed.iter().map(|b| b.stats.counters.events).sum();
    assert_eq!(events, TENANTS as u64, "nothing lost to the cap");
    let overflow_events: u64 = closed
        .iter()
        .filter(|b| &*b.key.tenant == "__overflow__")
        .map(|b| b.stats.counters.events)
        .sum();
    assert_eq!(overflow_events, (TENANTS - max_keys) as u64);

    // Export: at most max_series_keys tenants get their own series.
    let status = Arc::new(RuntimeStatus::default());
    let telemetry = Telemetry::new(config.clone(), Default::default(), status);
    let committed = slatrack::pipeline::Committed {
        buckets: closed,
        ..Default::default()
    };
    telemetry.absorb(std::slice::from_ref(&committed));
    telemetry.set_gauges();
    let scrape = telemetry.metrics();
    let tenants: BTreeSet<&str> = scrape
        .lines()
        .filter(|l| l.starts_with("slatrack_window_events{"))
        .filter_map(|l| l.split("tenant=\"").nth(1)?.split('"').next())
        .collect();
    assert!(tenants.contains("__overflow__"));
    assert!(
        tenants.len() <= max_series + 1,
        "{} tenants exported",
        tenants.len()
    );
    let bound = (max_series + platforms.len() + 1) * SCRAPE_BYTES_PER_KEY;
    eprintln!("scrape: {} bytes, {} tenants", scrape.len(), tenants.len());
    assert!(
        scrape.len() <= bound,
        "scrape {} bytes > documented bound {bound}",
        scrape.len()
    );
    let folded = scrape
        .lines()
        .find(|l| l.starts_with("slatrack_series_overflow_buckets_total "))
        .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .unwrap_or_else(|| {
            panic!(
                "no folded-series counter in:\n{}",
                scrape
                    .lines()
                    .filter(|l| !l.contains("tenant="))
                    .collect::<Vec<_>>()
                    .join("\n")
            )
        });
    assert!(folded >= (max_keys - max_series) as f64, "{folded}");

    // Memory: the whole flood, engine and exporter, within a fixed budget.
    let grown_mib = rss_kib().saturating_sub(rss_before) / 1024;
    assert!(grown_mib < 256, "RSS grew by {grown_mib} MiB");
}
