//! `slatrack slo export --format openslo`: the SLA config as OpenSLO v1 documents, for SLO
//! tools that import them (sloth, pyrra, OpenSLO's `oslo`), from the same source of truth
//! as the scorecard's targets and `slatrack rules`.
//!
//! One `Service`; per configured platform an `SLO` on the on-time ratio (a ratio metric
//! over slatrack's Prometheus counters `slatrack_on_time_events_total` /
//! `slatrack_events_total`, 30-day rolling window, Occurrences budgeting, the platform's
//! on-time target); and for the burn-rate alerts `slatrack rules` generates, one
//! `AlertCondition` and one `AlertPolicy` each (a policy holds one condition in v1), with
//! `AlertNotificationTarget`s for the page and ticket routes. OpenSLO v1 has one lookback
//! window per condition: the long window is exported and the short one, which the
//! generated Prometheus rules also require, is named in the description.

use crate::config::Config;
use crate::rules::BURNS;
use serde_json::{json, Value};

/// The service every SLO belongs to.
pub const SERVICE: &str = "webhook-delivery";

/// `s` as an RFC 1123 label (OpenSLO's `metadata.name`): lowercase alphanumerics and
/// `-`, starting and ending with an alphanumeric, at most 63 characters.
pub fn name(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_alphanumeric() {
            out.push(c);
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    let out = out.trim_matches('-');
    let mut out: String = out.chars().take(63).collect();
    while out.ends_with('-') {
        out.pop();
    }
    if out.is_empty() {
        "x".into()
    } else {
        out
    }
}

fn doc(kind: &str, name: &str, display: &str, spec: Value) -> Value {
    json!({
        "apiVersion": "openslo/v1",
        "kind": kind,
        "metadata": {"name": name, "displayName": display},
        "spec": spec,
    })
}

/// `14.4` → `14-4x`: a burn factor in a name.
fn factor_name(f: f64) -> String {
    name(&format!("{}x", crate::rules::num(f)))
}

fn policy_name(severity: &str, factor: f64, long: &str) -> String {
    name(&format!("{severity}-burn-{}-{long}", factor_name(factor)))
}

/// Every document, in dependency order (referenced objects first).
pub fn documents(config: &Config) -> Vec<Value> {
    let mut docs = vec![doc(
        "Service",
        SERVICE,
        "Webhook and API delivery",
        json!({"description": "Deliveries of events to integration platforms and the Impact-In API, measured by slatrack from every delivery attempt"}),
    )];
    for severity in ["page", "ticket"] {
        docs.push(doc(
            "AlertNotificationTarget",
            &format!("slatrack-{severity}"),
            &format!("Alertmanager, severity {severity}"),
            json!({
                "target": "alertmanager",
                "description": format!("Alertmanager routes alerts labelled severity={severity} (deploy/compose/alertmanager.yml)"),
            }),
        ));
    }
    for (severity, factor, long, short, alert_after) in BURNS {
        let n = policy_name(severity, factor, long);
        let factor_s = crate::rules::num(factor);
        docs.push(doc(
            "AlertCondition",
            &n,
            &format!("On-time error budget burning {factor_s}x over {long}"),
            json!({
                "description": format!("The on-time error budget (30 days) burns faster than {factor_s}x over {long}; the generated Prometheus rule also requires it over {short}"),
                "severity": severity,
                "condition": {
                    "kind": "burnrate",
                    "op": "gt",
                    "threshold": factor,
                    "lookbackWindow": long,
                    "alertAfter": alert_after,
                },
            }),
        ));
        docs.push(doc(
            "AlertPolicy",
            &n,
            &format!("{severity}: on-time budget burn {factor_s}x"),
            json!({
                "description": format!("SlatrackErrorBudgetBurn (severity {severity}, burn_rate {factor_s}) of `slatrack rules`"),
                "alertWhenNoData": false,
                "alertWhenResolved": false,
                "alertWhenBreaching": true,
                "conditions": [{"conditionRef": n}],
                "notificationTargets": [{"targetRef": format!("slatrack-{severity}")}],
            }),
        ));
    }
    let policies: Vec<Value> = BURNS
        .iter()
        .map(|(s, f, l, ..)| json!({"alertPolicyRef": policy_name(s, *f, l)}))
        .collect();
    for p in &config.platforms {
        let t = config.targets(&p.id);
        let latency_ms = t.latency_target_us as f64 / 1000.0;
        let source = |metric: &str| {
            json!({"metricSource": {
                "type": "Prometheus",
                "spec": {"query": format!("sum({metric}{{platform=\"{}\"}})", p.id)},
            }})
        };
        let n = name(&format!("{}-on-time", p.id));
        let mut slo = doc(
            "SLO",
            &n,
            &format!("{} on-time delivery", p.name),
            json!({
                "description": format!("Share of {}'s terminal delivery events completed within {latency_ms} ms of being enqueued (completed_at - enqueued_at), all tenants; time the tenants' contracts exclude is left out (the `slatrack.io/` annotations)", p.name),
                "service": SERVICE,
                "indicator": {
                    "metadata": {"name": name(&format!("{}-on-time-ratio", p.id)), "displayName": format!("{} events on time / events", p.name)},
                    "spec": {"ratioMetric": {
                        "counter": true,
                        "good": source("slatrack_on_time_events_total"),
                        "total": source("slatrack_events_total"),
                    }},
                },
                "timeWindow": [{"duration": "30d", "isRolling": true}],
                "budgetingMethod": "Occurrences",
                "objectives": [{"displayName": format!("on time within {latency_ms} ms"), "target": t.on_time_target}],
                "alertPolicies": policies,
            }),
        );
        slo["metadata"]["labels"] = json!({"platform": p.id});
        let annotations = contract_annotations(config, &p.id);
        if !annotations.is_empty() {
            slo["metadata"]["annotations"] = Value::Object(annotations);
        }
        docs.push(slo);
    }
    docs
}

/// The SLA contracts that shape a platform's figures, as `metadata.annotations` (OpenSLO
/// has no field for them; docs/contracts.md): every exclusion window that applies to
/// the platform, and every tenant's time zone, business hours and holidays, each as a
/// JSON text. slatrack applies them (its counters leave excluded buckets out); another
/// tool reading the export learns what it would have to apply.
fn contract_annotations(config: &Config, platform: &str) -> serde_json::Map<String, Value> {
    let mut out = serde_json::Map::new();
    let exclusions: Vec<Value> = config
        .exclusions
        .iter()
        .filter(|x| x.platform.as_deref().is_none_or(|p| p == platform))
        .map(|x| {
            json!({
                "name": x.name,
                "tenant": x.tenant,
                "category": x.category.as_str(),
                "time_zone": x.time_zone,
                "start": x.start,
                "end": x.end,
                "rrule": x.rrule,
                "duration": x.duration.map(|d| crate::time::format_duration(d.0)),
            })
        })
        .collect();
    if !exclusions.is_empty() {
        out.insert(
            "slatrack.io/exclusions".into(),
            Value::String(Value::Array(exclusions).to_string()),
        );
    }
    let tenants: serde_json::Map<String, Value> = config
        .tenants
        .iter()
        .map(|t| {
            (
                t.id.clone(),
                json!({
                    "time_zone": t.time_zone,
                    "business_hours": t.business_hours,
                    "holidays": t.holidays,
                }),
            )
        })
        .collect();
    if !tenants.is_empty() {
        out.insert(
            "slatrack.io/tenant-calendars".into(),
            Value::String(Value::Object(tenants).to_string()),
        );
    }
    out
}

/// The documents as one YAML stream (`---` between documents).
pub fn render(config: &Config) -> Result<String, serde_yaml_ng::Error> {
    let mut out = String::from(
        "# Generated by `slatrack slo export --format openslo` from the SLA config.\n",
    );
    for d in documents(config) {
        out.push_str("---\n");
        out.push_str(&serde_yaml_ng::to_string(&d)?);
    }
    Ok(out)
}
