//! Week by week, per platform: the figures a pilot report argues from ("Workday … 11%
//! failure rate in Weeks 1-3 … Week 5+ improved to 94%"), each with its status, and the
//! exit criteria ("Workday SLA ≥ 94% for 2 consecutive weeks") judged on them.
//!
//! Weeks are 7-day spans of the tenant's local days counted from the report's first
//! day, as in the overall trend (`contract::calendar::weeks`); the last may be shorter. A week without events is not a week that meets a criterion.

use crate::config::{Config, ExitCriterion};
use crate::engine::Stats;
use crate::sla::{self, Status};
use crate::time::Micros;

/// One platform's figures in one week, with the status of each.
pub struct PlatformWeek {
    pub start: Micros,
    pub stats: Stats,
    pub on_time: Status,
    pub p95: Status,
    pub failed: Status,
    pub retry: Status,
}

impl PlatformWeek {
    /// `target`: the platform's on-time target for this tenant.
    pub fn new(config: &Config, target: f64, start: Micros, stats: Stats) -> Self {
        let s = &config.sla;
        let c = &stats.counters;
        Self {
            start,
            on_time: sla::on_time(c.on_time_ratio(), target, s),
            p95: sla::soft_latency(stats.quantile_ms(950), s.p95_target.0 as f64 / 1000.0),
            failed: sla::rate(c.failed_ratio(), s.failed_target, s),
            retry: sla::rate(c.retry_ratio(), s.retry_target, s),
            stats,
        }
    }
}

/// An exit criterion as judged over the report's weeks.
pub struct CriterionReport {
    pub criterion: ExitCriterion,
    /// Display name of the platform.
    pub name: String,
    /// Some run of `consecutive_weeks` weeks met it.
    pub met: bool,
    /// Starts of the weeks of the latest run that met it (empty when none did).
    pub weeks: Vec<Micros>,
    /// Weeks in a row meeting it, up to and including the report's last week.
    pub streak: u32,
}

/// Judges `criterion` on a platform's weeks (in order).
pub fn judge(criterion: &ExitCriterion, name: &str, weeks: &[PlatformWeek]) -> CriterionReport {
    let meets = |w: &PlatformWeek| {
        w.stats
            .counters
            .on_time_ratio()
            .is_some_and(|r| r >= criterion.on_time)
    };
    let need = criterion.consecutive_weeks as usize;
    let mut run: Vec<Micros> = Vec::new();
    let mut counted: Vec<Micros> = Vec::new();
    for w in weeks {
        if meets(w) {
            run.push(w.start);
            if run.len() >= need {
                counted = run[run.len() - need..].to_vec();
            }
        } else {
            run.clear();
        }
    }
    CriterionReport {
        criterion: criterion.clone(),
        name: name.to_string(),
        met: !counted.is_empty(),
        weeks: counted,
        streak: run.len() as u32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Counters;

    fn week(i: i64, events: u64, on_time: u64) -> PlatformWeek {
        let stats = Stats {
            counters: Counters {
                events,
                on_time,
                ..Counters::default()
            },
            ..Stats::default()
        };
        PlatformWeek::new(&Config::default(), 0.95, i, stats)
    }

    #[test]
    fn a_criterion_needs_its_weeks_in_a_row() {
        let c = ExitCriterion {
            platform: "workday".into(),
            on_time: 0.94,
            consecutive_weeks: 2,
        };
        // 87%, 95%, no events, 94%, 96%, 93%: met by weeks 4-5; the streak is broken.
        let weeks = [
            week(1, 100, 87),
            week(2, 100, 95),
            week(3, 0, 0),
            week(4, 100, 94),
            week(5, 100, 96),
            week(6, 100, 93),
        ];
        let r = judge(&c, "Workday", &weeks);
        assert!(r.met);
        assert_eq!(r.weeks, vec![4, 5]);
        assert_eq!(r.streak, 0);
        let r = judge(&c, "Workday", &weeks[..5]);
        assert_eq!((r.met, r.streak), (true, 2));
        let r = judge(&c, "Workday", &weeks[..4]);
        assert_eq!((r.met, r.streak, r.weeks.len()), (false, 1, 0));
    }
}
