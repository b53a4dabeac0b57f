//! The rows one commit writes: its closed buckets, merged per key over a span that depends
//! on whether the key's tenant has an SLA contract ([`RowGrain`]).
//!
//! Why merge: a backfill consumed at full speed closes about one bucket per record (one
//! attempt per key-minute), and one row per bucket would make the store most of the apply
//! thread. Live traffic closes about one minute per key per commit, so it has nothing to
//! merge and pays nothing ([`commit_rows`] borrows its buckets).
//!
//! Why the span differs: a contract excludes spans and closes periods at local midnights
//! (docs/contracts.md), and a scorecard can only split the data where rows end. Rows of a
//! tenant without a contract merge per UTC day, which every UTC report divides exactly.
//! Rows of a tenant with one keep their minutes while they are within
//! `store.minute_retention` and never span an hour beyond it — the precision the store
//! keeps anyway once it folds minutes into hours (`store::fold`). (A day rather than an
//! hour otherwise: a partition's share of a key is about one record per hour in a
//! backfill, so hours would merge almost nothing.)
//!
//! Exactness holds either way: each bucket closes once per source and the transaction is
//! atomic with the checkpoint, so the rows of a source stay disjoint.

use crate::config::Config;
use crate::engine::ClosedBucket;
use crate::time::{Micros, MICROS_PER_DAY, MICROS_PER_HOUR};
use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// Which tenants' rows stay fine-grained (see the module doc).
#[derive(Debug, Clone)]
pub struct RowGrain {
    fine: Fine,
    minute_retention: Micros,
}

#[derive(Debug, Clone)]
enum Fine {
    Nobody,
    Everybody,
    Tenants(HashSet<Box<str>>),
}

impl RowGrain {
    /// Fine rows for every tenant with a `[[tenants]]` entry or an exclusion naming it;
    /// for every tenant when an exclusion names none.
    pub fn from_config(config: &Config) -> Self {
        let fine = if config.exclusions.iter().any(|x| x.tenant.is_none()) {
            Fine::Everybody
        } else {
            let ids: HashSet<Box<str>> = config
                .tenants
                .iter()
                .map(|t| t.id.as_str().into())
                .chain(
                    config
                        .exclusions
                        .iter()
                        .filter_map(|x| x.tenant.as_deref().map(Into::into)),
                )
                .collect();
            if ids.is_empty() {
                Fine::Nobody
            } else {
                Fine::Tenants(ids)
            }
        };
        Self {
            fine,
            minute_retention: config.store.minute_retention.0,
        }
    }

    /// Whether `tenant`'s rows stay fine-grained.
    pub fn is_fine(&self, tenant: &str) -> bool {
        match &self.fine {
            Fine::Nobody => false,
            Fine::Everybody => true,
            Fine::Tenants(ids) => ids.contains(tenant),
        }
    }
}

