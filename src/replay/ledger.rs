//! What earlier replays counted, so that a replay counts only what no other replay has.
//!
//! Every replay keeps, per closed bucket, the dedup keys of the attempts it counted (the
//! store's `closed_keys` rows of its source, kept whatever their age) and the hashes of
//! the records it rejected (`replay_rejects`). Before a record is counted, its
//! `(event_id, attempt)` is looked up in the other replays' keys of its bucket; before a
//! record is rejected, its bytes' hash in the other replays' rejections. A hit is neither
//! counted nor rejected: it is [`Ledger::already`]. So each attempt is counted by exactly
//! one replay, whichever files carried it (a file that grew, a log split in parts, the
//! same events in another format), and a replay of the same inputs replaces its own rows
//! whole (its source id is the hash of its inputs and their formats) while the others'
//! stay.

use crate::engine::correction::KeyCache;
use crate::engine::dedup::DedupKey;
use crate::pipeline::{Pipeline, Verdict};
use crate::store::checkpoint::unpack_keys;
use crate::store::{StoreError, StoreTx};
use crate::time::Micros;
use std::collections::HashSet;

pub struct Ledger {
    source: String,
    width: Micros,
    /// Other replays' keys by bucket ordinal, most recently used kept within a budget.
    counted: KeyCache,
    rejected_elsewhere: HashSet<u64>,
    rejected_here: HashSet<u64>,
    /// Records another replay counted or rejected.
    pub already: u64,
}

impl Ledger {
    /// The other replays' rejections are read whole (rejections are few); their keys
    /// bucket by bucket as records need them, at most `budget` keys held.
    pub fn open(
        w: &dyn StoreTx,
        source: &str,
        width: Micros,
        budget: usize,
    ) -> Result<Self, StoreError> {
        Ok(Self {
            source: source.to_string(),
            width,
            counted: KeyCache::new(budget),
            rejected_elsewhere: w.replayed_rejects(source)?.into_iter().collect(),
            rejected_here: HashSet::new(),
            already: 0,
        })
    }

    /// One record through `p`, unless another replay counted or rejected it (`None`).
    pub fn process(
        &mut self,
        p: &mut Pipeline,
        w: &dyn StoreTx,
        bytes: &[u8],
        now: Micros,
    ) -> Result<Option<Verdict>, StoreError> {
        let (counted, source, width) = (&mut self.counted, self.source.as_str(), self.width);
        let (elsewhere, here) = (&self.rejected_elsewhere, &mut self.rejected_here);
        let verdict = p.process_unless(
            bytes,
            now,
            |start, key: DedupKey| {
                counted.contains(start.div_euclid(width), key, |ordinal| {
                    unpack_keys(
                        &w.replayed_keys(ordinal * width, source)?,
                        "earlier replays",
                    )
                })
            },
            |bytes| {
                let h = xxhash_rust::xxh3::xxh3_64(bytes);
                if elsewhere.contains(&h) {
                    return true;
                }
                here.insert(h);
                false
            },
        )?;
        if verdict.is_none() {
            self.already += 1;
        }
        Ok(verdict)
    }

    /// Records this replay's rejections for later replays (its keys are its
    /// `closed_keys` rows, written with its buckets).
    pub fn write(&self, w: &dyn StoreTx) -> Result<(), StoreError> {
        let hashes: Vec<u64> = self.rejected_here.iter().copied().collect();
        w.put_replay_rejects(&self.source, &hashes)
    }
}
