//! Two owners of one partition at once: a rebalance overlapped them, and the store refused
//! this owner's commit because the other committed since. This owner drops its state,
//! resumes from the store's checkpoint and applies nothing until the poll thread has
//! moved fetching there.

use super::PartitionSet;
use crate::kafka::consumer::FetchMove;
use std::sync::atomic::Ordering;

/// A partition's generation while none of its records may be applied: it was resumed
/// from another owner's checkpoint and the poll thread has not yet moved fetching there.
pub(in crate::service) const AWAITING_SEEK: u64 = u64::MAX;

impl PartitionSet {
    /// Another owner committed this partition since this one restored or wrote its
    /// checkpoint (a rebalance overlapped them; the store refused the commit). This owner
    /// drops its state and resumes from the store's checkpoint; no record is applied until
    /// the poll thread has moved fetching there ([`AWAITING_SEEK`]), since records already
    /// fetched may lie past it.
    pub(in crate::service) fn resume_superseded(&mut self, ti: usize, partition: i32) {
        self.status.superseded.fetch_add(1, Ordering::Relaxed);
        let topic = self.topics[ti].0.clone();
        // Unique across partitions and assignments: a seek meant for an earlier state of
        // this partition never matches a later one.
        self.resumptions += 1;
        let resumed = self.resumptions;
        let Some(next) = self.restore(&topic, partition, true) else {
            return; // no checkpoint (cannot be: one was found) or a fatal restore error
        };
        if let Some(p) = self.parts.get_mut(&(ti, partition)) {
            p.generation = AWAITING_SEEK;
            p.resumed = resumed;
            self.seeks.push(FetchMove {
                topic,
                partition,
                offset: next,
                tag: resumed,
            });
        }
    }

    /// Fetching of these partitions restarted at their seek's offset: records polled
    /// from `generation` on are theirs to apply.
    pub(in crate::service) fn seeked(&mut self, done: Vec<(FetchMove, u64)>) {
        for (seek, generation) in done {
            let Some(ti) = self.topic_index(&seek.topic) else {
                continue;
            };
            if let Some(p) = self.parts.get_mut(&(ti, seek.partition)) {
                // Only the latest resumption's seek: an older one may have moved fetching
                // to an offset this state is already past.
                if p.generation == AWAITING_SEEK && p.resumed == seek.tag {
                    p.generation = generation;
                    tracing::info!(source = %p.source, next_offset = seek.offset, "fetching moved to the store's checkpoint");
                }
            }
        }
    }
}
