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
use rdkafka::TopicPartitionList;
use std::ffi::{CStr, CString};
use std::sync::Mutex;
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

/// Forwards `partitions` to the queue behind `slot`, if it is still there (see
/// [`Forwarder::forward`]). A partition that cannot be forwarded is logged; its records
/// then come through its client's own queue, served with the events: slower, not lost.
pub fn forward_all(slot: &Mutex<Option<Forwarder>>, partitions: &TopicPartitionList) {
    let forwarder = *slot.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(f) = forwarder {
        for e in partitions.elements() {
            if !f.forward(e.topic(), e.partition()) {
                tracing::warn!(topic = %e.topic(), partition = e.partition(), "cannot route the partition's records to the batch queue");
            }
        }
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
        failed: &mut impl FnMut(&str),
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

    /// The log start and high watermark of a partition as its last fetch response gave
    /// them (librdkafka caches both; no broker call). `None` before the partition's first
    /// fetch, or for a partition the client does not know.
    pub fn fetched_bounds(&self, topic: &str, partition: i32) -> Option<(i64, i64)> {
        let name = CString::new(topic).ok()?;
        let (mut low, mut high) = (-1i64, -1i64);
        // SAFETY: a live client (see the type doc), a NUL-terminated name and two
        // out-parameters that outlive the call.
        let err = unsafe {
            rd::rd_kafka_get_watermark_offsets(
                self.client,
                name.as_ptr(),
                partition,
                &mut low,
                &mut high,
            )
        };
        (err == rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR && low >= 0 && high >= 0)
            .then_some((low, high))
    }

    /// Has librdkafka write a byte to `waker` when a record (or error) lands in the
    /// queue after it was last read, so one thread can wait on several queues; `None`
    /// stops it. Set only around a wait: a write per read while records stream in would
    /// cost librdkafka's fetching threads a system call each.
    fn signal(&self, waker: Option<&Waker>) {
        let (fd, payload, len) = match waker {
            Some(w) => (w.write, b"1".as_ptr() as *const std::ffi::c_void, 1),
            None => (-1, std::ptr::null(), 0),
        };
        // SAFETY: our live queue; librdkafka copies the payload, under the queue's lock.
        // The pipe outlives every use (`FetchQueues` drops its queues first, and a queue
        // stops signalling when dropped).
        unsafe { rd::rd_kafka_queue_io_event_enable(self.queue, fd, payload, len) };
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
        // Partitions forwarded here keep the queue alive past this handle: stop it
        // signalling a pipe that is about to close (its descriptor number could be
        // reused by a file).
        self.signal(None);
        // SAFETY: our own handle, destroyed once, before its client (see `Consumer`).
        unsafe { rd::rd_kafka_queue_destroy(self.queue) };
    }
}

/// What [`FetchQueues::read`] reads into.
pub trait Reader {
    /// How many more records it takes (0: full).
    fn room(&self) -> usize;
    fn take(&mut self, record: Fetched<'_>);
}

/// The queues a consumer reads records from: its own and each fetcher's
/// (`super::fetchers`), read in turn and, with more than one, waited on together.
pub struct FetchQueues {
    /// Declared before `waker`: a queue stops signalling before the pipe closes.
    queues: Vec<FetchQueue>,
    waker: Option<Waker>,
}

impl FetchQueues {
    /// `None` if the pipe several queues need cannot be made.
    pub fn new(queues: Vec<FetchQueue>) -> Option<Self> {
        let waker = if queues.len() > 1 {
            Some(Waker::new()?)
        } else {
            None
        };
        Some(Self { queues, waker })
    }

    /// Queue `i`: 0 the consumer's, `k` its fetcher `k − 1`'s.
    pub fn queue(&self, i: usize) -> &FetchQueue {
        &self.queues[i]
    }

    /// Reads chunks of up to `chunk` records from the queues in turn into `into` until it
    /// is full or every queue is empty; when nothing at all was read by then, waits up to
    /// `wait` for a first record. Returns whether it stopped on empty queues.
    pub fn read(
        &mut self,
        into: &mut impl Reader,
        chunk: usize,
        wait: Duration,
        mut failed: impl FnMut(&str),
    ) -> bool {
        let deadline = std::time::Instant::now() + wait;
        let n = self.queues.len();
        // `dry` counts the queues found empty since the last record; `signalling`: the
        // queues signal the pipe (only around a wait).
        let (mut q, mut dry, mut any, mut signalling) = (0, 0, false, false);
        let drained = loop {
            let room = into.room().min(chunk);
            if room == 0 {
                break false;
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            // With one queue, a read waits for the first record itself.
            let wait = if n == 1 && !any { left } else { Duration::ZERO };
            let read = self.queues[q].read(room, wait, |r| into.take(r), &mut failed);
            q = (q + 1) % n;
            if read > 0 {
                (dry, any) = (0, true);
                continue;
            }
            dry += 1;
            if dry % n != 0 {
                continue;
            }
            let Some(waker) = self.waker.as_ref().filter(|_| !any && !left.is_zero()) else {
                break true;
            };
            // Every queue is empty: from now on each signals the pipe, and once all have
            // been read again (what arrived meanwhile is read then) the wait starts.
            if !signalling {
                waker.drain();
                for queue in &self.queues {
                    queue.signal(Some(waker));
                }
                signalling = true;
            } else {
                // What woke the wait is read in the next pass.
                waker.wait(left);
                waker.drain();
                dry = 0;
            }
        };
        if signalling {
            for queue in &self.queues {
                queue.signal(None);
            }
        }
        drained
    }
}

/// A non-blocking pipe that queues write to when records arrive ([`FetchQueue::signal`]),
/// waited on when every queue is empty.
struct Waker {
    read: i32,
    write: i32,
}

impl Waker {
    fn new() -> Option<Self> {
        let mut fds = [0i32; 2];
        // SAFETY: `fds` has room for the two descriptors pipe2 returns.
        let r = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) };
        (r == 0).then_some(Self {
            read: fds[0],
            write: fds[1],
        })
    }

    /// Empties the pipe: what it signalled is about to be looked at.
    fn drain(&self) {
        let mut buf = [0u8; 256];
        // SAFETY: reads into a buffer of that length from our own descriptor.
        while unsafe { libc::read(self.read, buf.as_mut_ptr().cast(), buf.len()) } > 0 {}
    }

    /// Waits until something is written or `wait` passes.
    fn wait(&self, wait: Duration) {
        let mut fd = libc::pollfd {
            fd: self.read,
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = wait.as_millis().clamp(1, i32::MAX as u128) as i32;
        // SAFETY: one valid pollfd.
        unsafe { libc::poll(&mut fd, 1, ms) };
    }
}

impl Drop for Waker {
    fn drop(&mut self) {
        // SAFETY: our own descriptors, closed once.
        unsafe {
            libc::close(self.read);
            libc::close(self.write);
        }
    }
}
