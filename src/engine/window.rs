//! Rolling windows built from closed buckets, never from raw events.
//!
//! Each window keeps a running [`Stats`] and a queue of what it added; when an entry
//! slides out of the window it is subtracted (HDR `subtract` is exact, so a window equals
//! the merge of its buckets). Windows up to an hour queue individual buckets; longer ones
//! queue hourly rollups; beyond a day, a window longer than a day folds its hourly entries
//! into six-hour blocks, so a 7-day window holds ≈ 24 + 24 entries rather than 10 080
//! buckets or 168 hours (what keeps 10,000 keys within the memory target). The cost: a
//! window up to a day evicts whole hours and covers between W and W + 1h; a longer one
//! evicts whole six-hour blocks (an hour leaves with its block, folded yet or not) and
//! covers between W and W + 6h. Either way what a window holds is a function of its end
//! alone, so windows of instances sharing a key add up. Queue entries are `Arc`s shared
//! by every window of a key.

use super::stats::Stats;
use super::ClosedBucket;
use crate::event::Direction;
use crate::time::{Micros, MICROS_PER_HOUR};

const DAY: Micros = 24 * MICROS_PER_HOUR;
/// What hourly entries older than a day fold into, in windows longer than a day.
const BLOCK: Micros = 6 * MICROS_PER_HOUR;
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

impl Window {
    /// When an entry (start, width) of this coarse window leaves it: at its end, or, in a
    /// window longer than a day, at the end of its six-hour block whether or not its hour
    /// has been folded into the block yet. So what a window holds depends on the frontier
    /// alone, not on the commits that led there, and instances that split a key's
    /// partitions between them add up to one instance's window.
    fn entry_end(&self, start: Micros, width: Micros) -> Micros {
        if self.len > DAY {
            start.div_euclid(BLOCK) * BLOCK + BLOCK
        } else {
            start + width
        }
    }
}

struct KeyWindows {
    direction: Direction,
    target_latency_us: u64,
    windows: Vec<Window>,
    /// The hour being rolled up for coarse windows: (hour start, merged buckets).
    hour: Option<(Micros, Stats)>,
    /// The end of the newest bucket pushed in order: a bucket starting before it (another
    /// partition's commit of the same event time) goes where it belongs in each queue.
    end: Micros,
}

