//! The one producer slatrack writes to Kafka with: the quarantine topic, the published
//! windows and the traffic generator all send through [`Producer`].
//!
//! A thread of its own serves delivery reports ([`POLL_BUSY`], [`POLL_IDLE`]); the first
//! failed delivery since the last [`Producer::take_failure`] is kept, and every failed
//! delivery is counted ([`Producer::failed_deliveries`]), so a caller that must know its
//! writes landed (the window publisher before it trims its queue, the quarantine before a
//! checkpoint) can ask.
//!
//! Why not rdkafka's `ThreadedProducer`: its thread calls `BaseProducer::poll(100 ms)`,
//! which passes the time left to librdkafka in whole milliseconds and, once less than one
//! is left, polls without waiting until the deadline: about a millisecond of spinning per
//! 100 ms, ≈ 1 % of a core for every producer, idle or not.

use super::redact;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer as _, ProducerContext};
use rdkafka::ClientContext;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How often the delivery thread serves librdkafka's events while records are in flight:
/// a delivery report waits at most this long (a flush serves them itself).
pub const POLL_BUSY: Duration = Duration::from_millis(1);

/// How often it looks while nothing is in flight (errors, a broker going away).
pub const POLL_IDLE: Duration = Duration::from_millis(100);

/// Why a record was not handed to librdkafka, or a flush did not complete.
#[derive(Debug, thiserror::Error)]
pub enum ProduceError {
    #[error("cannot create the Kafka producer: {0}")]
    Create(String),
    #[error("librdkafka's queue stayed full for {0:?} (the broker is slow or unreachable)")]
    QueueFull(Duration),
    #[error("produce failed: {0}")]
    Send(String),
    #[error("writes not acknowledged within {timeout:?}: {why}")]
    Flush { timeout: Duration, why: String },
}

/// Keeps the first delivery failure reported by librdkafka's thread, and counts them all.
#[derive(Default)]
pub struct DeliveryTracker {
    failed: Mutex<Option<String>>,
    failures: AtomicU64,
}

impl ClientContext for DeliveryTracker {}

impl ProducerContext for DeliveryTracker {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((e, _)) = result {
            self.failures.fetch_add(1, Ordering::Relaxed);
            if let Ok(mut f) = self.failed.lock() {
                f.get_or_insert_with(|| e.to_string());
            }
        }
    }
}

/// One record to send. `payload: None` is a tombstone; `partition: None` lets the
/// partitioner choose by key.
pub struct Outgoing<'a> {
    pub topic: &'a str,
    pub key: &'a [u8],
    pub payload: Option<&'a [u8]>,
    pub partition: Option<i32>,
    pub headers: &'a [(&'a str, &'a str)],
}

pub struct Producer {
    inner: Arc<BaseProducer<DeliveryTracker>>,
    stop: Arc<AtomicBool>,
    poller: Option<JoinHandle<()>>,
}

impl Producer {
    pub fn new(client: &ClientConfig) -> Result<Self, ProduceError> {
        let inner: Arc<BaseProducer<DeliveryTracker>> = Arc::new(
            client
                .create_with_context(DeliveryTracker::default())
                .map_err(|e| ProduceError::Create(redact(&e)))?,
        );
        let stop = Arc::new(AtomicBool::new(false));
        let poller = {
            let (inner, stop) = (inner.clone(), stop.clone());
            std::thread::Builder::new()
                .name("slatrack-deliveries".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        // One event at most, without waiting (see the module doc). A
                        // delivery report frees its records: while reports come, go on.
                        let before = inner.in_flight_count();
                        inner.poll(Duration::ZERO);
                        let after = inner.in_flight_count();
                        if after == 0 {
                            std::thread::park_timeout(POLL_IDLE);
                        } else if after >= before {
                            std::thread::sleep(POLL_BUSY);
                        }
                    }
                })
                .map_err(|e| ProduceError::Create(format!("delivery thread: {e}")))?
        };
        Ok(Self {
            inner,
            stop,
            poller: Some(poller),
        })
    }

    /// Hands one record to librdkafka. A full local queue is transient: it waits for
    /// deliveries and retries until `patience` has passed, never forever.
    pub fn send(&self, rec: &Outgoing<'_>, patience: Duration) -> Result<(), ProduceError> {
        let deadline = Instant::now() + patience;
        loop {
            let mut r = BaseRecord::<[u8], [u8]>::to(rec.topic).key(rec.key);
            if let Some(p) = rec.payload {
                r = r.payload(p);
            }
            if let Some(p) = rec.partition {
                r = r.partition(p);
            }
            if !rec.headers.is_empty() {
                let mut h = OwnedHeaders::new_with_capacity(rec.headers.len());
                for (key, value) in rec.headers {
                    h = h.insert(Header {
                        key,
                        value: Some(*value),
                    });
                }
                r = r.headers(h);
            }
            match self.inner.send(r) {
                Ok(()) => {
                    // The delivery thread may be in its idle wait: it is wanted now.
                    if let Some(p) = &self.poller {
                        p.thread().unpark();
                    }
                    return Ok(());
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    if Instant::now() >= deadline {
                        return Err(ProduceError::QueueFull(patience));
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err((e, _)) => return Err(ProduceError::Send(redact(&e))),
            }
        }
    }

    /// Waits until everything sent so far is acknowledged or failed, checking every
    /// millisecond. (`rdkafka`'s own `flush` waits in 100 ms slices that each run to
    /// their end, which would put a 100 ms floor under every store checkpoint.)
    pub fn flush(&self, timeout: Duration) -> Result<(), ProduceError> {
        let deadline = Instant::now() + timeout;
        loop {
            // Delivery reports finish a flush: served here too, not only every POLL_BUSY.
            self.inner.poll(Duration::ZERO);
            // A zero timeout: librdkafka sends what lingers, and answers at once.
            match self.inner.flush(Duration::ZERO) {
                Ok(()) => return Ok(()),
                Err(KafkaError::Flush(RDKafkaErrorCode::OperationTimedOut))
                    if Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(1))
                }
                Err(e) => {
                    return Err(ProduceError::Flush {
                        timeout,
                        why: redact(&e),
                    })
                }
            }
        }
    }

    /// Deliveries that failed since the producer was created (the broker refused a
    /// record, or it timed out in librdkafka's queue).
    pub fn failed_deliveries(&self) -> u64 {
        self.inner.context().failures.load(Ordering::Relaxed)
    }

    /// The first delivery that failed since the last call, if any.
    pub fn take_failure(&self) -> Option<String> {
        self.inner
            .context()
            .failed
            .lock()
            .ok()
            .and_then(|mut f| f.take())
    }
}

impl Drop for Producer {
    /// Stops the delivery thread; what is still unsent is librdkafka's to drop with the
    /// client (callers flush first when it matters).
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(p) = self.poller.take() {
            p.thread().unpark();
            let _ = p.join();
        }
    }
}
