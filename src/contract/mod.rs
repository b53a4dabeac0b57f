//! SLA contracts: what the customer's contract makes of raw time. Per tenant a time zone
//! (periods close at local midnight), business hours and holidays, credit tiers and target
//! overrides; across tenants, exclusion windows. Compiled once from the config
//! ([`Contracts::from_config`], which every command runs at start-up), then asked:
//! what is excluded in a span, where a local period starts and ends, what credit an
//! attainment earns. The model: docs/contracts.md.

pub mod calendar;
pub mod exclusion;

use crate::config::{invalid, Config, ConfigError, CreditTier, ExclusionCategory};
use crate::time::Micros;
use calendar::BusinessHours;
use chrono::NaiveDate;
use chrono_tz::Tz;
use exclusion::Exclusion;
use std::collections::{BTreeSet, HashMap};

/// Why a span is excluded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Reason {
    Exclusion(ExclusionCategory),
    Holiday,
    OutsideBusinessHours,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Exclusion(c) => c.as_str(),
            Self::OutsideBusinessHours => "outside_business_hours",
            Self::Holiday => "holiday",
        }
    }
}

/// An excluded span `[from, to)` and what excluded it (an exclusion's name, or the reason).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Excluded {
    pub from: Micros,
    pub to: Micros,
    pub name: String,
    pub reason: Reason,
}

/// The span among `spans` that takes instant `at`: where windows overlap, the most
/// specific — an exclusion window, then a holiday, then the time outside business hours.
/// The one rule for scorecards, the live counters and [`Contracts::excluded_at`].
pub fn covering(spans: &[Excluded], at: Micros) -> Option<&Excluded> {
    spans
        .iter()
        .filter(|x| x.from <= at && at < x.to)
        .min_by_key(|x| x.reason)
}

/// One tenant's compiled contract.
#[derive(Debug, Clone)]
pub struct TenantContract {
    pub time_zone: Tz,
    pub business_hours: Option<BusinessHours>,
    pub holidays: BTreeSet<NaiveDate>,
    /// Ascending by `below`.
    pub credits: Vec<CreditTier>,
    pub on_time_targets: HashMap<String, f64>,
}

impl Default for TenantContract {
    fn default() -> Self {
        Self {
            time_zone: Tz::UTC,
            business_hours: None,
            holidays: BTreeSet::new(),
            credits: Vec::new(),
            on_time_targets: HashMap::new(),
        }
    }
}

impl TenantContract {
    /// The tier an attainment falls in: the lowest `below` it is under (the credit it
    /// earns; none when it is under no tier).
    pub fn tier(&self, attainment: f64) -> Option<&CreditTier> {
        self.credits.iter().find(|t| attainment < t.below)
    }
}

/// Every tenant's contract and every exclusion.
#[derive(Debug, Clone, Default)]
pub struct Contracts {
    tenants: HashMap<String, TenantContract>,
    exclusions: Vec<Exclusion>,
    utc: TenantContract,
}

impl Contracts {
    /// Checks and compiles `[[tenants]]` and `[[exclusions]]`; an error names the entry
    /// and field, the line it is written on, the value, and what to write instead.
    pub fn from_config(config: &Config) -> Result<Self, ConfigError> {
        Self::compile(config).map_err(|e| config.locate(e))
    }

