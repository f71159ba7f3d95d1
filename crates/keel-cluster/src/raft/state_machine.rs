//! The state machine of the metadata log: applies committed batches to the [`MetadataImage`],
//! publishes each new image on a watch channel, and turns the image into snapshots and back.
//!
//! The image is rebuilt on open by replaying the log (openraft re-applies every entry up to the
//! durable committed id). Snapshots are only built or installed on request for now (the snapshot
//! policy is `Never`); when one is, it is persisted before it replaces the state, so a purge of
//! the log it covers never loses data. Persisting a snapshot rides out a full disk like the log's
//! writes do (see [`super::disk_full`]).

use std::collections::BTreeMap;
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};
use openraft::{EntryPayload, ErrorSubject, ErrorVerb, StoredMembership as OrStoredMembership};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use uuid::Uuid;

use super::disk_full::{self, StopSignal};
use super::file::{self, FileError};
use super::log_store::storage_error;
use super::{Entry, LogId, Snapshot, SnapshotMeta, StorageError, StoredMembership, TypeConfig};
use crate::metadata::{BrokerRegistration, MetadataImage, NodeId, PartitionState, TopicImage};
use crate::store::MetadataError;

/// Name of the file holding the last snapshot inside the metadata directory.
pub const SNAPSHOT_FILE: &str = "snapshot";

/// The serializable form of a [`MetadataImage`]: what a snapshot carries.
///
/// JSON maps need string keys, so the image's maps keyed by `Option<NodeId>` and `i32` become
/// lists of pairs; `topic_names` is derived from `topics`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageSnapshot {
    pub applied_index: u64,
    pub brokers: Vec<BrokerRegistration>,
    pub topics: Vec<TopicSnapshot>,
    pub broker_configs: Vec<(Option<NodeId>, BTreeMap<String, String>)>,
    #[serde(default)]
    pub next_producer_id: i64,
    #[serde(default)]
    pub cluster_id: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicSnapshot {
    pub name: String,
    pub topic_id: Uuid,
    pub partitions: Vec<(i32, PartitionState)>,
    pub configs: BTreeMap<String, String>,
}

impl From<&MetadataImage> for ImageSnapshot {
    fn from(image: &MetadataImage) -> Self {
        ImageSnapshot {
            applied_index: image.applied_index,
            brokers: image.brokers.values().cloned().collect(),
            topics: image
                .topics
                .values()
                .map(|topic| TopicSnapshot {
                    name: topic.name.clone(),
                    topic_id: topic.topic_id,
                    partitions: topic.partitions.iter().map(|(p, s)| (*p, s.clone())).collect(),
                    configs: topic.configs.clone(),
                })
                .collect(),
            broker_configs: image.broker_configs.iter().map(|(n, c)| (*n, c.clone())).collect(),
            next_producer_id: image.next_producer_id,
            cluster_id: image.cluster_id.clone(),
        }
    }
}

impl ImageSnapshot {
    /// Rebuilds the image, rejecting a snapshot that names a topic or topic id twice.
    pub fn into_image(self) -> Result<MetadataImage, String> {
        let mut image = MetadataImage {
            applied_index: self.applied_index,
            next_producer_id: self.next_producer_id,
            cluster_id: self.cluster_id,
            ..Default::default()
        };
        for broker in self.brokers {
            image.brokers.insert(broker.node_id, broker);
        }
        for topic in self.topics {
            if image.topics.contains_key(&topic.name) || image.topic_names.contains_key(&topic.topic_id) {
                return Err(format!("topic {} ({}) appears twice", topic.name, topic.topic_id));
            }
            image.topic_names.insert(topic.topic_id, topic.name.clone());
            image.topics.insert(
                topic.name.clone(),
                Arc::new(TopicImage {
                    name: topic.name,
                    topic_id: topic.topic_id,
                    partitions: topic.partitions.into_iter().collect(),
                    configs: topic.configs,
                }),
            );
        }
        image.broker_configs = self.broker_configs.into_iter().collect();
        Ok(image)
    }
}

/// The snapshot file's content: openraft's meta and the image it covers.
#[derive(Debug, Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta,
    image: ImageSnapshot,
}

