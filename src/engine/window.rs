//! Rolling windows built from closed buckets, never from raw events.
//!
//! Each window keeps a running [`Stats`] and a queue of what it added; when an entry
//! slides out of the window it is subtracted (HDR `subtract` is exact, so a window equals
//! the merge of its buckets). Windows up to an hour queue individual buckets; longer ones
//! queue hourly rollups, so a 7-day window holds 168 entries rather than 10 080. The cost:
//! a window longer than an hour evicts whole hours and covers between W and W + 1h.
//! Queue entries are `Arc`s shared by every window of a key.

use super::stats::Stats;
use super::ClosedBucket;
use crate::event::Direction;
use crate::time::{Micros, MICROS_PER_HOUR};
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

/// A rolling window's content for one key, as published.
#[derive(Debug)]
pub struct WindowSummary<'a> {
    pub tenant: &'a str,
    pub platform: &'a str,
    pub direction: Direction,
    pub window_us: Micros,
    pub target_latency_us: u64,
    /// End of the window: the end of the newest closed bucket seen.
    pub end: Micros,
    pub stats: &'a Stats,
}

struct Window {
    len: Micros,
    coarse: bool,
    running: Stats,
    queue: VecDeque<(Micros, Micros, Arc<Stats>)>, // (start, width, stats)
}

struct KeyWindows {
    direction: Direction,
    target_latency_us: u64,
    windows: Vec<Window>,
    /// The hour being rolled up for coarse windows: (hour start, merged buckets).
    hour: Option<(Micros, Stats)>,
}

pub struct WindowSet {
    lengths: Vec<Micros>,
    keys: BTreeMap<(Arc<str>, Arc<str>), KeyWindows>,
    frontier: Micros,
}

impl WindowSet {
    pub fn new(lengths: &[Micros]) -> Self {
        Self {
            lengths: lengths.to_vec(),
            keys: BTreeMap::new(),
            frontier: Micros::MIN,
        }
    }

    pub fn frontier(&self) -> Micros {
        self.frontier
    }

    pub fn push(&mut self, b: &ClosedBucket) {
        let lengths = &self.lengths;
        let kw = self
            .keys
            .entry((b.tenant.clone(), b.platform.clone()))
            .or_insert_with(|| KeyWindows {
                direction: b.direction,
                target_latency_us: b.target_latency_us,
                windows: lengths
                    .iter()
                    .map(|&len| Window {
                        len,
                        coarse: len > MICROS_PER_HOUR,
                        running: Stats::sparse(),
                        queue: VecDeque::new(),
                    })
                    .collect(),
                hour: None,
            });
        // Window entries live up to 7 days: kept sparse (README "Memory layout").
        let compact = b.stats.compacted();
        let shared = Arc::new(compact.clone());
        let hour_start = b.start.div_euclid(MICROS_PER_HOUR) * MICROS_PER_HOUR;
        let any_coarse = kw.windows.iter().any(|w| w.coarse);
        if any_coarse {
            match &mut kw.hour {
                Some((h, acc)) if *h == hour_start => acc.merge(&compact),
                slot => {
                    if let Some((h, acc)) = slot.take() {
                        seal_hour(&mut kw.windows, h, acc);
                    }
                    let mut acc = Stats::sparse();
                    acc.merge(&compact);
                    *slot = Some((hour_start, acc));
                }
            }
        }
        for w in &mut kw.windows {
            w.running.merge(&compact);
            if !w.coarse {
                w.queue.push_back((b.start, b.width_us, shared.clone()));
            }
        }
        let frontier = self.frontier.max(b.start + b.width_us);
        evict_key(kw, frontier);
        self.frontier = frontier;
    }

    /// Slides every window to end at `frontier` (e.g. when time passes with no traffic).
    pub fn advance(&mut self, frontier: Micros) {
        if frontier > self.frontier {
            self.frontier = frontier;
        }
        self.sweep();
    }

    /// Slides every key's windows to the frontier and forgets keys with nothing left in
    /// any window (their series leave the scrape instead of reporting empty windows).
    /// `push` only slides the key it touched — sliding all of them on every push made
    /// 10,000 keys quadratic — so call this before reading every key (each publish).
    pub fn sweep(&mut self) {
        let frontier = self.frontier;
        for kw in self.keys.values_mut() {
            evict_key(kw, frontier);
        }
        self.keys
            .retain(|_, kw| kw.hour.is_some() || kw.windows.iter().any(|w| !w.queue.is_empty()));
    }

    pub fn contains(&self, tenant: &str, platform: &str) -> bool {
        self.keys
            .contains_key(&(Arc::<str>::from(tenant), Arc::<str>::from(platform)))
    }

