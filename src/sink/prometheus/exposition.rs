//! The protobuf exposition format, for a scraper that asks for it (Prometheus with native
//! histograms enabled does; the listener negotiates, [`crate::sink::http`]): the same metrics as the text format, as length-delimited
//! `io.prometheus.client.MetricFamily` messages, plus the window latency histograms with
//! their native buckets ([`super::latency`]). The text format stays the default.
//!
//! The `metrics` recorder renders text only, so its families are read back from that text
//! (the exporter's output: `# HELP`, `# TYPE`, then `name{labels} value` lines; counters,
//! gauges, histograms and summaries) and re-encoded.

use crate::proto::prometheus::{
    Bucket, Counter, Gauge, Histogram, LabelPair, Metric, MetricFamily, MetricType, Quantile,
    Untyped,
};
use prost::Message as _;
use std::collections::BTreeMap;

/// Length-delimited encoding of `families`.
pub fn encode(families: &[MetricFamily]) -> Vec<u8> {
    let mut out = Vec::new();
    for f in families {
        // Writing to a Vec cannot fail.
        let _ = f.encode_length_delimited(&mut out);
    }
    out
}

/// A sample's labels, in order.
type Labels = Vec<(String, String)>;

/// One sample line: series name, labels, value.
fn sample(line: &str) -> Option<(&str, Labels, f64)> {
    let (series, value) = line.rsplit_once(' ')?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    let Some((name, rest)) = series.split_once('{') else {
        return Some((series, Vec::new(), value));
    };
    let body = rest.strip_suffix('}')?;
    let mut labels = Vec::new();
    let mut chars = body.chars().peekable();
    loop {
        let key: String = chars.by_ref().take_while(|&c| c != '=').collect();
        if key.is_empty() {
            break;
        }
        if chars.next() != Some('"') {
            return None;
        }
        let mut val = String::new();
        loop {
            match chars.next()? {
                '\\' => match chars.next()? {
                    'n' => val.push('\n'),
                    c => val.push(c),
                },
                '"' => break,
                c => val.push(c),
            }
        }
        labels.push((key.trim_start_matches(',').to_string(), val));
        if chars.peek() == Some(&',') {
            chars.next();
        }
    }
    Some((name, labels, value))
}

fn pairs(labels: &[(String, String)]) -> Vec<LabelPair> {
    labels
        .iter()
        .map(|(n, v)| LabelPair {
            name: Some(n.clone()),
            value: Some(v.clone()),
        })
        .collect()
}

/// A family being read: its type, help and metrics by label set.
struct Reading {
    name: String,
    help: Option<String>,
    kind: MetricType,
    metrics: BTreeMap<Labels, Metric>,
}

impl Reading {
    fn finish(self) -> MetricFamily {
        MetricFamily {
            name: Some(self.name),
            help: self.help,
            r#type: Some(self.kind as i32),
            metric: self.metrics.into_values().collect(),
        }
    }

    /// Adds one sample line of this family.
    fn add(&mut self, series: &str, mut labels: Labels, value: f64) {
        let suffix = series.strip_prefix(self.name.as_str()).unwrap_or("");
        let mut special = |key: &str| {
            labels
                .iter()
                .position(|(k, _)| k == key)
                .map(|i| labels.remove(i).1)
        };
        let le = special("le");
        let quantile = special("quantile");
        let kind = self.kind;
        let m = self
            .metrics
            .entry(labels.clone())
            .or_insert_with(|| Metric {
                label: pairs(&labels),
                ..Default::default()
            });
        match kind {
            MetricType::Counter => m.counter = Some(Counter { value: Some(value) }),
            MetricType::Gauge => m.gauge = Some(Gauge { value: Some(value) }),
            MetricType::Histogram | MetricType::GaugeHistogram => {
                let h = m.histogram.get_or_insert_with(Default::default);
                match suffix {
                    "_sum" => h.sample_sum = Some(value),
                    "_count" => h.sample_count = Some(value as u64),
                    _ => {
                        let bound = le.and_then(|b| match b.as_str() {
                            "+Inf" => Some(f64::INFINITY),
                            b => b.parse().ok(),
                        });
                        // The +Inf bucket is implied by the count.
                        if let Some(b) = bound.filter(|b| b.is_finite()) {
                            h.bucket.push(Bucket {
                                cumulative_count: Some(value as u64),
                                upper_bound: Some(b),
                            });
                        }
                    }
                }
            }
            MetricType::Summary => {
                let s = m.summary.get_or_insert_with(Default::default);
                match suffix {
                    "_sum" => s.sample_sum = Some(value),
                    "_count" => s.sample_count = Some(value as u64),
                    _ => s.quantile.push(Quantile {
                        quantile: quantile.and_then(|q| q.parse().ok()),
                        value: Some(value),
                    }),
                }
            }
            MetricType::Untyped => m.untyped = Some(Untyped { value: Some(value) }),
        }
    }
}

fn kind_of(t: &str) -> MetricType {
    match t {
        "counter" => MetricType::Counter,
        "gauge" => MetricType::Gauge,
        "histogram" => MetricType::Histogram,
        "summary" => MetricType::Summary,
        _ => MetricType::Untyped,
    }
}

