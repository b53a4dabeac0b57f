//! The scorecard job's settings (`[report]`): how the HTML page is branded and where a
//! run's summary is posted (`[report.notify]`).

use super::{invalid, ConfigError};
use serde::Deserialize;
use std::path::PathBuf;

/// `[report]`: every key optional; without them the page is slatrack's own.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReportConfig {
    /// The page's title instead of "Delivery SLA Performance".
    pub title: Option<String>,
    /// A PNG, JPEG or SVG file shown atop the page, embedded as a data URI (the page
    /// stays one self-contained file). Relative to the working directory.
    pub logo: Option<PathBuf>,
    /// Headings' and rules' colour, `#rrggbb`.
    pub accent: Option<String>,
    /// A line at the page's foot (e.g. "Prepared by Acme Customer Success").
    pub footer: Option<String>,
    pub notify: Option<NotifyConfig>,
}

/// `[report.notify]`: where `slatrack scorecard --out` posts a summary per tenant.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifyConfig {
    /// An incoming-webhook URL (Slack, Teams or any receiver of JSON), or `env:NAME` /
    /// `file:PATH` holding it (webhook URLs carry their secret).
    pub webhook: String,
}

/// The image types a logo may be, by extension, with their MIME type.
pub const LOGO_TYPES: [(&str, &str); 4] = [
    ("png", "image/png"),
    ("jpg", "image/jpeg"),
    ("jpeg", "image/jpeg"),
    ("svg", "image/svg+xml"),
];

impl ReportConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(a) = &self.accent {
            let hex = a.strip_prefix('#').unwrap_or("");
            if hex.len() != 6 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
                return Err(invalid(
                    "report.accent",
                    a,
                    "must be a colour as \"#rrggbb\", e.g. \"#5b2a86\"",
                ));
            }
        }
        if let Some(logo) = &self.logo {
            let ext = logo
                .extension()
                .and_then(|e| e.to_str())
                .unwrap_or("")
                .to_ascii_lowercase();
            if !LOGO_TYPES.iter().any(|(e, _)| *e == ext) {
                return Err(invalid(
                    "report.logo",
                    logo.display(),
                    "must be a .png, .jpg or .svg file",
                ));
            }
        }
        if let Some(n) = &self.notify {
            let w = n.webhook.as_str();
            if !(w.starts_with("http://")
                || w.starts_with("https://")
                || w.starts_with("env:")
                || w.starts_with("file:"))
            {
                return Err(invalid(
                    "report.notify.webhook",
                    "(not shown: it may hold a secret)",
                    "must be an http(s):// URL, or env:NAME / file:PATH holding one",
                ));
            }
        }
        Ok(())
    }

    /// The webhook URL, its `env:`/`file:` reference resolved.
    pub fn webhook(&self) -> Result<Option<String>, ConfigError> {
        self.notify
            .as_ref()
            .map(|n| super::resolve_secret("report.notify.webhook", &n.webhook))
            .transpose()
    }
}
