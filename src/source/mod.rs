//! Event-log files for `slatrack replay`: raw record bytes, one frame at a time, with the
//! same size cap as live records. Live records come from Kafka (`crate::kafka`); decoding
//! is shared (`crate::codec`).

pub mod file;
