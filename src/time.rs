//! Event time as integer microseconds since the Unix epoch (UTC), with a strict
//! RFC 3339 parser and formatter.
//!
//! Hand-written rather than pulled from `chrono`/`time`: the JSON decoder parses three
//! timestamps per record on the hot path, and a strict, allocation-free parser is ~60 lines.

use std::fmt::Write as _;

/// Microseconds since 1970-01-01T00:00:00Z.
pub type Micros = i64;

pub const MICROS_PER_MILLI: i64 = 1_000;
pub const MICROS_PER_SEC: i64 = 1_000_000;
pub const MICROS_PER_MIN: i64 = 60 * MICROS_PER_SEC;
pub const MICROS_PER_HOUR: i64 = 60 * MICROS_PER_MIN;
pub const MICROS_PER_DAY: i64 = 24 * MICROS_PER_HOUR;

/// Days since the epoch for a proleptic Gregorian civil date (H. Hinnant's algorithm).
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let m = m as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Inverse of [`days_from_civil`].
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn digits(b: &[u8]) -> Option<u32> {
    if b.is_empty() {
        return None;
    }
    let mut v: u32 = 0;
    for &c in b {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v * 10 + u32::from(c - b'0');
    }
    Some(v)
}

/// The two ASCII digits at `b[i..i + 2]` as a number.
#[inline]
fn two_digits(b: &[u8], i: usize) -> Option<u32> {
    let (hi, lo) = (b[i].wrapping_sub(b'0'), b[i + 1].wrapping_sub(b'0'));
    (hi < 10 && lo < 10).then(|| u32::from(hi) * 10 + u32::from(lo))
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        _ => 28,
    }
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)`. Fractions beyond microseconds are
/// truncated. Returns `None` for anything else, including impossible dates.
pub fn parse_rfc3339(s: &str) -> Option<Micros> {
    parse_rfc3339_cached(s, &mut DateCache::default())
}

/// The last valid date [`parse_rfc3339_cached`] read and its day number. A record's
/// three timestamps, and a stream's records one after the other, nearly always share
/// their date, and the date is half of the parse.
#[derive(Debug, Default, Clone, Copy)]
pub struct DateCache {
    date: [u8; 10],
    days: Option<i64>,
}

/// [`parse_rfc3339`], reusing the day number of the date `cache` last held.
pub fn parse_rfc3339_cached(s: &str, cache: &mut DateCache) -> Option<Micros> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let days = match cache.days {
        Some(days) if b[..10] == cache.date[..] => days,
        _ => {
            let year = digits(&b[0..4])? as i64;
            let month = digits(&b[5..7])?;
            let day = digits(&b[8..10])?;
            if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
                return None;
            }
            let days = days_from_civil(year, month, day);
            cache.date.copy_from_slice(&b[..10]);
            cache.days = Some(days);
            days
        }
    };
    let hour = two_digits(b, 11)?;
    let min = two_digits(b, 14)?;
    let sec = two_digits(b, 17)?;
    if hour > 23 || min > 59 || sec > 59 {
        return None;
    }
    let mut i = 19;
    let mut micros: i64 = 0;
    if b[i] == b'.' {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            if i - start < 6 {
                micros = micros * 10 + i64::from(b[i] - b'0');
            }
            i += 1;
        }
        let n = i - start;
        if n == 0 {
            return None;
        }
        for _ in n..6 {
            micros *= 10;
        }
    }
    let offset_secs: i64 = match b.get(i..)? {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let h = digits(&[*h1, *h2])? as i64;
            let m = digits(&[*m1, *m2])? as i64;
            if h > 23 || m > 59 {
                return None;
            }
            let o = h * 3600 + m * 60;
            if *sign == b'+' {
                o
            } else {
                -o
            }
        }
        _ => return None,
    };
    let secs =
        days * 86_400 + i64::from(hour) * 3600 + i64::from(min) * 60 + i64::from(sec) - offset_secs;
    Some(secs * MICROS_PER_SEC + micros)
}

/// Formats as RFC 3339 UTC with millisecond precision, or microseconds when needed.
pub fn format_rfc3339(t: Micros) -> String {
    let days = t.div_euclid(MICROS_PER_DAY);
    let rem = t.rem_euclid(MICROS_PER_DAY);
    let (y, m, d) = civil_from_days(days);
    let secs = rem / MICROS_PER_SEC;
    let frac = rem % MICROS_PER_SEC;
    let mut s = String::with_capacity(27);
    let _ = write!(
        s,
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    );
    if frac % 1000 == 0 {
        let _ = write!(s, ".{:03}Z", frac / 1000);
    } else {
        let _ = write!(s, ".{frac:06}Z");
    }
    s
}

/// Parses a `YYYY-MM-DD` date as midnight UTC.
pub fn parse_date(s: &str) -> Option<Micros> {
    let b = s.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let y = digits(&b[0..4])? as i64;
    let m = digits(&b[5..7])?;
    let d = digits(&b[8..10])?;
    if !(1..=12).contains(&m) || d == 0 || d > days_in_month(y, m) {
        return None;
    }
    Some(days_from_civil(y, m, d) * MICROS_PER_DAY)
}

/// Parses a reporting period as `[start, end)` at midnight UTC: a calendar month
/// `YYYY-MM`, or an ISO 8601 week `YYYY-Www` (Monday to Sunday; week 1 holds January 4th).
pub fn parse_period(s: &str) -> Option<(Micros, Micros)> {
    let b = s.as_bytes();
    match b.len() {
        7 if b[4] == b'-' => {
            let y = digits(&b[0..4])? as i64;
            let m = digits(&b[5..7])?;
            if !(1..=12).contains(&m) {
                return None;
            }
            let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
            Some((
                days_from_civil(y, m, 1) * MICROS_PER_DAY,
                days_from_civil(ny, nm, 1) * MICROS_PER_DAY,
            ))
        }
        8 if b[4] == b'-' && (b[5] == b'W' || b[5] == b'w') => {
            let y = digits(&b[0..4])? as i64;
            let w = i64::from(digits(&b[6..8])?);
            let jan4 = days_from_civil(y, 1, 4);
            // 1970-01-01 was a Thursday: Monday is 0.
            let monday1 = jan4 - (jan4 + 3).rem_euclid(7);
            let start = monday1 + (w - 1) * 7;
            // A week belongs to the year its Thursday is in (52 or 53 weeks).
            if w < 1 || civil_from_days(start + 3).0 != y {
                return None;
            }
            Some((start * MICROS_PER_DAY, (start + 7) * MICROS_PER_DAY))
        }
        _ => None,
    }
}

/// Formats the UTC date of `t` as `YYYY-MM-DD`.
pub fn format_date(t: Micros) -> String {
    let (y, m, d) = civil_from_days(t.div_euclid(MICROS_PER_DAY));
    format!("{y:04}-{m:02}-{d:02}")
}

/// Parses a human duration: `250ms`, `30s`, `5m`, `1h`, `7d`. Zero is allowed here;
/// callers that need a positive duration check it.
pub fn parse_duration(s: &str) -> Option<Micros> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit())?;
    let (num, unit) = s.split_at(split);
    let n: i64 = num.parse().ok()?;
    let mult = match unit {
        "us" => 1,
        "ms" => MICROS_PER_MILLI,
        "s" => MICROS_PER_SEC,
        "m" => MICROS_PER_MIN,
        "h" => MICROS_PER_HOUR,
        "d" => MICROS_PER_DAY,
        _ => return None,
    };
    n.checked_mul(mult)
}

/// Formats a duration in the largest unit that divides it exactly (`5m`, `1h`, `7d`).
pub fn format_duration(us: Micros) -> String {
    for (unit, m) in [
        ("d", MICROS_PER_DAY),
        ("h", MICROS_PER_HOUR),
        ("m", MICROS_PER_MIN),
        ("s", MICROS_PER_SEC),
        ("ms", MICROS_PER_MILLI),
    ] {
        if us != 0 && us % m == 0 {
            return format!("{}{unit}", us / m);
        }
    }
    format!("{us}us")
}

/// Wall-clock now in microseconds.
pub fn now_micros() -> Micros {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_date_cache_never_changes_a_result() {
        let inputs = [
            "2025-10-01T12:00:00Z",
            "2025-10-01T23:59:59.999999Z",
            "2025-10-01T24:00:00Z",
            "2025-10-02T00:00:00.5+02:00",
            "2025-02-29T00:00:00Z",
            "2024-02-29T00:00:00Z",
            "2024-02-29T00:00:61Z",
            "2024-02-29X00:00:00Z",
            "2025-10-01T12:00:00",
            "1999-12-31T23:59:59.1234567Z",
            "2025-10-01t01:02:03z",
        ];
        let mut cache = DateCache::default();
        for _ in 0..2 {
            for a in inputs {
                for b in inputs {
                    assert_eq!(parse_rfc3339_cached(a, &mut cache), parse_rfc3339(a), "{a}");
                    assert_eq!(parse_rfc3339_cached(b, &mut cache), parse_rfc3339(b), "{b}");
                }
            }
        }
        assert_eq!(parse_rfc3339("2025-02-29T00:00:00Z"), None);
    }
    use super::*;

    #[test]
    fn parses_and_formats_round_trip() {
        let t = parse_rfc3339("2025-10-01T09:00:03.512Z").expect("valid");
        assert_eq!(format_rfc3339(t), "2025-10-01T09:00:03.512Z");
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_rfc3339("2025-10-01T11:00:03.512+02:00"),
            Some(t),
            "offsets are normalised to UTC"
        );
        assert_eq!(
            parse_rfc3339("2025-10-01T09:00:03.512345678Z"),
            Some(t + 345)
        );
    }

    #[test]
    fn rejects_impossible_or_malformed() {
        for bad in [
            "",
            "2025-02-29T00:00:00Z",
            "2025-13-01T00:00:00Z",
            "2025-10-01 09:00:00Z",
            "2025-10-01T24:00:00Z",
            "2025-10-01T09:00:00",
            "2025-10-01T09:00:00.Z",
            "2025-10-01T09:00:00Zjunk",
            "not a time at all!!!",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad:?} must be rejected");
        }
        assert!(parse_rfc3339("2024-02-29T00:00:00Z").is_some());
    }

    #[test]
    fn periods_are_calendar_months_and_iso_weeks() {
        let d = |s| parse_date(s).unwrap_or_default();
        assert_eq!(
            parse_period("2025-10"),
            Some((d("2025-10-01"), d("2025-11-01")))
        );
        assert_eq!(
            parse_period("2025-12"),
            Some((d("2025-12-01"), d("2026-01-01")))
        );
        assert_eq!(
            parse_period("2024-02").map(|(a, b)| (b - a) / MICROS_PER_DAY),
            Some(29)
        );
        // ISO weeks: 2025-W41 is Monday 6 to Sunday 12 October 2025.
        assert_eq!(
            parse_period("2025-W41"),
            Some((d("2025-10-06"), d("2025-10-13")))
        );
        // Week 1 of 2026 starts in 2025 (29 December); 2026 has 53 weeks, 2025 has 52.
        assert_eq!(
            parse_period("2026-W01"),
            Some((d("2025-12-29"), d("2026-01-05")))
        );
        assert_eq!(
            parse_period("2026-W53"),
            Some((d("2026-12-28"), d("2027-01-04")))
        );
        assert_eq!(parse_period("2025-W53"), None);
        for bad in [
            "2025-13",
            "2025-W00",
            "2025",
            "2025-10-01",
            "25-W41",
            "2025-X1",
        ] {
            assert_eq!(parse_period(bad), None, "{bad}");
        }
    }

    #[test]
    fn civil_round_trip_over_centuries() {
        for days in (-800_000..800_000).step_by(997) {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("2m"), Some(2 * MICROS_PER_MIN));
        assert_eq!(parse_duration("500ms"), Some(500 * MICROS_PER_MILLI));
        assert_eq!(parse_duration("7d"), Some(7 * MICROS_PER_DAY));
        assert_eq!(parse_duration("7 days"), None);
        assert_eq!(parse_duration("m"), None);
        assert_eq!(format_duration(MICROS_PER_HOUR), "1h");
        assert_eq!(format_duration(90 * MICROS_PER_SEC), "90s");
        assert_eq!(
            parse_date("2025-09-08").map(format_date).as_deref(),
            Some("2025-09-08")
        );
    }
}
