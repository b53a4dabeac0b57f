//! Bytes → decoder → shard, with every rejection tallied. The same path serves
//! `replay` and the Kafka service, so both count identically.
//!
//! - this file: the [`Pipeline`] of one input (a partition, or a replay's files) and
//!   what became of each record ([`Verdict`]);
//! - [`commit`]: the one commit path, live and replay: resume from a checkpoint, and
//!   what a commit makes durable;
//! - [`rejects`]: rejections not yet written.

mod commit;
mod rejects;

pub use commit::{Committed, ResumeError};
pub use rejects::RejectTally;

use crate::codec::{Decoder, Format};
use crate::config::Config;
use crate::engine::correction::{KeyCache, Staged};
use crate::engine::dedup::{dedup_key, DedupKey};
use crate::engine::{ClosedBucket, Ingest, Shard};
use crate::event::{DeliveryEvent, RejectReason, TimeBounds};
use crate::store::Unread;
use crate::time::Micros;
use std::sync::Arc;

/// What became of one record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Counted,
    Duplicate,
    /// For a closed bucket within the correction horizon: counted or found a duplicate
    /// at the next commit (see [`crate::engine::correction`]).
    Staged,
    /// Not counted; the caller quarantines the original bytes with this reason.
    Rejected(RejectReason),
}

pub struct Pipeline {
    pub decoder: Decoder,
    pub shard: Shard,
    pub rejects: RejectTally,
    pub records: u64,
    /// Closed buckets not yet committed to the store (kept across a failed commit).
    unwritten: Vec<ClosedBucket>,
    /// Key sets of closed buckets not yet committed (kept across a failed commit; a
    /// replay gathers a block's worth before writing them).
    unwritten_keys: Vec<(i64, Vec<DedupKey>)>,
    /// Keys in `unwritten_keys`.
    unwritten_key_count: usize,
    /// Late records staged for correction, not yet committed (kept across a failed commit).
    staged: Vec<Staged>,
    /// Closed buckets' key sets read from the store.
    key_cache: KeyCache,
    /// Records the log lost before they were read, to write with the next commit.
    unread: Option<Unread>,
    /// Offset of the checkpoint this pipeline restored or last wrote (the commit fence).
    checkpoint_offset: Option<i64>,
    /// Commits queue their windows for `kafka.windows_topic`.
    publish_windows: bool,
    /// How this source's closed buckets merge into rows (`store::rows`).
    row_grain: crate::store::rows::RowGrain,
}

impl Pipeline {
    pub fn new(config: Arc<Config>, format: Format, bounds: TimeBounds) -> Self {
        let publish_windows = config
            .kafka
            .as_ref()
            .is_some_and(|k| !k.windows_topic.is_empty());
        let row_grain = crate::store::rows::RowGrain::from_config(&config);
        Self {
            decoder: Decoder::new(format, bounds, config.limits.max_record_bytes),
            key_cache: KeyCache::new(config.limits.correction_cache_keys),
            shard: Shard::new(config),
            rejects: RejectTally::default(),
            records: 0,
            unwritten: Vec::new(),
            unwritten_keys: Vec::new(),
            unwritten_key_count: 0,
            staged: Vec::new(),
            unread: None,
            checkpoint_offset: None,
            publish_windows,
            row_grain,
        }
    }

    /// Closed buckets not yet in the store: what a commit would write.
    pub fn uncommitted_buckets(&self) -> usize {
        self.unwritten.len() + self.shard.closed_len()
    }

    /// Default bounds from config: nothing before 2000, nothing beyond the future skew.
    pub fn bounds(config: &Config) -> TimeBounds {
        TimeBounds {
            min: TimeBounds::MIN_PLAUSIBLE,
            max_future_skew: Some(config.validation.max_future_skew.0),
        }
    }

    /// Offsets `from..to` of this source were deleted from the log before they were
    /// read: the next commit records it (with the time it was noticed) for the scorecard.
    pub fn note_unread(&mut self, from: i64, to: i64) {
        self.unread = Some(Unread {
            from,
            to,
            noticed_ms: crate::time::now_micros() / 1000,
        });
    }

    /// Closed buckets' keys held in the correction cache.
    pub fn key_cache_len(&self) -> usize {
        self.key_cache.len()
    }

    /// Switches the wire format (a replay may mix JSON and protobuf files) keeping state.
    pub fn set_format(&mut self, format: Format) {
        if self.decoder.format() != format {
            self.decoder = self.decoder.with_format(format);
        }
    }

    pub fn process(&mut self, bytes: &[u8], now: Micros) -> Verdict {
        self.records += 1;
        match self.decoder.decode(bytes, now) {
            Ok(ev) => Self::ingest_into(&mut self.shard, &mut self.rejects, ev),
            Err(r) => {
                let bucket = r.completed_at.map(|t| self.shard.bucket_start(t));
                self.rejects.add(&r, bucket);
                Verdict::Rejected(r.reason)
            }
        }
    }

    /// [`process`](Self::process), but a record `counted_elsewhere` (its bucket start and
    /// dedup key) says is counted already, or a rejected one `rejected_elsewhere` (its
    /// bytes) says is rejected already, is neither counted nor rejected again: `None`.
    pub fn process_unless<E>(
        &mut self,
        bytes: &[u8],
        now: Micros,
        counted_elsewhere: impl FnOnce(Micros, DedupKey) -> Result<bool, E>,
        rejected_elsewhere: impl FnOnce(&[u8]) -> bool,
    ) -> Result<Option<Verdict>, E> {
        self.records += 1;
        match self.decoder.decode(bytes, now) {
            Ok(ev) => {
                let start = self.shard.bucket_start(ev.completed_at);
                if counted_elsewhere(start, dedup_key(&ev.event_id, ev.attempt))? {
                    return Ok(None);
                }
                Ok(Some(Self::ingest_into(
                    &mut self.shard,
                    &mut self.rejects,
                    ev,
                )))
            }
            Err(_) if rejected_elsewhere(bytes) => Ok(None),
            Err(r) => {
                let bucket = r.completed_at.map(|t| self.shard.bucket_start(t));
                self.rejects.add(&r, bucket);
                Ok(Some(Verdict::Rejected(r.reason)))
            }
        }
    }

    pub fn ingest(&mut self, ev: &DeliveryEvent) -> Verdict {
        Self::ingest_into(&mut self.shard, &mut self.rejects, ev)
    }

    fn ingest_into(shard: &mut Shard, rejects: &mut RejectTally, ev: &DeliveryEvent) -> Verdict {
        match shard.ingest(ev) {
            Ingest::Counted => Verdict::Counted,
            Ingest::Duplicate => Verdict::Duplicate,
            Ingest::Staged => Verdict::Staged,
            Ingest::TooLate => {
                let r = crate::codec::attributed(RejectReason::TooLate, ev);
                rejects.add(&r, Some(shard.bucket_start(ev.completed_at)));
                Verdict::Rejected(RejectReason::TooLate)
            }
        }
    }
}
