//! The scorecard job (`slatrack scorecard --out DIR`, `--all-tenants`): one report per
//! tenant in the format asked (markdown, JSON, HTML or PDF) written into a directory with
//! an `index.html` listing each tenant's status, on-time % and criteria, then a summary
//! per tenant posted to `[report.notify]`'s webhook. Reports are written whole (a file
//! appears complete or not at all), so a run repeated over the same store and period
//! rewrites the same files.

pub mod notify;
pub mod pdf;

use crate::config::Config;
use crate::contract::{calendar, Contracts};
use crate::scorecard::branding::{Branding, LogoError};
use crate::scorecard::{self, narrative, Scorecard};
use crate::sla::Status;
use crate::store::{StoreError, StoreRead};
use crate::time::Micros;
use chrono::NaiveDate;
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Markdown,
    Json,
    Html,
    Pdf,
}

impl Format {
    pub fn extension(self) -> &'static str {
        match self {
            Self::Markdown => "md",
            Self::Json => "json",
            Self::Html => "html",
            Self::Pdf => "pdf",
        }
    }
}

/// What a report covers, in each tenant's own zone.
#[derive(Debug, Clone)]
pub enum Span {
    /// `2025-10` or `2025-W41`.
    Period(String),
    /// Local dates `[from, to)`.
    Dates(NaiveDate, NaiveDate),
}

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("--period {0:?} is not a period: write YYYY-MM (a month) or YYYY-Www (an ISO week, e.g. 2025-W41)")]
    BadPeriod(String),
    #[error("--to must be after --from (the range is half-open: [from, to))")]
    EmptyRange,
    #[error("cannot write {path}: {source}; check that the --out directory is writable")]
    Write {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Pdf(#[from] pdf::PdfError),
    #[error(transparent)]
    Logo(#[from] LogoError),
    #[error("rendering JSON: {0}")]
    Json(#[from] serde_json::Error),
}

/// `[from, to)` of `span` in zone `tz`.
pub fn instants(tz: chrono_tz::Tz, span: &Span) -> Result<(Micros, Micros), ReportError> {
    match span {
        Span::Period(p) => calendar::period(tz, p).ok_or_else(|| ReportError::BadPeriod(p.clone())),
        Span::Dates(from, to) => {
            if to <= from {
                return Err(ReportError::EmptyRange);
            }
            Ok(calendar::dates(tz, *from, to.pred_opt().unwrap_or(*to)))
        }
    }
}

/// A rendered report.
pub fn render(sc: &Scorecard, format: Format, brand: &Branding) -> Result<Vec<u8>, ReportError> {
    Ok(match format {
        Format::Markdown => scorecard::markdown::render(sc).into_bytes(),
        Format::Json => {
            let mut s = serde_json::to_string_pretty(&scorecard::json::render(sc))?;
            s.push('\n');
            s.into_bytes()
        }
        Format::Html => scorecard::html::render_branded(sc, brand).into_bytes(),
        Format::Pdf => pdf::print(&scorecard::html::render_branded(sc, brand))?,
    })
}

/// One tenant's outcome of a run: what the index and the notification say.
#[derive(Debug, Clone)]
pub struct TenantSummary {
    pub tenant: String,
    pub time_zone: String,
    pub from: String,
    /// Exclusive, local.
    pub to: String,
    pub last_day: String,
    pub partial: bool,
    /// `no data` when the store holds nothing of the tenant in the span.
    pub status: String,
    pub on_time: Option<f64>,
    pub criteria_met: usize,
    pub criteria_total: usize,
    /// Each finding's sentence.
    pub findings: Vec<String>,
    /// The report file (`None`: nothing to report).
    pub path: Option<PathBuf>,
}

/// A file name for a tenant id: letters, digits, `-`, `_` and `.` kept, the rest `_`.
pub fn file_stem(tenant: &str) -> String {
    let s: String = tenant
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() || s.starts_with('.') {
        format!("tenant{s}")
    } else {
        s
    }
}

/// Writes `bytes` to `path` whole: into a temporary file beside it, then renamed.
fn write_whole(path: &Path, bytes: &[u8]) -> Result<(), ReportError> {
    let err = |source| ReportError::Write {
        path: path.display().to_string(),
        source,
    };
    let tmp = path.with_extension(format!(
        "{}.tmp",
        path.extension().and_then(|e| e.to_str()).unwrap_or("")
    ));
    std::fs::write(&tmp, bytes).map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

/// The scorecard job over `tenants`, into `out`.
pub struct Job<'a> {
    pub store: &'a dyn StoreRead,
    pub config: Arc<Config>,
    pub contracts: &'a Contracts,
    pub span: Span,
    pub format: Format,
    pub out: PathBuf,
    pub now: Micros,
}

impl Job<'_> {
    /// Every tenant with data in the store (over all time), by id.
    pub fn tenants_in_store(store: &dyn StoreRead) -> Result<Vec<String>, ReportError> {
        let mut t: Vec<String> = store
            .coverage(None)?
            .into_iter()
            .map(|c| c.tenant)
            .collect();
        t.sort();
        t.dedup();
        Ok(t)
    }

    /// Writes a report per tenant with data in its span and the index; returns every
    /// tenant's summary (those without data too).
    pub fn run(&self, tenants: &[String]) -> Result<Vec<TenantSummary>, ReportError> {
        let brand = Branding::load(&self.config.report)?;
        std::fs::create_dir_all(&self.out).map_err(|source| ReportError::Write {
            path: self.out.display().to_string(),
            source,
        })?;
        let mut summaries = Vec::new();
        for tenant in tenants {
            let tz = self.contracts.tenant(tenant).time_zone;
            let (from, to) = instants(tz, &self.span)?;
            let sc = scorecard::build_at(
                self.store,
                self.config.clone(),
                self.contracts,
                tenant,
                from,
                to,
                self.now,
            )?;
            let has_data = sc.overall.counters.attempts > 0 || sc.rejected_total() > 0;
            let path = if has_data {
                let path =
                    self.out
                        .join(format!("{}.{}", file_stem(tenant), self.format.extension()));
                write_whole(&path, &render(&sc, self.format, &brand)?)?;
                tracing::info!(tenant = %tenant, path = %path.display(), "report written");
                Some(path)
            } else {
                tracing::warn!(tenant = %tenant, "no data in the period: no report");
                None
            };
            summaries.push(summary(&sc, path, has_data));
        }
        let index = self.out.join("index.html");
        write_whole(&index, index_page(&summaries, &brand, &self.out).as_bytes())?;
        Ok(summaries)
    }
}

fn summary(sc: &Scorecard, path: Option<PathBuf>, has_data: bool) -> TenantSummary {
    TenantSummary {
        tenant: sc.tenant.clone(),
        time_zone: sc.contract.time_zone.name().to_string(),
        from: sc.date(sc.from),
        to: sc.date(sc.to),
        last_day: sc.last_day(),
        partial: sc.partial,
        status: if has_data {
            status_word(sc.status).to_string()
        } else {
            "no data".to_string()
        },
        on_time: sc.overall.counters.on_time_ratio(),
        criteria_met: sc.criteria.iter().filter(|c| c.met).count(),
        criteria_total: sc.criteria.len(),
        findings: sc
            .findings
            .iter()
            .map(|f| narrative::sentence(f, sc))
            .collect(),
        path,
    }
}

fn status_word(s: Status) -> &'static str {
    match s {
        Status::Green => "green",
        Status::Yellow => "yellow",
        Status::Red => "red",
        Status::NotApplicable => "n/a",
    }
}

/// The index: one row per tenant, linking its report.
fn index_page(summaries: &[TenantSummary], brand: &Branding, out: &Path) -> String {
    use crate::scorecard::svg::esc;
    let title = brand.title.as_deref().unwrap_or("Delivery SLA Performance");
    let mut rows = String::new();
    for s in summaries {
        let link = s.path.as_ref().map_or("-".to_string(), |p| {
            let name = p.strip_prefix(out).unwrap_or(p).display().to_string();
            format!("<a href=\"{}\">{}</a>", esc(&name), esc(&name))
        });
        rows.push_str(&format!(
            "<tr><td>{}</td><td>{} to {} ({}){}</td><td class=\"st {}\">{}</td><td>{}</td><td>{} of {}</td><td>{}</td><td>{link}</td></tr>\n",
            esc(&s.tenant),
            esc(&s.from),
            esc(&s.last_day),
            esc(&s.time_zone),
            if s.partial { ", partial" } else { "" },
            esc(&s.status),
            esc(&s.status),
            s.on_time.map_or("-".into(), |r| format!("{:.1}%", r * 100.0)),
            s.criteria_met,
            s.criteria_total,
            s.findings.len(),
        ));
    }
    let accent = brand.accent.as_deref().unwrap_or("#0072b2");
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>{t} — every tenant</title>\n<style>body {{ font: 14px/1.45 \"DejaVu Sans\", Arial, sans-serif; margin: 24px auto; max-width: 1000px; padding: 0 16px; }} h1 {{ color: {accent}; font-size: 22px; }} table {{ border-collapse: collapse; }} th, td {{ border: 1px solid #ccc; padding: 3px 8px; text-align: left; }} th {{ background: #f2f5f8; }} .st.green {{ color: #009e73; }} .st.yellow {{ color: #e69f00; }} .st.red {{ color: #d55e00; }}</style>\n</head>\n<body>\n<h1>{t} — every tenant</h1>\n<table>\n<tr><th>Tenant</th><th>Period</th><th>Status</th><th>On-time %</th><th>Criteria met</th><th>Findings</th><th>Report</th></tr>\n{rows}</table>\n{}</body>\n</html>\n",
        brand
            .footer
            .as_deref()
            .map_or(String::new(), |f| format!("<footer><p>{}</p></footer>\n", esc(f))),
        t = esc(title),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_ids_make_safe_file_names() {
        assert_eq!(file_stem("globex"), "globex");
        assert_eq!(file_stem("acme/../x"), "acme_.._x");
        assert_eq!(file_stem(".hidden"), "tenant.hidden");
        assert_eq!(file_stem(""), "tenant");
    }
}
