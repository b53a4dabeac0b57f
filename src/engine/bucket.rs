//! A shard's open buckets: a ring of event-time slots, one per bucket start, each holding
//! the per-key statistics of that bucket.
//!
//! Why a ring: the open buckets of a shard always lie between the watermark and the newest
//! event, at most `allowed_lateness / bucket + 1` consecutive starts, so the slot of a
//! bucket is its ordinal modulo the ring size and a record finds its statistics with two
//! indexed loads (slot, then the key's position in it) — no ordered map, no hashing, no
//! allocation once warm. A start that collides with another open one (only
//! after a restore under a shorter lateness) doubles the ring instead of failing.

use super::keys::{KeyId, KeyInfo};
use super::stats::Stats;
use crate::time::Micros;
use std::sync::Arc;

const ABSENT: u32 = u32::MAX;

/// An open bucket's key handle and statistics.
type OpenEntry = (Arc<KeyInfo>, Stats);

#[derive(Debug, Default)]
struct Slot {
    /// Meaningful only while `entries` is not empty.
    start: Micros,
    /// `None` only once taken by `close_before`, which then clears the vector: taking
    /// writes a tag, where `mem::take` would write a whole default `Stats` back (on sparse
    /// traffic nearly every record closes a bucket). Each entry holds its own handle on
    /// the key, taken when it opens: the closed bucket then moves it out rather than
    /// cloning it (an `Arc` clone is a locked instruction, which waits for every store
    /// before it; closing is all stores, opening nearly none).
    entries: Vec<(KeyId, Option<OpenEntry>)>,
    /// Position in `entries` by key id (`ABSENT`), grown on demand; reset entry by entry
    /// on close, so a slot is reused without a scan of every key.
    pos: Vec<u32>,
}

#[derive(Debug)]
pub struct OpenBuckets {
    width: Micros,
    slots: Vec<Slot>,
    /// Entries over all slots.
    len: usize,
    /// No open bucket's ordinal is below this (meaningful while `len > 0`): closing
    /// walks the ordinals from here to the watermark's, where sorting the open slots
    /// (and two vectors allocated for it) ran on every close.
    oldest: i64,
    /// Scratch for `close_before` (key, position) pairs, kept for its capacity.
    order: Vec<(KeyId, u32)>,
}

impl OpenBuckets {
    /// A ring sized for `lateness` behind the newest bucket.
    pub fn new(width: Micros, lateness: Micros) -> Self {
        // A power of two, so a slot is the ordinal's low bits, not a division (an i64
        // `idiv` costs tens of cycles, per record).
        let span = ((lateness.max(0) + width - 1) / width + 2) as usize;
        let mut slots = Vec::new();
        slots.resize_with(span.next_power_of_two(), Slot::default);
        Self {
            width,
            slots,
            len: 0,
            oldest: i64::MAX,
            order: Vec::new(),
        }
    }

    /// Slot of the bucket with this ordinal (start / width); two's complement keeps
    /// negative ordinals in range.
    #[inline]
    fn index(&self, ordinal: i64) -> usize {
        (ordinal as usize) & (self.slots.len() - 1)
    }

    /// The statistics of `key` (whose info is `info`) in the bucket starting at `start`,
    /// created empty if new.
    pub fn stats(&mut self, start: Micros, key: KeyId, info: &Arc<KeyInfo>) -> &mut Stats {
        self.stats_at(start.div_euclid(self.width), key, info)
    }

    /// [`OpenBuckets::stats`] by the bucket's ordinal (`start / width`), which the shard
    /// has computed anyway: the per-record path divides once.
    #[inline]
    pub fn stats_at(&mut self, ordinal: i64, key: KeyId, info: &Arc<KeyInfo>) -> &mut Stats {
        let start = ordinal * self.width;
        let mut i = self.index(ordinal);
        if !self.slots[i].entries.is_empty() && self.slots[i].start != start {
            self.grow_for(ordinal);
            i = self.index(ordinal);
        }
        let slot = &mut self.slots[i];
        slot.start = start;
        let k = key as usize;
        if k >= slot.pos.len() {
            slot.pos.resize(k + 1, ABSENT);
        }
        let p = slot.pos[k];
        let p = if p == ABSENT {
            // Reserved, then written in place (the key's handle and the `EMPTY` constant):
            // `push(Stats::default())` would build the entry with partial stores that its
            // copy into the vector then loads across (a store-forwarding stall).
            let n = slot.entries.len();
            slot.entries
                .resize_with(n + 1, || (key, Some((info.clone(), Stats::EMPTY))));
            if self.len == 0 {
                self.oldest = ordinal;
            } else {
                self.oldest = self.oldest.min(ordinal);
            }
            self.len += 1;
            let p = slot.entries.len() - 1;
            slot.pos[k] = p as u32;
            p
        } else {
            p as usize
        };
        &mut slot.entries[p]
            .1
            .get_or_insert_with(|| (info.clone(), Stats::default()))
            .1
    }

