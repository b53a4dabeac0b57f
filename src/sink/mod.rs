//! Where engine output and rejected input go besides the SQLite store.

pub mod http;
pub mod prometheus;
pub mod quarantine;
