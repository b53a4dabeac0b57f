//! What one bucket or window knows: exact counters plus an HDR latency histogram.
//!
//! Counters are exact integers so every ratio is exact; only quantiles are approximate
//! (HDR at 2 significant digits: ≤ 1/128 relative error, ≈26 KB per histogram over
//! 1 µs–1 h, against ≈188 KB at 3 digits — see docs/engine.md, "Definitions").
//!
//! Most one-minute buckets of one key hold a handful of attempts, so a bucket keeps its
//! first [`FEW`] latencies as exact values and only switches to a full HDR histogram past
//! that, rather than allocate and zero 26 KB per bucket. Quantiles are reported
//! identically in both forms (the top of the HDR bucket holding the nearest-rank value),
//! so the representation never shows in a number.

pub use super::counters::Counters;
use super::few::FewVec;
use crate::event::DeliveryEvent;
use hdrhistogram::serialization::{Deserializer, Serializer, V2Serializer};
use hdrhistogram::Histogram;

pub use super::hdr::{new_histogram, HIST_MAX_US, HIST_SIGFIG};

/// Exact values kept before a bucket switches to a histogram. A histogram is 26 KB of
/// counts that a new bucket must zero and that records touch at random; most buckets of a
/// key-minute hold fewer attempts than this, so they never pay for one, and the open
/// buckets of many keys stay in cache.
pub const FEW: usize = 256;

/// Sparse updates with at most this many buckets are applied in place.
const SMALL_UPDATE: usize = 16;

/// Latencies of every attempt (µs): exact while few, an HDR histogram after, or — for
/// long-lived window aggregates — the HDR histogram's non-empty buckets only.
#[derive(Debug, Clone)]
pub enum Latencies {
    Few(FewVec),
    Hist(Box<Histogram<u64>>),
    /// (top of an HDR bucket, count), sorted, no zero counts. A window entry of a key with
    /// steady traffic holds tens to a few hundred buckets (16 B each) instead of the dense
    /// histogram's 26 KB: what makes thousands of keys × a 7-day window fit in memory.
    Sparse(Vec<(u64, u64)>),
}

impl Default for Latencies {
    fn default() -> Self {
        Latencies::Few(FewVec::default())
    }
}

/// The layout every histogram shares, for mapping a value to its HDR bucket.
fn template() -> &'static Histogram<u64> {
    static T: std::sync::OnceLock<Histogram<u64>> = std::sync::OnceLock::new();
    T.get_or_init(new_histogram)
}

/// HDR counts by index, what [`Stats::sum`] adds parts into: the dense histogram's
/// counts without the crate's bookkeeping, zeroed as they are read out, so one array per
/// thread serves every sum.
struct SumCounts {
    counts: Vec<u64>,
    /// The indexes touched since the last read: `lo..=hi`, or `lo > hi` for none.
    lo: usize,
    hi: usize,
}

thread_local! {
    static SUM_COUNTS: std::cell::RefCell<SumCounts> = std::cell::RefCell::new(SumCounts {
        counts: vec![0; super::hdr::index_of(HIST_MAX_US) as usize + 1],
        lo: usize::MAX,
        hi: 0,
    });
}

impl SumCounts {
    #[inline]
    fn count(&mut self, value: u64, n: u64) {
        let i = super::hdr::index_of(value.min(HIST_MAX_US)) as usize;
        self.counts[i] += n;
        self.lo = self.lo.min(i);
        self.hi = self.hi.max(i);
    }

    fn add(&mut self, l: &Latencies) {
        match l {
            Latencies::Few(v) => {
                for &x in v.iter() {
                    self.count(x, 1);
                }
            }
            Latencies::Sparse(s) => {
                for &(top, n) in s {
                    self.count(top, n);
                }
            }
            Latencies::Hist(h) => {
                for v in h.iter_recorded() {
                    self.count(v.value_iterated_to(), v.count_at_value());
                }
            }
        }
    }

    /// The counts as (bucket top, count), ascending; leaves every count at zero.
    fn take(&mut self) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        if self.lo <= self.hi {
            for (i, c) in self.counts[self.lo..=self.hi].iter_mut().enumerate() {
                if *c > 0 {
                    out.push((super::hdr::top_of_index((self.lo + i) as u64), *c));
                    *c = 0;
                }
            }
        }
        (self.lo, self.hi) = (usize::MAX, 0);
        out
    }
}

impl Latencies {
    pub fn dense() -> Self {
        Latencies::Hist(Box::new(new_histogram()))
    }

