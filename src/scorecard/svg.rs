//! Inline SVG charts for the HTML scorecard: week-by-week lines with target lines, stacked
//! weekly bars, and horizontal budget bars. Plain SVG elements only (no script, no
//! external font or style), so a page renders the same offline, in print and in PDF.
//!
//! Every chart is `<svg class="chart" data-chart="…">`; every plotted week is an element
//! with `class="point"` and `data-week` (1-based) carrying a `<title>` tooltip, so a reader
//! hovering sees the figure and a test can count one point per week.

use std::fmt::Write as _;

const W: f64 = 640.0;
const H: f64 = 220.0;
const LEFT: f64 = 52.0;
const RIGHT: f64 = 16.0;
const TOP: f64 = 16.0;
const BOTTOM: f64 = 28.0;

/// Series colours (colour-blind-safe Okabe–Ito), by index.
pub const PALETTE: [&str; 8] = [
    "#0072b2", "#e69f00", "#009e73", "#cc79a7", "#56b4e9", "#d55e00", "#000000", "#f0e442",
];

/// Text for XML: `&`, `<`, `>`, `"` escaped.
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            c => o.push(c),
        }
    }
    o
}

pub struct Series {
    pub name: String,
    pub color: &'static str,
    /// One value per week; `None`: no events that week (no point, a gap in the line).
    pub values: Vec<Option<f64>>,
}

pub struct Target {
    pub label: String,
    pub value: f64,
    pub color: &'static str,
}

pub struct LineChart<'a> {
    pub id: &'a str,
    pub title: &'a str,
    /// How a value is written on the axis and in tooltips.
    pub format: fn(f64) -> String,
    pub y_min: f64,
    pub y_max: f64,
    pub weeks: usize,
    pub series: Vec<Series>,
    pub targets: Vec<Target>,
}

fn x_of(week: usize, weeks: usize) -> f64 {
    let span = W - LEFT - RIGHT;
    if weeks <= 1 {
        return LEFT + span / 2.0;
    }
    LEFT + span * week as f64 / (weeks - 1) as f64
}

/// The centre of week `week`'s slot, for bars (whole slots, clear of the axis labels).
fn x_slot(week: usize, weeks: usize) -> f64 {
    let slot = (W - LEFT - RIGHT) / weeks.max(1) as f64;
    LEFT + slot * (week as f64 + 0.5)
}

fn y_of(v: f64, min: f64, max: f64) -> f64 {
    let v = v.clamp(min, max);
    TOP + (H - TOP - BOTTOM) * (1.0 - (v - min) / (max - min).max(f64::EPSILON))
}

fn open(o: &mut String, id: &str, title: &str, height: f64) {
    let _ = write!(
        o,
        r#"<figure><figcaption>{t}</figcaption><svg class="chart" data-chart="{id}" role="img" aria-label="{t}" viewBox="0 0 {W} {height}" width="{W}" height="{height}" xmlns="http://www.w3.org/2000/svg">"#,
        t = esc(title),
        id = esc(id),
    );
}

/// A tick step of 1, 2, 2.5 or 5 × 10ⁿ giving at most 6 intervals over `[min, max]`,
/// and the range widened to whole steps.
pub fn nice(min: f64, max: f64) -> (f64, f64, f64) {
    let span = (max - min).max(f64::EPSILON);
    let mut mag = 10f64.powf((span / 6.0).log10().floor());
    loop {
        for m in [1.0, 2.0, 2.5, 5.0] {
            let step = m * mag;
            let (lo, hi) = ((min / step).floor() * step, (max / step).ceil() * step);
            if (hi - lo) / step <= 6.0 + 1e-9 {
                return (lo, hi, step);
            }
        }
        mag *= 10.0;
    }
}

fn axes(
    o: &mut String,
    (weeks, x): (usize, fn(usize, usize) -> f64),
    min: f64,
    max: f64,
    format: fn(f64) -> String,
) {
    let (_, _, step) = nice(min, max);
    let ticks = ((max - min) / step).round() as usize;
    for k in 0..=ticks {
        let v = min + step * k as f64;
        let y = y_of(v, min, max);
        let _ = write!(
            o,
            r##"<line x1="{LEFT}" y1="{y:.1}" x2="{x2}" y2="{y:.1}" stroke="#ddd"/><text x="{tx}" y="{ty:.1}" font-size="10" text-anchor="end" fill="#555">{label}</text>"##,
            x2 = W - RIGHT,
            tx = LEFT - 4.0,
            ty = y + 3.0,
            label = esc(&format(v)),
        );
    }
    for w in 0..weeks {
        let _ = write!(
            o,
            r##"<text x="{x:.1}" y="{y}" font-size="10" text-anchor="middle" fill="#555">W{n}</text>"##,
            x = x(w, weeks),
            y = H - 10.0,
            n = w + 1,
        );
    }
}

