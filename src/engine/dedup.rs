//! At-least-once input: the same `(event_id, attempt)` in the same bucket counts once.
//!
//! Keys are xxh3-128 hashes cut to 96 bits (the high word and the low word's low 32 bits:
//! collision odds ≈ n²/2⁹⁷ for n keys in the lateness horizon, nil at any realistic
//! volume), kept in a table per open bucket, so closing a bucket drops its table whole. A
//! duplicate is therefore recognised as long as its bucket is open — the lateness
//! horizon; after that the copy is `late` and still not counted twice. Buckets are given
//! as ordinals (bucket start / bucket width), which the shard has computed anyway.
//!
//! A copy is found in the bucket its own `completed_at` falls in. A redelivery is the
//! same record, so it lands in the same bucket as the original; two records that share
//! an id and attempt but disagree on when the attempt completed are two records, each
//! counted in its own bucket (docs/engine.md, "Duplicates").

use super::prefetch;

pub type DedupKey = u128;

/// One-shot xxh3 of the id, seeded with the attempt (the streaming hasher costs several
/// times more on ids this short), in canonical form (see [`canonical`]).
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

/// The hasher of sets and maps keyed by [`DedupKey`]s or bucket ordinals (correction
/// caches, replays' ledgers, probed once per late or replayed record): a fraction of
/// std's SipHash cost. A key is already an xxh3 hash: its high word (64 uniform bits; the
/// low word keeps only 32) is its hash, as [`Dedup`]'s own tables use it. An ordinal is
/// mixed by one multiply (Fibonacci hashing), so consecutive buckets spread over the
/// table's groups. Like [`Dedup`]'s own tables, it trusts producers not to craft event
/// ids whose (unkeyed) xxh3 hashes collide.
#[derive(Debug, Default, Clone, Copy)]
pub struct KeyHasher(u64);

