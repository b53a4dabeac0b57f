//! At-least-once input: the same `(event_id, attempt)` counts once.
//!
//! Keys are 128-bit xxh3 hashes (collision odds ≈ n²/2¹²⁹: nil at any realistic volume),
//! indexed by the bucket their record landed in, so closing a bucket evicts its keys.
//! A duplicate is therefore recognised as long as the original's bucket is open — the
//! lateness horizon; after that the copy is `late` and still not counted twice.

use super::hash::FastSet;
use crate::time::Micros;
use std::collections::BTreeMap;

pub type DedupKey = u128;

/// One-shot xxh3 of the id, seeded with the attempt (the streaming hasher measured ~3×
/// slower on ids this short).
pub fn dedup_key(event_id: &str, attempt: u32) -> DedupKey {
    xxhash_rust::xxh3::xxh3_128_with_seed(event_id.as_bytes(), u64::from(attempt))
}

#[derive(Debug, Default, Clone)]
pub struct Dedup {
    seen: FastSet<DedupKey>,
    by_bucket: BTreeMap<Micros, Vec<DedupKey>>,
}

impl Dedup {
    /// True if the key is new (and now remembered under `bucket`).
    #[inline]
    pub fn insert(&mut self, key: DedupKey, bucket: Micros) -> bool {
        if !self.seen.insert(key) {
            return false;
        }
        self.by_bucket.entry(bucket).or_default().push(key);
        true
    }

    /// Forgets keys of buckets starting before `closed_before`.
    pub fn evict_before(&mut self, closed_before: Micros) {
        let keep = self.by_bucket.split_off(&closed_before);
        for keys in std::mem::replace(&mut self.by_bucket, keep).into_values() {
            for k in keys {
                self.seen.remove(&k);
            }
        }
    }

    pub fn len(&self) -> usize {
        self.seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }

    /// (bucket, keys) pairs, for checkpoints.
    pub fn entries(&self) -> impl Iterator<Item = (Micros, &[DedupKey])> {
        self.by_bucket.iter().map(|(b, k)| (*b, k.as_slice()))
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
