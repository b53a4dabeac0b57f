//! Where records come from: files for `replay`, the synthetic generator, and (live) Kafka.
//! Every source yields raw record bytes; decoding is shared (`codec`).

pub mod file;
pub mod generator;
pub mod kafka;
