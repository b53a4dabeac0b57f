//! JSON rendering: ratios are fractions in [0, 1], latencies in milliseconds, `null`
//! where there were no events.

use super::Scorecard;
use crate::engine::Stats;
use crate::time::format_rfc3339;
use serde_json::{json, Map, Value};

/// The contract's version (docs/scorecard-json.md): changes when a field is removed or
/// changes meaning; fields are only added within a version.
pub const VERSION: u32 = 1;

fn metrics(s: &Stats) -> Map<String, Value> {
    let c = &s.counters;
    let v = json!({
        "events": c.events,
        "attempts": c.attempts,
        "on_time_ratio": c.on_time_ratio(),
        "retry_ratio": c.retry_ratio(),
        "failed_ratio": c.failed_ratio(),
        "max_retries_ratio": c.max_retries_ratio(),
        "dlq_ratio": c.dlq_ratio(),
        "avg_latency_ms": c.avg_latency_ms(),
        "p50_ms": s.quantile_ms(500),
        "p95_ms": s.quantile_ms(950),
        "p99_ms": s.quantile_ms(990),
    });
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

/// The contract as applied (docs/contracts.md, docs/scorecard-json.md).
fn contract(sc: &Scorecard) -> Value {
    let k = &sc.contract;
    json!({
        "business_hours": k.business_hours,
        "holidays": k.holidays.iter().map(|d| d.to_string()).collect::<Vec<_>>(),
        "excluded_events": k.excluded.events,
        "excluded_attempts": k.excluded.attempts,
        "exclusions": k.exclusions.iter().map(|x| json!({
            "name": x.name,
            "reason": x.reason.as_str(),
            "windows": x.spans.iter().map(|(a, b)| json!({
                "from": format_rfc3339(*a),
                "to": format_rfc3339(*b),
            })).collect::<Vec<_>>(),
            "platforms": x.platforms,
            "events": x.counters.events,
            "attempts": x.counters.attempts,
        })).collect::<Vec<_>>(),
        "credit": k.credit.filter(|_| k.has_credits).map(|c| json!({
            "attainment": c.attainment,
            "percent": c.percent,
            "below": c.below,
        })),
        "precision": {
            "crossing_rows": k.precision.crossing_rows,
            "crossing_events": k.precision.crossing_events,
            "widest_crossing_row_seconds": k.precision.widest_crossing / crate::time::MICROS_PER_SEC,
        },
    })
}

/// The findings with their numbers and tests (docs/findings.md).
fn findings(sc: &Scorecard) -> Vec<Value> {
    use super::findings::{Finding, ALPHA};
    sc.findings
        .iter()
        .map(|f| {
            let mut m = Map::new();
            m.insert("kind".into(), json!(f.kind()));
            m.insert("platform".into(), json!(f.platform()));
            m.insert("summary".into(), json!(super::narrative::sentence(f, sc)));
            let fields = match f {
                Finding::Outage { from, to, events, failed, baseline, .. } => json!({
                    "from": format_rfc3339(*from), "to": format_rfc3339(*to),
                    "events": events, "failed": failed, "baseline_failed_ratio": baseline,
                }),
                Finding::StepChange { metric, week, before, after, .. } => json!({
                    "metric": metric.as_str(), "week": week, "before": before, "after": after,
                }),
                Finding::PeakHours { metric, hours, traffic_share, metric_share, .. } => json!({
                    "metric": metric.as_str(), "hours": hours, "time_zone": sc.contract.time_zone.name(),
                    "traffic_share": traffic_share, "metric_share": metric_share,
                }),
                Finding::Tail { p99_ms, tail_share, traffic_share, .. } => json!({
                    "p99_ms": p99_ms, "tail_share": tail_share, "traffic_share": traffic_share,
                }),
                Finding::Recovery { week, before, after, weeks_held, .. } => json!({
                    "metric": "on_time", "week": week, "before": before, "after": after, "weeks_held": weeks_held,
                }),
            };
            if let Value::Object(fields) = fields {
                m.extend(fields);
            }
            let t = f.test();
            m.insert(
                "test".into(),
                json!({
                    "name": t.name, "p_value": t.p_value, "comparisons": t.comparisons,
                    "alpha": ALPHA, "threshold": t.threshold(),
                }),
            );
            Value::Object(m)
        })
        .collect()
}

pub fn render(sc: &Scorecard) -> Value {
    let platforms: Vec<Value> = sc
        .platforms
        .iter()
        .map(|p| {
            let mut m = Map::new();
            m.insert("platform".into(), json!(p.platform));
            m.insert("name".into(), json!(p.name));
            m.insert("direction".into(), json!(p.direction.as_str()));
            m.extend(metrics(&p.stats));
            m.insert("target_on_time_ratio".into(), json!(p.target_on_time));
            m.insert("target_latency_ms".into(), json!(p.target_latency_ms));
            m.insert("status".into(), json!(p.status));
            let weekly: Vec<Value> = p
                .weekly
                .iter()
                .map(|w| {
                    let c = &w.stats.counters;
                    json!({
                        "week_start": sc.date(w.start),
                        "events": c.events,
                        "on_time_ratio": c.on_time_ratio(),
                        "p95_ms": w.stats.quantile_ms(950),
                        "failed_ratio": c.failed_ratio(),
                        "retry_ratio": c.retry_ratio(),
                        "statuses": {
                            "on_time": w.on_time, "p95": w.p95,
                            "failed": w.failed, "retry": w.retry,
                        },
                    })
                })
                .collect();
            m.insert("weekly".into(), json!(weekly));
            Value::Object(m)
        })
        .collect();
    let st = &sc.statuses;
    let mut overall = metrics(&sc.overall);
    overall.insert("target_on_time_ratio".into(), json!(sc.overall_target));
    overall.insert("status".into(), json!(sc.status));
    overall.insert(
        "statuses".into(),
        json!({
            "on_time": st.on_time, "failed": st.failed, "retry": st.retry,
            "max_retries": st.max_retries, "dlq": st.dlq,
            "p50": st.p50, "p95": st.p95, "p99": st.p99,
        }),
    );
    let weekly: Vec<Value> = sc
        .weekly
        .iter()
        .map(|w| {
            let c = &w.stats.counters;
            json!({
                "week_start": sc.date(w.start),
                "events": w.events,
                "on_time_ratio": (w.events > 0).then(|| w.on_time as f64 / w.events as f64),
                "status": w.status,
                "delivered": c.delivered,
                "on_time": c.on_time,
                "failed": c.failed,
                "dead_lettered": c.dead_lettered,
                "p50_ms": w.stats.quantile_ms(500),
                "p95_ms": w.stats.quantile_ms(950),
                "p99_ms": w.stats.quantile_ms(990),
            })
        })
        .collect();
    let by_reason: Map<String, Value> = sc
        .rejected
        .iter()
        .map(|(r, n)| (r.code().to_string(), json!(n)))
        .collect();
    json!({
        "version": VERSION,
        "tenant": sc.tenant,
        "from": sc.date(sc.from),
        "to": sc.date(sc.to),
        "time_zone": sc.contract.time_zone.name(),
        "from_instant": format_rfc3339(sc.from),
        "to_instant": format_rfc3339(sc.to),
        "partial": sc.partial,
        "contract": contract(sc),
        "findings": findings(sc),
        "error_budgets": sc.budgets.iter().map(|b| json!({
            "platform": b.platform,
            "on_time_target": b.target,
            "events": b.events,
            "allowed_misses": b.allowed,
            "missed": b.bad,
            "remaining": b.remaining,
            "remaining_ratio": b.remaining_ratio,
            "projected_remaining": b.projected_remaining,
            "projected_status": b.projected_status,
        })).collect::<Vec<_>>(),
        "criteria": sc.criteria.iter().map(|c| json!({
            "platform": c.criterion.platform,
            "name": c.name,
            "on_time": c.criterion.on_time,
            "consecutive_weeks": c.criterion.consecutive_weeks,
            "met": c.met,
            "weeks": c.weeks.iter().map(|w| sc.date(*w)).collect::<Vec<_>>(),
            "streak": c.streak,
        })).collect::<Vec<_>>(),
        "platforms": platforms,
        "overall": overall,
        "weekly": weekly,
        "rejected": sc.rejected_total(),
        "rejected_by_reason": by_reason,
        "unread": sc.unread.iter().map(|(source, u)| json!({
            "source": source,
            "records": u.to - u.from,
            "from_offset": u.from,
            "to_offset": u.to,
            "noticed": format_rfc3339(u.noticed_ms * 1000),
        })).collect::<Vec<_>>(),
    })
}
