//! A real Kafka-protocol broker for the integration suite: tansu on 127.0.0.1 with
//! memory storage, started per test, killed on drop. `SLATRACK_TANSU` names the binary
//! (`scripts/fetch-tansu.sh` prints it; `scripts/test-all.sh` sets it).
#![allow(dead_code)]

use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Tansu {
    child: Child,
    pub port: u16,
}

impl Tansu {
    pub fn start(log: &std::path::Path) -> Tansu {
        Self::start_advertising(log, None)
    }

    /// A broker that tells clients (in metadata) to connect to `advertised` instead of
    /// its own port: a TLS endpoint in front of it.
    pub fn start_advertising(log: &std::path::Path, advertised: Option<u16>) -> Tansu {
        let bin = std::env::var("SLATRACK_TANSU").expect(
            "SLATRACK_TANSU must name the tansu binary: run the suite via scripts/test-all.sh",
        );
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("tcp://127.0.0.1:{port}");
        let advertised = format!("tcp://127.0.0.1:{}", advertised.unwrap_or(port));
        let out = std::fs::File::create(log).unwrap();
        let child = Command::new(&bin)
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &advertised,
            ])
            .args(["--storage-engine", "memory://tansu/"])
            .stdout(Stdio::from(out.try_clone().unwrap()))
            .stderr(Stdio::from(out))
            .spawn()
            .expect("tansu starts");
        let t = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "tansu did not listen on {port} within 20 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Tansu { child, port }
    }

    /// The broker's process id (benches read its CPU time from /proc).
    #[allow(dead_code)]
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// tansu does not auto-create topics.
    pub fn create_topic(&self, name: &str, partitions: u32) {
        let bin = std::env::var("SLATRACK_TANSU").unwrap();
        let st = Command::new(bin)
            .args([
                "topic",
                "create",
                name,
                "--partitions",
                &partitions.to_string(),
            ])
            .args(["--broker", &format!("tcp://127.0.0.1:{}", self.port)])
            .status()
            .unwrap();
        assert!(st.success(), "tansu topic create {name}");
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `[kafka]` for an in-process `slatrack run` against a tansu broker: one protobuf topic, no
/// quarantine, and the short session timeout tansu needs (the prebuilt broker waits half of
/// it on each join).
pub fn kafka_config(brokers: &str, group: &str, topic: &str) -> slatrack::config::KafkaConfig {
    slatrack::config::KafkaConfig {
        brokers: brokers.into(),
        group_id: group.into(),
        topics: vec![slatrack::config::TopicConfig {
            name: topic.into(),
            format: slatrack::codec::Format::Protobuf,
        }],
        quarantine_topic: String::new(),
        windows_topic: String::new(),
        fetch_connections: slatrack::config::DEFAULT_FETCH_CONNECTIONS,
        properties: [
            ("session.timeout.ms", "2000"),
            ("heartbeat.interval.ms", "500"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect(),
    }
}

/// Sends `rec`, polling delivery reports while the producer's queue is full (filling a
/// topic faster than the broker acknowledges).
pub fn send_blocking<K, P>(
    producer: &rdkafka::producer::ThreadedProducer<rdkafka::producer::DefaultProducerContext>,
    mut rec: rdkafka::producer::BaseRecord<'_, K, P>,
) where
    K: rdkafka::message::ToBytes + ?Sized,
    P: rdkafka::message::ToBytes + ?Sized,
{
    loop {
        match producer.send(rec) {
            Ok(()) => return,
            Err((_, r)) => {
                rec = r;
                producer.poll(Duration::from_millis(5));
            }
        }
    }
}
