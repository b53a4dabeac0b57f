//! `[report.notify]`: when a scorecard run has written its reports, one JSON POST per
//! tenant to an incoming webhook. The body's `text` is what Slack and Teams incoming
//! webhooks show; `slatrack` holds the same summary as fields for any other receiver.

use super::TenantSummary;
use serde_json::{json, Value};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
#[error("the webhook at {host} did not take the summary of {failed} of {total} tenants ({first}); the reports are written; check the URL in report.notify.webhook and that the receiver accepts JSON POSTs")]
pub struct NotifyError {
    /// Scheme and host only: the rest of a webhook URL is its secret.
    host: String,
    failed: usize,
    total: usize,
    first: String,
}

/// The body posted for one tenant.
pub fn body(s: &TenantSummary) -> Value {
    let on_time = s.on_time.map_or("no events".to_string(), |r| {
        format!("{:.1}% on time", r * 100.0)
    });
    let criteria = format!("criteria {}/{} met", s.criteria_met, s.criteria_total);
    let mut text = format!(
        "Delivery SLA report for {} ({} to {}, {}): {}, {on_time}, {criteria}, {} finding(s).",
        s.tenant,
        s.from,
        s.last_day,
        s.time_zone,
        s.status,
        s.findings.len()
    );
    for f in &s.findings {
        text.push_str("\n• ");
        text.push_str(f);
    }
    if let Some(p) = &s.path {
        text.push_str(&format!("\nReport: {}", p.display()));
    }
    json!({
        "text": text,
        "slatrack": {
            "tenant": s.tenant,
            "from": s.from,
            "to": s.to,
            "time_zone": s.time_zone,
            "partial": s.partial,
            "status": s.status,
            "on_time_ratio": s.on_time,
            "criteria_met": s.criteria_met,
            "criteria": s.criteria_total,
            "findings": s.findings,
            "report": s.path.as_ref().map(|p| p.display().to_string()),
        },
    })
}

/// Scheme and host of a URL, for messages.
fn host(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    format!("{scheme}://{host}")
}

/// Posts every tenant's summary (each tried, whatever the others did).
pub fn post_all(url: &str, summaries: &[TenantSummary]) -> Result<(), NotifyError> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(15)))
        .build()
        .into();
    let mut errors = Vec::new();
    for s in summaries {
        let payload = body(s).to_string();
        let result = agent
            .post(url)
            .header("content-type", "application/json")
            .send(payload.as_bytes());
        match result {
            Ok(_) => tracing::info!(tenant = %s.tenant, "report summary posted"),
            Err(e) => {
                let why = match e {
                    ureq::Error::StatusCode(code) => format!("HTTP {code}"),
                    other => other.to_string(),
                };
                tracing::warn!(tenant = %s.tenant, error = %why, "report summary not posted");
                errors.push(format!("{}: {why}", s.tenant));
            }
        }
    }
    if errors.is_empty() {
        return Ok(());
    }
    Err(NotifyError {
        host: host(url),
        failed: errors.len(),
        total: summaries.len(),
        first: errors.swap_remove(0),
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn messages_name_the_host_not_the_secret() {
        assert_eq!(
            super::host("https://hooks.slack.com/services/T0/B0/secret"),
            "https://hooks.slack.com"
        );
    }
}