    #[inline]
    pub fn record(&mut self, us: u64) {
        let us = us.min(HIST_MAX_US);
        match self {
            Latencies::Few(v) if v.len() < FEW => v.push(us),
            Latencies::Few(_) => {
                self.densify();
                self.record(us);
            }
            Latencies::Hist(h) => h.saturating_record(us),
            Latencies::Sparse(s) => {
                let top = template().highest_equivalent(us);
                match s.binary_search_by_key(&top, |(t, _)| *t) {
                    Ok(i) => s[i].1 += 1,
                    Err(i) => s.insert(i, (top, 1)),
                }
            }
        }
    }

    pub fn len(&self) -> u64 {
        match self {
            Latencies::Few(v) => v.len() as u64,
            Latencies::Hist(h) => h.len(),
            Latencies::Sparse(s) => s.iter().map(|(_, n)| n).sum(),
        }
    }

    /// An empty sparse form (window aggregates start here).
    pub fn sparse() -> Self {
        Latencies::Sparse(Vec::new())
    }

    /// The sparse form of any form: HDR bucket tops with their counts.
    pub fn to_sparse(&self) -> Vec<(u64, u64)> {
        match self {
            Latencies::Sparse(s) => s.clone(),
            Latencies::Few(v) => {
                let t = template();
                let mut tops: Vec<u64> = v.iter().map(|&x| t.highest_equivalent(x)).collect();
                tops.sort_unstable();
                let mut out: Vec<(u64, u64)> = Vec::new();
                out.resize(tops.len(), (0, 0));
                let n = runs(&tops, &mut out);
                out.truncate(n);
                out
            }
            Latencies::Hist(h) => h
                .iter_recorded()
                .map(|v| {
                    (
                        h.highest_equivalent(v.value_iterated_to()),
                        v.count_at_value(),
                    )
                })
                .collect(),
        }
    }

    /// Calls `f` with the sparse form: borrowed where it is stored, built on the stack for
    /// a few exact values, so merging a one-attempt bucket into a window allocates
    /// nothing.
    fn with_sparse<R>(&self, f: impl FnOnce(&[(u64, u64)]) -> R) -> R {
        match self {
            Latencies::Sparse(s) => f(s),
            Latencies::Few(v) if v.len() <= SMALL_UPDATE => {
                let t = template();
                let mut tops = [0u64; SMALL_UPDATE];
                for (d, &x) in tops.iter_mut().zip(v.iter()) {
                    *d = t.highest_equivalent(x);
                }
                let tops = &mut tops[..v.len()];
                tops.sort_unstable();
                let mut pairs = [(0u64, 0u64); SMALL_UPDATE];
                let n = runs(tops, &mut pairs);
                f(&pairs[..n])
            }
            other => f(&other.to_sparse()),
        }
    }

    /// Merges two sorted bucket lists; `subtract` removes `b` from `a` (counts never go
    /// below 0, buckets that reach 0 are dropped).
    fn combine(a: &[(u64, u64)], b: &[(u64, u64)], subtract: bool) -> Vec<(u64, u64)> {
        let mut out = Vec::with_capacity(a.len().max(b.len()));
        let (mut i, mut j) = (0, 0);
        while i < a.len() || j < b.len() {
            let take_a = j >= b.len() || (i < a.len() && a[i].0 < b[j].0);
            let take_b = i >= a.len() || (j < b.len() && b[j].0 < a[i].0);
            let (top, n) = if take_a {
                i += 1;
                a[i - 1]
            } else if take_b {
                j += 1;
                if subtract {
                    continue; // removing what was never added: nothing to remove
                }
                b[j - 1]
            } else {
                let (top, x, y) = (a[i].0, a[i].1, b[j].1);
                i += 1;
                j += 1;
                (top, if subtract { x.saturating_sub(y) } else { x + y })
            };
            if n > 0 {
                out.push((top, n));
            }
        }
        out
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn densify(&mut self) {
        if let Latencies::Few(v) = self {
            let mut h = new_histogram();
            for &x in v.iter() {
                h.saturating_record(x);
            }
            *self = Latencies::Hist(Box::new(h));
        }
    }

    /// The HDR form (allocates for the exact and sparse forms).
    pub fn to_histogram(&self) -> std::borrow::Cow<'_, Histogram<u64>> {
        match self {
            Latencies::Hist(h) => std::borrow::Cow::Borrowed(h),
            Latencies::Few(v) => {
                let mut h = new_histogram();
                for &x in v {
                    h.saturating_record(x);
                }
                std::borrow::Cow::Owned(h)
            }
            Latencies::Sparse(s) => {
                let mut h = new_histogram();
                for &(top, n) in s {
                    h.saturating_record_n(top, n);
                }
                std::borrow::Cow::Owned(h)
            }
        }
    }

