//! Edges between bytes and the domain: JSON lines and protobuf both decode into a
//! validated [`DeliveryEvent`] or a [`Rejected`] with its reason, and encode back (for
//! the generator and tests).

pub mod json;
pub mod protobuf;
pub mod window;

use crate::event::{validate, DeliveryEvent, RejectReason, Rejected, TimeBounds};
use crate::time::Micros;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Json,
    Protobuf,
}

impl Format {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "json" => Some(Self::Json),
            "protobuf" | "proto" => Some(Self::Protobuf),
            _ => None,
        }
    }
}

/// Decodes records of one format, reusing scratch memory between calls.
pub struct Decoder {
    format: Format,
    bounds: TimeBounds,
    max_bytes: usize,
    scratch: crate::proto::DeliveryEvent,
    /// The decoded event, reused: its strings swap with the scratch message's, so both
    /// keep their capacity and a steady stream decodes without allocating.
    event: DeliveryEvent,
    /// The last date a JSON timestamp held, with its day number.
    dates: crate::time::DateCache,
}

impl Decoder {
    pub fn new(format: Format, bounds: TimeBounds, max_bytes: usize) -> Self {
        Self {
            format,
            bounds,
            max_bytes,
            scratch: Default::default(),
            event: DeliveryEvent::default(),
            dates: Default::default(),
        }
    }

    pub fn with_format(&self, format: Format) -> Self {
        Self::new(format, self.bounds, self.max_bytes)
    }

    pub fn format(&self) -> Format {
        self.format
    }

    /// Bytes → validated event, or the reason it is not one. `now` is the wall clock,
    /// for the future-skew bound.
    pub fn decode(&mut self, bytes: &[u8], now: Micros) -> Result<&DeliveryEvent, Rejected> {
        if bytes.len() > self.max_bytes {
            return Err(Rejected::bare(RejectReason::TooLarge));
        }
        match self.format {
            Format::Json => json::decode_into(bytes, &mut self.event, &mut self.dates)?,
            Format::Protobuf => protobuf::decode_into(bytes, &mut self.scratch, &mut self.event)?,
        };
        validate(&self.event, &self.bounds, now)
            .map_err(|reason| attributed(reason, &self.event))?;
        Ok(&self.event)
    }
}

/// A rejection that keeps what could be read, so it is attributed to a tenant and period.
pub(crate) fn attributed(reason: RejectReason, ev: &DeliveryEvent) -> Rejected {
    if matches!(
        reason,
        RejectReason::IdTooLong | RejectReason::ControlCharacterInId
    ) {
        // Not attributed: the id must not become a tenant row or label.
        return Rejected {
            completed_at: Some(ev.completed_at),
            ..Rejected::bare(reason)
        };
    }
    let nonempty = |s: &str| (!s.is_empty()).then(|| s.to_string());
    Rejected {
        reason,
        tenant: nonempty(&ev.tenant),
        platform: nonempty(&ev.platform),
        completed_at: Some(ev.completed_at),
    }
}

/// The typed fields of a record decoded in place (its strings are already in the event):
/// `None` where absent, unknown or unparseable.
pub(crate) struct Scalars {
    pub direction: Option<crate::event::Direction>,
    pub outcome: Option<crate::event::Outcome>,
    pub attempt: u32,
    pub max_attempts: u32,
    pub enqueued_at: Option<Micros>,
    pub started_at: Option<Micros>,
    pub completed_at: Option<Micros>,
    pub http_status: Option<u32>,
}

/// Sets the event's typed fields and applies the structural checks, attributing a
/// rejection to what could be read; shared by the in-place decoders.
pub(crate) fn finish(out: &mut DeliveryEvent, f: Scalars) -> Result<(), Rejected> {
    out.direction = f.direction.unwrap_or(crate::event::Direction::Inbound);
    out.outcome = f.outcome.unwrap_or(crate::event::Outcome::Retrying);
    out.attempt = f.attempt;
    out.max_attempts = f.max_attempts;
    out.enqueued_at = f.enqueued_at.unwrap_or(0);
    out.started_at = f.started_at.unwrap_or(0);
    out.completed_at = f.completed_at.unwrap_or(0);
    out.http_status = f.http_status;
    let known = Known {
        outcome: f.outcome.is_some(),
        direction: f.direction.is_some(),
        times: f.enqueued_at.is_some() && f.started_at.is_some() && f.completed_at.is_some(),
    };
    match structural(out, known) {
        None => Ok(()),
        Some(reason) => {
            let mut r = attributed(reason, out);
            r.completed_at = f.completed_at;
            Err(r)
        }
    }
}

/// Which typed fields were read successfully (the event itself holds defaults otherwise).
#[derive(Clone, Copy)]
pub(crate) struct Known {
    pub outcome: bool,
    pub direction: bool,
    /// All three timestamps.
    pub times: bool,
}

/// The structural checks, in contract order.
pub(crate) fn structural(ev: &DeliveryEvent, known: Known) -> Option<RejectReason> {
    Some(if ev.event_id.is_empty() {
        RejectReason::MissingEventId
    } else if ev.tenant.is_empty() {
        RejectReason::MissingTenant
    } else if ev.platform.is_empty() {
        RejectReason::MissingPlatform
    } else if !known.outcome {
        RejectReason::UnknownOutcome
    } else if !known.direction {
        RejectReason::UnknownDirection
    } else if !known.times {
        RejectReason::BadTimestamp
    } else {
        return None;
    })
}
