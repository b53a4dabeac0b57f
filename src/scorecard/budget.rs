//! Error budgets over the report's period: with an on-time target `t`, `(1 − t) × events`
//! events may miss it; the budget left is that minus the events that did. For a period
//! that has not ended, the projection carries the burn so far to the period's end.

use super::Scorecard;
use crate::engine::Stats;
use crate::sla::{self, Status};
use crate::time::Micros;

pub struct Budget {
    /// Platform id, or `None` for the overall budget.
    pub platform: Option<String>,
    pub target: f64,
    pub events: u64,
    /// Events that may miss the target: `(1 − target) × events`.
    pub allowed: f64,
    /// Events that missed it (terminal, not delivered on time).
    pub bad: u64,
    /// `allowed − bad` (negative: overspent).
    pub remaining: f64,
    /// `remaining / allowed`, `None` without events or with a target of 100 %.
    pub remaining_ratio: Option<f64>,
    /// For a period that has not ended: events left over at its end at the burn so far.
    pub projected_remaining: Option<f64>,
    /// The on-time status at the end of the period at the burn so far (the status now
    /// for a period that has ended).
    pub projected_status: Status,
}

fn budget(
    platform: Option<String>,
    stats: &Stats,
    target: f64,
    elapsed: Option<f64>,
    sc: &Scorecard,
) -> Budget {
    let c = &stats.counters;
    let allowed = (1.0 - target) * c.events as f64;
    let bad = c.events.saturating_sub(c.on_time);
    let remaining = allowed - bad as f64;
    Budget {
        platform,
        target,
        events: c.events,
        allowed,
        bad,
        remaining,
        remaining_ratio: (allowed > 0.0).then(|| remaining / allowed),
        // At a constant burn, events and misses both scale by 1 / elapsed.
        projected_remaining: elapsed.filter(|f| *f > 0.0).map(|f| remaining / f),
        projected_status: sla::on_time(c.on_time_ratio(), target, &sc.config.sla),
    }
}

/// Per platform with events, then overall. `now` places a period that has not ended.
pub fn budgets(sc: &Scorecard, now: Micros) -> Vec<Budget> {
    let elapsed = (sc.partial && sc.to > sc.from)
        .then(|| ((now - sc.from) as f64 / (sc.to - sc.from) as f64).clamp(0.0, 1.0));
    let mut out: Vec<Budget> = sc
        .platforms
        .iter()
        .filter(|p| p.stats.counters.events > 0)
        .map(|p| {
            budget(
                Some(p.platform.clone()),
                &p.stats,
                p.target_on_time,
                elapsed,
                sc,
            )
        })
        .collect();
    out.push(budget(None, &sc.overall, sc.overall_target, elapsed, sc));
    out
}
