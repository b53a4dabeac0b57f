//! Extra connections that fetch some of the consumer's partitions.
//!
//! Why: librdkafka keeps one fetch in flight per broker connection. On a backlog the
//! broker builds a fetch response while the client waits, then the client parses it while
//! the broker waits: one connection alternates the two and leaves a core idle. A second
//! connection fetching other partitions overlaps them.
//!
//! How: the group consumer stays the group's one member, with the assignment, rebalances
//! and offset commits. Each [`Fetcher`] is a client of its own (a group id it never joins)
//! that fetches the partitions the consumer hands it at assignment, with the offsets the
//! consumer resolved, into a [`FetchQueue`] of its own. Its statistics feed the same high
//! watermarks as the consumer's. Which connection fetches a partition is recorded in the
//! consumer's [`Fetchers`].

use super::fetch_queue::{forward_all, FetchQueue, Forwarder};
use super::{redact, ClientError};
use crate::config::KafkaConfig;
use rdkafka::consumer::{BaseConsumer, Consumer as _, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::consumer::{record_high, HighWatermarks, TopicPartition};

/// librdkafka context of a fetcher: statistics and errors only (it never joins a group).
pub(super) struct FetcherCtx {
    high: HighWatermarks,
}

impl ClientContext for FetcherCtx {
    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!(error = %redact(&error), %reason, "Kafka fetch connection error (librdkafka retries by itself)");
    }

    fn stats(&self, statistics: rdkafka::Statistics) {
        record_high(&self.high, &statistics);
    }
}

impl ConsumerContext for FetcherCtx {}

/// One extra connection (see the module doc).
pub(super) struct Fetcher {
    pub client: BaseConsumer<FetcherCtx>,
    /// Where its partitions' records go; `None` once the queue is gone.
    pub forwarder: Mutex<Option<Forwarder>>,
}

impl Fetcher {
    /// A fetcher with its queue, from the consumer's settings.
    pub fn new(
        config: &rdkafka::ClientConfig,
        kafka: &KafkaConfig,
        index: usize,
        high: HighWatermarks,
    ) -> Result<(Arc<Self>, FetchQueue), ClientError> {
        let mut c = config.clone();
        c.set("group.id", format!("{}.fetch-{index}", kafka.group_id));
        let client: BaseConsumer<FetcherCtx> = c
            .create_with_context(FetcherCtx { high })
            .map_err(ClientError::from)?;
        // SAFETY: the client is live; the consumer drops the queue before the client.
        #[allow(unsafe_code)]
        let queue = unsafe { FetchQueue::new(client.client().native_ptr()) }.ok_or_else(|| {
            ClientError::Client("librdkafka could not create a queue (out of memory?)".into())
        })?;
        let f = Arc::new(Self {
            client,
            forwarder: Mutex::new(Some(queue.forwarder())),
        });
        Ok((f, queue))
    }

    /// Starts fetching `partitions` (offsets as resolved by the consumer) into its queue.
    pub fn start(&self, partitions: &TopicPartitionList) {
        forward_all(&self.forwarder, partitions);
        match self.client.incremental_assign(partitions) {
            Ok(()) => tracing::debug!(
                partitions = partitions.count(),
                "an extra connection fetches partitions"
            ),
            Err(e) => tracing::warn!(error = %e, "cannot start fetching on an extra connection"),
        }
    }

    /// Stops fetching `partitions`.
    pub fn stop(&self, partitions: &TopicPartitionList) {
        if partitions.count() == 0 {
            return;
        }
        if let Err(e) = self.client.incremental_unassign(partitions) {
            tracing::warn!(error = %e, "cannot stop fetching on an extra connection");
        }
    }

    /// Stops fetching everything.
    pub fn stop_all(&self) {
        if let Err(e) = self.client.unassign() {
            tracing::warn!(error = %e, "cannot stop fetching on an extra connection");
        }
    }
}

/// A consumer's fetchers and which connection fetches each assigned partition.
pub(super) struct Fetchers {
    pub list: Vec<Arc<Fetcher>>,
    /// Where a partition with neither a checkpoint nor a group offset starts:
    /// `auto.offset.reset` as a logical offset (`Invalid` for `error`: such partitions
    /// stay with the consumer). A fetcher asked to start at no offset would look for one
    /// in its own group, whose coordinator may be down.
    reset: Offset,
    /// 0: the consumer itself; `k`: fetcher `k − 1`.
    owners: Mutex<BTreeMap<TopicPartition, usize>>,
}

/// Partitions with the offsets to fetch them from.
type Parts = Vec<(TopicPartition, Offset)>;

impl Fetchers {
    /// `config`: the consumer's settings (for `auto.offset.reset`).
    pub fn new(list: Vec<Arc<Fetcher>>, config: &rdkafka::ClientConfig) -> Self {
        let reset = match config.get("auto.offset.reset") {
            Some("latest" | "largest" | "end") => Offset::End,
            Some("error") => Offset::Invalid,
            _ => Offset::Beginning,
        };
        Self {
            list,
            reset,
            owners: Mutex::default(),
        }
    }

