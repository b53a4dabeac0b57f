//! Exclusion windows: once, or recurring by an RFC 5545 rule expanded in local time (so a
//! weekly 02:00 Berlin window stays at 02:00 Berlin across the daylight-saving change).

use super::calendar;
use crate::config::{ExclusionCategory, ExclusionConfig};
use crate::time::Micros;
use chrono::TimeZone;
use rrule::{Frequency, RRule, RRuleSet, Unvalidated};

/// When an exclusion applies.
#[derive(Debug, Clone)]
enum Schedule {
    Once {
        start: Micros,
        end: Micros,
    },
    Recurring {
        rule: Box<RRuleSet>,
        duration: Micros,
    },
}

/// A compiled `[[exclusions]]` entry.
#[derive(Debug, Clone)]
pub struct Exclusion {
    pub name: String,
    pub tenant: Option<String>,
    pub platform: Option<String>,
    pub category: ExclusionCategory,
    schedule: Schedule,
}

impl Exclusion {
    /// Checks and compiles one entry; an error names the field and what to write.
    pub fn compile(c: &ExclusionConfig) -> Result<Self, (&'static str, String, String)> {
        let tz = calendar::zone(&c.time_zone).map_err(|w| ("time_zone", c.time_zone.clone(), w))?;
        let local = calendar::parse_local(&c.start).map_err(|w| ("start", c.start.clone(), w))?;
        let start = calendar::instant(tz, local).map_err(|w| ("start", c.start.clone(), w))?;
        let schedule = match (&c.end, &c.rrule) {
            (Some(end), None) => {
                if c.duration.is_some() {
                    return Err((
                        "duration",
                        format!("{:?}", c.duration),
                        "goes with rrule; a one-off window has start and end".into(),
                    ));
                }
                let l = calendar::parse_local(end).map_err(|w| ("end", end.clone(), w))?;
                let end_at = calendar::instant(tz, l).map_err(|w| ("end", end.clone(), w))?;
                if end_at <= start {
                    return Err((
                        "end",
                        end.clone(),
                        format!("is not after start ({}): windows are [start, end)", c.start),
                    ));
                }
                Schedule::Once { start, end: end_at }
            }
            (None, Some(text)) => {
                let bad = |w: String| ("rrule", text.clone(), w);
                let body = text.trim().trim_start_matches("RRULE:");
                let rule: RRule<Unvalidated> = body.parse().map_err(|e| {
                    bad(format!("is not an RFC 5545 rule ({e}): e.g. \"FREQ=WEEKLY;BYDAY=SA\""))
                })?;
                if matches!(
                    rule.get_freq(),
                    Frequency::Secondly | Frequency::Minutely
                ) {
                    return Err(bad(
                        "recurs more often than hourly: exclusions are maintenance windows; use FREQ=HOURLY or coarser".into(),
                    ));
                }
                let rtz = rrule::Tz::Tz(tz);
                let first = rtz
                    .from_local_datetime(&local)
                    .earliest()
                    .ok_or_else(|| ("start", c.start.clone(), "does not exist in the zone".to_string()))?;
                let set = rule.build(first).map_err(|e| bad(format!("cannot start at {}: {e}", c.start)))?;
                let duration = match c.duration {
                    Some(d) if d.0 > 0 => d.0,
                    _ => {
                        return Err((
                            "duration",
                            "(none)".into(),
                            "a recurring window needs its length, e.g. duration = \"2h\"".into(),
                        ))
                    }
                };
                Schedule::Recurring {
                    rule: Box::new(set),
                    duration,
                }
            }
            (Some(_), Some(_)) => {
                return Err((
                    "end",
                    c.end.clone().unwrap_or_default(),
                    "and rrule both set: a window is one-off (start, end) or recurring (start, rrule, duration)".into(),
                ))
            }
            (None, None) => {
                return Err((
                    "end",
                    "(none)".into(),
                    "missing: give end for a one-off window, or rrule and duration for a recurring one".into(),
                ))
            }
        };
        Ok(Self {
            name: c.name.clone(),
            tenant: c.tenant.clone(),
            platform: c.platform.clone(),
            category: c.category,
            schedule,
        })
    }

    pub fn applies_to(&self, tenant: &str, platform: &str) -> bool {
        self.tenant.as_deref().is_none_or(|t| t == tenant)
            && self.platform.as_deref().is_none_or(|p| p == platform)
    }

    /// The one-off span, if this is one.
    pub fn once(&self) -> Option<(Micros, Micros)> {
        match self.schedule {
            Schedule::Once { start, end } => Some((start, end)),
            Schedule::Recurring { .. } => None,
        }
    }

    /// The spans `[start, end)` that meet `[from, to)`, in order.
    pub fn spans(&self, from: Micros, to: Micros) -> Vec<(Micros, Micros)> {
        match &self.schedule {
            Schedule::Once { start, end } => {
                if *end > from && *start < to {
                    vec![(*start, *end)]
                } else {
                    Vec::new()
                }
            }
            // Occurrences come in order: every one up to `to` is expanded, however far
            // the span is from the first (rules are hourly or coarser, so a year of
            // occurrences is at most 8,784).
            Schedule::Recurring { rule, duration } => rule
                .as_ref()
                .clone()
                .into_iter()
                .map(|at| at.timestamp_micros())
                .take_while(|&s| s < to)
                .filter(|&s| s + duration > from)
                .map(|s| (s, s + duration))
                .collect(),
        }
    }

