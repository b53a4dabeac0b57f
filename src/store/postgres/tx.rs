//! One PostgreSQL transaction of store writes ([`StoreTx`]): the same rows, in the same
//! order, as the SQLite store's, with the statements prepared once per connection.
//!
//! Rows of `buckets` and `closed_keys` are written in batches (one `INSERT … SELECT FROM
//! UNNEST(arrays)` per [`BATCH`] rows): a backfill or replay writes tens of thousands, and a
//! round trip per row would make the server's latency the replay's speed. Any other
//! statement first writes what is pending, so the transaction's statements apply in the
//! order they were made, as the SQLite store's do.
//!
//! Concurrency: a transaction takes the transaction-level advisory lock of every source
//! it writes ([`PgTx::lock_source`]) before it reads that source's fence, so two owners of
//! a partition on two instances commit one after the other, and the second sees the
//! first's checkpoint (and is refused as superseded) rather than adding its counts again.

use super::connect::{op_of, PgTarget};
use super::{counters_of, row_stats};
use crate::engine::{ClosedBucket, Stats};
use crate::store::checkpoint::DedupRows;
use crate::store::key_blocks::{self, KeyBlock, BLOCK_SPAN};
use crate::store::{RejectRow, StoreError, StoreTx, Unread};
use crate::time::{Micros, MICROS_PER_MILLI};
use postgres::types::ToSql;
use postgres::{GenericClient, Row, Statement, Transaction};
use std::cell::RefCell;
use std::collections::{HashMap, HashSet};

pub type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

/// Statements prepared on one connection, by their text.
pub type Prepared = HashMap<&'static str, Statement>;

/// `sql` prepared on `client` (a connection or a transaction on it), once per connection.
pub fn prepared(
    client: &mut impl GenericClient,
    cache: &mut Prepared,
    sql: &'static str,
    target: &PgTarget,
) -> Result<Statement, StoreError> {
    if let Some(s) = cache.get(sql) {
        return Ok(s.clone());
    }
    let s = client
        .prepare(sql)
        .map_err(|e| target.error(&op_of(sql), &e))?;
    cache.insert(sql, s.clone());
    Ok(s)
}

/// The key blocks that may hold a closed bucket's keys (`$1` source, `$2` the bucket's
/// start less [`BLOCK_SPAN`], `$3` its start): its key set at close and every
/// correction's keys since ([`keys_of_blocks`]).
pub const CLOSED_KEYS: &str = "SELECT bucket_start_us, last_start_us, keys FROM closed_keys
     WHERE source = $1 AND bucket_start_us > $2 AND bucket_start_us <= $3
       AND last_start_us >= $3";

/// The packed keys the blocks in `rows` (first start, last start, keys) hold for the
/// bucket starting at `start`, one block's after another.
pub fn keys_of_blocks(rows: &[Row], start: Micros, what: &str) -> Result<Vec<u8>, StoreError> {
    let corrupt = |why: String| StoreError::Corrupt {
        what: format!("closed_keys of {what}"),
        why,
    };
    let mut out = Vec::new();
    for r in rows {
        let (first, last, block) = (|| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))()
            .map_err(|e: postgres::Error| corrupt(e.to_string()))?;
        key_blocks::keys_of(first, last, block, start, &mut out).map_err(corrupt)?;
    }
    Ok(out)
}

/// Rows written per batched statement.
const BATCH: usize = 2_000;

/// Bucket rows not yet written, the last one of each key kept (an upsert replaces).
#[derive(Default)]
struct PendingBuckets {
    rows: Vec<(String, ClosedBucket)>,
    at: HashMap<(String, String, String, i64), usize>,
}

/// A key block's first and last bucket start.
type BlockSpan = (Micros, Micros);

