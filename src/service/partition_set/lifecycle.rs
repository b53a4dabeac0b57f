//! A partition's life in the set: assigned (its checkpoint restored and its log checked),
//! stopped when its log is not the checkpoint's, revoked after a final checkpoint.

use super::{Partition, PartitionSet};
use crate::pipeline::Pipeline;
use crate::store::StoreError;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

impl PartitionSet {
    /// Restores the partition's checkpoint. Returns the offset to fetch from: the
    /// checkpoint's, or `None` without one (then the group offset or
    /// `auto.offset.reset` decides, and the partition counts from there).
    pub(in crate::service) fn assign(&mut self, topic: &str, partition: i32) -> Option<i64> {
        self.restore(topic, partition, false)
    }

    /// [`PartitionSet::assign`], or (`superseded`) the same after another owner's commit.
    pub(in crate::service) fn restore(
        &mut self,
        topic: &str,
        partition: i32,
        superseded: bool,
    ) -> Option<i64> {
        let ti = self.topic_index(topic)?;
        let source = crate::kafka::source_id(topic, partition);
        let bounds = Pipeline::bounds(&self.config);
        match Pipeline::resume(
            self.config.clone(),
            self.topics[ti].1,
            bounds,
            self.store.as_mut(),
            &source,
        ) {
            Ok((pipeline, restored)) => {
                let next = restored.unwrap_or(0);
                // Overflow before this assignment was reported by whoever counted it.
                let overflow_reported = pipeline.shard.keys().overflowed;
                let tally_reported = pipeline.shard.tally;
                if superseded {
                    tracing::info!(%source, next_offset = next, "partition resumed from its other owner's checkpoint");
                } else {
                    tracing::info!(%source, next_offset = next, "partition assigned, checkpoint restored");
                }
                // A new assignment checks the log again (see `stop_on_new_log`).
                if let Ok(mut m) = self.status.stopped.lock() {
                    m.remove(&(topic.to_string(), partition));
                }
                let now = Instant::now();
                self.parts.insert(
                    (ti, partition),
                    Partition {
                        pipeline,
                        source,
                        next_offset: next,
                        checkpointed_offset: next,
                        last_commit: now,
                        commit_cost: Duration::ZERO,
                        last_record: now,
                        idle_base: None,
                        overflow_reported,
                        // Counted before this assignment: reported by whoever counted it.
                        tally_reported,
                        seen_published: Vec::new(),
                        generation: self.generation.load(Ordering::Relaxed),
                        resumed: 0,
                        fetched: false,
                    },
                );
                restored
            }
            Err(e) => {
                tracing::error!(%source, error = %e, "cannot restore the partition's checkpoint");
                self.fatal = Some(e.into());
                None
            }
        }
    }

    /// Checks a restored partition's checkpoint against where its log starts: below it,
    /// retention deleted records before they were read. They are counted, logged and
    /// written with the next checkpoint for the scorecard to report, and fetching starts
    /// at the log's start. Returns where to fetch from.
    pub(in crate::service) fn check_log_start(
        &mut self,
        topic: &str,
        partition: i32,
        next: i64,
        low: i64,
    ) -> i64 {
        let Some(p) = self
            .topic_index(topic)
            .and_then(|ti| self.parts.get_mut(&(ti, partition)))
        else {
            return next;
        };
        if next >= low {
            return next;
        }
        let lost = (low - next) as u64;
        tracing::warn!(source = %p.source, checkpoint = next, log_start = low, records = lost, "records were deleted from the log (retention) before slatrack read them: they are missing from every figure; the scorecard reports them");
        self.status
            .records_unread
            .fetch_add(lost, Ordering::Relaxed);
        p.pipeline.note_unread(next, low);
        p.next_offset = low;
        low
    }

    /// A restored partition's log ends below its checkpoint (`offset`: where the log ends,
    /// or the first record fetched, below the checkpoint, after librdkafka reset fetching
    /// because the checkpoint's offset is out of range): the topic was recreated, or the
    /// brokers are a new cluster. The partition stops
    /// (its records are not applied; its checkpoint stays) with an error saying how to
    /// accept the new log; never skipped through silently.
    pub(in crate::service) fn stop_on_new_log(&mut self, ti: usize, partition: i32, offset: i64) {
        let Some(p) = self.parts.remove(&(ti, partition)) else {
            return;
        };
        let topic = self.topics[ti].0.clone();
        let next = p.next_offset;
        let store = &self.store_location;
        let what_to_do = format!(
            "stop every slatrack writing {store}, check that this is the log you mean to read, run `slatrack accept-new-log --store '{store}' --topic {topic} --partition {partition}` (it keeps what the old log counted and reads the new one from offset 0, repeated records as duplicates), and start slatrack again"
        );
        let why = format!(
            "partition {topic}/{partition}: its checkpoint continues at offset {next} but its log ends below it (at offset {offset}): the topic was recreated or the brokers are a new cluster. Nothing of the new log is counted until you accept it: {what_to_do}"
        );
        tracing::error!(source = %p.source, checkpoint = next, fetched = offset, "{why}");
        if let Ok(mut m) = self.status.stopped.lock() {
            m.insert((topic, partition), why);
        }
    }

    pub(in crate::service) fn revoke(&mut self, topic: &str, partition: i32) {
        let Some(ti) = self.topic_index(topic) else {
            return;
        };
        if let Ok(mut m) = self.status.stopped.lock() {
            m.remove(&(topic.to_string(), partition));
        }
        if let Ok(mut m) = self.status.watermark.lock() {
            m.remove(&(topic.to_string(), partition));
        }
        if let Some(mut p) = self.parts.remove(&(ti, partition)) {
            // As before a periodic checkpoint: quarantined copies first (`Quarantine::settle`).
            if self.quarantine.as_mut().is_some_and(|q| !q.settle()) {
                tracing::warn!(source = %p.source, "partition revoked without a final checkpoint: its quarantined records are not yet on the broker; its next owner re-reads since the last checkpoint");
                return;
            }
            match p
                .pipeline
                .commit(self.store.as_mut(), &p.source, p.next_offset)
            {
                Ok(committed) => {
                    self.telemetry.absorb(std::slice::from_ref(&committed));
                    p.report(&self.status);
                    self.note_checkpoint(topic, partition, p.next_offset);
                    tracing::info!(source = %p.source, next_offset = p.next_offset, "partition revoked after its checkpoint");
                }
                Err(e @ StoreError::Superseded { .. }) => {
                    tracing::info!(source = %p.source, error = %e, "partition revoked; its other owner's checkpoint stands");
                }
                Err(e) => {
                    // Nothing is lost: the next owner resumes from the previous checkpoint.
                    self.status.store_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(source = %p.source, error = %e, "partition revoked without a final checkpoint; its next owner re-reads since the last one");
                }
            }
        }
    }
}
