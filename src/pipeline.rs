//! Bytes → decoder → shard, with every rejection tallied. The same path serves
//! `replay` and the Kafka service, so both count identically.

use crate::codec::{Decoder, Format};
use crate::config::Config;
use crate::engine::checkpoint::CheckpointError;
use crate::engine::{Ingest, Prepared, Shard};
use crate::event::{DeliveryEvent, RejectReason, Rejected, TimeBounds};
use crate::store::{PartitionCommit, PartitionStore, RejectRow, StoreError, StoreWriter};
use crate::time::Micros;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// What became of one record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Counted,
    Duplicate,
    /// Not counted; the caller quarantines the original bytes with this reason.
    Rejected(RejectReason),
}

/// Rejections not yet written to the store, attributed to (tenant, platform, bucket)
/// where the record was readable enough; `""`/`0` where it was not.
#[derive(Debug, Default)]
pub struct RejectTally {
    pending: HashMap<(String, String, Micros, RejectReason), u64>,
    /// Since start, by reason (for summaries and self-metrics).
    pub totals: BTreeMap<RejectReason, u64>,
}

impl RejectTally {
    pub fn add(&mut self, r: &Rejected, bucket: Option<Micros>) {
        *self
            .pending
            .entry((
                r.tenant.clone().unwrap_or_default(),
                r.platform.clone().unwrap_or_default(),
                bucket.unwrap_or(0),
                r.reason,
            ))
            .or_default() += 1;
        *self.totals.entry(r.reason).or_default() += 1;
    }

    pub fn total(&self) -> u64 {
        self.totals.values().sum()
    }

    /// Writes the pending counts inside the caller's transaction. They stay pending until
    /// [`RejectTally::written`]: a transaction that fails must not lose them.
    pub fn write(&self, w: &StoreWriter<'_>, source: &str) -> Result<(), StoreError> {
        for ((tenant, platform, bucket, reason), n) in &self.pending {
            w.add_rejects(source, tenant, platform, *bucket, *reason, *n)?;
        }
        Ok(())
    }

    /// The pending counts as rows for a [`PartitionStore`].
    pub fn pending_rows(&self) -> Vec<RejectRow<'_>> {
        self.pending
            .iter()
            .map(|((tenant, platform, bucket, reason), n)| RejectRow {
                tenant,
                platform,
                bucket: *bucket,
                reason: *reason,
                count: *n,
            })
            .collect()
    }

    /// Forgets the pending counts once the transaction that wrote them committed.
    pub fn written(&mut self) {
        self.pending.clear();
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ResumeError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("checkpoint of {source_id}: {error}")]
    Checkpoint {
        source_id: String,
        error: CheckpointError,
    },
}

pub struct Pipeline {
    pub decoder: Decoder,
    pub shard: Shard,
    pub rejects: RejectTally,
    pub records: u64,
    /// Closed buckets not yet committed to the store (kept across a failed commit).
    unwritten: Vec<crate::engine::ClosedBucket>,
    /// Offset of the checkpoint this pipeline last restored or wrote.
    checkpoint_offset: i64,
    /// [`Pipeline::process_run`]'s two events: one decoded a record ahead of the one the
    /// shard takes, alternating (`ahead` indexes the next to decode into).
    run_events: [DeliveryEvent; 2],
    ahead: usize,
}

impl Pipeline {
    pub fn new(config: Arc<Config>, format: Format, bounds: TimeBounds) -> Self {
        Self {
            decoder: Decoder::new(format, bounds, config.limits.max_record_bytes),
            shard: Shard::new(config),
            rejects: RejectTally::default(),
            records: 0,
            unwritten: Vec::new(),
            checkpoint_offset: 0,
            run_events: Default::default(),
            ahead: 0,
        }
    }

    /// Default bounds from config: nothing before 2000, nothing beyond the future skew.
    pub fn bounds(config: &Config) -> TimeBounds {
        TimeBounds {
            min: TimeBounds::MIN_PLAUSIBLE,
            max_future_skew: Some(config.validation.max_future_skew.0),
        }
    }

    /// A pipeline for `source` resumed from its checkpoint in the store, with the offset
    /// to continue from (`None`: no checkpoint, start from the source's beginning).
    pub fn resume(
        config: Arc<Config>,
        format: Format,
        bounds: TimeBounds,
        store: &mut dyn PartitionStore,
        source: &str,
    ) -> Result<(Self, Option<i64>), ResumeError> {
        let mut p = Self::new(config.clone(), format, bounds);
        let Some(cp) = store.checkpoint(source)? else {
            return Ok((p, None));
        };
        let (shard, next) =
            Shard::restore(config, &cp.state).map_err(|error| ResumeError::Checkpoint {
                source_id: source.to_string(),
                error,
            })?;
        p.shard = shard;
        p.checkpoint_offset = next;
        Ok((p, Some(next)))
    }