    pub fn merge(&mut self, o: &Latencies) {
        if let Latencies::Sparse(a) = self {
            o.with_sparse(|b| {
                if b.len() <= SMALL_UPDATE {
                    // A bucket of a few attempts into a window: in place, no reallocation
                    // of the window's hundreds of entries.
                    for &(top, n) in b {
                        match a.binary_search_by_key(&top, |(t, _)| *t) {
                            Ok(i) => a[i].1 += n,
                            Err(i) => a.insert(i, (top, n)),
                        }
                    }
                } else {
                    *a = Self::combine(a, b, false);
                }
            });
            return;
        }
        match (&mut *self, o) {
            (Latencies::Few(a), Latencies::Few(b)) if a.len() + b.len() <= FEW => {
                a.extend_from_slice(b)
            }
            (Latencies::Hist(a), Latencies::Few(b)) => {
                for &x in b {
                    a.saturating_record(x);
                }
            }
            (Latencies::Hist(a), Latencies::Hist(b)) => {
                // Same bounds everywhere and u64 counts: cannot fail short of 2^64 records.
                a.add(&**b).expect("histograms share bounds");
            }
            (Latencies::Hist(a), Latencies::Sparse(b)) => {
                for &(top, n) in b {
                    a.saturating_record_n(top, n);
                }
            }
            (Latencies::Few(_), _) => {
                self.densify();
                self.merge(o);
            }
            (Latencies::Sparse(_), _) => unreachable!("handled above"),
        }
    }

    /// Removes `o`, which must have been merged in before (rolling windows).
    pub fn unmerge(&mut self, o: &Latencies) {
        if let Latencies::Sparse(a) = self {
            o.with_sparse(|b| {
                if b.len() <= SMALL_UPDATE {
                    for &(top, n) in b {
                        if let Ok(i) = a.binary_search_by_key(&top, |(t, _)| *t) {
                            a[i].1 = a[i].1.saturating_sub(n);
                            if a[i].1 == 0 {
                                a.remove(i);
                            }
                        }
                    }
                } else {
                    *a = Self::combine(a, b, true);
                }
            });
            return;
        }
        self.densify();
        if let Latencies::Hist(a) = self {
            a.subtract(&*o.to_histogram())
                .expect("subtracting a histogram that was added before");
        }
    }

    fn quantile_us(&self, q_permille: u64) -> Option<u64> {
        let n = self.len();
        if n == 0 {
            return None;
        }
        let rank = (q_permille * n).div_ceil(1000).max(1);
        match self {
            Latencies::Few(v) => {
                let mut v = v.clone();
                v.sort_unstable();
                Some(template().highest_equivalent(v[(rank - 1) as usize]))
            }
            Latencies::Hist(h) => {
                let mut seen = 0;
                for v in h.iter_recorded() {
                    seen += v.count_at_value();
                    if seen >= rank {
                        return Some(h.highest_equivalent(v.value_iterated_to()));
                    }
                }
                None
            }
            Latencies::Sparse(s) => {
                let mut seen = 0;
                for &(top, n) in s {
                    seen += n;
                    if seen >= rank {
                        return Some(top);
                    }
                }
                None
            }
        }
    }
}

/// Run-length encodes sorted bucket tops into `out` (at least as long as `tops`); returns
/// how many (top, count) pairs it wrote.
fn runs(tops: &[u64], out: &mut [(u64, u64)]) -> usize {
    let mut n = 0;
    for &x in tops {
        if n > 0 && out[n - 1].0 == x {
            out[n - 1].1 += 1;
        } else {
            out[n] = (x, 1);
            n += 1;
        }
    }
    n
}

impl PartialEq for Latencies {
    fn eq(&self, o: &Self) -> bool {
        *self.to_histogram() == *o.to_histogram()
    }
}

/// Counters plus the latencies of every attempt.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Stats {
    pub counters: Counters,
    pub latency: Latencies,
}

impl Stats {
    /// An empty `Stats` as a constant, for the per-record path (see `OpenBuckets::stats_at`).
    pub const EMPTY: Stats = Stats {
        counters: Counters {
            attempts: 0,
            events: 0,
            delivered: 0,
            failed: 0,
            dead_lettered: 0,
            on_time: 0,
            retried: 0,
            max_retries: 0,
            latency_sum_us: 0,
        },
        latency: Latencies::Few(FewVec::EMPTY),
    };

    /// A `Stats` in sparse form (long-lived window aggregates).
    pub fn sparse() -> Self {
        Self {
            counters: Counters::default(),
            latency: Latencies::sparse(),
        }
    }

