//! The same records through `slatrack replay`: what every live run in the suite must equal.
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Writes `payloads`, in order, as one length-delimited protobuf file (`dir/same.pb`) and
/// replays it into a fresh SQLite store (`dir/replay.db`). Returns the store's path and
/// what replay counted.
pub fn replay<'a>(
    dir: &Path,
    config: Arc<slatrack::config::Config>,
    payloads: impl IntoIterator<Item = &'a Vec<u8>>,
) -> (PathBuf, slatrack::replay::ReplaySummary) {
    let file = dir.join("same.pb");
    let mut w = std::io::BufWriter::new(std::fs::File::create(&file).unwrap());
    for v in payloads {
        let mut len = Vec::new();
        prost::encoding::encode_varint(v.len() as u64, &mut len);
        w.write_all(&len).unwrap();
        w.write_all(v).unwrap();
    }
    drop(w);
    let store = dir.join("replay.db");
    let mut s = slatrack::store::SqliteStore::open(&store).unwrap();
    let opts = slatrack::replay::ReplayOptions {
        inputs: vec![file],
        format: None,
        bounds: None,
    };
    let summary = slatrack::replay::run(config, &mut s, &opts, |_| {}).unwrap();
    (store, summary)
}
