//! At-least-once input: the same `(event_id, attempt)` counts once.
//!
//! Keys are 128-bit xxh3 hashes (collision odds ≈ n²/2¹²⁹: nil at any realistic volume),
//! indexed by the bucket their record landed in, so closing a bucket evicts its keys.
//! A duplicate is therefore recognised as long as the original's bucket is open — the
//! lateness horizon; after that the copy is `late` and still not counted twice.

use super::hash::FastMap;
use crate::time::Micros;
use std::collections::hash_map::Entry;
use std::collections::BTreeMap;

pub type DedupKey = u128;

/// One-shot xxh3 of the id, seeded with the attempt (the streaming hasher measured ~3×
/// slower on ids this short).
pub fn dedup_key(event_id: &str, attempt: u32) -> DedupKey {
    xxhash_rust::xxh3::xxh3_128_with_seed(event_id.as_bytes(), u64::from(attempt))
}

/// One map from key to the start of the bucket its record landed in. Eviction is a
/// sequential `retain` once per closed bucket start rather than a random-access removal
/// per key, and inserting needs no per-bucket list: the per-bucket key lists this replaced
/// were the largest allocation churn on the per-record path (callgrind, BENCHMARKS.md).
#[derive(Debug, Default, Clone)]
pub struct Dedup {
    seen: FastMap<DedupKey, Micros>,
}

impl Dedup {
    /// True if the key is new (and now remembered under `bucket`).
    #[inline]
    pub fn insert(&mut self, key: DedupKey, bucket: Micros) -> bool {
        match self.seen.entry(key) {
            Entry::Occupied(_) => false,
            Entry::Vacant(v) => {
                v.insert(bucket);
                true
            }
        }
    }

    /// Forgets keys of buckets starting before `closed_before`.
    pub fn evict_before(&mut self, closed_before: Micros) {
        self.seen.retain(|_, b| *b >= closed_before);
        // A burst grew the table; scanning its empty capacity at every close would cost
        // more than the burst did.
        if self.seen.capacity() > 1024 && self.seen.capacity() > 8 * self.seen.len() {
            self.seen.shrink_to(2 * self.seen.len());
        }
    }

    pub fn len(&self) -> usize {
        self.seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }

    /// (bucket, keys) pairs, buckets ascending and keys sorted (checkpoints are then
    /// byte-identical for identical state).
    pub fn entries(&self) -> Vec<(Micros, Vec<DedupKey>)> {
        let mut by_bucket: BTreeMap<Micros, Vec<DedupKey>> = BTreeMap::new();
        for (k, b) in &self.seen {
            by_bucket.entry(*b).or_default().push(*k);
        }
        by_bucket
            .into_iter()
            .map(|(b, mut keys)| {
                keys.sort_unstable();
                (b, keys)
            })
            .collect()
    }

    pub fn restore(entries: impl IntoIterator<Item = (Micros, Vec<DedupKey>)>) -> Self {
        let mut d = Dedup::default();
        for (b, keys) in entries {
            for k in keys {
                d.insert(k, b);
            }
        }
        d
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_until_its_bucket_closes() {
        let mut d = Dedup::default();
        let k = dedup_key("e1", 1);
        assert_ne!(k, dedup_key("e1", 2));
        assert_ne!(dedup_key("e1", 12), dedup_key("e11", 2));
        assert!(d.insert(k, 60));
        assert!(!d.insert(k, 60));
        assert!(d.insert(dedup_key("e2", 1), 120));
        d.evict_before(120);
        assert_eq!(d.len(), 1);
        assert!(d.insert(k, 180), "evicted with its bucket");
    }
}