    /// Writes the buckets closed since the last commit, the pending rejections and the
    /// checkpoint (`next_offset` = first record not applied) in one transaction: after a
    /// crash, either all of it is there or none, and `resume` continues from the same state.
    /// Returns the buckets written (for telemetry). On error nothing is lost: the buckets
    /// and rejections stay pending for the next attempt.
    pub fn commit(
        &mut self,
        store: &mut dyn PartitionStore,
        source: &str,
        next_offset: i64,
    ) -> Result<Vec<crate::engine::ClosedBucket>, StoreError> {
        self.unwritten.extend(self.shard.take_closed());
        let state = self.shard.checkpoint(next_offset);
        let rejects = self.rejects.pending_rows();
        store.commit(&PartitionCommit {
            source,
            from_offset: self.checkpoint_offset,
            next_offset,
            state: &state,
            buckets: &self.unwritten,
            rejects: &rejects,
        })?;
        drop(rejects);
        self.rejects.written();
        self.checkpoint_offset = next_offset;
        Ok(std::mem::take(&mut self.unwritten))
    }

    /// Switches the wire format (a replay may mix JSON and protobuf files) keeping state.
    pub fn set_format(&mut self, format: Format) {
        if self.decoder.format() != format {
            self.decoder = self.decoder.with_format(format);
        }
    }

    pub fn process(&mut self, bytes: &[u8], now: Micros) -> Verdict {
        self.records += 1;
        match self.decoder.decode(bytes, now) {
            Ok(ev) => Self::ingest_into(&mut self.shard, &mut self.rejects, ev),
            Err(r) => self.reject(r),
        }
    }

    fn reject(&mut self, r: Rejected) -> Verdict {
        let bucket = r.completed_at.map(|t| self.shard.bucket_start(t));
        self.rejects.add(&r, bucket);
        Verdict::Rejected(r.reason)
    }

