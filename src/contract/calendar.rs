//! Local time for contracts: IANA zones (with their daylight-saving rules), the UTC span
//! of a local day, ISO week, month or report period, a report cut into local weeks, and
//! business hours.
//!
//! Instants are [`Micros`] since the Unix epoch (UTC). A local date and time that does not
//! exist (clocks jump forward over it) is an error where a user wrote it, and the first
//! instant after the gap where a day starts in it; one that happens twice (clocks fall
//! back) is its first occurrence.

use crate::time::Micros;
use chrono::{Datelike, Duration, LocalResult, NaiveDate, NaiveDateTime, NaiveTime, TimeZone};
use chrono_tz::Tz;

/// An IANA zone by name.
pub fn zone(name: &str) -> Result<Tz, String> {
    name.parse::<Tz>().map_err(|_| {
        "is not an IANA time zone: write it as Area/City, e.g. \"America/Los_Angeles\", \"Europe/Berlin\" or \"UTC\"".to_string()
    })
}

/// `"2025-10-11T02:00:00"` (seconds optional) as a local date and time.
pub fn parse_local(text: &str) -> Result<NaiveDateTime, String> {
    NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S")
        .or_else(|_| NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M"))
        .map_err(|_| {
            "is not a local date and time: write \"YYYY-MM-DDTHH:MM:SS\" without an offset (the entry's time_zone says where)".to_string()
        })
}

/// A local date and time as an instant: an error inside a daylight-saving gap.
pub fn instant(tz: Tz, local: NaiveDateTime) -> Result<Micros, String> {
    match tz.from_local_datetime(&local) {
        LocalResult::Single(t) | LocalResult::Ambiguous(t, _) => Ok(t.timestamp_micros()),
        LocalResult::None => Err(format!(
            "does not exist in {tz}: clocks jump forward over it; pick a time outside the change"
        )),
    }
}

/// Where local `date` starts: its midnight, or the first instant after a gap holding it.
pub fn day_start(tz: Tz, date: NaiveDate) -> Micros {
    let mut t = date.and_time(NaiveTime::MIN);
    // Gaps are at most a few hours; step by minutes until the time exists.
    for _ in 0..24 * 60 {
        if let Ok(at) = instant(tz, t) {
            return at;
        }
        t += Duration::minutes(1);
    }
    tz.from_utc_datetime(&date.and_time(NaiveTime::MIN))
        .timestamp_micros()
}

/// The local date at an instant.
pub fn local_date(tz: Tz, at: Micros) -> NaiveDate {
    let utc = chrono::DateTime::from_timestamp_micros(at).unwrap_or_default();
    utc.with_timezone(&tz).date_naive()
}

/// The local hour of the day (0–23) at an instant.
pub fn local_hour(tz: Tz, at: Micros) -> u32 {
    use chrono::Timelike;
    let utc = chrono::DateTime::from_timestamp_micros(at).unwrap_or_default();
    utc.with_timezone(&tz).hour()
}

/// The UTC span `[from, to)` of local dates `first ..= last`.
pub fn dates(tz: Tz, first: NaiveDate, last: NaiveDate) -> (Micros, Micros) {
    let after = last.succ_opt().unwrap_or(last);
    (day_start(tz, first), day_start(tz, after))
}

/// The UTC span of a local month.
pub fn month(tz: Tz, year: i32, month: u32) -> Option<(Micros, Micros)> {
    let first = NaiveDate::from_ymd_opt(year, month, 1)?;
    let next = if month == 12 {
        NaiveDate::from_ymd_opt(year + 1, 1, 1)?
    } else {
        NaiveDate::from_ymd_opt(year, month + 1, 1)?
    };
    Some((day_start(tz, first), day_start(tz, next)))
}

/// The UTC span of a local ISO week (Monday to Sunday).
pub fn iso_week(tz: Tz, year: i32, week: u32) -> Option<(Micros, Micros)> {
    let monday = NaiveDate::from_isoywd_opt(year, week, chrono::Weekday::Mon)?;
    Some(dates(tz, monday, monday + Duration::days(6)))
}

/// A report period in local time: `"2025-10"` (a month) or `"2025-W41"` (an ISO week).
pub fn period(tz: Tz, text: &str) -> Option<(Micros, Micros)> {
    let (y, rest) = text.split_once('-')?;
    let year: i32 = y.parse().ok().filter(|_| y.len() == 4)?;
    match rest.strip_prefix(['W', 'w']) {
        Some(w) if w.len() == 2 => iso_week(tz, year, w.parse().ok()?),
        None if rest.len() == 2 => month(tz, year, rest.parse().ok()?),
        _ => None,
    }
}

/// `[from, to)` cut into local weeks of seven days from `from`'s local date (a week
/// across a daylight-saving change is 167 or 169 hours); the last may be shorter.
pub fn weeks(tz: Tz, from: Micros, to: Micros) -> Vec<(Micros, Micros)> {
    let mut out = Vec::new();
    let mut day = local_date(tz, from);
    let mut start = from;
    while start < to {
        day += Duration::days(7);
        let end = day_start(tz, day).min(to);
        out.push((start, end));
        start = end;
    }
    out
}

/// Business hours: the days of the week they are kept and their local opening hours.
#[derive(Debug, Clone, PartialEq)]
pub struct BusinessHours {
    /// Monday first.
    pub days: [bool; 7],
    pub open: NaiveTime,
    pub close: NaiveTime,
}

const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

fn day_index(d: &str) -> Result<usize, String> {
    DAYS.iter()
        .position(|x| x.eq_ignore_ascii_case(d.trim()))
        .ok_or_else(|| format!("{d:?} is not a day: use Mon, Tue, Wed, Thu, Fri, Sat, Sun"))
}

impl BusinessHours {
    /// `"Mon-Fri 08:00-18:00"`; days as a range or a comma list (`"Mon,Wed,Fri"`).
    pub fn parse(text: &str) -> Result<Self, String> {
        let remedy = "write days and hours as \"Mon-Fri 08:00-18:00\"";
        let (days_text, hours_text) = text
            .trim()
            .split_once(' ')
            .ok_or_else(|| format!("has no hours: {remedy}"))?;
        let mut days = [false; 7];
        for part in days_text.split(',') {
            match part.split_once('-') {
                Some((a, b)) => {
                    let (a, b) = (day_index(a)?, day_index(b)?);
                    if a > b {
                        return Err(format!("day range {part:?} runs backwards: {remedy}"));
                    }
                    days[a..=b].iter_mut().for_each(|d| *d = true);
                }
                None => days[day_index(part)?] = true,
            }
        }
        let (open, close) = hours_text
            .trim()
            .split_once('-')
            .ok_or_else(|| format!("has no opening hours: {remedy}"))?;
        let time = |t: &str| {
            NaiveTime::parse_from_str(t.trim(), "%H:%M")
                .map_err(|_| format!("{t:?} is not a time of day: {remedy}"))
        };
        let (open, close) = (time(open)?, time(close)?);
        if open >= close {
            return Err(format!(
                "closes ({close}) before it opens ({open}): hours within one day, {remedy}"
            ));
        }
        Ok(Self { days, open, close })
    }

    /// The local hours written back, days as ranges: `"Mon-Fri 08:00-18:00"`.
    fn days_text(&self) -> String {
        let name = |i: usize| {
            let d = DAYS[i];
            format!("{}{}", d[..1].to_uppercase(), &d[1..])
        };
        let mut parts = Vec::new();
        let mut i = 0;
        while i < 7 {
            if !self.days[i] {
                i += 1;
                continue;
            }
            let first = i;
            while i + 1 < 7 && self.days[i + 1] {
                i += 1;
            }
            parts.push(if first == i {
                name(i)
            } else {
                format!("{}-{}", name(first), name(i))
            });
            i += 1;
        }
        parts.join(",")
    }

    /// The spans within `[from, to)` outside these hours, or on one of `holidays`, each
    /// with whether a holiday made it.
    pub fn outside(
        &self,
        tz: Tz,
        holidays: &std::collections::BTreeSet<NaiveDate>,
        from: Micros,
        to: Micros,
    ) -> Vec<(Micros, Micros, bool)> {
        let mut out: Vec<(Micros, Micros, bool)> = Vec::new();
        let mut push = |a: Micros, b: Micros, holiday: bool| {
            let (a, b) = (a.max(from), b.min(to));
            if a >= b {
                return;
            }
            match out.last_mut() {
                Some(last) if last.1 == a && last.2 == holiday => last.1 = b,
                _ => out.push((a, b, holiday)),
            }
        };
        let (mut d, last) = (local_date(tz, from), local_date(tz, to));
        while d <= last {
            let (start, end) = dates(tz, d, d);
            let weekday = d.weekday().num_days_from_monday() as usize;
            if holidays.contains(&d) {
                push(start, end, true);
            } else if !self.days[weekday] {
                push(start, end, false);
            } else {
                let at = |t: NaiveTime| instant(tz, d.and_time(t)).unwrap_or(start);
                push(start, at(self.open), false);
                push(at(self.close), end, false);
            }
            d = d.succ_opt().unwrap_or(last + Duration::days(1));
        }
        out
    }
}

impl std::fmt::Display for BusinessHours {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}-{}",
            self.days_text(),
            self.open.format("%H:%M"),
            self.close.format("%H:%M")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An instant from an RFC 3339 UTC text, computed without this module.
    fn utc(s: &str) -> Micros {
        crate::time::parse_rfc3339(s).expect("RFC 3339")
    }

    fn day(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    #[test]
    fn a_month_in_los_angeles_closes_at_local_midnight() {
        let la = zone("America/Los_Angeles").unwrap();
        // October 2025: PDT (UTC−7) at both ends.
        assert_eq!(
            month(la, 2025, 10),
            Some((utc("2025-10-01T07:00:00Z"), utc("2025-11-01T07:00:00Z")))
        );
        // November 2025: PDT at the start, PST (UTC−8) from November 2 on.
        assert_eq!(
            month(la, 2025, 11),
            Some((utc("2025-11-01T07:00:00Z"), utc("2025-12-01T08:00:00Z")))
        );
        // ISO week 45 of 2025: Monday November 3 to Sunday November 9, all PST.
        assert_eq!(
            iso_week(la, 2025, 45),
            Some((utc("2025-11-03T08:00:00Z"), utc("2025-11-10T08:00:00Z")))
        );
        assert_eq!(
            local_date(la, utc("2025-11-01T06:59:59Z")),
            day("2025-10-31")
        );
    }

    #[test]
    fn periods_and_weeks_close_at_local_midnight() {
        let la = zone("America/Los_Angeles").unwrap();
        assert_eq!(period(la, "2025-10"), month(la, 2025, 10));
        assert_eq!(period(la, "2025-W45"), iso_week(la, 2025, 45));
        for bad in ["2025-13", "2025-W54", "25-10", "2025/10", "2025-W4"] {
            assert_eq!(period(la, bad), None, "{bad}");
        }
        // Monday October 27 to Monday November 10, 2025: the first week holds the end of
        // PDT (169 hours), the second is all PST.
        let (from, to) = (utc("2025-10-27T07:00:00Z"), utc("2025-11-10T08:00:00Z"));
        assert_eq!(
            weeks(la, from, to),
            vec![
                (from, utc("2025-11-03T08:00:00Z")),
                (utc("2025-11-03T08:00:00Z"), to),
            ]
        );
        assert_eq!(
            weeks(la, from, utc("2025-10-30T07:00:00Z")),
            vec![(from, utc("2025-10-30T07:00:00Z"))],
            "a short report is one short week"
        );
    }

    #[test]
    fn a_local_time_in_new_york_is_its_utc_instant() {
        let ny = zone("America/New_York").unwrap();
        let t = parse_local("2025-10-11T02:00:00").unwrap();
        assert_eq!(instant(ny, t), Ok(utc("2025-10-11T06:00:00Z")));
        // March 9, 2025: 02:00-03:00 does not exist; November 2: 01:30 happens twice.
        let gap = parse_local("2025-03-09T02:30").unwrap();
        assert!(instant(ny, gap)
            .unwrap_err()
            .contains("clocks jump forward"));
        let twice = parse_local("2025-11-02T01:30").unwrap();
        assert_eq!(instant(ny, twice), Ok(utc("2025-11-02T05:30:00Z")));
    }

    #[test]
    fn bad_zones_and_times_say_what_to_write() {
        assert!(zone("PST").unwrap_err().contains("America/Los_Angeles"));
        assert!(parse_local("2025-10-11 02:00+02:00")
            .unwrap_err()
            .contains("YYYY-MM-DDTHH:MM:SS"));
        assert!(BusinessHours::parse("Mon-Fri")
            .unwrap_err()
            .contains("Mon-Fri 08:00-18:00"));
        assert!(BusinessHours::parse("Fri-Mon 08:00-18:00").is_err());
        assert!(BusinessHours::parse("Mon-Fri 18:00-08:00").is_err());
        assert!(BusinessHours::parse("Mon-Fry 08:00-18:00")
            .unwrap_err()
            .contains("Tue"));
    }

    #[test]
    fn business_hours_with_a_holiday() {
        let la = zone("America/Los_Angeles").unwrap();
        let hours = BusinessHours::parse("Mon-Fri 08:00-18:00").unwrap();
        assert_eq!(hours.to_string(), "Mon-Fri 08:00-18:00");
        assert_eq!(
            BusinessHours::parse("Mon,Wed-Thu,Sun 09:30-17:00")
                .unwrap()
                .to_string(),
            "Mon,Wed-Thu,Sun 09:30-17:00"
        );
        assert_eq!(hours.days, [true, true, true, true, true, false, false]);
        let holidays = [day("2025-11-27")].into_iter().collect();
        // Wednesday November 26 to Saturday November 29, 2025 (PST, UTC−8).
        let (from, to) = (utc("2025-11-26T08:00:00Z"), utc("2025-11-30T08:00:00Z"));
        let outside = hours.outside(la, &holidays, from, to);
        assert_eq!(
            outside,
            vec![
                // Wednesday before 08:00 and after 18:00 local.
                (
                    utc("2025-11-26T08:00:00Z"),
                    utc("2025-11-26T16:00:00Z"),
                    false
                ),
                (
                    utc("2025-11-27T02:00:00Z"),
                    utc("2025-11-27T08:00:00Z"),
                    false
                ),
                // Thanksgiving, all day.
                (
                    utc("2025-11-27T08:00:00Z"),
                    utc("2025-11-28T08:00:00Z"),
                    true
                ),
                // Friday before opening; after closing, then the weekend.
                (
                    utc("2025-11-28T08:00:00Z"),
                    utc("2025-11-28T16:00:00Z"),
                    false
                ),
                (
                    utc("2025-11-29T02:00:00Z"),
                    utc("2025-11-30T08:00:00Z"),
                    false
                ),
            ]
        );
    }
}