    /// Whether the window recurs (by its rule) rather than happening once.
    pub fn is_recurring(&self) -> bool {
        matches!(self.schedule, Schedule::Recurring { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ConfigDuration;

    fn utc(s: &str) -> Micros {
        crate::time::parse_rfc3339(s).expect("RFC 3339")
    }

    fn entry(tz: &str, start: &str) -> ExclusionConfig {
        ExclusionConfig {
            name: "w".into(),
            tenant: None,
            platform: None,
            time_zone: tz.into(),
            start: start.into(),
            end: None,
            rrule: None,
            duration: None,
            category: ExclusionCategory::Maintenance,
        }
    }

    #[test]
    fn a_one_off_window_in_new_york_time() {
        let mut c = entry("America/New_York", "2025-10-11T02:00:00");
        c.end = Some("2025-10-11T06:00:00".into());
        let x = Exclusion::compile(&c).unwrap();
        // EDT, UTC−4.
        assert_eq!(
            x.spans(0, i64::MAX),
            vec![(utc("2025-10-11T06:00:00Z"), utc("2025-10-11T10:00:00Z"))]
        );
        assert!(
            x.spans(utc("2025-10-11T10:00:00Z"), i64::MAX).is_empty(),
            "half-open"
        );
    }

    #[test]
    fn a_weekly_window_in_berlin_keeps_its_local_hour_across_the_change() {
        let mut c = entry("Europe/Berlin", "2025-09-06T02:00:00");
        c.rrule = Some("FREQ=WEEKLY;BYDAY=SA".into());
        c.duration = Some(ConfigDuration(2 * crate::time::MICROS_PER_HOUR));
        let x = Exclusion::compile(&c).unwrap();
        // Clocks go back on Sunday October 26, 2025: the Saturday before is CEST (UTC+2),
        // the one after CET (UTC+1).
        let spans = x.spans(utc("2025-10-20T00:00:00Z"), utc("2025-11-03T00:00:00Z"));
        assert_eq!(
            spans,
            vec![
                (utc("2025-10-25T00:00:00Z"), utc("2025-10-25T02:00:00Z")),
                (utc("2025-11-01T01:00:00Z"), utc("2025-11-01T03:00:00Z")),
            ]
        );
        // The first occurrence is the start itself.
        assert_eq!(
            x.spans(0, utc("2025-09-07T00:00:00Z")),
            vec![(utc("2025-09-06T00:00:00Z"), utc("2025-09-06T02:00:00Z"))]
        );
    }

    /// Every occurrence in the span counts, however many and however long after the
    /// first.
    #[test]
    fn an_hourly_window_years_after_its_start_has_every_occurrence() {
        let mut c = entry("UTC", "2025-01-01T00:00:00");
        c.rrule = Some("FREQ=HOURLY".into());
        c.duration = Some(ConfigDuration(10 * crate::time::MICROS_PER_MIN));
        let x = Exclusion::compile(&c).unwrap();
        let (from, to) = (utc("2028-01-01T00:00:00Z"), utc("2029-01-01T00:00:00Z"));
        let spans = x.spans(from, to);
        assert_eq!(spans.len(), 366 * 24, "2028 is a leap year");
        assert_eq!(spans[0], (from, from + 10 * crate::time::MICROS_PER_MIN));
    }

    #[test]
    fn bad_entries_name_the_field_and_the_remedy() {
        let mut c = entry("Mars/Olympus", "2025-10-11T02:00:00");
        c.end = Some("2025-10-11T06:00:00".into());
        assert_eq!(Exclusion::compile(&c).unwrap_err().0, "time_zone");
        let mut c = entry("UTC", "2025-10-11T02:00:00");
        c.rrule = Some("FREQ=FORTNIGHTLY".into());
        c.duration = Some(ConfigDuration(1));
        let e = Exclusion::compile(&c).unwrap_err();
        assert_eq!(e.0, "rrule");
        assert!(e.2.contains("FREQ=WEEKLY;BYDAY=SA"), "{}", e.2);
        let mut c = entry("UTC", "2025-10-11T02:00:00");
        c.rrule = Some("FREQ=WEEKLY".into());
        assert_eq!(Exclusion::compile(&c).unwrap_err().0, "duration");
        let c = entry("UTC", "2025-10-11T02:00:00");
        assert!(Exclusion::compile(&c)
            .unwrap_err()
            .2
            .contains("rrule and duration"));
        let mut c = entry("Europe/Berlin", "2025-03-30T02:30:00");
        c.end = Some("2025-03-30T04:00:00".into());
        let e = Exclusion::compile(&c).unwrap_err();
        assert_eq!(e.0, "start");
        assert!(e.2.contains("jump forward"), "{}", e.2);
    }
}
