//! What every transactional store (SQLite, PostgreSQL) offers, as two traits: the reads a
//! scorecard makes ([`StoreRead`]) and the writes of one transaction ([`StoreTx`]). The
//! pipeline, the replay ledger and the live path's commit ([`apply_commit`]) are written
//! once against them, so both stores apply the same rows in the same order.

use super::checkpoint::{CheckpointFormat, DedupRows};
use super::key_blocks::KeyBlock;
use super::{CommitOutput, PartitionCommit, StoreError, StoredBucket, Unread};
use crate::engine::ClosedBucket;
use crate::event::RejectReason;
use crate::time::Micros;

/// One tenant's data in a store: buckets from `from` to `to` (µs), `events` in them.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Coverage {
    pub tenant: String,
    pub from: Micros,
    pub to: Micros,
    pub events: u64,
}

impl Coverage {
    /// One tenant's data, with the scorecard flags that cover it.
    pub fn describe(&self) -> String {
        use crate::time::{format_date, MICROS_PER_DAY};
        // `to` is exclusive; the last day with data is the day before it ends.
        let last = (self.to - 1).div_euclid(MICROS_PER_DAY) * MICROS_PER_DAY;
        let (first, after) = (format_date(self.from), format_date(last + MICROS_PER_DAY));
        format!(
            "tenant {:?}: {} events, {first} to {} (scorecard: --tenant {} --from {first} --to {after})",
            self.tenant,
            self.events,
            format_date(last),
            self.tenant,
        )
    }
}

/// The read side a scorecard needs.
pub trait StoreRead {
    /// What the store holds per tenant (of one source, or all): the span of its buckets
    /// and its events. For messages that tell a user which tenants and dates to ask for.
    fn coverage(&self, source: Option<&str>) -> Result<Vec<Coverage>, StoreError>;
    /// Closed buckets of one tenant with `from <= start < to`, all sources.
    fn buckets(
        &self,
        tenant: &str,
        from: Micros,
        to: Micros,
    ) -> Result<Vec<StoredBucket>, StoreError>;
    /// Rejected records attributed to `tenant` with completed_at in `[from, to)`, by reason.
    fn rejects(
        &self,
        tenant: &str,
        from: Micros,
        to: Micros,
    ) -> Result<Vec<(RejectReason, u64)>, StoreError>;
    /// Offsets every source's log lost before they were read, by source.
    fn unread(&self) -> Result<Vec<(String, Unread)>, StoreError>;
}

/// A store that replays write to: reads, and transactions.
pub trait ReplayStore: StoreRead {
    fn begin(&mut self) -> Result<Box<dyn StoreTx + '_>, StoreError>;
}

