//! Shard checkpoints on the wire: a shard's state ([`ShardState`]) as a versioned
//! protobuf blob (`proto/slatrack/v1/checkpoint.proto`). The live service stores one per
//! partition atomically with the buckets it closed, so a crash replays from
//! `next_offset` into exactly the same state (exactly-once effect without Kafka
//! transactions).
//!
//! Two formats, told apart by the version number alone ([`CheckpointFormat`]):
//! - version 1, [`CheckpointFormat::DedupInline`]: every dedup key inside the blob; read
//!   only (stores written by earlier releases hold it);
//! - version 2, [`CheckpointFormat::DedupInStore`]: no keys in the blob; the store keeps
//!   them in rows beside it ([`DedupRows`]), each commit writing the keys added since the
//!   previous one. Every commit writes it.

use crate::config::Config;
use crate::engine::dedup::{canonical, DedupKey};
use crate::engine::keys::KeyInfo;
use crate::engine::state::{DedupState, OpenBucketState, ShardState, StateError};
use crate::engine::stats::{Counters, Latencies, Stats};
use crate::engine::{Shard, ShardTally};
use crate::event::Direction;
use crate::proto;
use crate::time::Micros;
use prost::Message;
use std::sync::Arc;

/// Where a checkpoint's dedup keys are; each choice is one format version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckpointFormat {
    /// Version 1: every key inside the checkpoint.
    DedupInline,
    /// Version 2: the keys in the store's rows beside the checkpoint.
    DedupInStore,
}

impl CheckpointFormat {
    pub const fn version(self) -> u32 {
        match self {
            CheckpointFormat::DedupInline => 1,
            CheckpointFormat::DedupInStore => 2,
        }
    }

    pub fn of_version(v: u32) -> Option<Self> {
        match v {
            1 => Some(CheckpointFormat::DedupInline),
            2 => Some(CheckpointFormat::DedupInStore),
            _ => None,
        }
    }
}

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

/// Dedup keys as a store keeps them: [`STORED_KEY_BYTES`] each.
pub fn pack(keys: &[DedupKey]) -> Vec<u8> {
    let mut out = Vec::with_capacity(keys.len() * STORED_KEY_BYTES);
    for k in keys {
        out.extend_from_slice(&((*k >> 64) as u64).to_le_bytes());
        out.extend_from_slice(&(*k as u32).to_le_bytes());
    }
    out
}

