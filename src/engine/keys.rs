//! Interning of (tenant, platform) keys with a hard cap.
//!
//! One table of key ids, probed with one hash of both names and compared in place
//! against the interned names, so a hit allocates nothing, hashes once and calls no
//! `memcmp` (a two-level map of owned names hashed twice and compared through `memcmp`:
//! ≈ 8 % of the protobuf path, perf). The names it compares against are copies in one
//! buffer, each table entry holding where its key's are: comparing against the
//! `KeyInfo`'s own names chased three pointers per probe, ≈ 3.5 % of the path (perf). Past
//! `max_keys`, new tenants fold into the `__overflow__` tenant: a flood of random tenant
//! ids can neither exhaust memory nor explode the Prometheus scrape, and it is counted.

use super::hash::FastHasher;
use crate::config::Config;
use crate::event::Direction;
use std::sync::Arc;

pub const OVERFLOW: &str = "__overflow__";

pub type KeyId = u32;

#[derive(Debug, Clone)]
pub struct KeyInfo {
    pub tenant: Arc<str>,
    pub platform: Arc<str>,
    pub direction: Direction,
    /// End-to-end latency target used for `on_time` (from config, resolved once).
    pub target_latency_us: u64,
}

/// A table entry: a key id and where its names are in [`KeyTable::names`].
#[derive(Debug, Clone, Copy)]
struct Entry {
    id: KeyId,
    at: u32,
    tenant_len: u32,
    platform_len: u32,
}

#[derive(Debug)]
pub struct KeyTable {
    /// Entries, hashed by [`name_hash`] of their names.
    by_name: hashbrown::HashTable<Entry>,
    /// Every key's tenant then platform name, back to back, in id order.
    names: Vec<u8>,
    infos: Vec<Arc<KeyInfo>>,
    /// Newest `completed_at` per key (freshness), same index as `infos`.
    last_seen: Vec<crate::time::Micros>,
    max_keys: usize,
    config: Arc<Config>,
    /// Records folded into an overflow key because the table was full.
    pub overflowed: u64,
}

impl KeyTable {
    pub fn new(config: Arc<Config>) -> Self {
        Self {
            by_name: hashbrown::HashTable::new(),
            names: Vec::new(),
            infos: Vec::new(),
            last_seen: Vec::new(),
            max_keys: config.limits.max_keys,
            config,
            overflowed: 0,
        }
    }

    /// Rebuilds a table with the same ids (checkpoint restore).
    pub fn restore(config: Arc<Config>, infos: Vec<Arc<KeyInfo>>, overflowed: u64) -> Self {
        let mut t = Self::new(config);
        t.last_seen = vec![crate::time::Micros::MIN; infos.len()];
        t.infos = infos;
        // The table rehashes from `infos` as it grows, so they are in place first.
        for id in 0..t.infos.len() {
            t.index(id as KeyId);
        }
        t.overflowed = overflowed;
        t
    }

    #[inline]
    pub fn touch(&mut self, id: KeyId, at: crate::time::Micros) {
        let s = &mut self.last_seen[id as usize];
        *s = (*s).max(at);
    }

    pub fn last_seen(&self, id: KeyId) -> crate::time::Micros {
        self.last_seen[id as usize]
    }

    pub fn infos(&self) -> &[Arc<KeyInfo>] {
        &self.infos
    }

    pub fn info(&self, id: KeyId) -> &Arc<KeyInfo> {
        &self.infos[id as usize]
    }

    pub fn len(&self) -> usize {
        self.infos.len()
    }

    pub fn is_empty(&self) -> bool {
        self.infos.is_empty()
    }

    /// The id of an interned key (no side effect: a miss interns nothing).
    #[inline]
    pub fn find(&self, tenant: &str, platform: &str) -> Option<KeyId> {
        let names = &self.names;
        self.by_name
            .find(name_hash(tenant, platform), |e| {
                let (t, p) = e.names(names);
                same(t, tenant.as_bytes()) && same(p, platform.as_bytes())
            })
            .map(|e| e.id)
    }

    /// The id of the key, interned if new (or folded into an overflow key past
    /// `max_keys`, which is counted).
    #[inline]
    pub fn resolve(&mut self, tenant: &str, platform: &str, direction: Direction) -> KeyId {
        match self.find(tenant, platform) {
            Some(id) => id,
            None => self.resolve_slow(tenant, platform, direction),
        }
    }

    /// Adds `id`, whose `KeyInfo` is already in `infos`, to the table.
    fn index(&mut self, id: KeyId) {
        let info = &self.infos[id as usize];
        let (tenant, platform) = (info.tenant.as_bytes(), info.platform.as_bytes());
        // Names are at most `MAX_ID_BYTES` and keys at most `config::MAX_KEYS_LIMIT` plus
        // the overflow keys: the buffer stays below 1 GiB, so offsets fit in 32 bits.
        let e = Entry {
            id,
            at: self.names.len() as u32,
            tenant_len: tenant.len() as u32,
            platform_len: platform.len() as u32,
        };
        self.names.extend_from_slice(tenant);
        self.names.extend_from_slice(platform);
        let names = &self.names;
        let hash_of = |e: &Entry| {
            let (t, p) = e.names(names);
            name_hash_bytes(t, p)
        };
        self.by_name.insert_unique(hash_of(&e), e, hash_of);
    }

