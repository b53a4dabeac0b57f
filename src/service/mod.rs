//! `slatrack run`: the long-running consumer, and the `demo` that runs it on an
//! in-process cluster.
//!
//! - [`run`](mod@run): wiring: the consumer, the poll thread and the apply thread, the
//!   metrics listener, pause/resume on store failures, shutdown.
//! - [`partitions`]: the partition set: one single-writer [`Pipeline`](crate::pipeline::Pipeline)
//!   per assigned partition; assign, restore, revoke, apply a batch.
//! - [`checkpoints`]: checkpoint scheduling and pacing, idle watermarks, store failures.
//! - [`takeover`]: resuming a partition that another owner committed meanwhile.
//!
//! Exactly-once effect: every `service.checkpoint_interval` each partition commits its
//! closed buckets, pending rejections and checkpoint in one store transaction
//! ([`Pipeline::commit`](crate::pipeline::Pipeline::commit)). On assignment a partition
//! resumes from its checkpoint and fetching starts at the checkpoint's offset (set in the
//! assignment itself), so group offsets (committed after each checkpoint) are advisory:
//! they are used only where the store has no checkpoint. On revocation the partition
//! checkpoints before it is given up.
//!
//! Records polled before a partition's latest assignment are never applied to it: each
//! polled record carries the assignment generation it was polled under, and a partition
//! remembers the generation that assigned it. (A batch polled just before a revocation
//! can reach the apply thread after the partition came back, with the checkpoint and the
//! fetch position moved on.)

mod checkpoints;
pub mod demo;
pub mod new_log;
mod partitions;
pub mod run;
mod takeover;

pub use new_log::accept_new_log;
pub use run::run;

use crate::config::ConfigError;
use crate::kafka::producer::ProduceError;
use crate::kafka::ClientError;
use crate::pipeline::ResumeError;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("`slatrack run` needs a [kafka] section in the config (brokers, topics)")]
    NoKafka,
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Kafka(#[from] ClientError),
    #[error(transparent)]
    Quarantine(#[from] ProduceError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Resume(#[from] ResumeError),
    #[error(transparent)]
    Publish(#[from] crate::sink::windows::PublishError),
    #[error("cannot write to stdout")]
    Output(#[source] std::io::Error),
    #[error("{0}")]
    Fatal(String),
}

#[cfg(test)]
mod tests;
