//! The one commit path, live and replay alike: what the shard closed and staged since
//! the last commit becomes a [`CommitOutput`] — closed buckets, their key sets, and the
//! corrections resolved against the closed buckets' stored keys — and
//! [`crate::store::write_output`] writes it in the caller's transaction. The live path
//! wraps it in a [`PartitionCommit`] with the checkpoint; a replay writes it into its one
//! transaction as it goes.
//!
//! Nothing is lost when a write fails: closed buckets, key sets and staged records stay
//! pending until [`Pipeline`]'s output is written, and the tally the checkpoint carries is
//! taken back.

use super::Pipeline;
use crate::codec::Format;
use crate::config::Config;
use crate::engine::correction::{resolve, Resolution};
use crate::engine::dedup::DedupKey;
use crate::engine::ClosedBucket;
use crate::event::TimeBounds;
use crate::store::checkpoint::{CheckpointError, STORED_KEY_BYTES};
use crate::store::{
    ClosedKeys, CommitOutput, PartitionCommit, PartitionStore, StoreError, StoreTx,
};
use crate::time::Micros;
use std::sync::Arc;

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

/// What a commit made durable, for telemetry and summaries.
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

/// Staged records a replay resolves at once (bounded memory, few store reads).
const REPLAY_STAGED: usize = 1 << 16;

/// Keys a replay gathers before it writes them: a full block ([`crate::store::key_blocks`]).
/// A replay writes its output after each record that closes buckets, a bucket or two at
/// a time on sparse traffic; written as they come, its keys would be a row per bucket.
const REPLAY_KEYS: usize = crate::store::key_blocks::BLOCK_BYTES / STORED_KEY_BYTES;

impl Pipeline {
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
        let width = self.shard.bucket_width();
        let resolution = self.take_output(true, |o| store.closed_keys(source, o * width))?;
        // The tally the checkpoint carries includes this commit's corrections; taken
        // back if the commit fails (the staged records are resolved again).
        let tally = self.shard.tally;
        self.count(&resolution);
        let (state, dedup) = crate::store::checkpoint::encode_apart(&self.shard, next_offset);
        // Keys of buckets already past the horizon are never read again (a record for
        // them is no correction), so they are not written.
        let floor = self.shard.correction_floor();
        let closed_keys = self.closed_keys(&resolution, floor);
        let rejects = self.rejects.pending_rows();
        let result = store.commit(&PartitionCommit {
            source,
            expected: self.checkpoint_offset,
            next_offset,
            state: &state,
            output: CommitOutput {
                buckets: &self.unwritten,
                corrections: &resolution.corrections,
                closed_keys: &closed_keys,
                grain: &self.row_grain,
            },
            keys_before: floor.saturating_mul(width),
            unread: self.unread,
            rejects: &rejects,
            dedup: &dedup,
            publish: self.publish_windows,
        });
        if let Err(e) = result {
            self.shard.tally = tally;
            return Err(e);
        }
        self.shard.dedup_written();
        self.rejects.written();
        self.checkpoint_offset = Some(next_offset);
        self.unread = None;
        Ok(self.output_written(resolution))
    }

    /// A replay's output so far, into its transaction, through the same path as a live
    /// commit: closed buckets, their key sets and (with `resolve_all`, or once many are
    /// staged) corrections, resolved against the keys the transaction holds and those
    /// not yet written. Key sets are written a block's worth at a time ([`REPLAY_KEYS`]),
    /// and all of them with `resolve_all`. A replay's key sets are kept whatever their
    /// age: they are what later replays are deduplicated against (`crate::replay`).
    pub fn write_replay_output(
        &mut self,
        w: &dyn StoreTx,
        source: &str,
        resolve_all: bool,
    ) -> Result<Committed, StoreError> {
        let width = self.shard.bucket_width();
        let resolve = resolve_all || self.shard.staged_len() >= REPLAY_STAGED;
        let resolution = self.take_output(resolve, |o| {
            crate::store::checkpoint::unpack_keys(&w.closed_keys(source, o * width)?, source)
        })?;
        // The corrections' keys wait with the closed sets; the resolution keeps its own
        // copy for the cache.
        for (o, keys) in &resolution.keys {
            self.unwritten_key_count += keys.len();
            self.unwritten_keys.push((*o, keys.clone()));
        }
        let keys_due = resolve_all || self.unwritten_key_count >= REPLAY_KEYS;
        let keys_to_write = keys_due && !self.unwritten_keys.is_empty();
        if self.unwritten.is_empty() && resolution.is_empty() && !keys_to_write {
            return Ok(Committed::default());
        }
        let closed_keys = if keys_due {
            self.closed_keys(&Resolution::default(), i64::MIN)
        } else {
            Vec::new()
        };
        crate::store::write_output(
            w,
            source,
            &CommitOutput {
                buckets: &self.unwritten,
                corrections: &resolution.corrections,
                closed_keys: &closed_keys,
                grain: &self.row_grain,
            },
        )?;
        self.count(&resolution);
        let (kept, kept_count) = if keys_due {
            (Vec::new(), 0)
        } else {
            (
                std::mem::take(&mut self.unwritten_keys),
                self.unwritten_key_count,
            )
        };
        let out = self.output_written(resolution);
        (self.unwritten_keys, self.unwritten_key_count) = (kept, kept_count);
        Ok(out)
    }

    /// Moves what the shard closed (and, if `with_staged`, staged) into the pending output,
    /// and resolves the staged records against the closed buckets' keys: the cache's,
    /// else `stored(ordinal)` plus those of buckets closed since the last commit.
    fn take_output(
        &mut self,
        with_staged: bool,
        mut stored: impl FnMut(i64) -> Result<Vec<DedupKey>, StoreError>,
    ) -> Result<Resolution, StoreError> {
        self.unwritten.extend(self.shard.take_closed());
        let closed_keys = self.shard.take_closed_keys();
        self.unwritten_key_count += closed_keys.iter().map(|(_, k)| k.len()).sum::<usize>();
        self.unwritten_keys.extend(closed_keys);
        if with_staged {
            self.staged.extend(self.shard.take_staged());
        }
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

    /// The key rows of the pending output from bucket ordinal `floor` on: each closed
    /// bucket's set, then the keys each correction counted.
    fn closed_keys(&self, resolution: &Resolution, floor: i64) -> Vec<ClosedKeys> {
        let width = self.shard.bucket_width();
        let pack = crate::store::checkpoint::pack;
        self.unwritten_keys
            .iter()
            .chain(&resolution.keys)
            .filter(|(o, _)| *o >= floor)
            .map(|(o, keys)| ClosedKeys {
                start: o * width,
                keys: pack(keys),
            })
            .collect()
    }

    /// Adds what resolving counted to the shard's tally (the one count of the records).
    fn count(&mut self, resolution: &Resolution) {
        self.shard.tally.counted += resolution.counted;
        self.shard.tally.corrected += resolution.counted;
        self.shard.tally.duplicates += resolution.duplicates;
    }

    /// The pending output is durable: hand it over and start the next.
    fn output_written(&mut self, resolution: Resolution) -> Committed {
        self.key_cache.absorb(&resolution.keys);
        self.key_cache.evict_before(self.shard.correction_floor());
        self.unwritten_keys.clear();
        self.unwritten_key_count = 0;
        self.staged.clear();
        Committed {
            buckets: std::mem::take(&mut self.unwritten),
            corrections: resolution
                .corrections
                .into_iter()
                .map(|c| c.bucket)
                .collect(),
            correction_ages_us: resolution.ages_us,
            correction_duplicates: resolution.duplicates,
        }
    }
}
