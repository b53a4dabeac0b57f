//! Markdown rendering in the layout of the pilot scorecard's "Delivery SLA Performance"
//! section (see `shared/reference/pilot-scorecard-globex.md`), plus a weekly trend.

use super::Scorecard;
use crate::sla::Status;
use std::fmt::Write as _;

/// `96.8%`; below 1% two decimals (`0.18%`), as the seed prints DLQ rates.
fn pct(r: f64) -> String {
    let v = r * 100.0;
    if v > 0.0 && v < 1.0 {
        format!("{v:.2}%")
    } else {
        format!("{v:.1}%")
    }
}

/// A target as the seed writes it: `95%`, `0.5%`, `0.1%`.
fn target_pct(r: f64) -> String {
    let s = format!("{:.3}", r * 100.0);
    let s = s.trim_end_matches('0').trim_end_matches('.');
    format!("{s}%")
}

/// `1,247 ms`.
fn ms(v: f64) -> String {
    let n = v.round() as i64;
    let digits = n.abs().to_string();
    let mut out = String::new();
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    format!("{}{out} ms", if n < 0 { "-" } else { "" })
}

fn count(n: u64) -> String {
    ms(n as f64).trim_end_matches(" ms").to_string()
}

fn latency_line(label: &str, value: Option<f64>, target: f64, hard: bool) -> String {
    let Some(v) = value else {
        return format!("{label}: - (Target: ≤ {}ms)", target.round());
    };
    let verdict = match (hard, v <= target) {
        (false, true) => "✅ Within target",
        (true, true) => "✅ Within threshold",
        (false, false) if v <= target * 1.2 => "⚠️ Slightly above target",
        (false, false) => "⚠️ Above target",
        (true, false) => "❌ Exceeds threshold",
    };
    format!(
        "{label}: {} (Target: ≤ {}ms) {verdict}",
        ms(v),
        target.round()
    )
}

