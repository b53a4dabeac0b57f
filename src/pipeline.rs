//! Bytes → decoder → shard, with every rejection tallied. The same path serves
//! `replay` and the Kafka service, so both count identically.

use crate::codec::{Decoder, Format};
use crate::config::Config;
use crate::engine::{Ingest, Shard};
use crate::event::{DeliveryEvent, RejectReason, Rejected, TimeBounds};
use crate::store::checkpoint::CheckpointError;
use crate::store::{
    segment_of, PartitionCommit, PartitionStore, RejectRow, SegmentRejects, StoreError,
    StoreWriter, StoredReject,
};
use crate::time::Micros;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// What became of one record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Counted,
    Duplicate,
    /// Not counted; the caller quarantines the original bytes with this reason.
    Rejected(RejectReason),
}

type RejectKey = (String, String, Micros, RejectReason);

/// Rejections not yet written to the store, attributed to (tenant, platform, bucket)
/// where the record was readable enough; `""`/`0` where it was not.
#[derive(Debug, Default)]
pub struct RejectTally {
    /// Since the last commit: what a transactional store adds (SQLite, replay).
    pending: HashMap<RejectKey, u64>,
    /// By offset segment, each counted from its first offset (the open one restored with
    /// the checkpoint), once offsets are tracked ([`RejectTally::at_offset`]): what a store
    /// without transactions writes (Kafka; see [`crate::store::SEGMENT_BITS`]). A sealed
    /// segment leaves at the commit that writes it, the open one stays.
    segments: BTreeMap<i64, HashMap<RejectKey, u64>>,
    /// Segment of the record being applied; `None` while offsets are not tracked.
    segment: Option<i64>,
    /// Since start, by reason (for summaries and self-metrics).
    pub totals: BTreeMap<RejectReason, u64>,
}

fn rows(map: &HashMap<RejectKey, u64>) -> impl Iterator<Item = RejectRow<'_>> {
    map.iter()
        .map(|((tenant, platform, bucket, reason), n)| RejectRow {
            tenant,
            platform,
            bucket: *bucket,
            reason: *reason,
            count: *n,
        })
}

impl RejectTally {
    pub fn add(&mut self, r: &Rejected, bucket: Option<Micros>) {
        let key = (
            r.tenant.clone().unwrap_or_default(),
            r.platform.clone().unwrap_or_default(),
            bucket.unwrap_or(0),
            r.reason,
        );
        if let Some(seg) = self.segment {
            *self
                .segments
                .entry(seg)
                .or_default()
                .entry(key.clone())
                .or_default() += 1;
        }
        *self.pending.entry(key).or_default() += 1;
        *self.totals.entry(r.reason).or_default() += 1;
    }

    /// The offset of the record about to be applied (the live path; a replay has none).
    #[inline]
    pub fn at_offset(&mut self, offset: i64) {
        self.segment = Some(segment_of(offset));
    }

    pub fn total(&self) -> u64 {
        self.totals.values().sum()
    }

    /// Writes the pending counts inside the caller's transaction. They stay pending until
    /// [`RejectTally::written`]: a transaction that fails must not lose them.
    pub fn write(&self, w: &StoreWriter<'_>, source: &str) -> Result<(), StoreError> {
        for ((tenant, platform, bucket, reason), n) in &self.pending {
            w.add_rejects(source, tenant, platform, *bucket, *reason, *n)?;
        }
        Ok(())
    }

    /// The pending counts as rows for a [`PartitionStore`].
    pub fn pending_rows(&self) -> Vec<RejectRow<'_>> {
        rows(&self.pending).collect()
    }

    /// Segments wholly below `next_offset`, with their rows.
    pub fn sealed_rows(&self, next_offset: i64) -> Vec<(i64, Vec<RejectRow<'_>>)> {
        self.segments
            .range(..segment_of(next_offset))
            .map(|(seg, m)| (*seg, rows(m).collect()))
            .collect()
    }

    /// The rows of the segment `next_offset` falls in.
    pub fn open_rows(&self, next_offset: i64) -> Vec<RejectRow<'_>> {
        self.segments
            .get(&segment_of(next_offset))
            .map(|m| rows(m).collect())
            .unwrap_or_default()
    }

    /// Continues the open segment's counts from a checkpoint.
    pub fn restore_open(&mut self, next_offset: i64, open: &[StoredReject]) {
        let seg = self.segments.entry(segment_of(next_offset)).or_default();
        for r in open {
            *seg.entry((r.tenant.clone(), r.platform.clone(), r.bucket, r.reason))
                .or_default() += r.count;
        }
    }

    /// Forgets what the commit up to `next_offset` wrote (the open segment stays: each
    /// checkpoint carries all of it).
    pub fn written(&mut self, next_offset: i64) {
        self.pending.clear();
        let open = segment_of(next_offset);
        self.segments.retain(|seg, _| *seg >= open);
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ResumeError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("checkpoint of {source_id}: {error}")]
    Checkpoint {
        source_id: String,
        error: CheckpointError,
    },
}