    /// The same statistics with latencies in sparse form, unless the exact form is smaller.
    pub fn compacted(&self) -> Self {
        let latency = match &self.latency {
            Latencies::Few(v) => Latencies::Few(v.clone()),
            other => Latencies::Sparse(other.to_sparse()),
        };
        Self {
            counters: self.counters,
            latency,
        }
    }

    /// The sum of many buckets' stats (a store row, an hour of a window, a batch of
    /// corrections), latencies in sparse form. The latencies are counted into a
    /// per-thread array of HDR counts and read out once: no per-part conversion, sort or
    /// 26 KB histogram per sum, whatever the parts' forms.
    pub fn sum(parts: &[&Stats]) -> Stats {
        let mut counters = Counters::default();
        let latency = SUM_COUNTS.with(|c| {
            let mut c = c.borrow_mut();
            for p in parts {
                counters.add(&p.counters);
                c.add(&p.latency);
            }
            c.take()
        });
        Stats {
            counters,
            latency: Latencies::Sparse(latency),
        }
    }

    #[inline]
    pub fn record(&mut self, ev: &DeliveryEvent, target_us: u64) {
        self.counters.record(ev, target_us);
        self.latency.record(ev.attempt_latency_us());
    }

    pub fn merge(&mut self, o: &Stats) {
        self.counters.add(&o.counters);
        self.latency.merge(&o.latency);
    }

    /// Removes `o`, which must have been merged in before (rolling windows).
    pub fn unmerge(&mut self, o: &Stats) {
        self.counters.sub(&o.counters);
        self.latency.unmerge(&o.latency);
    }

    /// Nearest-rank quantile in milliseconds: the smallest recorded value whose cumulative
    /// count reaches `ceil(q·n)`, reported as the highest value equivalent to it in the
    /// histogram (so never below the exact value, and at most 1/128 above it).
    /// `q_permille` is an integer (950 for P95) so the rank is computed without float error.
    pub fn quantile_ms(&self, q_permille: u64) -> Option<f64> {
        self.latency
            .quantile_us(q_permille)
            .map(|us| us as f64 / 1000.0)
    }

    pub fn histogram_bytes(&self) -> Vec<u8> {
        if let Latencies::Hist(h) = &self.latency {
            let mut out = Vec::with_capacity(256);
            V2Serializer::new()
                .serialize(&**h, &mut out)
                .expect("serializing into a Vec cannot fail");
            return out;
        }
        // Exact and sparse forms: encoded from their (value, count) pairs, without a
        // 26 KB histogram in between (engine/hdr.rs; same bytes).
        match &self.latency {
            Latencies::Sparse(sp) => super::hdr::encode_v2(sp),
            other => super::hdr::encode_v2(&other.to_sparse()),
        }
    }

