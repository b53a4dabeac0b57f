//! HdrHistogram V2 encoding straight from a bucket's sorted (value, count) pairs.
//!
//! Why: the store writes one histogram per closed bucket. Through the `hdrhistogram`
//! crate that meant zeroing a 26 KB histogram, recording into it and scanning its counts
//! up to the largest value — microseconds per bucket, for buckets that mostly hold one to
//! a few dozen attempts (a backfill closes one per record). The bytes are the same as the
//! crate's `V2Serializer` output for the same values (property-tested below), so readers,
//! the store schema and the Kafka `WindowSummary` are unchanged.
//!
//! The index layout is HdrHistogram's for our fixed bounds (lowest 1, 2 significant
//! digits): 256 sub-buckets, half of them per doubling after the first.

use hdrhistogram::Histogram;

/// Latencies are recorded in microseconds; anything above an hour saturates at an hour.
pub const HIST_MAX_US: u64 = 3_600_000_000;
/// Significant digits kept: values within 1 % share a bucket.
pub const HIST_SIGFIG: u8 = 2;

/// An empty histogram with slatrack's bounds.
pub fn new_histogram() -> Histogram<u64> {
    // Bounds are constants that hdrhistogram accepts; a failure here is our bug.
    Histogram::new_with_bounds(1, HIST_MAX_US, HIST_SIGFIG).expect("static HDR bounds are valid")
}

const SUB_BUCKET_HALF_MAGNITUDE: u32 = 7;
const SUB_BUCKET_HALF: u64 = 1 << SUB_BUCKET_HALF_MAGNITUDE;
const SUB_BUCKET_MASK: u64 = (1 << (SUB_BUCKET_HALF_MAGNITUDE + 1)) - 1;
/// 64 − unit magnitude (0) − half-count magnitude − 1.
const LEADING_ZERO_BASE: u32 = 64 - SUB_BUCKET_HALF_MAGNITUDE - 1;

const V2_COOKIE: u32 = 0x1c84_9303 | 0x10;

/// Counts-array index of `value` (the crate's `index_for` for our bounds).
#[inline]
pub fn index_of(value: u64) -> u64 {
    let bucket = u64::from(LEADING_ZERO_BASE - (value | SUB_BUCKET_MASK).leading_zeros());
    let sub = value >> bucket;
    ((bucket + 1) << SUB_BUCKET_HALF_MAGNITUDE) + sub - SUB_BUCKET_HALF
}

fn varint(mut v: u64, out: &mut Vec<u8>) {
    // LEB128, except that a ninth byte carries all 8 remaining bits (HdrHistogram's form).
    for _ in 0..8 {
        if v < 0x80 {
            out.push(v as u8);
            return;
        }
        out.push(0x80 | (v & 0x7f) as u8);
        v >>= 7;
    }
    out.push(v as u8);
}

fn zigzag(n: i64) -> u64 {
    ((n << 1) ^ (n >> 63)) as u64
}

