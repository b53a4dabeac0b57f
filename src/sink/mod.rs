//! Where engine output and rejected input go besides the store: Prometheus, the
//! quarantine topic and the published windows.

pub mod http;
pub mod prometheus;
pub mod quarantine;
pub mod windows;