    /// Doubles the ring until the bucket with this ordinal has a free or matching slot.
    /// Ordinals distinct modulo n stay distinct modulo 2n, so the open slots move without
    /// colliding.
    #[cold]
    fn grow_for(&mut self, ordinal: i64) {
        loop {
            let n = self.slots.len() * 2;
            let old = std::mem::take(&mut self.slots);
            self.slots.resize_with(n, Slot::default);
            for s in old.into_iter().filter(|s| !s.entries.is_empty()) {
                let i = self.index(s.start.div_euclid(self.width));
                self.slots[i] = s;
            }
            let s = &self.slots[self.index(ordinal)];
            if s.entries.is_empty() || s.start == ordinal * self.width {
                return;
            }
        }
    }

    /// Entries over all open buckets.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The newest open bucket start.
    pub fn last_start(&self) -> Option<Micros> {
        self.open_slots().last().map(|&i| self.slots[i].start)
    }

    /// Indices of non-empty slots, oldest start first.
    fn open_slots(&self) -> Vec<usize> {
        let mut open: Vec<usize> = (0..self.slots.len())
            .filter(|&i| !self.slots[i].entries.is_empty())
            .collect();
        open.sort_unstable_by_key(|&i| self.slots[i].start);
        open
    }

    /// Every open (start, key, stats), by start then key (checkpoints).
    pub fn iter(&self) -> impl Iterator<Item = (Micros, KeyId, &Stats)> {
        self.open_slots().into_iter().flat_map(move |i| {
            let s = &self.slots[i];
            let mut order: Vec<(KeyId, &Stats)> = s
                .entries
                .iter()
                .filter_map(|(k, e)| Some((*k, &e.as_ref()?.1)))
                .collect();
            order.sort_unstable_by_key(|(k, _)| *k);
            order.into_iter().map(move |(k, st)| (s.start, k, st))
        })
    }

    /// Removes every bucket starting before `before` and hands its entries to `emit`,
    /// oldest start first and by key within a start (a deterministic order for the store).
    pub fn close_before(
        &mut self,
        before: Micros,
        mut emit: impl FnMut(Micros, KeyId, Arc<KeyInfo>, Stats),
    ) {
        if self.len == 0 {
            return;
        }
        // The first ordinal not closed: the bucket starting at or after `before`.
        let end = before.div_euclid(self.width) + i64::from(before.rem_euclid(self.width) != 0);
        if end <= self.oldest {
            return;
        }
        if end - self.oldest <= self.slots.len() as i64 {
            for ordinal in self.oldest..end {
                let i = self.index(ordinal);
                let s = &self.slots[i];
                if !s.entries.is_empty() && s.start == ordinal * self.width {
                    self.close_slot(i, &mut emit);
                }
            }
        } else {
            // A watermark jump past the whole ring: the open slots, oldest first.
            let due: Vec<usize> = self
                .open_slots()
                .into_iter()
                .take_while(|&i| self.slots[i].start < before)
                .collect();
            for i in due {
                self.close_slot(i, &mut emit);
            }
        }
        self.oldest = end;
    }