/// The rows a commit made at `now` writes: `buckets` merged per key and span (the module
/// doc), each row from its first bucket's start with `width_us` spanning its buckets.
pub fn commit_rows<'a>(
    buckets: &'a [ClosedBucket],
    grain: &RowGrain,
    now: Micros,
) -> Cow<'a, [ClosedBucket]> {
    // Group by index first: a live commit has nothing to merge and must not pay for
    // copying its buckets (a dense one holds a 26 KB histogram). A shard hands out one
    // `Arc<KeyInfo>` per key, so buckets group by that pointer rather than by comparing
    // strings per bucket; groups are then ordered by content, which also joins groups of
    // equal keys, and rows go to the store in key order. (Buckets of one key under
    // different `Arc`s in a commit with nothing else to merge are written one row each:
    // still exact, only not smaller.)
    let minutes_from = now.saturating_sub(grain.minute_retention);
    let mut fine_keys: HashMap<usize, bool> = HashMap::new();
    let mut span = |b: &ClosedBucket| {
        let fine = match &grain.fine {
            Fine::Nobody => false,
            Fine::Everybody => true,
            Fine::Tenants(ids) => *fine_keys
                .entry(Arc::as_ptr(&b.key) as usize)
                .or_insert_with(|| ids.contains(&*b.key.tenant)),
        };
        if !fine {
            b.start.div_euclid(MICROS_PER_DAY) * MICROS_PER_DAY
        } else if b.start >= minutes_from {
            b.start
        } else {
            b.start.div_euclid(MICROS_PER_HOUR) * MICROS_PER_HOUR
        }
    };
    let mut by_ptr: HashMap<(usize, Micros), usize> = HashMap::new();
    let mut groups: Vec<(Micros, Vec<usize>)> = Vec::new();
    for (i, b) in buckets.iter().enumerate() {
        let s = span(b);
        let g = *by_ptr
            .entry((Arc::as_ptr(&b.key) as usize, s))
            .or_insert_with(|| {
                groups.push((s, Vec::new()));
                groups.len() - 1
            });
        groups[g].1.push(i);
    }
    if groups.len() == buckets.len() {
        return Cow::Borrowed(buckets);
    }
    let key = |(s, members): &(Micros, Vec<usize>)| {
        let b = &buckets[members[0]];
        (
            &*b.key.tenant,
            &*b.key.platform,
            b.key.direction.as_str(),
            b.key.target_latency_us,
            *s,
        )
    };
    groups.sort_unstable_by(|x, y| key(x).cmp(&key(y)));
    let mut merged: Vec<(Micros, Vec<usize>)> = Vec::with_capacity(groups.len());
    for g in groups {
        match merged.last_mut() {
            Some(last) if key(last) == key(&g) => last.1.extend(g.1),
            _ => merged.push(g),
        }
    }
    let rows = merged.into_iter().map(|(_, members)| {
        let first = &buckets[members[0]];
        if members.len() == 1 {
            return first.clone();
        }
        // `Stats::sum` gives the sparse form, which the row encodes straight from.
        let parts: Vec<&crate::engine::Stats> =
            members.iter().map(|&i| &buckets[i].stats).collect();
        let stats = crate::engine::Stats::sum(&parts);
        let (mut start, mut end) = (first.start, first.start + first.width_us);
        for &i in &members[1..] {
            let b = &buckets[i];
            start = start.min(b.start);
            end = end.max(b.start + b.width_us);
        }
        ClosedBucket {
            key: first.key.clone(),
            start,
            width_us: end - start,
            stats,
        }
    });
    Cow::Owned(rows.collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Direction;

    /// Far after the buckets, so none is within `minute_retention`.
    const NOW: Micros = 400 * MICROS_PER_DAY;

    fn coarse() -> RowGrain {
        RowGrain::from_config(&Config::default())
    }

    #[test]
    fn a_tenant_with_a_contract_keeps_minutes_while_recent_and_hours_after() {
        let mut config = Config::default();
        config
            .tenants
            .push(toml::from_str("id = \"g\"\ntime_zone = \"Asia/Kolkata\"").expect("tenant"));
        let grain = RowGrain::from_config(&config);
        assert!(grain.is_fine("g") && !grain.is_fine("t"));
        // Minutes 50..=70 of day 0 (they straddle 01:00) for g, and for t.
        // One `Arc` per key, as a shard hands out.
        let (g, t) = (
            minute("g", "workday", 0, &[]).key,
            minute("t", "workday", 0, &[]).key,
        );
        let buckets: Vec<ClosedBucket> = (50..=70)
            .flat_map(|m| {
                let (mut x, mut y) = (
                    minute("g", "workday", m, &[m as u64]),
                    minute("t", "workday", m, &[1]),
                );
                (x.key, y.key) = (g.clone(), t.clone());
                [x, y]
            })
            .collect();
        let rows = commit_rows(&buckets, &grain, NOW);
        let spans = |rows: &[ClosedBucket], tenant: &str| -> Vec<(Micros, Micros)> {
            let min = crate::time::MICROS_PER_MIN;
            rows.iter()
                .filter(|r| &*r.key.tenant == tenant)
                .map(|r| (r.start / min, r.width_us / min))
                .collect()
        };
        assert_eq!(
            spans(&rows, "g"),
            vec![(50, 10), (60, 11)],
            "split at the hour"
        );
        assert_eq!(spans(&rows, "t"), vec![(50, 21)], "one row for the day");
        // Within `minute_retention` of now, g's minutes stay rows of their own.
        let rows = commit_rows(&buckets, &grain, NOW.min(61 * MICROS_PER_DAY / 2));
        assert_eq!(spans(&rows, "g").len(), 21);
        assert_eq!(spans(&rows, "t"), vec![(50, 21)]);
        // An exclusion for every tenant makes every tenant's rows fine.
        config.exclusions.push(
            toml::from_str("name = \"w\"\ntime_zone = \"UTC\"\nstart = \"2025-01-01T00:00:00\"\nend = \"2025-01-01T01:00:00\"\ncategory = \"other\"").expect("exclusion"),
        );
        assert!(RowGrain::from_config(&config).is_fine("t"));
    }

    fn minute(tenant: &str, platform: &str, minute: i64, latencies_ms: &[u64]) -> ClosedBucket {
        let mut stats = crate::engine::Stats::default();
        for &ms in latencies_ms {
            stats.counters.attempts += 1;
            stats.counters.events += 1;
            stats.counters.latency_sum_us += ms * 1000;
            stats.latency.record(ms * 1000);
        }
        ClosedBucket {
            key: std::sync::Arc::new(crate::engine::KeyInfo {
                tenant: tenant.into(),
                platform: platform.into(),
                direction: Direction::Inbound,
                target_latency_us: 500_000,
            }),
            start: minute * crate::time::MICROS_PER_MIN,
            width_us: crate::time::MICROS_PER_MIN,
            stats,
        }
    }

    #[test]
    fn without_a_contract_a_commit_writes_one_row_per_key_and_day_with_the_same_numbers() {
        // Two keys; minutes 1438..=1442 straddle midnight; one key has a bucket past FEW
        // values.
        let many: Vec<u64> = (1..=200).collect();
        let mut buckets = Vec::new();
        for m in 1438..=1442 {
            buckets.push(minute("t", "workday", m, &[m as u64, 2 * m as u64]));
            buckets.push(minute(
                "t",
                "benevity",
                m,
                if m == 1440 { &many } else { &[7] },
            ));
        }
        // As a shard's: one `Arc` per key, except one bucket whose equal key is another.
        let (workday, benevity) = (buckets[0].key.clone(), buckets[1].key.clone());
        for b in &mut buckets[..9] {
            b.key = if &*b.key.platform == "workday" {
                workday.clone()
            } else {
                benevity.clone()
            };
        }
        let rows = commit_rows(&buckets, &coarse(), NOW);
        assert_eq!(rows.len(), 4, "two keys × two days");
        for r in rows.iter() {
            let day = r.start.div_euclid(crate::time::MICROS_PER_DAY);
            let end_day = (r.start + r.width_us - 1).div_euclid(crate::time::MICROS_PER_DAY);
            assert_eq!(day, end_day, "a row never spans a day");
            let parts: Vec<&ClosedBucket> = buckets
                .iter()
                .filter(|b| {
                    b.key.platform == r.key.platform
                        && b.start >= r.start
                        && b.start < r.start + r.width_us
                })
                .collect();
            let mut expect = crate::engine::Stats::default();
            for p in &parts {
                expect.merge(&p.stats);
            }
            assert_eq!(
                r.stats.counters, expect.counters,
                "{} at {}",
                r.key.platform, r.start
            );
            assert_eq!(r.stats, expect, "same latencies");
            assert_eq!(r.start, parts[0].start);
        }
        // Live traffic: one minute per key per commit, nothing to merge, nothing copied.
        let live = [
            minute("t", "workday", 5, &[1]),
            minute("t", "benevity", 5, &[1]),
        ];
        assert!(matches!(
            commit_rows(&live, &coarse(), NOW),
            std::borrow::Cow::Borrowed(_)
        ));
    }
}