    fn compile(config: &Config) -> Result<Self, ConfigError> {
        let mut tenants = HashMap::new();
        for (i, t) in config.tenants.iter().enumerate() {
            let key = |f: &str| format!("tenants[{i}].{f}");
            if tenants.contains_key(&t.id) {
                return Err(invalid(
                    key("id"),
                    &t.id,
                    "is defined twice: one [[tenants]] entry per tenant",
                ));
            }
            let time_zone = calendar::zone(&t.time_zone)
                .map_err(|w| invalid(key("time_zone"), &t.time_zone, &w))?;
            let business_hours = match &t.business_hours {
                None => None,
                Some(h) => Some(
                    BusinessHours::parse(h).map_err(|w| invalid(key("business_hours"), h, &w))?,
                ),
            };
            let mut holidays = BTreeSet::new();
            for (j, h) in t.holidays.iter().enumerate() {
                let d = NaiveDate::parse_from_str(h, "%Y-%m-%d").map_err(|_| {
                    invalid(
                        key(&format!("holidays[{j}]")),
                        h,
                        "is not a date: write \"YYYY-MM-DD\" (the tenant's local date)",
                    )
                })?;
                holidays.insert(d);
            }
            if !holidays.is_empty() && business_hours.is_none() {
                return Err(invalid(
                    key("holidays"),
                    format!("{:?}", t.holidays),
                    "are days off business hours, and this tenant has none: add business_hours",
                ));
            }
            let mut credits = t.credits.clone();
            for (j, c) in credits.iter().enumerate() {
                if !(c.below > 0.0 && c.below <= 1.0) {
                    return Err(invalid(
                        key(&format!("credits[{j}].below")),
                        c.below,
                        "must be an attainment in (0, 1], e.g. 0.95",
                    ));
                }
                if !(c.credit > 0.0 && c.credit <= 100.0) {
                    return Err(invalid(
                        key(&format!("credits[{j}].credit")),
                        c.credit,
                        "must be a percentage in (0, 100], e.g. 10",
                    ));
                }
            }
            credits.sort_by(|a, b| a.below.total_cmp(&b.below));
            if let Some(w) = credits.windows(2).find(|w| w[0].below == w[1].below) {
                return Err(invalid(
                    key("credits"),
                    w[0].below,
                    "is the `below` of two tiers: each tier needs its own threshold",
                ));
            }
            if let Some(w) = credits.windows(2).find(|w| w[0].credit < w[1].credit) {
                return Err(invalid(
                    key("credits"),
                    format!("below {} → {}%, below {} → {}%", w[0].below, w[0].credit, w[1].below, w[1].credit),
                    "overlap the wrong way: a lower attainment must earn at least the credit of a higher one",
                ));
            }
            let mut on_time_targets = HashMap::new();
            for (j, p) in t.platforms.iter().enumerate() {
                if let Some(v) = p.on_time_target {
                    crate::config::check_fraction(
                        &key(&format!("platforms[{j}].on_time_target")),
                        v,
                    )?;
                    on_time_targets.insert(p.id.clone(), v);
                }
            }
            tenants.insert(
                t.id.clone(),
                TenantContract {
                    time_zone,
                    business_hours,
                    holidays,
                    credits,
                    on_time_targets,
                },
            );
        }
        let mut exclusions: Vec<Exclusion> = Vec::new();
        for (i, c) in config.exclusions.iter().enumerate() {
            let x = Exclusion::compile(c).map_err(|(field, value, why)| {
                invalid(format!("exclusions[{i}].{field}"), value, &why)
            })?;
            // Two one-off windows of the same scope that overlap would attribute the same
            // events to both.
            if let Some((s, e)) = x.once() {
                if let Some((j, _)) = exclusions.iter().enumerate().find(|(_, y)| {
                    y.tenant == x.tenant
                        && y.platform == x.platform
                        && y.once().is_some_and(|(s2, e2)| s < e2 && s2 < e)
                }) {
                    return Err(invalid(
                        format!("exclusions[{i}].start"),
                        &c.start,
                        &format!(
                            "overlaps exclusions[{j}] ({:?}) for the same tenant and platform: merge them into one window",
                            config.exclusions[j].name
                        ),
                    ));
                }
            }
            exclusions.push(x);
        }
        Ok(Self {
            tenants,
            exclusions,
            utc: TenantContract::default(),
        })
    }

    /// A tenant's contract (UTC, no hours, no credits when it has none).
    pub fn tenant(&self, id: &str) -> &TenantContract {
        self.tenants.get(id).unwrap_or(&self.utc)
    }

    /// The on-time target of a tenant's platform: its own, else the platform's.
    pub fn on_time_target(&self, config: &Config, tenant: &str, platform: &str) -> f64 {
        self.tenant(tenant)
            .on_time_targets
            .get(platform)
            .copied()
            .unwrap_or_else(|| config.targets(platform).on_time_target)
    }

    /// What is excluded for (`tenant`, `platform`) within `[from, to)`: exclusion windows
    /// (clipped to the span) and the time outside business hours, in order of start.
    pub fn excluded(
        &self,
        tenant: &str,
        platform: &str,
        from: Micros,
        to: Micros,
    ) -> Vec<Excluded> {
        let mut out = Vec::new();
        for x in self
            .exclusions
            .iter()
            .filter(|x| x.applies_to(tenant, platform))
        {
            for (s, e) in x.spans(from, to) {
                out.push(Excluded {
                    from: s.max(from),
                    to: e.min(to),
                    name: x.name.clone(),
                    reason: Reason::Exclusion(x.category),
                });
            }
        }
        let t = self.tenant(tenant);
        if let Some(hours) = &t.business_hours {
            for (s, e, holiday) in hours.outside(t.time_zone, &t.holidays, from, to) {
                let (name, reason) = if holiday {
                    ("holiday", Reason::Holiday)
                } else {
                    ("outside business hours", Reason::OutsideBusinessHours)
                };
                out.push(Excluded {
                    from: s,
                    to: e,
                    name: name.into(),
                    reason,
                });
            }
        }
        out.sort_by_key(|x| (x.from, x.to));
        out
    }

