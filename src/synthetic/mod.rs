//! Synthetic delivery traffic with the Globex pilot's shape, deterministic per seed.
//!
//! Each logical event is enqueued, waits a few ms, then attempts delivery: an attempt
//! fails fast (non-retryable 4xx), fails transiently (retried after 1s, 2s, 4s backoff) or,
//! for a "sticky" event hitting an outage, fails every attempt until `max_attempts` and is
//! then failed or dead-lettered. Profiles per platform are tuned so the seed report's
//! statuses come out (Benevity green, Goodera yellow, Workday red, Impact-In green,
//! SAP SuccessFactors silent); Workday's first three weeks have the firewall incident.
//!
//! [`globex_fixture`] is the 10-week file fixture; [`live`] produces the same shape in real
//! time to a Kafka topic (`slatrack generate --brokers`, the demo).

pub mod live;

use crate::event::{DeliveryEvent, Direction, Outcome};
use crate::time::{Micros, MICROS_PER_DAY, MICROS_PER_MILLI, MICROS_PER_SEC};

/// SplitMix64: tiny, fast, and stable across releases (unlike `rand`'s std RNG), so a seed
/// means the same fixture forever.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    pub fn f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
    fn normal(&mut self) -> f64 {
        let u1 = self.f64().max(1e-12);
        let u2 = self.f64();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
    /// Log-normal sample in microseconds with the given median (ms) and sigma.
    fn lognormal_us(&mut self, median_ms: f64, sigma: f64) -> Micros {
        (median_ms * (sigma * self.normal()).exp() * MICROS_PER_MILLI as f64) as Micros
    }
}

/// How one platform behaves.
#[derive(Debug, Clone)]
pub struct Profile {
    pub platform: &'static str,
    pub direction: Direction,
    /// Share of the tenant's events.
    pub share: f64,
    pub ok_median_ms: f64,
    pub ok_sigma: f64,
    pub fail_median_ms: f64,
    pub fail_sigma: f64,
    pub queue_ms: f64,
    /// Probability an event's first attempt is rejected for good (failed at attempt 1).
    pub fail_fast: f64,
    /// Same, during the incident weeks (`incident_weeks`).
    pub fail_fast_incident: f64,
    pub incident_weeks: u32,
    /// Probability an event hits an outage and exhausts its attempts.
    pub sticky: f64,
    /// Per-attempt probability of a transient (retried) failure.
    pub transient: f64,
    /// Of exhausted events, the share dead-lettered rather than failed.
    pub dlq_share: f64,
    pub max_attempts: u32,
}

/// The Globex pilot: Benevity, Goodera, Workday, Impact-In (SAP SuccessFactors silent).
pub fn globex_profiles() -> Vec<Profile> {
    let base = Profile {
        platform: "",
        direction: Direction::Inbound,
        share: 0.0,
        ok_median_ms: 335.0,
        ok_sigma: 0.14,
        fail_median_ms: 650.0,
        fail_sigma: 0.45,
        queue_ms: 10.0,
        fail_fast: 0.0,
        fail_fast_incident: 0.0,
        incident_weeks: 0,
        sticky: 0.0,
        transient: 0.0,
        dlq_share: 0.13,
        max_attempts: 4,
    };
    vec![
        Profile {
            platform: "benevity",
            share: 0.40,
            fail_fast: 0.008,
            sticky: 0.004,
            transient: 0.03,
            ..base.clone()
        },
        Profile {
            platform: "goodera",
            share: 0.20,
            ok_median_ms: 345.0,
            ok_sigma: 0.12,
            fail_median_ms: 800.0,
            fail_fast: 0.015,
            sticky: 0.012,
            transient: 0.065,
            ..base.clone()
        },
        Profile {
            platform: "workday",
            share: 0.25,
            ok_median_ms: 330.0,
            ok_sigma: 0.13,
            fail_median_ms: 1000.0,
            fail_fast: 0.015,
            fail_fast_incident: 0.08,
            incident_weeks: 3,
            sticky: 0.03,
            transient: 0.07,
            ..base.clone()
        },
        Profile {
            platform: "impact_in",
            direction: Direction::Outbound,
            share: 0.15,
            ok_median_ms: 220.0,
            ok_sigma: 0.10,
            fail_median_ms: 600.0,
            queue_ms: 5.0,
            fail_fast: 0.002,
            sticky: 0.001,
            transient: 0.009,
            ..base
        },
    ]
}

