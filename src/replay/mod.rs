//! `slatrack replay`: event-log files through the same pipeline as the live service,
//! into the store, in one transaction.
//!
//! A replay run is one store *source*, named after a hash of its inputs' contents and
//! formats. Running the same inputs again replaces that source's rows instead of adding
//! to them. Different inputs are different sources and add up, but a record another
//! replay counted (or rejected) is not counted again ([`ledger`]): replays are idempotent
//! by the events they contain, not by their bytes.

mod ledger;

use crate::codec::Format;
use crate::config::Config;
use crate::event::{RejectReason, Rejected};
use crate::pipeline::Pipeline;
use crate::source::file::{format_of, FileError, Frame, RecordReader};
use crate::store::{ReplayStore, StoreError};
use crate::time::now_micros;
use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(transparent)]
    Input(#[from] FileError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("none of the {records} records decodes as {formats}: is the input's format right (--format, or the file extension)? Nothing was written")]
    NothingDecodes { records: u64, formats: String },
}

#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ReplaySummary {
    pub source: String,
    pub records: u64,
    /// Attempts counted.
    pub counted: u64,
    /// Terminal records counted (logical events).
    pub events: u64,
    pub duplicates: u64,
    /// Records an earlier replay counted or rejected: not counted again.
    pub already_counted: u64,
    /// Records counted as corrections of closed buckets (part of `counted`).
    pub corrected: u64,
    /// Rejected as older than the correction horizon.
    pub too_late: u64,
    pub rejected: BTreeMap<String, u64>,
    pub buckets_written: u64,
    /// The tenants this replay's data covers, with the span of their buckets.
    pub coverage: Vec<crate::store::Coverage>,
}

pub struct ReplayOptions {
    pub inputs: Vec<PathBuf>,
    pub format: Option<Format>,
    /// Overrides the future-skew bound (tests replaying fixed data use `None` = config).
    pub bounds: Option<crate::event::TimeBounds>,
}

