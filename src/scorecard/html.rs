//! `--format html`: one self-contained page — no script, no external asset, print CSS for
//! a clean PDF — holding the markdown report's sections as HTML tables and inline SVG
//! charts ([`super::svg`]): weekly on-time % per platform against its target, weekly
//! P50/P95/P99 against the latency targets, events by outcome, and the error budget spent.
//!
//! The tables are the markdown rendering converted (our own markdown: headings, tables,
//! emphasis, code, one fenced block), so both formats always say the same thing; status
//! emoji become coloured symbols that need no emoji font to print.

use super::branding::Branding;
use super::svg::{self, esc, LineChart, Series, Target, PALETTE};
use super::Scorecard;
use crate::engine::Stats;

use std::fmt::Write as _;

const CSS: &str = r#"
body { font: 14px/1.45 "DejaVu Sans", "Helvetica Neue", Arial, sans-serif; color: #222; margin: 24px auto; max-width: 1000px; padding: 0 16px; }
h1 { font-size: 22px; margin: 0 0 4px; } h2 { font-size: 18px; border-bottom: 2px solid #0072b2; padding-bottom: 2px; margin-top: 28px; }
h3 { font-size: 15px; margin-top: 22px; } h4 { font-size: 14px; margin: 16px 0 6px; }
p.meta { color: #555; margin: 0 0 12px; }
table { border-collapse: collapse; margin: 8px 0 14px; font-size: 13px; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: left; } th { background: #f2f5f8; }
td:not(:first-child) { font-variant-numeric: tabular-nums; }
pre { background: #f6f6f6; padding: 8px 10px; border-radius: 4px; }
code { font-family: "DejaVu Sans Mono", monospace; font-size: 12px; }
.st { font-weight: bold; } .st.green { color: #009e73; } .st.yellow { color: #e69f00; } .st.red { color: #d55e00; }
.charts { display: grid; grid-template-columns: repeat(auto-fill, minmax(460px, 1fr)); gap: 8px 20px; }
figure { margin: 6px 0 10px; } figcaption { font-weight: bold; font-size: 13px; margin-bottom: 2px; }
svg.chart { width: 100%; height: auto; max-width: 640px; display: block; }
.legend { font-size: 11px; color: #444; } .legend span { margin-right: 12px; white-space: nowrap; }
.legend i { display: inline-block; width: 18px; margin-right: 4px; vertical-align: middle; }
.partial { background: #fff4d6; border-left: 4px solid #e69f00; padding: 6px 10px; }
@page { size: A4; margin: 14mm; }
@media print {
  body { margin: 0; max-width: none; font-size: 11px; }
  .charts { grid-template-columns: 1fr 1fr; }
  figure, table, h2, h3, h4 { break-inside: avoid; } h2, h3, h4 { break-after: avoid; }
  section.page { break-before: page; }
}
"#;

/// The page for a scorecard, in slatrack's own look.
pub fn render(sc: &Scorecard) -> String {
    render_branded(sc, &Branding::default())
}

/// The page for a scorecard with a customer's title, logo, accent colour and footer.
pub fn render_branded(sc: &Scorecard, brand: &Branding) -> String {
    let mut o = String::new();
    let heading = brand.title.as_deref().unwrap_or("Delivery SLA Performance");
    let title = format!(
        "{heading} — {} — {} to {}",
        sc.tenant,
        sc.date(sc.from),
        sc.last_day()
    );
    let accent = brand.accent.as_deref().map_or(String::new(), |a| {
        format!("\nh1 {{ color: {a}; }} h2 {{ border-bottom-color: {a}; }} header.brand {{ border-bottom: 4px solid {a}; padding-bottom: 6px; margin-bottom: 10px; }}")
    });
    let _ = write!(
        o,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>{}</title>\n<style>{CSS}{accent}</style>\n</head>\n<body>\n",
        esc(&title)
    );
    if let Some(logo) = &brand.logo {
        let _ = writeln!(
            o,
            "<header class=\"brand\"><img class=\"logo\" src=\"{}\" alt=\"logo\" style=\"max-height: 56px\"></header>",
            esc(logo)
        );
    }
    let _ = writeln!(
        o,
        "<h1>{}</h1>\n<p class=\"meta\">Tenant <code>{}</code> · {} to {} inclusive ({} days) · computed by slatrack from event-time buckets</p>",
        esc(heading),
        esc(&sc.tenant),
        sc.date(sc.from),
        sc.last_day(),
        esc(sc.contract.time_zone.name()),
    );
    if sc.partial {
        o.push_str("<p class=\"partial\"><strong>Partial:</strong> the period has not ended; figures cover what has happened so far.</p>\n");
    }
    o.push_str("<h2>At a glance</h2>\n<div class=\"charts\">\n");
    o.push_str(&on_time_chart(sc));
    o.push_str(&latency_chart(sc));
    o.push_str(&outcomes_chart(sc));
    o.push_str(&budget_chart(sc));
    o.push_str("</div>\n<section class=\"page\">\n");
    // The markdown's sections, after its own title and intro (the page has them above).
    let md = super::markdown::render(sc);
    let sections = md.find("\n### ").map_or(md.as_str(), |i| &md[i + 1..]);
    o.push_str(&markdown_to_html(sections));
    o.push_str("</section>\n");
    if let Some(footer) = &brand.footer {
        let _ = writeln!(o, "<footer class=\"meta\"><p>{}</p></footer>", esc(footer));
    }
    o.push_str("</body>\n</html>\n");
    o
}

fn pct(v: f64) -> String {
    format!("{:.0}%", v * 100.0)
}

fn pct1(v: f64) -> String {
    format!("{:.1}%", v * 100.0)
}

fn weeks(sc: &Scorecard) -> usize {
    sc.weekly.len()
}

fn active(sc: &Scorecard) -> impl Iterator<Item = (usize, &super::PlatformReport)> {
    sc.platforms
        .iter()
        .filter(|p| p.stats.counters.events > 0)
        .enumerate()
}

fn on_time_chart(sc: &Scorecard) -> String {
    let mut series = Vec::new();
    let mut targets = Vec::new();
    let mut low: f64 = 1.0;
    for (i, p) in active(sc) {
        let color = PALETTE[i % PALETTE.len()];
        let values: Vec<Option<f64>> = p
            .weekly
            .iter()
            .map(|w| w.stats.counters.on_time_ratio())
            .collect();
        for v in values.iter().flatten() {
            low = low.min(*v);
        }
        low = low.min(p.target_on_time);
        if !targets.iter().any(|t: &Target| t.value == p.target_on_time) {
            targets.push(Target {
                label: format!("target {}", pct1(p.target_on_time)),
                value: p.target_on_time,
                color: "#d55e00",
            });
        }
        series.push(Series {
            name: p.name.clone(),
            color,
            values,
        });
    }
    LineChart {
        id: "on-time",
        title: "Weekly on-time % by platform",
        format: pct,
        y_min: (low - 0.02).max(0.0),
        y_max: 1.0,
        weeks: weeks(sc),
        series,
        targets,
    }
    .render()
}

/// Each week's figures, all platforms merged.
fn weekly_overall(sc: &Scorecard) -> Vec<&Stats> {
    sc.weekly.iter().map(|w| &w.stats).collect()
}

fn latency_chart(sc: &Scorecard) -> String {
    let sla = &sc.config.sla;
    let ms = |d: crate::config::ConfigDuration| d.0 as f64 / 1000.0;
    let weekly = weekly_overall(sc);
    let quantile =
        |q: u64| -> Vec<Option<f64>> { weekly.iter().map(|s| s.quantile_ms(q)).collect() };
    let series = vec![
        Series {
            name: "P50".into(),
            color: PALETTE[2],
            values: quantile(500),
        },
        Series {
            name: "P95".into(),
            color: PALETTE[1],
            values: quantile(950),
        },
        Series {
            name: "P99".into(),
            color: PALETTE[5],
            values: quantile(990),
        },
    ];
    let targets = vec![
        Target {
            label: format!("P50 target {:.0} ms", ms(sla.p50_target)),
            value: ms(sla.p50_target),
            color: PALETTE[2],
        },
        Target {
            label: format!("P95 target {:.0} ms", ms(sla.p95_target)),
            value: ms(sla.p95_target),
            color: PALETTE[1],
        },
        Target {
            label: format!("P99 threshold {:.0} ms", ms(sla.p99_threshold)),
            value: ms(sla.p99_threshold),
            color: PALETTE[5],
        },
    ];
    let high = series
        .iter()
        .flat_map(|s| s.values.iter().flatten())
        .chain(targets.iter().map(|t| &t.value))
        .fold(0.0f64, |a, b| a.max(*b));
    LineChart {
        id: "latency",
        title: "Weekly latency, all platforms (ms)",
        format: |v| format!("{v:.0} ms"),
        y_min: 0.0,
        y_max: (high * 1.05).max(1.0),
        weeks: weeks(sc),
        series,
        targets,
    }
    .render()
}

fn outcomes_chart(sc: &Scorecard) -> String {
    let weekly = weekly_overall(sc);
    let layer = |f: fn(&crate::engine::Counters) -> u64| -> Vec<u64> {
        weekly.iter().map(|s| f(&s.counters)).collect()
    };
    svg::stacked_weeks(
        "outcomes",
        "Weekly events by outcome",
        weeks(sc),
        &[
            ("delivered on time", PALETTE[2], layer(|c| c.on_time)),
            (
                "delivered late",
                PALETTE[1],
                layer(|c| c.delivered.saturating_sub(c.on_time)),
            ),
            ("failed", PALETTE[5], layer(|c| c.failed)),
            ("dead-lettered", PALETTE[6], layer(|c| c.dead_lettered)),
        ],
    )
}

fn budget_chart(sc: &Scorecard) -> String {
    let rows: Vec<(String, Option<f64>)> = sc
        .budgets
        .iter()
        .map(|b| {
            let name = match &b.platform {
                Some(id) => sc.platform_name(id).to_string(),
                None => "Overall".into(),
            };
            let burned = (b.allowed > 0.0).then(|| b.bad as f64 / b.allowed);
            (name, burned)
        })
        .collect();
    svg::budget_bars("budget", "Error budget spent over the period", &rows)
}

/// Status emoji as coloured symbols (no emoji font needed on screen or paper).
fn statuses(s: &str) -> String {
    s.replace("🟢", r#"<span class="st green" title="green">●</span>"#)
        .replace("🟡", r#"<span class="st yellow" title="yellow">●</span>"#)
        .replace("🔴", r#"<span class="st red" title="red">●</span>"#)
        .replace("✅", r#"<span class="st green">✔</span>"#)
        .replace("⚠️", r#"<span class="st yellow">▲</span>"#)
        .replace("❌", r#"<span class="st red">✖</span>"#)
}

/// Inline markdown of our renderer: `**bold**`, `_italic_` (whole span), `` `code` ``.
fn inline(s: &str) -> String {
    let mut out = String::new();
    let mut rest = esc(s);
    while let Some(i) = rest.find("**") {
        let Some(j) = rest[i + 2..].find("**") else {
            break;
        };
        out.push_str(&rest[..i]);
        let _ = write!(out, "<strong>{}</strong>", &rest[i + 2..i + 2 + j]);
        rest = rest[i + 2 + j + 2..].to_string();
    }
    out.push_str(&rest);
    let mut code = String::new();
    for (k, part) in out.split('`').enumerate() {
        if k % 2 == 1 {
            let _ = write!(code, "<code>{part}</code>");
        } else {
            code.push_str(part);
        }
    }
    let mut s = match code.strip_prefix('_').and_then(|c| c.strip_suffix('_')) {
        Some(inner) => format!("<em>{inner}</em>"),
        None => code,
    };
    // A parenthesis set in italics within a line: `_(…)_`.
    while let Some(i) = s.find("_(") {
        let Some(j) = s[i..].find(")_") else {
            break;
        };
        s = format!(
            "{}<em>{}</em>{}",
            &s[..i],
            &s[i + 1..i + j + 1],
            &s[i + j + 2..]
        );
    }
    statuses(&s)
}

fn cells(line: &str) -> Vec<&str> {
    line.trim()
        .trim_start_matches('|')
        .trim_end_matches('|')
        .split('|')
        .map(str::trim)
        .collect()
}

/// Our markdown (headings, pipe tables, `- ` lists, paragraphs, one kind of fenced block)
/// as HTML.
pub fn markdown_to_html(md: &str) -> String {
    let mut o = String::new();
    let mut lines = md.lines().peekable();
    while let Some(line) = lines.next() {
        if let Some(h) = line.strip_prefix("#### ") {
            let _ = writeln!(o, "<h4>{}</h4>", inline(h));
        } else if let Some(h) = line.strip_prefix("### ") {
            let _ = writeln!(o, "<h3>{}</h3>", inline(h));
        } else if let Some(h) = line.strip_prefix("## ") {
            let _ = writeln!(o, "<h2>{}</h2>", inline(h));
        } else if line.starts_with("```") {
            o.push_str("<pre>");
            for l in lines.by_ref() {
                if l.starts_with("```") {
                    break;
                }
                let _ = writeln!(o, "{}", statuses(&esc(l)));
            }
            o.push_str("</pre>\n");
        } else if line.starts_with('|') {
            o.push_str("<table>\n<thead><tr>");
            for c in cells(line) {
                let _ = write!(o, "<th>{}</th>", inline(c));
            }
            o.push_str("</tr></thead>\n<tbody>\n");
            lines.next_if(|l| l.starts_with("|-"));
            while let Some(row) = lines.next_if(|l| l.starts_with('|')) {
                o.push_str("<tr>");
                for c in cells(row) {
                    let _ = write!(o, "<td>{}</td>", inline(c));
                }
                o.push_str("</tr>\n");
            }
            o.push_str("</tbody>\n</table>\n");
        } else if let Some(item) = line.strip_prefix("- ") {
            let _ = write!(o, "<ul>\n<li>{}</li>\n", inline(item));
            while let Some(item) = lines.next_if(|l| l.starts_with("- ")) {
                let _ = writeln!(o, "<li>{}</li>", inline(&item[2..]));
            }
            o.push_str("</ul>\n");
        } else if !line.trim().is_empty() {
            let _ = writeln!(o, "<p>{}</p>", inline(line));
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_markdown_becomes_html() {
        let md = "## Title\n\n_Tenant `g`, a & b._\n\n| A | B |\n|---|---|\n| **x** | 1 🟢 |\n\n**P**: ok ✅\n```\nP50: 1 ms ⚠️ Above\n```\n";
        let h = markdown_to_html(md);
        assert!(h.contains("<h2>Title</h2>"));
        assert!(
            h.contains("<p><em>Tenant <code>g</code>, a &amp; b.</em></p>"),
            "{h}"
        );
        assert!(h.contains("<th>A</th><th>B</th>"));
        assert!(h.contains("<td><strong>x</strong></td><td>1 <span class=\"st green\""));
        assert!(h.contains("<pre>P50: 1 ms <span class=\"st yellow\">▲</span> Above\n</pre>"));
        assert!(!h.contains("|---"));
        let list = markdown_to_html("- **a**: one _(why)_\n- b\n\nafter\n");
        assert_eq!(
            list,
            "<ul>\n<li><strong>a</strong>: one <em>(why)</em></li>\n<li>b</li>\n</ul>\n<p>after</p>\n"
        );
        for emoji in ["🟢", "✅", "⚠️"] {
            assert!(!h.contains(emoji));
        }
    }
}
