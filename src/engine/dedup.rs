//! At-least-once input: the same `(event_id, attempt)` counts once.
//!
//! Keys are 128-bit xxh3 hashes (collision odds ≈ n²/2¹²⁹: nil at any realistic volume),
//! each remembered with the bucket its record landed in, so closing a bucket forgets its
//! keys. A duplicate is therefore recognised as long as the original's bucket is open — the
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

/// One map from key to the start of the bucket its record landed in. Closing buckets only
/// raises `horizon`: an entry of a bucket starting before it reads as absent and is
/// overwritten by a later insert of its key. Expired entries are swept out (a sequential
/// `retain`) only when the map is full, and the sweep leaves it at most half full, so a
/// sweep's scan is paid for by at least as many inserts. Sweeping at every closed bucket
/// start instead was ≈ 6 % of the protobuf path on sparse traffic (a record per
/// key-minute closes a bucket every few records). An open-addressing table of its own
/// measured worse on dense traffic: at the load that keeps linear probes short it was
/// 3 MB for 27k live keys, past this machine's 2 MB L2 (perf, BENCHMARKS.md).
#[derive(Debug, Clone)]
pub struct Dedup {
    /// Keys as two words, not a `u128`: 24-byte entries instead of 32 (a `u128` is
    /// 16-aligned), so dense traffic's live keys take a quarter less cache.
    seen: FastMap<(u64, u64), Micros>,
    /// Entries of buckets starting before this are expired.
    horizon: Micros,
    /// Inserts since the last mark, and the newest bucket inserted into before it: once
    /// the horizon has passed that bucket, every live entry is one of those inserts. That
    /// bound lets a map that a burst grew shrink once the burst has passed, without
    /// waiting for it to fill again.
    inserts_since_mark: usize,
    newest: Micros,
    newest_at_mark: Micros,
}

impl Default for Dedup {
    fn default() -> Self {
        Self {
            seen: FastMap::default(),
            horizon: Micros::MIN,
            inserts_since_mark: 0,
            newest: Micros::MIN,
            newest_at_mark: Micros::MIN,
        }
    }
}

fn split(key: DedupKey) -> (u64, u64) {
    (key as u64, (key >> 64) as u64)
}

impl Dedup {
    /// True if the key is new (and now remembered under `bucket`).
    #[inline]
    pub fn insert(&mut self, key: DedupKey, bucket: Micros) -> bool {
        if self.seen.len() == self.seen.capacity() {
            self.sweep();
        }
        self.inserts_since_mark += 1;
        self.newest = self.newest.max(bucket);
        match self.seen.entry(split(key)) {
            Entry::Occupied(mut o) => {
                if *o.get() >= self.horizon {
                    return false;
                }
                *o.get_mut() = bucket;
                true
            }
            Entry::Vacant(v) => {
                v.insert(bucket);
                true
            }
        }
    }

    /// Forgets keys of buckets starting before `closed_before` (never moves backwards).
    pub fn evict_before(&mut self, closed_before: Micros) {
        self.horizon = self.horizon.max(closed_before);
        if self.horizon > self.newest_at_mark {
            // At most `inserts_since_mark` entries are live: past a burst, they would fit
            // in an eighth of the map.
            if self.seen.capacity() > 1024 && 8 * self.inserts_since_mark < self.seen.capacity() {
                self.sweep();
            }
            self.inserts_since_mark = 0;
            self.newest_at_mark = self.newest;
        }
    }

    /// Drops expired entries; then room for as many inserts as there are live keys (a
    /// burst that passed gives its memory back).
    #[cold]
    fn sweep(&mut self) {
        let h = self.horizon;
        self.seen.retain(|_, b| *b >= h);
        let live = self.seen.len();
        if self.seen.capacity() < 2 * live {
            self.seen.reserve(live);
        } else if self.seen.capacity() > 1024 && self.seen.capacity() > 8 * live {
            self.seen.shrink_to(2 * live);
        }
    }