    /// Hands the entries of slot `i` to `emit` by key, and empties it.
    fn close_slot(&mut self, i: usize, emit: &mut impl FnMut(Micros, KeyId, Arc<KeyInfo>, Stats)) {
        let order = &mut self.order;
        let slot = &mut self.slots[i];
        self.len -= slot.entries.len();
        let start = slot.start;
        if slot.entries.len() * 8 >= slot.pos.len() {
            // At least one key in eight has an entry: walking the positions is key order
            // already, cheaper than sorting (key, position) pairs. The walk compacts the
            // used positions without a branch (every pair is written, only a used one
            // advances the end): used or not follows the traffic, and as a branch it was
            // mispredicted on a large share of keys.
            order.clear();
            order.resize(slot.pos.len(), (0, ABSENT));
            let mut n = 0;
            for (k, &p) in slot.pos.iter().enumerate() {
                order[n] = (k as KeyId, p);
                n += usize::from(p != ABSENT);
            }
            for &(k, p) in &order[..n] {
                slot.pos[k as usize] = ABSENT;
                if let Some((info, stats)) = slot.entries[p as usize].1.take() {
                    emit(start, k, info, stats);
                }
            }
        } else {
            order.clear();
            order.extend(
                slot.entries
                    .iter()
                    .enumerate()
                    .map(|(p, (k, _))| (*k, p as u32)),
            );
            order.sort_unstable();
            for &(k, p) in order.iter() {
                slot.pos[k as usize] = ABSENT;
                if let Some((info, stats)) = slot.entries[p as usize].1.take() {
                    emit(start, k, info, stats);
                }
            }
        }
        slot.entries.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    /// A key's handle (these tests only count, by key id).
    fn info() -> Arc<KeyInfo> {
        Arc::new(KeyInfo {
            tenant: "t".into(),
            platform: "p".into(),
            direction: crate::event::Direction::Inbound,
            target_latency_us: 0,
        })
    }

    proptest! {
        /// Against a model (an ordered map of (start, key) → count): whatever the order of
        /// records and closes, including closes at starts that are not bucket starts, jumps
        /// past the whole ring and records colliding in the ring, every entry is handed
        /// out once, oldest start first and by key within a start.
        #[test]
        fn closes_like_an_ordered_map(
            ops in prop::collection::vec(
                prop_oneof![
                    3 => (0i64..40, 0u32..6).prop_map(|(b, k)| (true, b, k)),
                    1 => (0i64..2_400, Just(0u32)).prop_map(|(t, _)| (false, t, 0)),
                ],
                0..200,
            ),
        ) {
            let mut o = OpenBuckets::new(60, 120);
            let mut model: BTreeMap<(Micros, KeyId), u64> = BTreeMap::new();
            let mut closed_before = Micros::MIN;
            for (record, x, key) in ops {
                if record {
                    let start = x * 60;
                    if start < closed_before {
                        continue; // late: the shard never records these
                    }
                    o.stats(start, key, &info()).counters.attempts += 1;
                    *model.entry((start, key)).or_default() += 1;
                } else {
                    let before = x;
                    let mut got = Vec::new();
                    o.close_before(before, |s, k, _, st| got.push(((s, k), st.counters.attempts)));
                    let keep = model.split_off(&(before, 0));
                    let want: Vec<_> = std::mem::replace(&mut model, keep).into_iter().collect();
                    prop_assert_eq!(got, want);
                    closed_before = closed_before.max(before);
                }
                prop_assert_eq!(o.len(), model.len());
            }
        }
    }

    fn starts(o: &OpenBuckets) -> Vec<(Micros, KeyId, u64)> {
        o.iter()
            .map(|(s, k, st)| (s, k, st.counters.attempts))
            .collect()
    }

    #[test]
    fn slots_hold_one_start_each_and_close_in_order() {
        let mut o = OpenBuckets::new(60, 120); // 4 slots (2 + 2, a power of two)
        for (start, key) in [(180, 2), (60, 1), (120, 1), (60, 0), (180, 2), (240, 5)] {
            o.stats(start, key, &info()).counters.attempts += 1;
        }
        assert_eq!(o.len(), 5);
        assert_eq!(
            starts(&o),
            vec![
                (60, 0, 1),
                (60, 1, 1),
                (120, 1, 1),
                (180, 2, 2),
                (240, 5, 1)
            ]
        );
        let mut closed = Vec::new();
        o.close_before(180, |s, k, _, st| closed.push((s, k, st.counters.attempts)));
        assert_eq!(closed, vec![(60, 0, 1), (60, 1, 1), (120, 1, 1)]);
        assert_eq!(o.len(), 2);
        assert_eq!(o.last_start(), Some(240));
        // A reused slot starts empty for every key.
        o.stats(300, 1, &info()).counters.attempts += 1;
        assert_eq!(o.stats(300, 0, &info()).counters.attempts, 0);
    }

    /// Key order within a start both when most keys are present (positions walked) and
    /// when few are among many ids (sorted).
    #[test]
    fn closes_in_key_order_however_few_keys_a_slot_holds() {
        let mut o = OpenBuckets::new(60, 60);
        for key in [7, 2, 5, 0] {
            o.stats(0, key, &info()).counters.attempts += 1;
        }
        for key in [900, 3, 400] {
            o.stats(60, key, &info()).counters.attempts += u64::from(key);
        }
        let mut closed = Vec::new();
        o.close_before(120, |s, k, _, st| closed.push((s, k, st.counters.attempts)));
        assert_eq!(
            closed,
            vec![
                (0, 0, 1),
                (0, 2, 1),
                (0, 5, 1),
                (0, 7, 1),
                (60, 3, 3),
                (60, 400, 400),
                (60, 900, 900)
            ]
        );
        assert!(o.is_empty());
        // Every position was reset: the reused slots (ordinals 4 and 5 of a ring of 4)
        // start empty for every key.
        assert_eq!(o.stats(240, 5, &info()).counters.attempts, 0);
        assert_eq!(o.stats(300, 400, &info()).counters.attempts, 0);
    }

    #[test]
    fn a_colliding_start_grows_the_ring_and_keeps_everything() {
        let mut o = OpenBuckets::new(10, 0); // 2 slots: starts two buckets apart collide
        for start in [0, 10, 20, 30, 70, -10] {
            o.stats(start, 3, &info()).counters.attempts += 1;
        }
        assert_eq!(o.len(), 6);
        let got: Vec<Micros> = o.iter().map(|(s, _, _)| s).collect();
        assert_eq!(got, vec![-10, 0, 10, 20, 30, 70]);
        let mut n = 0;
        o.close_before(Micros::MAX, |_, _, _, _| n += 1);
        assert_eq!((n, o.len()), (6, 0));
    }
}
