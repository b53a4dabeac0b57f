//! Protobuf `slatrack.v1.DeliveryEvent` (the default wire format on Kafka).
//! Decoding reuses one scratch message (`clear` + `merge`): its strings keep their
//! capacity, so a steady stream decodes without allocating.

use crate::event::{DeliveryEvent, Direction, Outcome, RejectReason, Rejected};
use crate::proto;
use crate::time::Micros;
use prost::Message;

fn ts(t: &Option<prost_types::Timestamp>) -> Option<Micros> {
    let t = t.as_ref()?;
    if !(0..1_000_000_000).contains(&t.nanos) {
        return None;
    }
    t.seconds
        .checked_mul(1_000_000)?
        .checked_add(i64::from(t.nanos / 1000))
}

fn to_ts(us: Micros) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: us.div_euclid(1_000_000),
        nanos: (us.rem_euclid(1_000_000) * 1000) as i32,
    }
}

/// prost's own decode of one record into a reused message: `clear`, then `merge`.
///
/// Not inlined, so there is one copy of this machine code, shared by the path
/// ([`decode_into`]) and by the engine bench's "prost decode alone". A generic prost
/// `merge` is otherwise compiled once per crate that calls it, and two copies of
/// different layout would make the bench compare two compilations rather than two
/// amounts of work.
#[inline(never)]
pub fn merge_reused(
    scratch: &mut proto::DeliveryEvent,
    bytes: &[u8],
) -> Result<(), prost::DecodeError> {
    scratch.clear();
    scratch.merge(bytes)
}

/// Decodes into `out`, swapping strings with the scratch message so neither side
/// allocates once warm (the hot path; [`decode`] is the owned convenience).
pub fn decode_into(
    bytes: &[u8],
    scratch: &mut proto::DeliveryEvent,
    out: &mut DeliveryEvent,
) -> Result<(), Rejected> {
    merge_reused(scratch, bytes).map_err(|_| Rejected::bare(RejectReason::MalformedProtobuf))?;
    let m = scratch;
    std::mem::swap(&mut out.event_id, &mut m.event_id);
    std::mem::swap(&mut out.tenant, &mut m.tenant);
    std::mem::swap(&mut out.platform, &mut m.platform);
    out.error = m.error.take().filter(|e| !e.is_empty());
    super::finish(
        out,
        super::Scalars {
            direction: direction_of(m.direction),
            outcome: outcome_of(m.outcome),
            attempt: m.attempt,
            max_attempts: m.max_attempts,
            enqueued_at: ts(&m.enqueued_at),
            started_at: ts(&m.started_at),
            completed_at: ts(&m.completed_at),
            http_status: m.http_status,
        },
    )
}

fn outcome_of(v: i32) -> Option<Outcome> {
    match proto::Outcome::try_from(v) {
        Ok(proto::Outcome::Delivered) => Some(Outcome::Delivered),
        Ok(proto::Outcome::Retrying) => Some(Outcome::Retrying),
        Ok(proto::Outcome::Failed) => Some(Outcome::Failed),
        Ok(proto::Outcome::DeadLettered) => Some(Outcome::DeadLettered),
        _ => None,
    }
}

fn direction_of(v: i32) -> Option<Direction> {
    match proto::Direction::try_from(v) {
        Ok(proto::Direction::Inbound) => Some(Direction::Inbound),
        Ok(proto::Direction::Outbound) => Some(Direction::Outbound),
        _ => None,
    }
}

pub fn to_message(ev: &DeliveryEvent) -> proto::DeliveryEvent {
    proto::DeliveryEvent {
        event_id: ev.event_id.clone(),
        tenant: ev.tenant.clone(),
        platform: ev.platform.clone(),
        direction: match ev.direction {
            Direction::Inbound => proto::Direction::Inbound,
            Direction::Outbound => proto::Direction::Outbound,
        } as i32,
        attempt: ev.attempt,
        max_attempts: ev.max_attempts,
        outcome: match ev.outcome {
            Outcome::Delivered => proto::Outcome::Delivered,
            Outcome::Retrying => proto::Outcome::Retrying,
            Outcome::Failed => proto::Outcome::Failed,
            Outcome::DeadLettered => proto::Outcome::DeadLettered,
        } as i32,
        enqueued_at: Some(to_ts(ev.enqueued_at)),
        started_at: Some(to_ts(ev.started_at)),
        completed_at: Some(to_ts(ev.completed_at)),
        http_status: ev.http_status,
        error: ev.error.clone(),
    }
}

pub fn encode(ev: &DeliveryEvent) -> Vec<u8> {
    to_message(ev).encode_to_vec()
}
