//! Checkpoint scheduling: when each partition commits, how commits are paced against
//! the apply thread, how idle partitions' watermarks advance, and what a store failure
//! does (fetching pauses until the store accepts writes again). Also the store's
//! upkeep between commits: folding rows past `store.minute_retention`.

use super::PartitionSet;
use crate::pipeline::Committed;
use crate::store::StoreError;
use crate::time::Micros;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// Checkpoints take at most about one part in this many of the apply thread: a
/// partition's next commit waits at least this many times its last commit's duration,
/// times the partitions owned, when that is longer than `service.checkpoint_interval`.
///
/// Why: a commit's cost grows with what it writes (the keys and buckets since the last
/// commit), so at high input rates commits on a fixed interval would take the apply
/// thread over and the lag would run away. Spaced out, buckets become durable later (the counters move
/// later) and a crash re-reads more, but freshness holds.
pub(in crate::service) const COMMIT_SHARE: u32 = 10;

/// The least time between two commits of one partition while the apply thread has
/// records waiting (see [`COMMIT_SHARE`]).
pub(in crate::service) fn commit_spacing(
    interval: Duration,
    last_cost: Duration,
    owned: u32,
) -> Duration {
    interval.max(last_cost.saturating_mul(COMMIT_SHARE.saturating_mul(owned)))
}

/// The share (1 in this many) of `limits.max_uncommitted_buckets` closed buckets that a
/// partition commits at once when nothing is waiting ([`Pace::Idle`]).
pub(in crate::service) const DRAINED: usize = 8;

/// Records applied back to back (no round with nothing waiting between them) that make
/// the first round with nothing waiting ([`Pace::Idle`]) commit every partition at once:
/// a catch-up just ended. Its last records are then durable as soon as they are applied,
/// however few buckets they closed (live traffic's are dense) and however recently a
/// partition committed. Light traffic leaves the apply thread waiting between batches
/// long before this many records, and commits at the interval.
pub(in crate::service) const DRAINED_RECORDS: u64 = 4096;

/// A round of checkpoints hands what it committed to the telemetry at once up to this
/// many times `limits.max_uncommitted_buckets` buckets, in parts beyond: a live round of a
/// few partitions is absorbed whole, while a backfill's final round over tens of
/// partitions does not hold every partition's buckets (and their absorbing) at once.
pub(in crate::service) const ROUND_BUCKETS: usize = 2;

/// Moves the watermarks of partitions whose commits the telemetry has absorbed.
fn publish_watermarks(
    status: &crate::runtime::RuntimeStatus,
    topics: &[(String, crate::codec::Format)],
    watermarks: &mut Vec<(usize, i32, Micros)>,
) {
    if let Ok(mut m) = status.watermark.lock() {
        for (ti, partition, wm) in watermarks.drain(..) {
            m.insert((topics[ti].0.clone(), partition), wm);
        }
    }
}

/// Which partitions a round of checkpoints commits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in crate::service) enum Pace {
    /// Records are waiting to be applied: a partition commits once its
    /// [`commit_spacing`] has passed, so commits keep to their share of the thread, or once
    /// it holds `limits.max_uncommitted_buckets` closed buckets (its memory bound).
    Busy,
    /// Nothing is waiting (the last wait for a batch timed out, or the poll thread's
    /// batch came back empty): a commit takes time from
    /// nothing, so a partition commits once `service.checkpoint_interval` has passed —
    /// or at once when it holds a backlog's tail: [`DRAINED`] of its
    /// `limits.max_uncommitted_buckets` closed buckets or more, or anything at all after
    /// [`DRAINED_RECORDS`] records applied back to back. Without this, the end of a
    /// backlog would wait up to [`COMMIT_SHARE`] × partitions × the last (large) commit's
    /// duration — seconds — to become durable, or up to an interval for its tail; a
    /// trickle of live traffic closes far fewer buckets between commits, so a quiet input
    /// costs no more commits than the interval allows.
    Idle,
    /// Every partition with anything to write, now (shutdown, revocation, tests).
    All,
}