pub struct PgTx<'a> {
    tx: RefCell<Transaction<'a>>,
    prepared: RefCell<&'a mut Prepared>,
    locked: RefCell<HashSet<String>>,
    target: &'a PgTarget,
    buckets: RefCell<PendingBuckets>,
    keys: RefCell<Vec<(String, KeyBlock)>>,
    /// The spans (first, last start, sorted) of blocks holding keys of replays other than
    /// the one named, read once.
    replayed_spans: RefCell<Option<(String, Vec<BlockSpan>)>>,
}

impl<'a> PgTx<'a> {
    pub fn new(tx: Transaction<'a>, prepared: &'a mut Prepared, target: &'a PgTarget) -> Self {
        Self {
            tx: RefCell::new(tx),
            prepared: RefCell::new(prepared),
            locked: RefCell::new(HashSet::new()),
            target,
            buckets: RefCell::default(),
            keys: RefCell::default(),
            replayed_spans: RefCell::default(),
        }
    }

    fn statement(&self, sql: &'static str) -> Result<Statement, StoreError> {
        prepared(
            &mut *self.tx.borrow_mut(),
            &mut self.prepared.borrow_mut(),
            sql,
            self.target,
        )
    }

    pub fn execute(&self, sql: &'static str, params: Params<'_>) -> Result<u64, StoreError> {
        self.flush()?;
        self.execute_now(sql, params)
    }

    fn execute_now(&self, sql: &'static str, params: Params<'_>) -> Result<u64, StoreError> {
        let s = self.statement(sql)?;
        self.tx
            .borrow_mut()
            .execute(&s, params)
            .map_err(|e| self.target.error(&op_of(sql), &e))
    }

    pub fn query(&self, sql: &'static str, params: Params<'_>) -> Result<Vec<Row>, StoreError> {
        self.flush()?;
        let s = self.statement(sql)?;
        self.tx
            .borrow_mut()
            .query(&s, params)
            .map_err(|e| self.target.error(&op_of(sql), &e))
    }

    /// Takes `source`'s advisory lock for the rest of the transaction (once).
    pub fn lock_source(&self, source: &str) -> Result<(), StoreError> {
        if self.locked.borrow().contains(source) {
            return Ok(());
        }
        self.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
            &[&source],
        )?;
        self.locked.borrow_mut().insert(source.to_string());
        Ok(())
    }

    /// Takes the folding lock if no other transaction holds it.
    pub fn try_lock_folding(&self) -> Result<bool, StoreError> {
        let rows = self.query(
            "SELECT pg_try_advisory_xact_lock(hashtextextended('slatrack folding', 0))",
            &[],
        )?;
        Ok(rows.first().is_some_and(|r| r.get::<_, bool>(0)))
    }
}

