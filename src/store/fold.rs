//! Folding, the part every store shares: bucket rows older than `store.minute_retention`
//! become one row per (source, tenant, platform, hour), exactly — counters summed, latency
//! histograms merged — so a store grows by hours, not minutes, past the retention, and
//! every scorecard (whose days and weeks are whole hours) reads the same figures from it.
//!
//! A day is folded per transaction, oldest first, so the service's commits wait for one
//! short transaction at a time. An hourly row already there (rows written into a folded
//! hour later, a correction, a replay) is added to, never replaced.

use super::{Folded, StoreError, StoreTx};
use crate::engine::keys::KeyInfo;
use crate::engine::{ClosedBucket, Stats};
use crate::event::Direction;
use crate::time::{Micros, MICROS_PER_DAY, MICROS_PER_HOUR, MICROS_PER_MILLI};
use std::collections::btree_map::{BTreeMap, Entry};
use std::sync::Arc;

pub const HOUR_MS: i64 = MICROS_PER_HOUR / MICROS_PER_MILLI;

/// One row shorter than an hour, as read for folding.
pub struct MinuteRow {
    pub source: String,
    pub tenant: String,
    pub platform: String,
    pub direction: Direction,
    pub start_ms: i64,
    pub target_latency_ms: i64,
    pub stats: Stats,
}

/// Rows being folded, merged per (source, tenant, platform, hour).
#[derive(Default)]
pub struct HourlyFold {
    hours: BTreeMap<(String, String, String, i64), ClosedBucket>,
    pub rows: u64,
}

impl HourlyFold {
    pub fn add(&mut self, r: MinuteRow) {
        self.rows += 1;
        self.merge(r);
    }

    /// Merges `r` into its hour's row, which it returns.
    fn merge(&mut self, r: MinuteRow) -> &mut ClosedBucket {
        let hour_ms = r.start_ms.div_euclid(HOUR_MS) * HOUR_MS;
        match self
            .hours
            .entry((r.source, r.tenant.clone(), r.platform.clone(), hour_ms))
        {
            Entry::Occupied(e) => {
                let b = e.into_mut();
                b.stats.merge(&r.stats);
                b
            }
            Entry::Vacant(e) => e.insert(ClosedBucket {
                key: Arc::new(KeyInfo {
                    tenant: r.tenant.into(),
                    platform: r.platform.into(),
                    direction: r.direction,
                    target_latency_us: (r.target_latency_ms.max(0) as u64) * 1000,
                }),
                start: hour_ms * MICROS_PER_MILLI,
                width_us: MICROS_PER_HOUR,
                stats: r.stats,
            }),
        }
    }

    /// Merges a row already stored at an hour's start, `width_us` wide (not counted as
    /// folded): with every such row of the range merged, [`HourlyFold::replace`] writes
    /// the sums over them, as wide as the widest.
    pub fn merge_stored(&mut self, r: MinuteRow, width_us: Micros) {
        debug_assert_eq!(
            r.start_ms.rem_euclid(HOUR_MS),
            0,
            "only rows at an hour's start"
        );
        let b = self.merge(r);
        b.width_us = b.width_us.max(width_us);
    }

    /// Writes the hourly rows over the stored ones (see [`HourlyFold::merge_stored`]).
    pub fn replace(self, w: &dyn StoreTx) -> Result<u64, StoreError> {
        for ((source, ..), hour) in self.hours {
            w.put_bucket(&source, &hour)?;
        }
        Ok(self.rows)
    }

    /// Writes the hourly rows (after the caller deleted the rows they fold).
    pub fn write(self, w: &dyn StoreTx) -> Result<u64, StoreError> {
        for ((source, ..), hour) in self.hours {
            // An hourly row already there (folded before) is added to, not replaced.
            w.add_correction(&source, &hour)?;
        }
        Ok(self.rows)
    }
}

/// Folds the rows shorter than an hour that start before `before` (rounded down to the
/// hour), a day per call of `fold_day(from_ms, to_ms)` (one transaction each), at most
/// `max_days` days, oldest first. `first_row(from_ms, end_ms)` finds the start of the
/// first such row in a range.
pub fn fold_days(
    before: Micros,
    max_days: usize,
    mut first_row: impl FnMut(i64, i64) -> Result<Option<i64>, StoreError>,
    mut fold_day: impl FnMut(i64, i64) -> Result<u64, StoreError>,
) -> Result<Folded, StoreError> {
    let end_ms = before.div_euclid(MICROS_PER_HOUR) * HOUR_MS;
    let day_ms = MICROS_PER_DAY / MICROS_PER_MILLI;
    let mut done = Folded::default();
    let mut next = first_row(i64::MIN, end_ms)?;
    for _ in 0..max_days {
        let Some(first) = next else {
            return Ok(done);
        };
        let from = first.div_euclid(day_ms) * day_ms;
        let to = (from + day_ms).min(end_ms);
        done.rows += fold_day(from, to)?;
        next = first_row(to, end_ms)?;
    }
    done.more = next.is_some();
    Ok(done)
}