pub struct Pipeline {
    pub decoder: Decoder,
    pub shard: Shard,
    pub rejects: RejectTally,
    pub records: u64,
    /// Closed buckets not yet committed to the store (kept across a failed commit).
    unwritten: Vec<crate::engine::ClosedBucket>,
    /// Offset of the checkpoint this pipeline restored or last wrote (the commit fence).
    checkpoint_offset: Option<i64>,
}

impl Pipeline {
    pub fn new(config: Arc<Config>, format: Format, bounds: TimeBounds) -> Self {
        Self {
            decoder: Decoder::new(format, bounds, config.limits.max_record_bytes),
            shard: Shard::new(config),
            rejects: RejectTally::default(),
            records: 0,
            unwritten: Vec::new(),
            checkpoint_offset: None,
        }
    }

    /// Default bounds from config: nothing before 2000, nothing beyond the future skew.
    pub fn bounds(config: &Config) -> TimeBounds {
        TimeBounds {
            min: TimeBounds::MIN_PLAUSIBLE,
            max_future_skew: Some(config.validation.max_future_skew.0),
        }
    }

    /// A pipeline for `source` resumed from its checkpoint in the store, with the offset
    /// to continue from (`None`: no checkpoint, start from the source's beginning).
    pub fn resume(
        config: Arc<Config>,
        format: Format,
        bounds: TimeBounds,
        store: &mut dyn PartitionStore,
        source: &str,
    ) -> Result<(Self, Option<i64>), ResumeError> {
        let mut p = Self::new(config.clone(), format, bounds);
        let Some(cp) = store.checkpoint(source)? else {
            return Ok((p, None));
        };
        let (shard, next) = crate::store::checkpoint::decode_with_rows(
            config, &cp.state, &cp.dedup,
        )
        .map_err(|error| ResumeError::Checkpoint {
            source_id: source.to_string(),
            error,
        })?;
        p.shard = shard;
        p.checkpoint_offset = Some(next);
        p.rejects.restore_open(next, &cp.open_rejects);
        Ok((p, Some(next)))
    }

    /// Writes the buckets closed since the last commit, the pending rejections and the
    /// checkpoint (`next_offset` = first record not applied) in one transaction: after a
    /// crash, either all of it is there or none, and `resume` continues from the same state.
    /// Returns the buckets written (for telemetry). On error nothing is lost: the buckets
    /// and rejections stay pending for the next attempt.
    pub fn commit(
        &mut self,
        store: &mut dyn PartitionStore,
        source: &str,
        next_offset: i64,
    ) -> Result<Vec<crate::engine::ClosedBucket>, StoreError> {
        self.unwritten.extend(self.shard.take_closed());
        let (state, dedup) = if store.keeps_dedup() {
            let (state, rows) = crate::store::checkpoint::encode_apart(&self.shard, next_offset);
            (state, Some(rows))
        } else {
            (
                crate::store::checkpoint::encode_inline(&self.shard, next_offset),
                None,
            )
        };
        {
            let rejects = self.rejects.pending_rows();
            let sealed_rows = self.rejects.sealed_rows(next_offset);
            let sealed: Vec<SegmentRejects<'_>> = sealed_rows
                .iter()
                .map(|(segment, rows)| SegmentRejects {
                    segment: *segment,
                    rows,
                })
                .collect();
            store.commit(&PartitionCommit {
                source,
                expected: self.checkpoint_offset,
                next_offset,
                state: &state,
                buckets: &self.unwritten,
                rejects: &rejects,
                sealed: &sealed,
                open: &self.rejects.open_rows(next_offset),
                dedup: dedup.as_ref(),
            })?;
        }
        if dedup.is_some() {
            self.shard.dedup_written();
        }
        self.rejects.written(next_offset);
        self.checkpoint_offset = Some(next_offset);
        Ok(std::mem::take(&mut self.unwritten))
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

    pub fn ingest(&mut self, ev: &DeliveryEvent) -> Verdict {
        Self::ingest_into(&mut self.shard, &mut self.rejects, ev)
    }

    fn ingest_into(shard: &mut Shard, rejects: &mut RejectTally, ev: &DeliveryEvent) -> Verdict {
        match shard.ingest(ev) {
            Ingest::Counted => Verdict::Counted,
            Ingest::Duplicate => Verdict::Duplicate,
            Ingest::Late => {
                let r = crate::codec::attributed(RejectReason::Late, ev);
                rejects.add(&r, Some(shard.bucket_start(ev.completed_at)));
                Verdict::Rejected(RejectReason::Late)
            }
        }
    }
}
