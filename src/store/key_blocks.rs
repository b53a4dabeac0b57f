//! Closed buckets' dedup keys as both stores keep them in `closed_keys`: a commit's key
//! sets packed into **blocks** of consecutive buckets, one row per block, rather than one
//! row per bucket.
//!
//! Why: a backfill consumed at full speed closes about one bucket per record per
//! partition, each with a few keys. A row per bucket made the store's per-row work — the
//! table, its two indexes, and deleting the row again once the correction horizon passes —
//! most of a commit, and the row's own bytes (source, start, rowid, index entries) several
//! times the keys' 12 bytes each. A block costs that once for up to [`BLOCK_BYTES`] of
//! keys. Live traffic closes about one bucket per partition per commit, so its blocks hold
//! one bucket and are what a per-bucket row was.
//!
//! A block's row: `bucket_start_us` its first bucket's start, `last_start_us` its last
//! one's (less than [`BLOCK_SPAN`] later, so a reader finds every block holding a bucket
//! with one bounded index range), and `keys`:
//! - first = last: the bucket's packed keys ([`super::checkpoint::pack`]), one after
//!   another — the layout of a per-bucket row, which stores written before blocks hold;
//! - first < last: `varint(unit)`, then segments, each `varint((start − previous start)
//!   / unit)` (the first from the block's first start), `varint(key count)`, then the
//!   packed keys. The unit is the greatest common divisor of the steps (the bucket
//!   width, usually), so a step takes a byte where microseconds would take four.
//!
//! A bucket's keys may sit in several rows (its set as it closed, then each commit's
//! corrections): its keys are all of them together. A block is dropped once its last
//! bucket is past the correction horizon.

use super::checkpoint::STORED_KEY_BYTES;
use super::ClosedKeys;
use crate::time::{Micros, MICROS_PER_HOUR};

/// A block's buckets start less than this after its first.
pub const BLOCK_SPAN: Micros = MICROS_PER_HOUR;

/// Keys a block takes before the next bucket starts a new one: what one cold lookup of a
/// bucket reads at most, beside that bucket's own keys.
pub const BLOCK_BYTES: usize = 64 * 1024;

/// One `closed_keys` row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyBlock {
    pub first: Micros,
    pub last: Micros,
    pub keys: Vec<u8>,
}

/// A commit's key sets (in any order) as the blocks to write.
pub fn blocks(sets: &[ClosedKeys]) -> Vec<KeyBlock> {
    let mut order: Vec<&ClosedKeys> = sets.iter().filter(|s| !s.keys.is_empty()).collect();
    order.sort_by_key(|s| s.start);
    let mut out = Vec::new();
    let mut run: Vec<&ClosedKeys> = Vec::new();
    let mut bytes = 0;
    for s in order {
        let starts_new = run
            .first()
            .is_some_and(|f| s.start - f.start >= BLOCK_SPAN || bytes + s.keys.len() > BLOCK_BYTES);
        if starts_new {
            out.push(encode(&run));
            run.clear();
            bytes = 0;
        }
        bytes += s.keys.len();
        run.push(s);
    }
    if !run.is_empty() {
        out.push(encode(&run));
    }
    out
}

/// One block of sets sorted by start (not empty).
fn encode(run: &[&ClosedKeys]) -> KeyBlock {
    let first = run[0].start;
    let last = run[run.len() - 1].start;
    let mut keys = Vec::with_capacity(run.iter().map(|s| s.keys.len() + 8).sum());
    if first == last {
        for s in run {
            keys.extend_from_slice(&s.keys);
        }
    } else {
        let unit = run
            .windows(2)
            .map(|w| (w[1].start - w[0].start) as u64)
            .fold(0, gcd);
        prost::encoding::encode_varint(unit, &mut keys);
        let mut previous = first;
        for s in run {
            prost::encoding::encode_varint((s.start - previous) as u64 / unit, &mut keys);
            prost::encoding::encode_varint((s.keys.len() / STORED_KEY_BYTES) as u64, &mut keys);
            keys.extend_from_slice(&s.keys);
            previous = s.start;
        }
    }
    KeyBlock { first, last, keys }
}