    /// The longest window's length.
    pub fn longest(&self) -> Micros {
        self.lengths.iter().copied().max().unwrap_or(0)
    }

    /// Every key's every window, in key order.
    pub fn summaries(&self) -> impl Iterator<Item = WindowSummary<'_>> {
        let end = self.frontier;
        self.keys.iter().flat_map(move |((t, p), kw)| {
            kw.windows.iter().map(move |w| WindowSummary {
                tenant: t,
                platform: p,
                direction: kw.direction,
                window_us: w.len,
                target_latency_us: kw.target_latency_us,
                end,
                stats: &w.running,
            })
        })
    }

    pub fn key_count(&self) -> usize {
        self.keys.len()
    }
}

fn evict_key(kw: &mut KeyWindows, frontier: Micros) {
    if let Some((h, _)) = &kw.hour {
        if h + MICROS_PER_HOUR <= frontier {
            if let Some((h, acc)) = kw.hour.take() {
                seal_hour(&mut kw.windows, h, acc);
            }
        }
    }
    for w in &mut kw.windows {
        let from = frontier - w.len;
        while let Some((start, width, _)) = w.queue.front() {
            let out = if w.coarse {
                start + width <= from
            } else {
                *start < from
            };
            if !out {
                break;
            }
            if let Some((_, _, s)) = w.queue.pop_front() {
                w.running.unmerge(&s);
            }
        }
    }
}

fn seal_hour(windows: &mut [Window], hour: Micros, acc: Stats) {
    let acc = Arc::new(acc);
    for w in windows.iter_mut().filter(|w| w.coarse) {
        w.queue.push_back((hour, MICROS_PER_HOUR, acc.clone()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::MICROS_PER_MIN;

    fn bucket(start_min: i64, latency_us: u64) -> ClosedBucket {
        let mut stats = Stats::default();
        stats.counters.attempts = 1;
        stats.counters.events = 1;
        stats.counters.on_time = (start_min % 2) as u64;
        stats.latency.record(latency_us);
        ClosedBucket {
            tenant: "t".into(),
            platform: "p".into(),
            direction: Direction::Inbound,
            start: start_min * MICROS_PER_MIN,
            width_us: MICROS_PER_MIN,
            target_latency_us: 500_000,
            stats,
        }
    }

    #[test]
    fn windows_equal_merge_of_their_buckets() {
        let lens = [5 * MICROS_PER_MIN, 2 * MICROS_PER_HOUR];
        let mut ws = WindowSet::new(&lens);
        let mut all = Vec::new();
        for m in 0..300 {
            if m % 7 == 3 {
                continue; // gaps: minutes with no traffic
            }
            let b = bucket(m, 1000 + m as u64 * 37);
            ws.push(&b);
            all.push(b);
            let frontier = ws.frontier();
            for s in ws.summaries() {
                let from = frontier - s.window_us;
                let from = if s.window_us > MICROS_PER_HOUR {
                    // whole hours: covers [W, W + 1h)
                    from.div_euclid(MICROS_PER_HOUR) * MICROS_PER_HOUR
                } else {
                    from
                };
                let mut expect = Stats::default();
                for b in all.iter().filter(|b| b.start >= from) {
                    expect.merge(&b.stats);
                }
                assert_eq!(s.stats, &expect, "window {} at minute {m}", s.window_us);
            }
        }
        // Time passes with no traffic: the 5m window empties.
        ws.advance(ws.frontier() + 10 * MICROS_PER_MIN);
        let five = ws.summaries().find(|s| s.window_us == lens[0]).unwrap();
        assert_eq!(five.stats.counters.events, 0);
        assert_eq!(five.stats.latency.len(), 0);
    }

    #[test]
    fn a_key_silent_longer_than_the_longest_window_is_forgotten() {
        let lens = [5 * MICROS_PER_MIN, 2 * MICROS_PER_HOUR];
        let mut ws = WindowSet::new(&lens);
        ws.push(&bucket(0, 1000));
        let mut other = bucket(1, 1000);
        other.tenant = "u".into();
        ws.push(&other);
        assert_eq!(ws.key_count(), 2);
        // "u" keeps sending; "t" went quiet at minute 0.
        for m in 2..=180 {
            let mut b = bucket(m, 1000);
            b.tenant = "u".into();
            ws.push(&b);
            ws.sweep();
            let t_alive = ws.summaries().any(|s| s.tenant == "t");
            // Hourly rollups: minute 0 leaves the 2 h window with its hour [0, 60), when
            // the frontier (end of minute m) reaches 180.
            assert_eq!(t_alive, m < 179, "minute {m}");
        }
        assert_eq!(ws.key_count(), 1);
    }
}
