//! A log that is not where the checkpoint left it, on a real broker (tansu) with
//! `slatrack run` as a real process: the deployment moves to a new cluster whose log
//! starts again at offset 0. The partition stops with an error instead of skipping the
//! new records; `slatrack accept-new-log` moves the checkpoint to the new log; the next
//! run counts it, and the old log's figures stay. Built with `--features integration`.
#![cfg(feature = "integration")]

#[path = "support/service.rs"]
mod service;
#[path = "support/tansu.rs"]
mod tansu;
#[path = "support/wait.rs"]
mod wait;

use rdkafka::producer::{BaseRecord, Producer as _, ThreadedProducer};
use service::{events, run};
use slatrack::event::DeliveryEvent;
use slatrack::store::SqliteStore;
use std::path::Path;
use std::process::Command;
use std::time::Duration;
use tansu::Tansu;
use wait::wait_until;

const SOURCE: &str = "kafka:deliveries/0";

/// `events` pilot events of one day, then one of another tenant a day later (it closes
/// every bucket of the day).
fn log(seed: u64, date: &str, events: u64) -> Vec<DeliveryEvent> {
    let start = slatrack::time::parse_date(date).expect("date");
    let mut evs = slatrack::synthetic::pilot(seed, "globex", start, 3_600_000_000, events);
    let mut s = evs[0].clone();
    s.tenant = "zz-sentinel".into();
    s.event_id = format!("sentinel-{seed}");
    for t in [&mut s.enqueued_at, &mut s.started_at, &mut s.completed_at] {
        *t += slatrack::time::MICROS_PER_DAY;
    }
    evs.push(s);
    evs
}

fn produce(broker: &Tansu, evs: &[DeliveryEvent]) {
    broker.create_topic("deliveries", 1);
    let producer: ThreadedProducer<_> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", broker.brokers())
        .create()
        .expect("producer");
    for e in evs {
        let bytes = slatrack::codec::protobuf::encode(e);
        tansu::send_blocking(
            &producer,
            BaseRecord::<(), _>::to("deliveries")
                .partition(0)
                .payload(&bytes),
        );
    }
    producer.flush(Duration::from_secs(30)).expect("flush");
}

fn terminal(evs: &[DeliveryEvent]) -> u64 {
    evs.iter()
        .filter(|e| e.tenant == "globex" && e.is_terminal())
        .count() as u64
}

fn config(dir: &Path, brokers: &str) -> std::path::PathBuf {
    let path = dir.join("slatrack.toml");
    std::fs::write(
        &path,
        format!(
            r#"[store]
path = "{store}"
[service]
checkpoint_interval = "100ms"
[metrics]
listen = ""
[kafka]
brokers = "{brokers}"
group_id = "slatrack-discontinuity"
[[kafka.topics]]
name = "deliveries"
format = "protobuf"
[kafka.properties]
"session.timeout.ms" = "2000"
"heartbeat.interval.ms" = "500"
"#,
            store = dir.join("s.db").display()
        ),
    )
    .expect("config");
    path
}

fn checkpoint(store: &Path, source: &str) -> Option<i64> {
    let s = SqliteStore::open_read_only(store).ok()?;
    s.checkpoint(source).ok().flatten().map(|(_, next, _)| next)
}

#[test]
fn a_new_cluster_stops_the_partition_until_its_log_is_accepted() {
    let dir = tempfile::tempdir().expect("dir");
    let d = dir.path();
    let store = d.join("s.db");
    let old = log(1, "2025-10-01", 400);
    let new = log(2, "2025-10-03", 150);
    assert!(
        new.len() < old.len(),
        "the new log ends below the old checkpoint"
    );

    // The old cluster: consumed to its end.
    let a = Tansu::start(&d.join("tansu-a.log"));
    produce(&a, &old);
    {
        let _svc = run(&config(d, &a.brokers()), &d.join("run-1.log"));
        wait_until("the old log counted", Duration::from_secs(120), || {
            checkpoint(&store, SOURCE) >= Some(old.len() as i64)
        });
    }
    drop(a);
    let counted_old = events(&store);
    // A producer's retries may have written some records twice: the old log's offsets
    // end at or beyond its record count.
    let old_next = checkpoint(&store, SOURCE).expect("checkpoint");
    assert_eq!(counted_old, terminal(&old));

    // The new cluster: its log restarts at 0 and ends below the checkpoint.
    let b = Tansu::start(&d.join("tansu-b.log"));
    produce(&b, &new);
    let cfg = config(d, &b.brokers());
    {
        let _svc = run(&cfg, &d.join("run-2.log"));
        wait_until("the stop is reported", Duration::from_secs(120), || {
            std::fs::read_to_string(d.join("run-2.log"))
                .unwrap_or_default()
                .contains("slatrack accept-new-log")
        });
    }
    let said = std::fs::read_to_string(d.join("run-2.log")).expect("log");
    assert!(said.contains(&format!("offset {old_next}")), "{said}");
    assert_eq!(checkpoint(&store, SOURCE), Some(old_next), "nothing moved");
    assert_eq!(
        events(&store),
        counted_old,
        "nothing of the new log was counted"
    );

    // Accepted: the next run reads the new log from its beginning.
    let accepted = Command::new(env!("CARGO_BIN_EXE_slatrack"))
        .args(["accept-new-log", "--config"])
        .arg(&cfg)
        .args(["--topic", "deliveries", "--partition", "0"])
        .output()
        .expect("accept-new-log runs");
    assert!(
        accepted.status.success(),
        "{}",
        String::from_utf8_lossy(&accepted.stderr)
    );
    {
        let _svc = run(&cfg, &d.join("run-3.log"));
        wait_until("the new log counted", Duration::from_secs(120), || {
            events(&store) == counted_old + terminal(&new)
        });
    }
    let new_next = checkpoint(&store, SOURCE).expect("checkpoint");
    assert!(
        new_next < old_next,
        "the source now follows the new log: {new_next}"
    );
}
