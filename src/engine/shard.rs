//! A shard: the single writer that owns one partition's (or one replay's) aggregation
//! state. No locks: the per-event path is a map lookup, a dedup insert and a histogram
//! record on memory only this shard touches.

use super::bucket::OpenBuckets;
use super::correction::Staged;
use super::dedup::{dedup_key, Dedup, DedupKey};
use super::keys::KeyTable;
use super::ClosedBucket;
use crate::config::Config;
use crate::event::DeliveryEvent;
use crate::time::Micros;
use std::sync::Arc;

/// What became of one validated record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ingest {
    Counted,
    /// Same `(event_id, attempt)` already counted.
    Duplicate,
    /// Its bucket is closed but within the correction horizon: staged, and counted (or
    /// found a duplicate) when the pipeline resolves corrections at its next commit.
    Staged,
    /// Its bucket closed longer ago than the correction horizon; quarantine it.
    TooLate,
}

/// Running totals a shard keeps about itself (exported as self-metrics).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ShardTally {
    /// Records counted, on time or as corrections.
    pub counted: u64,
    pub duplicates: u64,
    /// Rejected as older than the correction horizon.
    pub too_late: u64,
    /// Records counted into corrections of closed buckets (part of `counted`).
    pub corrected: u64,
}

pub struct Shard {
    pub(super) bucket_us: Micros,
    pub(super) lateness_us: Micros,
    /// How long after it closed a bucket still takes corrections (0: never).
    pub(super) horizon_us: Micros,
    pub(super) keys: KeyTable,
    pub(super) open: OpenBuckets,
    pub(super) max_event_time: Option<Micros>,
    /// Every bucket starting before this is closed; records for them are late.
    pub(super) closed_before: Micros,
    pub(super) dedup: Dedup,
    pub(super) closed: Vec<ClosedBucket>,
    /// Key sets of the buckets closed since the last [`Shard::take_closed_keys`] (kept
    /// only with a correction horizon: the store keeps them until it passes).
    pub(super) closed_keys: Vec<(i64, Vec<DedupKey>)>,
    /// Late records within the horizon, waiting for [`Shard::take_staged`].
    pub(super) staged: Vec<Staged>,
    pub tally: ShardTally,
}

impl Shard {
    pub fn new(config: Arc<Config>) -> Self {
        Self {
            bucket_us: config.engine.bucket.0,
            lateness_us: config.engine.allowed_lateness.0,
            horizon_us: config.engine.correction_horizon.0,
            open: OpenBuckets::new(config.engine.bucket.0, config.engine.allowed_lateness.0),
            keys: KeyTable::new(config),
            max_event_time: None,
            closed_before: Micros::MIN,
            dedup: Dedup::default(),
            closed: Vec::new(),
            closed_keys: Vec::new(),
            staged: Vec::new(),
            tally: ShardTally::default(),
        }
    }

    #[inline]
    pub fn bucket_start(&self, t: Micros) -> Micros {
        t.div_euclid(self.bucket_us) * self.bucket_us
    }

    /// Newest event time seen minus the allowed lateness.
    pub fn watermark(&self) -> Option<Micros> {
        self.max_event_time
            .map(|t| t.saturating_sub(self.lateness_us))
    }

    pub fn max_event_time(&self) -> Option<Micros> {
        self.max_event_time
    }

    pub fn keys(&self) -> &KeyTable {
        &self.keys
    }

    pub fn open_buckets(&self) -> usize {
        self.open.len()
    }

    pub fn dedup_len(&self) -> usize {
        self.dedup.len()
    }

    /// The dedup keys by bucket start, each bucket's sorted (for tests and diagnostics:
    /// it copies them all).
    pub fn dedup_entries(&self) -> Vec<(Micros, Vec<super::dedup::DedupKey>)> {
        self.dedup
            .entries()
            .into_iter()
            .map(|(ordinal, mut keys)| {
                keys.sort_unstable();
                (ordinal * self.bucket_us, keys)
            })
            .collect()
    }