pub fn render(sc: &Scorecard) -> String {
    let mut o = String::new();
    let sla = &sc.config.sla;
    let _ = writeln!(o, "## Delivery SLA Performance\n");
    let _ = writeln!(
        o,
        "_Tenant `{}`, {} to {} inclusive ({} days){}. Computed by slatrack from event-time buckets._\n",
        sc.tenant,
        sc.date(sc.from),
        sc.last_day(),
        sc.contract.time_zone.name(),
        if sc.partial {
            "; **partial: the period has not ended**"
        } else {
            ""
        }
    );
    let _ = writeln!(o, "### Platform Integration Status\n");
    let _ = writeln!(
        o,
        "| Platform | Status | On-Time Delivery % | Retry Rate | Avg. Latency | SLA Target |"
    );
    let _ = writeln!(
        o,
        "|----------|--------|-------------------|------------|--------------|------------|"
    );
    for p in &sc.platforms {
        let c = &p.stats.counters;
        match c.on_time_ratio() {
            None => {
                let _ = writeln!(o, "| **{}** | N/A | - | - | - | - |", p.name);
            }
            Some(on_time) => {
                let _ = writeln!(
                    o,
                    "| **{}** | {} | {} | {} | {} | ≥ {} @ ≤{}ms |",
                    p.name,
                    p.status.emoji(),
                    pct(on_time),
                    pct(c.retry_ratio().unwrap_or(0.0)),
                    c.avg_latency_ms().map(ms).unwrap_or_else(|| "-".into()),
                    target_pct(p.target_on_time),
                    p.target_latency_ms.round()
                );
            }
        }
    }
    let c = &sc.overall.counters;
    let _ = writeln!(
        o,
        "\n**Overall SLA Compliance**: {} (Target: ≥ {}) {}\n",
        c.on_time_ratio().map(pct).unwrap_or_else(|| "-".into()),
        target_pct(sc.overall_target),
        sc.status.emoji()
    );
    findings(&mut o, sc);
    let _ = writeln!(o, "### Delivery Performance Details\n");
    let _ = writeln!(o, "| Metric | Target | Actual | Status |");
    let _ = writeln!(o, "|--------|--------|--------|--------|");
    let _ = writeln!(
        o,
        "| **Total Events Delivered** | N/A | {} | - |",
        count(c.events)
    );
    let st = &sc.statuses;
    for (label, target, value, status) in [
        (
            "Failed Deliveries",
            sla.failed_target,
            c.failed_ratio(),
            st.failed,
        ),
        (
            "Events Requiring Retry",
            sla.retry_target,
            c.retry_ratio(),
            st.retry,
        ),
        (
            "Max Retry Attempts Hit",
            sla.max_retries_target,
            c.max_retries_ratio(),
            st.max_retries,
        ),
        (
            "Dead Letter Queue Rate",
            sla.dlq_target,
            c.dlq_ratio(),
            st.dlq,
        ),
    ] {
        let actual = value.map(pct).unwrap_or_else(|| "-".into());
        let status = if status == Status::NotApplicable {
            "-"
        } else {
            status.emoji()
        };
        let _ = writeln!(
            o,
            "| **{label}** | ≤ {} | {actual} | {status} |",
            target_pct(target)
        );
    }
    let t = |s: crate::config::ConfigDuration| s.0 as f64 / 1000.0;
    let _ = writeln!(o, "\n**Latency Distribution**:\n```");
    let _ = writeln!(
        o,
        "{}",
        latency_line("P50", sc.overall.quantile_ms(500), t(sla.p50_target), false)
    );
    let _ = writeln!(
        o,
        "{}",
        latency_line("P95", sc.overall.quantile_ms(950), t(sla.p95_target), false)
    );
    let _ = writeln!(
        o,
        "{}",
        latency_line(
            "P99",
            sc.overall.quantile_ms(990),
            t(sla.p99_threshold),
            true
        )
    );
    let _ = writeln!(o, "```\n");
    let _ = writeln!(o, "### Weekly On-Time Trend\n");
    let _ = writeln!(o, "| Week | Starting | Events | On-Time % | Status |");
    let _ = writeln!(o, "|------|----------|--------|-----------|--------|");
    for (i, w) in sc.weekly.iter().enumerate() {
        let ratio = (w.events > 0).then(|| w.on_time as f64 / w.events as f64);
        let _ = writeln!(
            o,
            "| {} | {} | {} | {} | {} |",
            i + 1,
            sc.date(w.start),
            count(w.events),
            ratio.map(pct).unwrap_or_else(|| "-".into()),
            if w.status == Status::NotApplicable {
                "N/A"
            } else {
                w.status.emoji()
            }
        );
    }
    platform_trends(&mut o, sc);
    criteria(&mut o, sc);
    budgets(&mut o, sc);
    contract(&mut o, sc);
    let rejected = sc.rejected_total();
    if rejected > 0 {
        let reasons: Vec<String> = sc
            .rejected
            .iter()
            .map(|(r, n)| format!("{} {}", count(*n), r.code()))
            .collect();
        let _ = writeln!(
            o,
            "\n**Rejected records** (not counted above): {} ({})",
            count(rejected),
            reasons.join(", ")
        );
    }
    for (source, u) in &sc.unread {
        let _ = writeln!(
            o,
            "\n**Records never read:** {} records of `{source}` (offsets {} to {}) were deleted from the log before slatrack read them (noticed {}); every figure above is missing them.",
            count((u.to - u.from) as u64),
            u.from,
            u.to - 1,
            crate::time::format_rfc3339(u.noticed_ms * 1000),
        );
    }
    o
}

/// Findings, each with its numbers and its test (docs/findings.md).
fn findings(o: &mut String, sc: &Scorecard) {
    use super::narrative;
    let _ = writeln!(o, "### Findings\n");
    if sc.findings.is_empty() {
        let _ = writeln!(
            o,
            "No findings: no outage, step change, peak hours, tail or recovery passes its test in this period.\n"
        );
        return;
    }
    for f in &sc.findings {
        let kind = match f.kind() {
            "outage" => "Outage",
            "step_change" => "Step change",
            "peak_hours" => "Peak hours",
            "tail" => "Tail",
            _ => "Recovery",
        };
        let _ = writeln!(
            o,
            "- **{kind}**: {} _({})_",
            narrative::sentence(f, sc),
            narrative::test_text(f.test())
        );
    }
    o.push('\n');
}