impl PgTx<'_> {
    /// Writes the pending bucket and key rows, a statement per table.
    fn flush(&self) -> Result<(), StoreError> {
        let buckets = std::mem::take(&mut *self.buckets.borrow_mut());
        if !buckets.rows.is_empty() {
            self.write_buckets(&buckets.rows)?;
        }
        let keys = std::mem::take(&mut *self.keys.borrow_mut());
        if !keys.is_empty() {
            let (mut src, mut first, mut last, mut blob) = (vec![], vec![], vec![], vec![]);
            for (s, k) in keys {
                src.push(s);
                first.push(k.first);
                last.push(k.last);
                blob.push(k.keys);
            }
            self.execute_now(
                "INSERT INTO closed_keys (source, bucket_start_us, last_start_us, keys)
                 SELECT * FROM UNNEST($1::TEXT[], $2::BIGINT[], $3::BIGINT[], $4::BYTEA[])",
                &[&src, &first, &last, &blob],
            )?;
        }
        Ok(())
    }

    fn write_buckets(&self, rows: &[(String, ClosedBucket)]) -> Result<(), StoreError> {
        let n = rows.len();
        let (mut source, mut tenant, mut platform, mut direction) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        let mut ints: [Vec<i64>; 12] = Default::default();
        let mut hist = Vec::with_capacity(n);
        for (s, b) in rows {
            let c = &b.stats.counters;
            source.push(s.as_str());
            tenant.push(&*b.key.tenant);
            platform.push(&*b.key.platform);
            direction.push(b.key.direction.as_str());
            let values = [
                b.start / MICROS_PER_MILLI,
                b.width_us / 1_000_000,
                c.attempts as i64,
                c.events as i64,
                c.delivered as i64,
                c.failed as i64,
                c.dead_lettered as i64,
                c.on_time as i64,
                c.retried as i64,
                c.max_retries as i64,
                c.latency_sum_us as i64,
                (b.key.target_latency_us / 1000) as i64,
            ];
            for (col, v) in ints.iter_mut().zip(values) {
                col.push(v);
            }
            hist.push(b.stats.histogram_bytes());
        }
        let [start, secs, attempts, events, delivered, failed, dead, on_time, retried, max_retries, latency_sum, target] =
            &ints;
        self.execute_now(
            "INSERT INTO buckets (source, tenant, platform, direction, bucket_start_ms, bucket_secs,
                attempts, events, delivered, failed, dead_lettered, on_time, retried, max_retries,
                latency_sum_us, target_latency_ms, latency_hist)
             SELECT * FROM UNNEST($1::TEXT[], $2::TEXT[], $3::TEXT[], $4::TEXT[], $5::BIGINT[],
                $6::BIGINT[], $7::BIGINT[], $8::BIGINT[], $9::BIGINT[], $10::BIGINT[], $11::BIGINT[],
                $12::BIGINT[], $13::BIGINT[], $14::BIGINT[], $15::BIGINT[], $16::BIGINT[], $17::BYTEA[])
             ON CONFLICT (source, tenant, platform, bucket_start_ms) DO UPDATE SET
                direction = excluded.direction, bucket_secs = excluded.bucket_secs,
                attempts = excluded.attempts, events = excluded.events,
                delivered = excluded.delivered, failed = excluded.failed,
                dead_lettered = excluded.dead_lettered, on_time = excluded.on_time,
                retried = excluded.retried, max_retries = excluded.max_retries,
                latency_sum_us = excluded.latency_sum_us,
                target_latency_ms = excluded.target_latency_ms,
                latency_hist = excluded.latency_hist",
            &[
                &source, &tenant, &platform, &direction, start, secs, attempts, events, delivered,
                failed, dead, on_time, retried, max_retries, latency_sum, target, &hist,
            ],
        )?;
        Ok(())
    }
}

