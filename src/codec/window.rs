//! The published window's wire form: a `WindowSummary` value under a `WindowKey` key
//! (proto/slatrack/v1/window.proto), both protobuf, so no field a tenant or platform id can
//! contain makes a key ambiguous.

use crate::engine::{ClosedBucket, Counters, KeyInfo, Stats};
use crate::event::Direction;
use crate::proto;
use crate::time::{Micros, MICROS_PER_MILLI};
use prost::Message as _;

/// A closed bucket of `source` (or a correction to add to one) as a `WindowSummary`.
pub fn encode(source: &str, b: &ClosedBucket, correction: bool) -> Vec<u8> {
    let c = &b.stats.counters;
    proto::WindowSummary {
        source: source.to_string(),
        tenant: b.key.tenant.to_string(),
        platform: b.key.platform.to_string(),
        direction: b.key.direction.as_str().to_string(),
        bucket_start_ms: b.start / MICROS_PER_MILLI,
        bucket_secs: u32::try_from(b.width_us / 1_000_000).unwrap_or(u32::MAX),
        attempts: c.attempts,
        events: c.events,
        delivered: c.delivered,
        failed: c.failed,
        dead_lettered: c.dead_lettered,
        on_time: c.on_time,
        retried: c.retried,
        max_retries: c.max_retries,
        latency_sum_us: c.latency_sum_us,
        target_latency_ms: u32::try_from(b.key.target_latency_us / 1000).unwrap_or(u32::MAX),
        latency_histogram: b.stats.histogram_bytes(),
        correction,
    }
    .encode_to_vec()
}

/// The key of the `seq`th window published for `source`.
pub fn key(source: &str, seq: i64) -> Vec<u8> {
    proto::WindowKey {
        source: source.to_string(),
        seq,
    }
    .encode_to_vec()
}

/// Why a published record does not decode.
#[derive(Debug, thiserror::Error)]
pub enum WindowDecodeError {
    #[error("not a WindowSummary: {0}")]
    Protobuf(#[from] prost::DecodeError),
    #[error("WindowSummary direction {0:?} is neither inbound nor outbound")]
    Direction(String),
    #[error("WindowSummary latency histogram: {0}")]
    Histogram(String),
}

/// A published window read back: its source, the bucket, and whether it is a correction.
pub fn decode(bytes: &[u8]) -> Result<(String, ClosedBucket, bool), WindowDecodeError> {
    let ws = proto::WindowSummary::decode(bytes)?;
    let direction =
        Direction::parse(&ws.direction).ok_or(WindowDecodeError::Direction(ws.direction))?;
    let bucket = ClosedBucket {
        key: std::sync::Arc::new(KeyInfo {
            tenant: ws.tenant.as_str().into(),
            platform: ws.platform.as_str().into(),
            direction,
            target_latency_us: u64::from(ws.target_latency_ms) * 1000,
        }),
        start: ws.bucket_start_ms * MICROS_PER_MILLI,
        width_us: Micros::from(ws.bucket_secs) * 1_000_000,
        stats: Stats {
            counters: Counters {
                attempts: ws.attempts,
                events: ws.events,
                delivered: ws.delivered,
                failed: ws.failed,
                dead_lettered: ws.dead_lettered,
                on_time: ws.on_time,
                retried: ws.retried,
                max_retries: ws.max_retries,
                latency_sum_us: ws.latency_sum_us,
            },
            latency: Stats::latencies_from_bytes(&ws.latency_histogram)
                .map_err(WindowDecodeError::Histogram)?,
        },
    };
    Ok((ws.source, bucket, ws.correction))
}

/// A published record's key read back: (source, seq).
pub fn decode_key(bytes: &[u8]) -> Result<(String, i64), prost::DecodeError> {
    let k = proto::WindowKey::decode(bytes)?;
    Ok((k.source, k.seq))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_unambiguous_whatever_the_ids_hold() {
        // With a separator, ("a\x1fb", 1) and ("a", …) could collide; protobuf cannot.
        assert_ne!(key("a\u{1f}b", 1), key("a", 1));
        assert_eq!(
            decode_key(&key("a\u{1f}b", 7)).unwrap(),
            ("a\u{1f}b".into(), 7)
        );
    }

    #[test]
    fn a_window_round_trips() {
        let mut stats = Stats::default();
        for ms in [5u64, 50, 500] {
            stats.counters.attempts += 1;
            stats.counters.events += 1;
            stats.counters.latency_sum_us += ms * 1000;
            stats.latency.record(ms * 1000);
        }
        let b = ClosedBucket {
            key: std::sync::Arc::new(KeyInfo {
                tenant: "t\u{1f}x".into(),
                platform: "workday".into(),
                direction: Direction::Outbound,
                target_latency_us: 250_000,
            }),
            start: 1_700_000_040_000_000,
            width_us: 60_000_000,
            stats,
        };
        let (source, back, correction) = decode(&encode("kafka:d/0", &b, true)).unwrap();
        assert_eq!(source, "kafka:d/0");
        assert!(correction);
        assert_eq!(
            (&back.key.tenant, &back.key.platform, back.key.direction),
            (&b.key.tenant, &b.key.platform, b.key.direction)
        );
        assert_eq!(back.key.target_latency_us, b.key.target_latency_us);
        assert_eq!((back.start, back.width_us), (b.start, b.width_us));
        assert_eq!(back.stats, b.stats);
    }
}
