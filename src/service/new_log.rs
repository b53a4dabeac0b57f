//! `slatrack accept-new-log`: a partition whose log is not the one its checkpoint was
//! taken on (the topic was recreated, or the brokers are a new cluster) continues from
//! the new log's beginning with everything it has counted.
//!
//! The source keeps its name, its rows and its engine state: open buckets, the dedup keys
//! of the lateness horizon and the closed buckets' keys of the correction horizon. Only
//! the checkpoint's offset moves, to 0. So records the new log shares with the old one
//! (a mirrored cluster copies records but not offsets) are duplicates and are not counted
//! twice, and records of the old log that were still in open buckets stay counted.

use super::ServiceError;
use crate::config::Config;
use crate::pipeline::Pipeline;
use crate::store::{Access, Location, PartitionStore};
use std::sync::Arc;

/// Where the partition's checkpoint stood before it was moved to the new log's start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Accepted {
    pub old_next_offset: i64,
}

/// Moves the checkpoint of `topic`/`partition` to offset 0 of its new log in one
/// transaction per step: first a checkpoint at the old offset (it seals what the old log
/// left pending), then the same state at offset 0. Run while no `slatrack run` writes the
/// store: a running owner's next commit would be refused as superseded.
pub fn accept_new_log(
    config: Arc<Config>,
    location: &Location,
    topic: &str,
    partition: i32,
) -> Result<Accepted, ServiceError> {
    let mut store = crate::store::open(location, Access::Existing)?;
    // The format decodes records; accepting decodes none.
    let format = config
        .kafka
        .as_ref()
        .and_then(|k| k.topics.iter().find(|t| t.name == topic))
        .map_or(crate::codec::Format::Protobuf, |t| t.format);
    let source = crate::kafka::source_id(topic, partition);
    let bounds = Pipeline::bounds(&config);
    let (mut pipeline, next) = Pipeline::resume(config, format, bounds, &mut *store, &source)?;
    let Some(old_next_offset) = next else {
        return Err(ServiceError::NoCheckpoint {
            source_id: source,
            location: location.to_string(),
        });
    };
    let store: &mut dyn PartitionStore = &mut *store;
    pipeline.commit(store, &source, old_next_offset)?;
    pipeline.commit(store, &source, 0)?;
    Ok(Accepted { old_next_offset })
}