fn unpack(bytes: &[u8]) -> Result<Vec<DedupKey>, CheckpointError> {
    if !bytes.len().is_multiple_of(STORED_KEY_BYTES) {
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

/// Packed keys read back from `source`'s rows in a store.
pub fn unpack_keys(bytes: &[u8], source: &str) -> Result<Vec<DedupKey>, crate::store::StoreError> {
    unpack(bytes).map_err(|e| crate::store::StoreError::Corrupt {
        what: format!("closed_keys of {source}"),
        why: e.to_string(),
    })
}

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("checkpoint does not decode ({0}): the store was written by something else or is corrupt; move it aside to start the partition from its committed group offset")]
    Corrupt(String),
    #[error("checkpoint format version {found} is not supported by this slatrack (supports 1 and 2): run the release that wrote it, or roll forward with a matching one")]
    Version { found: u32 },
    #[error(transparent)]
    State(#[from] StateError),
}

/// The shard's state with every dedup key inline (version 1); `next_offset` is the first
/// source offset not applied.
pub fn encode_inline(shard: &Shard, next_offset: i64) -> Vec<u8> {
    let width = shard.bucket_width();
    let mut cp = encode_state(shard, next_offset, CheckpointFormat::DedupInline);
    cp.dedup = shard
        .dedup_entries_by_ordinal()
        .into_iter()
        .map(|(ordinal, keys)| proto::DedupBucket {
            bucket_us: ordinal * width,
            keys: keys.iter().flat_map(|k| k.to_le_bytes()).collect(),
        })
        .collect();
    cp.encode_to_vec()
}

/// The shard's state without its dedup keys (version 2), and the rows of keys a store
/// keeping them apart must write with it: the keys since the last
/// [`Shard::dedup_written`], or all of them before the first.
pub fn encode_apart(shard: &Shard, next_offset: i64) -> (Vec<u8>, DedupRows) {
    let width = shard.bucket_width();
    let mut cp = encode_state(shard, next_offset, CheckpointFormat::DedupInStore);
    // Written for readers that check the flag; this reader goes by the version alone.
    cp.dedup_in_store = true;
    let delta = shard.dedup_delta();
    let rows = DedupRows {
        replace: delta.replace,
        before: delta.horizon.saturating_mul(width),
        buckets: delta
            .buckets
            .iter()
            .map(|(ordinal, keys)| (ordinal * width, pack(keys)))
            .collect(),
    };
    (cp.encode_to_vec(), rows)
}

/// Everything but the dedup keys, which the two formats keep differently.
fn encode_state(
    shard: &Shard,
    next_offset: i64,
    format: CheckpointFormat,
) -> proto::ShardCheckpoint {
    let keys = shard
        .keys()
        .infos()
        .iter()
        .map(|k| proto::CheckpointKey {
            tenant: k.tenant.to_string(),
            platform: k.platform.to_string(),
            direction: k.direction.as_str().to_string(),
            target_latency_us: k.target_latency_us,
        })
        .collect();
    let open = shard
        .open_iter()
        .map(|(start, key, stats)| {
            let c = &stats.counters;
            let (few, hist) = match &stats.latency {
                Latencies::Few(v) => (v.to_vec(), Vec::new()),
                Latencies::Hist(_) | Latencies::Sparse(_) => (Vec::new(), stats.histogram_bytes()),
            };
            proto::OpenBucket {
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
            }
        })
        .collect();
    proto::ShardCheckpoint {
        version: format.version(),
        next_offset,
        max_event_time_us: shard.max_event_time(),
        closed_before_us: shard.closed_before(),
        keys,
        overflowed: shard.keys().overflowed,
        open,
        dedup: Vec::new(),
        counted: shard.tally.counted,
        duplicates: shard.tally.duplicates,
        late: shard.tally.too_late,
        corrected: shard.tally.corrected,
        dedup_in_store: false,
    }
}

/// Rebuilds a shard from a version 1 checkpoint; returns it and `next_offset`. A version
/// 2 checkpoint is refused: without its store's rows it would resume with no dedup keys
/// (see [`decode_with_rows`]).
pub fn decode(config: Arc<Config>, bytes: &[u8]) -> Result<(Shard, i64), CheckpointError> {
    decode_from(config, bytes, None)
}

/// Rebuilds a shard from a checkpoint of either version and, for version 2, the store's
/// rows of dedup keys read with it (in one read transaction).
pub fn decode_with_rows(
    config: Arc<Config>,
    bytes: &[u8],
    stored: &[StoredKeys],
) -> Result<(Shard, i64), CheckpointError> {
    decode_from(config, bytes, Some(stored))
}

fn decode_from(
    config: Arc<Config>,
    bytes: &[u8],
    stored: Option<&[StoredKeys]>,
) -> Result<(Shard, i64), CheckpointError> {
    let cp = proto::ShardCheckpoint::decode(bytes)
        .map_err(|e| CheckpointError::Corrupt(e.to_string()))?;
    let format = CheckpointFormat::of_version(cp.version)
        .ok_or(CheckpointError::Version { found: cp.version })?;
    let corrupt = |what: &str| CheckpointError::Corrupt(what.to_string());
    let mut keys = Vec::with_capacity(cp.keys.len());
    for k in cp.keys {
        keys.push(Arc::new(KeyInfo {
            tenant: k.tenant.into(),
            platform: k.platform.into(),
            direction: Direction::parse(&k.direction).ok_or_else(|| corrupt("key direction"))?,
            target_latency_us: k.target_latency_us,
        }));
    }
    let mut open = Vec::with_capacity(cp.open.len());
    for b in cp.open {
        let latency = if b.latency_histogram.is_empty() {
            Latencies::Few(b.few_latencies_us.into())
        } else {
            Stats::latencies_from_bytes(&b.latency_histogram).map_err(|e| corrupt(&e))?
        };
        open.push(OpenBucketState {
            key: b.key,
            start: b.start_us,
            stats: Stats {
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
            },
        });
    }
    let dedup = match format {
        CheckpointFormat::DedupInline => {
            let mut entries = Vec::with_capacity(cp.dedup.len());
            for d in cp.dedup {
                if d.keys.len() % 16 != 0 {
                    return Err(corrupt("dedup keys are not 16-byte values"));
                }
                let keys = d
                    .keys
                    .chunks_exact(16)
                    .map(|c| {
                        let mut w = [0u8; 16];
                        w.copy_from_slice(c);
                        u128::from_le_bytes(w)
                    })
                    .collect();
                entries.push((d.bucket_us, keys));
            }
            DedupState::Inline(entries)
        }
        CheckpointFormat::DedupInStore => {
            let stored = stored.ok_or_else(|| {
                corrupt("a version 2 checkpoint restored without its store's dedup rows (our bug: use decode_with_rows)")
            })?;
            let mut entries = Vec::with_capacity(stored.len());
            for (start, packed) in stored {
                entries.push((*start, unpack(packed)?));
            }
            DedupState::InStore(entries)
        }
    };
    let state = ShardState {
        keys,
        overflowed: cp.overflowed,
        open,
        dedup,
        max_event_time: cp.max_event_time_us,
        closed_before: cp.closed_before_us,
        tally: ShardTally {
            counted: cp.counted,
            duplicates: cp.duplicates,
            too_late: cp.late,
            corrected: cp.corrected,
        },
    };
    Ok((Shard::from_state(config, state)?, cp.next_offset))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_unknown_versions_and_garbage() {
        let cfg = Arc::new(Config::default());
        let mut bytes = encode_inline(&Shard::new(cfg.clone()), 7);
        let (_, next) = decode(cfg.clone(), &bytes).unwrap();
        assert_eq!(next, 7);
        let mut cp = proto::ShardCheckpoint::decode(bytes.as_slice()).unwrap();
        cp.version = 99;
        bytes = cp.encode_to_vec();
        let err = decode(cfg.clone(), &bytes).err().unwrap().to_string();
        assert!(err.contains("version 99"), "{err}");
        assert!(matches!(
            decode(cfg, &[0xff, 0xff, 0xff]),
            Err(CheckpointError::Corrupt(_))
        ));
    }

    /// A version 2 checkpoint restores only with its store's rows.
    #[test]
    fn a_version_2_checkpoint_needs_its_rows() {
        let cfg = Arc::new(Config::default());
        let mut shard = Shard::new(cfg.clone());
        let start = crate::time::parse_date("2025-10-01").unwrap();
        for e in crate::synthetic::pilot(1, "globex", start, 600_000_000, 50) {
            shard.ingest(&e);
        }
        let (bytes, rows) = encode_apart(&shard, 9);
        assert!(rows.replace && !rows.buckets.is_empty());
        let err = decode(cfg.clone(), &bytes).err().unwrap().to_string();
        assert!(err.contains("without its store's dedup rows"), "{err}");
        let (restored, next) = decode_with_rows(cfg.clone(), &bytes, &rows.buckets).unwrap();
        assert_eq!(next, 9);
        assert_eq!(restored.dedup_entries(), shard.dedup_entries());
        // The version alone says where the keys are: the flag written beside it for
        // other readers changes nothing here.
        let mut cp = proto::ShardCheckpoint::decode(bytes.as_slice()).unwrap();
        cp.dedup_in_store = false;
        let (again, _) = decode_with_rows(cfg, &cp.encode_to_vec(), &rows.buckets).unwrap();
        assert_eq!(again.dedup_entries(), shard.dedup_entries());
    }
}