/// One atomic unit of writes: everything a replay run or a checkpoint produced. Nothing is
/// visible to readers before [`StoreTx::commit`].
pub trait StoreTx {
    /// Deletes every row a source wrote (a replay run re-executed replaces its output).
    fn clear_source(&self, source: &str) -> Result<(), StoreError>;
    /// The packed keys other replays (sources `replay:…` but `except`) counted in the
    /// bucket starting at `start`.
    fn replayed_keys(&self, start: Micros, except: &str) -> Result<Vec<u8>, StoreError>;
    /// Hashes of the records other replays rejected.
    fn replayed_rejects(&self, except: &str) -> Result<Vec<u64>, StoreError>;
    /// Records the hashes of the records a replay rejected.
    fn put_replay_rejects(&self, source: &str, hashes: &[u64]) -> Result<(), StoreError>;
    /// Writes a closed bucket's row, replacing one of the same key.
    fn put_bucket(&self, source: &str, b: &ClosedBucket) -> Result<(), StoreError>;
    /// Adds rejection counts. Exactly-once because the caller commits them in the same
    /// transaction as the checkpoint (live) or after `clear_source` (replay).
    fn add_rejects(&self, source: &str, row: &super::RejectRow<'_>) -> Result<(), StoreError>;
    /// The next offset of the source's stored checkpoint, read inside this transaction.
    fn checkpoint_offset(&self, source: &str) -> Result<Option<i64>, StoreError>;
    /// Applies a commit's dedup rows (see [`DedupRows`]): one row per bucket per commit,
    /// so a commit writes the keys of its interval and closing a bucket deletes its rows.
    fn put_dedup(&self, source: &str, d: &DedupRows) -> Result<(), StoreError>;
    /// The packed dedup keys stored for a closed bucket of `source` starting at `start`:
    /// its key set at close and every correction's keys since.
    fn closed_keys(&self, source: &str, start: Micros) -> Result<Vec<u8>, StoreError>;
    /// Adds closed buckets' key rows, one per block ([`super::key_blocks`]).
    fn add_closed_keys(&self, source: &str, blocks: &[KeyBlock]) -> Result<(), StoreError>;
    /// Drops the key rows whose buckets all start before `before` (past the correction
    /// horizon).
    fn drop_closed_keys_before(&self, source: &str, before: Micros) -> Result<(), StoreError>;
    /// Adds a correction to the stored bucket row it belongs to: counters summed,
    /// latencies merged (a new row if the source has none starting there).
    fn add_correction(&self, source: &str, b: &ClosedBucket) -> Result<(), StoreError>;
    /// Queues encoded `WindowSummary` records of `source` for publishing, numbered on from
    /// the source's last queued one (see [`crate::sink::windows`]).
    fn queue_windows(&self, source: &str, summaries: &[Vec<u8>]) -> Result<(), StoreError>;
    /// Records offsets a source's log lost before they were read (once per range start:
    /// a crash that notices it again changes nothing).
    fn put_unread(&self, source: &str, u: &Unread) -> Result<(), StoreError>;
    fn put_checkpoint(
        &self,
        source: &str,
        version: i64,
        next_offset: i64,
        state: &[u8],
        now_ms: i64,
    ) -> Result<(), StoreError>;
    fn commit(self: Box<Self>) -> Result<(), StoreError>;
}

/// Writes what a commit made (live or replay) into `w`: closed buckets as rows (merged
/// per key over a day or less, [`super::rows::commit_rows`]), corrections added to their
/// bucket's row, and the key sets in blocks ([`super::key_blocks`]). Returns the rows
/// written.
pub fn write_output<'b>(
    w: &dyn StoreTx,
    source: &str,
    out: &CommitOutput<'b>,
) -> Result<std::borrow::Cow<'b, [ClosedBucket]>, StoreError> {
    let rows = super::rows::commit_rows(out.buckets, out.grain, crate::time::now_micros());
    for b in rows.iter() {
        w.put_bucket(source, b)?;
    }
    for b in out.corrections {
        w.add_correction(source, &b.bucket)?;
    }
    w.add_closed_keys(source, &super::key_blocks::blocks(out.closed_keys))?;
    Ok(rows)
}

/// Writes a partition's commit into `w`, fenced on the stored checkpoint: with two owners
/// of a partition at once (a rebalance that overlaps them), only the one whose checkpoint
/// is the stored one commits; a transactional store adds rejection counts and merges
/// windows per commit, so the other's commit would count records twice. The caller holds
/// the partition's write lock for the transaction (so the fence cannot move before the
/// commit) and commits it.
pub fn apply_commit(w: &dyn StoreTx, c: &PartitionCommit<'_>) -> Result<(), StoreError> {
    let found = w.checkpoint_offset(c.source)?;
    if found != c.expected {
        return Err(StoreError::Superseded {
            source_id: c.source.to_string(),
            expected: c.expected,
            found,
        });
    }
    w.drop_closed_keys_before(c.source, c.keys_before)?;
    let rows = write_output(w, c.source, &c.output)?;
    if c.publish {
        let closed = rows.iter().map(|b| (b, false));
        let corrected = c.output.corrections.iter().map(|b| (&b.bucket, true));
        let summaries: Vec<Vec<u8>> = closed
            .chain(corrected)
            .map(|(b, correction)| crate::codec::window::encode(c.source, b, correction))
            .collect();
        w.queue_windows(c.source, &summaries)?;
    }
    if let Some(u) = c.unread {
        w.put_unread(c.source, &u)?;
    }
    for r in c.rejects {
        w.add_rejects(c.source, r)?;
    }
    w.put_dedup(c.source, c.dedup)?;
    w.put_checkpoint(
        c.source,
        i64::from(CheckpointFormat::DedupInStore.version()),
        c.next_offset,
        c.state,
        crate::time::now_micros() / 1000,
    )
}
