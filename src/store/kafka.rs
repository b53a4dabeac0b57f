//! Kafka scorecard store: closed windows, rejection counts and partition checkpoints as
//! records of one compacted topic, for deployments with several instances.
//!
//! Record keys (fields joined by 0x1F) say what a value is; the latest value per key wins:
//!
//! | key | value |
//! |---|---|
//! | `w ␟ source ␟ tenant ␟ platform ␟ bucket_ms` | `WindowSummary` |
//! | `s ␟ source ␟ segment` | `RejectSegment`: a sealed segment's rejections |
//! | `c ␟ source` | `PartitionCheckpoint`, with the open segment's rejections |
//! | `u ␟ source ␟ from_offset` | offsets the log lost before they were read: `to_offset` and `noticed_ms`, 8 bytes each, little-endian |
//! | `m ␟ token` | end-of-log marker (empty, then tombstoned) |
//! | `r ␟ source ␟ from_offset` | `RejectCounts`: read only, the layout before segments |
//!
//! Exactly-once effect without transactions: a partition's windows and sealed segments
//! are produced and acknowledged *before* its checkpoint. Whoever writes a key again — the
//! partition resumed after a crash, or a second owner while a rebalance overlaps two —
//! writes what the first writer did: a window is closed by the same records, a segment's
//! records are rejected by the same state. So writes replace, never add, and a reader
//! counts the segments below its checkpoint's, plus the open one the checkpoint carries.
//!
//! "Read to the end" does not trust the high watermark (tansu's is wrong with memory
//! storage, and it is a race with concurrent writers anyway): the reader produces a marker
//! to every partition and reads until it has seen all of them.

use super::{
    segment_of, Checkpoint, PartitionCommit, PartitionStore, RejectRow, SqliteStore, StoreError,
    StoreTx, StoredReject,
};
use crate::config::KafkaConfig;
use crate::engine::{ClosedBucket, Counters, KeyInfo, Stats};
use crate::event::{Direction, RejectReason};
use crate::kafka::log::TopicLog;
use crate::kafka::producer::{Outgoing, Producer};
use crate::kafka::ClientConfig;
use crate::proto;
use crate::time::{Micros, MICROS_PER_MILLI};
use prost::Message as _;
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

const SEP: u8 = 0x1f;
/// How long a write or a read-to-end may take before the store counts as unavailable.
const TIMEOUT: Duration = Duration::from_secs(30);

/// What a store instance keeps from the log it reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The live service: only checkpoints (windows are write-only for it).
    Checkpoints,
    /// The scorecard reader: everything.
    Everything,
}

pub struct KafkaStore {
    topic: String,
    mode: Mode,
    producer: Producer,
    log: TopicLog,
    partitions: i32,
    /// Latest value per key, as read from the log (tombstones remove).
    values: HashMap<Vec<u8>, Vec<u8>>,
    marker_prefix: String,
    marker_seq: u64,
}

/// Folds one log record into the view: last value per key, tombstones remove.
fn apply(values: &mut HashMap<Vec<u8>, Vec<u8>>, mode: Mode, k: &[u8], v: Option<&[u8]>) {
    let keep = match k.first() {
        Some(b'c') => true,
        Some(b'w' | b's' | b'r' | b'u') => mode == Mode::Everything,
        _ => false,
    };
    if !keep {
        return;
    }
    match v {
        Some(v) => {
            values.insert(k.to_vec(), v.to_vec());
        }
        None => {
            values.remove(k);
        }
    }
}

fn key(kind: u8, parts: &[&str]) -> Vec<u8> {
    let mut k = vec![kind];
    for p in parts {
        k.push(SEP);
        k.extend_from_slice(p.as_bytes());
    }
    k
}

