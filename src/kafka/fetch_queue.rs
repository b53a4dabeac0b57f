//! The queue every assigned partition's fetched records are forwarded to, read in
//! batches: the one place slatrack calls librdkafka's C API itself.
//!
//! Why: `BaseConsumer::poll` hands out one record per call, each wrapped in an event
//! (a queue lock, two clock reads for `max.poll.interval.ms`, an `Arc` and the event's
//! teardown); on a backlog that was a third of the poll thread. librdkafka's
//! `rd_kafka_consume_batch_queue` takes up to a batch's records per call, but on the
//! consumer queue it would also take rebalance events and answer them itself (an
//! unassign). So records and events go separate ways: each partition's own queue is
//! forwarded here when it is assigned (before fetching starts, so no record takes the
//! other way), and the consumer queue keeps the events, still served by
//! `BaseConsumer::poll` with the service's rebalance handler.
//!
//! Records of a partition stay in offset order (one partition, one queue); records of
//! a fetch position that was moved or revoked are dropped by librdkafka's version
//! barrier, as on the consumer queue.
#![allow(unsafe_code)]

use rdkafka::bindings as rd;
use std::ffi::{CStr, CString};
use std::time::Duration;

/// One record read from the queue, borrowed until the next read.
pub struct Fetched<'a> {
    /// The message, for its topic's name (read only when asked: a C string per record).
    message: &'a rd::rd_kafka_message_t,
    pub partition: i32,
    pub offset: i64,
    pub payload: &'a [u8],
}

impl Fetched<'_> {
    /// The record's topic.
    pub fn topic(&self) -> &str {
        // SAFETY: a record's topic handle lives as long as the message; its name is a
        // NUL-terminated string librdkafka owns.
        let name = unsafe { CStr::from_ptr(rd::rd_kafka_topic_name(self.message.rkt)) };
        name.to_str().unwrap_or("")
    }
}

/// An owned librdkafka queue handle (see the module doc).
pub struct FetchQueue {
    queue: *mut rd::rd_kafka_queue_t,
    /// The client the queue belongs to (for partition queues).
    client: *mut rd::rd_kafka_t,
    /// Messages of the last read, destroyed at the next one or on drop.
    held: Vec<*mut rd::rd_kafka_message_t>,
}

// SAFETY: librdkafka queues and clients are thread-safe; the handle is used by one thread
// at a time (`&mut self` for reads).
unsafe impl Send for FetchQueue {}
unsafe impl Sync for FetchQueue {}

/// What the rebalance callback needs to forward a partition here: the queue and its
/// client, not owned (the [`FetchQueue`] owns them and outlives every use; see
/// `Consumer`).
#[derive(Clone, Copy)]
pub struct Forwarder {
    queue: *mut rd::rd_kafka_queue_t,
    client: *mut rd::rd_kafka_t,
}

// SAFETY: as for `FetchQueue`; forwarding is a thread-safe librdkafka call.
unsafe impl Send for Forwarder {}
unsafe impl Sync for Forwarder {}

impl Forwarder {
    /// Sends the partition's fetched records to the queue from now on (idempotent; it
    /// lasts for the client's life, across later assignments of the partition). False
    /// when the client knows no such partition.
    pub fn forward(&self, topic: &str, partition: i32) -> bool {
        let Ok(name) = CString::new(topic) else {
            return false;
        };
        // SAFETY: a live client and queue (see the type doc) and a NUL-terminated name;
        // the partition queue handle is released after forwarding (the forward holds it).
        unsafe {
            let pq = rd::rd_kafka_queue_get_partition(self.client, name.as_ptr(), partition);
            if pq.is_null() {
                return false;
            }
            rd::rd_kafka_queue_forward(pq, self.queue);
            rd::rd_kafka_queue_destroy(pq);
        }
        true
    }
}

impl FetchQueue {
    /// A new queue of `client` (a consumer's native handle).
    ///
    /// # Safety
    /// `client` must be a live consumer handle that outlives the queue.
    pub unsafe fn new(client: *mut rd::rd_kafka_t) -> Option<Self> {
        // SAFETY: the caller guarantees a live client.
        let queue = unsafe { rd::rd_kafka_queue_new(client) };
        (!queue.is_null()).then(|| Self {
            queue,
            client,
            held: Vec::new(),
        })
    }

    /// The forwarding side of this queue, for the rebalance callback.
    pub fn forwarder(&self) -> Forwarder {
        Forwarder {
            queue: self.queue,
            client: self.client,
        }
    }

    /// Reads up to `max` records: at once what is queued, or, when nothing is, the first
    /// to arrive within `wait`. Calls `each` per record in queue order and `failed` with
    /// librdkafka's text per fetch error among them (errors take no record's place).
    /// Returns the records read.
    pub fn read(
        &mut self,
        max: usize,
        wait: Duration,
        mut each: impl FnMut(Fetched<'_>),
        mut failed: impl FnMut(&str),
    ) -> usize {
        self.release();
        self.held.resize(max.max(1), std::ptr::null_mut());
        // SAFETY: `held` has room for `len` pointers; librdkafka fills the first `n`.
        let mut n = unsafe {
            rd::rd_kafka_consume_batch_queue(self.queue, 0, self.held.as_mut_ptr(), max.max(1))
        };
        if n == 0 && !wait.is_zero() {
            // A timed batch read waits for the whole batch: wait for one record instead.
            let ms = wait.as_millis().clamp(1, i32::MAX as u128) as i32;
            // SAFETY: as above, room for one.
            n = unsafe {
                rd::rd_kafka_consume_batch_queue(self.queue, ms, self.held.as_mut_ptr(), 1)
            };
        }
        let n = usize::try_from(n).unwrap_or(0);
        self.held.truncate(n);
        let mut delivered = 0;
        for &m in &self.held {
            // SAFETY: librdkafka returned `n` valid messages, alive until destroyed.
            let msg = unsafe { &*m };
            if msg.err != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
                // SAFETY: a valid message; the error text is a static or message-owned C string.
                let text = unsafe { CStr::from_ptr(rd::rd_kafka_message_errstr(m)) };
                failed(&text.to_string_lossy());
                continue;
            }
            let payload = if msg.payload.is_null() {
                &[][..]
            } else {
                // SAFETY: a record's payload lives as long as the message.
                unsafe { std::slice::from_raw_parts(msg.payload as *const u8, msg.len) }
            };
            each(Fetched {
                message: msg,
                partition: msg.partition,
                offset: msg.offset,
                payload,
            });
            delivered += 1;
        }
        delivered
    }

    /// Destroys the messages of the last read.
    fn release(&mut self) {
        for m in self.held.drain(..) {
            // SAFETY: each was returned by librdkafka and not yet destroyed.
            unsafe { rd::rd_kafka_message_destroy(m) };
        }
    }
}

impl Drop for FetchQueue {
    fn drop(&mut self) {
        self.release();
        // SAFETY: our own handle, destroyed once, before its client (see `Consumer`).
        unsafe { rd::rd_kafka_queue_destroy(self.queue) };
    }
}
