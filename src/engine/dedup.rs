//! At-least-once input: the same `(event_id, attempt)` counts once.
//!
//! Keys are 128-bit xxh3 hashes (collision odds ≈ n²/2¹²⁹: nil at any realistic volume),
//! each remembered with the bucket its record landed in, so closing a bucket forgets its
//! keys. A duplicate is therefore recognised as long as the original's bucket is open — the
//! lateness horizon; after that the copy is `late` and still not counted twice.

use crate::time::Micros;
use std::collections::BTreeMap;

pub type DedupKey = u128;

/// One-shot xxh3 of the id, seeded with the attempt (the streaming hasher measured ~3×
/// slower on ids this short).
#[inline]
pub fn dedup_key(event_id: &str, attempt: u32) -> DedupKey {
    xxhash_rust::xxh3::xxh3_128_with_seed(event_id.as_bytes(), u64::from(attempt))
}

/// A remembered key and the start of the bucket its record landed in.
#[derive(Debug, Clone, Copy)]
struct Entry {
    lo: u64,
    hi: u64,
    bucket: Micros,
}

/// An open-addressing table of keys (linear probing), split in two arrays: a probe reads
/// only `tags` (4 bytes a slot, so the probe of a new key, several slots, is one cache
/// line), and `entries` only where a tag matches (a duplicate, or a false match one time
/// in 2³²) or where a new key is written. On dense traffic the live keys do not stay in
/// cache between two records that hit the same line, so what a probe touches is what it
/// costs: the tags of 27 k live keys are 512 KB, where hashbrown's map (1–1.6 MB of
/// control bytes and 24-byte entries) was probed at a control line and an entry line.
///
/// Closing buckets only raises `horizon`: an entry of a bucket starting before it reads as
/// absent, and a later insert of its key overwrites it in place. Expired entries still hold
/// their slot (a probe must walk past them: nothing is ever removed from a chain) until a
/// sweep rebuilds the table from the live entries, which happens when three quarters of
/// the slots are used, or when a burst has passed (see `evict_before`).
#[derive(Debug, Clone)]
pub struct Dedup {
    /// 0 = empty; otherwise the key's high 32 bits with the lowest bit set.
    tags: Vec<u32>,
    entries: Vec<Entry>,
    /// The live entries during a sweep (kept for its capacity).
    scratch: Vec<Entry>,
    /// Slots holding a key, live or expired.
    used: usize,
    /// Entries of buckets starting before this are expired.
    horizon: Micros,
    /// Inserts since the last mark, and the newest bucket inserted into before it: once
    /// the horizon has passed that bucket, every live entry is one of those inserts. That
    /// bound lets a table that a burst grew shrink once the burst has passed, without
    /// waiting for it to fill again.
    inserts_since_mark: usize,
    newest: Micros,
    newest_at_mark: Micros,
}

/// What an entry holds before its slot is first used (never read: its tag is 0).
const UNUSED: Entry = Entry {
    lo: 0,
    hi: 0,
    bucket: Micros::MIN,
};

/// Smallest table (slots); 1024 tags are one page.
const MIN_SLOTS: usize = 1024;

impl Default for Dedup {
    fn default() -> Self {
        Self::with_slots(MIN_SLOTS)
    }
}

fn split(key: DedupKey) -> (u64, u64) {
    (key as u64, (key >> 64) as u64)
}

/// Never 0 (the empty tag). Taken from the high word: the slot comes from the low one.
#[inline]
fn tag_of(hi: u64) -> u32 {
    (hi >> 32) as u32 | 1
}

impl Dedup {
    fn with_slots(slots: usize) -> Self {
        debug_assert!(slots.is_power_of_two());
        Self {
            tags: vec![0; slots],
            entries: vec![UNUSED; slots],
            scratch: Vec::new(),
            used: 0,
            horizon: Micros::MIN,
            inserts_since_mark: 0,
            newest: Micros::MIN,
            newest_at_mark: Micros::MIN,
        }
    }

    #[inline]
    fn home(&self, lo: u64) -> usize {
        lo as usize & (self.tags.len() - 1)
    }

