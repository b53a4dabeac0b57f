//! Types generated from `proto/` by prost (see build.rs): slatrack's own messages, and the
//! Prometheus exposition format's ([`prometheus`]).
#![allow(clippy::all, missing_docs)]
include!(concat!(env!("OUT_DIR"), "/slatrack.v1.rs"));

/// `io.prometheus.client`: the protobuf exposition format (`/metrics` when asked for it).
pub mod prometheus {
    #![allow(clippy::all, missing_docs)]
    include!(concat!(env!("OUT_DIR"), "/io.prometheus.client.rs"));
}