    fn owners(&self) -> std::sync::MutexGuard<'_, BTreeMap<TopicPartition, usize>> {
        self.owners.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The connection that fetches a partition: 0 the consumer, `k` fetcher `k − 1`.
    pub fn connection_of(&self, tp: &TopicPartition) -> usize {
        self.owners().get(tp).copied().unwrap_or(0)
    }

    /// The fetcher of a partition, `None` when the consumer fetches it itself.
    pub fn fetcher_of(&self, tp: &TopicPartition) -> Option<&Fetcher> {
        let k = self.owners().get(tp).copied()?;
        k.checked_sub(1)
            .and_then(|k| self.list.get(k))
            .map(|f| &**f)
    }

    /// Shares an assignment (`tpl`, with the offsets the consumer resolved) out among the
    /// connections, the least loaded first: the partitions the consumer fetches itself,
    /// and each fetcher's. A fetcher has no group offsets, so a partition without an
    /// offset gets the group's committed one here (asked of `consumer`, waiting at most
    /// `patience`), or else where `auto.offset.reset` says, as for the consumer.
    pub fn share_out<C: ConsumerContext>(
        &self,
        consumer: &BaseConsumer<C>,
        tpl: &TopicPartitionList,
        patience: Duration,
    ) -> (TopicPartitionList, Vec<Parts>) {
        let n = 1 + self.list.len();
        let mut owners = self.owners();
        let mut load = vec![0usize; n];
        for &k in owners.values() {
            load[k.min(n - 1)] += 1;
        }
        let mut mine = Vec::new();
        let mut theirs: Vec<Parts> = vec![Vec::new(); n - 1];
        for e in tpl.elements() {
            let k = (0..n).min_by_key(|&k| load[k]).unwrap_or(0);
            load[k] += 1;
            let tp = (e.topic().to_string(), e.partition());
            owners.insert(tp.clone(), k);
            match k.checked_sub(1) {
                Some(f) => theirs[f].push((tp, e.offset())),
                None => mine.push((tp, e.offset())),
            }
        }
        drop(owners);
        let unresolved: Parts = theirs
            .iter()
            .flatten()
            .filter(|(_, o)| !matches!(o, Offset::Offset(_)))
            .map(|(tp, _)| (tp.clone(), Offset::Invalid))
            .collect();
        if !unresolved.is_empty() {
            let committed = match consumer.committed_offsets(list(&unresolved), patience) {
                Ok(c) => Some(c),
                Err(e) => {
                    tracing::warn!(error = %redact(&e), "cannot read the group's offsets: partitions without a checkpoint start where auto.offset.reset says");
                    None
                }
            };
            for ((t, p), o) in theirs.iter_mut().flatten() {
                if matches!(o, Offset::Offset(_)) {
                    continue;
                }
                *o = match committed
                    .as_ref()
                    .and_then(|c| c.find_partition(t, *p))
                    .map(|e| e.offset())
                {
                    Some(Offset::Offset(c)) => Offset::Offset(c),
                    _ => self.reset,
                };
            }
            // With `auto.offset.reset = error` such a partition stays with the consumer,
            // whose group decides.
            let mut owners = self.owners();
            for parts in &mut theirs {
                parts.retain(|(tp, o)| {
                    let keep = *o != Offset::Invalid;
                    if !keep {
                        owners.insert(tp.clone(), 0);
                        mine.push((tp.clone(), Offset::Invalid));
                    }
                    keep
                });
            }
        }
        (list(&mine), theirs)
    }

    /// Starts each fetcher on its share (from [`Fetchers::share_out`]).
    pub fn start(&self, theirs: &[Parts]) {
        for (f, parts) in self.list.iter().zip(theirs) {
            if !parts.is_empty() {
                f.start(&list(parts));
            }
        }
    }

    /// Of `partitions` (being revoked), those the consumer fetches itself; the fetchers
    /// stop the others. All are forgotten.
    pub fn take_back(&self, partitions: &[TopicPartition]) -> TopicPartitionList {
        let mut owners = self.owners();
        let mut mine = Vec::new();
        let mut theirs: Vec<Parts> = vec![Vec::new(); self.list.len()];
        for tp in partitions {
            match owners.remove(tp).and_then(|k| k.checked_sub(1)) {
                Some(f) if f < theirs.len() => theirs[f].push((tp.clone(), Offset::Invalid)),
                _ => mine.push((tp.clone(), Offset::Invalid)),
            }
        }
        drop(owners);
        for (f, parts) in self.list.iter().zip(&theirs) {
            f.stop(&list(parts));
        }
        list(&mine)
    }

    /// Stops every fetcher and forgets who fetched what (the whole assignment is gone).
    pub fn take_back_all(&self) {
        self.owners().clear();
        for f in &self.list {
            f.stop_all();
        }
    }
}

/// A list of partitions with their offsets.
fn list(parts: &[(TopicPartition, Offset)]) -> TopicPartitionList {
    let mut tpl = TopicPartitionList::new();
    for ((t, p), o) in parts {
        if let Err(e) = tpl.add_partition_offset(t, *p, *o) {
            tracing::warn!(topic = %t, partition = p, error = %e, "cannot list a partition");
        }
    }
    tpl
}
