//! Folding a SQLite store (see [`crate::store::fold`]). Rows shorter than an hour are
//! found through a partial index (`buckets_to_fold`), so the search costs nothing for
//! what is already folded.

use super::{counters_at, direction_of, SqliteStore, StoreError, StoreWriter};
use crate::engine::Stats;
use crate::store::fold::{fold_days, HourlyFold, MinuteRow};
use crate::store::Folded;
use crate::time::Micros;
use rusqlite::params;

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
        let mut fold = HourlyFold::default();
        while let Some(r) = rows.next()? {
            let (source, tenant, platform): (String, String, String) =
                (r.get(0)?, r.get(1)?, r.get(2)?);
            let start_ms: i64 = r.get(4)?;
            let what = || format!("({source}, {tenant}, {platform}, {start_ms})");
            let direction = direction_of(&r.get::<_, String>(3)?, what)?;
            let latency = Stats::latencies_from_bytes(&r.get::<_, Vec<u8>>(15)?)
                .map_err(|why| StoreError::Corrupt { what: what(), why })?;
            fold.add(MinuteRow {
                source,
                tenant,
                platform,
                direction,
                start_ms,
                target_latency_ms: r.get(5)?,
                stats: Stats {
                    counters: counters_at(r, 6)?,
                    latency,
                },
            });
        }
        drop(rows);
        if fold.rows == 0 {
            return Ok(0);
        }
        self.tx.execute(
            "DELETE FROM buckets INDEXED BY buckets_to_fold
             WHERE bucket_secs < 3600 AND bucket_start_ms >= ?1 AND bucket_start_ms < ?2",
            params![from_ms, to_ms],
        )?;
        fold.write(self)
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
        let this = std::cell::RefCell::new(self);
        fold_days(
            before,
            max_days,
            |from, end| this.borrow().first_minute_row(from, end),
            |from, to| {
                let mut s = this.borrow_mut();
                let w = s.writer()?;
                let n = w.fold_hours(from, to)?;
                w.commit()?;
                Ok(n)
            },
        )
    }
}
