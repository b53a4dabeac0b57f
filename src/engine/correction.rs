//! Corrections: records whose bucket the watermark has already closed, but no longer ago
//! than `engine.correction_horizon`. They are not rejected; they are counted into a
//! *correction* of their bucket — a partial bucket that the stores add to what they hold —
//! once deduplicated against every record already counted for that bucket.
//!
//! Why deferred to the commit: the keys of a closed bucket live in the store, not in RAM
//! (a week of keys at 5,000 events/s is billions). The shard only stages a late record
//! ([`Staged`]: its dedup key, bucket, key id and the numbers it adds). At the next
//! commit the pipeline resolves the staged records in arrival order against the closed
//! buckets' key sets ([`resolve`]), read through a bounded cache ([`KeyCache`]) from the
//! store, and writes the corrections and their new keys in the checkpoint's transaction.
//! A commit that fails leaves everything staged; a crash loses only what the checkpoint
//! never covered, which is read again. Either way each record is counted once.

use super::dedup::{DedupKey, KeySet, OrdinalMap};
use super::keys::{KeyId, KeyTable};
use super::stats::Stats;
use super::ClosedBucket;
use crate::event::{DeliveryEvent, Direction, Outcome};
use crate::time::Micros;
use std::collections::{HashMap, HashSet, VecDeque};

/// A late record waiting for its correction to be resolved: what it adds, without its
/// strings (its key is interned).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Staged {
    pub dkey: DedupKey,
    pub ordinal: i64,
    pub key: KeyId,
    /// Newest event time seen minus this record's `completed_at`, when it arrived.
    pub age_us: Micros,
    attempt: u32,
    max_attempts: u32,
    outcome: Outcome,
    enqueued_at: Micros,
    started_at: Micros,
    completed_at: Micros,
}

impl Staged {
    pub fn of(
        ev: &DeliveryEvent,
        dkey: DedupKey,
        ordinal: i64,
        key: KeyId,
        age_us: Micros,
    ) -> Self {
        Self {
            dkey,
            ordinal,
            key,
            age_us,
            attempt: ev.attempt,
            max_attempts: ev.max_attempts,
            outcome: ev.outcome,
            enqueued_at: ev.enqueued_at,
            started_at: ev.started_at,
            completed_at: ev.completed_at,
        }
    }

    /// Counts this record into `stats` exactly as the on-time path counts an event.
    fn record_into(&self, stats: &mut Stats, target_us: u64) {
        let ev = DeliveryEvent {
            event_id: String::new(),
            tenant: String::new(),
            platform: String::new(),
            direction: Direction::Inbound,
            attempt: self.attempt,
            max_attempts: self.max_attempts,
            outcome: self.outcome,
            enqueued_at: self.enqueued_at,
            started_at: self.started_at,
            completed_at: self.completed_at,
            http_status: None,
            error: None,
        };
        stats.record(&ev, target_us);
    }
}

/// The records one commit added to one closed bucket of one key.
#[derive(Debug, Clone)]
pub struct Correction {
    pub bucket: ClosedBucket,
}

/// What resolving the staged records of a commit made.
#[derive(Debug, Default)]
pub struct Resolution {
    /// Partial buckets to add to the stored ones, one per (key, bucket).
    pub corrections: Vec<Correction>,
    /// Keys now counted in closed buckets: (bucket ordinal, keys).
    pub keys: Vec<(i64, Vec<DedupKey>)>,
    pub counted: u64,
    pub duplicates: u64,
    /// Ages of the counted records (µs), for the lateness histogram.
    pub ages_us: Vec<Micros>,
}

impl Resolution {
    pub fn is_empty(&self) -> bool {
        self.counted == 0 && self.duplicates == 0
    }
}

/// Closed buckets' key sets, most recently used kept, at most `budget` keys in all (a
/// set larger than the budget is used for one resolution and not kept).
#[derive(Debug)]
pub struct KeyCache {
    budget: usize,
    held: usize,
    sets: OrdinalMap<KeySet>,
    /// Ordinals, least recently used first (an ordinal may appear more than once; only its
    /// last use counts).
    order: VecDeque<i64>,
    /// Loads from the store, for self-metrics.
    pub loads: u64,
}

impl KeyCache {
    pub fn new(budget: usize) -> Self {
        Self {
            budget,
            held: 0,
            sets: OrdinalMap::default(),
            order: VecDeque::new(),
            loads: 0,
        }
    }

    /// Keys held.
    pub fn len(&self) -> usize {
        self.held
    }

    pub fn is_empty(&self) -> bool {
        self.held == 0
    }

    /// Marks `ordinal`'s set most recently used. Records mostly fall in the bucket of the
    /// record before them: a use of the set already last in the order changes nothing.
    fn touch(&mut self, ordinal: i64) {
        if self.order.back() == Some(&ordinal) {
            return;
        }
        self.order.push_back(ordinal);
        if self.order.len() > 4 * self.sets.len() + 64 {
            let sets = &self.sets;
            let mut seen = HashSet::new();
            let mut kept: Vec<i64> = self
                .order
                .iter()
                .rev()
                .filter(|o| sets.contains_key(o) && seen.insert(**o))
                .copied()
                .collect();
            kept.reverse();
            self.order = kept.into();
        }
    }

    fn insert(&mut self, ordinal: i64, set: KeySet) {
        self.held += set.len();
        self.sets.insert(ordinal, set);
        self.touch(ordinal);
        self.shrink(ordinal);
    }