/// Everything applied so far.
#[derive(Clone, Debug, Default)]
struct Applied {
    image: MetadataImage,
    last_applied: Option<LogId>,
    membership: StoredMembership,
}

pub struct StateMachine {
    dir: PathBuf,
    applied: Applied,
    image_tx: watch::Sender<Arc<MetadataImage>>,
    stop: StopSignal,
}

impl StateMachine {
    /// Loads the last persisted snapshot from `dir`, if any, and publishes its image.
    ///
    /// Does blocking I/O: call it from a blocking context.
    pub fn open(dir: &Path) -> Result<(StateMachine, watch::Receiver<Arc<MetadataImage>>), MetadataError> {
        Self::open_with_stop(dir, StopSignal::default())
    }

    /// [`StateMachine::open`] whose snapshot writes stalled on a full disk give up once `stop`
    /// is set.
    pub fn open_with_stop(
        dir: &Path,
        stop: StopSignal,
    ) -> Result<(StateMachine, watch::Receiver<Arc<MetadataImage>>), MetadataError> {
        Self::open_files(dir, stop).map_err(MetadataError::from)
    }

    fn open_files(
        dir: &Path,
        stop: StopSignal,
    ) -> Result<(StateMachine, watch::Receiver<Arc<MetadataImage>>), FileError> {
        let path = dir.join(SNAPSHOT_FILE);
        file::remove_stale_tmp(&path)?;
        let applied = match file::read_atomic::<StoredSnapshot>(&path)? {
            None => Applied::default(),
            Some(stored) => Applied {
                image: stored.image.into_image().map_err(|e| FileError::corrupt(&path, e))?,
                last_applied: stored.meta.last_log_id,
                membership: stored.meta.last_membership,
            },
        };
        let (image_tx, image_rx) = watch::channel(Arc::new(applied.image.clone()));
        Ok((StateMachine { dir: dir.to_path_buf(), applied, image_tx, stop }, image_rx))
    }

    fn publish(&self) {
        self.image_tx.send_replace(Arc::new(self.applied.image.clone()));
    }
}

/// Builds a snapshot from the state as it was when the builder was made.
pub struct SnapshotBuilder {
    dir: PathBuf,
    applied: Applied,
    stop: StopSignal,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot, StorageError> {
        let image = ImageSnapshot::from(&self.applied.image);
        let data = serde_json::to_vec(&image)
            .map_err(|e| storage_error(ErrorSubject::Snapshot(None), ErrorVerb::Write, &e))?;
        let index = self.applied.last_applied.map_or(0, |id| id.index);
        let meta = SnapshotMeta {
            last_log_id: self.applied.last_applied,
            last_membership: self.applied.membership.clone(),
            snapshot_id: format!("{index}-{}", Uuid::new_v4().simple()),
        };
        let stored = StoredSnapshot { meta: meta.clone(), image };
        persist_snapshot(&self.dir, stored, &self.stop).await?;
        Ok(Snapshot { meta, snapshot: Box::new(Cursor::new(data)) })
    }
}

