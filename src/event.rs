//! The one domain type every stage shares: a validated delivery attempt.
//!
//! Decoders (`source::decode`) turn bytes into either a [`DeliveryEvent`] that passed
//! [`validate`] or a [`Rejected`] carrying its [`RejectReason`]. Nothing downstream ever
//! sees an unvalidated record, so the engine's maths can assume the invariants below.

use crate::time::Micros;
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Outcome {
    Delivered,
    /// This attempt failed and another one follows.
    #[default]
    Retrying,
    /// Terminal: no more attempts.
    Failed,
    /// Terminal: moved to the dead-letter queue.
    DeadLettered,
}

impl Outcome {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "delivered" => Self::Delivered,
            "retrying" => Self::Retrying,
            "failed" => Self::Failed,
            "dead_lettered" => Self::DeadLettered,
            _ => return None,
        })
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Delivered => "delivered",
            Self::Retrying => "retrying",
            Self::Failed => "failed",
            Self::DeadLettered => "dead_lettered",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Direction {
    #[default]
    Inbound,
    Outbound,
}

impl Direction {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "inbound" => Self::Inbound,
            "outbound" => Self::Outbound,
            _ => return None,
        })
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Inbound => "inbound",
            Self::Outbound => "outbound",
        }
    }
}

/// One delivery attempt. Invariants after [`validate`]: ids non-empty,
/// `1 <= attempt <= max_attempts`, `enqueued_at <= started_at <= completed_at`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DeliveryEvent {
    pub event_id: String,
    pub tenant: String,
    pub platform: String,
    pub direction: Direction,
    pub attempt: u32,
    pub max_attempts: u32,
    pub outcome: Outcome,
    pub enqueued_at: Micros,
    pub started_at: Micros,
    /// Event time: decides the bucket and window a record belongs to.
    pub completed_at: Micros,
    pub http_status: Option<u32>,
    pub error: Option<String>,
}

impl DeliveryEvent {
    /// The terminal record of a logical event is its record whose outcome is not `retrying`.
    pub fn is_terminal(&self) -> bool {
        self.outcome != Outcome::Retrying
    }
    /// Latency of this attempt alone (`completed_at − started_at`).
    pub fn attempt_latency_us(&self) -> u64 {
        (self.completed_at - self.started_at).max(0) as u64
    }
    /// End-to-end delivery time of the logical event (`completed_at − enqueued_at`).
    pub fn end_to_end_us(&self) -> u64 {
        (self.completed_at - self.enqueued_at).max(0) as u64
    }
}

/// Why a record was not counted. `code()` is the stable label used in counters, the
/// quarantine topic's `reason` header and the store's `rejects` table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RejectReason {
    MalformedJson,
    MalformedProtobuf,
    TooLarge,
    MissingEventId,
    MissingTenant,
    MissingPlatform,
    UnknownOutcome,
    UnknownDirection,
    BadTimestamp,
    TimestampOutOfRange,
    AttemptZero,
    AttemptExceedsMax,
    StartedBeforeEnqueued,
    CompletedBeforeStarted,
    /// Its bucket closed longer ago than `engine.correction_horizon`.
    TooLate,
    /// An id longer than [`MAX_ID_BYTES`]: would make every key it creates huge.
    IdTooLong,
    /// An id with a control character (below 0x20, or 0x7F): a NUL, newline or 0x1F in a
    /// tenant would corrupt a store key, a log line or an exposition label.
    ControlCharacterInId,
}

/// Longest accepted `event_id`, `tenant` or `platform`, in bytes. Ids are labels and map
/// keys: a 100 KB tenant id times `limits.max_keys` would be gigabytes.
pub const MAX_ID_BYTES: usize = 256;

impl RejectReason {
    pub const ALL: [RejectReason; 17] = [
        Self::MalformedJson,
        Self::MalformedProtobuf,
        Self::TooLarge,
        Self::MissingEventId,
        Self::MissingTenant,
        Self::MissingPlatform,
        Self::UnknownOutcome,
        Self::UnknownDirection,
        Self::BadTimestamp,
        Self::TimestampOutOfRange,
        Self::AttemptZero,
        Self::AttemptExceedsMax,
        Self::StartedBeforeEnqueued,
        Self::CompletedBeforeStarted,
        Self::TooLate,
        Self::IdTooLong,
        Self::ControlCharacterInId,
    ];