impl StoreTx for PgTx<'_> {
    fn clear_source(&self, source: &str) -> Result<(), StoreError> {
        self.lock_source(source)?;
        self.execute("DELETE FROM buckets WHERE source = $1", &[&source])?;
        self.execute("DELETE FROM rejects WHERE source = $1", &[&source])?;
        self.execute("DELETE FROM closed_keys WHERE source = $1", &[&source])?;
        self.execute("DELETE FROM replay_rejects WHERE source = $1", &[&source])?;
        Ok(())
    }

    fn replayed_keys(&self, start: Micros, except: &str) -> Result<Vec<u8>, StoreError> {
        // Most buckets have no other replay's keys: one read of where there are any
        // saves a round trip per bucket.
        let known = matches!(&*self.replayed_spans.borrow(), Some((e, _)) if e == except);
        if !known {
            let spans = self
                .query(
                    "SELECT DISTINCT bucket_start_us, last_start_us FROM closed_keys
                     WHERE source >= 'replay:' AND source < 'replay;' AND source <> $1
                     ORDER BY 1, 2",
                    &[&except],
                )?
                .iter()
                .map(|r| (r.get::<_, i64>(0), r.get::<_, i64>(1)))
                .collect();
            *self.replayed_spans.borrow_mut() = Some((except.to_string(), spans));
        }
        let absent = matches!(&*self.replayed_spans.borrow(), Some((_, s)) if {
            let from = s.partition_point(|(first, _)| *first <= start - BLOCK_SPAN);
            let to = s.partition_point(|(first, _)| *first <= start);
            !s[from..to].iter().any(|(_, last)| *last >= start)
        });
        if absent {
            return Ok(Vec::new());
        }
        let rows = self.query(
            "SELECT bucket_start_us, last_start_us, keys FROM closed_keys
             WHERE bucket_start_us > $1 AND bucket_start_us <= $2 AND last_start_us >= $2
               AND source >= 'replay:' AND source < 'replay;' AND source <> $3",
            &[&(start - BLOCK_SPAN), &start, &except],
        )?;
        keys_of_blocks(&rows, start, "earlier replays")
    }

    fn replayed_rejects(&self, except: &str) -> Result<Vec<u64>, StoreError> {
        let rows = self.query(
            "SELECT record_hash FROM replay_rejects WHERE source <> $1",
            &[&except],
        )?;
        Ok(rows.iter().map(|r| r.get::<_, i64>(0) as u64).collect())
    }

    fn put_replay_rejects(&self, source: &str, hashes: &[u64]) -> Result<(), StoreError> {
        for h in hashes {
            self.execute(
                "INSERT INTO replay_rejects (source, record_hash) VALUES ($1, $2)
                 ON CONFLICT DO NOTHING",
                &[&source, &(*h as i64)],
            )?;
        }
        Ok(())
    }

    fn put_bucket(&self, source: &str, b: &ClosedBucket) -> Result<(), StoreError> {
        let full = {
            let mut p = self.buckets.borrow_mut();
            let key = (
                source.to_string(),
                b.key.tenant.to_string(),
                b.key.platform.to_string(),
                b.start / MICROS_PER_MILLI,
            );
            match p.at.get(&key) {
                Some(&i) => p.rows[i] = (source.to_string(), b.clone()),
                None => {
                    let i = p.rows.len();
                    p.rows.push((source.to_string(), b.clone()));
                    p.at.insert(key, i);
                }
            }
            p.rows.len() >= BATCH
        };
        if full {
            self.flush()?;
        }
        Ok(())
    }

    fn add_rejects(&self, source: &str, r: &RejectRow<'_>) -> Result<(), StoreError> {
        self.execute(
            "INSERT INTO rejects (source, tenant, platform, bucket_start_ms, reason, count)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (source, tenant, platform, bucket_start_ms, reason)
             DO UPDATE SET count = rejects.count + excluded.count",
            &[
                &source,
                &r.tenant,
                &r.platform,
                &(r.bucket / MICROS_PER_MILLI),
                &r.reason.code(),
                &(r.count as i64),
            ],
        )?;
        Ok(())
    }

    fn checkpoint_offset(&self, source: &str) -> Result<Option<i64>, StoreError> {
        self.lock_source(source)?;
        let rows = self.query(
            "SELECT next_offset FROM checkpoints WHERE source = $1",
            &[&source],
        )?;
        Ok(rows.first().map(|r| r.get(0)))
    }

    fn put_dedup(&self, source: &str, d: &DedupRows) -> Result<(), StoreError> {
        if d.replace {
            self.execute("DELETE FROM dedup_keys WHERE source = $1", &[&source])?;
        } else {
            self.execute(
                "DELETE FROM dedup_keys WHERE source = $1 AND bucket_start_us < $2",
                &[&source, &d.before],
            )?;
        }
        for (start, keys) in &d.buckets {
            self.execute(
                "INSERT INTO dedup_keys (source, bucket_start_us, keys) VALUES ($1, $2, $3)",
                &[&source, start, keys],
            )?;
        }
        Ok(())
    }

    fn closed_keys(&self, source: &str, start: Micros) -> Result<Vec<u8>, StoreError> {
        let rows = self.query(CLOSED_KEYS, &[&source, &(start - BLOCK_SPAN), &start])?;
        keys_of_blocks(&rows, start, source)
    }

    fn drop_closed_keys_before(&self, source: &str, before: Micros) -> Result<(), StoreError> {
        self.execute(
            "DELETE FROM closed_keys
             WHERE source = $1 AND bucket_start_us < $2 AND last_start_us < $2",
            &[&source, &before],
        )?;
        Ok(())
    }

    fn add_closed_keys(&self, source: &str, blocks: &[KeyBlock]) -> Result<(), StoreError> {
        let full = {
            let mut pending = self.keys.borrow_mut();
            pending.extend(blocks.iter().map(|b| (source.to_string(), b.clone())));
            pending.len() >= BATCH
        };
        if full {
            self.flush()?;
        }
        Ok(())
    }

    fn add_correction(&self, source: &str, b: &ClosedBucket) -> Result<(), StoreError> {
        let rows = self.query(
            "SELECT attempts, events, delivered, failed, dead_lettered, on_time, retried,
                    max_retries, latency_sum_us, latency_hist, bucket_secs
             FROM buckets WHERE source = $1 AND tenant = $2 AND platform = $3 AND bucket_start_ms = $4
             FOR UPDATE",
            &[
                &source,
                &&*b.key.tenant,
                &&*b.key.platform,
                &(b.start / MICROS_PER_MILLI),
            ],
        )?;
        let Some(r) = rows.first() else {
            return self.put_bucket(source, b);
        };
        let what = || {
            format!(
                "{source} {} {} bucket at {} ms",
                b.key.tenant,
                b.key.platform,
                b.start / MICROS_PER_MILLI
            )
        };
        let mut merged: Stats = row_stats(counters_of(r, 0), r.get(9), what)?;
        merged.merge(&b.stats);
        let secs: i64 = r.get(10);
        let row = ClosedBucket {
            key: b.key.clone(),
            start: b.start,
            width_us: (secs * 1_000_000).max(b.width_us),
            stats: merged,
        };
        self.put_bucket(source, &row)
    }

    fn queue_windows(&self, source: &str, summaries: &[Vec<u8>]) -> Result<(), StoreError> {
        if summaries.is_empty() {
            return Ok(());
        }
        let n = summaries.len() as i64;
        let last: i64 = self
            .query(
                "INSERT INTO window_queue_seq (source, last_seq) VALUES ($1, $2)
                 ON CONFLICT (source) DO UPDATE SET last_seq = window_queue_seq.last_seq + excluded.last_seq
                 RETURNING last_seq",
                &[&source, &n],
            )?
            .first()
            .map(|r| r.get(0))
            .ok_or_else(|| StoreError::Corrupt {
                what: format!("window_queue_seq of {source}"),
                why: "INSERT … RETURNING returned no row".into(),
            })?;
        let seqs: Vec<i64> = (last - n + 1..=last).collect();
        self.execute(
            "INSERT INTO window_queue (source, seq, summary)
             SELECT $1, * FROM UNNEST($2::BIGINT[], $3::BYTEA[])",
            &[&source, &seqs, &summaries],
        )?;
        Ok(())
    }

    fn put_unread(&self, source: &str, u: &Unread) -> Result<(), StoreError> {
        self.execute(
            "INSERT INTO unread (source, from_offset, to_offset, noticed_ms) VALUES ($1, $2, $3, $4)
             ON CONFLICT (source, from_offset) DO NOTHING",
            &[&source, &u.from, &u.to, &u.noticed_ms],
        )?;
        Ok(())
    }

    fn put_checkpoint(
        &self,
        source: &str,
        version: i64,
        next_offset: i64,
        state: &[u8],
        now_ms: i64,
    ) -> Result<(), StoreError> {
        self.execute(
            "INSERT INTO checkpoints (source, version, next_offset, state, updated_ms) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (source) DO UPDATE SET version = excluded.version,
                next_offset = excluded.next_offset, state = excluded.state, updated_ms = excluded.updated_ms",
            &[&source, &version, &next_offset, &state, &now_ms],
        )?;
        Ok(())
    }

    fn commit(self: Box<Self>) -> Result<(), StoreError> {
        self.flush()?;
        let target = self.target;
        self.tx
            .into_inner()
            .commit()
            .map_err(|e| target.error("COMMIT", &e))
    }
}
