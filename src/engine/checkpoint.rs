//! Shard checkpoints: everything a shard needs to resume exactly where it stopped —
//! keys, open buckets, watermark, dedup keys, tallies — as a versioned protobuf blob.
//! The live service stores one per partition atomically with the buckets it closed, so
//! a crash replays from `next_offset` into exactly the same state (exactly-once effect
//! without Kafka transactions).
//!
//! Where the dedup keys go depends on the store. A transactional store (SQLite) keeps
//! them in rows of its own beside the checkpoint, and each commit writes only the keys
//! added since the previous one ([`Shard::checkpoint_apart`], format version 2). A store
//! without transactions (Kafka) cannot apply a delta atomically with the checkpoint, so
//! its checkpoint carries them all (version 1).

use super::dedup::{canonical, Dedup, DedupKey};
use super::keys::{KeyInfo, KeyTable};
use super::shard::{Shard, ShardTally};
use super::stats::{Counters, Latencies, Stats};
use crate::config::Config;
use crate::event::Direction;
use crate::proto;
use crate::time::Micros;
use prost::Message;
use std::sync::Arc;

/// Bump on any incompatible change of `ShardCheckpoint`'s meaning. Version 2: the dedup
/// keys are in the store's rows ([`DedupRows`]), not in the checkpoint.
pub const CHECKPOINT_VERSION: u32 = 2;

/// The format with every dedup key inline: still written for a store that keeps no rows
/// of keys (Kafka), so releases that read only version 1 still read those; still read.
pub const INLINE_CHECKPOINT_VERSION: u32 = 1;

/// Bytes per dedup key in a store's rows: the 96 significant bits, the high word then the
/// low word's low 32 bits, little-endian (a checkpoint's inline keys take 16).
pub const STORED_KEY_BYTES: usize = 12;

/// Dedup keys as a store keeps them beside a checkpoint: (bucket start, packed keys).
pub type StoredKeys = (Micros, Vec<u8>);

/// What a commit writes of the dedup keys to a store that keeps them apart: drop the rows
/// of buckets starting before `before` (closed since), drop every row first if `replace`
/// (the first commit of a shard that did not restore from these rows), then add
/// `buckets`. Written in the checkpoint's transaction, so the rows always equal the keys
/// of the checkpoint they stand beside.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DedupRows {
    pub replace: bool,
    pub before: Micros,
    pub buckets: Vec<StoredKeys>,
}

fn pack(keys: &[DedupKey]) -> Vec<u8> {
    let mut out = Vec::with_capacity(keys.len() * STORED_KEY_BYTES);
    for k in keys {
        out.extend_from_slice(&((*k >> 64) as u64).to_le_bytes());
        out.extend_from_slice(&(*k as u32).to_le_bytes());
    }
    out
}

fn unpack(bytes: &[u8]) -> Result<Vec<DedupKey>, CheckpointError> {
    if bytes.len() % STORED_KEY_BYTES != 0 {
        return Err(CheckpointError::Corrupt(format!(
            "stored dedup keys are {} bytes, not a multiple of {STORED_KEY_BYTES}",
            bytes.len()
        )));
    }
    Ok(bytes
        .chunks_exact(STORED_KEY_BYTES)
        .map(|c| {
            let mut hi = [0u8; 8];
            let mut lo = [0u8; 4];
            hi.copy_from_slice(&c[..8]);
            lo.copy_from_slice(&c[8..]);
            canonical(
                (u128::from(u64::from_le_bytes(hi)) << 64) | u128::from(u32::from_le_bytes(lo)),
            )
        })
        .collect())
}

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("checkpoint does not decode ({0}): the store was written by something else or is corrupt; move it aside to start the partition from its committed group offset")]
    Corrupt(String),
    #[error("checkpoint format version {found} is not supported by this slatrack (supports {INLINE_CHECKPOINT_VERSION} and {CHECKPOINT_VERSION}): run the release that wrote it, or roll forward with a matching one")]
    Version { found: u32 },
    #[error("checkpoint was taken with engine.bucket = {found_us} µs, config says {config_us} µs: restore with the old bucket width or start a new store")]
    BucketWidth { found_us: i64, config_us: i64 },
}

impl Shard {
    /// Serializes the shard's state, dedup keys included (version 1); `next_offset` is the
    /// first source offset not applied.
    pub fn checkpoint(&self, next_offset: i64) -> Vec<u8> {
        let dedup = self
            .dedup
            .entries()
            .into_iter()
            .map(|(ordinal, keys)| proto::DedupBucket {
                bucket_us: ordinal * self.bucket_us,
                keys: keys.iter().flat_map(|k| k.to_le_bytes()).collect(),
            })
            .collect();
        let mut cp = self.checkpoint_proto(next_offset, INLINE_CHECKPOINT_VERSION);
        cp.dedup = dedup;
        cp.encode_to_vec()
    }

