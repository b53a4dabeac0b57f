//! Interning of (tenant, platform) keys with a hard cap.
//!
//! Lookups borrow the event's strings (two-level map), so a hit allocates nothing. Past
//! `max_keys`, new tenants fold into the `__overflow__` tenant: a flood of random tenant
//! ids can neither exhaust memory nor explode the Prometheus scrape, and it is counted.

use super::hash::FastMap;
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

#[derive(Debug)]
pub struct KeyTable {
    by_name: FastMap<Box<str>, FastMap<Box<str>, KeyId>>,
    infos: Vec<KeyInfo>,
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
            by_name: FastMap::default(),
            infos: Vec::new(),
            last_seen: Vec::new(),
            max_keys: config.limits.max_keys,
            config,
            overflowed: 0,
        }
    }

    /// Rebuilds a table with the same ids (checkpoint restore).
    pub fn restore(config: Arc<Config>, infos: Vec<KeyInfo>, overflowed: u64) -> Self {
        let mut t = Self::new(config);
        for (id, info) in infos.iter().enumerate() {
            t.by_name
                .entry((*info.tenant).into())
                .or_default()
                .insert((*info.platform).into(), id as KeyId);
        }
        t.last_seen = vec![crate::time::Micros::MIN; infos.len()];
        t.infos = infos;
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

    pub fn infos(&self) -> &[KeyInfo] {
        &self.infos
    }

    pub fn info(&self, id: KeyId) -> &KeyInfo {
        &self.infos[id as usize]
    }

    pub fn len(&self) -> usize {
        self.infos.len()
    }

    pub fn is_empty(&self) -> bool {
        self.infos.is_empty()
    }

    #[inline]
    pub fn resolve(&mut self, tenant: &str, platform: &str, direction: Direction) -> KeyId {
        if let Some(id) = self.by_name.get(tenant).and_then(|m| m.get(platform)) {
            return *id;
        }
        self.resolve_slow(tenant, platform, direction)
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
        self.infos.push(KeyInfo {
            tenant: tenant.into(),
            platform: platform.into(),
            direction,
            target_latency_us: target,
        });
        self.last_seen.push(crate::time::Micros::MIN);
        self.by_name
            .entry(tenant.into())
            .or_default()
            .insert(platform.into(), id);
        id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