fn legend(o: &mut String, items: &[(String, &str, bool)]) {
    o.push_str(r#"<div class="legend">"#);
    for (name, color, dashed) in items {
        let style = if *dashed { "dashed" } else { "solid" };
        let _ = write!(
            o,
            r#"<span><i style="border-top:3px {style} {color}"></i>{}</span>"#,
            esc(name)
        );
    }
    o.push_str("</div>");
}

impl LineChart<'_> {
    pub fn render(&self) -> String {
        let mut o = String::new();
        open(&mut o, self.id, self.title, H);
        let (y_min, y_max, _) = nice(self.y_min, self.y_max);
        axes(&mut o, (self.weeks, x_of), y_min, y_max, self.format);
        for t in &self.targets {
            let y = y_of(t.value, y_min, y_max);
            let _ = write!(
                o,
                r#"<line class="target" x1="{LEFT}" y1="{y:.1}" x2="{x2}" y2="{y:.1}" stroke="{c}" stroke-width="1.5" stroke-dasharray="6 4"><title>{l}: {v}</title></line>"#,
                x2 = W - RIGHT,
                c = t.color,
                l = esc(&t.label),
                v = esc(&(self.format)(t.value)),
            );
        }
        for s in &self.series {
            let mut segment: Vec<String> = Vec::new();
            let mut lines = Vec::new();
            for (w, v) in s.values.iter().enumerate() {
                match v {
                    Some(v) => segment.push(format!(
                        "{:.1},{:.1}",
                        x_of(w, self.weeks),
                        y_of(*v, y_min, y_max)
                    )),
                    None => lines.push(std::mem::take(&mut segment)),
                }
            }
            lines.push(segment);
            for l in lines.iter().filter(|l| l.len() > 1) {
                let _ = write!(
                    o,
                    r#"<polyline fill="none" stroke="{}" stroke-width="2" points="{}"/>"#,
                    s.color,
                    l.join(" ")
                );
            }
            for (w, v) in s.values.iter().enumerate() {
                let Some(v) = v else { continue };
                let _ = write!(
                    o,
                    r#"<circle class="point" data-series="{n}" data-week="{wk}" cx="{x:.1}" cy="{y:.1}" r="3.5" fill="{c}"><title>{n}, week {wk}: {val}</title></circle>"#,
                    n = esc(&s.name),
                    wk = w + 1,
                    x = x_of(w, self.weeks),
                    y = y_of(*v, y_min, y_max),
                    c = s.color,
                    val = esc(&(self.format)(*v)),
                );
            }
        }
        o.push_str("</svg>");
        let mut items: Vec<(String, &str, bool)> = self
            .series
            .iter()
            .map(|s| (s.name.clone(), s.color, false))
            .collect();
        items.extend(
            self.targets
                .iter()
                .map(|t| (t.label.clone(), t.color, true)),
        );
        legend(&mut o, &items);
        o.push_str("</figure>");
        o
    }
}