/// Every attempt of one logical event, in completion order.
pub fn attempts(
    rng: &mut Rng,
    p: &Profile,
    tenant: &str,
    event_id: String,
    enqueued_at: Micros,
    incident: bool,
) -> Vec<DeliveryEvent> {
    let fail_fast = if incident {
        p.fail_fast_incident
    } else {
        p.fail_fast
    };
    let roll = rng.f64();
    let sticky = roll < p.sticky;
    let fast = !sticky && roll < p.sticky + fail_fast;
    let mut out = Vec::with_capacity(2);
    let mut started =
        enqueued_at + (p.queue_ms * (0.5 + rng.f64()) * MICROS_PER_MILLI as f64) as Micros;
    for attempt in 1..=p.max_attempts {
        let fails = sticky || fast || rng.f64() < p.transient;
        let latency = if fails {
            rng.lognormal_us(p.fail_median_ms, p.fail_sigma)
        } else {
            rng.lognormal_us(p.ok_median_ms, p.ok_sigma)
        }
        .max(1);
        let last = attempt == p.max_attempts;
        let (outcome, status, error) = if !fails {
            (Outcome::Delivered, 200, None)
        } else if fast {
            (
                Outcome::Failed,
                403,
                Some("403 Forbidden: rejected by the platform"),
            )
        } else if last && rng.f64() < p.dlq_share {
            (
                Outcome::DeadLettered,
                503,
                Some("503 Service Unavailable: attempts exhausted, moved to DLQ"),
            )
        } else if last {
            (
                Outcome::Failed,
                503,
                Some("503 Service Unavailable: attempts exhausted"),
            )
        } else {
            (
                Outcome::Retrying,
                if rng.f64() < 0.5 { 429 } else { 503 },
                Some("transient failure, will retry"),
            )
        };
        let completed = started + latency;
        out.push(DeliveryEvent {
            event_id: event_id.clone(),
            tenant: tenant.to_string(),
            platform: p.platform.to_string(),
            direction: p.direction,
            attempt,
            max_attempts: p.max_attempts,
            outcome,
            enqueued_at,
            started_at: started,
            completed_at: completed,
            http_status: Some(status),
            error: error.map(str::to_string),
        });
        if outcome != Outcome::Retrying {
            break;
        }
        let backoff = MICROS_PER_SEC << (attempt - 1);
        started = completed + backoff + rng.below(backoff as u64 / 4) as Micros;
    }
    out
}

/// A whole pilot: `events` logical events of `tenant` enqueued uniformly over
/// `[start, start + span)`, all attempts sorted by completion time.
pub fn pilot(
    seed: u64,
    tenant: &str,
    start: Micros,
    span: Micros,
    events: u64,
) -> Vec<DeliveryEvent> {
    pilot_of(&globex_profiles(), seed, tenant, start, span, events)
}

/// [`pilot`] with other platform profiles (their shares summing to 1).
pub fn pilot_of(
    profiles: &[Profile],
    seed: u64,
    tenant: &str,
    start: Micros,
    span: Micros,
    events: u64,
) -> Vec<DeliveryEvent> {
    let mut rng = Rng::new(seed);
    let mut out = Vec::with_capacity(events as usize * 11 / 10);
    let mut seq = vec![0u64; profiles.len()];
    for _ in 0..events {
        let mut pick = rng.f64();
        let mut idx = profiles.len() - 1;
        for (i, p) in profiles.iter().enumerate() {
            if pick < p.share {
                idx = i;
                break;
            }
            pick -= p.share;
        }
        let p = &profiles[idx];
        seq[idx] += 1;
        let enqueued = start + rng.below(span as u64) as Micros;
        let week = ((enqueued - start) / (7 * MICROS_PER_DAY)) as u32;
        let id = format!("{tenant}-{}-{:07}", p.platform, seq[idx]);
        out.extend(attempts(
            &mut rng,
            p,
            tenant,
            id,
            enqueued,
            week < p.incident_weeks,
        ));
    }
    out.sort_by_key(|e| (e.completed_at, e.attempt));
    out
}

/// The 10-week Globex fixture: 28,947 events from 2025-09-08, as in the seed report.
pub fn globex_fixture() -> Vec<DeliveryEvent> {
    let start = crate::time::parse_date("2025-09-08").unwrap_or_default();
    pilot(42, "globex", start, 70 * MICROS_PER_DAY, 28_947)
}