impl KafkaStore {
    pub fn open(
        brokers: &str,
        topic: &str,
        kafka: Option<&KafkaConfig>,
        mode: Mode,
    ) -> Result<Self, StoreError> {
        let err = |why: String| StoreError::Kafka {
            topic: topic.to_string(),
            why,
        };
        let mut base = match kafka {
            Some(k) => crate::kafka::client_config(k).map_err(|e| err(e.to_string()))?,
            None => ClientConfig::new(),
        };
        base.set("bootstrap.servers", brokers);
        let mut pc = base.clone();
        pc.set("enable.idempotence", "true").set("linger.ms", "5");
        // How long a store write may wait for its acknowledgement before the checkpoint
        // fails (and fetching pauses): 20 s unless `[kafka.properties]` says otherwise.
        if pc.get("message.timeout.ms").is_none() {
            pc.set("message.timeout.ms", "20000");
        }
        let producer = Producer::new(&pc).map_err(|e| err(e.to_string()))?;
        let log = TopicLog::open(&base, topic).map_err(err)?;
        let partitions = log.partitions();
        let marker_prefix = format!(
            "{}-{}-{:x}",
            hostname(),
            std::process::id(),
            crate::time::now_micros()
        );
        Ok(Self {
            topic: topic.to_string(),
            mode,
            producer,
            log,
            partitions,
            values: HashMap::new(),
            marker_prefix,
            marker_seq: 0,
        })
    }

    fn err(&self, why: impl Into<String>) -> StoreError {
        StoreError::Kafka {
            topic: self.topic.clone(),
            why: why.into(),
        }
    }

    fn produce(
        &self,
        key: &[u8],
        payload: Option<&[u8]>,
        partition: Option<i32>,
    ) -> Result<(), StoreError> {
        let rec = Outgoing {
            topic: &self.topic,
            key,
            payload,
            partition,
            headers: &[],
        };
        self.producer
            .send(&rec, TIMEOUT)
            .map_err(|e| self.err(e.to_string()))
    }

    /// Waits until everything produced so far is acknowledged (or failed).
    fn deliver(&self) -> Result<(), StoreError> {
        self.producer
            .flush(TIMEOUT)
            .map_err(|e| self.err(e.to_string()))?;
        match self.producer.take_failure() {
            Some(e) => Err(self.err(format!("write failed: {e}"))),
            None => Ok(()),
        }
    }

    /// Reads the log up to a marker this call writes to every partition: afterwards the
    /// view holds every record acknowledged before the call started.
    pub fn sync(&mut self) -> Result<(), StoreError> {
        self.marker_seq += 1;
        let token = format!("{}-{}", self.marker_prefix, self.marker_seq);
        let mk = key(b'm', &[&token]);
        for p in 0..self.partitions {
            self.produce(&mk, Some(b""), Some(p))?;
        }
        self.deliver()?;
        let mut seen = HashSet::new();
        let deadline = Instant::now() + TIMEOUT;
        while seen.len() < self.partitions as usize {
            if Instant::now() > deadline {
                return Err(self.err(format!(
                    "read {} of {} partitions to the end within 30 s",
                    seen.len(),
                    self.partitions
                )));
            }
            let (values, mode) = (&mut self.values, self.mode);
            let polled = self.log.poll(Duration::from_millis(200), |r| {
                let Some(k) = r.key else { return };
                if k == mk.as_slice() {
                    seen.insert(r.partition);
                } else {
                    apply(values, mode, k, r.payload);
                }
            });
            polled.map_err(|e| self.err(e))?;
        }
        for p in 0..self.partitions {
            self.produce(&mk, None, Some(p))?;
        }
        Ok(())
    }

