//! Shard checkpoints: everything a shard needs to resume exactly where it stopped —
//! keys, open buckets, watermark, dedup keys, tallies — as a versioned protobuf blob.
//! The live service stores one per partition atomically with the buckets it closed, so
//! a crash replays from `next_offset` into exactly the same state (exactly-once effect
//! without Kafka transactions).

use super::dedup::{Dedup, DedupKey};
use super::keys::{KeyInfo, KeyTable};
use super::shard::{Shard, ShardTally};
use super::stats::{Counters, Latencies, Stats};
use crate::config::Config;
use crate::event::Direction;
use crate::proto;
use prost::Message;
use std::sync::Arc;

/// Bump on any incompatible change of `ShardCheckpoint`'s meaning.
pub const CHECKPOINT_VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("checkpoint does not decode ({0}): the store was written by something else or is corrupt; move it aside to start the partition from its committed group offset")]
    Corrupt(String),
    #[error("checkpoint format version {found} is not supported by this slatrack (supports {CHECKPOINT_VERSION}): run the release that wrote it, or roll forward with a matching one")]
    Version { found: u32 },
    #[error("checkpoint was taken with engine.bucket = {found_us} µs, config says {config_us} µs: restore with the old bucket width or start a new store")]
    BucketWidth { found_us: i64, config_us: i64 },
}

impl Shard {
    /// Serializes the shard's state; `next_offset` is the first source offset not applied.
    pub fn checkpoint(&self, next_offset: i64) -> Vec<u8> {
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
        let dedup = self
            .dedup
            .entries()
            .into_iter()
            .map(|(ordinal, keys)| proto::DedupBucket {
                bucket_us: ordinal * self.bucket_us,
                keys: keys.iter().flat_map(|k| k.to_le_bytes()).collect(),
            })
            .collect();
        proto::ShardCheckpoint {
            version: CHECKPOINT_VERSION,
            next_offset,
            max_event_time_us: self.max_event_time,
            closed_before_us: self.closed_before,
            keys,
            overflowed: self.keys.overflowed,
            open,
            dedup,
            counted: self.tally.counted,
            duplicates: self.tally.duplicates,
            late: self.tally.late,
        }
        .encode_to_vec()
    }

    /// Rebuilds a shard from [`Shard::checkpoint`] bytes; returns it and `next_offset`.
    pub fn restore(config: Arc<Config>, bytes: &[u8]) -> Result<(Shard, i64), CheckpointError> {
        let cp = proto::ShardCheckpoint::decode(bytes)
            .map_err(|e| CheckpointError::Corrupt(e.to_string()))?;
        if cp.version != CHECKPOINT_VERSION {
            return Err(CheckpointError::Version { found: cp.version });
        }
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
        shard.keys = KeyTable::restore(config, infos, cp.overflowed);
        shard.dedup = Dedup::restore(dedup);
        // The dedup horizon is the shard's close horizon (every close raises both).
        shard
            .dedup
            .evict_before(cp.closed_before_us.div_euclid(shard.bucket_us));
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
}