    /// [`Pipeline::process`] over a run of records, in order: `on` gets each record's
    /// tag, bytes and verdict, in input order, and every verdict and all state are those
    /// of calling `process` on each record in turn.
    ///
    /// Why a run: each record is decoded, and its dedup slot prefetched, while the one
    /// before it is still waiting to be ingested, so the slot's cache line (a miss on
    /// dense traffic) loads during a whole decode instead of stalling the shard
    /// (BENCHMARKS.md, engine floor, session 8). Decoding ahead is safe because decoding
    /// depends on nothing the shard changes.
    pub fn process_run<'a, T>(
        &mut self,
        records: impl IntoIterator<Item = (T, &'a [u8])>,
        now: Micros,
        mut on: impl FnMut(T, &'a [u8], Verdict),
    ) {
        // The record decoded last, not yet ingested: it is in `run_events[1 - ahead]`.
        let mut held: Option<(T, &'a [u8], Prepared)> = None;
        for (tag, bytes) in records {
            self.records += 1;
            let ahead = self.ahead;
            let decoded = self
                .decoder
                .decode_into(bytes, now, &mut self.run_events[ahead])
                .map(|()| self.shard.prepare(&self.run_events[ahead]));
            if let Some((t, b, p)) = held.take() {
                let ev = &self.run_events[1 - self.ahead];
                let v = Self::ingest_prepared(&mut self.shard, &mut self.rejects, ev, p);
                on(t, b, v);
            }
            match decoded {
                Ok(p) => {
                    held = Some((tag, bytes, p));
                    self.ahead = 1 - ahead;
                }
                Err(r) => {
                    let v = self.reject(r);
                    on(tag, bytes, v);
                }
            }
        }
        if let Some((t, b, p)) = held {
            let ev = &self.run_events[1 - self.ahead];
            let v = Self::ingest_prepared(&mut self.shard, &mut self.rejects, ev, p);
            on(t, b, v);
        }
    }

    pub fn ingest(&mut self, ev: &DeliveryEvent) -> Verdict {
        Self::ingest_into(&mut self.shard, &mut self.rejects, ev)
    }

    fn ingest_into(shard: &mut Shard, rejects: &mut RejectTally, ev: &DeliveryEvent) -> Verdict {
        let p = shard.prepare(ev);
        Self::ingest_prepared(shard, rejects, ev, p)
    }

    #[inline]
    fn ingest_prepared(
        shard: &mut Shard,
        rejects: &mut RejectTally,
        ev: &DeliveryEvent,
        prepared: Prepared,
    ) -> Verdict {
        match shard.ingest_prepared(ev, prepared) {
            Ingest::Counted => Verdict::Counted,
            Ingest::Duplicate => Verdict::Duplicate,
            Ingest::Late => {
                let r = crate::codec::attributed(RejectReason::Late, ev);
                rejects.add(&r, Some(shard.bucket_start(ev.completed_at)));
                Verdict::Rejected(RejectReason::Late)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Direction, Outcome};
    use crate::time::MICROS_PER_SEC;
    use proptest::prelude::*;

    const T0: Micros = 1_759_309_200_000_000; // 2025-10-01T09:00:00Z

    /// A record of a stream that exercises every verdict: counted, duplicate (the id
    /// pool is small), late (times jump back up to 10 minutes, past the 2-minute
    /// lateness), malformed and invalid.
    #[derive(Debug, Clone)]
    enum Rec {
        Event {
            id: u8,
            attempt: u32,
            tenant: u8,
            outcome: u8,
            at_s: u32,
        },
        Garbage(Vec<u8>),
        /// Completed before it started.
        Backwards {
            id: u8,
        },
    }

    fn rec() -> impl Strategy<Value = Rec> {
        prop_oneof![
            8 => (0u8..40, 1u32..3, 0u8..3, 0u8..4, 0u32..1200).prop_map(
                |(id, attempt, tenant, outcome, at_s)| Rec::Event { id, attempt, tenant, outcome, at_s }
            ),
            1 => prop::collection::vec(any::<u8>(), 0..12).prop_map(Rec::Garbage),
            1 => (0u8..40).prop_map(|id| Rec::Backwards { id }),
        ]
    }

    fn bytes(r: &Rec) -> Vec<u8> {
        let event = |id: u8, attempt, tenant: u8, outcome, done: Micros, start: Micros| {
            crate::codec::protobuf::encode(&DeliveryEvent {
                event_id: format!("ev-{id}"),
                tenant: format!("tenant{tenant}"),
                platform: "workday".into(),
                direction: Direction::Outbound,
                attempt,
                max_attempts: 3,
                outcome,
                enqueued_at: start - MICROS_PER_SEC,
                started_at: start,
                completed_at: done,
                http_status: None,
                error: None,
            })
        };
        match *r {
            Rec::Event {
                id,
                attempt,
                tenant,
                outcome,
                at_s,
            } => {
                let outcome = [
                    Outcome::Delivered,
                    Outcome::Retrying,
                    Outcome::Failed,
                    Outcome::DeadLettered,
                ][outcome as usize];
                let done = T0 + i64::from(at_s) * MICROS_PER_SEC;
                event(id, attempt, tenant, outcome, done, done - 250_000)
            }
            Rec::Garbage(ref b) => b.clone(),
            Rec::Backwards { id } => event(id, 1, 0, Outcome::Delivered, T0, T0 + 1),
        }
    }

    /// Everything a pipeline's numbers are made of, in a comparable form.
    fn outcome(p: &mut Pipeline) -> impl PartialEq + std::fmt::Debug {
        p.shard.flush();
        let closed: Vec<_> = p
            .shard
            .take_closed()
            .map(|b| (b.key.tenant.to_string(), b.start, b.stats))
            .collect();
        let mut rejects: Vec<_> = p
            .rejects
            .pending_rows()
            .iter()
            .map(|r| (r.tenant.to_string(), r.bucket, r.reason, r.count))
            .collect();
        rejects.sort();
        (closed, rejects, p.shard.tally, p.records)
    }

    proptest! {
        /// `process_run`, however the stream is cut into runs, gives every record the
        /// verdict `process` gives it, in order, and leaves the same numbers.
        #[test]
        fn runs_are_record_by_record(
            recs in prop::collection::vec(rec(), 0..300),
            cuts in prop::collection::vec(0usize..300, 0..6),
        ) {
            let config = Arc::new(Config::default());
            let bounds = Pipeline::bounds(&config);
            let now = T0 + 3_600 * MICROS_PER_SEC;
            let input: Vec<Vec<u8>> = recs.iter().map(bytes).collect();

            let mut one = Pipeline::new(config.clone(), Format::Protobuf, bounds);
            let expected: Vec<(usize, Verdict)> = input
                .iter()
                .enumerate()
                .map(|(i, b)| (i, one.process(b, now)))
                .collect();

            let mut runs = Pipeline::new(config, Format::Protobuf, bounds);
            let mut bounds_at: Vec<usize> = cuts.into_iter().filter(|&c| c < input.len()).collect();
            bounds_at.extend([0, input.len()]);
            bounds_at.sort_unstable();
            let mut got = Vec::new();
            for w in bounds_at.windows(2) {
                let run = (w[0]..w[1]).map(|i| (i, input[i].as_slice()));
                runs.process_run(run, now, |i, b, v| {
                    assert_eq!(b, input[i].as_slice(), "the tag's own bytes");
                    got.push((i, v));
                });
            }
            prop_assert_eq!(&got, &expected);
            prop_assert_eq!(outcome(&mut runs), outcome(&mut one));
        }
    }
}
