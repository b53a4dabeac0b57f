//! JSON lines: snake_case fields as in the protobuf contract, RFC 3339 timestamps.
//! Unknown fields are ignored so producers can add fields before slatrack knows them.

use crate::event::{DeliveryEvent, Direction, Outcome, RejectReason, Rejected};
use crate::time::{format_rfc3339, parse_rfc3339_cached, DateCache};
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

mod scan;

/// A record's fields as read, before they are typed and checked: borrowed from the bytes
/// (the scanner) or from serde_json's `Wire` (which owns strings it had to unescape).
#[derive(Debug, Default, PartialEq)]
struct Flat<'a> {
    event_id: Option<&'a str>,
    tenant: Option<&'a str>,
    platform: Option<&'a str>,
    direction: Option<&'a str>,
    attempt: u32,
    max_attempts: u32,
    outcome: Option<&'a str>,
    enqueued_at: Option<&'a str>,
    started_at: Option<&'a str>,
    completed_at: Option<&'a str>,
    http_status: Option<u32>,
    error: Option<&'a str>,
}

impl<'a> Wire<'a> {
    fn flat(&'a self) -> Flat<'a> {
        Flat {
            event_id: self.event_id.as_deref(),
            tenant: self.tenant.as_deref(),
            platform: self.platform.as_deref(),
            direction: self.direction.as_deref(),
            attempt: self.attempt,
            max_attempts: self.max_attempts,
            outcome: self.outcome.as_deref(),
            enqueued_at: self.enqueued_at.as_deref(),
            started_at: self.started_at.as_deref(),
            completed_at: self.completed_at.as_deref(),
            http_status: self.http_status,
            error: self.error.as_deref(),
        }
    }
}

/// Decodes into `out`, copying the strings into its buffers, which keep their capacity:
/// a steady stream decodes without allocating. Records of the
/// simple shape are read by [`scan`]; serde_json reads the rest. `dates` carries the last
/// date read from one record to the next: a stream's records mostly share their date.
pub fn decode_into(
    bytes: &[u8],
    out: &mut DeliveryEvent,
    dates: &mut DateCache,
) -> Result<(), Rejected> {
    if let Some(f) = scan::scan(bytes) {
        return fill(&f, out, dates);
    }
    let w: Wire =
        serde_json::from_slice(bytes).map_err(|_| Rejected::bare(RejectReason::MalformedJson))?;
    fill(&w.flat(), out, dates)
}

/// Whether the scanner read `bytes` (`Ok(true)`), left them to serde_json (`Ok(false)`),
/// or read them differently from serde_json (`Err`, our bug).
#[cfg(any(test, fuzzing))]
fn scanner_agrees(bytes: &[u8]) -> Result<bool, String> {
    let Some(ours) = scan::scan(bytes) else {
        return Ok(false);
    };
    match serde_json::from_slice::<Wire>(bytes) {
        Ok(w) if ours == w.flat() => Ok(true),
        Ok(w) => Err(format!("scanner read {ours:?}, serde_json {:?}", w.flat())),
        Err(e) => Err(format!("the scanner accepted what serde_json rejects: {e}")),
    }
}

/// Panics if the scanner reads `bytes` differently from serde_json: the `decode_json`
/// fuzz target's oracle, built only under `cargo fuzz` (`--cfg fuzzing`).
#[cfg(fuzzing)]
pub fn check_scanner(bytes: &[u8]) {
    if let Err(e) = scanner_agrees(bytes) {
        panic!("{e}");
    }
}

fn fill(f: &Flat<'_>, out: &mut DeliveryEvent, dates: &mut DateCache) -> Result<(), Rejected> {
    let set = |dst: &mut String, c: Option<&str>| {
        dst.clear();
        dst.push_str(c.unwrap_or_default());
    };
    let mut ts = |c: Option<&str>| c.and_then(|s| parse_rfc3339_cached(s, dates));
    set(&mut out.event_id, f.event_id);
    set(&mut out.tenant, f.tenant);
    set(&mut out.platform, f.platform);
    out.error = f.error.filter(|e| !e.is_empty()).map(str::to_string);
    super::finish(
        out,
        super::Scalars {
            direction: f.direction.and_then(Direction::parse),
            outcome: f.outcome.and_then(Outcome::parse),
            attempt: f.attempt,
            max_attempts: f.max_attempts,
            enqueued_at: ts(f.enqueued_at),
            started_at: ts(f.started_at),
            completed_at: ts(f.completed_at),
            http_status: f.http_status,
        },
    )
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
