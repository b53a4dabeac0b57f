//! `slatrack run`: the long-running consumer, and the `demo` that runs it on an
//! in-process cluster.
//!
//! - [`run`](mod@run): wiring: the consumer, the poll thread and the apply thread, the
//!   metrics listener, pause/resume on store failures, shutdown.
//! - [`partition_set`]: the partition set: one single-writer
//!   [`Pipeline`](crate::pipeline::Pipeline) per assigned partition; assign, restore,
//!   revoke, apply a batch, checkpoint scheduling and pacing, takeover.
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

pub mod demo;
pub mod new_log;
mod partition_set;
pub mod run;

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
    #[error("the apply thread panicked (our bug: please report the panic above): no checkpoint was written after it, so restarting slatrack resumes every partition from its last checkpoint and counts nothing twice")]
    Poisoned,
    #[error("the {0} thread panicked (our bug: please report the panic above)")]
    Panicked(&'static str),
    #[error("the apply thread stopped")]
    ApplyStopped,
    #[error("cannot start the {name} thread: {source}")]
    Thread {
        name: &'static str,
        source: std::io::Error,
    },
    #[error("cannot listen on {listen:?} for /metrics: {source} (port in use? set metrics.listen, or --listen for the demo, to another address, or \"\" to disable)")]
    Listen {
        listen: String,
        source: std::io::Error,
    },
    #[error("{source_id} has no checkpoint in {location}: the next `slatrack run` reads its log from the beginning already")]
    NoCheckpoint { source_id: String, location: String },
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

#[cfg(test)]
mod tests;
