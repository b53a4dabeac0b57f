//! Types generated from `proto/slatrack/v1/*.proto` by prost (see build.rs).
#![allow(clippy::all, missing_docs)]
include!(concat!(env!("OUT_DIR"), "/slatrack.v1.rs"));
