//! At-least-once input: the same `(event_id, attempt)` counts once.
//!
//! Keys are xxh3-128 hashes cut to 96 bits (the high word and the low word's low 32 bits:
//! collision odds ≈ n²/2⁹⁷ for n keys in the lateness horizon, nil at any realistic
//! volume), each remembered with the bucket its record landed in, so closing a bucket
//! forgets its keys. A duplicate is therefore recognised as long as the original's bucket
//! is open — the lateness horizon; after that the copy is `late` and still not counted
//! twice. Buckets are given as ordinals (bucket start / bucket width), which the shard has
//! computed anyway.

use std::collections::BTreeMap;

pub type DedupKey = u128;

/// One-shot xxh3 of the id, seeded with the attempt (the streaming hasher measured ~3×
/// slower on ids this short), in canonical form (see [`canonical`]).
#[inline]
pub fn dedup_key(event_id: &str, attempt: u32) -> DedupKey {
    canonical(xxhash_rust::xxh3::xxh3_128_with_seed(
        event_id.as_bytes(),
        u64::from(attempt),
    ))
}

/// The 96 bits a [`Dedup`] keeps, with the high word never 0 (0 marks an empty slot; the
/// one hash it would take is folded onto 1). Keys from a checkpoint of an earlier version
/// (all 128 bits) are canonicalised on restore, so they still match.
#[inline]
pub fn canonical(key: u128) -> DedupKey {
    let hi = ((key >> 64) as u64).max(1);
    (u128::from(hi) << 64) | u128::from(key as u32)
}

/// One slot: 16 bytes, four to a cache line. `hi == 0`: empty.
#[derive(Debug, Clone, Copy)]
struct Slot {
    hi: u64,
    lo: u32,
    /// The bucket's ordinal, wrapped to 32 bits (unwrapped relative to `Dedup::newest`).
    ord: u32,
}

const EMPTY: Slot = Slot {
    hi: 0,
    lo: 0,
    ord: 0,
};

/// An open-addressing table (linear probing) of 16-byte slots holding the key and its
/// bucket, so the insert of a new key reads and writes one cache line. On dense traffic
/// the live keys do not stay in cache between two records that hit the same line, so the
/// lines a record touches are what the table costs: hashbrown's map touched a control
/// line and an entry line, a table of tags and separate entries (the previous version)
/// read a tag line and wrote an entry line.
///
/// Closing buckets only raises `horizon`: an entry of a bucket before it reads as absent,
/// and a later insert of its key overwrites it in place. Expired entries still hold their
/// slot (a probe must walk past them: nothing is ever removed from a chain) until a sweep
/// rebuilds the table from the live entries, which happens when three quarters of the
/// slots are used, when a burst has passed (see `evict_before`), or before the entries
/// would span 2³¹ buckets (a wrapped ordinal is unwrapped relative to the newest one).
#[derive(Debug, Clone)]
pub struct Dedup {
    slots: Vec<Slot>,
    /// The live slots during a sweep (kept for its capacity).
    scratch: Vec<Slot>,
    /// Slots holding a key, live or expired.
    used: usize,
    /// Entries of buckets before this ordinal are expired (`i64::MIN`: none yet).
    horizon: i64,
    /// No entry's ordinal is below this (`i64::MAX`: none).
    floor: i64,
    /// Inserts since the last mark, and the newest bucket inserted into before it: once
    /// the horizon has passed that bucket, every live entry is one of those inserts. That
    /// bound lets a table that a burst grew shrink once the burst has passed, without
    /// waiting for it to fill again.
    inserts_since_mark: usize,
    newest: i64,
    newest_at_mark: i64,
}

/// Smallest table (slots); 16 KB.
const MIN_SLOTS: usize = 1024;

/// The widest span of ordinals the table holds (see `Dedup`): half the wrapped range.
const MAX_SPAN: i64 = 1 << 31;