    /// Whether an instant is excluded for (`tenant`, `platform`), and why ([`covering`]).
    pub fn excluded_at(&self, tenant: &str, platform: &str, at: Micros) -> Option<Excluded> {
        covering(&self.excluded(tenant, platform, at, at + 1), at).cloned()
    }

    pub fn is_empty(&self) -> bool {
        self.tenants.is_empty() && self.exclusions.is_empty()
    }

    /// Whether anything can exclude time for (`tenant`, `platform`): an exclusion window
    /// that applies, or business hours.
    pub fn excludes_any(&self, tenant: &str, platform: &str) -> bool {
        self.tenant(tenant).business_hours.is_some()
            || self
                .exclusions
                .iter()
                .any(|x| x.applies_to(tenant, platform))
    }
}

/// Why an instant is excluded, asked of instants that mostly move forward (the live
/// path's closed buckets): a key's spans are expanded for a few days around the instant
/// asked and kept until an instant falls outside them, so a recurring rule is expanded
/// once per key per two days of event time, not per bucket.
pub struct ExclusionLookup {
    contracts: std::sync::Arc<Contracts>,
    keys: HashMap<(std::sync::Arc<str>, std::sync::Arc<str>), Horizon>,
}

/// A key's excluded spans over `[from, to)`; `None` when nothing can exclude its time.
struct Horizon {
    from: Micros,
    to: Micros,
    spans: Option<Vec<Excluded>>,
}

/// Keys whose horizons are kept before they are all dropped (each is a few spans).
const LOOKUP_KEYS: usize = 100_000;

impl ExclusionLookup {
    pub fn new(contracts: std::sync::Arc<Contracts>) -> Self {
        Self {
            contracts,
            keys: HashMap::new(),
        }
    }

    /// Nothing is ever excluded.
    pub fn is_empty(&self) -> bool {
        self.contracts.is_empty()
    }