    #[cold]
    fn resolve_slow(&mut self, tenant: &str, platform: &str, direction: Direction) -> KeyId {
        // The overflow keys themselves are always admitted (at most one per configured
        // platform plus one), so the cap is max_keys + platforms + 1.
        let (tenant, platform) = if self.infos.len() >= self.max_keys && tenant != OVERFLOW {
            self.overflowed += 1;
            let p = if self.config.platform(platform).is_some() {
                platform
            } else {
                OVERFLOW
            };
            return self.resolve(OVERFLOW, p, direction);
        } else {
            (tenant, platform)
        };
        let id = self.infos.len() as KeyId;
        let target = self.config.targets(platform).latency_target_us as u64;
        self.infos.push(Arc::new(KeyInfo {
            tenant: tenant.into(),
            platform: platform.into(),
            direction,
            target_latency_us: target,
        }));
        self.last_seen.push(crate::time::Micros::MIN);
        self.index(id);
        id
    }
}

impl Entry {
    #[inline]
    fn names<'a>(&self, names: &'a [u8]) -> (&'a [u8], &'a [u8]) {
        let (at, t, p) = (
            self.at as usize,
            self.tenant_len as usize,
            self.platform_len as usize,
        );
        (&names[at..at + t], &names[at + t..at + t + p])
    }
}

#[inline]
fn name_hash(tenant: &str, platform: &str) -> u64 {
    name_hash_bytes(tenant.as_bytes(), platform.as_bytes())
}

#[inline]
fn name_hash_bytes(tenant: &[u8], platform: &[u8]) -> u64 {
    use std::hash::Hasher;
    let mut h = FastHasher::default();
    h.write(tenant);
    h.write_usize(tenant.len());
    h.write(platform);
    h.finish()
}

/// Equal names, compared a word at a time in place: names are a few bytes to a few
/// tens, where a `memcmp` call costs more than the comparison.
#[inline]
fn same(a: &[u8], b: &[u8]) -> bool {
    let n = a.len();
    if n != b.len() {
        return false;
    }
    let word = |s: &[u8], i: usize| {
        let mut w = [0u8; 8];
        w.copy_from_slice(&s[i..i + 8]);
        u64::from_le_bytes(w)
    };
    if n < 8 {
        return a.iter().zip(b).all(|(x, y)| x == y);
    }
    let mut i = 0;
    while i + 8 < n {
        if word(a, i) != word(b, i) {
            return false;
        }
        i += 8;
    }
    // The last word, overlapping the previous one when n is not a multiple of 8.
    word(a, n - 8) == word(b, n - 8)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn same_is_string_equality(a in "[a-c]{0,20}", b in "[a-c]{0,20}") {
            prop_assert_eq!(same(a.as_bytes(), b.as_bytes()), a == b);
        }

        /// Same length, one byte changed anywhere (or not at all, when it is the same).
        #[test]
        fn same_sees_every_byte(a in "[a-c]{0,24}", at in any::<usize>(), c in b'a'..=b'c') {
            let mut b = a.clone().into_bytes();
            if !b.is_empty() {
                let k = at % b.len();
                b[k] = c;
            }
            let b = String::from_utf8(b).unwrap_or_default();
            prop_assert_eq!(same(a.as_bytes(), b.as_bytes()), a == b);
        }
    }

    #[test]
    fn names_split_differently_are_different_keys() {
        let mut t = KeyTable::new(Arc::new(Config::default()));
        let a = t.resolve("ab", "cworkday", Direction::Inbound);
        let b = t.resolve("abc", "workday", Direction::Inbound);
        assert_ne!(a, b);
        assert_eq!(t.resolve("ab", "cworkday", Direction::Inbound), a);
        // Enough keys that the table grows (and rehashes) while it is rebuilt.
        let more: Vec<KeyId> = (0..100)
            .map(|i| t.resolve(&format!("t{i}"), "benevity", Direction::Inbound))
            .collect();
        let mut r = KeyTable::restore(Arc::new(Config::default()), t.infos().to_vec(), 0);
        assert_eq!(r.resolve("abc", "workday", Direction::Inbound), b);
        for (i, id) in more.iter().enumerate() {
            assert_eq!(
                r.resolve(&format!("t{i}"), "benevity", Direction::Inbound),
                *id
            );
        }
        assert_eq!(r.len(), 102);
    }

    #[test]
    fn caps_keys_and_folds_into_overflow() {
        let mut cfg = Config::default();
        cfg.limits.max_keys = 3;
        let mut t = KeyTable::new(Arc::new(cfg));
        let a = t.resolve("a", "workday", Direction::Inbound);
        assert_eq!(t.resolve("a", "workday", Direction::Inbound), a);
        t.resolve("b", "workday", Direction::Inbound);
        t.resolve("c", "impact_in", Direction::Outbound);
        let o1 = t.resolve("d", "workday", Direction::Inbound);
        let o2 = t.resolve("e", "workday", Direction::Inbound);
        let o3 = t.resolve("f", "random-platform", Direction::Inbound);
        assert_eq!(o1, o2);
        assert_eq!(&*t.info(o1).tenant, OVERFLOW);
        assert_eq!(&*t.info(o1).platform, "workday");
        assert_eq!(&*t.info(o3).platform, OVERFLOW);
        assert_eq!(t.overflowed, 3);
        assert_eq!(t.len(), 5);
        let c = t.resolve("c", "impact_in", Direction::Outbound);
        assert_eq!(t.info(c).target_latency_us, 300_000);
    }
}
