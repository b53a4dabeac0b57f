//! What every live test with `kafka.windows_topic` ends with: the topic holds each window
//! the store queued, once per key, summing to the store's figures.

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Message};
use slatrack::store::Location;
use std::collections::BTreeMap;
use std::time::Duration;

use super::wait::wait_until;

/// Per (tenant, platform): the numbers and latencies of every bucket in the store.
pub fn stored_totals(store: &str) -> BTreeMap<(String, String), slatrack::engine::Stats> {
    let s = slatrack::store::open(
        &Location::parse(store).unwrap(),
        slatrack::store::Access::ReadOnly,
    )
    .unwrap();
    let mut out: BTreeMap<(String, String), slatrack::engine::Stats> = BTreeMap::new();
    for c in s.coverage(None).unwrap() {
        for b in s.buckets(&c.tenant, i64::MIN, i64::MAX).unwrap() {
            out.entry((b.tenant, b.platform))
                .or_default()
                .merge(&b.stats);
        }
    }
    out
}

/// Each source's last queued window number, once the queue is empty (every instance has
/// stopped, the last one on SIGTERM, which publishes what is queued).
pub fn published_seqs(store: &str) -> BTreeMap<String, i64> {
    let (queued, seqs): (i64, Vec<(String, i64)>) = match Location::parse(store).unwrap() {
        Location::Sqlite(p) => {
            let c = rusqlite::Connection::open(p).unwrap();
            let queued = c
                .query_row("SELECT COUNT(*) FROM window_queue", [], |r| r.get(0))
                .unwrap();
            let mut stmt = c
                .prepare("SELECT source, last_seq FROM window_queue_seq")
                .unwrap();
            let seqs = stmt
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                .unwrap()
                .map(Result::unwrap)
                .collect();
            (queued, seqs)
        }
        Location::Postgres(_) => {
            let mut c = ::postgres::Client::connect(store, ::postgres::NoTls).unwrap();
            let queued = c
                .query_one("SELECT COUNT(*) FROM window_queue", &[])
                .unwrap()
                .get(0);
            let seqs = c
                .query("SELECT source, last_seq FROM window_queue_seq", &[])
                .unwrap()
                .iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect();
            (queued, seqs)
        }
    };
    assert_eq!(
        queued, 0,
        "every queued window published by the last SIGTERM"
    );
    seqs.into_iter().collect()
}

/// The windows topic (`kafka.windows_topic`) holds every window the store queued: each
/// key `(source, seq)` for seq 1..=last, a key seen twice (re-published after a crash)
/// with the same value, and the windows summed per tenant and platform equal the store's
/// buckets, counters and latencies.
pub fn assert_windows_published(brokers: &str, store: &str) {
    let expected = published_seqs(store);
    let want: usize = expected.values().map(|n| *n as usize).sum();
    assert!(want > 0, "windows were queued: {expected:?}");
    // Every partition from its start, without a consumer group (none to join or balance).
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "windows-reader")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let md = consumer
        .fetch_metadata(Some("slatrack-windows"), Duration::from_secs(30))
        .unwrap();
    let mut tpl = rdkafka::TopicPartitionList::new();
    for p in md.topics()[0].partitions() {
        tpl.add_partition_offset("slatrack-windows", p.id(), rdkafka::Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let mut seen: BTreeMap<(String, i64), Vec<u8>> = BTreeMap::new();
    // Each look drains what the consumer has (the pilot publishes thousands of windows).
    wait_until("every published window", Duration::from_secs(120), || {
        let mut wait = Duration::from_millis(200);
        while let Some(r) = consumer.poll(wait) {
            wait = Duration::ZERO;
            let m = r.unwrap();
            let key = slatrack::codec::window::decode_key(m.key().unwrap()).unwrap();
            let value = m.payload().unwrap().to_vec();
            if let Some(before) = seen.get(&key) {
                assert_eq!(before, &value, "{key:?} published again with another value");
            }
            seen.insert(key, value);
        }
        seen.len() >= want
    });
    for (source, seq) in seen.keys() {
        let last = expected.get(source).copied().unwrap_or(0);
        assert!(
            (1..=last).contains(seq),
            "{source} window {seq} was never queued (last {last})"
        );
    }
    let mut published: BTreeMap<(String, String), slatrack::engine::Stats> = BTreeMap::new();
    for value in seen.values() {
        let (_, b, _) = slatrack::codec::window::decode(value).unwrap();
        published
            .entry((b.key.tenant.to_string(), b.key.platform.to_string()))
            .or_default()
            .merge(&b.stats);
    }
    let stored = stored_totals(store);
    assert_eq!(
        published.keys().collect::<Vec<_>>(),
        stored.keys().collect::<Vec<_>>()
    );
    for (k, st) in &stored {
        assert_eq!(published[k].counters, st.counters, "{k:?}");
        assert_eq!(&published[k], st, "{k:?}: latencies");
    }
}
