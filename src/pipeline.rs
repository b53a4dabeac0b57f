//! Bytes → decoder → shard, with every rejection tallied. The same path serves
//! `replay` and the Kafka service, so both count identically.

use crate::codec::{Decoder, Format};
use crate::config::Config;
use crate::engine::correction::{resolve, KeyCache, Resolution, Staged};
use crate::engine::dedup::{dedup_key, DedupKey};
use crate::engine::{ClosedBucket, Ingest, Shard};
use crate::event::{DeliveryEvent, RejectReason, Rejected, TimeBounds};
use crate::store::checkpoint::CheckpointError;
use crate::store::{
    ClosedKeys, PartitionCommit, PartitionStore, RejectRow, StoreError, StoreTx, Unread,
};
use crate::time::Micros;
use std::collections::{BTreeMap, HashMap};
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

type RejectKey = (String, String, Micros, RejectReason);

/// Rejections not yet written to the store, attributed to (tenant, platform, bucket)
/// where the record was readable enough; `""`/`0` where it was not.
#[derive(Debug, Default)]
pub struct RejectTally {
    /// Since the last commit: what the next commit adds.
    pending: HashMap<RejectKey, u64>,
    /// Since start, by reason (for summaries and self-metrics).
    pub totals: BTreeMap<RejectReason, u64>,
}

impl RejectTally {
    pub fn add(&mut self, r: &Rejected, bucket: Option<Micros>) {
        let key = (
            r.tenant.clone().unwrap_or_default(),
            r.platform.clone().unwrap_or_default(),
            bucket.unwrap_or(0),
            r.reason,
        );
        *self.pending.entry(key).or_default() += 1;
        *self.totals.entry(r.reason).or_default() += 1;
    }

    pub fn total(&self) -> u64 {
        self.totals.values().sum()
    }