    /// True if the key is new (and now remembered under `bucket`).
    #[inline]
    pub fn insert(&mut self, key: DedupKey, bucket: Micros) -> bool {
        if 4 * self.used >= 3 * self.tags.len() {
            self.sweep();
        }
        self.inserts_since_mark += 1;
        self.newest = self.newest.max(bucket);
        let (lo, hi) = split(key);
        let tag = tag_of(hi);
        let mask = self.tags.len() - 1;
        let mut i = self.home(lo);
        loop {
            let t = self.tags[i];
            if t == 0 {
                break;
            }
            if t == tag {
                let e = &mut self.entries[i];
                if e.lo == lo && e.hi == hi {
                    if e.bucket >= self.horizon {
                        return false;
                    }
                    e.bucket = bucket;
                    return true;
                }
            }
            i = (i + 1) & mask;
        }
        self.tags[i] = tag;
        self.entries[i] = Entry { lo, hi, bucket };
        self.used += 1;
        true
    }

    /// Forgets keys of buckets starting before `closed_before` (never moves backwards).
    pub fn evict_before(&mut self, closed_before: Micros) {
        self.horizon = self.horizon.max(closed_before);
        if self.horizon > self.newest_at_mark {
            // At most `inserts_since_mark` entries are live: past a burst, they would fit
            // in an eighth of the table.
            if self.tags.len() > MIN_SLOTS && 8 * self.inserts_since_mark < self.tags.len() {
                self.sweep();
            }
            self.inserts_since_mark = 0;
            self.newest_at_mark = self.newest;
        }
    }

    /// Rebuilds the table from its live entries, at four times their number (or more)
    /// slots: the next sweep is then at least half a table of inserts away, and a table a
    /// burst grew gives its memory back. At the same size the arrays are reused (only the
    /// tags are cleared: an entry is read only where its tag matches), so a steady sweep
    /// neither allocates nor faults in fresh pages.
    #[cold]
    fn sweep(&mut self) {
        let mut live = std::mem::take(&mut self.scratch);
        live.clear();
        live.extend(self.live_entries().copied());
        let slots = (4 * live.len()).next_power_of_two().max(MIN_SLOTS);
        if slots == self.tags.len() {
            self.tags.fill(0);
        } else {
            self.tags = vec![0; slots];
            self.entries = vec![UNUSED; slots];
        }
        let mask = slots - 1;
        for e in &live {
            let mut i = self.home(e.lo);
            while self.tags[i] != 0 {
                i = (i + 1) & mask;
            }
            self.tags[i] = tag_of(e.hi);
            self.entries[i] = *e;
        }
        self.used = live.len();
        // Kept for the next sweep, unless a burst left it far larger than what is live.
        if live.capacity() > 4 * live.len().max(MIN_SLOTS) {
            live = Vec::new();
        }
        self.scratch = live;
    }

    fn live_entries(&self) -> impl Iterator<Item = &Entry> + '_ {
        self.tags
            .iter()
            .zip(&self.entries)
            .filter(|(t, e)| **t != 0 && e.bucket >= self.horizon)
            .map(|(_, e)| e)
    }

    fn live(&self) -> impl Iterator<Item = (DedupKey, Micros)> + '_ {
        self.live_entries()
            .map(|e| (u128::from(e.lo) | (u128::from(e.hi) << 64), e.bucket))
    }

    /// Slots in the table (memory: 28 bytes each).
    pub fn slots(&self) -> usize {
        self.tags.len()
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
        let burst = d.slots();
        assert!(burst >= 100_000);
        for minute in 1..=5i64 {
            d.evict_before(minute * 60);
            for i in 0..10u128 {
                assert!(d.insert(dedup_key(&format!("{minute}-{i}"), 1), minute * 60));
            }
        }
        assert!(d.slots() * 16 < burst, "{} of {burst}", d.slots());
        assert_eq!(d.len(), 10, "each close expired the minute before");
        // Steady traffic afterwards does not sweep at every close.
        let before = d.slots();
        for minute in 6..=20i64 {
            d.evict_before(minute * 60 - 120);
            for i in 0..10u128 {
                d.insert(dedup_key(&format!("{minute}-{i}"), 1), minute * 60);
            }
        }
        assert!(d.slots() <= before.max(1024));
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