/// V2 bytes of a histogram holding `pairs`: (value, count), values ascending, each value
/// in a different HDR bucket, counts > 0 (what `Latencies::to_sparse` yields).
pub fn encode_v2(pairs: &[(u64, u64)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(40 + 2 * pairs.len() + 8);
    out.extend_from_slice(&V2_COOKIE.to_be_bytes());
    out.extend_from_slice(&0u32.to_be_bytes()); // payload length, set below
    out.extend_from_slice(&0u32.to_be_bytes()); // normalizing index offset
    out.extend_from_slice(&u32::from(HIST_SIGFIG).to_be_bytes());
    out.extend_from_slice(&1u64.to_be_bytes()); // lowest discernible value
    out.extend_from_slice(&HIST_MAX_US.to_be_bytes());
    out.extend_from_slice(&1.0f64.to_be_bytes()); // integer-to-double ratio
    if pairs.is_empty() {
        varint(0, &mut out); // an empty histogram encodes index 0's zero count
    }
    let mut next = 0u64; // first index not yet encoded
    for &(value, count) in pairs {
        let i = index_of(value);
        debug_assert!(i >= next, "pairs ascending, one per HDR bucket");
        match i.saturating_sub(next) {
            0 => {}
            1 => varint(0, &mut out),
            gap => varint(zigzag(-(gap as i64)), &mut out),
        }
        varint(zigzag(count.min(i64::MAX as u64) as i64), &mut out);
        next = i + 1;
    }
    let len = (out.len() - 40) as u32;
    out[4..8].copy_from_slice(&len.to_be_bytes());
    out
}

/// The highest value of the counts-array index `i` (the crate's `highest_equivalent` of
/// the values it holds).
pub fn top_of_index(i: u64) -> u64 {
    let (mut bucket, mut sub) = (
        (i >> SUB_BUCKET_HALF_MAGNITUDE) as i64 - 1,
        (i & (SUB_BUCKET_HALF - 1)) + SUB_BUCKET_HALF,
    );
    if bucket < 0 {
        sub -= SUB_BUCKET_HALF;
        bucket = 0;
    }
    ((sub + 1) << bucket) - 1
}

fn read_varint(bytes: &[u8], at: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for k in 0..9 {
        let b = *bytes.get(*at)?;
        *at += 1;
        if k == 8 {
            return Some(v | (u64::from(b) << 56));
        }
        v |= u64::from(b & 0x7f) << (7 * k);
        if b < 0x80 {
            return Some(v);
        }
    }
    None
}

/// The values of V2 bytes in slatrack's own layout (as [`encode_v2`] and the crate write
/// them, uncompressed), each the top of its HDR bucket, ascending — if they hold at most
/// `max` values. `None` for anything else (another layout, compressed, more values,
/// malformed): the caller decodes those through the crate.
///
/// Why: decoding through the crate allocates and zeroes a 26 KB histogram per row, and a
/// scorecard over a busy tenant's 10 weeks reads hundreds of thousands of small rows.
pub fn decode_v2_few(bytes: &[u8], max: usize) -> Option<Vec<u64>> {
    let header = encode_v2(&[]);
    // Cookie, normalizing offset, digits, bounds and ratio: all but the payload length.
    if bytes.len() < 40 || bytes[..4] != header[..4] || bytes[8..40] != header[8..40] {
        return None;
    }
    let len = u32::from_be_bytes(bytes[4..8].try_into().ok()?) as usize;
    let payload = bytes.get(40..40 + len)?;
    let mut out = Vec::new();
    let (mut at, mut index) = (0usize, 0u64);
    while at < payload.len() {
        let raw = read_varint(payload, &mut at)?;
        let n = ((raw >> 1) as i64) ^ -((raw & 1) as i64);
        if n < 0 {
            index = index.checked_add(n.unsigned_abs())?;
            continue;
        }
        let count = n as usize;
        if count > 0 {
            if out.len() + count > max {
                return None;
            }
            out.extend(std::iter::repeat_n(top_of_index(index), count));
        }
        index += 1;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hdrhistogram::serialization::{Serializer, V2Serializer};
    use proptest::prelude::*;

    fn crate_bytes(values: &[(u64, u64)]) -> Vec<u8> {
        let mut h = new_histogram();
        for &(v, n) in values {
            h.saturating_record_n(v, n);
        }
        let mut out = Vec::new();
        V2Serializer::new().serialize(&h, &mut out).unwrap();
        out
    }

    /// The pairs a histogram holding `values` has: (highest equivalent value, count) per
    /// non-empty bucket, ascending.
    fn ours(values: &[(u64, u64)]) -> Vec<u8> {
        let mut h = new_histogram();
        for &(v, n) in values {
            h.saturating_record_n(v, n);
        }
        let pairs: Vec<(u64, u64)> = h
            .iter_recorded()
            .map(|v| {
                (
                    h.highest_equivalent(v.value_iterated_to()),
                    v.count_at_value(),
                )
            })
            .collect();
        encode_v2(&pairs)
    }

    #[test]
    fn matches_the_crate_at_the_edges() {
        let h = new_histogram();
        for v in [
            1,
            2,
            127,
            128,
            255,
            256,
            257,
            1000,
            65_535,
            1 << 20,
            HIST_MAX_US,
        ] {
            assert_eq!(
                index_of(h.highest_equivalent(v)),
                index_of(v),
                "same bucket for {v}"
            );
        }
        for values in [
            vec![],
            vec![(1, 1)],
            vec![(1, 1), (3, 1)],
            vec![(0, 1)],
            vec![(HIST_MAX_US, 5)],
            vec![(500_000, 1), (500_001, 2), (2_000_000, 300)],
        ] {
            assert_eq!(ours(&values), crate_bytes(&values), "{values:?}");
        }
    }

    /// The values the crate's deserializer gives (each its bucket's top), if ≤ `max`.
    fn crate_few(bytes: &[u8], max: usize) -> Option<Vec<u64>> {
        let h: Histogram<u64> = hdrhistogram::serialization::Deserializer::new()
            .deserialize(&mut std::io::Cursor::new(bytes))
            .unwrap();
        if h.len() > max as u64 {
            return None;
        }
        let mut out = Vec::new();
        for v in h.iter_recorded() {
            let top = h.highest_equivalent(v.value_iterated_to());
            out.extend(std::iter::repeat_n(top, v.count_at_value() as usize));
        }
        Some(out)
    }

    proptest! {
        #[test]
        fn few_values_decode_as_the_crate_decodes_them(values in proptest::collection::vec((0u64..4_000_000_000, 1u64..40), 0..40)) {
            let bytes = crate_bytes(&values);
            prop_assert_eq!(decode_v2_few(&bytes, 64), crate_few(&bytes, 64));
        }

        #[test]
        fn byte_identical_to_the_crate(values in proptest::collection::vec((0u64..4_000_000_000, 1u64..1000), 0..60)) {
            prop_assert_eq!(ours(&values), crate_bytes(&values));
        }
    }
}