    /// Writes the pending counts inside the caller's transaction. They stay pending until
    /// [`RejectTally::written`]: a transaction that fails must not lose them.
    pub fn write(&self, w: &dyn StoreTx, source: &str) -> Result<(), StoreError> {
        for row in self.pending_rows() {
            w.add_rejects(source, &row)?;
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

    /// Forgets what a commit wrote.
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

/// What a commit made durable, for telemetry.
#[derive(Debug, Default)]
pub struct Committed {
    /// Buckets closed since the previous commit.
    pub buckets: Vec<ClosedBucket>,
    /// Corrections of closed buckets: partial buckets to add to what was published.
    pub corrections: Vec<ClosedBucket>,
    /// Ages (µs behind the newest event) of the records the corrections counted.
    pub correction_ages_us: Vec<Micros>,
    /// Late records found to be duplicates.
    pub correction_duplicates: u64,
}

pub struct Pipeline {
    pub decoder: Decoder,
    pub shard: Shard,
    pub rejects: RejectTally,
    pub records: u64,
    /// Closed buckets not yet committed to the store (kept across a failed commit).
    unwritten: Vec<ClosedBucket>,
    /// Key sets of closed buckets not yet committed (kept across a failed commit).
    unwritten_keys: Vec<(i64, Vec<DedupKey>)>,
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
}

impl Pipeline {
    pub fn new(config: Arc<Config>, format: Format, bounds: TimeBounds) -> Self {
        let publish_windows = config
            .kafka
            .as_ref()
            .is_some_and(|k| !k.windows_topic.is_empty());
        Self {
            decoder: Decoder::new(format, bounds, config.limits.max_record_bytes),
            key_cache: KeyCache::new(config.limits.correction_cache_keys),
            shard: Shard::new(config),
            rejects: RejectTally::default(),
            records: 0,
            unwritten: Vec::new(),
            unwritten_keys: Vec::new(),
            staged: Vec::new(),
            unread: None,
            checkpoint_offset: None,
            publish_windows,
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
        Ok((p, Some(next)))
    }

    /// Writes the buckets closed since the last commit, the corrections resolved from the
    /// records staged since, the pending rejections and the checkpoint (`next_offset` =
    /// first record not applied) in one transaction: after a crash, either all of it is
    /// there or none, and `resume` continues from the same state. On error nothing is
    /// lost: buckets, staged records and rejections stay pending for the next attempt.
    pub fn commit(
        &mut self,
        store: &mut dyn PartitionStore,
        source: &str,
        next_offset: i64,
    ) -> Result<Committed, StoreError> {
        self.unwritten.extend(self.shard.take_closed());
        self.unwritten_keys.extend(self.shard.take_closed_keys());
        self.staged.extend(self.shard.take_staged());
        let width = self.shard.bucket_width();
        let resolution = self.resolve(|o| store.closed_keys(source, o * width))?;
        // The tally the checkpoint carries includes this commit's corrections; taken
        // back if the commit fails (the staged records are resolved again).
        let tally = self.shard.tally;
        self.shard.tally.counted += resolution.counted;
        self.shard.tally.corrected += resolution.counted;
        self.shard.tally.duplicates += resolution.duplicates;
        let result = self.write(store, source, next_offset, &resolution);
        if let Err(e) = result {
            self.shard.tally = tally;
            return Err(e);
        }
        self.key_cache.absorb(&resolution.keys);
        self.key_cache.evict_before(self.shard.correction_floor());
        self.unwritten_keys.clear();
        self.staged.clear();
        Ok(Committed {
            buckets: std::mem::take(&mut self.unwritten),
            corrections: resolution
                .corrections
                .into_iter()
                .map(|c| c.bucket)
                .collect(),
            correction_ages_us: resolution.ages_us,
            correction_duplicates: resolution.duplicates,
        })
    }

    /// Resolves the staged records against the closed buckets' keys: the cache's, else
    /// `stored(ordinal)` plus those of buckets closed since the last commit.
    fn resolve(
        &mut self,
        mut stored: impl FnMut(i64) -> Result<Vec<DedupKey>, StoreError>,
    ) -> Result<Resolution, StoreError> {
        if self.staged.is_empty() {
            return Ok(Resolution::default());
        }
        let unwritten = &self.unwritten_keys;
        resolve(
            &self.staged,
            self.shard.keys(),
            self.shard.bucket_width(),
            &mut self.key_cache,
            |ordinal| {
                let mut keys = stored(ordinal)?;
                for (o, ks) in unwritten {
                    if *o == ordinal {
                        keys.extend_from_slice(ks);
                    }
                }
                Ok(keys)
            },
        )
    }

    fn write(
        &mut self,
        store: &mut dyn PartitionStore,
        source: &str,
        next_offset: i64,
        resolution: &Resolution,
    ) -> Result<(), StoreError> {
        let (state, dedup) = crate::store::checkpoint::encode_apart(&self.shard, next_offset);
        let width = self.shard.bucket_width();
        let mut closed_keys: Vec<ClosedKeys> = self
            .unwritten_keys
            .iter()
            .map(|(o, keys)| ClosedKeys {
                start: o * width,
                keys: crate::store::checkpoint::pack(keys),
            })
            .collect();
        closed_keys.extend(resolution.keys.iter().map(|(o, keys)| ClosedKeys {
            start: o * width,
            keys: crate::store::checkpoint::pack(keys),
        }));
        let rejects = self.rejects.pending_rows();
        store.commit(&PartitionCommit {
            source,
            expected: self.checkpoint_offset,
            next_offset,
            state: &state,
            buckets: &self.unwritten,
            corrections: &resolution.corrections,
            closed_keys: &closed_keys,
            keys_before: self.shard.correction_floor().saturating_mul(width),
            unread: self.unread,
            rejects: &rejects,
            dedup: &dedup,
            publish: self.publish_windows,
        })?;
        self.shard.dedup_written();
        self.rejects.written();
        self.checkpoint_offset = Some(next_offset);
        self.unread = None;
        Ok(())
    }

    /// A replay's output so far, into its transaction: closed buckets, closed buckets'
    /// key sets and (with `resolve`, or once many are staged) corrections, resolved
    /// against the keys the transaction holds. Returns the buckets and corrections
    /// written. A replay's key sets are kept whatever their age: they are what later
    /// replays are deduplicated against (`crate::replay`).
    pub fn write_replay_output(
        &mut self,
        w: &dyn StoreTx,
        source: &str,
        resolve_all: bool,
    ) -> Result<(Vec<ClosedBucket>, Vec<ClosedBucket>), StoreError> {
        /// Staged records a replay resolves at once (bounded memory, few store reads).
        const REPLAY_STAGED: usize = 1 << 16;
        let buckets: Vec<ClosedBucket> = self.shard.take_closed().collect();
        for b in &buckets {
            w.put_bucket(source, b)?;
        }
        let width = self.shard.bucket_width();
        let keys = self.shard.take_closed_keys();
        if !keys.is_empty() {
            let rows: Vec<ClosedKeys> = keys
                .iter()
                .map(|(o, k)| ClosedKeys {
                    start: o * width,
                    keys: crate::store::checkpoint::pack(k),
                })
                .collect();
            w.add_closed_keys(source, &rows)?;
        }
        if self.shard.staged_len() == 0
            || !(resolve_all || self.shard.staged_len() >= REPLAY_STAGED)
        {
            return Ok((buckets, Vec::new()));
        }
        self.staged = self.shard.take_staged();
        let resolution = self.resolve(|o| {
            crate::store::checkpoint::unpack_keys(&w.closed_keys(source, o * width)?, source)
        })?;
        self.staged.clear();
        for c in &resolution.corrections {
            w.add_correction(source, &c.bucket)?;
        }
        let rows: Vec<ClosedKeys> = resolution
            .keys
            .iter()
            .map(|(o, k)| ClosedKeys {
                start: o * width,
                keys: crate::store::checkpoint::pack(k),
            })
            .collect();
        w.add_closed_keys(source, &rows)?;
        self.key_cache.absorb(&resolution.keys);
        self.shard.tally.counted += resolution.counted;
        self.shard.tally.corrected += resolution.counted;
        self.shard.tally.duplicates += resolution.duplicates;
        Ok((
            buckets,
            resolution
                .corrections
                .into_iter()
                .map(|c| c.bucket)
                .collect(),
        ))
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