    pub fn code(self) -> &'static str {
        match self {
            Self::MalformedJson => "malformed_json",
            Self::MalformedProtobuf => "malformed_protobuf",
            Self::TooLarge => "too_large",
            Self::MissingEventId => "missing_event_id",
            Self::MissingTenant => "missing_tenant",
            Self::MissingPlatform => "missing_platform",
            Self::UnknownOutcome => "unknown_outcome",
            Self::UnknownDirection => "unknown_direction",
            Self::BadTimestamp => "bad_timestamp",
            Self::TimestampOutOfRange => "timestamp_out_of_range",
            Self::AttemptZero => "attempt_zero",
            Self::AttemptExceedsMax => "attempt_exceeds_max",
            Self::StartedBeforeEnqueued => "started_before_enqueued",
            Self::CompletedBeforeStarted => "completed_before_started",
            Self::TooLate => "too_late",
            Self::IdTooLong => "id_too_long",
            Self::ControlCharacterInId => "control_character_in_id",
        }
    }

    /// The reason of a code; `late`, what stores written before the correction horizon
    /// called it, reads as `too_late`.
    pub fn from_code(code: &str) -> Option<Self> {
        if code == "late" {
            return Some(Self::TooLate);
        }
        Self::ALL.into_iter().find(|r| r.code() == code)
    }

    /// One sentence for logs and the quarantine: what is wrong and who must fix it.
    pub fn explain(self) -> &'static str {
        match self {
            Self::MalformedJson => "producer bug: the value is not a JSON object of the DeliveryEvent contract",
            Self::MalformedProtobuf => "producer bug: the value does not decode as slatrack.v1.DeliveryEvent",
            Self::TooLarge => "producer bug: the value exceeds limits.max_record_bytes",
            Self::MissingEventId => "producer bug: event_id is missing or empty",
            Self::MissingTenant => "producer bug: tenant is missing or empty",
            Self::MissingPlatform => "producer bug: platform is missing or empty",
            Self::UnknownOutcome => "producer bug or newer schema: outcome is not delivered|retrying|failed|dead_lettered",
            Self::UnknownDirection => "producer bug or newer schema: direction is not inbound|outbound",
            Self::BadTimestamp => "producer bug: a timestamp is missing or not RFC 3339",
            Self::TimestampOutOfRange => "producer clock: a timestamp is before 2000 or beyond validation.max_future_skew from now",
            Self::AttemptZero => "producer bug: attempt is 0 (attempts are 1-based)",
            Self::AttemptExceedsMax => "producer bug: attempt is greater than max_attempts",
            Self::StartedBeforeEnqueued => "producer clock: started_at is before enqueued_at",
            Self::CompletedBeforeStarted => "producer clock: completed_at is before started_at",
            Self::IdTooLong => "producer bug: event_id, tenant or platform is longer than 256 bytes",
            Self::ControlCharacterInId => "producer bug: event_id, tenant or platform contains a control character (NUL, newline, 0x1F, …)",
            Self::TooLate => "arrived after its bucket had closed longer ago than engine.correction_horizon; raise correction_horizon, or replay the period into a new store",
        }
    }
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// A record that was not counted, with whatever could be read of it so that the
/// rejection can be attributed to a tenant and a period where possible.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    pub reason: RejectReason,
    pub tenant: Option<String>,
    pub platform: Option<String>,
    pub completed_at: Option<Micros>,
}

impl Rejected {
    pub fn bare(reason: RejectReason) -> Self {
        Self {
            reason,
            tenant: None,
            platform: None,
            completed_at: None,
        }
    }
}

/// Time plausibility bounds: a single absurd timestamp must not drag the watermark into
/// the future and close every open bucket.
#[derive(Debug, Clone, Copy)]
pub struct TimeBounds {
    pub min: Micros,
    /// `None` disables the future check (used by deterministic tests of old data).
    pub max_future_skew: Option<Micros>,
}

impl TimeBounds {
    /// 2000-01-01T00:00:00Z: nothing in this domain is older.
    pub const MIN_PLAUSIBLE: Micros = 946_684_800_000_000;

    pub fn check(&self, t: Micros, now: Micros) -> bool {
        t >= self.min
            && self
                .max_future_skew
                .is_none_or(|skew| t <= now.saturating_add(skew))
    }
}

/// Whether `s` holds a control character (below 0x20, or DEL). Without an early exit, so
/// it vectorizes: every record's ids are scanned and almost none has one.
#[inline]
fn has_control(s: &str) -> bool {
    s.bytes()
        .fold(false, |found, b| found | (b < 0x20) | (b == 0x7f))
}

/// Semantic checks shared by every decoder, in the order the contract lists them.
pub fn validate(ev: &DeliveryEvent, bounds: &TimeBounds, now: Micros) -> Result<(), RejectReason> {
    if ev.event_id.is_empty() {
        return Err(RejectReason::MissingEventId);
    }
    if ev.tenant.is_empty() {
        return Err(RejectReason::MissingTenant);
    }
    if ev.platform.is_empty() {
        return Err(RejectReason::MissingPlatform);
    }
    if [&ev.event_id, &ev.tenant, &ev.platform]
        .iter()
        .any(|s| s.len() > MAX_ID_BYTES)
    {
        return Err(RejectReason::IdTooLong);
    }
    if has_control(&ev.event_id) | has_control(&ev.tenant) | has_control(&ev.platform) {
        return Err(RejectReason::ControlCharacterInId);
    }
    if ev.attempt == 0 {
        return Err(RejectReason::AttemptZero);
    }
    if ev.attempt > ev.max_attempts {
        return Err(RejectReason::AttemptExceedsMax);
    }
    for t in [ev.enqueued_at, ev.started_at, ev.completed_at] {
        if !bounds.check(t, now) {
            return Err(RejectReason::TimestampOutOfRange);
        }
    }
    if ev.started_at < ev.enqueued_at {
        return Err(RejectReason::StartedBeforeEnqueued);
    }
    if ev.completed_at < ev.started_at {
        return Err(RejectReason::CompletedBeforeStarted);
    }
    Ok(())
}