impl Default for Dedup {
    fn default() -> Self {
        Self {
            slots: vec![EMPTY; MIN_SLOTS],
            scratch: Vec::new(),
            used: 0,
            horizon: i64::MIN,
            floor: i64::MAX,
            inserts_since_mark: 0,
            newest: i64::MIN,
            newest_at_mark: i64::MIN,
        }
    }
}

impl Dedup {
    #[inline]
    fn home(&self, lo: u32) -> usize {
        lo as usize & (self.slots.len() - 1)
    }

    /// The ordinal of an entry: every entry lies less than 2³² buckets behind `newest`.
    #[inline]
    fn unwrap(&self, ord: u32) -> i64 {
        self.newest - i64::from((self.newest as u32).wrapping_sub(ord))
    }

    /// Whether an entry of this (wrapped) ordinal is at or past the horizon.
    #[inline]
    fn is_live(&self, ord: u32) -> bool {
        self.unwrap(ord) >= self.horizon
    }

    /// Starts loading the line where `key`'s probe begins (a hint, no effect on answers).
    #[inline]
    pub fn prefetch(&self, key: DedupKey) {
        super::prefetch::read(&self.slots[self.home(key as u32)]);
    }

    /// True if the key (canonical: from [`dedup_key`]) is new, and now remembered under
    /// the bucket of this ordinal.
    #[inline]
    pub fn insert(&mut self, key: DedupKey, ordinal: i64) -> bool {
        if 4 * self.used >= 3 * self.slots.len() {
            self.sweep();
        }
        if ordinal > self.newest && ordinal.saturating_sub(self.floor) >= MAX_SPAN {
            // Before `newest` moves: the sweep unwraps the entries relative to it.
            self.sweep();
        }
        debug_assert!(
            ordinal.saturating_sub(self.floor) < MAX_SPAN,
            "live entries too far apart"
        );
        self.inserts_since_mark += 1;
        self.newest = self.newest.max(ordinal);
        self.floor = self.floor.min(ordinal);
        let (hi, lo) = ((key >> 64) as u64, key as u32);
        debug_assert!(hi != 0, "not a canonical key");
        let (mask, ord) = (self.slots.len() - 1, ordinal as u32);
        let mut i = self.home(lo);
        loop {
            let s = self.slots[i];
            if s.hi == 0 {
                break;
            }
            if s.hi == hi && s.lo == lo {
                if self.is_live(s.ord) {
                    return false;
                }
                self.slots[i].ord = ord;
                return true;
            }
            i = (i + 1) & mask;
        }
        self.slots[i] = Slot { hi, lo, ord };
        self.used += 1;
        true
    }

    /// Forgets keys of buckets before this ordinal (never moves backwards).
    pub fn evict_before(&mut self, ordinal: i64) {
        self.horizon = self.horizon.max(ordinal);
        if self.horizon > self.newest_at_mark {
            // At most `inserts_since_mark` entries are live: past a burst, they would fit
            // in an eighth of the table.
            if self.slots.len() > MIN_SLOTS && 8 * self.inserts_since_mark < self.slots.len() {
                self.sweep();
            }
            self.inserts_since_mark = 0;
            self.newest_at_mark = self.newest;
        }
    }

    /// Rebuilds the table from its live entries, at four times their number (or more)
    /// slots: the next sweep is then at least half a table of inserts away, and a table a
    /// burst grew gives its memory back. At the same size the table is reused (cleared
    /// in place), so a steady sweep neither allocates nor faults in fresh pages.
    #[cold]
    fn sweep(&mut self) {
        let mut live = std::mem::take(&mut self.scratch);
        live.clear();
        live.extend(
            self.slots
                .iter()
                .filter(|s| s.hi != 0 && self.is_live(s.ord))
                .copied(),
        );
        let n = (4 * live.len()).next_power_of_two().max(MIN_SLOTS);
        if n == self.slots.len() {
            self.slots.fill(EMPTY);
        } else {
            self.slots = vec![EMPTY; n];
        }
        let mask = n - 1;
        for s in &live {
            let mut i = self.home(s.lo);
            while self.slots[i].hi != 0 {
                i = (i + 1) & mask;
            }
            self.slots[i] = *s;
        }
        self.used = live.len();
        self.floor = live
            .iter()
            .map(|s| self.unwrap(s.ord))
            .min()
            .unwrap_or(i64::MAX);
        // Kept for the next sweep, unless a burst left it far larger than what is live.
        if live.capacity() > 4 * live.len().max(MIN_SLOTS) {
            live = Vec::new();
        }
        self.scratch = live;
    }

