//! A tenant's SLA contract applied to the rows of a report (docs/contracts.md): which row
//! counts, in which local week; which an exclusion window or the time outside business
//! hours takes out of every figure; how finely the rows could be split at those edges;
//! and the service credit the period's attainment earns.
//!
//! A row counts where it starts: the store cannot split a row, so one that crosses an
//! edge (the period's, a week's, an exclusion's) is counted whole on the side its start
//! is on, and is tallied in [`Precision`] so the report can say so.

use crate::contract::{Contracts, Excluded, Reason};
use crate::engine::Counters;
use crate::store::StoredBucket;
use crate::time::Micros;
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// One exclusion (or business hours, or holidays) as applied to a report.
#[derive(Debug, Clone, PartialEq)]
pub struct ExclusionReport {
    pub name: String,
    pub reason: Reason,
    /// Distinct spans of it within the report, clipped to the report.
    pub spans: BTreeSet<(Micros, Micros)>,
    /// Platforms it took rows from.
    pub platforms: BTreeSet<String>,
    /// What it took out of the figures.
    pub counters: Counters,
}

/// How exactly the report's edges split the data.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Precision {
    /// Rows that cross an edge of the report, a week or an exclusion, counted where they
    /// start, and their events.
    pub crossing_rows: u64,
    pub crossing_events: u64,
    /// The widest of those rows (µs).
    pub widest_crossing: Micros,
}

/// The service credit of the report's period.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Credit {
    /// The attainment judged: the period's on-time ratio, exclusions applied.
    pub attainment: f64,
    /// Percent of the period's fee; 0 when no tier applies.
    pub percent: f64,
    /// The tier's threshold the attainment is below.
    pub below: Option<f64>,
}

/// Places rows of one tenant's report: [`RowPlacer::place`] per row, then
/// [`RowPlacer::finish`].
pub struct RowPlacer<'a> {
    contracts: &'a Contracts,
    tenant: &'a str,
    from: Micros,
    to: Micros,
    /// Week ends, ascending (the last is `to`).
    week_ends: Vec<Micros>,
    /// Excluded spans per platform, by start.
    spans: HashMap<String, Vec<Excluded>>,
    excluded: BTreeMap<(String, Reason), ExclusionReport>,
    precision: Precision,
}

impl<'a> RowPlacer<'a> {
    pub fn new(
        contracts: &'a Contracts,
        tenant: &'a str,
        from: Micros,
        to: Micros,
        weeks: &[(Micros, Micros)],
    ) -> Self {
        Self {
            contracts,
            tenant,
            from,
            to,
            week_ends: weeks.iter().map(|w| w.1).collect(),
            spans: HashMap::new(),
            excluded: BTreeMap::new(),
            precision: Precision::default(),
        }
    }

    /// The week (index) a row counts in, or `None` when it starts outside the report or
    /// inside an excluded span (then counted against that exclusion).
    pub fn place(&mut self, row: &StoredBucket) -> Option<usize> {
        let (start, end) = (row.start, row.start + row.width.max(1));
        let crosses = |edge: Micros| start < edge && edge < end;
        let mut crossing = crosses(self.from) || crosses(self.to);
        let week = self.week_ends.partition_point(|&e| e <= start);
        if start < self.from || week >= self.week_ends.len() {
            if crossing {
                self.tally_crossing(row);
            }
            return None;
        }
        crossing |= crosses(self.week_ends[week]);
        if !self.spans.contains_key(&row.platform) {
            let spans = self
                .contracts
                .excluded(self.tenant, &row.platform, self.from, self.to);
            self.spans.insert(row.platform.clone(), spans);
        }
        let spans = &self.spans[&row.platform];
        crossing |= spans.iter().any(|x| crosses(x.from) || crosses(x.to));
        let hit = crate::contract::covering(spans, start).cloned();
        if crossing {
            self.tally_crossing(row);
        }
        let Some(x) = hit else {
            return Some(week);
        };
        let r = self
            .excluded
            .entry((x.name.clone(), x.reason))
            .or_insert_with(|| ExclusionReport {
                name: x.name.clone(),
                reason: x.reason,
                spans: BTreeSet::new(),
                platforms: BTreeSet::new(),
                counters: Counters::default(),
            });
        r.platforms.insert(row.platform.clone());
        r.counters.add(&row.stats.counters);
        None
    }

    fn tally_crossing(&mut self, row: &StoredBucket) {
        self.precision.widest_crossing = self.precision.widest_crossing.max(row.width);
        self.precision.crossing_rows += 1;
        self.precision.crossing_events += row.stats.counters.events;
    }

    /// Every exclusion that applies within the report (with or without rows taken), in
    /// order of first span, and the precision.
    pub fn finish(mut self, platforms: &[String]) -> (Vec<ExclusionReport>, Precision) {
        for p in platforms {
            if !self.spans.contains_key(p) {
                let spans = self.contracts.excluded(self.tenant, p, self.from, self.to);
                self.spans.insert(p.clone(), spans);
            }
        }
        for x in self.spans.values().flatten() {
            self.excluded
                .entry((x.name.clone(), x.reason))
                .or_insert_with(|| ExclusionReport {
                    name: x.name.clone(),
                    reason: x.reason,
                    spans: BTreeSet::new(),
                    platforms: BTreeSet::new(),
                    counters: Counters::default(),
                })
                .spans
                .insert((x.from, x.to));
        }
        let mut out: Vec<ExclusionReport> = self.excluded.into_values().collect();
        out.sort_by_key(|x| (x.spans.first().copied(), x.name.clone()));
        (out, self.precision)
    }
}

/// The credit an attainment earns under `tenant`'s tiers (`None` without events).
pub fn credit(contracts: &Contracts, tenant: &str, attainment: Option<f64>) -> Option<Credit> {
    let attainment = attainment?;
    let tier = contracts.tenant(tenant).tier(attainment);
    Some(Credit {
        attainment,
        percent: tier.map_or(0.0, |c| c.credit),
        below: tier.map(|c| c.below),
    })
}