    /// The shard's state without its dedup keys (version 2), and the rows of keys a store
    /// keeping them apart must write with it: the keys since the last
    /// [`Shard::dedup_written`], or all of them before the first.
    pub fn checkpoint_apart(&self, next_offset: i64) -> (Vec<u8>, DedupRows) {
        let mut cp = self.checkpoint_proto(next_offset, CHECKPOINT_VERSION);
        cp.dedup_in_store = true;
        let delta = self.dedup.delta();
        let rows = DedupRows {
            replace: delta.replace,
            before: delta.horizon.saturating_mul(self.bucket_us),
            buckets: delta
                .buckets
                .iter()
                .map(|(ordinal, keys)| (ordinal * self.bucket_us, pack(keys)))
                .collect(),
        };
        (cp.encode_to_vec(), rows)
    }

    /// The rows of the latest [`Shard::checkpoint_apart`] are durable.
    pub fn dedup_written(&mut self) {
        self.dedup.delta_written();
    }

    /// Everything but the dedup keys, which the two versions keep differently.
    fn checkpoint_proto(&self, next_offset: i64, version: u32) -> proto::ShardCheckpoint {
        let keys = self
            .keys
            .infos()
            .iter()
            .map(|k| proto::CheckpointKey {
                tenant: k.tenant.to_string(),
                platform: k.platform.to_string(),
                direction: k.direction.as_str().to_string(),
                target_latency_us: k.target_latency_us,
            })
            .collect();
        let mut open = Vec::new();
        for (start, key, stats) in self.open.iter() {
            let c = &stats.counters;
            let (few, hist) = match &stats.latency {
                Latencies::Few(v) => (v.to_vec(), Vec::new()),
                Latencies::Hist(_) | Latencies::Sparse(_) => (Vec::new(), stats.histogram_bytes()),
            };
            open.push(proto::OpenBucket {
                key,
                start_us: start,
                attempts: c.attempts,
                events: c.events,
                delivered: c.delivered,
                failed: c.failed,
                dead_lettered: c.dead_lettered,
                on_time: c.on_time,
                retried: c.retried,
                max_retries: c.max_retries,
                latency_sum_us: c.latency_sum_us,
                few_latencies_us: few,
                latency_histogram: hist,
            });
        }
        proto::ShardCheckpoint {
            version,
            next_offset,
            max_event_time_us: self.max_event_time,
            closed_before_us: self.closed_before,
            keys,
            overflowed: self.keys.overflowed,
            open,
            dedup: Vec::new(),
            counted: self.tally.counted,
            duplicates: self.tally.duplicates,
            late: self.tally.late,
            dedup_in_store: false,
        }
    }

    /// Rebuilds a shard from [`Shard::checkpoint`] bytes (version 1); returns it and
    /// `next_offset`. A version 2 checkpoint is refused: without its store's rows it
    /// would resume with no dedup keys (see [`Shard::restore_with`]).
    pub fn restore(config: Arc<Config>, bytes: &[u8]) -> Result<(Shard, i64), CheckpointError> {
        Self::restore_from(config, bytes, None)
    }

    /// Rebuilds a shard from checkpoint bytes of either version and, for version 2, the
    /// store's rows of dedup keys read with it (in one read transaction).
    pub fn restore_with(
        config: Arc<Config>,
        bytes: &[u8],
        stored: &[StoredKeys],
    ) -> Result<(Shard, i64), CheckpointError> {
        Self::restore_from(config, bytes, Some(stored))
    }

