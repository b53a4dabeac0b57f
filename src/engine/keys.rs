//! Interning of (tenant, platform) keys with a hard cap.
//!
//! One table of key ids, probed with one hash of both names. Each entry holds its names
//! as [`Words`]: the length and two reads (overlapping when need be) that between them
//! cover every byte of a name of up to 16 bytes. For such names, which tenant and
//! platform names nearly always are, a probe compares five words held in the entry, with
//! no loop, no length-dependent branch and no second load (a byte-wise comparison or hash
//! would run loops whose trip count follows the traffic's name lengths). Longer names are
//! also compared in full, against copies in one buffer. Past `max_keys`, new tenants fold
//! into the `__overflow__` tenant: a flood of random tenant ids can neither exhaust
//! memory nor explode the Prometheus scrape, and it is counted.

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

/// A table entry: a key id, its names' [`Words`], and where its names are in
/// [`KeyTable::names`] (read only for names longer than [`Words::EXACT`]).
#[derive(Debug, Clone, Copy)]
struct Entry {
    id: KeyId,
    at: u32,
    tenant: Words,
    platform: Words,
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
        let (t, p) = (tenant.as_bytes(), platform.as_bytes());
        let (tw, pw) = (Words::of(t), Words::of(p));
        let names = &self.names;
        self.by_name
            .find(name_hash(&tw, t, &pw, p), |e| {
                e.tenant.same_as(&tw)
                    && e.platform.same_as(&pw)
                    && (tw.exact() && pw.exact() || {
                        let (et, ep) = e.names(names);
                        et == t && ep == p
                    })
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
            tenant: Words::of(tenant),
            platform: Words::of(platform),
        };
        self.names.extend_from_slice(tenant);
        self.names.extend_from_slice(platform);
        let names = &self.names;
        let hash_of = |e: &Entry| {
            let (t, p) = e.names(names);
            name_hash(&e.tenant, t, &e.platform, p)
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
            self.tenant.len as usize,
            self.platform.len as usize,
        );
        (&names[at..at + t], &names[at + t..at + t + p])
    }
}

/// A name as its length and two little-endian reads, `a` from its start and `b` from
/// its end: 8 bytes each from 8 bytes up (overlapping below 16), 4 each from 4 to 7, and
/// the first, middle and last byte below 4. Up to [`Words::EXACT`] bytes the reads cover
/// every byte, so equal words mean equal names; past it the middle is left out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Words {
    len: u32,
    a: u64,
    b: u64,
}

impl Words {
    const EXACT: usize = 16;

    #[inline]
    fn of(s: &[u8]) -> Self {
        let n = s.len();
        let (a, b) = if n >= 8 {
            (le64(s, 0), le64(s, n - 8))
        } else if n >= 4 {
            (u64::from(le32(s, 0)), u64::from(le32(s, n - 4)))
        } else if n > 0 {
            let v = u64::from(s[0]) << 16 | u64::from(s[n / 2]) << 8 | u64::from(s[n - 1]);
            (v, 0)
        } else {
            (0, 0)
        };
        Self {
            // A name is shorter than the names buffer, whose offsets are 32 bits (`index`).
            len: n as u32,
            a,
            b,
        }
    }

    /// Branch-free equality of the words (the names too, when [`Words::exact`]).
    #[inline]
    fn same_as(&self, o: &Words) -> bool {
        ((self.a ^ o.a) | (self.b ^ o.b) | u64::from(self.len ^ o.len)) == 0
    }

    #[inline]
    fn exact(&self) -> bool {
        self.len as usize <= Self::EXACT
    }
}

#[inline]
fn le64(s: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&s[at..at + 8]);
    u64::from_le_bytes(w)
}

#[inline]
fn le32(s: &[u8], at: usize) -> u32 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&s[at..at + 4]);
    u32::from_le_bytes(w)
}

/// 64×64 → 128-bit multiply, folded: each output bit depends on every input bit.
#[inline]
fn mum(x: u64, y: u64) -> u64 {
    let r = u128::from(x) * u128::from(y);
    (r as u64) ^ (r >> 64) as u64
}

const SEEDS: [u64; 5] = [
    0xa076_1d64_78bd_642f,
    0xe703_7ed1_a0b4_28db,
    0x8ebc_6af0_9c88_c6e3,
    0x5899_65cc_7537_4cc3,
    0x1d8e_4e27_c47d_124f,
];

/// Hash of both names: one multiply per name on their words (the tenant's and the
/// platform's independent, so they overlap), one to combine. The middle of a name past
/// [`Words::EXACT`] bytes, which its words leave out, is hashed apart and folded in.
#[inline]
fn name_hash(tw: &Words, tenant: &[u8], pw: &Words, platform: &[u8]) -> u64 {
    let t = mum(tw.a ^ SEEDS[0], tw.b ^ SEEDS[1] ^ middle(tw, tenant));
    let p = mum(pw.a ^ SEEDS[2], pw.b ^ SEEDS[3] ^ middle(pw, platform));
    let lens = u64::from(tw.len) << 32 | u64::from(pw.len);
    mum(t ^ lens, p ^ SEEDS[4])
}

/// The bytes of a long name that its [`Words`] do not read, hashed (0 for short names).
#[inline]
fn middle(w: &Words, s: &[u8]) -> u64 {
    if w.exact() {
        return 0;
    }
    middle_slow(&s[8..s.len() - 8])
}

#[cold]
fn middle_slow(mid: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(mid)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Names of every length around the [`Words`] boundaries (0–3, 4–7, 8–16, past 16).
    fn name() -> impl Strategy<Value = String> {
        "[a-c]{0,24}"
    }

    proptest! {
        /// Up to 16 bytes, equal words are equal names.
        #[test]
        fn words_are_exact_up_to_16_bytes(a in name(), b in name()) {
            let (wa, wb) = (Words::of(a.as_bytes()), Words::of(b.as_bytes()));
            if wa.exact() && wb.exact() {
                prop_assert_eq!(wa.same_as(&wb), a == b);
            }
            if a == b {
                prop_assert!(wa.same_as(&wb));
            }
        }

        /// Same length, one byte changed anywhere (or not at all): the table tells the
        /// two apart at every length, the middle of long names included.
        #[test]
        fn find_sees_every_byte(a in name(), at in any::<usize>(), c in b'a'..=b'c', p in name()) {
            let mut b = a.clone().into_bytes();
            if !b.is_empty() {
                let k = at % b.len();
                b[k] = c;
            }
            let b = String::from_utf8(b).unwrap_or_default();
            let mut t = KeyTable::new(Arc::new(Config::default()));
            let ia = t.resolve(&a, &p, Direction::Inbound);
            prop_assert_eq!(t.find(&a, &p), Some(ia));
            prop_assert_eq!(t.find(&b, &p) == Some(ia), a == b);
            prop_assert_eq!(t.find(&p, &a) == Some(ia), a == p);
            let ib = t.resolve(&b, &p, Direction::Inbound);
            prop_assert_eq!(ia == ib, a == b);
            prop_assert_eq!(t.find(&a, &p), Some(ia));
            prop_assert_eq!(t.find(&b, &p), Some(ib));
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
