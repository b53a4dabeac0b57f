//! TLS to Kafka with certificate verification on: a throwaway CA signs a certificate for
//! 127.0.0.1, socat (Debian's) terminates TLS in front of tansu, and tansu advertises the
//! TLS address, so every client connection goes through it. `slatrack run` consumes
//! through it; with another CA it refuses the broker and says why. Built with
//! `--features integration`; needs `openssl` and `socat` (scripts/test-all.sh installs them).
#![cfg(feature = "integration")]

#[path = "support/certs.rs"]
mod certs;
#[path = "support/service.rs"]
mod service;
#[path = "support/tansu.rs"]
mod tansu;
#[path = "support/wait.rs"]
mod wait;

use certs::{ca, server_cert};
use rdkafka::producer::{BaseRecord, Producer as _, ThreadedProducer};
use service::{events, run, Killed};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;
use tansu::Tansu;
use wait::wait_until;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// socat: TLS on `tls_port`, plain TCP to the broker on `broker_port`.
fn tls_endpoint(cert: &Path, tls_port: u16, broker_port: u16, log: &Path) -> Killed {
    let child = Command::new("socat")
        .arg(format!(
            "OPENSSL-LISTEN:{tls_port},bind=127.0.0.1,reuseaddr,fork,cert={},verify=0",
            cert.display()
        ))
        .arg(format!("TCP:127.0.0.1:{broker_port}"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).expect("log"))
        .spawn()
        .expect("socat runs (Debian's socat package)");
    let start = std::time::Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", tls_port)).is_err() {
        assert!(start.elapsed() < Duration::from_secs(20), "socat listens");
        std::thread::sleep(Duration::from_millis(50));
    }
    Killed(child)
}

fn config(dir: &Path, tls_port: u16, ca: &Path, name: &str) -> PathBuf {
    let path = dir.join(format!("{name}.toml"));
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
brokers = "127.0.0.1:{tls_port}"
group_id = "slatrack-{name}"
quarantine_topic = ""
[[kafka.topics]]
name = "deliveries"
format = "protobuf"
[kafka.properties]
"security.protocol" = "SSL"
"ssl.ca.location" = "{ca}"
"session.timeout.ms" = "2000"
"heartbeat.interval.ms" = "500"
"#,
            store = dir.join(format!("{name}.db")).display(),
            ca = ca.display(),
        ),
    )
    .expect("config");
    path
}

#[test]
fn slatrack_consumes_through_tls_and_refuses_a_broker_its_ca_did_not_sign() {
    let dir = tempfile::tempdir().expect("dir");
    let d = dir.path();
    let ca_pem = ca(d, "ca");
    let other_ca = ca(d, "other-ca");
    let cert = server_cert(d, "ca");
    let tls_port = free_port();
    let broker = Tansu::start_advertising(&d.join("tansu.log"), Some(tls_port));
    broker.create_topic("deliveries", 1);
    let _tls = tls_endpoint(&cert, tls_port, broker.port, &d.join("socat.log"));

    // Produced through TLS too (the broker advertises only the TLS address).
    let start = slatrack::time::parse_date("2025-10-01").expect("date");
    let mut evs = slatrack::synthetic::pilot(5, "globex", start, 3_600_000_000, 300);
    let mut sentinel = evs[0].clone();
    sentinel.tenant = "zz-sentinel".into();
    for t in [
        &mut sentinel.enqueued_at,
        &mut sentinel.started_at,
        &mut sentinel.completed_at,
    ] {
        *t += slatrack::time::MICROS_PER_DAY;
    }
    evs.push(sentinel);
    let terminal = evs
        .iter()
        .filter(|e| e.tenant == "globex" && e.is_terminal())
        .count() as u64;
    let producer: ThreadedProducer<_> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", format!("127.0.0.1:{tls_port}"))
        .set("security.protocol", "SSL")
        .set("ssl.ca.location", ca_pem.display().to_string())
        .create()
        .expect("TLS producer");
    for e in &evs {
        let bytes = slatrack::codec::protobuf::encode(e);
        tansu::send_blocking(
            &producer,
            BaseRecord::<(), _>::to("deliveries")
                .partition(0)
                .payload(&bytes),
        );
    }
    producer
        .flush(Duration::from_secs(30))
        .expect("flushed through TLS");

    // The right CA: every event counted.
    {
        let _svc = run(&config(d, tls_port, &ca_pem, "good"), &d.join("good.log"));
        wait_until(
            "events counted through TLS",
            Duration::from_secs(120),
            || events(&d.join("good.db")) == terminal,
        );
    }

    // Another CA: the broker is refused, the log says why, nothing is counted.
    {
        let _svc = run(
            &config(d, tls_port, &other_ca, "wrong-ca"),
            &d.join("wrong-ca.log"),
        );
        wait_until(
            "the certificate failure is reported",
            Duration::from_secs(60),
            || {
                std::fs::read_to_string(d.join("wrong-ca.log"))
                    .unwrap_or_default()
                    .contains("certificate verify failed")
            },
        );
    }
    assert_eq!(events(&d.join("wrong-ca.db")), 0);
}
