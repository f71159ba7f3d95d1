//! Partition replicas hosted by this broker, kept in step with the metadata image.
//!
//! The image says which partitions exist and who leads them; [`Partitions::reconcile`] opens a
//! log for every replica this node holds, drops the logs of deleted topics and pushes config
//! changes down to the logs. Only the partitions this node leads serve clients; the others'
//! logs wait for replication. Until followers replicate, the high watermark is the leader's
//! log end offset and the in-sync replica set is the leader alone.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, RwLock};

use keel_cluster::{MetadataImage, NodeId};
use keel_log::{CompactionPolicy, Log, LogConfig, LogError, LogManager, RetentionPolicy};
use uuid::Uuid;

use crate::config::ConfigView;

pub struct Partition {
    pub topic: String,
    pub index: i32,
    pub topic_id: Uuid,
    pub log: Arc<Log>,
    leader_epoch: AtomicI32,
    /// Whether this node is the partition's leader (as of the last reconcile).
    leads: AtomicBool,
}

impl Partition {
    /// Whether this node leads the partition and serves its clients.
    pub fn is_leader(&self) -> bool {
        self.leads.load(Ordering::Acquire)
    }

    pub fn leader_epoch(&self) -> i32 {
        self.leader_epoch.load(Ordering::Acquire)
    }

    /// What consumers may read up to: every in-sync replica has it.
    pub fn high_watermark(&self) -> i64 {
        self.log.log_end_offset()
    }

    /// The last stable offset: the first offset of the earliest open transaction, at most the
    /// high watermark. `read_committed` consumers read up to here.
    pub fn last_stable_offset(&self) -> i64 {
        self.log.last_stable_offset().min(self.high_watermark())
    }
}

type Key = (String, i32);

#[derive(Default)]
pub struct Partitions {
    map: RwLock<HashMap<Key, Arc<Partition>>>,
}

impl Partitions {
    pub fn get(&self, topic: &str, index: i32) -> Option<Arc<Partition>> {
        let map = self.map.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        map.get(&(topic.to_string(), index)).cloned()
    }

    pub fn all(&self) -> Vec<Arc<Partition>> {
        let map = self.map.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        map.values().cloned().collect()
    }

