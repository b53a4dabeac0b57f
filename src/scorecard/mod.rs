//! The read side: merge a tenant's closed buckets from the store over `[from, to)` into
//! per-platform and overall figures (histograms merged, never quantiles averaged) and
//! render them as the pilot scorecard's "Delivery SLA Performance" section or as JSON.

pub mod branding;
pub mod budget;
pub mod contract;
pub mod findings;
pub mod html;
pub mod json;
pub mod markdown;
pub mod narrative;
pub mod svg;
pub mod trends;

use crate::config::Config;
use crate::contract::{calendar, Contracts};
use crate::engine::{Counters, Stats};
use crate::event::{Direction, RejectReason};
use crate::sla::{self, Status};
use crate::store::{StoreError, StoreRead};
use crate::time::Micros;
use std::collections::BTreeMap;

pub struct PlatformReport {
    pub platform: String,
    pub name: String,
    pub direction: Direction,
    pub target_on_time: f64,
    pub target_latency_ms: f64,
    pub stats: Stats,
    pub status: Status,
    /// Week by week over the report (one entry per week, with or without events).
    pub weekly: Vec<trends::PlatformWeek>,
}

pub struct WeekReport {
    pub start: Micros,
    pub events: u64,
    pub on_time: u64,
    pub status: Status,
    /// All platforms' figures of the week merged (outcomes, latencies).
    pub stats: Stats,
}

/// Status of each headline metric of the overall figures.
pub struct OverallStatuses {
    pub on_time: Status,
    pub failed: Status,
    pub retry: Status,
    pub max_retries: Status,
    pub dlq: Status,
    pub p50: Status,
    pub p95: Status,
    pub p99: Status,
}

pub struct Scorecard {
    pub tenant: String,
    pub from: Micros,
    pub to: Micros,
    pub platforms: Vec<PlatformReport>,
    pub overall: Stats,
    pub overall_target: f64,
    pub statuses: OverallStatuses,
    /// The overall status: the on-time compliance status, as in the seed report.
    pub status: Status,
    pub weekly: Vec<WeekReport>,
    pub rejected: Vec<(RejectReason, u64)>,
    /// Offsets of any source that its log lost before slatrack read them: records missing
    /// from every figure, whatever tenant they were for (their content was never seen).
    pub unread: Vec<(String, crate::store::Unread)>,
    /// The period has not ended yet (`to` is after the time the scorecard was built).
    pub partial: bool,
    /// The configured exit criteria, judged week by week.
    pub criteria: Vec<trends::CriterionReport>,
    /// Error budgets per platform with events, then overall.
    pub budgets: Vec<budget::Budget>,
    /// The tenant's contract as applied: zone, exclusions, precision, credit.
    pub contract: ContractReport,
    /// What the rows show that a reader would otherwise write by hand (findings.rs).
    pub findings: Vec<findings::Finding>,
    pub config: std::sync::Arc<Config>,
}

/// What the tenant's SLA contract did to the report (docs/contracts.md).
pub struct ContractReport {
    /// Days, weeks and the period close at this zone's midnight.
    pub time_zone: chrono_tz::Tz,
    /// As configured, e.g. "Mon-Fri 08:00-18:00"; outside them nothing counts.
    pub business_hours: Option<String>,
    pub holidays: Vec<chrono::NaiveDate>,
    /// Every exclusion, business hours and holidays with a span in the report.
    pub exclusions: Vec<contract::ExclusionReport>,
    /// Everything the exclusions took out of the figures.
    pub excluded: Counters,
    pub precision: contract::Precision,
    /// `None` without events.
    pub credit: Option<contract::Credit>,
    /// The tenant has credit tiers.
    pub has_credits: bool,
}

impl Scorecard {
    /// The display name of platform `id` (the id itself for one without a report).
    pub fn platform_name<'a>(&'a self, id: &'a str) -> &'a str {
        self.platforms
            .iter()
            .find(|p| p.platform == id)
            .map_or(id, |p| p.name.as_str())
    }

    pub fn rejected_total(&self) -> u64 {
        self.rejected.iter().map(|(_, n)| n).sum()
    }

    /// The tenant's local date at an instant, `YYYY-MM-DD`.
    pub fn date(&self, at: Micros) -> String {
        calendar::local_date(self.contract.time_zone, at)
            .format("%Y-%m-%d")
            .to_string()
    }