impl PartitionSet {
    /// Advances idle partitions' watermarks with the wall clock, then checkpoints the
    /// partitions that are due at this [`Pace`]. Returns false while the store refuses
    /// writes: from a failed attempt until the next successful one (a round with nothing
    /// due keeps the previous state, so fetching does not flap).
    pub(in crate::service) fn checkpoint_due(&mut self, pace: Pace) -> bool {
        if self.poisoned {
            return false;
        }
        let force = pace == Pace::All;
        let interval = Duration::from_micros(self.config.service.checkpoint_interval.0 as u64);
        let idle = Duration::from_micros(self.config.service.idle_timeout.0 as u64);
        let lateness = self.config.engine.allowed_lateness.0;
        let max_uncommitted = self.config.limits.max_uncommitted_buckets;
        let owned = self.parts.len() as u32;
        let drained = pace == Pace::Idle && self.busy_records >= DRAINED_RECORDS;
        if pace == Pace::Idle {
            self.busy_records = 0;
        }
        let mut ok = true;
        let mut committed = false;
        let mut settled = false;
        let mut done = Vec::new();
        let mut superseded = Vec::new();
        // What this round's commits made durable, absorbed at once after them (see
        // below), and the watermarks they reached.
        let mut round: Vec<Committed> = Vec::new();
        let mut round_buckets = 0;
        let mut watermarks = Vec::new();
        // Quiet is idle only while we fetch: paused for the store or cut off from every
        // broker, a partition delivers nothing though records wait, and advancing its
        // watermark by the wall clock would turn them into `late` ones once they arrive.
        // The idle clock restarts when fetching does.
        let fetching =
            !self.status.store_failing() && !self.status.brokers_down.load(Ordering::Relaxed);
        for (&(ti, partition), p) in self.parts.iter_mut() {
            if !fetching {
                p.last_record = Instant::now();
                p.idle_base = None;
            }
            let quiet = p.last_record.elapsed();
            if quiet >= idle {
                let base = *p.idle_base.get_or_insert_with(|| {
                    p.pipeline.shard.max_event_time().unwrap_or(Micros::MIN)
                });
                if base != Micros::MIN {
                    p.pipeline
                        .shard
                        .advance_watermark(base - lateness + quiet.as_micros() as Micros);
                }
            }
            let waiting = p.pipeline.uncommitted_buckets();
            let spacing = match pace {
                Pace::Busy => commit_spacing(interval, p.commit_cost, owned),
                Pace::Idle if drained || waiting >= (max_uncommitted / DRAINED).max(1) => {
                    Duration::ZERO
                }
                Pace::Idle | Pace::All => interval,
            };
            let full = waiting >= max_uncommitted;
            if !force && !full && p.last_commit.elapsed() < spacing {
                continue;
            }
            p.last_commit = Instant::now();
            // Nothing new to write: no record since the last checkpoint, no open bucket and
            // none closed but unwritten (an idle partition's watermark closes its last
            // buckets with no record arriving; they are written now, not with the next
            // record, whenever that comes).
            if !force
                && p.next_offset == p.checkpointed_offset
                && p.pipeline.shard.open_buckets() == 0
                && p.pipeline.uncommitted_buckets() == 0
            {
                continue;
            }
            // Quarantined records up to here must be on the broker before a checkpoint
            // moves past their offsets (see `Quarantine::settle`); paid once per round,
            // and only when something was quarantined since the last one.
            if !settled {
                if let Some(q) = self.quarantine.as_mut() {
                    if !q.settle() {
                        ok = false;
                        break;
                    }
                }
                settled = true;
            }
            let t = Instant::now();
            match p
                .pipeline
                .commit(self.store.as_mut(), &p.source, p.next_offset)
            {
                Ok(made) => {
                    p.commit_cost = t.elapsed();
                    self.status
                        .last_checkpoint_us
                        .store(p.commit_cost.as_micros() as u64, Ordering::Relaxed);
                    round_buckets += made.buckets.len() + made.corrections.len();
                    round.push(made);
                    p.report(&self.status);
                    let keys = p.pipeline.shard.keys();
                    let overflowed = keys.overflowed;
                    self.status.keys_overflowed.fetch_add(
                        overflowed.saturating_sub(p.overflow_reported),
                        Ordering::Relaxed,
                    );
                    p.overflow_reported = overflowed;
                    if let Some(wm) = p.pipeline.shard.watermark() {
                        watermarks.push((ti, partition, wm));
                    }
                    if round_buckets >= ROUND_BUCKETS * max_uncommitted {
                        // A round of many partitions' backlogs: absorbed in parts, so
                        // what it holds stays within the bound of a partition or two.
                        self.telemetry.absorb(&round);
                        round.clear();
                        round_buckets = 0;
                        publish_watermarks(&self.status, &self.topics, &mut watermarks);
                    }
                    p.checkpointed_offset = p.next_offset;
                    done.push((ti, partition, p.next_offset));
                    committed = true;
                }
                Err(e @ StoreError::Superseded { .. }) => {
                    tracing::warn!(source = %p.source, error = %e, "partition committed by another owner");
                    superseded.push((ti, partition));
                }
                Err(e) => {
                    self.status.store_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(source = %p.source, error = %e, "checkpoint failed; fetching pauses until the store accepts writes (nothing is dropped: the partition's buckets stay pending)");
                    *self
                        .status
                        .store_failure
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(e.to_string());
                    ok = false;
                    // The store is shared by every partition: one refusal per round is
                    // enough (each attempt can block for the store's timeout).
                    break;
                }
            }
        }
        // Partitions committing in one round mostly hold the same event time (they were
        // read side by side): absorbed one by one, all but the first would reach the
        // windows as corrections of what the first pushed. Taken together, their buckets
        // are pushed in order. A partition's watermark moves only once its buckets are
        // in the windows: a scrape showing a watermark shows the windows before it.
        if !round.is_empty() {
            self.telemetry.absorb(&round);
        }
        drop(round);
        publish_watermarks(&self.status, &self.topics, &mut watermarks);
        if ok && committed {
            if let Ok(mut f) = self.status.store_failure.lock() {
                if f.take().is_some() {
                    tracing::info!("the scorecard store accepts writes again; fetching resumes");
                }
            }
        }
        for (ti, partition, next) in done {
            let topic = self.topics[ti].0.clone();
            self.note_checkpoint(&topic, partition, next);
        }
        for (ti, partition) in superseded {
            self.resume_superseded(ti, partition);
        }
        ok && !self.status.store_failing()
    }
}

/// How often the service looks for bucket rows to fold once none are left.
pub(in crate::service) const FOLD_INTERVAL: Duration = Duration::from_secs(3600);

impl PartitionSet {
    /// Folds one day of bucket rows older than `store.minute_retention` into hourly rows,
    /// on the apply thread between commits (the store's one writer), a short transaction
    /// at a time. Returns whether days remain to fold.
    pub(in crate::service) fn fold_old_rows(&mut self) -> bool {
        let retention = self.config.store.minute_retention.0;
        if retention == 0 {
            return false;
        }
        match self
            .store
            .fold_before(crate::time::now_micros() - retention, 1)
        {
            Ok(f) => {
                if f.rows > 0 {
                    tracing::info!(
                        rows = f.rows,
                        "folded bucket rows past store.minute_retention into hourly rows"
                    );
                }
                f.more
            }
            Err(e) => {
                self.status.store_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, "cannot fold bucket rows past store.minute_retention; trying again in an hour");
                false
            }
        }
    }
}