/// One stacked bar per week: `layers` are (name, colour, value per week), bottom first.
pub fn stacked_weeks(
    id: &str,
    title: &str,
    weeks: usize,
    layers: &[(&str, &'static str, Vec<u64>)],
) -> String {
    let mut o = String::new();
    open(&mut o, id, title, H);
    let most = (0..weeks)
        .map(|w| {
            layers
                .iter()
                .map(|l| l.2.get(w).copied().unwrap_or(0))
                .sum::<u64>()
        })
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    let (_, top, _) = nice(0.0, most);
    axes(&mut o, (weeks, x_slot), 0.0, top, |v| {
        if v >= 10_000.0 {
            format!("{:.0}k", v / 1000.0)
        } else {
            format!("{v:.0}")
        }
    });
    let span = (W - LEFT - RIGHT) / weeks.max(1) as f64;
    let bar = (span * 0.6).min(40.0);
    for w in 0..weeks {
        let x = x_slot(w, weeks) - bar / 2.0;
        let mut base = 0u64;
        let total: u64 = layers
            .iter()
            .map(|l| l.2.get(w).copied().unwrap_or(0))
            .sum();
        let mut tip = format!("week {}: {total} events", w + 1);
        let _ = write!(o, r#"<g class="point" data-week="{}">"#, w + 1);
        for (name, color, values) in layers {
            let v = values.get(w).copied().unwrap_or(0);
            let y1 = y_of((base + v) as f64, 0.0, top);
            let y0 = y_of(base as f64, 0.0, top);
            if v > 0 {
                let _ = write!(
                    o,
                    r#"<rect x="{x:.1}" y="{y1:.1}" width="{bar:.1}" height="{h:.1}" fill="{color}"/>"#,
                    h = (y0 - y1).max(0.5),
                );
            }
            let _ = write!(tip, ", {name} {v}");
            base += v;
        }
        let _ = write!(o, "<title>{}</title></g>", esc(&tip));
    }
    o.push_str("</svg>");
    let items: Vec<(String, &str, bool)> = layers
        .iter()
        .map(|(n, c, _)| (n.to_string(), *c, false))
        .collect();
    legend(&mut o, &items);
    o.push_str("</figure>");
    o
}

/// Horizontal bars of budget burned (share of the allowed misses spent), one per row,
/// with the 100 % line; a bar past 150 % is drawn to 150 % and labelled with its value.
pub fn budget_bars(id: &str, title: &str, rows: &[(String, Option<f64>)]) -> String {
    const MAX: f64 = 1.5;
    let row_h = 26.0;
    let height = TOP + BOTTOM + row_h * rows.len().max(1) as f64;
    let label_w = 130.0;
    let span = W - label_w - RIGHT - 60.0;
    let mut o = String::new();
    open(&mut o, id, title, height);
    let x100 = label_w + span / MAX;
    let _ = write!(
        o,
        r##"<line class="target" x1="{x100:.1}" y1="{TOP}" x2="{x100:.1}" y2="{y2}" stroke="#d55e00" stroke-width="1.5" stroke-dasharray="6 4"><title>whole budget spent</title></line><text x="{x100:.1}" y="{ty}" font-size="10" text-anchor="middle" fill="#555">100%</text>"##,
        y2 = height - BOTTOM,
        ty = height - 10.0,
    );
    for (i, (name, burned)) in rows.iter().enumerate() {
        let y = TOP + row_h * i as f64;
        let _ = write!(
            o,
            r##"<text x="{lx}" y="{ty:.1}" font-size="11" text-anchor="end" fill="#222">{n}</text>"##,
            lx = label_w - 6.0,
            ty = y + row_h / 2.0 + 4.0,
            n = esc(name),
        );
        let Some(b) = burned else { continue };
        let color = if *b > 1.0 {
            "#d55e00"
        } else if *b > 0.75 {
            "#e69f00"
        } else {
            "#009e73"
        };
        let w = span * b.clamp(0.0, MAX) / MAX;
        let _ = write!(
            o,
            r##"<g class="point" data-row="{i}"><rect x="{label_w}" y="{ry:.1}" width="{w:.1}" height="{rh:.1}" fill="{color}"/><text x="{tx:.1}" y="{ty:.1}" font-size="10" fill="#222">{v:.0}%</text><title>{n}: {v:.1}% of the error budget spent</title></g>"##,
            ry = y + 4.0,
            rh = row_h - 8.0,
            tx = label_w + w + 4.0,
            ty = y + row_h / 2.0 + 4.0,
            v = b * 100.0,
            n = esc(name),
        );
    }
    o.push_str("</svg></figure>");
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_has_a_point_per_week_with_data_and_breaks_at_gaps() {
        let c = LineChart {
            id: "t",
            title: "T <1>",
            format: |v| format!("{:.0}%", v * 100.0),
            y_min: 0.5,
            y_max: 1.0,
            weeks: 4,
            series: vec![Series {
                name: "a&b".into(),
                color: PALETTE[0],
                values: vec![Some(0.9), None, Some(0.95), Some(0.97)],
            }],
            targets: vec![Target {
                label: "target".into(),
                value: 0.95,
                color: PALETTE[5],
            }],
        };
        let svg = c.render();
        assert_eq!(svg.matches(r#"class="point""#).count(), 3);
        assert_eq!(svg.matches("<polyline").count(), 1, "weeks 3-4 only");
        assert!(svg.contains("T &lt;1&gt;") && svg.contains("a&amp;b"));
        assert!(svg.contains(r#"class="target""#));
    }

    #[test]
    fn bars_stack_and_budgets_cap() {
        let s = stacked_weeks(
            "o",
            "O",
            2,
            &[
                ("ok", PALETTE[2], vec![5, 0]),
                ("bad", PALETTE[5], vec![1, 0]),
            ],
        );
        assert_eq!(s.matches(r#"class="point""#).count(), 2);
        assert_eq!(s.matches("<rect").count(), 2, "no rectangle for zero");
        let b = budget_bars("b", "B", &[("x".into(), Some(3.0)), ("y".into(), None)]);
        assert!(b.contains(">300%<"));
        assert_eq!(b.matches(r#"class="point""#).count(), 1);
    }
}
