//! slatrack: event-time-correct SLA telemetry from webhook/API delivery events.
//!
//! Data flows one way: `source` (bytes) → `codec` (validated [`event::DeliveryEvent`]s or
//! rejections) → `engine` (buckets, watermark, dedup, rolling windows) → `store` /
//! sinks; `scorecard` reads the store. `config` is the one settings tree.

// The only exception is `engine::prefetch` (a cache hint).
#![deny(unsafe_code)]

pub mod codec;
pub mod config;
pub mod engine;
pub mod event;
pub mod pipeline;
pub mod proto;
pub mod replay;
pub mod rules;
pub mod scorecard;
pub mod service;
pub mod sink;
pub mod sla;
pub mod source;
pub mod store;
pub mod time;