    fn restore_from(
        config: Arc<Config>,
        bytes: &[u8],
        stored: Option<&[StoredKeys]>,
    ) -> Result<(Shard, i64), CheckpointError> {
        let cp = proto::ShardCheckpoint::decode(bytes)
            .map_err(|e| CheckpointError::Corrupt(e.to_string()))?;
        // The store's rows of dedup keys, for a version 2 checkpoint; `None` for version 1,
        // which carries its keys inline.
        let rows_in_store = match cp.version {
            INLINE_CHECKPOINT_VERSION => None,
            CHECKPOINT_VERSION if cp.dedup_in_store => Some(stored.ok_or_else(|| {
                CheckpointError::Corrupt(
                    "a version 2 checkpoint restored without its store's dedup rows (our bug: use Shard::restore_with)".into(),
                )
            })?),
            CHECKPOINT_VERSION => {
                return Err(CheckpointError::Corrupt(
                    "a version 2 checkpoint without its dedup keys in the store".into(),
                ))
            }
            found => return Err(CheckpointError::Version { found }),
        };
        let corrupt = |what: &str| CheckpointError::Corrupt(what.to_string());
        let mut infos = Vec::with_capacity(cp.keys.len());
        for k in cp.keys {
            infos.push(std::sync::Arc::new(KeyInfo {
                tenant: k.tenant.into(),
                platform: k.platform.into(),
                direction: Direction::parse(&k.direction)
                    .ok_or_else(|| corrupt("key direction"))?,
                target_latency_us: k.target_latency_us,
            }));
        }
        let mut shard = Shard::new(config.clone());
        for b in cp.open {
            if b.key as usize >= infos.len() {
                return Err(corrupt("open bucket refers to an unknown key"));
            }
            if b.start_us.rem_euclid(shard.bucket_us) != 0 {
                return Err(CheckpointError::BucketWidth {
                    found_us: b.start_us,
                    config_us: shard.bucket_us,
                });
            }
            let latency = if b.latency_histogram.is_empty() {
                Latencies::Few(b.few_latencies_us.into())
            } else {
                Stats::latencies_from_bytes(&b.latency_histogram).map_err(|e| corrupt(&e))?
            };
            let stats = Stats {
                counters: Counters {
                    attempts: b.attempts,
                    events: b.events,
                    delivered: b.delivered,
                    failed: b.failed,
                    dead_lettered: b.dead_lettered,
                    on_time: b.on_time,
                    retried: b.retried,
                    max_retries: b.max_retries,
                    latency_sum_us: b.latency_sum_us,
                },
                latency,
            };
            *shard.open.stats(b.start_us, b.key) = stats;
        }
        let mut dedup = Vec::with_capacity(cp.dedup.len());
        for d in cp.dedup {
            if d.keys.len() % 16 != 0 {
                return Err(corrupt("dedup keys are not 16-byte values"));
            }
            let keys: Vec<DedupKey> = d
                .keys
                .chunks_exact(16)
                .map(|c| {
                    let mut w = [0u8; 16];
                    w.copy_from_slice(c);
                    u128::from_le_bytes(w)
                })
                .collect();
            dedup.push((d.bucket_us.div_euclid(shard.bucket_us), keys));
        }
        // The dedup horizon is the shard's close horizon (every close raises both).
        let horizon = cp.closed_before_us.div_euclid(shard.bucket_us);
        shard.keys = KeyTable::restore(config, infos, cp.overflowed);
        if let Some(stored) = rows_in_store {
            let mut rows = Vec::with_capacity(stored.len());
            for (start, keys) in stored {
                if start.rem_euclid(shard.bucket_us) != 0 {
                    return Err(CheckpointError::BucketWidth {
                        found_us: *start,
                        config_us: shard.bucket_us,
                    });
                }
                rows.push((start.div_euclid(shard.bucket_us), unpack(keys)?));
            }
            shard.dedup = Dedup::restore_journaled(horizon, rows);
        } else {
            shard.dedup = Dedup::restore(dedup);
            shard.dedup.evict_before(horizon);
        }
        shard.max_event_time = cp.max_event_time_us;
        shard.closed_before = cp.closed_before_us;
        shard.tally = ShardTally {
            counted: cp.counted,
            duplicates: cp.duplicates,
            late: cp.late,
        };
        Ok((shard, cp.next_offset))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_unknown_versions_and_garbage() {
        let cfg = Arc::new(Config::default());
        let mut bytes = Shard::new(cfg.clone()).checkpoint(7);
        let (_, next) = Shard::restore(cfg.clone(), &bytes).unwrap();
        assert_eq!(next, 7);
        let mut cp = proto::ShardCheckpoint::decode(bytes.as_slice()).unwrap();
        cp.version = 99;
        bytes = cp.encode_to_vec();
        let err = Shard::restore(cfg.clone(), &bytes)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("version 99"), "{err}");
        assert!(matches!(
            Shard::restore(cfg, &[0xff, 0xff, 0xff]),
            Err(CheckpointError::Corrupt(_))
        ));
    }

    /// A version 2 checkpoint restores only with its store's rows, and never claims its
    /// keys are in the store without saying so.
    #[test]
    fn a_version_2_checkpoint_needs_its_rows() {
        let cfg = Arc::new(Config::default());
        let mut shard = Shard::new(cfg.clone());
        let start = crate::time::parse_date("2025-10-01").unwrap();
        for e in crate::source::generator::pilot(1, "globex", start, 600_000_000, 50) {
            shard.ingest(&e);
        }
        let (bytes, rows) = shard.checkpoint_apart(9);
        assert!(rows.replace && !rows.buckets.is_empty());
        let err = Shard::restore(cfg.clone(), &bytes)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("without its store's dedup rows"), "{err}");
        let (restored, next) = Shard::restore_with(cfg.clone(), &bytes, &rows.buckets).unwrap();
        assert_eq!(next, 9);
        assert_eq!(restored.dedup_entries(), shard.dedup_entries());
        let mut cp = proto::ShardCheckpoint::decode(bytes.as_slice()).unwrap();
        cp.dedup_in_store = false;
        assert!(matches!(
            Shard::restore_with(cfg, &cp.encode_to_vec(), &rows.buckets),
            Err(CheckpointError::Corrupt(_))
        ));
    }
}
