//! Live exclusions (docs/contracts.md, "Live"): a closed bucket that starts inside an
//! exclusion window, outside its tenant's business hours or on a holiday is counted in
//! `slatrack_excluded_events_total` / `slatrack_excluded_attempts_total` by category
//! instead of the SLO counters and windows, so maintenance does not burn the error
//! budget or page. `slatrack_exclusion_active` says, per exported key, whether its time
//! is excluded at the newest event time the windows hold, for the rules that would
//! otherwise mistake a quiet maintenance window for an idle tenant.

use crate::contract::{Contracts, ExclusionLookup, Reason};
use crate::engine::{ClosedBucket, Counters};
use metrics::{counter, gauge};
use std::collections::HashMap;
use std::sync::Arc;

/// The excluded-events and excluded-attempts counters of one (tenant label, platform,
/// reason).
type ExcludedCounters = (metrics::Counter, metrics::Counter);

pub struct Exclusions {
    lookup: ExclusionLookup,
    /// Counter handles per (tenant label, platform, reason): a backfill would otherwise
    /// look the series up per bucket. Bounded as the labels are
    /// (`metrics.max_series_keys` × the reasons).
    handles: HashMap<(Arc<str>, Arc<str>, Reason), ExcludedCounters>,
}

impl Exclusions {
    pub fn new(contracts: Arc<Contracts>) -> Self {
        Self {
            lookup: ExclusionLookup::new(contracts),
            handles: HashMap::new(),
        }
    }

    /// Why a bucket is excluded (by where it starts), if it is.
    pub fn reason(&mut self, b: &ClosedBucket) -> Option<Reason> {
        if self.lookup.is_empty() {
            return None;
        }
        self.lookup
            .reason_at(&b.key.tenant, &b.key.platform, b.start)
    }

    /// Counts what an excluded bucket (or correction) held under its tenant label.
    pub fn count(&mut self, tenant: &Arc<str>, platform: &Arc<str>, reason: Reason, c: &Counters) {
        let (events, attempts) = self
            .handles
            .entry((tenant.clone(), platform.clone(), reason))
            .or_insert_with(|| {
                let labels = [
                    ("tenant", tenant.to_string()),
                    ("platform", platform.to_string()),
                    ("category", reason.as_str().to_string()),
                ];
                (
                    counter!("slatrack_excluded_events_total", &labels),
                    counter!("slatrack_excluded_attempts_total", &labels),
                )
            });
        events.increment(c.events);
        attempts.increment(c.attempts);
    }

    /// Sets `slatrack_exclusion_active` at event time `at` for each of `keys` (the
    /// exported ones) and each key with excluded buckets.
    pub fn set_active<'k>(
        &mut self,
        keys: impl Iterator<Item = &'k (Arc<str>, Arc<str>)>,
        at: crate::time::Micros,
    ) {
        if self.lookup.is_empty() || at == crate::time::Micros::MIN {
            return;
        }
        let mut all: std::collections::HashSet<(Arc<str>, Arc<str>)> = keys.cloned().collect();
        all.extend(self.handles.keys().map(|(t, p, _)| (t.clone(), p.clone())));
        for (t, p) in &all {
            let active = self.lookup.reason_at(t, p, at).is_some();
            gauge!("slatrack_exclusion_active", "tenant" => t.to_string(), "platform" => p.to_string())
                .set(if active { 1.0 } else { 0.0 });
        }
    }
}
