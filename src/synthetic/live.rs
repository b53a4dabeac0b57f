//! Live synthetic traffic: Globex-shaped events produced in real time, each attempt
//! published when it completes. Scenarios: `steady`; `workday-drift` (Workday latency
//! grows by its baseline every minute, so it turns red within minutes); `late-and-duplicates`
//! (5% of records sent twice, 1% held back past the lateness); `malformed` (2% garbage).

use crate::codec::Format;
use crate::event::DeliveryEvent;
use crate::kafka::producer::{Outgoing, ProduceError, Producer};
use crate::synthetic::{attempts, globex_profiles, Profile, Rng};
use crate::time::{Micros, MICROS_PER_MIN, MICROS_PER_SEC};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    Steady,
    WorkdayDrift,
    LateAndDuplicates,
    Malformed,
}

impl Scenario {
    pub const NAMES: &'static str = "steady, workday-drift, late-and-duplicates, malformed";

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "steady" => Self::Steady,
            "workday-drift" => Self::WorkdayDrift,
            "late-and-duplicates" => Self::LateAndDuplicates,
            "malformed" => Self::Malformed,
            _ => return None,
        })
    }
}

/// One record to publish: key (the event id) and encoded value.
pub struct Generated {
    pub key: String,
    pub value: Vec<u8>,
}

pub struct LiveGenerator {
    rng: Rng,
    profiles: Vec<Profile>,
    scenario: Scenario,
    format: Format,
    tenant: String,
    started: Micros,
    seq: u64,
    /// Attempts waiting for their completion time: (send at, seq) → record.
    pending: BTreeMap<(Micros, u64), DeliveryEvent>,
    carry: f64,
    pub produced: u64,
}

impl LiveGenerator {
    pub fn new(seed: u64, tenant: &str, scenario: Scenario, format: Format, now: Micros) -> Self {
        Self {
            rng: Rng::new(seed),
            profiles: globex_profiles(),
            scenario,
            format,
            tenant: tenant.to_string(),
            started: now,
            seq: 0,
            pending: BTreeMap::new(),
            carry: 0.0,
            produced: 0,
        }
    }

    fn encode(&self, ev: &DeliveryEvent) -> Vec<u8> {
        match self.format {
            Format::Json => crate::codec::json::encode(ev).into_bytes(),
            Format::Protobuf => crate::codec::protobuf::encode(ev),
        }
    }

    /// Starts `rate × elapsed` new logical events at `now` and returns every record whose
    /// time has come.
    pub fn tick(&mut self, now: Micros, rate: f64, elapsed_s: f64, out: &mut Vec<Generated>) {
        self.carry += rate * elapsed_s;
        let n = self.carry.floor() as u64;
        self.carry -= n as f64;
        let minutes = (now - self.started) as f64 / MICROS_PER_MIN as f64;
        for _ in 0..n {
            let mut pick = self.rng.f64();
            let mut idx = self.profiles.len() - 1;
            for (i, p) in self.profiles.iter().enumerate() {
                if pick < p.share {
                    idx = i;
                    break;
                }
                pick -= p.share;
            }
            let mut p = self.profiles[idx].clone();
            if self.scenario == Scenario::WorkdayDrift && p.platform == "workday" {
                p.ok_median_ms *= 1.0 + minutes;
                p.transient = (p.transient * (1.0 + minutes)).min(0.5);
            }
            self.seq += 1;
            let id = format!("{}-{}-live-{:09}", self.tenant, p.platform, self.seq);
            for a in attempts(&mut self.rng, &p, &self.tenant, id, now, false) {
                self.seq += 1;
                let at = a.completed_at;
                self.pending.insert((at, self.seq), a);
            }
        }
        while let Some(entry) = self.pending.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let ev = entry.remove();
            let value = self.encode(&ev);
            match self.scenario {
                Scenario::Malformed if self.rng.below(50) == 0 => {
                    out.push(Generated {
                        key: ev.event_id.clone(),
                        value: value[..value.len() / 2].to_vec(),
                    });
                }
                Scenario::LateAndDuplicates if self.rng.below(100) == 0 => {
                    // Held back: sent again well past the lateness horizon.
                    self.seq += 1;
                    let at =
                        now + 3 * MICROS_PER_MIN + self.rng.below(MICROS_PER_SEC as u64) as Micros;
                    self.pending
                        .insert((at, self.seq), DeliveryEvent { ..ev.clone() });
                    continue;
                }
                Scenario::LateAndDuplicates if self.rng.below(20) == 0 => {
                    out.push(Generated {
                        key: ev.event_id.clone(),
                        value: value.clone(),
                    });
                }
                _ => {}
            }
            out.push(Generated {
                key: ev.event_id,
                value,
            });
        }
        self.produced += out.len() as u64;
    }
}

/// Produces live traffic to `topic` at `rate` logical events/s until `duration` passes or
/// `stop` is set. Returns the number of records produced.
pub fn produce(
    client: &crate::kafka::ClientConfig,
    topic: &str,
    mut generator: LiveGenerator,
    rate: f64,
    duration: Option<std::time::Duration>,
    stop: &std::sync::atomic::AtomicBool,
) -> Result<u64, ProduceError> {
    use std::time::{Duration, Instant};
    let producer = Producer::new(client)?;
    let start = Instant::now();
    let mut last = Instant::now();
    let mut out = Vec::new();
    while !stop.load(std::sync::atomic::Ordering::Relaxed)
        && duration.is_none_or(|d| start.elapsed() < d)
    {
        std::thread::sleep(Duration::from_millis(20));
        let dt = last.elapsed().as_secs_f64();
        last = Instant::now();
        out.clear();
        generator.tick(crate::time::now_micros(), rate, dt, &mut out);
        for o in &out {
            let rec = Outgoing {
                topic,
                key: o.key.as_bytes(),
                payload: Some(&o.value),
                partition: None,
                headers: &[],
            };
            producer.send(&rec, Duration::from_secs(30))?;
        }
    }
    producer.flush(Duration::from_secs(10))?;
    Ok(generator.produced)
}