async fn persist_snapshot(dir: &Path, stored: StoredSnapshot, stop: &StopSignal) -> Result<(), StorageError> {
    let path = dir.join(SNAPSHOT_FILE);
    let signature = stored.meta.signature();
    let stop = stop.clone();
    tokio::task::spawn_blocking(move || {
        disk_full::retry_while_disk_full(&stop, disk_full::BACKOFF, SNAPSHOT_FILE, || {
            file::write_atomic(&path, &stored)
        })
    })
    .await
    .map_err(|e| storage_error(ErrorSubject::Snapshot(Some(signature.clone())), ErrorVerb::Write, &e))?
    .map_err(|e| storage_error(ErrorSubject::Snapshot(Some(signature)), ErrorVerb::Write, &e))
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        Ok((self.applied.last_applied, self.applied.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<super::ApplyOutcome>, StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let mut responses = Vec::new();
        for entry in entries {
            let outcome = match entry.payload {
                EntryPayload::Blank => Ok(()),
                EntryPayload::Normal(batch) => {
                    let outcome = self.applied.image.apply_batch(&batch.records, entry.log_id.index);
                    if let Err(reason) = &outcome {
                        tracing::error!(index = entry.log_id.index, %reason, "refused a metadata entry that does not fit the image");
                    }
                    outcome
                }
                EntryPayload::Membership(membership) => {
                    self.applied.membership = OrStoredMembership::new(Some(entry.log_id), membership);
                    Ok(())
                }
            };
            self.applied.last_applied = Some(entry.log_id);
            self.applied.image.applied_index = entry.log_id.index;
            responses.push(outcome);
        }
        if !responses.is_empty() {
            // Published before openraft answers the proposer, so a proposer sees its own write.
            self.publish();
        }
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder { dir: self.dir.clone(), applied: self.applied.clone(), stop: self.stop.clone() }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let subject = || ErrorSubject::Snapshot(Some(meta.signature()));
        let image: ImageSnapshot =
            serde_json::from_slice(snapshot.get_ref()).map_err(|e| storage_error(subject(), ErrorVerb::Read, &e))?;
        let mut rebuilt = image
            .clone()
            .into_image()
            .map_err(|e| storage_error(subject(), ErrorVerb::Read, &openraft::AnyError::error(e)))?;
        rebuilt.applied_index = meta.last_log_id.map_or(0, |id| id.index);
        // Durable before it replaces the state: openraft purges the log the snapshot covers.
        persist_snapshot(&self.dir, StoredSnapshot { meta: meta.clone(), image }, &self.stop).await?;
        self.applied =
            Applied { image: rebuilt, last_applied: meta.last_log_id, membership: meta.last_membership.clone() };
        self.publish();
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        let path = self.dir.join(SNAPSHOT_FILE);
        let stored = tokio::task::spawn_blocking(move || file::read_atomic::<StoredSnapshot>(&path))
            .await
            .map_err(|e| storage_error(ErrorSubject::Snapshot(None), ErrorVerb::Read, &e))?
            .map_err(|e| storage_error(ErrorSubject::Snapshot(None), ErrorVerb::Read, &e))?;
        let Some(stored) = stored else {
            return Ok(None);
        };
        let data = serde_json::to_vec(&stored.image)
            .map_err(|e| storage_error(ErrorSubject::Snapshot(None), ErrorVerb::Read, &e))?;
        Ok(Some(Snapshot { meta: stored.meta, snapshot: Box::new(Cursor::new(data)) }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::{ConfigResource, MetadataRecord};

    #[test]
    fn image_snapshot_round_trips_through_json() {
        let mut image = MetadataImage::default();
        let id = Uuid::new_v4();
        image.apply(&MetadataRecord::RegisterBroker(BrokerRegistration {
            node_id: 1,
            host: "localhost".into(),
            port: 9092,
            rack: None,
            ..Default::default()
        }));
        image.apply(&MetadataRecord::Topic { name: "t".into(), topic_id: id });
        image.apply(&MetadataRecord::Partition {
            topic_id: id,
            partition: 0,
            state: PartitionState { replicas: vec![1], isr: vec![1], leader: 1, leader_epoch: 0, partition_epoch: 0 },
        });
        for (resource, value) in [
            (ConfigResource::Topic("t".into()), Some("1000")),
            (ConfigResource::Broker(None), Some("10")),
            (ConfigResource::Broker(Some(1)), None),
        ] {
            image.apply(&MetadataRecord::Config {
                resource,
                name: "retention.ms".into(),
                value: value.map(str::to_string),
            });
        }
        image.applied_index = 7;

        let json = serde_json::to_vec(&ImageSnapshot::from(&image)).expect("encode");
        let decoded: ImageSnapshot = serde_json::from_slice(&json).expect("decode");
        assert_eq!(decoded.into_image().expect("valid"), image);
    }

    #[test]
    fn duplicate_topic_in_snapshot_is_rejected() {
        let topic = TopicSnapshot {
            name: "t".into(),
            topic_id: Uuid::new_v4(),
            partitions: Vec::new(),
            configs: BTreeMap::new(),
        };
        let snapshot = ImageSnapshot {
            applied_index: 1,
            brokers: Vec::new(),
            topics: vec![topic.clone(), topic],
            broker_configs: Vec::new(),
            next_producer_id: 0,
            cluster_id: None,
        };
        assert!(snapshot.into_image().is_err());
    }
}
