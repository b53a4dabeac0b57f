//! Polled records in batches, and how a batch is filled from the fetch queues.

use super::super::fetch_queue::{Fetched, Reader};

/// One polled record: where it is in [`Batch::bytes`] and where it came from.
#[derive(Default, Debug, Clone)]
pub struct Item {
    /// Index into the subscribed topics.
    pub topic: usize,
    pub partition: i32,
    pub offset: i64,
    /// Assignment generation when it was polled (see [`Consumer`]'s `generation`).
    pub generation: u64,
    pub start: usize,
    pub end: usize,
}

/// Polled records, copied out of librdkafka's buffers so they can be applied under one
/// lock after polling (polling may run the rebalance callback, which takes that lock).
#[derive(Default)]
pub struct Batch {
    pub bytes: Vec<u8>,
    pub items: Vec<Item>,
    /// When the batch closed, every assigned partition had been read up to the high
    /// watermark of its last fetch: nothing else was waiting on the broker, so the batch
    /// ends a backlog (or is live traffic keeping up). Only a batch that emptied the fetch
    /// queues can be.
    pub caught_up: bool,
}

impl Batch {
    pub fn clear(&mut self) {
        self.bytes.clear();
        self.items.clear();
        self.caught_up = false;
    }

    /// Appends one record (tests and callers that build batches by hand use it too).
    pub fn push(
        &mut self,
        topic: usize,
        partition: i32,
        offset: i64,
        generation: u64,
        payload: &[u8],
    ) {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(payload);
        self.items.push(Item {
            topic,
            partition,
            offset,
            generation,
            start,
            end: self.bytes.len(),
        });
    }

    pub fn payload(&self, it: &Item) -> &[u8] {
        &self.bytes[it.start..it.end]
    }
}

/// Records per batch at most.
pub const BATCH: usize = 2048;

/// Payload bytes after which a batch is sent even if it holds fewer than [`BATCH`]
/// records: with the service's batches in flight, what bounds the memory between polling
/// and applying, whatever the record size (a batch ends within [`READ_CHUNK`] records of
/// it).
pub const BATCH_BYTES: usize = 256 * 1024;

/// Records taken from the fetch queue per read: small enough that a batch ends near
/// [`BATCH_BYTES`], large enough that a read's fixed cost is spread thin.
pub(super) const READ_CHUNK: usize = 128;

/// A batch being filled from the fetch queues.
pub(super) struct Filling<'a> {
    pub batch: &'a mut Batch,
    pub topics: &'a [String],
    pub generation: u64,
}

impl Reader for Filling<'_> {
    fn room(&self) -> usize {
        let b = &self.batch;
        if b.bytes.len() >= BATCH_BYTES {
            0
        } else {
            BATCH.saturating_sub(b.items.len())
        }
    }

    fn take(&mut self, r: Fetched<'_>) {
        if let Some(topic) = topic_index(self.topics, || r.topic()) {
            self.batch
                .push(topic, r.partition, r.offset, self.generation, r.payload);
        }
    }
}

/// The index of a polled record's topic among the subscribed ones. With one topic
/// subscribed (the usual case) every record is from it: no name compared per record.
pub(super) fn topic_index<'n>(topics: &[String], name: impl FnOnce() -> &'n str) -> Option<usize> {
    if topics.len() == 1 {
        Some(0)
    } else {
        let name = name();
        topics.iter().position(|t| t == name)
    }
}