    /// Brings hosted partitions in line with `image`. With `previous` (the image they match
    /// already), the topics `image` shares with it are skipped: only what changed is applied.
    pub fn reconcile(
        &self,
        node_id: NodeId,
        image: &MetadataImage,
        previous: Option<&MetadataImage>,
        logs: &LogManager,
        view: &ConfigView<'_>,
    ) -> Result<(), LogError> {
        // Broker configs are the defaults of every topic's: a change there touches them all.
        let previous = previous.filter(|p| p.broker_configs == image.broker_configs);
        let unchanged = |name: &str, topic: &Arc<keel_cluster::TopicImage>| {
            previous.and_then(|p| p.topics.get(name)).is_some_and(|before| Arc::ptr_eq(before, topic))
        };
        let mut map = self.map.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        // Drop partitions whose topic is gone (or was recreated under a new id).
        let stale: Vec<Key> = map
            .iter()
            .filter(|((topic, index), partition)| {
                image.topic(topic).is_none_or(|t| t.topic_id != partition.topic_id || !t.partitions.contains_key(index))
            })
            .map(|(key, _)| key.clone())
            .collect();
        // A partition that fails must not stop the others: remember the first error.
        let mut first_error = None;
        for key in stale {
            map.remove(&key);
            if let Err(error) = logs.delete(&key.0, key.1) {
                first_error.get_or_insert(error);
            }
        }
        for (name, topic) in &image.topics {
            if unchanged(name, topic) {
                continue;
            }
            let config = log_config(view, &topic.name);
            for (&index, state) in &topic.partitions {
                if !state.replicas.contains(&node_id) {
                    continue;
                }
                let key = (topic.name.clone(), index);
                let leads = state.leader == node_id;
                if let Some(existing) = map.get(&key) {
                    existing.leader_epoch.store(state.leader_epoch, Ordering::Release);
                    existing.leads.store(leads, Ordering::Release);
                    if existing.log.config() != config {
                        existing.log.set_config(config);
                    }
                    continue;
                }
                let topic_id = topic.topic_id.to_string();
                let opened = match logs.get(&topic.name, index) {
                    // A log left from an earlier topic of the same name is not this topic's.
                    Some(log) if log.topic_id() != topic_id => logs
                        .delete(&topic.name, index)
                        .and_then(|()| logs.get_or_create(&topic.name, index, &topic_id, config)),
                    Some(log) => {
                        log.set_config(config);
                        Ok(log)
                    }
                    None => logs.get_or_create(&topic.name, index, &topic_id, config),
                };
                let log = match opened {
                    Ok(log) => log,
                    Err(error) => {
                        first_error.get_or_insert(error);
                        continue;
                    }
                };
                map.insert(
                    key,
                    Arc::new(Partition {
                        topic: topic.name.clone(),
                        index,
                        topic_id: topic.topic_id,
                        log,
                        leader_epoch: AtomicI32::new(state.leader_epoch),
                        leads: AtomicBool::new(leads),
                    }),
                );
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

/// The log settings of `topic` from its resolved configs.
pub fn log_config(view: &ConfigView<'_>, topic: &str) -> LogConfig {
    let defaults = LogConfig::default();
    let positive = |name: &str| view.topic_i64(topic, name).filter(|v| *v > 0);
    let unbounded = |value: Option<i64>| value.filter(|v| *v > 0 && *v < i64::MAX);
    LogConfig {
        segment_bytes: positive("segment.bytes").map_or(defaults.segment_bytes, |v| v as u64),
        segment_ms: positive("segment.ms").unwrap_or(defaults.segment_ms),
        index_interval_bytes: positive("index.interval.bytes")
            .map_or(defaults.index_interval_bytes, |v| v.min(u32::MAX as i64) as u32),
        segment_index_bytes: positive("segment.index.bytes").map_or(defaults.segment_index_bytes, |v| v as u64),
        flush_messages: unbounded(view.topic_i64(topic, "flush.messages")).map(|v| v as u64),
        flush_ms: unbounded(view.topic_i64(topic, "flush.ms")),
        retention: retention_policy(view, topic),
        file_delete_delay_ms: view
            .topic_i64(topic, "file.delete.delay.ms")
            .map_or(defaults.file_delete_delay_ms, |v| v.max(0)),
        compaction: compaction_policy(view, topic),
    }
}

/// `cleanup.policy` (compact), `min.cleanable.dirty.ratio`, the compaction lags and
/// `delete.retention.ms` of `topic`.
fn compaction_policy(view: &ConfigView<'_>, topic: &str) -> CompactionPolicy {
    let defaults = CompactionPolicy::default();
    let policy = view.topic(topic, "cleanup.policy").unwrap_or_default();
    CompactionPolicy {
        compact: policy.split(',').any(|p| p.trim() == "compact"),
        min_cleanable_dirty_ratio: view
            .topic(topic, "min.cleanable.dirty.ratio")
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|r| (0.0..=1.0).contains(r))
            .unwrap_or(defaults.min_cleanable_dirty_ratio),
        min_compaction_lag_ms: view
            .topic_i64(topic, "min.compaction.lag.ms")
            .filter(|v| *v >= 0)
            .unwrap_or(defaults.min_compaction_lag_ms),
        max_compaction_lag_ms: view
            .topic_i64(topic, "max.compaction.lag.ms")
            .filter(|v| *v >= 1)
            .unwrap_or(defaults.max_compaction_lag_ms),
        delete_retention_ms: view
            .topic_i64(topic, "delete.retention.ms")
            .filter(|v| *v >= 0)
            .unwrap_or(defaults.delete_retention_ms),
    }
}

/// `cleanup.policy`, `retention.ms` and `retention.bytes` of `topic`; a negative retention
/// (Kafka's -1) is unlimited.
fn retention_policy(view: &ConfigView<'_>, topic: &str) -> RetentionPolicy {
    let policy = view.topic(topic, "cleanup.policy").unwrap_or_default();
    RetentionPolicy {
        delete: policy.split(',').any(|p| p.trim() == "delete"),
        retention_ms: view.topic_i64(topic, "retention.ms").filter(|v| *v >= 0),
        retention_bytes: view.topic_i64(topic, "retention.bytes").filter(|v| *v >= 0).map(|v| v as u64),
    }
}