    #[inline]
    pub fn ingest(&mut self, ev: &DeliveryEvent) -> Ingest {
        // The dedup probe is this path's one random access into a table that, on dense
        // traffic, does not stay in cache: its line loads while the bucket and the key
        // are looked up.
        let dkey = dedup_key(&ev.event_id, ev.attempt);
        // The one division on this path (an i64 `idiv` is tens of cycles).
        let ordinal = ev.completed_at.div_euclid(self.bucket_us);
        self.dedup.prefetch(dkey, ordinal);
        let bucket = ordinal * self.bucket_us;
        if bucket < self.closed_before {
            return self.stage(ev, dkey, ordinal);
        }
        // Only looked up here: a new key is interned (and an overflow counted) once the
        // record is known not to be a duplicate.
        let found = self.keys.find(&ev.tenant, &ev.platform);
        if !self.dedup.insert(dkey, ordinal) {
            self.tally.duplicates += 1;
            return Ingest::Duplicate;
        }
        let key = match found {
            Some(id) => id,
            None => self.keys.resolve(&ev.tenant, &ev.platform, ev.direction),
        };
        let target = self.keys.info(key).target_latency_us;
        self.keys.touch(key, ev.completed_at);
        // Advance first: what this record closes is older than its own bucket (lateness
        // is not negative), and its bucket's slot is then free of anything older.
        if self.max_event_time.is_none_or(|m| ev.completed_at > m) {
            self.max_event_time = Some(ev.completed_at);
            let wm = ev.completed_at.saturating_sub(self.lateness_us);
            // Only a watermark a whole bucket past the last close closes anything; most
            // records move it less, and skip the division.
            if wm >= self.closed_before.saturating_add(self.bucket_us) {
                self.close_before(self.bucket_start(wm));
            }
        }
        self.open
            .stats_at(ordinal, key, self.keys.info(key))
            .record(ev, target);
        self.tally.counted += 1;
        Ingest::Counted
    }

    /// A record for a closed bucket: staged if the bucket closed within the correction
    /// horizon, else too late. Out of line: the on-time path stays tight.
    #[cold]
    #[inline(never)]
    fn stage(&mut self, ev: &DeliveryEvent, dkey: DedupKey, ordinal: i64) -> Ingest {
        if ordinal < self.correction_floor() {
            self.tally.too_late += 1;
            return Ingest::TooLate;
        }
        let key = match self.keys.find(&ev.tenant, &ev.platform) {
            Some(id) => id,
            None => self.keys.resolve(&ev.tenant, &ev.platform, ev.direction),
        };
        let age = self.max_event_time.unwrap_or(ev.completed_at) - ev.completed_at;
        self.staged
            .push(Staged::of(ev, dkey, ordinal, key, age.max(0)));
        Ingest::Staged
    }

    /// Ordinal of the oldest bucket that still takes corrections: buckets that closed
    /// (ended at or before the close boundary) less than the horizon ago. Equal to the
    /// close boundary's ordinal without a horizon, so nothing closed takes any.
    pub fn correction_floor(&self) -> i64 {
        if self.closed_before == Micros::MIN {
            return i64::MIN;
        }
        self.closed_before
            .saturating_sub(self.horizon_us)
            .div_euclid(self.bucket_us)
    }

    /// The correction horizon (0: corrections are off).
    pub fn correction_horizon(&self) -> Micros {
        self.horizon_us
    }

    /// Late records staged since the last call, in arrival order.
    pub fn take_staged(&mut self) -> Vec<Staged> {
        std::mem::take(&mut self.staged)
    }

    /// Staged records not yet taken.
    pub fn staged_len(&self) -> usize {
        self.staged.len()
    }

    /// Key sets of the buckets closed since the last call: (ordinal, keys).
    pub fn take_closed_keys(&mut self) -> Vec<(i64, Vec<DedupKey>)> {
        std::mem::take(&mut self.closed_keys)
    }

    /// Closes every bucket that ends at or before `watermark` (idle partitions are
    /// advanced this way by the service). Never moves backwards.
    pub fn advance_watermark(&mut self, watermark: Micros) {
        if self
            .max_event_time
            .is_none_or(|m| m < watermark + self.lateness_us)
        {
            self.max_event_time = Some(watermark.saturating_add(self.lateness_us));
        }
        self.close_before(self.bucket_start(watermark));
    }

    /// Closes every open bucket (end of a replay input).
    pub fn flush(&mut self) {
        if let Some(last) = self.open.last_start() {
            self.close_before(last + self.bucket_us);
        }
    }

    fn close_before(&mut self, before: Micros) {
        if before <= self.closed_before {
            return;
        }
        self.closed_before = before;
        let (closed, width_us) = (&mut self.closed, self.bucket_us);
        self.open.close_before(before, |start, _, key, stats| {
            closed.push(ClosedBucket {
                key,
                start,
                width_us,
                stats,
            });
        });
        // `before` is a bucket start: a whole number of buckets.
        let ordinal = before.div_euclid(self.bucket_us);
        if self.horizon_us > 0 {
            self.dedup.evict_before_into(ordinal, &mut self.closed_keys);
        } else {
            self.dedup.evict_before(ordinal);
        }
    }

    /// Buckets closed since the last call, oldest first. A drain, so the buffer keeps
    /// its capacity for callers that take after every record.
    pub fn take_closed(&mut self) -> std::vec::Drain<'_, ClosedBucket> {
        self.closed.drain(..)
    }

    /// Buckets closed and not yet taken ([`Shard::take_closed`]).
    pub fn closed_len(&self) -> usize {
        self.closed.len()
    }

    pub fn closed_before(&self) -> Micros {
        self.closed_before
    }
}