/// The SLA contract as applied: zone, business hours, credit, each exclusion with what it
/// took out, and how exactly the rows split at the edges. Shown when the tenant has a
/// contract, an exclusion applies, or a row crosses an edge.
fn contract(o: &mut String, sc: &Scorecard) {
    let k = &sc.contract;
    let p = &k.precision;
    let has_contract = k.time_zone != chrono_tz::UTC
        || k.business_hours.is_some()
        || k.has_credits
        || !k.exclusions.is_empty();
    if !has_contract && p.crossing_events == 0 {
        return;
    }
    let _ = writeln!(o, "\n### SLA Contract\n");
    let _ = writeln!(
        o,
        "- **Time zone**: {} (days, weeks and the period close at local midnight)",
        k.time_zone.name()
    );
    if let Some(h) = &k.business_hours {
        let holidays: Vec<String> = k.holidays.iter().map(|d| d.to_string()).collect();
        let _ = writeln!(
            o,
            "- **Business hours**: {h}, local; only events completed within them count{}",
            if holidays.is_empty() {
                String::new()
            } else {
                format!("; holidays: {}", holidays.join(", "))
            }
        );
    }
    if k.has_credits {
        let line = match k.credit {
            None => "- **Service credit**: - (no events)".to_string(),
            Some(c) => match c.below {
                Some(below) => format!(
                    "- **Service credit**: **{}%** of the period's fee (attainment {}, below {}) ❌",
                    c.percent,
                    pct(c.attainment),
                    target_pct(below)
                ),
                None => format!(
                    "- **Service credit**: none (attainment {} is below no tier) ✅",
                    pct(c.attainment)
                ),
            },
        };
        let _ = writeln!(o, "{line}");
    }
    let _ = writeln!(
        o,
        "- **Excluded from every figure**: {} events ({} attempts)",
        count(k.excluded.events),
        count(k.excluded.attempts)
    );
    if !k.exclusions.is_empty() {
        let _ = writeln!(
            o,
            "\n| Exclusion | Reason | Windows | First | Last ends | Platforms | Events excluded |"
        );
        let _ = writeln!(
            o,
            "|-----------|--------|---------|-------|-----------|-----------|-----------------|"
        );
        for x in &k.exclusions {
            let (first, last) = (
                x.spans.first().map_or(0, |s| s.0),
                x.spans.last().map_or(0, |s| s.1),
            );
            let platforms: Vec<&str> = x.platforms.iter().map(|p| sc.platform_name(p)).collect();
            let _ = writeln!(
                o,
                "| {} | {} | {} | {} | {} | {} | {} |",
                x.name,
                x.reason.as_str(),
                x.spans.len(),
                sc.local_time(first),
                sc.local_time(last),
                if platforms.is_empty() {
                    "-".to_string()
                } else {
                    platforms.join(", ")
                },
                count(x.counters.events)
            );
        }
    }
    let line = if p.crossing_events == 0 {
        "no row crosses an edge of the period, a week or an exclusion, so every figure is exact"
            .to_string()
    } else {
        let widest = p.widest_crossing / crate::time::MICROS_PER_MIN;
        let width = if widest >= 60 && widest % 60 == 0 {
            format!("{} h", widest / 60)
        } else {
            format!("{widest} min")
        };
        format!(
            "{} events in {} rows (up to {width} wide) that cross an edge of the period, a week or an exclusion are counted where their row starts (docs/contracts.md, \"Precision\")",
            count(p.crossing_events),
            count(p.crossing_rows)
        )
    };
    let _ = writeln!(o, "\n_Precision: {line}._");
}

/// Error budgets: how many events may miss the on-time target over the period, how many
/// did, what is left; for a period that has not ended, what is left at its end at the
/// burn so far.
fn budgets(o: &mut String, sc: &Scorecard) {
    let _ = writeln!(o, "\n### Error Budgets\n");
    let _ = writeln!(
        o,
        "| Scope | On-Time Target | Events | Allowed Misses | Missed | Remaining | Status |"
    );
    let _ = writeln!(
        o,
        "|-------|----------------|--------|----------------|--------|-----------|--------|"
    );
    for b in &sc.budgets {
        let name = match &b.platform {
            Some(id) => sc.platform_name(id),
            None => "**Overall**",
        };
        let remaining = match b.remaining_ratio {
            Some(r) => format!("{} ({})", signed(b.remaining), pct(r)),
            None => signed(b.remaining),
        };
        let projected = match b.projected_remaining {
            Some(p) => format!(
                "{} (projected at the end: {} left)",
                b.projected_status.emoji(),
                signed(p)
            ),
            None => b.projected_status.emoji().to_string(),
        };
        let _ = writeln!(
            o,
            "| {name} | ≥ {} | {} | {} | {} | {remaining} | {projected} |",
            target_pct(b.target),
            count(b.events),
            count(b.allowed.floor() as u64),
            count(b.bad),
        );
    }
}