/// The families of a text exposition. Lines that do not parse are left out (the text is
/// the exporter's own, so there are none).
pub fn families_from_text(text: &str) -> Vec<MetricFamily> {
    let mut out = Vec::new();
    let mut current: Option<Reading> = None;
    let mut help: Option<(String, String)> = None;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            if let Some((name, h)) = rest.split_once(' ') {
                help = Some((name.to_string(), h.to_string()));
            }
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let Some((name, t)) = rest.split_once(' ') else {
                continue;
            };
            if let Some(done) = current.take() {
                out.push(done.finish());
            }
            current = Some(Reading {
                name: name.to_string(),
                help: help.take().filter(|(n, _)| n == name).map(|(_, h)| h),
                kind: kind_of(t.trim()),
                metrics: BTreeMap::new(),
            });
            continue;
        }
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let Some((series, labels, value)) = sample(line) else {
            continue;
        };
        let belongs = current
            .as_ref()
            .is_some_and(|c| series.starts_with(c.name.as_str()));
        if !belongs {
            // A sample without a TYPE line: a family of its own, untyped.
            if let Some(done) = current.take() {
                out.push(done.finish());
            }
            current = Some(Reading {
                name: series.to_string(),
                help: None,
                kind: MetricType::Untyped,
                metrics: BTreeMap::new(),
            });
        }
        if let Some(c) = current.as_mut() {
            c.add(series, labels, value);
        }
    }
    if let Some(done) = current.take() {
        out.push(done.finish());
    }
    out
}

/// A histogram's native buckets from (upper value, count) pairs in seconds, sorted: each
/// pair goes to the schema-`schema` bucket holding its value; values at or below 0 to the
/// zero bucket.
pub fn native(h: &mut Histogram, schema: i32, values: impl Iterator<Item = (f64, u64)>) {
    let scale = f64::from(1u32 << schema);
    let mut counts: BTreeMap<i32, u64> = BTreeMap::new();
    let mut zero = 0;
    for (v, n) in values {
        if v <= 0.0 {
            zero += n;
        } else {
            *counts.entry((v.log2() * scale).ceil() as i32).or_default() += n;
        }
    }
    h.schema = Some(schema);
    // The Go client's default: only exact zeros.
    h.zero_threshold = Some(2f64.powi(-128));
    h.zero_count = Some(zero);
    let (mut prev_index, mut prev_count) = (None::<i32>, 0i64);
    for (&i, &n) in &counts {
        match prev_index {
            Some(p) if i == p + 1 => {
                if let Some(last) = h.positive_span.last_mut() {
                    last.length = Some(last.length.unwrap_or(0) + 1);
                }
            }
            _ => h.positive_span.push(crate::proto::prometheus::BucketSpan {
                offset: Some(prev_index.map_or(i, |p| i - p - 1)),
                length: Some(1),
            }),
        }
        h.positive_delta.push(n as i64 - prev_count);
        prev_count = n as i64;
        prev_index = Some(i);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_reads_back_into_families() {
        let text = "# HELP slatrack_records_total Records read.\n# TYPE slatrack_records_total counter\nslatrack_records_total 42\n\
# TYPE slatrack_window_events gauge\nslatrack_window_events{tenant=\"a\\\"b\",platform=\"x\",window=\"1h\"} 3\nslatrack_window_events{tenant=\"c\",platform=\"x\",window=\"1h\"} 4\n\
# TYPE age histogram\nage_bucket{le=\"1\"} 1\nage_bucket{le=\"+Inf\"} 2\nage_sum 3.5\nage_count 2\n";
        let f = families_from_text(text);
        assert_eq!(f.len(), 3);
        assert_eq!(f[0].name.as_deref(), Some("slatrack_records_total"));
        assert_eq!(f[0].help.as_deref(), Some("Records read."));
        assert_eq!(f[0].metric[0].counter.as_ref().unwrap().value, Some(42.0));
        assert_eq!(f[1].metric.len(), 2);
        let first = &f[1].metric[0];
        assert_eq!(first.label[0].value.as_deref(), Some("a\"b"));
        assert_eq!(first.gauge.as_ref().unwrap().value, Some(3.0));
        let h = f[2].metric[0].histogram.as_ref().unwrap();
        assert_eq!((h.sample_count, h.sample_sum), (Some(2), Some(3.5)));
        assert_eq!(h.bucket.len(), 1, "+Inf is implied by the count");
        let bytes = encode(&f);
        let mut buf = &bytes[..];
        let mut back = Vec::new();
        while !buf.is_empty() {
            back.push(MetricFamily::decode_length_delimited(&mut buf).unwrap());
        }
        assert_eq!(back, f);
    }

    #[test]
    fn native_buckets_are_spans_and_deltas() {
        // Schema 0: bucket i covers (2^(i-1), 2^i]. 0.75 → i=0; 1.5 and 2 → i=1; 5 → i=3.
        let mut h = Histogram::default();
        native(
            &mut h,
            0,
            [(0.0, 1), (0.75, 2), (1.5, 3), (2.0, 1), (5.0, 4)].into_iter(),
        );
        assert_eq!(h.zero_count, Some(1));
        let spans: Vec<(i32, u32)> = h
            .positive_span
            .iter()
            .map(|s| (s.offset.unwrap(), s.length.unwrap()))
            .collect();
        assert_eq!(spans, vec![(0, 2), (1, 1)]);
        assert_eq!(h.positive_delta, vec![2, 2, 0]);
    }
}
