//! A shard's state as plain values: what a checkpoint holds, and how a shard is rebuilt
//! from it. The engine knows no wire format; the store edge (`store::checkpoint`) encodes
//! this state and decodes it back.
//!
//! Dedup keys leave a shard two ways. A store without transactions (Kafka) keeps every key
//! of the lateness horizon inside each checkpoint ([`Shard::dedup_entries_by_ordinal`]);
//! a transactional store (SQLite) keeps them in rows of its own, and each commit writes
//! only the keys added since the previous one ([`Shard::dedup_delta`], then
//! [`Shard::dedup_written`] once durable).

use super::bucket::OpenBuckets;
use super::dedup::{Dedup, DedupDelta, DedupKey};
use super::keys::{KeyId, KeyInfo, KeyTable};
use super::shard::{Shard, ShardTally};
use super::stats::Stats;
use crate::config::Config;
use crate::time::Micros;
use std::sync::Arc;

/// One open bucket as held in a checkpoint.
#[derive(Debug, Clone)]
pub struct OpenBucketState {
    pub key: KeyId,
    pub start: Micros,
    pub stats: Stats,
}

/// A shard's dedup keys as restored: (bucket start, keys).
#[derive(Debug, Clone)]
pub enum DedupState {
    /// Every key, from the checkpoint itself.
    Inline(Vec<(Micros, Vec<DedupKey>)>),
    /// The rows a store keeps beside the checkpoint; new keys are journaled from here on,
    /// since the store already has these.
    InStore(Vec<(Micros, Vec<DedupKey>)>),
}

/// Everything a shard needs to resume exactly where it stopped.
#[derive(Debug, Clone)]
pub struct ShardState {
    pub keys: Vec<Arc<KeyInfo>>,
    /// Records aggregated into the overflow key so far.
    pub overflowed: u64,
    pub open: Vec<OpenBucketState>,
    pub dedup: DedupState,
    pub max_event_time: Option<Micros>,
    pub closed_before: Micros,
    pub tally: ShardTally,
}

/// A state that does not fit this shard's configuration or is inconsistent.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("checkpoint was taken with engine.bucket = {found_us} µs, config says {config_us} µs: restore with the old bucket width or start a new store")]
    BucketWidth { found_us: i64, config_us: i64 },
    #[error("open bucket refers to key {0}, which the checkpoint does not define")]
    UnknownKey(KeyId),
}

impl Shard {
    pub fn bucket_width(&self) -> Micros {
        self.bucket_us
    }

    /// Open buckets: (start, key, stats), borrowed.
    pub fn open_iter(&self) -> impl Iterator<Item = (Micros, KeyId, &Stats)> {
        self.open.iter()
    }

    /// Every dedup key: (bucket ordinal, keys), in table order (the order carries no
    /// meaning, and sorting a horizon of keys per checkpoint would cost the apply thread).
    pub fn dedup_entries_by_ordinal(&self) -> Vec<(i64, Vec<DedupKey>)> {
        self.dedup.entries()
    }

    /// The dedup keys a store keeping them apart must write with the next checkpoint.
    pub fn dedup_delta(&self) -> DedupDelta<'_> {
        self.dedup.delta()
    }

    /// The keys of the latest [`Shard::dedup_delta`] are durable.
    pub fn dedup_written(&mut self) {
        self.dedup.delta_written();
    }

    /// Rebuilds a shard from its state under `config`.
    pub fn from_state(config: Arc<Config>, state: ShardState) -> Result<Shard, StateError> {
        let mut shard = Shard::new(config.clone());
        let width = shard.bucket_us;
        let aligned = |start: Micros| {
            if start.rem_euclid(width) == 0 {
                Ok(start.div_euclid(width))
            } else {
                Err(StateError::BucketWidth {
                    found_us: start,
                    config_us: width,
                })
            }
        };
        let mut open = OpenBuckets::new(width, shard.lateness_us);
        for b in state.open {
            if b.key as usize >= state.keys.len() {
                return Err(StateError::UnknownKey(b.key));
            }
            aligned(b.start)?;
            *open.stats(b.start, b.key, &state.keys[b.key as usize]) = b.stats;
        }
        shard.open = open;
        // The dedup horizon is the shard's close horizon (every close raises both).
        let horizon = state.closed_before.div_euclid(width);
        shard.dedup = match state.dedup {
            DedupState::Inline(entries) => {
                let mut rows = Vec::with_capacity(entries.len());
                for (start, keys) in entries {
                    rows.push((start.div_euclid(width), keys));
                }
                let mut d = Dedup::restore(rows);
                d.evict_before(horizon);
                d
            }
            DedupState::InStore(entries) => {
                let mut rows = Vec::with_capacity(entries.len());
                for (start, keys) in entries {
                    rows.push((aligned(start)?, keys));
                }
                Dedup::restore_journaled(horizon, rows)
            }
        };
        shard.keys = KeyTable::restore(config, state.keys, state.overflowed);
        shard.max_event_time = state.max_event_time;
        shard.closed_before = state.closed_before;
        shard.tally = state.tally;
        Ok(shard)
    }
}