    /// Writes every window and rejection count read by [`KafkaStore::sync`] into `store`
    /// (an in-memory SQLite store, where the scorecard merges partitions as sources).
    /// Rejections per source: the sealed segments below its checkpoint's open one, the
    /// open one from the checkpoint itself (segments at or past it belong to an owner
    /// that got further; they are counted once a checkpoint passes them), and what older
    /// releases wrote per commit.
    pub fn load_into(&self, store: &mut SqliteStore) -> Result<(), StoreError> {
        let w = store.writer()?;
        let mut open: HashMap<String, (i64, Vec<proto::RejectCount>)> = HashMap::new();
        let mut sealed: Vec<proto::RejectSegment> = Vec::new();
        for (k, v) in &self.values {
            let what = || String::from_utf8_lossy(k).replace(SEP as char, "/");
            let corrupt = |why: String| StoreError::Corrupt { what: what(), why };
            match k.first() {
                Some(b'w') => {
                    let ws = proto::WindowSummary::decode(v.as_slice())
                        .map_err(|e| corrupt(e.to_string()))?;
                    let b = closed_bucket(&ws).map_err(corrupt)?;
                    w.put_bucket(&ws.source, &b)?;
                }
                Some(b's') => sealed.push(
                    proto::RejectSegment::decode(v.as_slice())
                        .map_err(|e| corrupt(e.to_string()))?,
                ),
                Some(b'c') => {
                    let cp = proto::PartitionCheckpoint::decode(v.as_slice())
                        .map_err(|e| corrupt(e.to_string()))?;
                    open.insert(cp.source, (cp.next_offset, cp.open_rejects));
                }
                Some(b'r') => {
                    let rc = proto::RejectCounts::decode(v.as_slice())
                        .map_err(|e| corrupt(e.to_string()))?;
                    add_counts(&w, &rc.source, &rc.counts, &what())?;
                }
                Some(b'u') => {
                    let parts: Vec<&[u8]> = k.split(|b| *b == SEP).collect();
                    let (Some(source), Some(from), Ok(v)) = (
                        parts.get(1),
                        parts
                            .get(2)
                            .and_then(|f| std::str::from_utf8(f).ok()?.parse().ok()),
                        <[u8; 16]>::try_from(v.as_slice()),
                    ) else {
                        return Err(corrupt("not an unread-range record".into()));
                    };
                    let half = |i: usize| {
                        let mut b = [0u8; 8];
                        b.copy_from_slice(&v[i..i + 8]);
                        i64::from_le_bytes(b)
                    };
                    let u = super::Unread {
                        from,
                        to: half(0),
                        noticed_ms: half(8),
                    };
                    w.put_unread(&String::from_utf8_lossy(source), &u)?;
                }
                _ => {}
            }
        }
        for seg in &sealed {
            let below_open = open
                .get(&seg.source)
                .is_some_and(|(next, _)| seg.segment < segment_of(*next));
            if below_open {
                let what = format!("s/{}/{}", seg.source, seg.segment);
                add_counts(&w, &seg.source, &seg.counts, &what)?;
            }
        }
        for (source, (_, counts)) in &open {
            add_counts(&w, source, counts, &format!("c/{source}"))?;
        }
        w.commit()
    }
}

/// A stored rejection count; `what` names its record in the error.
fn stored_reject(c: &proto::RejectCount, what: &str) -> Result<StoredReject, StoreError> {
    Ok(StoredReject {
        tenant: c.tenant.clone(),
        platform: c.platform.clone(),
        bucket: c.bucket_start_ms * MICROS_PER_MILLI,
        reason: RejectReason::from_code(&c.reason).ok_or_else(|| StoreError::Corrupt {
            what: what.to_string(),
            why: format!("unknown reason {:?}", c.reason),
        })?,
        count: c.count,
    })
}

fn add_counts(
    w: &dyn crate::store::StoreTx,
    source: &str,
    counts: &[proto::RejectCount],
    what: &str,
) -> Result<(), StoreError> {
    for c in counts {
        let r = stored_reject(c, what)?;
        w.add_rejects(
            source,
            &RejectRow {
                tenant: &r.tenant,
                platform: &r.platform,
                bucket: r.bucket,
                reason: r.reason,
                count: r.count,
            },
        )?;
    }
    Ok(())
}

