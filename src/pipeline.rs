//! Bytes → decoder → shard, with every rejection tallied. The same path serves
//! `replay` and the Kafka service, so both count identically.

use crate::codec::{Decoder, Format};
use crate::config::Config;
use crate::engine::checkpoint::CheckpointError;
use crate::engine::{Ingest, Shard};
use crate::event::{DeliveryEvent, RejectReason, Rejected, TimeBounds};
use crate::store::{PartitionCommit, PartitionStore, RejectRow, StoreError, StoreWriter};
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

/// Rejections not yet written to the store, attributed to (tenant, platform, bucket)
/// where the record was readable enough; `""`/`0` where it was not.
#[derive(Debug, Default)]
pub struct RejectTally {
    pending: HashMap<(String, String, Micros, RejectReason), u64>,
    /// Since start, by reason (for summaries and self-metrics).
    pub totals: BTreeMap<RejectReason, u64>,
}

impl RejectTally {
    pub fn add(&mut self, r: &Rejected, bucket: Option<Micros>) {
        *self
            .pending
            .entry((
                r.tenant.clone().unwrap_or_default(),
                r.platform.clone().unwrap_or_default(),
                bucket.unwrap_or(0),
                r.reason,
            ))
            .or_default() += 1;
        *self.totals.entry(r.reason).or_default() += 1;
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
        self.pending
            .iter()
            .map(|((tenant, platform, bucket, reason), n)| RejectRow {
                tenant,
                platform,
                bucket: *bucket,
                reason: *reason,
                count: *n,
            })
            .collect()
    }

    /// Forgets the pending counts once the transaction that wrote them committed.
    pub fn written(&mut self) {
        self.pending.clear();
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
    /// Offset of the checkpoint this pipeline last restored or wrote.
    checkpoint_offset: i64,
}

impl Pipeline {
    pub fn new(config: Arc<Config>, format: Format, bounds: TimeBounds) -> Self {
        Self {
            decoder: Decoder::new(format, bounds, config.limits.max_record_bytes),
            shard: Shard::new(config),
            rejects: RejectTally::default(),
            records: 0,
            unwritten: Vec::new(),
            checkpoint_offset: 0,
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
        let (shard, next) =
            Shard::restore(config, &cp.state).map_err(|error| ResumeError::Checkpoint {
                source_id: source.to_string(),
                error,
            })?;
        p.shard = shard;
        p.checkpoint_offset = next;
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
        let state = self.shard.checkpoint(next_offset);
        let rejects = self.rejects.pending_rows();
        store.commit(&PartitionCommit {
            source,
            from_offset: self.checkpoint_offset,
            next_offset,
            state: &state,
            buckets: &self.unwritten,
            rejects: &rejects,
        })?;
        drop(rejects);
        self.rejects.written();
        self.checkpoint_offset = next_offset;
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
