//! Folding: bucket rows older than `store.minute_retention` become one row per (source,
//! tenant, platform, hour), exactly — counters summed, latency histograms merged — so a
//! store grows by hours, not minutes, past the retention, and every scorecard (whose
//! days and weeks are whole hours) reads the same figures from it.
//!
//! A day is folded per transaction, oldest first, so the service's commits wait for one
//! short transaction at a time. Rows shorter than an hour are found through a partial
//! index (`buckets_to_fold`), so the search costs nothing for what is already folded. An
//! hourly row already there (rows written into a folded hour later, a correction, a
//! replay) is added to, never replaced.

use super::{counters_at, direction_of, SqliteStore, StoreError, StoreWriter};
use crate::engine::keys::KeyInfo;
use crate::engine::{ClosedBucket, Stats};
use crate::store::Folded;
use crate::time::{Micros, MICROS_PER_DAY, MICROS_PER_HOUR, MICROS_PER_MILLI};
use rusqlite::params;
use std::collections::btree_map::{BTreeMap, Entry};
use std::sync::Arc;

const HOUR_MS: i64 = MICROS_PER_HOUR / MICROS_PER_MILLI;

impl StoreWriter<'_> {
    /// Folds the rows shorter than an hour that start in `[from_ms, to_ms)` (whole hours)
    /// into hourly rows. Returns how many rows it folded.
    pub fn fold_hours(&self, from_ms: i64, to_ms: i64) -> Result<u64, StoreError> {
        let mut stmt = self.tx.prepare_cached(
            "SELECT source, tenant, platform, direction, bucket_start_ms, target_latency_ms,
                    attempts, events, delivered, failed, dead_lettered, on_time, retried,
                    max_retries, latency_sum_us, latency_hist
             FROM buckets INDEXED BY buckets_to_fold
             WHERE bucket_secs < 3600 AND bucket_start_ms >= ?1 AND bucket_start_ms < ?2",
        )?;
        let mut rows = stmt.query(params![from_ms, to_ms])?;
        let mut hours: BTreeMap<(String, String, String, i64), ClosedBucket> = BTreeMap::new();
        let mut folded = 0;
        while let Some(r) = rows.next()? {
            let (source, tenant, platform): (String, String, String) =
                (r.get(0)?, r.get(1)?, r.get(2)?);
            let start_ms: i64 = r.get(4)?;
            let hour_ms = start_ms.div_euclid(HOUR_MS) * HOUR_MS;
            folded += 1;
            let what = || format!("({source}, {tenant}, {platform}, {start_ms})");
            let direction = direction_of(&r.get::<_, String>(3)?, what)?;
            let latency = Stats::latencies_from_bytes(&r.get::<_, Vec<u8>>(15)?)
                .map_err(|why| StoreError::Corrupt { what: what(), why })?;
            let stats = Stats {
                counters: counters_at(r, 6)?,
                latency,
            };
            let target_ms: i64 = r.get(5)?;
            match hours.entry((source, tenant.clone(), platform.clone(), hour_ms)) {
                Entry::Occupied(mut e) => e.get_mut().stats.merge(&stats),
                Entry::Vacant(e) => {
                    e.insert(ClosedBucket {
                        key: Arc::new(KeyInfo {
                            tenant: tenant.into(),
                            platform: platform.into(),
                            direction,
                            target_latency_us: (target_ms.max(0) as u64) * 1000,
                        }),
                        start: hour_ms * MICROS_PER_MILLI,
                        width_us: MICROS_PER_HOUR,
                        stats,
                    });
                }
            }
        }
        drop(rows);
        if folded == 0 {
            return Ok(0);
        }
        self.tx.execute(
            "DELETE FROM buckets INDEXED BY buckets_to_fold
             WHERE bucket_secs < 3600 AND bucket_start_ms >= ?1 AND bucket_start_ms < ?2",
            params![from_ms, to_ms],
        )?;
        for ((source, ..), hour) in hours {
            // An hourly row already there (folded before) is added to, not replaced.
            self.add_correction(&source, &hour)?;
        }
        Ok(folded)
    }
}

impl SqliteStore {
    /// The start of the first row shorter than an hour in `[from_ms, end_ms)`.
    fn first_minute_row(&self, from_ms: i64, end_ms: i64) -> Result<Option<i64>, StoreError> {
        Ok(self.conn.query_row(
            "SELECT MIN(bucket_start_ms) FROM buckets INDEXED BY buckets_to_fold
             WHERE bucket_secs < 3600 AND bucket_start_ms >= ?1 AND bucket_start_ms < ?2",
            params![from_ms, end_ms],
            |r| r.get(0),
        )?)
    }

    /// Folds the rows shorter than an hour that start before `before` (rounded down to
    /// the hour), a day per transaction, at most `max_days` days, oldest first.
    pub fn fold_before(&mut self, before: Micros, max_days: usize) -> Result<Folded, StoreError> {
        let end_ms = before.div_euclid(MICROS_PER_HOUR) * HOUR_MS;
        let day_ms = MICROS_PER_DAY / MICROS_PER_MILLI;
        let mut done = Folded::default();
        let mut next = self.first_minute_row(i64::MIN, end_ms)?;
        for _ in 0..max_days {
            let Some(first) = next else {
                return Ok(done);
            };
            let from = first.div_euclid(day_ms) * day_ms;
            let to = (from + day_ms).min(end_ms);
            let w = self.writer()?;
            done.rows += w.fold_hours(from, to)?;
            w.commit()?;
            next = self.first_minute_row(to, end_ms)?;
        }
        done.more = next.is_some();
        Ok(done)
    }
}
