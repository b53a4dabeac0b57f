//! Applying a batch of records to the partitions it holds, and the gauges the apply
//! thread refreshes between batches (freshness, lag).

use super::PartitionSet;
use crate::event::RejectReason;
use crate::kafka::consumer::{Batch, TopicPartition};
use crate::pipeline::Verdict;
use crate::time::Micros;
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::Instant;

impl PartitionSet {
    pub(in crate::service) fn apply(&mut self, batch: &Batch, now: Micros) {
        // One clock read per batch, not per record, and the status counters added once
        // per batch: an atomic add per record and counter
        // is a locked instruction on a line the exporter reads.
        let arrived = Instant::now();
        let (mut records, mut skipped) = (0u64, 0u64);
        for it in &batch.items {
            let Some(p) = self.parts.get_mut(&(it.topic, it.partition)) else {
                continue; // revoked while the batch was being polled, or stopped
            };
            if !p.fetched && it.generation >= p.generation && it.offset < p.next_offset {
                self.stop_on_new_log(it.topic, it.partition, it.offset);
                continue;
            }
            if it.offset < p.next_offset || it.generation < p.generation {
                skipped += 1;
                continue;
            }
            let bytes = batch.payload(it);
            records += 1;
            // Counted, duplicates and staged records are in the shard's tally
            // (`Partition::report`); rejections are counted here, by reason.
            if let Verdict::Rejected(reason) = p.pipeline.process(bytes, now) {
                self.status.rejected.fetch_add(1, Ordering::Relaxed);
                if let Some(i) = RejectReason::ALL.iter().position(|r| *r == reason) {
                    self.status.rejected_by_reason[i].fetch_add(1, Ordering::Relaxed);
                }
                if let Some(q) = self.quarantine.as_mut() {
                    q.send(
                        bytes,
                        reason,
                        &self.topics[it.topic].0,
                        it.partition,
                        it.offset,
                    );
                }
            }
            p.next_offset = it.offset + 1;
            p.fetched = true;
            p.last_record = arrived;
            p.idle_base = None;
        }
        for p in self.parts.values_mut() {
            p.report(&self.status);
        }
        // `records` last, with release: a reader that loads it with acquire also sees the
        // verdicts of those records.
        let s = &self.status;
        s.skipped_below_checkpoint
            .fetch_add(skipped, Ordering::Relaxed);
        s.records.fetch_add(records, Ordering::Release);
        self.busy_records += records;
    }

    /// Newest event time per key, for `slatrack_last_event_timestamp_seconds`: what an
    /// operator reads to know an event reached slatrack (applied, deduplicated, in an open
    /// bucket). Published on its own cadence rather than with checkpoints, so that it lags
    /// the input by the fetch and this interval, not the checkpoint interval.
    pub(in crate::service) fn publish_freshness(&mut self) {
        for p in self.parts.values_mut() {
            let keys = p.pipeline.shard.keys();
            let infos = keys.infos();
            p.seen_published.resize(infos.len(), Micros::MIN);
            let changed = infos.iter().enumerate().filter_map(|(i, k)| {
                let at = keys.last_seen(i as u32);
                (at > p.seen_published[i]).then(|| {
                    p.seen_published[i] = at;
                    (k.tenant.to_string(), k.platform.to_string(), at)
                })
            });
            self.telemetry.freshness(changed);
        }
    }

    /// Lag = high watermark (from librdkafka's statistics, no extra broker round trip)
    /// minus the next offset to apply. Only owned partitions are reported, so revoked ones
    /// disappear.
    pub(in crate::service) fn update_lag(&self, high: &BTreeMap<TopicPartition, i64>) {
        let mut lag = BTreeMap::new();
        for (&(ti, partition), p) in &self.parts {
            let key = (self.topics[ti].0.clone(), partition);
            if let Some(&h) = high.get(&key) {
                lag.insert(key, (h - p.next_offset).max(0));
            }
        }
        if let Ok(mut m) = self.status.lag.lock() {
            *m = lag;
        }
    }
}
