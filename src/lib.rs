//! slatrack: event-time-correct SLA telemetry from webhook/API delivery events.
//!
//! Data flows one way: input (`source` files, `kafka`) → `codec` (validated
//! [`event::DeliveryEvent`]s or rejections) → `engine` (buckets, watermark, dedup, rolling
//! windows) → `store` and `sink`; `service` wires them for `slatrack run`, `replay` for
//! files, and `scorecard` reads the store. `config` is the one settings tree.
//! docs/architecture.md maps every module.

// The exceptions: `engine::prefetch` (a cache hint) and `kafka::fetch_queue` (librdkafka's
// batch read, which the `rdkafka` crate does not offer).
#![deny(unsafe_code)]

pub mod codec;
pub mod config;
pub mod contract;
pub mod engine;
pub mod event;
pub mod kafka;
pub mod pipeline;
pub mod proto;
pub mod replay;
pub mod report;
pub mod rules;
pub mod runtime;
pub mod scorecard;
pub mod service;
pub mod sink;
pub mod sla;
pub mod slo;
pub mod source;
pub mod store;
pub mod synthetic;
pub mod time;
