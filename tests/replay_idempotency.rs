//! Replays are idempotent by the events they contain: a file that grew, a log split in
//! parts, lines shuffled within hours, the same inputs again, in any order — each gives
//! the scorecard (markdown and JSON) of one replay of the whole sorted log.

#[path = "support/scorecard.rs"]
mod scorecard;

use scorecard::cards;
use slatrack::codec::Format;
use slatrack::config::Config;
use slatrack::event::DeliveryEvent;
use slatrack::replay::{self, ReplayError, ReplayOptions, ReplaySummary};
use slatrack::store::SqliteStore;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

fn write(path: &Path, events: &[DeliveryEvent]) {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).expect("create"));
    for e in events {
        writeln!(f, "{}", slatrack::codec::json::encode(e)).expect("write");
    }
}

fn replay_with(
    store: &Path,
    inputs: &[&Path],
    format: Option<Format>,
) -> Result<ReplaySummary, ReplayError> {
    let mut s = SqliteStore::open(store).expect("store");
    let opts = ReplayOptions {
        inputs: inputs.iter().map(|p| p.to_path_buf()).collect(),
        format,
        bounds: None,
    };
    replay::run(Arc::new(Config::default()), &mut s, &opts, |_| {})
}

fn replay(store: &Path, inputs: &[&Path]) -> ReplaySummary {
    replay_with(store, inputs, None).expect("replay")
}

struct Log {
    dir: tempfile::TempDir,
    events: Vec<DeliveryEvent>,
    /// Scorecards of one replay of the whole log.
    want: (String, String),
    /// Attempts that replay counted.
    counted: u64,
}

fn log() -> Log {
    let dir = tempfile::tempdir().expect("dir");
    let events = slatrack::synthetic::globex_fixture();
    let whole = dir.path().join("whole.jsonl");
    write(&whole, &events);
    let reference = dir.path().join("reference.db");
    let counted = replay(&reference, &[&whole]).counted;
    assert!(counted > 30_000, "{counted}");
    let want = cards(&reference);
    Log {
        dir,
        events,
        want,
        counted,
    }
}

impl Log {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// Half a day's log replayed, then the whole log after it grew (same path): each event
/// counted once.
#[test]
fn a_file_that_grew_counts_each_event_once() {
    let log = log();
    let (file, store) = (log.path("day.jsonl"), log.path("s.db"));
    let half = log.events.len() / 2;
    write(&file, &log.events[..half]);
    let first = replay(&store, &[&file]);
    write(&file, &log.events);
    let second = replay(&store, &[&file]);
    assert_ne!(first.source, second.source);
    assert!(second.already_counted >= first.counted, "{second:?}");
    assert_eq!(first.counted + second.counted, log.counted);
    assert_eq!(cards(&store), log.want);
}

/// A log split in two parts and the whole log, replayed in either order, each part again
/// after: each event counted once, a replay of the same inputs replaces its own rows.
#[test]
fn a_log_split_in_parts_counts_each_event_once_in_any_order() {
    let log = log();
    let third = log.events.len() / 3;
    let (a, b) = (log.path("part-a.jsonl"), log.path("part-b.jsonl"));
    write(&a, &log.events[..third]);
    write(&b, &log.events[third..]);
    let whole = log.path("whole.jsonl");

    let parts_first = log.path("parts-first.db");
    let ra = replay(&parts_first, &[&a]);
    let rb = replay(&parts_first, &[&b]);
    assert_eq!(ra.counted + rb.counted, log.counted);
    let rw = replay(&parts_first, &[&whole]);
    assert_eq!(rw.counted, 0, "every event was counted by the parts");
    assert_eq!(cards(&parts_first), log.want);

    let whole_first = log.path("whole-first.db");
    assert_eq!(replay(&whole_first, &[&whole]).counted, log.counted);
    assert_eq!(replay(&whole_first, &[&b]).counted, 0);
    assert_eq!(replay(&whole_first, &[&a, &b]).counted, 0);
    // The whole log's replay again: its source is replaced, not added to.
    assert_eq!(replay(&whole_first, &[&whole]).counted, log.counted);
    assert_eq!(cards(&whole_first), log.want);
}

/// Lines shuffled within three-hour windows (far past the lateness, within the
/// correction horizon), replayed twice: the sorted log's scorecard.
#[test]
fn a_file_shuffled_within_hours_gives_the_sorted_scorecard() {
    let log = log();
    let window = 3 * 3_600_000_000;
    let mut shuffled = log.events.clone();
    // A fixed permutation within each window: a multiplicative hash of the index.
    let mut keyed: Vec<(i64, u64, DeliveryEvent)> = shuffled
        .drain(..)
        .enumerate()
        .map(|(i, e)| {
            let k = (i as u64)
                .wrapping_mul(0x9E37_79B9_7F4A_7C15)
                .rotate_left(17);
            (e.completed_at.div_euclid(window), k, e)
        })
        .collect();
    keyed.sort_by_key(|(w, k, _)| (*w, *k));
    let shuffled: Vec<DeliveryEvent> = keyed.into_iter().map(|(_, _, e)| e).collect();
    let file = log.path("shuffled.jsonl");
    write(&file, &shuffled);
    let store = log.path("s.db");
    let first = replay(&store, &[&file]);
    assert!(
        first.corrected > 1_000,
        "late records are corrections: {first:?}"
    );
    assert_eq!(first.counted, log.counted);
    let again = replay(&store, &[&file]);
    assert_eq!(
        again.counted, log.counted,
        "the same inputs replace their rows"
    );
    assert_eq!(cards(&store), log.want);
}

/// Protobuf read as JSON: nothing decodes, the replay fails and writes nothing; the
/// correct replay of the same bytes is then counted in full.
#[test]
fn the_wrong_format_writes_nothing() {
    let log = log();
    let pb = log.path("log.pb");
    {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&pb).expect("create"));
        for e in &log.events {
            let m = slatrack::codec::protobuf::to_message(e);
            f.write_all(&prost::Message::encode_length_delimited_to_vec(&m))
                .expect("write");
        }
    }
    let store = log.path("s.db");
    let err = replay_with(&store, &[&pb], Some(Format::Json)).expect_err("nothing decodes");
    assert!(err.to_string().contains("format"), "{err}");
    assert_eq!(replay(&store, &[&pb]).counted, log.counted);
    assert_eq!(cards(&store), log.want);
}