    /// Evicts least recently used sets (never `keep`) while over budget.
    fn shrink(&mut self, keep: i64) {
        while self.held > self.budget {
            let Some(o) = self.order.pop_front() else {
                break;
            };
            if o == keep {
                self.order.push_back(o);
                if self.sets.len() == 1 {
                    break;
                }
                continue;
            }
            if self.order.contains(&o) {
                continue;
            }
            if let Some(s) = self.sets.remove(&o) {
                self.held -= s.len();
            }
        }
    }

    /// Whether the set of `ordinal` holds `key`; a set not held is read by `load` and kept
    /// (most recently used first, within the budget).
    pub fn contains<E>(
        &mut self,
        ordinal: i64,
        key: DedupKey,
        load: impl FnOnce(i64) -> Result<Vec<DedupKey>, E>,
    ) -> Result<bool, E> {
        if let Some(set) = self.sets.get(&ordinal) {
            let hit = set.contains(&key);
            self.touch(ordinal);
            return Ok(hit);
        }
        self.loads += 1;
        let set: KeySet = load(ordinal)?.into_iter().collect();
        let hit = set.contains(&key);
        self.insert(ordinal, set);
        Ok(hit)
    }

    /// Adds keys that are now durable to the sets held (a set not held is read whole from
    /// the store next time, with them).
    pub fn absorb(&mut self, keys: &[(i64, Vec<DedupKey>)]) {
        for (ordinal, ks) in keys {
            if let Some(set) = self.sets.get_mut(ordinal) {
                for k in ks {
                    if set.insert(*k) {
                        self.held += 1;
                    }
                }
            }
        }
    }

    /// Forgets buckets before `ordinal` (past the correction horizon).
    pub fn evict_before(&mut self, ordinal: i64) {
        let held = &mut self.held;
        self.sets.retain(|o, s| {
            let keep = *o >= ordinal;
            if !keep {
                *held -= s.len();
            }
            keep
        });
    }

    /// Forgets everything (the store changed under this cache).
    pub fn clear(&mut self) {
        self.sets.clear();
        self.order.clear();
        self.held = 0;
    }
}

/// Resolves `staged` (in arrival order) against the closed buckets' keys: each set is
/// the cache's, else `load(ordinal)` — the store's keys of that bucket plus any not yet
/// written. Nothing in the cache changes but what `load` brought in: the keys this
/// resolution counts are returned and join the cache by [`KeyCache::absorb`] once
/// durable, so a failed commit leaves the cache equal to the store.
pub fn resolve<E>(
    staged: &[Staged],
    keys: &KeyTable,
    bucket_us: Micros,
    cache: &mut KeyCache,
    mut load: impl FnMut(i64) -> Result<Vec<DedupKey>, E>,
) -> Result<Resolution, E> {
    let mut out = Resolution::default();
    let mut added: OrdinalMap<KeySet> = OrdinalMap::default();
    let mut stats: HashMap<(KeyId, i64), Stats> = HashMap::new();
    let mut new_keys: OrdinalMap<Vec<DedupKey>> = OrdinalMap::default();
    for s in staged {
        if !cache.sets.contains_key(&s.ordinal) {
            let set: KeySet = load(s.ordinal)?.into_iter().collect();
            cache.loads += 1;
            cache.insert(s.ordinal, set);
        } else {
            cache.touch(s.ordinal);
        }
        let known = cache
            .sets
            .get(&s.ordinal)
            .is_some_and(|set| set.contains(&s.dkey));
        if known || !added.entry(s.ordinal).or_default().insert(s.dkey) {
            out.duplicates += 1;
            continue;
        }
        let target = keys.info(s.key).target_latency_us;
        s.record_into(
            stats.entry((s.key, s.ordinal)).or_insert(Stats::EMPTY),
            target,
        );
        new_keys.entry(s.ordinal).or_default().push(s.dkey);
        out.counted += 1;
        out.ages_us.push(s.age_us);
    }
    let mut corrections: Vec<Correction> = stats
        .into_iter()
        .map(|((key, ordinal), stats)| Correction {
            bucket: ClosedBucket {
                key: keys.info(key).clone(),
                start: ordinal * bucket_us,
                width_us: bucket_us,
                stats,
            },
        })
        .collect();
    corrections.sort_by(|a, b| {
        (a.bucket.start, &a.bucket.key.tenant, &a.bucket.key.platform).cmp(&(
            b.bucket.start,
            &b.bucket.key.tenant,
            &b.bucket.key.platform,
        ))
    });
    out.corrections = corrections;
    let mut keys: Vec<_> = new_keys.into_iter().collect();
    keys.sort_by_key(|(o, _)| *o);
    out.keys = keys;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_stays_within_its_budget_and_keeps_what_was_used_last() {
        let mut c = KeyCache::new(10);
        c.insert(1, (0..4).collect());
        c.insert(2, (0..4).collect());
        c.touch(1);
        c.insert(3, (0..4).collect());
        assert!(c.len() <= 10);
        assert!(c.sets.contains_key(&1) && c.sets.contains_key(&3));
        assert!(!c.sets.contains_key(&2), "least recently used goes first");
        // A set larger than the budget is held alone.
        c.insert(4, (0..50).collect());
        assert_eq!(c.sets.len(), 1);
        c.evict_before(5);
        assert!(c.is_empty());
    }
}