fn reject_counts(rows: &[RejectRow<'_>]) -> Vec<proto::RejectCount> {
    rows.iter()
        .map(|r| proto::RejectCount {
            tenant: r.tenant.to_string(),
            platform: r.platform.to_string(),
            bucket_start_ms: r.bucket / MICROS_PER_MILLI,
            reason: r.reason.code().to_string(),
            count: r.count,
        })
        .collect()
}

impl PartitionStore for KafkaStore {
    /// Keeps no closed buckets' keys: the service runs it without corrections.
    fn closed_keys(
        &mut self,
        _source: &str,
        _start: Micros,
    ) -> Result<Vec<crate::engine::dedup::DedupKey>, StoreError> {
        Err(self.err("this store keeps no closed buckets' keys (corrections are off with it)"))
    }

    fn takes_corrections(&self) -> bool {
        false
    }

    fn refresh(&mut self) -> Result<(), StoreError> {
        self.sync()
    }

    fn checkpoint(&mut self, source: &str) -> Result<Option<Checkpoint>, StoreError> {
        let Some(v) = self.values.get(&key(b'c', &[source])) else {
            return Ok(None);
        };
        let c =
            proto::PartitionCheckpoint::decode(v.as_slice()).map_err(|e| StoreError::Corrupt {
                what: format!("checkpoint of {source}"),
                why: e.to_string(),
            })?;
        let what = format!("checkpoint of {source}");
        let open_rejects = c
            .open_rejects
            .iter()
            .map(|r| stored_reject(r, &what))
            .collect::<Result<_, StoreError>>()?;
        Ok(Some(Checkpoint {
            version: i64::from(c.version),
            next_offset: c.next_offset,
            state: c.state,
            open_rejects,
            dedup: Vec::new(),
        }))
    }

    fn commit(&mut self, c: &PartitionCommit<'_>) -> Result<(), StoreError> {
        if c.dedup.is_some() {
            return Err(StoreError::Corrupt {
                what: format!("commit of {}", c.source),
                why: "dedup rows handed to a store that keeps its keys in the checkpoint (our bug: PartitionStore::keeps_dedup is false here)".into(),
            });
        }
        for b in c.buckets {
            let ws = window_summary(c.source, b);
            let start_ms = (b.start / MICROS_PER_MILLI).to_string();
            let k = key(b'w', &[c.source, &b.key.tenant, &b.key.platform, &start_ms]);
            self.produce(&k, Some(&ws.encode_to_vec()), None)?;
        }
        if let Some(u) = c.unread {
            let mut v = u.to.to_le_bytes().to_vec();
            v.extend_from_slice(&u.noticed_ms.to_le_bytes());
            let k = key(b'u', &[c.source, &u.from.to_string()]);
            self.produce(&k, Some(&v), None)?;
        }
        for seg in c.sealed {
            let rs = proto::RejectSegment {
                source: c.source.to_string(),
                segment: seg.segment,
                counts: reject_counts(seg.rows),
            };
            let k = key(b's', &[c.source, &seg.segment.to_string()]);
            self.produce(&k, Some(&rs.encode_to_vec()), None)?;
        }
        self.deliver()?;
        let cp = proto::PartitionCheckpoint {
            source: c.source.to_string(),
            version: super::checkpoint::CheckpointFormat::DedupInline.version(),
            next_offset: c.next_offset,
            state: c.state.to_vec(),
            updated_ms: crate::time::now_micros() / 1000,
            open_rejects: reject_counts(c.open),
        };
        self.produce(&key(b'c', &[c.source]), Some(&cp.encode_to_vec()), None)?;
        self.deliver()
    }
}

pub fn window_summary(source: &str, b: &ClosedBucket) -> proto::WindowSummary {
    let c = &b.stats.counters;
    proto::WindowSummary {
        source: source.to_string(),
        tenant: b.key.tenant.to_string(),
        platform: b.key.platform.to_string(),
        direction: b.key.direction.as_str().to_string(),
        bucket_start_ms: b.start / MICROS_PER_MILLI,
        bucket_secs: (b.width_us / 1_000_000) as u32,
        attempts: c.attempts,
        events: c.events,
        delivered: c.delivered,
        failed: c.failed,
        dead_lettered: c.dead_lettered,
        on_time: c.on_time,
        retried: c.retried,
        max_retries: c.max_retries,
        latency_sum_us: c.latency_sum_us,
        target_latency_ms: (b.key.target_latency_us / 1000) as u32,
        latency_histogram: b.stats.histogram_bytes(),
    }
}

pub fn closed_bucket(ws: &proto::WindowSummary) -> Result<ClosedBucket, String> {
    let direction =
        Direction::parse(&ws.direction).ok_or_else(|| format!("direction {:?}", ws.direction))?;
    Ok(ClosedBucket {
        key: std::sync::Arc::new(KeyInfo {
            tenant: ws.tenant.as_str().into(),
            platform: ws.platform.as_str().into(),
            direction,
            target_latency_us: u64::from(ws.target_latency_ms) * 1000,
        }),
        start: ws.bucket_start_ms * MICROS_PER_MILLI,
        width_us: Micros::from(ws.bucket_secs) * 1_000_000,
        stats: Stats {
            counters: Counters {
                attempts: ws.attempts,
                events: ws.events,
                delivered: ws.delivered,
                failed: ws.failed,
                dead_lettered: ws.dead_lettered,
                on_time: ws.on_time,
                retried: ws.retried,
                max_retries: ws.max_retries,
                latency_sum_us: ws.latency_sum_us,
            },
            latency: Stats::latencies_from_bytes(&ws.latency_histogram)?,
        },
    })
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "slatrack".into())
}