/// Hash of the inputs' bytes and formats: the replay's source id.
fn source_id(inputs: &[(PathBuf, Format)]) -> Result<String, FileError> {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    let mut buf = vec![0u8; 1 << 16];
    for (path, format) in inputs {
        h.update(match format {
            Format::Json => b"json\x00",
            Format::Protobuf => b"pb\x00\x00\x00",
        });
        let io = |source| FileError::Io {
            path: path.clone(),
            source,
        };
        let mut f = std::fs::File::open(path).map_err(io)?;
        loop {
            let n = f.read(&mut buf).map_err(io)?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
        h.update(b"\x00slatrack-file-boundary\x00");
    }
    Ok(format!("replay:{:016x}", h.digest()))
}

/// Adds what a write of replay output holds to the summary.
fn tally_output(summary: &mut ReplaySummary, out: &crate::pipeline::Committed) {
    let (buckets, corrections) = (&out.buckets, &out.corrections);
    for b in buckets.iter().chain(corrections) {
        summary.events += b.stats.counters.events;
    }
    summary.buckets_written += buckets.len() as u64;
}

pub fn run(
    config: Arc<Config>,
    store: &mut dyn ReplayStore,
    opts: &ReplayOptions,
    mut progress: impl FnMut(u64),
) -> Result<ReplaySummary, ReplayError> {
    let inputs = opts
        .inputs
        .iter()
        .map(|path| {
            Ok((
                path.clone(),
                opts.format.map_or_else(|| format_of(path), Ok)?,
            ))
        })
        .collect::<Result<Vec<_>, FileError>>()?;
    let source = source_id(&inputs)?;
    let bounds = opts.bounds.unwrap_or_else(|| Pipeline::bounds(&config));
    let tx = store.begin()?;
    let writer: &dyn crate::store::StoreTx = &*tx;
    writer.clear_source(&source)?;
    let mut ledger = ledger::Ledger::open(
        writer,
        &source,
        config.engine.bucket.0,
        config.limits.correction_cache_keys,
    )?;
    let mut summary = ReplaySummary {
        source: source.clone(),
        ..Default::default()
    };
    let now = now_micros();
    let mut pipeline: Option<Pipeline> = None;
    for (path, format) in &inputs {
        let format = *format;
        // One pipeline (one shard) across all files: dedup and the watermark span inputs.
        let p = pipeline.get_or_insert_with(|| Pipeline::new(config.clone(), format, bounds));
        p.set_format(format);
        let mut reader = RecordReader::open(path, format, config.limits.max_record_bytes)?;
        while let Some(frame) = reader.next_frame()? {
            // What each record became is in the shard's tally and the reject tally.
            match frame {
                Frame::Record(bytes) => {
                    ledger.process(p, writer, bytes, now)?;
                }
                Frame::Oversized => {
                    p.records += 1;
                    p.rejects.add(&Rejected::bare(RejectReason::TooLarge), None);
                }
                Frame::Truncated => {
                    p.records += 1;
                    p.rejects
                        .add(&Rejected::bare(RejectReason::MalformedProtobuf), None);
                    tracing::warn!(path = %path.display(), "input ends inside a record; the rest of the file is unreadable");
                    break;
                }
            }
            let out = p.write_replay_output(writer, &source, false)?;
            tally_output(&mut summary, &out);
            if p.records.is_multiple_of(65_536) {
                progress(p.records);
            }
        }
    }
    if let Some(p) = pipeline.as_mut() {
        p.shard.flush();
        let out = p.write_replay_output(writer, &source, true)?;
        tally_output(&mut summary, &out);
        p.rejects.write(writer, &source)?;
        ledger.write(writer)?;
        p.rejects.written();
        summary.records = p.records;
        summary.counted = p.shard.tally.counted;
        summary.duplicates = p.shard.tally.duplicates;
        summary.too_late = p.shard.tally.too_late;
        summary.corrected = p.shard.tally.corrected;
        summary.rejected = p
            .rejects
            .totals
            .iter()
            .map(|(r, n)| (r.code().to_string(), *n))
            .collect();
        progress(p.records);
        summary.already_counted = ledger.already;
        let malformed = |r: &str| {
            r == RejectReason::MalformedJson.code() || r == RejectReason::MalformedProtobuf.code()
        };
        if p.records > 0
            && p.shard.tally.counted + p.shard.tally.duplicates + p.shard.tally.corrected == 0
            && ledger.already == 0
            && p.shard.staged_len() == 0
            && summary.rejected.keys().all(|r| malformed(r))
        {
            let mut formats: Vec<&str> = inputs
                .iter()
                .map(|(_, f)| match f {
                    Format::Json => "JSON",
                    Format::Protobuf => "protobuf",
                })
                .collect();
            formats.dedup();
            return Err(ReplayError::NothingDecodes {
                records: p.records,
                formats: formats.join(" or "),
            });
        }
    }
    tx.commit()?;
    summary.coverage = store.coverage(Some(&source))?;
    Ok(summary)
}

impl ReplaySummary {
    /// The summary a user reads after `slatrack replay` into `store`.
    pub fn text(&self, store: &impl std::fmt::Display) -> String {
        let s = self;
        use std::fmt::Write as _;
        let mut o = String::new();
        let _ = writeln!(o, "replayed into {} as source {}", store, s.source);
        let _ = writeln!(o, "  records     {:>10}", s.records);
        let _ = writeln!(o, "  counted     {:>10}  (attempts)", s.counted);
        let _ = writeln!(o, "  events      {:>10}  (terminal records)", s.events);
        let _ = writeln!(o, "  duplicates  {:>10}", s.duplicates);
        let _ = writeln!(
            o,
            "  already     {:>10}  (counted or rejected by an earlier replay)",
            s.already_counted
        );
        let _ = writeln!(o, "  corrected   {:>10}", s.corrected);
        let _ = writeln!(o, "  too late    {:>10}", s.too_late);
        let rejected: u64 = s.rejected.values().sum();
        let _ = writeln!(o, "  rejected    {:>10}", rejected);
        for (reason, n) in &s.rejected {
            let _ = writeln!(o, "    {reason:<26}{n:>8}");
        }
        let _ = writeln!(o, "  buckets     {:>10}", s.buckets_written);
        for c in &s.coverage {
            let _ = writeln!(o, "  {}", c.describe());
        }
        o
    }
}
