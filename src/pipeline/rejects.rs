//! Rejections not yet written to the store: the counts a commit adds, and the totals by
//! reason since start.

use crate::event::{RejectReason, Rejected};
use crate::store::{RejectRow, StoreError, StoreTx};
use crate::time::Micros;
use std::collections::{BTreeMap, HashMap};

type RejectKey = (String, String, Micros, RejectReason);

/// Rejections not yet written to the store, attributed to (tenant, platform, bucket)
/// where the record was readable enough; `""`/`0` where it was not.
#[derive(Debug, Default)]
pub struct RejectTally {
    /// Since the last commit: what the next commit adds.
    pending: HashMap<RejectKey, u64>,
    /// Since start, by reason (for summaries and self-metrics).
    pub totals: BTreeMap<RejectReason, u64>,
}

impl RejectTally {
    pub fn add(&mut self, r: &Rejected, bucket: Option<Micros>) {
        let key = (
            r.tenant.clone().unwrap_or_default(),
            r.platform.clone().unwrap_or_default(),
            bucket.unwrap_or(0),
            r.reason,
        );
        *self.pending.entry(key).or_default() += 1;
        *self.totals.entry(r.reason).or_default() += 1;
    }

    pub fn total(&self) -> u64 {
        self.totals.values().sum()
    }

    /// Writes the pending counts inside the caller's transaction. They stay pending until
    /// [`RejectTally::written`]: a transaction that fails must not lose them.
    pub fn write(&self, w: &dyn StoreTx, source: &str) -> Result<(), StoreError> {
        for row in self.pending_rows() {
            w.add_rejects(source, &row)?;
        }
        Ok(())
    }

    /// The pending counts as rows for a commit.
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

    /// Forgets what a commit wrote.
    pub fn written(&mut self) {
        self.pending.clear();
    }
}