    /// The tenant's local date and time at an instant, `YYYY-MM-DD HH:MM`.
    pub fn local_time(&self, at: Micros) -> String {
        chrono::DateTime::from_timestamp_micros(at)
            .unwrap_or_default()
            .with_timezone(&self.contract.time_zone)
            .format("%Y-%m-%d %H:%M")
            .to_string()
    }

    /// The report's last local day (its end is exclusive).
    pub fn last_day(&self) -> String {
        self.date(self.to - 1)
    }
}

/// Why a scorecard of `tenant` over `[from, to)` has nothing to show, and what the store
/// does hold (each tenant's span, with the flags that cover it).
pub fn no_data_message(
    store: &dyn StoreRead,
    tenant: &str,
    from: Micros,
    to: Micros,
) -> Result<String, StoreError> {
    use crate::time::format_date;
    let coverage = store.coverage(None)?;
    let mut msg = format!(
        "the store holds no data for tenant {tenant:?} from {} to {} (exclusive)",
        format_date(from),
        format_date(to)
    );
    if coverage.is_empty() {
        msg.push_str("; the store is empty: run `slatrack replay` or `slatrack run` first");
        return Ok(msg);
    }
    msg.push_str("; it holds:");
    for c in &coverage {
        msg.push_str("\n  ");
        msg.push_str(&c.describe());
    }
    Ok(msg)
}

/// [`build_at`] the current time.
pub fn build(
    store: &dyn StoreRead,
    config: std::sync::Arc<Config>,
    contracts: &Contracts,
    tenant: &str,
    from: Micros,
    to: Micros,
) -> Result<Scorecard, StoreError> {
    build_at(
        store,
        config,
        contracts,
        tenant,
        from,
        to,
        crate::time::now_micros(),
    )
}

