//! JSON lines: snake_case fields as in the protobuf contract, RFC 3339 timestamps.
//! Unknown fields are ignored so producers can add fields before slatrack knows them.

use crate::event::{DeliveryEvent, Direction, Outcome, RejectReason, Rejected};
use crate::time::{format_rfc3339, parse_rfc3339};
use serde::Deserialize;
use std::borrow::Cow;

#[derive(Deserialize)]
struct Wire<'a> {
    #[serde(borrow, default)]
    event_id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    tenant: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    platform: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    direction: Option<Cow<'a, str>>,
    #[serde(default)]
    attempt: u32,
    #[serde(default)]
    max_attempts: u32,
    #[serde(borrow, default)]
    outcome: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    enqueued_at: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    started_at: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    completed_at: Option<Cow<'a, str>>,
    #[serde(default)]
    http_status: Option<u32>,
    #[serde(borrow, default)]
    error: Option<Cow<'a, str>>,
}

pub fn decode(bytes: &[u8]) -> Result<DeliveryEvent, Rejected> {
    let w: Wire =
        serde_json::from_slice(bytes).map_err(|_| Rejected::bare(RejectReason::MalformedJson))?;
    let s = |c: Option<Cow<str>>| c.map(Cow::into_owned).unwrap_or_default();
    let ts = |c: &Option<Cow<str>>| c.as_deref().and_then(parse_rfc3339);
    super::assemble(super::Fields {
        enqueued_at: ts(&w.enqueued_at),
        started_at: ts(&w.started_at),
        completed_at: ts(&w.completed_at),
        outcome: w.outcome.as_deref().and_then(Outcome::parse),
        direction: w.direction.as_deref().and_then(Direction::parse),
        event_id: s(w.event_id),
        tenant: s(w.tenant),
        platform: s(w.platform),
        attempt: w.attempt,
        max_attempts: w.max_attempts,
        http_status: w.http_status,
        error: w.error.map(Cow::into_owned),
    })
}

/// One JSON line (without the newline).
pub fn encode(ev: &DeliveryEvent) -> String {
    let v = serde_json::json!({
        "event_id": ev.event_id,
        "tenant": ev.tenant,
        "platform": ev.platform,
        "direction": ev.direction.as_str(),
        "attempt": ev.attempt,
        "max_attempts": ev.max_attempts,
        "outcome": ev.outcome.as_str(),
        "enqueued_at": format_rfc3339(ev.enqueued_at),
        "started_at": format_rfc3339(ev.started_at),
        "completed_at": format_rfc3339(ev.completed_at),
        "http_status": ev.http_status,
        "error": ev.error.clone().unwrap_or_default(),
    });
    v.to_string()
}
