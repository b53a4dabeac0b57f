//! Findings as sentences a customer-success person would have written, with their
//! numbers; shared by every format and by notifications.

use super::findings::{Finding, Test, ALPHA};
use super::Scorecard;

fn pct(r: f64) -> String {
    format!("{:.1}%", r * 100.0)
}

/// `08:00–10:00, 14:00–15:00` for hours 8, 9, 14.
pub fn hour_ranges(hours: &[u32]) -> String {
    let mut parts = Vec::new();
    let mut i = 0;
    while i < hours.len() {
        let first = hours[i];
        while i + 1 < hours.len() && hours[i + 1] == hours[i] + 1 {
            i += 1;
        }
        parts.push(format!("{first:02}:00–{:02}:00", (hours[i] + 1) % 24));
        i += 1;
    }
    parts.join(", ")
}

/// How the test put it: `p = 3.2e-9 < 0.01 ÷ 36`.
pub fn test_text(t: &Test) -> String {
    let p = if t.p_value > 0.0 {
        format!("p = {:.1e}", t.p_value)
    } else {
        "p < 1e-300".to_string()
    };
    format!("{}: {p} < {ALPHA} ÷ {} comparisons", t.name, t.comparisons)
}

/// The finding in one sentence.
pub fn sentence(f: &Finding, sc: &Scorecard) -> String {
    let name = sc.platform_name(f.platform());
    match f {
        Finding::Outage {
            from,
            to,
            events,
            failed,
            baseline,
            ..
        } => format!(
            "{name} was down from {} to {} ({}): {failed} of {events} events failed, against {} over the period.",
            sc.local_time(*from),
            sc.local_time(*to),
            sc.contract.time_zone.name(),
            pct(*baseline)
        ),
        Finding::StepChange {
            metric,
            week,
            before,
            after,
            ..
        } => format!(
            "{name}'s {} moved from {} to {} at week {week} ({}).",
            metric.label(),
            pct(*before),
            pct(*after),
            sc.weekly.get(week - 1).map_or(String::new(), |w| format!("starting {}", sc.date(w.start)))
        ),
        Finding::PeakHours {
            metric,
            hours,
            traffic_share,
            metric_share,
            ..
        } => format!(
            "{name}'s {} concentrate at {} ({}): {} of them in {} of its events.",
            if *metric == super::findings::Metric::Retry {
                "retries"
            } else {
                "failures"
            },
            hour_ranges(hours),
            sc.contract.time_zone.name(),
            pct(*metric_share),
            pct(*traffic_share)
        ),
        Finding::Tail {
            p99_ms,
            tail_share,
            traffic_share,
            ..
        } => format!(
            "{name} makes {} of the attempts slower than the overall P99 ({:.0} ms) with {} of all attempts.",
            pct(*tail_share),
            p99_ms,
            pct(*traffic_share)
        ),
        Finding::Recovery {
            week,
            before,
            after,
            weeks_held,
            ..
        } => format!(
            "{name}'s on-time rate improved from {} to {} at week {week} and held for {weeks_held} weeks.",
            pct(*before),
            pct(*after)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hours_read_as_ranges() {
        assert_eq!(hour_ranges(&[8, 9]), "08:00–10:00");
        assert_eq!(
            hour_ranges(&[8, 9, 14, 23]),
            "08:00–10:00, 14:00–15:00, 23:00–00:00"
        );
        assert_eq!(hour_ranges(&[]), "");
    }
}
