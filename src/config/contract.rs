//! SLA contract settings: per tenant a time zone, business hours, holidays, credit tiers
//! and target overrides (`[[tenants]]`), and exclusion windows (`[[exclusions]]`). Read as
//! written here; [`crate::contract::Contracts::compile`] checks and compiles them at
//! start-up. The model: docs/contracts.md.

use super::ConfigDuration;
use serde::Deserialize;

fn utc() -> String {
    "UTC".into()
}

/// One tenant's contract (`[[tenants]]`). A tenant without one is in UTC, around the clock,
/// at the platforms' targets, without credits.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantConfig {
    pub id: String,
    /// IANA zone: days, ISO weeks and months close at its local midnight.
    #[serde(default = "utc")]
    pub time_zone: String,
    /// `"Mon-Fri 08:00-18:00"` in the tenant's zone; outside them nothing counts.
    #[serde(default)]
    pub business_hours: Option<String>,
    /// Local dates (`"2025-11-27"`) outside business hours all day.
    #[serde(default)]
    pub holidays: Vec<String>,
    /// Service credits: attainment below `below` earns `credit` percent (the lowest tier
    /// reached applies).
    #[serde(default)]
    pub credits: Vec<CreditTier>,
    /// Targets for this tenant only.
    #[serde(default)]
    pub platforms: Vec<TenantPlatformConfig>,
}

#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreditTier {
    pub below: f64,
    pub credit: f64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantPlatformConfig {
    pub id: String,
    #[serde(default)]
    pub on_time_target: Option<f64>,
}

/// Why a window is excluded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Hash, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExclusionCategory {
    /// Planned maintenance.
    Maintenance,
    /// Caused by the customer (their firewall, their outage).
    Customer,
    Other,
}

impl ExclusionCategory {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Maintenance => "maintenance",
            Self::Customer => "customer",
            Self::Other => "other",
        }
    }
}

/// A window whose records leave every figure (`[[exclusions]]`): once (`start`, `end`) or
/// recurring (`start` as the first occurrence, `rrule`, `duration`), in local time of
/// `time_zone`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExclusionConfig {
    pub name: String,
    /// Every tenant when absent.
    #[serde(default)]
    pub tenant: Option<String>,
    /// Every platform when absent.
    #[serde(default)]
    pub platform: Option<String>,
    #[serde(default = "utc")]
    pub time_zone: String,
    /// Local date and time, `"2025-10-11T02:00:00"`.
    pub start: String,
    #[serde(default)]
    pub end: Option<String>,
    /// RFC 5545 recurrence (`"FREQ=WEEKLY;BYDAY=SA"`), from `start` on.
    #[serde(default)]
    pub rrule: Option<String>,
    #[serde(default)]
    pub duration: Option<ConfigDuration>,
    pub category: ExclusionCategory,
}