/// Appends to `out` the packed keys a stored block holds for the bucket starting at
/// `start`; an error says what is malformed.
pub fn keys_of(
    first: Micros,
    last: Micros,
    block: &[u8],
    start: Micros,
    out: &mut Vec<u8>,
) -> Result<(), String> {
    if first == last {
        if first == start {
            out.extend_from_slice(block);
        }
        return Ok(());
    }
    let mut rest = block;
    let varint = |rest: &mut &[u8]| {
        prost::encoding::decode_varint(rest).map_err(|_| "a segment header is cut or not a varint")
    };
    let unit = varint(&mut rest)?;
    let mut bucket = first;
    while !rest.is_empty() {
        let step = varint(&mut rest)?.checked_mul(unit);
        bucket = step
            .and_then(|s| i64::try_from(s).ok())
            .and_then(|s| bucket.checked_add(s))
            .ok_or("a segment starts past the end of time")?;
        let n = varint(&mut rest)? as usize;
        let keys = n
            .checked_mul(STORED_KEY_BYTES)
            .and_then(|len| rest.get(..len))
            .ok_or_else(|| format!("a segment of {n} keys runs past the block's end"))?;
        if bucket == start {
            out.extend_from_slice(keys);
        }
        rest = &rest[keys.len()..];
    }
    Ok(())
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(start: Micros, keys: std::ops::Range<u8>) -> ClosedKeys {
        ClosedKeys {
            start,
            keys: keys.flat_map(|k| [k; STORED_KEY_BYTES]).collect(),
        }
    }

    /// The keys of the bucket at `start`, in order (a set: the order read is not kept).
    fn read(blocks: &[KeyBlock], start: Micros) -> Vec<u8> {
        let mut out = Vec::new();
        for b in blocks {
            keys_of(b.first, b.last, &b.keys, start, &mut out).expect("well formed");
        }
        let mut keys: Vec<&[u8]> = out.chunks(STORED_KEY_BYTES).collect();
        keys.sort();
        keys.concat()
    }

    /// Every bucket reads back exactly its keys, from its set and its corrections, across
    /// block boundaries of span and size; blocks respect both limits.
    #[test]
    fn a_commit_reads_back_bucket_by_bucket() {
        let minute = 60_000_000;
        let mut sets: Vec<ClosedKeys> = (0..200).map(|i| set(i * minute, 0..3)).collect();
        sets.push(set(7 * minute, 10..12)); // a correction of an earlier bucket
        sets.push(set(500 * minute, 0..200)); // a big one, alone
        sets.reverse();
        let blocks = blocks(&sets);
        assert!(blocks.len() >= 4, "{} blocks", blocks.len());
        for b in &blocks {
            assert!(b.last - b.first < BLOCK_SPAN);
            assert!(b.keys.len() <= BLOCK_BYTES + 16);
        }
        for i in 0..200 {
            let mut want = set(i * minute, 0..3).keys;
            if i == 7 {
                want.extend(set(0, 10..12).keys);
            }
            assert_eq!(read(&blocks, i * minute), want, "bucket {i}");
        }
        assert_eq!(read(&blocks, 500 * minute), set(0, 0..200).keys);
        assert!(read(&blocks, 300 * minute).is_empty());
    }

    /// A one-bucket block is the bucket's keys as they are, as a per-bucket row was.
    #[test]
    fn a_one_bucket_block_is_a_plain_row() {
        let b = blocks(&[set(5, 0..2), set(5, 7..8)]);
        assert_eq!(b.len(), 1);
        assert_eq!((b[0].first, b[0].last), (5, 5));
        let mut want = set(5, 0..2).keys;
        want.extend(set(5, 7..8).keys);
        assert_eq!(b[0].keys, want);
    }

    #[test]
    fn a_truncated_block_is_an_error() {
        let b = blocks(&[set(0, 0..2), set(60, 0..2)]);
        let cut = &b[0].keys[..b[0].keys.len() - 1];
        assert!(keys_of(b[0].first, b[0].last, cut, 60, &mut Vec::new()).is_err());
    }
}