impl std::hash::Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    /// Any other key type: FNV-1a, correct if slow (only the two writes below are used).
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn write_u128(&mut self, key: u128) {
        self.0 ^= (key >> 64) as u64;
    }

    fn write_i64(&mut self, ordinal: i64) {
        self.0 = (self.0 ^ ordinal as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

/// A set of [`DedupKey`]s hashed by [`KeyHasher`].
pub type KeySet = std::collections::HashSet<DedupKey, std::hash::BuildHasherDefault<KeyHasher>>;

/// A map from bucket ordinals hashed by [`KeyHasher`].
pub type OrdinalMap<V> =
    std::collections::HashMap<i64, V, std::hash::BuildHasherDefault<KeyHasher>>;

/// One slot: 16 bytes, four to a cache line. `hi == 0`: empty.
#[derive(Debug, Clone, Copy)]
struct Slot {
    hi: u64,
    lo: u64,
}

const EMPTY: Slot = Slot { hi: 0, lo: 0 };

/// Smallest table (slots): 1 KB, so a long lateness horizon of quiet buckets stays cheap.
const MIN_SLOTS: usize = 64;

/// Retired tables kept for reuse.
const MAX_SPARE: usize = 4;

/// The keys of one bucket: open addressing, linear probing, doubled at three quarters
/// full. Nothing in it expires, so nothing is ever swept.
#[derive(Debug, Clone)]
struct Table {
    slots: Vec<Slot>,
    used: usize,
    /// Keys inserted since the last written delta, in insertion order, while the
    /// [`Dedup`] keeps a journal (see [`Dedup::delta`]).
    fresh: Vec<DedupKey>,
}

impl Default for Table {
    fn default() -> Self {
        Self {
            slots: vec![EMPTY; MIN_SLOTS],
            used: 0,
            fresh: Vec::new(),
        }
    }
}

impl Table {
    #[inline]
    fn home(&self, lo: u64) -> usize {
        lo as usize & (self.slots.len() - 1)
    }

    #[inline]
    fn prefetch(&self, key: DedupKey) {
        prefetch::read(&self.slots[self.home(key as u64)]);
    }

    /// True if the key is new (and now in the table).
    #[inline]
    fn insert(&mut self, key: DedupKey) -> bool {
        if 4 * (self.used + 1) > 3 * self.slots.len() {
            self.grow();
        }
        let (hi, lo) = ((key >> 64) as u64, key as u64);
        debug_assert!(hi != 0, "not a canonical key");
        let mask = self.slots.len() - 1;
        let mut i = self.home(lo);
        loop {
            let s = self.slots[i];
            if s.hi == 0 {
                break;
            }
            if s.hi == hi && s.lo == lo {
                return false;
            }
            i = (i + 1) & mask;
        }
        self.slots[i] = Slot { hi, lo };
        self.used += 1;
        true
    }

    #[cold]
    fn grow(&mut self) {
        let n = 2 * self.slots.len();
        let old = std::mem::replace(&mut self.slots, vec![EMPTY; n]);
        let mask = self.slots.len() - 1;
        for s in old.into_iter().filter(|s| s.hi != 0) {
            let mut i = self.home(s.lo);
            while self.slots[i].hi != 0 {
                i = (i + 1) & mask;
            }
            self.slots[i] = s;
        }
    }

    fn clear(&mut self) {
        self.slots.fill(EMPTY);
        self.used = 0;
        self.fresh.clear();
    }

    /// The keys, collected without a branch per slot: every slot is written and only a
    /// used one advances the end. On sparse traffic a bucket closes every few dozen
    /// records, and a `filter` over its slots, used or not at random, mispredicted on
    /// about half of them.
    ///
    /// Shrunk to the keys' count before it is returned: the key set is held until the
    /// next commit, and a backfill closes a bucket every few records, so keeping the
    /// allocation at the slot count (1 KB at least) made most of a backfill's memory.
    /// Shrinking gives the block's tail back to the allocator in place, without a copy.
    fn key_vec(&self) -> Vec<DedupKey> {
        let mut keys = vec![0; self.slots.len()];
        let mut n = 0;
        for s in &self.slots {
            keys[n] = (u128::from(s.hi) << 64) | u128::from(s.lo);
            n += usize::from(s.hi != 0);
        }
        keys.truncate(n);
        keys.shrink_to_fit();
        keys
    }

    fn keys(&self) -> impl Iterator<Item = DedupKey> + '_ {
        self.slots
            .iter()
            .filter(|s| s.hi != 0)
            .map(|s| (u128::from(s.hi) << 64) | u128::from(s.lo))
    }
}

/// The keys of every open bucket, a table per bucket.
///
/// Why a table per bucket rather than one table of (key, bucket): one table would hold
/// every key of the lateness horizon, probed at random by every record and swept of
/// expired entries now and then. Per bucket, most records probe the newest bucket's table
/// (a fraction of the horizon's keys), and closing a bucket clears its table instead of
/// sweeping.
#[derive(Debug, Clone)]
pub struct Dedup {
    /// Open buckets' tables, ordinals ascending (lateness / bucket width + 2 at most,
    /// since the shard only inserts records it has not found late).
    tables: Vec<(i64, Table)>,
    /// Cleared tables of closed buckets, for the next buckets (no fresh pages per bucket).
    spare: Vec<Table>,
    /// Buckets before this ordinal are closed (`i64::MIN`: none yet).
    horizon: i64,
    /// True once the keys are also kept outside (a store's table, written by deltas):
    /// new keys are then logged per table until [`Dedup::delta_written`].
    journal: bool,
}

impl Default for Dedup {
    fn default() -> Self {
        Self {
            tables: Vec::new(),
            spare: Vec::new(),
            horizon: i64::MIN,
            journal: false,
        }
    }
}

/// What a store must write so that its copy of the keys equals the [`Dedup`]'s: drop
/// the buckets before `horizon` (closed), then — after dropping every bucket if
/// `replace` — add each bucket's keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DedupDelta<'a> {
    pub replace: bool,
    pub horizon: i64,
    /// (ordinal, keys) of buckets with keys to add, ordinals ascending: a journal's keys
    /// borrowed (the caller encodes them once), or all of a table's, collected.
    pub buckets: Vec<(i64, std::borrow::Cow<'a, [DedupKey]>)>,
}

impl Dedup {
    /// Where the table of this ordinal is, newest bucket first (most records' bucket).
    #[inline]
    fn find(&self, ordinal: i64) -> Result<usize, usize> {
        match self.tables.last() {
            Some((o, _)) if *o == ordinal => Ok(self.tables.len() - 1),
            Some((o, _)) if *o < ordinal => Err(self.tables.len()),
            _ => self.tables.binary_search_by_key(&ordinal, |(o, _)| *o),
        }
    }

    /// Starts loading the line where `key`'s probe begins (a hint, no effect on answers).
    #[inline]
    pub fn prefetch(&self, key: DedupKey, ordinal: i64) {
        if let Ok(i) = self.find(ordinal) {
            self.tables[i].1.prefetch(key);
        }
    }

    /// True if the key (canonical: from [`dedup_key`]) is new in the bucket of this
    /// ordinal, and now remembered there. A bucket already closed remembers nothing.
    #[inline]
    pub fn insert(&mut self, key: DedupKey, ordinal: i64) -> bool {
        if ordinal < self.horizon {
            return true;
        }
        let i = match self.find(ordinal) {
            Ok(i) => i,
            Err(i) => {
                let t = self.spare.pop().unwrap_or_default();
                self.tables.insert(i, (ordinal, t));
                i
            }
        };
        let new = self.tables[i].1.insert(key);
        if new && self.journal {
            self.log(i, key);
        }
        new
    }

    /// Out of line: the engine path without a journal (replay, benches) keeps a tight
    /// probe loop; with one, a call per new key is noise beside its commit.
    #[cold]
    #[inline(never)]
    fn log(&mut self, i: usize, key: DedupKey) {
        self.tables[i].1.fresh.push(key);
    }

    /// The keys a store must add (and drop) to hold what this holds: the keys inserted
    /// since the last [`Dedup::delta_written`], or all of them (`replace`) before the
    /// first. Why deltas: a whole copy is every key of the lateness horizon (750 k per
    /// partition at 5,000 events/s), and writing it at every checkpoint would bound the
    /// rate the service can hold; a delta is the keys of one checkpoint interval.
    pub fn delta(&self) -> DedupDelta<'_> {
        use std::borrow::Cow;
        let buckets = self
            .tables
            .iter()
            .filter_map(|(o, t)| {
                let keys: Cow<'_, [DedupKey]> = if self.journal {
                    Cow::Borrowed(&t.fresh)
                } else {
                    Cow::Owned(t.keys().collect())
                };
                (!keys.is_empty()).then_some((*o, keys))
            })
            .collect();
        DedupDelta {
            replace: !self.journal,
            horizon: self.horizon,
            buckets,
        }
    }

    /// The latest [`Dedup::delta`] is durable: log only what comes after it. (A delta
    /// that was not written is simply taken again, larger, at the next attempt.)
    pub fn delta_written(&mut self) {
        for (_, t) in &mut self.tables {
            t.fresh.clear();
        }
        self.journal = true;
    }

    /// Whether the keys are also kept outside (see [`Dedup::delta`]).
    pub fn journal(&self) -> bool {
        self.journal
    }

    /// Forgets keys of buckets before this ordinal (never moves backwards).
    pub fn evict_before(&mut self, ordinal: i64) {
        self.evict(ordinal, None);
    }

    /// [`Dedup::evict_before`], handing each evicted bucket's keys to `out` as
    /// (ordinal, keys): the key sets of closed buckets that a store keeps for corrections.
    pub fn evict_before_into(&mut self, ordinal: i64, out: &mut Vec<(i64, Vec<DedupKey>)>) {
        self.evict(ordinal, Some(out));
    }

    fn evict(&mut self, ordinal: i64, mut out: Option<&mut Vec<(i64, Vec<DedupKey>)>>) {
        self.horizon = self.horizon.max(ordinal);
        let n = self.tables.partition_point(|(o, _)| *o < self.horizon);
        for (o, mut t) in self.tables.drain(..n) {
            if let Some(out) = out.as_deref_mut() {
                if t.used > 0 {
                    // Held until the next commit: 16 bytes a key.
                    out.push((o, t.key_vec()));
                }
            }
            // A table far larger than its bucket needed is one a burst grew (or reused
            // after a burst): freed, so memory does not stay at a burst's peak.
            let oversized = t.slots.len() > 8 * MIN_SLOTS && 8 * t.used < t.slots.len();
            if !oversized && self.spare.len() < MAX_SPARE {
                t.clear();
                self.spare.push(t);
            }
        }
    }

    /// Slots in the tables, spare ones included (memory: 16 bytes each).
    pub fn slots(&self) -> usize {
        self.tables
            .iter()
            .map(|(_, t)| t.slots.len())
            .chain(self.spare.iter().map(|t| t.slots.len()))
            .sum()
    }

    /// Live keys.
    pub fn len(&self) -> usize {
        self.tables.iter().map(|(_, t)| t.used).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// (ordinal, keys) pairs, ordinals ascending, each bucket's keys in table order. Not
    /// sorted: a checkpoint holds every key of the lateness horizon (750 k per partition
    /// at 5,000 events/s), sorting them would cost the apply thread dearly, and the order
    /// carries no meaning on restore.
    pub fn entries(&self) -> Vec<(i64, Vec<DedupKey>)> {
        self.tables
            .iter()
            .filter(|(_, t)| t.used > 0)
            .map(|(o, t)| (*o, t.keys().collect()))
            .collect()
    }

    /// A table holding these (ordinal, keys); keys are canonicalised (a checkpoint of an
    /// earlier version holds all 128 bits).
    pub fn restore(entries: impl IntoIterator<Item = (i64, Vec<DedupKey>)>) -> Self {
        let mut d = Dedup::default();
        d.insert_all(entries);
        d
    }

    /// Inserts (ordinal, keys) pairs, canonicalising each key.
    fn insert_all(&mut self, entries: impl IntoIterator<Item = (i64, Vec<DedupKey>)>) {
        for (b, keys) in entries {
            for k in keys {
                self.insert(canonical(k), b);
            }
        }
    }

    /// The keys a store holds (its deltas, see [`Dedup::delta`]) behind a horizon; new
    /// keys are logged from here on, since the store already has these.
    pub fn restore_journaled(
        horizon: i64,
        entries: impl IntoIterator<Item = (i64, Vec<DedupKey>)>,
    ) -> Self {
        let mut d = Dedup::default();
        d.evict_before(horizon);
        d.insert_all(entries);
        d.journal = true;
        d
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::Micros;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    #[test]
    fn key_hasher_spreads_ordinals_and_keeps_keys_apart() {
        use std::hash::BuildHasher;
        let h = std::hash::BuildHasherDefault::<KeyHasher>::default();
        // A week of minute buckets: every ordinal its own hash, and the top seven bits
        // (hashbrown's tag) varied, so consecutive buckets do not share a tag.
        let start = 29_000_000i64;
        let hashes: std::collections::BTreeSet<u64> =
            (start..start + 7 * 1440).map(|o| h.hash_one(o)).collect();
        assert_eq!(hashes.len(), 7 * 1440);
        let tags: std::collections::BTreeSet<u64> = hashes.iter().map(|x| x >> 57).collect();
        assert_eq!(tags.len(), 128, "ordinals fill every tag");
        // Keys hash by their high word only: keys that share it still count apart.
        let a = canonical(dedup_key("e-1", 1));
        let b = a ^ 1; // same high word, other low word
        assert_eq!(h.hash_one(a), h.hash_one(b));
        let set: KeySet = [a, b, a].into_iter().collect();
        assert_eq!(set.len(), 2);
        assert_ne!(h.hash_one(a), h.hash_one(canonical(dedup_key("e-2", 1))));
    }

    fn sorted(mut e: Vec<(i64, Vec<DedupKey>)>) -> Vec<(i64, Vec<DedupKey>)> {
        for (_, keys) in &mut e {
            keys.sort_unstable();
        }
        e
    }

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

    /// A key is a duplicate within its bucket only: the same key completing in another
    /// bucket is another record (see the module docs), and a bucket long closed remembers
    /// nothing.
    #[test]
    fn a_key_counts_once_per_bucket() {
        let mut d = Dedup::default();
        let k = dedup_key("e1", 1);
        assert!(d.insert(k, 0));
        assert!(d.insert(k, 1), "another bucket");
        assert!(!d.insert(k, 0));
        assert!(!d.insert(k, 1));
        d.evict_before(1);
        d.evict_before(3 << 30);
        assert!(d.insert(k, 1 << 32));
        assert!(!d.insert(k, 1 << 32));
        assert!(d.insert(k, 5), "before the horizon: not remembered");
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

    /// The model: a set of (key, bucket), evicted by `retain`.
    #[derive(Debug, Clone)]
    enum Op {
        Insert(u8, u8),
        Evict(u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            8 => (any::<u8>(), 0u8..12).prop_map(|(k, b)| Op::Insert(k, b)),
            1 => (0u8..12).prop_map(Op::Evict),
        ]
    }

    /// A store's copy of the keys, kept by applying deltas.
    fn apply(store: &mut std::collections::HashSet<(u128, i64)>, d: &DedupDelta) {
        if d.replace {
            store.clear();
        }
        store.retain(|(_, b)| *b >= d.horizon);
        for (b, keys) in &d.buckets {
            for k in keys.iter() {
                assert!(
                    store.insert((*k, *b)),
                    "a delta re-sent a key the store has"
                );
            }
        }
    }

    fn as_set(d: &Dedup) -> std::collections::HashSet<(u128, i64)> {
        d.entries()
            .into_iter()
            .flat_map(|(b, ks)| ks.into_iter().map(move |k| (k, b)))
            .collect()
    }

    #[derive(Debug, Clone)]
    enum JOp {
        Insert(u8, u8),
        Evict(u8),
        /// A commit: the delta is taken; written if true, lost (store refused) if false.
        Commit(bool),
        /// Restart from the store's copy.
        Restore,
    }

    fn jop() -> impl Strategy<Value = JOp> {
        prop_oneof![
            12 => (any::<u8>(), 0u8..12).prop_map(|(k, b)| JOp::Insert(k, b)),
            2 => (0u8..12).prop_map(JOp::Evict),
            3 => any::<bool>().prop_map(JOp::Commit),
            1 => Just(JOp::Restore),
        ]
    }

    proptest! {
        /// Deltas keep a store's copy equal to the keys at every written commit, through
        /// failed commits (the next delta carries their keys), closed buckets and restarts
        /// from the store's copy; a restored table answers like the one it replaced.
        #[test]
        fn deltas_keep_a_copy_equal(ops in proptest::collection::vec(jop(), 1..600)) {
            let mut d = Dedup::default();
            let mut store: std::collections::HashSet<(u128, i64)> = Default::default();
            // What the store's copy is of: the keys at the last written commit.
            let mut at_commit = Dedup::default();
            let mut horizon = i64::MIN;
            let mut written_once = false;
            for o in ops {
                match o {
                    JOp::Insert(k, b) => {
                        let key = canonical((u128::from(k) << 64) | (u128::from(k % 5) + 1));
                        d.insert(key, i64::from(b) + horizon.max(0));
                    }
                    JOp::Evict(h) => {
                        horizon = horizon.max(i64::from(h));
                        d.evict_before(i64::from(h));
                    }
                    JOp::Commit(ok) => {
                        let delta = d.delta();
                        prop_assert_eq!(delta.replace, !written_once);
                        if ok {
                            apply(&mut store, &delta);
                            d.delta_written();
                            written_once = true;
                            at_commit = d.clone();
                            prop_assert_eq!(&store, &as_set(&d));
                        }
                    }
                    JOp::Restore => {
                        if !written_once {
                            continue;
                        }
                        let mut rows: BTreeMap<i64, Vec<u128>> = BTreeMap::new();
                        for (k, b) in &store { rows.entry(*b).or_default().push(*k); }
                        d = Dedup::restore_journaled(at_commit.horizon, rows);
                        prop_assert_eq!(as_set(&d), as_set(&at_commit));
                        prop_assert!(d.journal());
                        horizon = at_commit.horizon;
                    }
                }
            }
        }
    }

    proptest! {
        /// Same answers as a set evicted by `retain`, through growth, reuse of cleared
        /// tables and buckets opened out of order.
        #[test]
        fn agrees_with_a_retained_set(ops in proptest::collection::vec(op(), 1..2000)) {
            let mut d = Dedup::default();
            let mut model: std::collections::HashSet<(u128, Micros)> = Default::default();
            let mut horizon = Micros::MIN;
            for o in ops {
                match o {
                    Op::Insert(k, b) => {
                        // Few distinct low words: long shared probe paths.
                        let key = canonical((u128::from(k) << 64) | (u128::from(k % 7) + 1));
                        let b = Micros::from(b) + horizon.max(0);
                        prop_assert_eq!(d.insert(key, b), model.insert((key, b)));
                    }
                    Op::Evict(h) => {
                        horizon = horizon.max(Micros::from(h));
                        model.retain(|(_, b)| *b >= horizon);
                        d.evict_before(Micros::from(h));
                    }
                }
                prop_assert_eq!(d.len(), model.len());
            }
            let mut want: BTreeMap<Micros, Vec<u128>> = BTreeMap::new();
            for (k, b) in &model { want.entry(*b).or_default().push(*k); }
            let want: Vec<_> = want.into_iter().map(|(b, mut ks)| { ks.sort_unstable(); (b, ks) }).collect();
            prop_assert_eq!(sorted(d.entries()), want);
        }
    }
}