    fn live(&self) -> impl Iterator<Item = (DedupKey, Micros)> + '_ {
        self.seen
            .iter()
            .filter(|(_, b)| **b >= self.horizon)
            .map(|(k, b)| (u128::from(k.0) | (u128::from(k.1) << 64), *b))
    }

    /// Live keys (a scan: not for the per-record path).
    pub fn len(&self) -> usize {
        self.live().count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// (bucket, keys) pairs, buckets ascending and keys sorted (checkpoints are then
    /// byte-identical for identical state).
    pub fn entries(&self) -> Vec<(Micros, Vec<DedupKey>)> {
        let mut by_bucket: BTreeMap<Micros, Vec<DedupKey>> = BTreeMap::new();
        for (k, b) in self.live() {
            by_bucket.entry(b).or_default().push(k);
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
    use proptest::prelude::*;

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
        assert!(!d.insert(k, 180));
        d.evict_before(60);
        assert!(!d.insert(k, 180), "the horizon never moves back");
    }

    /// Keys colliding on their low bits (one probe group): expiring one must hide neither
    /// the others nor let the expired one count as a duplicate.
    #[test]
    fn an_expired_key_hides_nothing() {
        let mut d = Dedup::default();
        let (a, b, c) = (1u128 << 64 | 5, 2u128 << 64 | 5, 3u128 << 64 | 5);
        assert!(d.insert(a, 10));
        assert!(d.insert(b, 0));
        assert!(d.insert(c, 10));
        d.evict_before(10);
        assert!(!d.insert(c, 10), "c is still found past expired b");
        assert!(d.insert(b, 10), "b expired, so it is new again");
        assert!(!d.insert(b, 10));
        assert_eq!(d.len(), 3);
    }

    /// A burst grows the map; once its buckets have closed and traffic is low, closing a
    /// bucket gives the memory back (without waiting for the map to fill again).
    #[test]
    fn a_passed_burst_gives_its_memory_back() {
        let mut d = Dedup::default();
        for i in 0..100_000u128 {
            assert!(d.insert(dedup_key(&i.to_string(), 1), 0));
        }
        let burst = d.seen.capacity();
        assert!(burst >= 100_000);
        for minute in 1..=5i64 {
            d.evict_before(minute * 60);
            for i in 0..10u128 {
                assert!(d.insert(dedup_key(&format!("{minute}-{i}"), 1), minute * 60));
            }
        }
        assert!(
            d.seen.capacity() * 16 < burst,
            "{} of {burst}",
            d.seen.capacity()
        );
        assert_eq!(d.len(), 10, "each close expired the minute before");
        // Steady traffic afterwards does not sweep at every close.
        let before = d.seen.capacity();
        for minute in 6..=20i64 {
            d.evict_before(minute * 60 - 120);
            for i in 0..10u128 {
                d.insert(dedup_key(&format!("{minute}-{i}"), 1), minute * 60);
            }
        }
        assert!(d.seen.capacity() <= before.max(1024));
    }

    /// The model: a map from key to bucket, evicted by `retain` (the previous design).
    #[derive(Debug, Clone)]
    enum Op {
        Insert(u8, u8),
        Evict(u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            8 => (any::<u8>(), any::<u8>()).prop_map(|(k, b)| Op::Insert(k, b)),
            1 => any::<u8>().prop_map(Op::Evict),
        ]
    }

    proptest! {
        /// Same answers as a map evicted by `retain`, through growth, overwrites of expired
        /// entries and sweeps.
        #[test]
        fn agrees_with_a_retained_map(ops in proptest::collection::vec(op(), 1..600)) {
            let mut d = Dedup::default();
            let mut model: std::collections::HashMap<u128, Micros> = Default::default();
            let mut horizon = Micros::MIN;
            for o in ops {
                match o {
                    Op::Insert(k, b) => {
                        // Few distinct low words: long shared probe paths.
                        let key = (u128::from(k) << 64) | (u128::from(k % 7) + 1);
                        let b = Micros::from(b);
                        if b < horizon { continue; } // the shard rejects these as late
                        let new = !model.contains_key(&key);
                        if new { model.insert(key, b); }
                        prop_assert_eq!(d.insert(key, b), new);
                    }
                    Op::Evict(h) => {
                        horizon = horizon.max(Micros::from(h));
                        model.retain(|_, b| *b >= horizon);
                        d.evict_before(Micros::from(h));
                    }
                }
                prop_assert_eq!(d.len(), model.len());
            }
            let mut want: BTreeMap<Micros, Vec<u128>> = BTreeMap::new();
            for (k, b) in &model { want.entry(*b).or_default().push(*k); }
            let want: Vec<_> = want.into_iter().map(|(b, mut ks)| { ks.sort_unstable(); (b, ks) }).collect();
            prop_assert_eq!(d.entries(), want);
        }
    }
}