    /// What excludes `at` for (`tenant`, `platform`) ([`covering`]).
    pub fn reason_at(
        &mut self,
        tenant: &std::sync::Arc<str>,
        platform: &std::sync::Arc<str>,
        at: Micros,
    ) -> Option<Reason> {
        if self.contracts.is_empty() {
            return None;
        }
        let key = (tenant.clone(), platform.clone());
        let fresh = self
            .keys
            .get(&key)
            .is_some_and(|h| h.spans.is_none() || (h.from <= at && at < h.to));
        if !fresh {
            if self.keys.len() >= LOOKUP_KEYS {
                self.keys.clear();
            }
            let day = at.div_euclid(crate::time::MICROS_PER_DAY) * crate::time::MICROS_PER_DAY;
            let (from, to) = (
                day - crate::time::MICROS_PER_DAY,
                day + 2 * crate::time::MICROS_PER_DAY,
            );
            let spans = self
                .contracts
                .excludes_any(tenant, platform)
                .then(|| self.contracts.excluded(tenant, platform, from, to));
            self.keys.insert(key.clone(), Horizon { from, to, spans });
        }
        self.keys
            .get(&key)?
            .spans
            .as_ref()
            .and_then(|spans| covering(spans, at))
            .map(|x| x.reason)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A config and its contracts, as a command reads them.
    fn config(toml: &str) -> Result<Config, ConfigError> {
        let c = Config::from_toml(toml)?;
        Contracts::from_config(&c)?;
        Ok(c)
    }

    #[test]
    fn credit_tiers_at_their_boundaries() {
        let c = config(
            "[[tenants]]\nid = \"globex\"\n[[tenants.credits]]\nbelow = 0.95\ncredit = 10\n[[tenants.credits]]\nbelow = 0.90\ncredit = 25\n",
        )
        .unwrap();
        let k = Contracts::from_config(&c).unwrap();
        let t = k.tenant("globex");
        let credit = |t: &TenantContract, a: f64| t.tier(a).map_or(0.0, |t| t.credit);
        // "Below" is strict: 95.00 % earns nothing, 94.99 % the first tier.
        assert_eq!(credit(t, 0.95), 0.0);
        assert_eq!(credit(t, 0.9499), 10.0);
        assert_eq!(credit(t, 0.90), 10.0);
        assert_eq!(credit(t, 0.8999), 25.0);
        assert_eq!(credit(t, 0.0), 25.0);
        assert_eq!(
            credit(k.tenant("initech"), 0.5),
            0.0,
            "no contract, no credit"
        );
    }

    #[test]
    fn per_tenant_targets_override_the_platforms() {
        let c = config(
            "[[tenants]]\nid = \"globex\"\ntime_zone = \"America/Los_Angeles\"\n[[tenants.platforms]]\nid = \"workday\"\non_time_target = 0.94\n",
        )
        .unwrap();
        let k = Contracts::from_config(&c).unwrap();
        assert_eq!(k.on_time_target(&c, "globex", "workday"), 0.94);
        assert_eq!(k.on_time_target(&c, "initech", "workday"), 0.95);
        assert_eq!(
            k.tenant("globex").time_zone,
            chrono_tz::America::Los_Angeles
        );
    }

    #[test]
    fn overlapping_and_invalid_entries_point_at_the_line_with_a_remedy() {
        let text = "[[exclusions]]\nname = \"a\"\ntime_zone = \"UTC\"\nstart = \"2025-10-11T02:00:00\"\nend = \"2025-10-11T06:00:00\"\ncategory = \"maintenance\"\n\n[[exclusions]]\nname = \"b\"\ntime_zone = \"UTC\"\nstart = \"2025-10-11T05:00:00\"\nend = \"2025-10-11T07:00:00\"\ncategory = \"other\"\n";
        let e = config(text).unwrap_err().to_string();
        assert!(e.contains("exclusions[1].start"), "{e}");
        assert!(e.contains("line 11"), "{e}");
        assert!(e.contains("merge them"), "{e}");
        let e = config("[[tenants]]\nid = \"globex\"\ntime_zone = \"Pacific Time\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("tenants[0].time_zone") && e.contains("line 3"),
            "{e}"
        );
        assert!(e.contains("America/Los_Angeles"), "{e}");
        let e = config("[[tenants]]\nid = \"g\"\nbusiness_hours = \"Mon-Fri 08:00-18:00\"\n[[tenants.credits]]\nbelow = 0.95\ncredit = 10\n[[tenants.credits]]\nbelow = 0.90\ncredit = 5\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("tenants[0].credits"), "{e}");
    }

    #[test]
    fn exclusions_and_business_hours_together() {
        let c = config(
            "[[tenants]]\nid = \"globex\"\ntime_zone = \"America/Los_Angeles\"\nbusiness_hours = \"Mon-Fri 08:00-18:00\"\nholidays = [\"2025-11-27\"]\n\n[[exclusions]]\nname = \"Workday firewall change\"\ntenant = \"globex\"\nplatform = \"workday\"\ntime_zone = \"America/New_York\"\nstart = \"2025-11-26T12:00:00\"\nend = \"2025-11-26T14:00:00\"\ncategory = \"customer\"\n",
        )
        .unwrap();
        let k = Contracts::from_config(&c).unwrap();
        let at = |s: &str| crate::time::parse_rfc3339(s).unwrap();
        // Wednesday November 26, 2025, 12:30 in New York is 09:30 in Los Angeles: within
        // business hours, inside the Workday window only for Workday.
        let x = k
            .excluded_at("globex", "workday", at("2025-11-26T17:30:00Z"))
            .unwrap();
        assert_eq!(x.name, "Workday firewall change");
        assert_eq!(x.reason, Reason::Exclusion(ExclusionCategory::Customer));
        assert_eq!(
            k.excluded_at("globex", "benevity", at("2025-11-26T17:30:00Z")),
            None
        );
        assert_eq!(
            k.excluded_at("globex", "benevity", at("2025-11-27T20:00:00Z"))
                .map(|x| x.reason),
            Some(Reason::Holiday)
        );
        assert_eq!(
            k.excluded_at("globex", "benevity", at("2025-11-26T03:00:00Z"))
                .map(|x| x.reason),
            Some(Reason::OutsideBusinessHours)
        );
        assert_eq!(
            k.excluded_at("initech", "workday", at("2025-11-26T17:30:00Z")),
            None
        );
    }
}