    pub fn latencies_from_bytes(bytes: &[u8]) -> Result<Latencies, String> {
        if let Some(few) = super::hdr::decode_v2_few(bytes, FEW) {
            return Ok(Latencies::Few(few.into()));
        }
        let h: Histogram<u64> = Deserializer::new()
            .deserialize(&mut std::io::Cursor::new(bytes))
            .map_err(|e| format!("{e:?}"))?;
        // Small buckets come back in the exact form: a scorecard over 10 weeks reads tens of
        // thousands of them, and 26 KB each would be ~0.7 GB. The values are the tops of
        // their HDR buckets, so every reported quantile is unchanged.
        if h.len() <= FEW as u64 {
            let mut few = Vec::with_capacity(h.len() as usize);
            for v in h.iter_recorded() {
                let top = template().highest_equivalent(v.value_iterated_to());
                few.extend(std::iter::repeat_n(top, v.count_at_value() as usize));
            }
            return Ok(Latencies::Few(few.into()));
        }
        // Re-home into our standard bounds so merges never fail on a foreign layout.
        let mut ours = new_histogram();
        ours.add(&h).map_err(|e| format!("{e:?}"))?;
        Ok(Latencies::Hist(Box::new(ours)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sum equals merging its parts one by one into a plain `Stats`, whatever the parts'
    /// forms (exact, sparse, dense, values beyond the histogram's top), and leaves the
    /// thread's counts empty for the next sum.
    #[test]
    fn a_sum_equals_merging_its_parts() {
        let mut parts: Vec<Stats> = Vec::new();
        for i in 0..300u64 {
            let mut s = Stats::default();
            let n = match i % 50 {
                7 => 400, // past FEW: a dense histogram
                13 => 30,
                _ => i % 4,
            };
            for k in 0..n {
                s.counters.attempts += 1;
                s.latency.record(1 + (i * 7_919 + k * 104_729) % 3_000_000);
            }
            if i % 50 == 9 {
                s.latency.record(HIST_MAX_US + 5);
                s.latency = Latencies::Sparse(s.latency.to_sparse());
            }
            parts.push(s);
        }
        assert!(parts
            .iter()
            .any(|p| matches!(p.latency, Latencies::Hist(_))));
        assert!(parts
            .iter()
            .any(|p| matches!(p.latency, Latencies::Sparse(_))));
        let refs: Vec<&Stats> = parts.iter().collect();
        for range in [0..1, 0..3, 5..60, 0..300, 40..41, 7..8] {
            let mut plain = Stats::default();
            for p in &refs[range.clone()] {
                plain.merge(p);
            }
            let sum = Stats::sum(&refs[range.clone()]);
            assert!(matches!(sum.latency, Latencies::Sparse(_)));
            assert_eq!(sum.counters, plain.counters, "{range:?}");
            assert_eq!(
                sum.latency.to_sparse(),
                plain.latency.to_sparse(),
                "{range:?}"
            );
        }
        assert_eq!(Stats::sum(&[]), Stats::default());
    }

    #[test]
    fn quantile_is_nearest_rank_within_one_percent() {
        let mut s = Stats::default();
        let values: Vec<u64> = (1..=1000).map(|i| i * 1000 + 7).collect();
        for v in &values {
            s.latency.record(*v);
        }
        for (q, idx) in [(500, 499), (950, 949), (990, 989)] {
            let exact = values[idx] as f64 / 1000.0;
            let got = s.quantile_ms(q).unwrap();
            assert!(
                got >= exact && got <= exact * 1.01,
                "q{q}: {got} vs {exact}"
            );
        }
        assert_eq!(Stats::default().quantile_ms(500), None);
    }

    #[test]
    fn exact_and_histogram_forms_report_identically() {
        let values: Vec<u64> = (0..FEW as u64)
            .map(|i| 1 + i * i * 7919 % 2_000_000)
            .collect();
        let mut few = Stats::default();
        for v in &values {
            few.latency.record(*v);
        }
        assert!(matches!(few.latency, Latencies::Few(_)));
        let mut dense = Stats {
            latency: Latencies::dense(),
            ..Stats::default()
        };
        dense.merge(&few);
        assert!(matches!(dense.latency, Latencies::Hist(_)));
        for q in [0, 1, 500, 950, 990, 1000] {
            assert_eq!(few.quantile_ms(q), dense.quantile_ms(q), "q{q}");
        }
        assert_eq!(few, dense);
        // Growing past FEW switches form without losing a value.
        few.latency.record(5);
        assert!(matches!(few.latency, Latencies::Hist(_)));
        assert_eq!(few.latency.len(), FEW as u64 + 1);
        dense.unmerge(&Stats {
            counters: Counters::default(),
            latency: Latencies::Few(values[..3].to_vec().into()),
        });
        assert_eq!(dense.latency.len(), FEW as u64 - 3);
    }

    #[test]
    fn histogram_serialization_round_trips() {
        let mut s = Stats::default();
        for v in [1u64, 500, 120_000, 3_599_999_999] {
            s.latency.record(v);
        }
        let back = Stats::latencies_from_bytes(&s.histogram_bytes()).unwrap();
        assert_eq!(back, s.latency);
        assert!(Stats::latencies_from_bytes(b"nonsense").is_err());
    }

    #[test]
    fn sparse_form_reports_like_the_dense_one_through_merge_and_unmerge() {
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            1 + x % 5_000_000
        };
        let parts: Vec<Latencies> = (0..20)
            .map(|i| {
                let mut l = Latencies::default();
                for _ in 0..(i * 7 % 50) {
                    l.record(next());
                }
                l
            })
            .collect();
        let (mut sparse, mut dense) = (Latencies::sparse(), Latencies::dense());
        for p in &parts {
            sparse.merge(p);
            dense.merge(p);
        }
        // Slide out the first half, as a window does.
        for p in &parts[..10] {
            sparse.unmerge(p);
            dense.unmerge(p);
        }
        assert_eq!(sparse.len(), dense.len());
        for q in [1, 500, 900, 950, 990, 999, 1000] {
            assert_eq!(sparse.quantile_us(q), dense.quantile_us(q), "q={q}");
        }
        assert_eq!(sparse, dense);
        let Latencies::Sparse(buckets) = &sparse else {
            panic!("stays sparse")
        };
        assert!(buckets.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 > 0));
        // Everything out: empty again.
        for p in &parts[10..] {
            sparse.unmerge(p);
        }
        assert_eq!(sparse.len(), 0);
    }
}