impl KeyWindows {
    fn new(lengths: &[Micros], first: &ClosedBucket) -> Self {
        KeyWindows {
            direction: first.key.direction,
            target_latency_us: first.key.target_latency_us,
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
            end: Micros::MIN,
        }
    }
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
        let since = self.frontier;
        self.push_key_batch(&b.key.tenant, &b.key.platform, [b], since, Micros::MIN);
    }

    /// Pushes one key's buckets of a commit, in the commit's (start) order, under the key
    /// (`tenant`, `platform`); `since` is the frontier before the commit and `batch_end`
    /// the end of its newest bucket. After the commit, every window is what pushing its
    /// buckets one by one would have made (for a window longer than a day, provided it
    /// is longer than a day and six hours, as the 7-day default is: shorter ones could
    /// fold a different set of hours into six-hour blocks). What a commit costs is per key and per hour, not per bucket,
    /// because a backfill commits hours of event time at once:
    /// - no window takes a bucket it would evict again before the commit is over: a
    ///   window up to an hour long one that starts before `end − len`, a longer one one
    ///   whose hour (or, beyond a day, six-hour block) ends by `end − len`, where `end` is
    ///   the later of `batch_end` and the frontier: adding and subtracting cancel exactly,
    ///   so a backlog of weeks costs its last week, not its weeks;
    /// - longer windows and the hourly rollup take each hour's buckets merged into one;
    /// - a bucket that starts before the end of what the key already holds (the same event
    ///   time committed earlier by another partition) is added where it belongs, as a
    ///   correction is ([`WindowSet::correct`]); appended, it would sit behind newer
    ///   entries and never leave the window.
    pub fn push_key_batch<'b>(
        &mut self,
        tenant: &Arc<str>,
        platform: &Arc<str>,
        buckets: impl IntoIterator<Item = &'b ClosedBucket>,
        since: Micros,
        batch_end: Micros,
    ) {
        let key_end = self
            .keys
            .get(&(tenant.clone(), platform.clone()))
            .map_or(Micros::MIN, |kw| kw.end);
        let mut behind = Vec::new();
        let in_order = buckets.into_iter().filter(|b| {
            let ahead = b.start >= key_end;
            if !ahead {
                behind.push(*b);
            }
            ahead
        });
        self.push_in_order(tenant, platform, in_order, since, batch_end);
        self.correct_key_batch(tenant, platform, &behind);
    }

    /// [`WindowSet::push_key_batch`] of buckets that start at or after the end of what
    /// the key holds.
    fn push_in_order<'b>(
        &mut self,
        tenant: &Arc<str>,
        platform: &Arc<str>,
        buckets: impl IntoIterator<Item = &'b ClosedBucket>,
        since: Micros,
        batch_end: Micros,
    ) {
        let end = self.frontier.max(batch_end);
        // A bucket whose last window entry (its hour, or beyond a day its six-hour block)
        // ends by `end − longest` is out of every window at `end`.
        let longest = self.longest();
        let cut = end.saturating_sub(longest);
        let needed = |b: &ClosedBucket| {
            let hour = b.start.div_euclid(MICROS_PER_HOUR) * MICROS_PER_HOUR;
            let last_entry_end = if longest > DAY {
                hour.div_euclid(BLOCK) * BLOCK + BLOCK
            } else {
                hour + MICROS_PER_HOUR
            };
            last_entry_end > cut
        };
        let buckets: Vec<&ClosedBucket> = buckets.into_iter().filter(|b| needed(b)).collect();
        let Some(first) = buckets.first() else {
            return;
        };
        let lengths = &self.lengths;
        let kw = self
            .keys
            .entry((tenant.clone(), platform.clone()))
            .or_insert_with(|| KeyWindows::new(lengths, first));
        let any_coarse = kw.windows.iter().any(|w| w.coarse);
        let mut frontier = since;
        // This commit's buckets of one hour, merged once the hour's last is seen: (hour
        // start, its first bucket's index, the frontier before that bucket).
        let mut segment: Option<(Micros, usize, Micros)> = None;
        // The buckets each short window takes, merged into its running aggregate at the
        // end as sums (the same newest buckets for every short window): no eviction
        // before then can remove them, as they start after `end − len`.
        let mut taken: Vec<Vec<usize>> = vec![Vec::new(); kw.windows.len()];
        // The first of the buckets that start where the current one does (several
        // partitions' buckets of one minute, in a round's commits).
        let mut run_from = 0;
        for (k, b) in buckets.iter().enumerate() {
            if k > 0 && buckets[k - 1].start != b.start {
                run_from = k;
            }
            // Entries of the short windows live up to an hour and share one sparse copy
            // (see the module doc), made only if one of them takes the buckets: one entry
            // per start, however many partitions' buckets begin there, as their
            // corrections of one another would leave it.
            if buckets.get(k + 1).is_none_or(|next| next.start != b.start) {
                let run = &buckets[run_from..=k];
                let mut shared: Option<Arc<Stats>> = None;
                for (w, taken) in kw.windows.iter_mut().zip(&mut taken) {
                    if w.coarse || b.start < end.saturating_sub(w.len) {
                        continue;
                    }
                    let entry = shared.get_or_insert_with(|| {
                        Arc::new(match run {
                            [one] => one.stats.compacted(),
                            _ => sum_of(run),
                        })
                    });
                    w.queue.push_back((b.start, b.width_us, entry.clone()));
                    taken.extend(run_from..=k);
                }
            }
            if any_coarse {
                let hour = b.start.div_euclid(MICROS_PER_HOUR) * MICROS_PER_HOUR;
                match segment {
                    Some((h, _, _)) if h == hour => {}
                    _ => {
                        if let Some((h, from, before)) = segment.take() {
                            add_hour_part(kw, h, sum_of(&buckets[from..k]), before);
                        }
                        segment = Some((hour, k, frontier));
                    }
                }
            }
            frontier = frontier.max(b.start + b.width_us);
            kw.end = kw.end.max(b.start + b.width_us);
        }
        if let Some((h, from, before)) = segment {
            add_hour_part(kw, h, sum_of(&buckets[from..]), before);
        }
        let mut sums = BatchSums {
            buckets: &buckets,
            runs: Vec::new(),
        };
        for (w, taken) in kw.windows.iter_mut().zip(&taken) {
            sums.merge_into(&mut w.running, taken);
        }
        evict_key(kw, frontier);
        self.frontier = self.frontier.max(frontier);
    }

    /// Adds a correction — records counted for a bucket after it closed — to every window
    /// of its key that still covers the bucket, and to the queue entry holding the bucket
    /// (so the correction leaves the window with it). A window the bucket has already
    /// slid out of is unchanged.
    pub fn correct(&mut self, tenant: &Arc<str>, platform: &Arc<str>, b: &ClosedBucket) {
        self.correct_key_batch(tenant, platform, &[b]);
    }

    /// [`WindowSet::correct`] for buckets of one key in start order, with what correcting
    /// them one by one would make. Each bucket goes into its minute entry and a longer
    /// window's hour entry takes the hour's buckets, but a window's running aggregate and
    /// the hourly rollup take the batch's buckets summed, once: they hold hundreds of HDR
    /// buckets, and merging each correction of a dense minute into them rebuilt them per
    /// bucket. (Partitions committing the same event time one after the other make most
    /// of a commit's buckets corrections.)
    fn correct_key_batch(
        &mut self,
        tenant: &Arc<str>,
        platform: &Arc<str>,
        buckets: &[&ClosedBucket],
    ) {
        let mut rest = buckets;
        while !rest.is_empty() {
            // A bucket not yet behind the frontier is pushed in order, which moves the
            // frontier; those before it are corrected against the frontier as it stands.
            let frontier = self.frontier;
            let behind = rest
                .iter()
                .position(|b| b.start + b.width_us > frontier)
                .unwrap_or(rest.len());
            self.correct_behind(tenant, platform, &rest[..behind]);
            let Some(b) = rest.get(behind) else {
                break;
            };
            self.push_in_order(tenant, platform, [*b], frontier, Micros::MIN);
            rest = &rest[behind + 1..];
        }
    }

    /// [`WindowSet::correct_key_batch`] of buckets that end by the frontier.
    fn correct_behind(
        &mut self,
        tenant: &Arc<str>,
        platform: &Arc<str>,
        buckets: &[&ClosedBucket],
    ) {
        let Some(first) = buckets.first() else {
            return;
        };
        let frontier = self.frontier;
        let lengths = &self.lengths;
        let kw = self
            .keys
            .entry((tenant.clone(), platform.clone()))
            .or_insert_with(|| KeyWindows::new(lengths, first));
        let hour_of = |b: &ClosedBucket| b.start.div_euclid(MICROS_PER_HOUR) * MICROS_PER_HOUR;
        let open_hour = kw.hour.as_ref().map(|(h, _)| *h);
        let mut sums = BatchSums {
            buckets,
            runs: Vec::new(),
        };
        let mut taken: Vec<usize> = Vec::with_capacity(buckets.len());
        if let Some((h, acc)) = &mut kw.hour {
            taken.extend((0..buckets.len()).filter(|&i| hour_of(buckets[i]) == *h));
            sums.merge_into(acc, &taken);
        }
        for w in &mut kw.windows {
            let from = frontier.saturating_sub(w.len);
            taken.clear();
            if w.coarse {
                // Buckets of one hour go into one entry (the hour's, or the six-hour block
                // it was folded into): summed, once.
                let mut k = 0;
                while k < buckets.len() {
                    let hour = hour_of(buckets[k]);
                    let end = k + buckets[k..]
                        .iter()
                        .take_while(|b| hour_of(b) == hour)
                        .count();
                    if open_hour == Some(hour) {
                        taken.extend(k..end);
                    } else if w.entry_end(hour, MICROS_PER_HOUR) > from {
                        let start = buckets[k].start;
                        let at = w
                            .queue
                            .iter()
                            .rposition(|(s, wd, _)| *s <= start && start < s + wd);
                        let i = at.unwrap_or_else(|| {
                            let i = w.queue.partition_point(|(s, _, _)| *s < hour);
                            w.queue
                                .insert(i, (hour, MICROS_PER_HOUR, Arc::new(Stats::sparse())));
                            i
                        });
                        let entry = Arc::make_mut(&mut w.queue[i].2);
                        if end - k >= SUMMED_RUN {
                            entry.merge(sums.sum(k, end));
                        } else {
                            for b in &buckets[k..end] {
                                entry.merge(&b.stats);
                            }
                        }
                        taken.extend(k..end);
                    }
                    k = end;
                }
            } else {
                for (k, b) in buckets.iter().enumerate() {
                    if b.start < from {
                        continue;
                    }
                    match w.queue.iter().rposition(|(s, _, _)| *s == b.start) {
                        Some(i) => Arc::make_mut(&mut w.queue[i].2).merge(&b.stats),
                        None => {
                            let i = w.queue.partition_point(|(s, _, _)| *s < b.start);
                            w.queue
                                .insert(i, (b.start, b.width_us, Arc::new(b.stats.compacted())));
                        }
                    }
                    taken.push(k);
                }
            }
            sums.merge_into(&mut w.running, &taken);
        }
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

    /// Takes the key's own `Arc`s: building them from `&str` allocated twice per key on
    /// every publish.
    pub fn contains(&self, key: &(Arc<str>, Arc<str>)) -> bool {
        self.keys.contains_key(key)
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

/// Buckets of one hour that go into a longer window's entry summed rather than one by one
/// (a backfill's hour holds a bucket or two: summing them would cost more than it saves).
const SUMMED_RUN: usize = 4;

/// A batch of corrections' buckets summed for the aggregates and entries that take them
/// (see [`WindowSet::correct_key_batch`]). Aggregates mostly take the same buckets — all
/// of them, or the newest (a window takes a bucket if it starts late enough, and the
/// batch is in start order) — and the longer windows' entries take the same hours, so
/// the sum of each run of buckets is made once: a sum of dense minutes builds a
/// histogram, and merging each minute alone into a sparse entry converted it again for
/// every window.
struct BatchSums<'a, 'b> {
    buckets: &'a [&'b ClosedBucket],
    /// (first bucket of a run, the one after its last, the run's sum), in that order
    runs: Vec<(usize, usize, Stats)>,
}

impl BatchSums<'_, '_> {
    /// The sum of `buckets[from..to]` (not empty).
    fn sum(&mut self, from: usize, to: usize) -> &Stats {
        if to - from == 1 {
            return &self.buckets[from].stats;
        }
        // Kept in order: a backfill's batch has a run for each of hundreds of hours.
        let at = match self
            .runs
            .binary_search_by_key(&(from, to), |(f, t, _)| (*f, *t))
        {
            Ok(at) => at,
            Err(at) => {
                let parts: Vec<&Stats> = self.buckets[from..to].iter().map(|b| &b.stats).collect();
                self.runs.insert(at, (from, to, Stats::sum(&parts)));
                at
            }
        };
        &self.runs[at].2
    }

    /// Merges the buckets at `taken` (increasing indexes) into `into`.
    fn merge_into(&mut self, into: &mut Stats, taken: &[usize]) {
        match taken {
            [] => {}
            [first, .., last] if last - first + 1 == taken.len() => {
                into.merge(self.sum(*first, last + 1))
            }
            [one] => into.merge(&self.buckets[*one].stats),
            some => {
                let parts: Vec<&Stats> = some.iter().map(|&i| &self.buckets[i].stats).collect();
                into.merge(&Stats::sum(&parts));
            }
        }
    }
}

/// Buckets summed into one sparse entry (an hour's, or a minute's of several partitions).
fn sum_of(buckets: &[&ClosedBucket]) -> Stats {
    let parts: Vec<&Stats> = buckets.iter().map(|b| &b.stats).collect();
    Stats::sum(&parts)
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
        let from = frontier.saturating_sub(w.len);
        while let Some((start, width, _)) = w.queue.front() {
            let out = if w.coarse {
                w.entry_end(*start, *width) <= from
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

/// Adds part of hour `hour` (buckets merged) to the longer windows and the hour's rollup,
/// sealing the rollup of an earlier hour first. Windows slide to `frontier` (the end of
/// the buckets before this part) first, so that entries leave in the same order as when
/// buckets are pushed one by one.
fn add_hour_part(kw: &mut KeyWindows, hour: Micros, part: Stats, frontier: Micros) {
    evict_key(kw, frontier);
    for w in kw.windows.iter_mut().filter(|w| w.coarse) {
        w.running.merge(&part);
    }
    match &mut kw.hour {
        Some((h, acc)) if *h == hour => acc.merge(&part),
        slot => {
            if let Some((h, acc)) = slot.take() {
                seal_hour(&mut kw.windows, h, acc);
            }
            *slot = Some((hour, part));
        }
    }
}

fn seal_hour(windows: &mut [Window], hour: Micros, acc: Stats) {
    let acc = Arc::new(acc);
    for w in windows.iter_mut().filter(|w| w.coarse) {
        w.queue.push_back((hour, MICROS_PER_HOUR, acc.clone()));
        if w.len > DAY {
            fold_old_hours(w, hour + MICROS_PER_HOUR - DAY);
        }
    }
}

/// Folds the hourly entries of six-hour blocks that ended by `before` into one entry per
/// block. The running aggregate is unchanged (the block is the merge of its hours), and
/// eviction then removes the block as a whole.
fn fold_old_hours(w: &mut Window, before: Micros) {
    // Blocks come first: start at the first hourly entry rather than scan the blocks of a
    // 7-day window on every seal. Should a late hour ever sit among the blocks, it just
    // stays an hourly entry.
    let mut i = w.queue.partition_point(|e| e.1 != MICROS_PER_HOUR);
    while i < w.queue.len() {
        let (start, width, _) = w.queue[i];
        if width != MICROS_PER_HOUR {
            i += 1;
            continue;
        }
        let block = start.div_euclid(BLOCK) * BLOCK;
        if block + BLOCK > before {
            break;
        }
        let mut j = i;
        let mut acc = Stats::sparse();
        while let Some((s, wd, st)) = w.queue.get(j) {
            if *wd != MICROS_PER_HOUR || s.div_euclid(BLOCK) * BLOCK != block {
                break;
            }
            acc.merge(st);
            j += 1;
        }
        w.queue.drain(i + 1..j);
        w.queue[i] = (block, BLOCK, Arc::new(acc));
        i += 1;
    }
    if w.queue.capacity() > 2 * w.queue.len() + 8 {
        w.queue.shrink_to_fit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Counters;
    use crate::time::MICROS_PER_MIN;

    /// Each window's length and content, in the set's order.
    fn summaries(ws: &WindowSet) -> Vec<(Micros, Stats)> {
        ws.summaries()
            .map(|s| (s.window_us, s.stats.clone()))
            .collect()
    }

    fn bucket(start_min: i64, latency_us: u64) -> ClosedBucket {
        let mut stats = Stats::default();
        stats.counters.attempts = 1;
        stats.counters.events = 1;
        stats.counters.on_time = (start_min % 2) as u64;
        stats.latency.record(latency_us);
        ClosedBucket {
            key: std::sync::Arc::new(crate::engine::KeyInfo {
                tenant: "t".into(),
                platform: "p".into(),
                direction: Direction::Inbound,
                target_latency_us: 500_000,
            }),
            start: start_min * MICROS_PER_MIN,
            width_us: MICROS_PER_MIN,
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
    fn pushing_a_commit_per_key_equals_pushing_bucket_by_bucket() {
        // Up to an hour, a day, and longer than a day (six-hour blocks).
        let lens = [
            5 * MICROS_PER_MIN,
            MICROS_PER_HOUR,
            3 * MICROS_PER_HOUR,
            DAY,
            3 * DAY,
        ];
        let (mut one, mut batched) = (WindowSet::new(&lens), WindowSet::new(&lens));
        // Two keys interleaved in start order, with gaps, over 4 days (the 3-day window
        // slides for a day).
        let all: Vec<ClosedBucket> = (0..4 * 24 * 60)
            .filter(|m| m % 5 != 2 && !(3000..3200).contains(m))
            .flat_map(|m| {
                let mut u = bucket(m, 2000 + (m as u64 * 13) % 9000);
                std::sync::Arc::make_mut(&mut u.key).tenant = "u".into();
                let mut t = bucket(m, 1000 + (m as u64 * 91) % 7000);
                if m % 97 < 3 {
                    // Some dense buckets (an HDR histogram), alone or in a row.
                    let n = crate::engine::stats::FEW as u64 + 22;
                    for i in 0..n {
                        t.stats.latency.record(500 + i * 37);
                    }
                    t.stats.counters.attempts += n;
                    assert!(matches!(
                        t.stats.latency,
                        crate::engine::stats::Latencies::Hist(_)
                    ));
                }
                [t].into_iter().chain((m % 3 != 0).then_some(u))
            })
            .collect();
        // Commits of uneven spans, as a backfill's are.
        let mut rest = &all[..];
        for size in [1, 397, 40, 1500, 2].into_iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let (batch, after) = rest.split_at(size.min(rest.len()));
            rest = after;
            let end = batch.iter().map(|b| b.start + b.width_us).max().unwrap();
            for b in batch {
                one.push(b);
            }
            let since = batched.frontier();
            for tenant in ["t", "u"] {
                let of_key = batch.iter().filter(|b| &*b.key.tenant == tenant);
                batched.push_key_batch(&tenant.into(), &"p".into(), of_key, since, end);
            }
            one.sweep();
            batched.sweep();
            let summaries = |ws: &WindowSet| -> Vec<_> {
                ws.summaries()
                    .map(|s| (s.tenant.to_string(), s.window_us, s.stats.clone()))
                    .collect()
            };
            assert_eq!(
                summaries(&one),
                summaries(&batched),
                "commit ending at {end}"
            );
        }
    }

    /// The sums a batch of corrections merges equal merging its buckets one by one,
    /// whichever of them an aggregate takes: a run (made once, then reused) or not.
    #[test]
    fn a_batch_sum_equals_merging_its_buckets() {
        let all: Vec<ClosedBucket> = (0..5)
            .map(|m| {
                let mut b = bucket(m, 700 + m as u64 * 91);
                for i in 0..(m as u64 * 9) {
                    b.stats.latency.record(300 + i * 17);
                }
                b
            })
            .collect();
        let buckets: Vec<&ClosedBucket> = all.iter().collect();
        let mut sums = BatchSums {
            buckets: &buckets,
            runs: Vec::new(),
        };
        for taken in [
            &[][..],
            &[3],
            &[1, 2, 3, 4],
            &[0, 2, 4],
            &[1, 2],
            &[1, 2, 3, 4],
            &[0, 1, 2, 3, 4],
            &[1, 2],
        ] {
            let (mut summed, mut one_by_one) = (Stats::sparse(), Stats::sparse());
            sums.merge_into(&mut summed, taken);
            for &i in taken {
                one_by_one.merge(&all[i].stats);
            }
            assert_eq!(summed, one_by_one, "taking {taken:?}");
        }
        assert_eq!(sums.runs.len(), 3, "each run summed once");
    }

    /// Partitions that commit the same event time one after the other make most of a
    /// commit's buckets corrections (they start before what the key holds). Corrected
    /// as a batch, the windows are what correcting each bucket alone makes: dense and
    /// sparse buckets, in the open hour, in sealed hours and in six-hour blocks.
    #[test]
    fn a_commit_behind_the_key_equals_its_buckets_corrected_one_by_one() {
        let lens = [5 * MICROS_PER_MIN, MICROS_PER_HOUR, DAY, 7 * DAY];
        let (mut one, mut batched) = (WindowSet::new(&lens), WindowSet::new(&lens));
        let partition = |p: i64| -> Vec<ClosedBucket> {
            (0..3 * 24 * 60)
                .filter(|m| (m + p) % 3 != 0)
                .map(|m| {
                    let mut b = bucket(m, 900 + ((m * (p + 3)) as u64 * 29) % 8000);
                    let extra = if m % 11 == p {
                        crate::engine::stats::FEW as u64 + 5
                    } else {
                        (m % 20) as u64
                    };
                    for i in 0..extra {
                        b.stats.latency.record(400 + i * 53 + p as u64);
                    }
                    b.stats.counters.attempts += extra;
                    b
                })
                .collect()
        };
        let parts = [partition(0), partition(1), partition(2)];
        let (t, p): (Arc<str>, Arc<str>) = ("t".into(), "p".into());
        // Each partition commits spans of its own, lagging the others by turns.
        let spans = [
            (0, 700),
            (1, 300),
            (2, 1200),
            (0, 2900),
            (1, 1900),
            (2, 2600),
            (1, 3000),
        ];
        let mut done = [0usize; 3];
        for (i, upto) in spans {
            let upto = parts[i].partition_point(|b| b.start < upto * MICROS_PER_MIN);
            let commit = &parts[i][done[i]..upto];
            done[i] = upto;
            let Some(end) = commit.last().map(|b| b.start + b.width_us) else {
                continue;
            };
            let since = batched.frontier();
            batched.push_key_batch(&t, &p, commit, since, end);
            for b in commit {
                let since = one.frontier();
                one.push_key_batch(&t, &p, [b], since, b.start + b.width_us);
            }
            assert_eq!(
                summaries(&one),
                summaries(&batched),
                "commit of partition {i} up to minute {upto}"
            );
        }
    }

    /// Instances each holding part of a key's buckets (round robin partitions give each
    /// instance some of every minute's records), committed in spans of their own after a
    /// backlog, add up to one instance holding all of them, in every window, once all end
    /// at the same minute. A key's hours are folded into six-hour blocks when a later hour
    /// of the key is sealed, which each instance does at its own times: the windows must
    /// not depend on it.
    #[test]
    fn windows_of_instances_sharing_a_key_add_up_to_one() {
        let lens = [5 * MICROS_PER_MIN, MICROS_PER_HOUR, DAY, 7 * DAY];
        // Traffic by day and night over 20 days: busy hours hold a record most minutes,
        // quiet ones a few an hour.
        let mut seed = 12345u64;
        let mut next = || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            seed >> 33
        };
        let mut records: Vec<i64> = Vec::new();
        for m in 0..20 * 24 * 60i64 {
            let busy = (8 * 60..18 * 60).contains(&(m % (24 * 60)));
            let p = if busy { 70 } else { 4 };
            if next() % 100 < p {
                records.push(m);
            }
        }
        // Round robin over four partitions; three instances own them as (0), (1, 2), (3).
        let mut partitions: Vec<Vec<ClosedBucket>> = vec![Vec::new(); 4];
        for (i, &m) in records.iter().enumerate() {
            partitions[i % 4].push(bucket(m, 1000 + (m as u64 * 37) % 9000));
        }
        let all: Vec<ClosedBucket> = records
            .iter()
            .map(|&m| bucket(m, 1000 + (m as u64 * 37) % 9000))
            .collect();
        let commit = |ws: &mut WindowSet, batch: &[ClosedBucket]| {
            if batch.is_empty() {
                return;
            }
            let end = batch.iter().map(|b| b.start + b.width_us).max().unwrap();
            let since = ws.frontier();
            ws.push_key_batch(&"t".into(), &"p".into(), batch.iter(), since, end);
        };
        // The lone instance: the backlog (40 %) in one commit, then spans of 50 buckets.
        let mut one = WindowSet::new(&lens);
        let (backlog, rest) = all.split_at(all.len() * 4 / 10);
        commit(&mut one, backlog);
        for c in rest.chunks(50) {
            commit(&mut one, c);
        }
        // The three: their partitions' part of the backlog, then spans of their own. The
        // middle one reads partition 1 to its end before partition 2 (a lagging partition:
        // its buckets land behind the frontier, where they belong).
        let last_backlog = backlog.last().unwrap().start;
        let rest_of = |p: usize| {
            let cut = partitions[p].partition_point(|b| b.start <= last_backlog);
            (&partitions[p][..cut], &partitions[p][cut..])
        };
        let mut three: Vec<WindowSet> = (0..3).map(|_| WindowSet::new(&lens)).collect();
        for (k, owned) in [vec![0], vec![1, 2], vec![3]].into_iter().enumerate() {
            for &p in &owned {
                commit(&mut three[k], rest_of(p).0);
            }
            for &p in &owned {
                for c in rest_of(p).1.chunks([3, 17, 400][k]) {
                    commit(&mut three[k], c);
                }
            }
        }
        let end = one.frontier();
        one.advance(end);
        for ws in &mut three {
            ws.advance(end);
        }
        let sums: Vec<Vec<Counters>> = three
            .iter()
            .map(|ws| ws.summaries().map(|s| s.stats.counters).collect())
            .collect();
        for (i, w1) in one.summaries().enumerate() {
            let mut sum = Counters::default();
            for s in &sums {
                sum.add(&s[i]);
            }
            assert_eq!(
                sum,
                w1.stats.counters,
                "window of {} min",
                w1.window_us / MICROS_PER_MIN
            );
        }
    }

    #[test]
    fn a_window_longer_than_a_day_is_the_merge_of_its_buckets_after_an_hour_boundary() {
        // 40 h: hours older than a day fold into six-hour blocks; the window then covers
        // between 40 h and 40 h + 6 h, starting at an hour boundary.
        let len = 40 * MICROS_PER_HOUR;
        let mut ws = WindowSet::new(&[len]);
        let mut all = Vec::new();
        let mut entries_seen = 0;
        for m in 0..(60 * 60) {
            if m % 11 == 5 {
                continue;
            }
            let b = bucket(m, 1000 + (m as u64 * 53) % 5000);
            ws.push(&b);
            all.push(b);
            if m % 97 != 0 && m != 60 * 60 - 1 {
                continue;
            }
            let frontier = ws.frontier();
            let s = ws.summaries().next().unwrap();
            let lowest = (frontier - len - BLOCK).div_euclid(MICROS_PER_HOUR) * MICROS_PER_HOUR;
            let found = (0..=7).any(|h| {
                let from = lowest + h * MICROS_PER_HOUR;
                let mut expect = Stats::default();
                for b in all.iter().filter(|b| b.start >= from) {
                    expect.merge(&b.stats);
                }
                from <= frontier - len && s.stats == &expect
            });
            assert!(
                found,
                "minute {m}: not the merge of the buckets after any boundary in [W, W + 6h]"
            );
            let kw = ws.keys.values().next().unwrap();
            entries_seen = entries_seen.max(kw.windows[0].queue.len());
        }
        // Hourly entries only: 41. Folded: the last day's 24 hours, up to 5 hours of a block
        // not yet a day old, and up to 4 six-hour blocks.
        assert!(entries_seen <= 24 + 5 + 4, "{entries_seen} entries");
    }

    /// A backlog of ten weeks read from two partitions, each committing its share of the
    /// same key's event time in one commit (as a restart after downtime does): every window
    /// holds only its own span of event time, whichever partition commits first.
    #[test]
    fn a_backlog_committed_by_several_partitions_leaves_each_window_its_span() {
        let lens = [5 * MICROS_PER_MIN, MICROS_PER_HOUR, DAY, 7 * DAY];
        let mut ws = WindowSet::new(&lens);
        let minutes = 10 * 7 * 24 * 60;
        // Partition 0 has the even minutes, partition 1 the odd ones (round-robin keying).
        let part = |p: i64| -> Vec<ClosedBucket> {
            (0..minutes)
                .filter(|m| m % 2 == p)
                .map(|m| bucket(m, 1000 + (m as u64 * 7) % 3000))
                .collect()
        };
        let (p0, p1) = (part(0), part(1));
        let end = minutes * MICROS_PER_MIN;
        for commit in [&p0, &p1] {
            let since = ws.frontier();
            ws.push_key_batch(&"t".into(), &"p".into(), commit.iter(), since, end);
        }
        ws.sweep();
        let events_since = |from: Micros| -> u64 {
            p0.iter()
                .chain(&p1)
                .filter(|b| b.start >= from)
                .map(|b| b.stats.counters.events)
                .sum()
        };
        for s in ws.summaries() {
            let got = s.stats.counters.events;
            let exact = events_since(end - s.window_us);
            // Coarse windows cover up to an hour (a day or less) or six hours more.
            let slack = match s.window_us {
                w if w <= MICROS_PER_HOUR => 0,
                w if w <= DAY => MICROS_PER_HOUR,
                _ => BLOCK,
            };
            let most = events_since(end - s.window_us - slack);
            assert!(
                (exact..=most).contains(&got),
                "window {} h: {got} events, true {exact}..={most}",
                s.window_us / MICROS_PER_HOUR
            );
            assert_eq!(
                s.stats.latency.len(),
                got,
                "latencies leave with their counts"
            );
        }
    }

    /// Partitions read side by side commit the same event time in one round; their
    /// buckets pushed together in start order make the windows their commits pushed one
    /// after another make (the later ones then mostly as corrections).
    #[test]
    fn a_round_of_partitions_pushed_together_equals_pushed_one_by_one() {
        let lens = [5 * MICROS_PER_MIN, MICROS_PER_HOUR, DAY, 7 * DAY];
        let (mut apart, mut together) = (WindowSet::new(&lens), WindowSet::new(&lens));
        // Four partitions, each with most minutes of 30 hours, some dense.
        let part = |p: u64| -> Vec<ClosedBucket> {
            (0..30 * 60)
                .filter(|m| (m + p as i64) % 7 != 0)
                .map(|m| {
                    let mut b = bucket(m, 900 + (m as u64 * 31 + p * 17) % 4000);
                    let n = if (m as u64 + p).is_multiple_of(11) {
                        40
                    } else {
                        p
                    };
                    for i in 0..n {
                        b.stats.latency.record(400 + i * 23 + p);
                    }
                    b.stats.counters.attempts += n;
                    b
                })
                .collect()
        };
        let parts: Vec<Vec<ClosedBucket>> = (0..4).map(part).collect();
        // Rounds of uneven event-time spans, each partition committing its share.
        let mut from = 0;
        for span in [7, 300, 45, 61, 600, 1, 786].map(|m| m * MICROS_PER_MIN) {
            let to = from + span;
            let shares: Vec<Vec<&ClosedBucket>> = parts
                .iter()
                .map(|p| p.iter().filter(|b| (from..to).contains(&b.start)).collect())
                .collect();
            // Each commit ends at its newest bucket, as a commit's telemetry does.
            let end_of = |bs: &[&ClosedBucket]| bs.iter().map(|b| b.start + b.width_us).max();
            for share in &shares {
                let Some(end) = end_of(share) else { continue };
                let since = apart.frontier();
                apart.push_key_batch(&"t".into(), &"p".into(), share.iter().copied(), since, end);
            }
            let mut round: Vec<&ClosedBucket> = shares.concat();
            round.sort_by_key(|b| b.start);
            if let Some(end) = end_of(&round) {
                let since = together.frontier();
                together.push_key_batch(&"t".into(), &"p".into(), round, since, end);
            }
            apart.sweep();
            together.sweep();
            assert_eq!(
                summaries(&apart),
                summaries(&together),
                "round ending at {to}"
            );
            // And as many entries: one per minute (or hour), not one per partition.
            let entries = |ws: &WindowSet| -> Vec<usize> {
                ws.keys
                    .values()
                    .flat_map(|kw| kw.windows.iter().map(|w| w.queue.len()))
                    .collect()
            };
            assert_eq!(entries(&apart), entries(&together), "round ending at {to}");
            from = to;
        }
    }

    #[test]
    fn a_key_silent_longer_than_the_longest_window_is_forgotten() {
        let lens = [5 * MICROS_PER_MIN, 2 * MICROS_PER_HOUR];
        let mut ws = WindowSet::new(&lens);
        ws.push(&bucket(0, 1000));
        let mut other = bucket(1, 1000);
        std::sync::Arc::make_mut(&mut other.key).tenant = "u".into();
        ws.push(&other);
        assert_eq!(ws.key_count(), 2);
        // "u" keeps sending; "t" went quiet at minute 0.
        for m in 2..=180 {
            let mut b = bucket(m, 1000);
            std::sync::Arc::make_mut(&mut b.key).tenant = "u".into();
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