/// Reads and merges `[from, to)` (instants: a caller turns a period or dates into them
/// in the tenant's zone, [`calendar::period`]), with the tenant's contract applied
/// ([`contract::RowPlacer`]). Configured platforms come first in config order (shown
/// `n/a` when silent), then any other platform seen in the data, by id. `now` decides
/// whether the period has ended and projects the error budgets of one that has not, so
/// two reports of the same data at the same `now` are the same.
pub fn build_at(
    store: &dyn StoreRead,
    config: std::sync::Arc<Config>,
    contracts: &Contracts,
    tenant: &str,
    from: Micros,
    to: Micros,
    now: Micros,
) -> Result<Scorecard, StoreError> {
    let terms = contracts.tenant(tenant);
    let weeks = calendar::weeks(terms.time_zone, from, to);
    // A day before `from` too: rows that start before the report and cross into it are
    // not counted, but the report says how many there are.
    let rows = store.buckets(tenant, from - crate::time::MICROS_PER_DAY, to)?;
    let mut placer = contract::RowPlacer::new(contracts, tenant, from, to, &weeks);
    // Each row is merged once, into its platform's week; platforms and the overall figure
    // are merged from those (a busy tenant has hundreds of thousands of rows).
    let mut platform_weeks: BTreeMap<(String, usize), Stats> = BTreeMap::new();
    let mut directions: BTreeMap<&str, Direction> = BTreeMap::new();
    let mut counted: Vec<&crate::store::StoredBucket> = Vec::with_capacity(rows.len());
    for b in &rows {
        let Some(week) = placer.place(b) else {
            continue;
        };
        counted.push(b);
        directions.entry(&b.platform).or_insert(b.direction);
        match platform_weeks.get_mut(&(b.platform.clone(), week)) {
            Some(s) => s.merge(&b.stats),
            None => {
                platform_weeks.insert((b.platform.clone(), week), b.stats.clone());
            }
        }
    }
    let mut per_platform: BTreeMap<String, (Direction, Stats)> = BTreeMap::new();
    let mut overall = Stats::default();
    for ((platform, _), s) in &platform_weeks {
        overall.merge(s);
        per_platform
            .entry(platform.clone())
            .or_insert_with(|| (directions[platform.as_str()], Stats::default()))
            .1
            .merge(s);
    }
    let sla_cfg = &config.sla;
    let mut platforms = Vec::new();
    let mut report = |id: &str, name: &str, direction: Direction, stats: Stats| {
        let t = config.targets(id);
        let target = contracts.on_time_target(&config, tenant, id);
        let status = sla::on_time(stats.counters.on_time_ratio(), target, sla_cfg);
        let weekly = (0..weeks.len())
            .map(|i| {
                let s = platform_weeks
                    .remove(&(id.to_string(), i))
                    .unwrap_or_default();
                trends::PlatformWeek::new(&config, target, weeks[i].0, s)
            })
            .collect();
        platforms.push(PlatformReport {
            weekly,
            platform: id.to_string(),
            name: name.to_string(),
            direction,
            target_on_time: target,
            target_latency_ms: t.latency_target_us as f64 / 1000.0,
            stats,
            status,
        });
    };
    for p in &config.platforms {
        let stats = per_platform
            .remove(&p.id)
            .map(|(_, s)| s)
            .unwrap_or_default();
        report(&p.id, &p.name, p.direction, stats);
    }
    for (id, (direction, stats)) in per_platform {
        report(&id, &id, direction, stats);
    }
    let c = &overall.counters;
    let ms = |s: crate::config::ConfigDuration| s.0 as f64 / 1000.0;
    let statuses = OverallStatuses {
        on_time: sla::on_time(c.on_time_ratio(), sla_cfg.on_time_target, sla_cfg),
        failed: sla::rate(c.failed_ratio(), sla_cfg.failed_target, sla_cfg),
        retry: sla::rate(c.retry_ratio(), sla_cfg.retry_target, sla_cfg),
        max_retries: sla::rate(c.max_retries_ratio(), sla_cfg.max_retries_target, sla_cfg),
        dlq: sla::rate(c.dlq_ratio(), sla_cfg.dlq_target, sla_cfg),
        p50: sla::soft_latency(overall.quantile_ms(500), ms(sla_cfg.p50_target)),
        p95: sla::soft_latency(overall.quantile_ms(950), ms(sla_cfg.p95_target)),
        p99: sla::hard_latency(overall.quantile_ms(990), ms(sla_cfg.p99_threshold)),
    };
    // Every row's platform has a report, so a week overall is the sum of its platforms'.
    let weekly = weeks
        .iter()
        .enumerate()
        .map(|(i, &(start, _))| {
            let mut stats = Stats::default();
            for p in &platforms {
                stats.merge(&p.weekly[i].stats);
            }
            let (events, on_time) = (stats.counters.events, stats.counters.on_time);
            let ratio = (events > 0).then(|| on_time as f64 / events as f64);
            WeekReport {
                start,
                events,
                on_time,
                status: sla::on_time(ratio, sla_cfg.on_time_target, sla_cfg),
                stats,
            }
        })
        .collect();
    let criteria = config
        .criteria
        .iter()
        .map(|c| {
            let p = platforms.iter().find(|p| p.platform == c.platform);
            trends::judge(
                c,
                p.map_or(c.platform.as_str(), |p| p.name.as_str()),
                p.map_or(&[][..], |p| p.weekly.as_slice()),
            )
        })
        .collect();
    let ids: Vec<String> = platforms.iter().map(|p| p.platform.clone()).collect();
    let (exclusions, precision) = placer.finish(&ids);
    let mut excluded = Counters::default();
    for x in &exclusions {
        excluded.add(&x.counters);
    }
    let contract = ContractReport {
        time_zone: terms.time_zone,
        business_hours: terms.business_hours.as_ref().map(|h| h.to_string()),
        holidays: terms
            .holidays
            .iter()
            .filter(|d| {
                let (s, e) = calendar::dates(terms.time_zone, **d, **d);
                s < to && e > from
            })
            .copied()
            .collect(),
        exclusions,
        excluded,
        precision,
        credit: contract::credit(contracts, tenant, overall.counters.on_time_ratio()),
        has_credits: !terms.credits.is_empty(),
    };
    let findings = findings::find(&findings::Input {
        time_zone: terms.time_zone,
        platforms: &platforms,
        rows: &counted,
        overall: &overall,
        p95_target_us: sla_cfg.p95_target.0 as u64,
    });
    let mut sc = Scorecard {
        tenant: tenant.to_string(),
        from,
        to,
        platforms,
        overall_target: sla_cfg.on_time_target,
        status: statuses.on_time,
        statuses,
        overall,
        weekly,
        rejected: store.rejects(tenant, from, to)?,
        unread: store.unread()?,
        partial: to > now,
        criteria,
        budgets: Vec::new(),
        contract,
        findings,
        config,
    };
    sc.budgets = budget::budgets(&sc, now);
    Ok(sc)
}
