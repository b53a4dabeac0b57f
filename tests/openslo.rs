//! `slatrack slo export --format openslo` against the OpenSLO v1 specification
//! (github.com/OpenSLO/OpenSLO, README "Specification", read for these checks; no schema
//! file is copied here): every document's general schema, each kind's required fields
//! and enumerations, duration shorthands, RFC 1123 names, references that resolve — and
//! that the documents say what the config and `slatrack rules` say. A broken document is
//! caught (the checks can fail).

use serde_yaml_ng::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

fn export(config: Option<&std::path::Path>) -> String {
    let mut c = Command::new(env!("CARGO_BIN_EXE_slatrack"));
    c.args(["slo", "export", "--format", "openslo"]);
    if let Some(p) = config {
        c.arg("--config").arg(p);
    }
    let out = c.output().expect("slatrack runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

fn documents(yaml: &str) -> Vec<Value> {
    serde_yaml_ng::Deserializer::from_str(yaml)
        .map(|d| serde::Deserialize::deserialize(d).expect("a YAML document"))
        .collect()
}

fn s<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

/// RFC 1123 label: ≤ 63, lowercase alphanumerics and `-`, alphanumeric at both ends.
fn rfc1123(n: &str) -> bool {
    let ok = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    !n.is_empty()
        && n.len() <= 63
        && n.chars().all(|c| ok(c) || c == '-')
        && n.starts_with(ok)
        && n.ends_with(ok)
}

/// A positive integer and one of m h d w M Q Y.
fn duration(d: &str) -> bool {
    let Some(unit) = d.chars().last() else {
        return false;
    };
    let n = &d[..d.len() - unit.len_utf8()];
    "mhdwMQY".contains(unit)
        && !n.is_empty()
        && n.chars().all(|c| c.is_ascii_digit())
        && !n.starts_with('0')
}

/// What is wrong with the stream, by the specification; empty when nothing.
fn violations(docs: &[Value]) -> Vec<String> {
    let mut errs = Vec::new();
    let mut names: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    let kinds = [
        "DataSource",
        "SLO",
        "SLI",
        "AlertPolicy",
        "AlertCondition",
        "AlertNotificationTarget",
        "Service",
    ];
    for d in docs {
        let kind = s(d, "kind").unwrap_or("");
        let name = d.get("metadata").and_then(|m| s(m, "name")).unwrap_or("");
        if s(d, "apiVersion") != Some("openslo/v1") {
            errs.push(format!("{kind} {name}: apiVersion is not openslo/v1"));
        }
        if !kinds.contains(&kind) {
            errs.push(format!("unknown kind {kind:?}"));
        }
        if !rfc1123(name) {
            errs.push(format!(
                "{kind}: metadata.name {name:?} is not an RFC 1123 label"
            ));
        }
        if !names.entry(kind).or_default().insert(name) {
            errs.push(format!("{kind} {name} twice"));
        }
        let Some(spec) = d.get("spec").filter(|v| v.is_mapping()) else {
            errs.push(format!("{kind} {name}: no spec"));
            continue;
        };
        if s(spec, "description").is_some_and(|t| t.chars().count() > 1050) {
            errs.push(format!("{kind} {name}: description over 1050 characters"));
        }
        let mut e = |m: &str| errs.push(format!("{kind} {name}: {m}"));
        match kind {
            "SLO" => check_slo(spec, &mut e),
            "AlertPolicy" => {
                for f in ["alertWhenNoData", "alertWhenResolved", "alertWhenBreaching"] {
                    if spec.get(f).and_then(Value::as_bool).is_none() {
                        e(&format!("{f} is not a boolean"));
                    }
                }
                match spec.get("conditions").and_then(Value::as_sequence) {
                    Some(c) if c.len() == 1 => {
                        if s(&c[0], "conditionRef").is_none() && c[0].get("spec").is_none() {
                            e("a condition is neither conditionRef nor inline");
                        }
                    }
                    _ => e("conditions must hold exactly one condition"),
                }
                match spec.get("notificationTargets").and_then(Value::as_sequence) {
                    Some(t) if !t.is_empty() => {}
                    _ => e("notificationTargets is required"),
                }
            }
            "AlertCondition" => {
                if s(spec, "severity").is_none() {
                    e("severity is required");
                }
                let c = spec.get("condition");
                let field = |f: &str| c.and_then(|c| c.get(f));
                if field("kind").and_then(Value::as_str).unwrap_or("burnrate") != "burnrate" {
                    e("condition.kind must be burnrate");
                }
                if !matches!(
                    field("op").and_then(Value::as_str),
                    Some("lte" | "gte" | "lt" | "gt")
                ) {
                    e("condition.op must be lte, gte, lt or gt");
                }
                if field("threshold").and_then(Value::as_f64).is_none() {
                    e("condition.threshold must be a number");
                }
                for f in ["lookbackWindow", "alertAfter"] {
                    if !field(f).and_then(Value::as_str).is_some_and(duration) {
                        e(&format!("condition.{f} is not a duration shorthand"));
                    }
                }
            }
            "AlertNotificationTarget" if s(spec, "target").is_none() => e("target is required"),
            _ => {}
        }
    }
    // References resolve to objects of the stream.
    let has = |kind: &str, n: &str| names.get(kind).is_some_and(|s| s.contains(n));
    for d in docs {
        let kind = s(d, "kind").unwrap_or("");
        let Some(spec) = d.get("spec") else { continue };
        let seq = |f: &str| {
            spec.get(f)
                .and_then(Value::as_sequence)
                .cloned()
                .unwrap_or_default()
        };
        let mut refs: Vec<(&str, String)> = Vec::new();
        if kind == "SLO" {
            refs.extend(s(spec, "service").map(|n| ("Service", n.to_string())));
            for p in seq("alertPolicies") {
                refs.extend(s(&p, "alertPolicyRef").map(|n| ("AlertPolicy", n.to_string())));
            }
        }
        if kind == "AlertPolicy" {
            for c in seq("conditions") {
                refs.extend(s(&c, "conditionRef").map(|n| ("AlertCondition", n.to_string())));
            }
            for t in seq("notificationTargets") {
                refs.extend(s(&t, "targetRef").map(|n| ("AlertNotificationTarget", n.to_string())));
            }
        }
        for (k, n) in refs {
            if !has(k, &n) {
                errs.push(format!("{kind}: {k} {n:?} is not in the stream"));
            }
        }
    }
    errs
}

fn check_metric_source(m: Option<&Value>, what: &str, e: &mut dyn FnMut(&str)) {
    let Some(src) = m.and_then(|m| m.get("metricSource")) else {
        return e(&format!("{what}.metricSource is required"));
    };
    if s(src, "type").is_none() && s(src, "metricSourceRef").is_none() {
        e(&format!(
            "{what}.metricSource needs type or metricSourceRef"
        ));
    }
    if !src.get("spec").is_some_and(Value::is_mapping) {
        e(&format!("{what}.metricSource.spec is required"));
    }
}

fn check_slo(spec: &Value, e: &mut dyn FnMut(&str)) {
    if s(spec, "service").is_none() {
        e("service is required");
    }
    let indicator = spec.get("indicator");
    if indicator.is_some() == s(spec, "indicatorRef").is_some() {
        e("exactly one of indicator and indicatorRef");
    }
    if let Some(i) = indicator {
        let name = i.get("metadata").and_then(|m| s(m, "name")).unwrap_or("");
        if !rfc1123(name) {
            e("indicator.metadata.name is not an RFC 1123 label");
        }
        let ratio = i.get("spec").and_then(|s| s.get("ratioMetric"));
        let threshold = i.get("spec").and_then(|s| s.get("thresholdMetric"));
        match (ratio, threshold) {
            (Some(r), None) => {
                if r.get("counter").and_then(Value::as_bool).is_none() && r.get("raw").is_none() {
                    e("ratioMetric.counter must be a boolean");
                }
                let (good, bad, total, raw) =
                    (r.get("good"), r.get("bad"), r.get("total"), r.get("raw"));
                if raw.is_some() {
                    if !matches!(s(r, "rawType"), Some("success" | "failure")) {
                        e("ratioMetric.raw needs rawType success or failure");
                    }
                } else if good.is_some() == bad.is_some() || total.is_none() {
                    e("ratioMetric needs total and exactly one of good and bad");
                }
                for (what, m) in [("good", good), ("bad", bad), ("total", total), ("raw", raw)] {
                    if m.is_some() {
                        check_metric_source(m, what, e);
                    }
                }
            }
            (None, Some(t)) => check_metric_source(Some(t), "thresholdMetric", e),
            _ => e("indicator.spec needs exactly one of ratioMetric and thresholdMetric"),
        }
    }
    match spec.get("timeWindow").and_then(Value::as_sequence) {
        Some(w) if w.len() == 1 => {
            if !s(&w[0], "duration").is_some_and(duration) {
                e("timeWindow duration is not a duration shorthand");
            }
            let rolling = w[0].get("isRolling").and_then(Value::as_bool);
            if rolling != Some(true) && w[0].get("calendar").is_none() {
                e("timeWindow is neither rolling nor calendar-aligned");
            }
        }
        Some(_) => e("timeWindow holds exactly one item"),
        None => {}
    }
    if !matches!(
        s(spec, "budgetingMethod"),
        Some("Occurrences" | "Timeslices" | "RatioTimeslices")
    ) {
        e("budgetingMethod must be Occurrences, Timeslices or RatioTimeslices");
    }
    match spec.get("objectives").and_then(Value::as_sequence) {
        Some(o) if !o.is_empty() => {
            for obj in o {
                let target = obj.get("target").and_then(Value::as_f64);
                let pct = obj.get("targetPercent").and_then(Value::as_f64);
                match (target, pct) {
                    (Some(t), None) if (0.0..1.0).contains(&t) => {}
                    (None, Some(p)) if (0.0..100.0).contains(&p) => {}
                    _ => e("an objective needs target in [0, 1) or targetPercent in [0, 100)"),
                }
            }
        }
        _ => e("objectives is required"),
    }
}

#[test]
fn the_export_is_valid_openslo_v1_and_matches_the_config_and_rules() {
    let docs = documents(&export(None));
    assert_eq!(violations(&docs), Vec::<String>::new());
    let config = slatrack::config::Config::default();
    let slos: Vec<&Value> = docs
        .iter()
        .filter(|d| s(d, "kind") == Some("SLO"))
        .collect();
    assert_eq!(slos.len(), config.platforms.len(), "an SLO per platform");
    for p in &config.platforms {
        let slo = slos
            .iter()
            .find(|d| d["metadata"]["labels"]["platform"].as_str() == Some(p.id.as_str()))
            .unwrap_or_else(|| panic!("an SLO for {}", p.id));
        let spec = &slo["spec"];
        assert_eq!(
            spec["objectives"][0]["target"].as_f64(),
            Some(config.targets(&p.id).on_time_target),
            "{}",
            p.id
        );
        assert_eq!(spec["timeWindow"][0]["duration"].as_str(), Some("30d"));
        let q = spec["indicator"]["spec"]["ratioMetric"]["good"]["metricSource"]["spec"]["query"]
            .as_str()
            .unwrap_or("");
        assert!(
            q.contains("slatrack_on_time_events_total") && q.contains(&p.id),
            "{q}"
        );
    }
    // The burn-rate pages and ticket of `slatrack rules`: factor, window, severity.
    let rules = slatrack::rules::render(&config);
    let conditions: Vec<&Value> = docs
        .iter()
        .filter(|d| s(d, "kind") == Some("AlertCondition"))
        .collect();
    assert_eq!(conditions.len(), slatrack::rules::BURNS.len());
    for (severity, factor, long, short, _) in slatrack::rules::BURNS {
        let c = conditions
            .iter()
            .find(|c| c["spec"]["condition"]["threshold"].as_f64() == Some(factor))
            .unwrap_or_else(|| panic!("a condition for {factor}x"));
        assert_eq!(c["spec"]["severity"].as_str(), Some(severity));
        assert_eq!(
            c["spec"]["condition"]["lookbackWindow"].as_str(),
            Some(long)
        );
        let over = |w: &str| {
            format!("slatrack:window_on_time_error_ratio{{window=\"{w}\"}} > on (tenant, platform) ({} * (1 - slatrack:objective_on_time_ratio))", slatrack::rules::num(factor))
        };
        assert!(rules.contains(&over(long)), "rules alert over {long}");
        assert!(rules.contains(&over(short)), "and over {short}");
    }
}

#[test]
fn a_config_with_its_own_platforms_exports_one_slo_each() {
    let dir = tempfile::tempdir().expect("dir");
    let cfg = dir.path().join("c.toml");
    std::fs::write(
        &cfg,
        r#"[[platforms]]
id = "Acme_HR"
name = "Acme HR"
direction = "outbound"
on_time_target = 0.999
"#,
    )
    .expect("config");
    let docs = documents(&export(Some(&cfg)));
    assert_eq!(violations(&docs), Vec::<String>::new());
    let slos: Vec<&Value> = docs
        .iter()
        .filter(|d| s(d, "kind") == Some("SLO"))
        .collect();
    assert_eq!(slos.len(), 1);
    assert_eq!(
        slos[0]["metadata"]["name"].as_str(),
        Some("acme-hr-on-time")
    );
    assert_eq!(
        slos[0]["spec"]["objectives"][0]["target"].as_f64(),
        Some(0.999)
    );
}

/// Exclusions and tenant calendars travel as annotations: each SLO carries the windows
/// that apply to its platform, and the export stays valid.
#[test]
fn contracts_are_carried_in_annotations() {
    let dir = tempfile::tempdir().expect("dir");
    let cfg = dir.path().join("c.toml");
    std::fs::write(
        &cfg,
        r#"[[tenants]]
id = "globex"
time_zone = "America/Los_Angeles"
business_hours = "Mon-Fri 08:00-18:00"
holidays = ["2025-11-27"]

[[exclusions]]
name = "Workday firewall change"
tenant = "globex"
platform = "workday"
time_zone = "America/New_York"
start = "2025-10-11T02:00:00"
end = "2025-10-11T06:00:00"
category = "maintenance"

[[exclusions]]
name = "Weekly maintenance"
time_zone = "Europe/Berlin"
start = "2025-09-06T02:00:00"
rrule = "FREQ=WEEKLY;BYDAY=SA"
duration = "2h"
category = "maintenance"
"#,
    )
    .expect("config");
    let docs = documents(&export(Some(&cfg)));
    assert_eq!(violations(&docs), Vec::<String>::new());
    let annotation = |platform: &str, key: &str| -> serde_json::Value {
        let slo = docs
            .iter()
            .find(|d| {
                s(d, "kind") == Some("SLO")
                    && d["metadata"]["labels"]["platform"].as_str() == Some(platform)
            })
            .unwrap_or_else(|| panic!("an SLO for {platform}"));
        let text = slo["metadata"]["annotations"][key]
            .as_str()
            .unwrap_or("null");
        serde_json::from_str(text).expect("JSON")
    };
    let names = |platform: &str| -> Vec<String> {
        annotation(platform, "slatrack.io/exclusions")
            .as_array()
            .expect("a list")
            .iter()
            .map(|x| x["name"].as_str().unwrap_or("").to_string())
            .collect()
    };
    assert_eq!(
        names("workday"),
        ["Workday firewall change", "Weekly maintenance"]
    );
    assert_eq!(names("benevity"), ["Weekly maintenance"]);
    let weekly = &annotation("benevity", "slatrack.io/exclusions")[0];
    assert_eq!(weekly["rrule"], "FREQ=WEEKLY;BYDAY=SA");
    assert_eq!(weekly["duration"], "2h");
    assert_eq!(weekly["time_zone"], "Europe/Berlin");
    let calendars = annotation("benevity", "slatrack.io/tenant-calendars");
    assert_eq!(calendars["globex"]["time_zone"], "America/Los_Angeles");
    assert_eq!(calendars["globex"]["business_hours"], "Mon-Fri 08:00-18:00");
}

/// The checks can fail: each broken copy of a valid export is caught.
#[test]
fn broken_documents_are_caught() {
    let good = documents(&export(None));
    let slo = good
        .iter()
        .position(|d| s(d, "kind") == Some("SLO"))
        .expect("an SLO");
    let policy = good
        .iter()
        .position(|d| s(d, "kind") == Some("AlertPolicy"))
        .expect("a policy");
    type Breakage = Box<dyn Fn(&mut Vec<Value>)>;
    let breakages: Vec<(&str, Breakage)> = vec![
        (
            "no budgetingMethod",
            Box::new(move |d| {
                d[slo]["spec"]
                    .as_mapping_mut()
                    .expect("map")
                    .remove("budgetingMethod");
            }),
        ),
        (
            "target of 95",
            Box::new(move |d| {
                d[slo]["spec"]["objectives"][0]["target"] = Value::from(95.0);
            }),
        ),
        (
            "bad duration",
            Box::new(move |d| {
                d[slo]["spec"]["timeWindow"][0]["duration"] = Value::from("30 days");
            }),
        ),
        (
            "upper-case name",
            Box::new(move |d| {
                d[slo]["metadata"]["name"] = Value::from("Workday_SLO");
            }),
        ),
        (
            "dangling policy",
            Box::new(move |d| {
                d[policy]["spec"]["conditions"][0]["conditionRef"] = Value::from("nowhere");
            }),
        ),
        (
            "two conditions",
            Box::new(move |d| {
                let c = d[policy]["spec"]["conditions"][0].clone();
                d[policy]["spec"]["conditions"]
                    .as_sequence_mut()
                    .expect("seq")
                    .push(c);
            }),
        ),
        (
            "wrong apiVersion",
            Box::new(move |d| {
                d[0]["apiVersion"] = Value::from("openslo/v2alpha");
            }),
        ),
    ];
    for (what, breakage) in breakages {
        let mut docs = good.clone();
        breakage(&mut docs);
        assert!(!violations(&docs).is_empty(), "{what} is caught");
    }
}