    /// Live (key, ordinal) pairs. The ordinal is unwrapped relative to the newest bucket
    /// inserted (live entries lie between the horizon and it).
    fn live(&self) -> impl Iterator<Item = (DedupKey, i64)> + '_ {
        self.slots
            .iter()
            .filter(|s| s.hi != 0 && self.is_live(s.ord))
            .map(|s| {
                (
                    (u128::from(s.hi) << 64) | u128::from(s.lo),
                    self.unwrap(s.ord),
                )
            })
    }

    /// Slots in the table (memory: 16 bytes each).
    pub fn slots(&self) -> usize {
        self.slots.len()
    }

    /// Live keys (a scan: not for the per-record path).
    pub fn len(&self) -> usize {
        self.live().count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// (ordinal, keys) pairs, ordinals ascending and keys sorted (checkpoints are then
    /// byte-identical for identical state).
    pub fn entries(&self) -> Vec<(i64, Vec<DedupKey>)> {
        let mut by_bucket: BTreeMap<i64, Vec<DedupKey>> = BTreeMap::new();
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

    /// A table holding these (ordinal, keys); keys are canonicalised (a checkpoint of an
    /// earlier version holds all 128 bits).
    pub fn restore(entries: impl IntoIterator<Item = (i64, Vec<DedupKey>)>) -> Self {
        let mut d = Dedup::default();
        for (b, keys) in entries {
            for k in keys {
                d.insert(canonical(k), b);
            }
        }
        d
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::Micros;
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

    /// Ordinals are kept in 32 bits: an entry far enough behind the horizon would wrap
    /// round to look live again, unless a sweep has removed it first.
    #[test]
    fn an_ancient_entry_does_not_wrap_round_to_live() {
        let mut d = Dedup::default();
        let k = dedup_key("e1", 1);
        assert!(d.insert(k, 0));
        d.evict_before(1);
        d.evict_before(3 << 30);
        assert!(d.insert(k, 1 << 32), "same wrapped ordinal, long expired");
        assert!(!d.insert(k, 1 << 32));
        assert_eq!(d.entries(), vec![(1 << 32, vec![k])]);
    }

    /// A checkpoint taken before any bucket closed restores a horizon far below every
    /// entry: the entries are still live.
    #[test]
    fn a_horizon_far_below_the_entries_leaves_them_live() {
        let k = dedup_key("e1", 1);
        let mut d = Dedup::restore([(29_000_000, vec![k])]);
        d.evict_before(i64::MIN.div_euclid(60_000_000));
        assert!(!d.insert(k, 29_000_000), "still a duplicate");
        assert_eq!(d.len(), 1);
        d.evict_before(29_000_001);
        assert!(d.insert(k, 29_000_001));
    }

    /// A checkpoint of the previous version holds whole 128-bit keys.
    #[test]
    fn full_width_keys_restore_to_the_same_keys() {
        let full = xxhash_rust::xxh3::xxh3_128_with_seed(b"e1", 1);
        let d0 = Dedup::restore([(5, vec![full])]);
        let mut d = d0.clone();
        assert!(!d.insert(dedup_key("e1", 1), 5));
        assert_eq!(d0.entries(), vec![(5, vec![dedup_key("e1", 1)])]);
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
                        let key = canonical((u128::from(k) << 64) | (u128::from(k % 7) + 1));
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