/// `1,234` or `-56` (a budget overspent), whole events rounded down.
fn signed(v: f64) -> String {
    if v < 0.0 {
        format!("-{}", count((-v).ceil() as u64))
    } else {
        count(v.floor() as u64)
    }
}

/// A figure with its status, or `-` for a week without events.
fn cell(value: Option<String>, status: Status) -> String {
    match value {
        Some(v) if status != Status::NotApplicable => format!("{v} {}", status.emoji()),
        Some(v) => v,
        None => "-".into(),
    }
}

/// Week by week per platform that had events: events, on-time %, P95, failed %, retry %.
fn platform_trends(o: &mut String, sc: &Scorecard) {
    let active: Vec<_> = sc
        .platforms
        .iter()
        .filter(|p| p.stats.counters.events > 0)
        .collect();
    if active.is_empty() {
        return;
    }
    let _ = writeln!(o, "\n### Weekly Trend by Platform");
    for p in active {
        let _ = writeln!(o, "\n#### {}\n", p.name);
        let _ = writeln!(
            o,
            "| Week | Starting | Events | On-Time % | P95 | Failed % | Retry % |"
        );
        let _ = writeln!(
            o,
            "|------|----------|--------|-----------|-----|----------|---------|"
        );
        for (i, w) in p.weekly.iter().enumerate() {
            let c = &w.stats.counters;
            let _ = writeln!(
                o,
                "| {} | {} | {} | {} | {} | {} | {} |",
                i + 1,
                sc.date(w.start),
                count(c.events),
                cell(c.on_time_ratio().map(pct), w.on_time),
                cell(w.stats.quantile_ms(950).map(ms), w.p95),
                cell(c.failed_ratio().map(pct), w.failed),
                cell(c.retry_ratio().map(pct), w.retry),
            );
        }
    }
}

/// The configured exit criteria: met or not, the weeks that count, the current streak.
fn criteria(o: &mut String, sc: &Scorecard) {
    if sc.criteria.is_empty() {
        return;
    }
    let _ = writeln!(o, "\n### Exit Criteria\n");
    let _ = writeln!(
        o,
        "| Criterion | Status | Weeks that count | Current streak |"
    );
    let _ = writeln!(
        o,
        "|-----------|--------|------------------|----------------|"
    );
    for c in &sc.criteria {
        let weeks: Vec<String> = c.weeks.iter().map(|w| sc.date(*w)).collect();
        let _ = writeln!(
            o,
            "| {} on-time ≥ {} for {} consecutive week{} | {} | {} | {} week{} |",
            c.name,
            target_pct(c.criterion.on_time),
            c.criterion.consecutive_weeks,
            if c.criterion.consecutive_weeks == 1 {
                ""
            } else {
                "s"
            },
            if c.met { "✅ Met" } else { "❌ Not met" },
            if weeks.is_empty() {
                "-".to_string()
            } else {
                weeks.join(", ")
            },
            c.streak,
            if c.streak == 1 { "" } else { "s" },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_like_the_seed() {
        assert_eq!(pct(0.968), "96.8%");
        assert_eq!(pct(0.0018), "0.18%");
        assert_eq!(pct(0.012), "1.2%");
        assert_eq!(target_pct(0.005), "0.5%");
        assert_eq!(target_pct(0.95), "95%");
        assert_eq!(ms(1247.4), "1,247 ms");
        assert_eq!(ms(387.0), "387 ms");
        assert_eq!(count(28947), "28,947");
        assert_eq!(
            latency_line("P50", Some(341.0), 300.0, false),
            "P50: 341 ms (Target: ≤ 300ms) ⚠️ Slightly above target"
        );
        assert_eq!(
            latency_line("P99", Some(1247.0), 1000.0, true),
            "P99: 1,247 ms (Target: ≤ 1000ms) ❌ Exceeds threshold"
        );
    }
}
