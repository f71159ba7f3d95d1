//! Cluster metadata as records, and the image they build when applied in log order.
//!
//! The record set follows KRaft's (`RegisterBrokerRecord`, `TopicRecord`, `PartitionRecord`,
//! `RemoveTopicRecord`, `ConfigRecord`, `PartitionChangeRecord`): every change to brokers,
//! topics, partitions and configs is one of these, committed through the metadata log and
//! applied by [`MetadataImage::apply_batch`]. Applying is deterministic. The active controller
//! validates every change against an image that is caught up with its term, so a record that
//! does not fit the image (a topic created twice, a change for a topic that is gone) means a
//! decision was made on a stale image: [`MetadataImage::check_batch`] refuses the whole entry
//! it belongs to, identically on every node, and the proposer is told why.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A node id, as in Kafka's `node.id`.
pub type NodeId = i32;

/// One change to the cluster metadata.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum MetadataRecord {
    /// A broker announces itself and where clients reach it. Applied with its broker epoch set
    /// to the entry's log index (Kafka's: the offset of the registration record), fenced until
    /// it has caught up with the metadata log.
    RegisterBroker(BrokerRegistration),
    /// A registered broker is fenced or unfenced, or starts a controlled shutdown (Kafka's
    /// `BrokerRegistrationChangeRecord`); refused unless `epoch` is its current broker epoch.
    ChangeBroker { node_id: NodeId, epoch: i64, fenced: Option<bool>, in_controlled_shutdown: Option<bool> },
    /// A topic comes into being (its partitions follow as `Partition` records).
    Topic { name: String, topic_id: Uuid },
    /// A partition replica set and its leadership.
    Partition { topic_id: Uuid, partition: i32, state: PartitionState },
    /// A topic and all its partitions go away.
    RemoveTopic { topic_id: Uuid },
    /// Sets (`Some`) or removes (`None`) one config of a topic or broker.
    Config { resource: ConfigResource, name: String, value: Option<String> },
    /// A block of producer ids handed to a broker (Kafka's `ProducerIdsRecord`): ids from
    /// `next_producer_id - PRODUCER_ID_BLOCK_SIZE` up to `next_producer_id` are taken.
    ProducerIds { node_id: NodeId, next_producer_id: i64 },
    /// The cluster's id (Kafka's `cluster.id`), written once by the first active controller;
    /// every node's data directory records it and refuses to serve another cluster.
    ClusterId { cluster_id: String },
}

/// Producer ids a broker takes from the controller at a time (Kafka's block size).
pub const PRODUCER_ID_BLOCK_SIZE: i64 = 1000;

/// The entity a config belongs to.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ConfigResource {
    Topic(String),
    /// `None` is the cluster-wide default broker config (Kafka's empty broker name).
    Broker(Option<NodeId>),
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerRegistration {
    pub node_id: NodeId,
    pub host: String,
    pub port: u16,
    pub rack: Option<String>,
    /// Random per process start: a registration with a new incarnation is a restarted broker.
    #[serde(default)]
    pub incarnation: Uuid,
    /// The broker epoch: the log index of the registration (set when applied).
    #[serde(default)]
    pub epoch: i64,
    /// A fenced broker leads no partition and is given no new replica.
    #[serde(default)]
    pub fenced: bool,
    /// The broker asked to shut down (SIGTERM): leadership moves off it, then it is fenced.
    #[serde(default)]
    pub in_controlled_shutdown: bool,
}

impl BrokerRegistration {
    /// Whether this is the same broker process at the same address (a retried registration).
    pub fn same_process(&self, other: &BrokerRegistration) -> bool {
        self.node_id == other.node_id
            && self.host == other.host
            && self.port == other.port
            && self.rack == other.rack
            && self.incarnation == other.incarnation
    }
}

/// Replica assignment and leadership of one partition.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionState {
    pub replicas: Vec<NodeId>,
    pub isr: Vec<NodeId>,
    /// -1 when no leader is available.
    pub leader: NodeId,
    pub leader_epoch: i32,
    /// Bumped on every change of this partition's state (Kafka's partition epoch).
    pub partition_epoch: i32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicImage {
    pub name: String,
    pub topic_id: Uuid,
    pub partitions: BTreeMap<i32, PartitionState>,
    pub configs: BTreeMap<String, String>,
}

impl TopicImage {
    /// True for Kafka's internal topics (`__consumer_offsets`, `__transaction_state`).
    pub fn is_internal(&self) -> bool {
        is_internal_topic(&self.name)
    }
}

pub fn is_internal_topic(name: &str) -> bool {
    name == "__consumer_offsets" || name == "__transaction_state"
}

/// The state built by applying every committed record in order.
///
/// Topics are shared (`Arc`) between successive images: publishing a new image after an entry
/// copies one pointer per topic, and a record copies only the topic it changes
/// (`Arc::make_mut`), so each entry costs what it changes, not the size of the cluster.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MetadataImage {
    pub brokers: BTreeMap<NodeId, BrokerRegistration>,
    pub topics: BTreeMap<String, Arc<TopicImage>>,
    pub topic_names: BTreeMap<Uuid, String>,
    /// Broker configs: `Broker(None)` is the cluster default, `Broker(Some(id))` one broker.
    pub broker_configs: BTreeMap<Option<NodeId>, BTreeMap<String, String>>,
    /// Index of the last metadata log entry applied (0 when none).
    pub applied_index: u64,
    /// The first producer id no block has taken yet.
    pub next_producer_id: i64,
    /// The cluster id, once the first controller has recorded it.
    pub cluster_id: Option<String>,
}

impl MetadataImage {
    /// Why `records`, applied in order to this image, would not fit it; `Ok` when they all do.
    /// A batch is applied whole or not at all.
    pub fn check_batch(&self, records: &[MetadataRecord]) -> Result<(), String> {
        // Topics created and removed earlier in the batch, by id and by name.
        let mut created: BTreeMap<Uuid, &str> = BTreeMap::new();
        let mut removed: Vec<Uuid> = Vec::new();
        let mut next_producer_id = self.next_producer_id;
        let mut cluster_id = self.cluster_id.as_deref();
        let topic_exists = |id: &Uuid, created: &BTreeMap<Uuid, &str>, removed: &[Uuid]| {
            !removed.contains(id) && (created.contains_key(id) || self.topic_names.contains_key(id))
        };
        for record in records {
            match record {
                MetadataRecord::RegisterBroker(_) => {}
                MetadataRecord::ChangeBroker { node_id, epoch, .. } => match self.brokers.get(node_id) {
                    Some(broker) if broker.epoch == *epoch => {}
                    Some(broker) => {
                        return Err(format!(
                            "change of broker {node_id} at epoch {epoch}, but its epoch is {}",
                            broker.epoch
                        ))
                    }
                    None => return Err(format!("change of broker {node_id}, which is not registered")),
                },
                MetadataRecord::Topic { name, topic_id } => {
                    let name_taken = created.values().any(|n| n == name)
                        || self.topics.get(name).is_some_and(|t| !removed.contains(&t.topic_id));
                    if name_taken || topic_exists(topic_id, &created, &removed) {
                        return Err(format!("topic '{name}' (id {topic_id}) already exists"));
                    }
                    created.insert(*topic_id, name);
                }
                MetadataRecord::Partition { topic_id, partition, .. } => {
                    if !topic_exists(topic_id, &created, &removed) {
                        return Err(format!("partition {partition} of topic id {topic_id}, which does not exist"));
                    }
                }
                MetadataRecord::RemoveTopic { topic_id } => {
                    if !topic_exists(topic_id, &created, &removed) {
                        return Err(format!("removal of topic id {topic_id}, which does not exist"));
                    }
                    removed.push(*topic_id);
                }
                MetadataRecord::Config { resource: ConfigResource::Topic(name), name: config, .. } => {
                    let exists = created.values().any(|n| n == name)
                        || self.topics.get(name).is_some_and(|t| !removed.contains(&t.topic_id));
                    if !exists {
                        return Err(format!("config {config} of topic '{name}', which does not exist"));
                    }
                }
                MetadataRecord::Config { resource: ConfigResource::Broker(_), .. } => {}
                MetadataRecord::ProducerIds { next_producer_id: next, .. } => {
                    if *next < next_producer_id.saturating_add(PRODUCER_ID_BLOCK_SIZE) {
                        return Err(format!(
                            "producer id block ending at {next} overlaps ids handed out before {next_producer_id}"
                        ));
                    }
                    next_producer_id = *next;
                }
                MetadataRecord::ClusterId { cluster_id: id } => {
                    if cluster_id.is_some_and(|existing| existing != id) {
                        return Err(format!("cluster id {id}, but the cluster is {}", cluster_id.unwrap_or_default()));
                    }
                    cluster_id = Some(id);
                }
            }
        }
        Ok(())
    }

    /// Applies the records of log entry `index` if they all fit the image
    /// ([`MetadataImage::check_batch`]), else changes nothing and says why.
    pub fn apply_batch(&mut self, records: &[MetadataRecord], index: u64) -> Result<(), String> {
        self.check_batch(records)?;
        for record in records {
            self.apply_at(record, index);
        }
        Ok(())
    }

    /// Applies one record as if it were the next log entry. A record that does not fit is
    /// skipped; the metadata log refuses such records before they get here
    /// ([`MetadataImage::apply_batch`]), so this only matters to callers that plan on a copy of
    /// the image.
    pub fn apply(&mut self, record: &MetadataRecord) {
        self.apply_at(record, self.applied_index + 1);
    }

    fn apply_at(&mut self, record: &MetadataRecord, index: u64) {
        match record {
            MetadataRecord::RegisterBroker(registration) => {
                let mut registration = registration.clone();
                registration.epoch = i64::try_from(index).unwrap_or(i64::MAX);
                self.brokers.insert(registration.node_id, registration);
            }
            MetadataRecord::ChangeBroker { node_id, epoch, fenced, in_controlled_shutdown } => {
                if let Some(broker) = self.brokers.get_mut(node_id).filter(|b| b.epoch == *epoch) {
                    if let Some(fenced) = fenced {
                        broker.fenced = *fenced;
                    }
                    if let Some(shutdown) = in_controlled_shutdown {
                        broker.in_controlled_shutdown = *shutdown;
                    }
                }
            }
            MetadataRecord::Topic { name, topic_id } => {
                if self.topics.contains_key(name) || self.topic_names.contains_key(topic_id) {
                    return;
                }
                self.topic_names.insert(*topic_id, name.clone());
                self.topics.insert(
                    name.clone(),
                    Arc::new(TopicImage {
                        name: name.clone(),
                        topic_id: *topic_id,
                        partitions: BTreeMap::new(),
                        configs: BTreeMap::new(),
                    }),
                );
            }
            MetadataRecord::Partition { topic_id, partition, state } => {
                if let Some(topic) = self.topic_by_id_mut(topic_id) {
                    topic.partitions.insert(*partition, state.clone());
                }
            }
            MetadataRecord::RemoveTopic { topic_id } => {
                if let Some(name) = self.topic_names.remove(topic_id) {
                    self.topics.remove(&name);
                }
            }
            MetadataRecord::Config { resource, name, value } => {
                let configs = match resource {
                    ConfigResource::Topic(topic) => match self.topics.get_mut(topic) {
                        Some(topic) => &mut Arc::make_mut(topic).configs,
                        None => return,
                    },
                    ConfigResource::Broker(node) => self.broker_configs.entry(*node).or_default(),
                };
                match value {
                    Some(value) => configs.insert(name.clone(), value.clone()),
                    None => configs.remove(name),
                };
            }
            MetadataRecord::ProducerIds { next_producer_id, .. } => {
                self.next_producer_id = self.next_producer_id.max(*next_producer_id);
            }
            MetadataRecord::ClusterId { cluster_id } => {
                self.cluster_id.get_or_insert_with(|| cluster_id.clone());
            }
        }
    }

    pub fn topic(&self, name: &str) -> Option<&TopicImage> {
        self.topics.get(name).map(Arc::as_ref)
    }

    /// The brokers that may lead partitions and take new replicas: registered, not fenced and
    /// not shutting down.
    pub fn usable_brokers(&self) -> impl Iterator<Item = &BrokerRegistration> {
        self.brokers.values().filter(|b| !b.fenced && !b.in_controlled_shutdown)
    }

    /// Whether broker `id` is registered and not fenced.
    pub fn is_broker_alive(&self, id: NodeId) -> bool {
        self.brokers.get(&id).is_some_and(|b| !b.fenced)
    }

    pub fn topic_by_id(&self, topic_id: &Uuid) -> Option<&TopicImage> {
        self.topic_names.get(topic_id).and_then(|name| self.topic(name))
    }

    /// The topic to change: copied first if an earlier image still shares it.
    fn topic_by_id_mut(&mut self, topic_id: &Uuid) -> Option<&mut TopicImage> {
        let name = self.topic_names.get(topic_id)?;
        self.topics.get_mut(name).map(Arc::make_mut)
    }

    /// The dynamic config of a broker: its own entry over the cluster default.
    pub fn broker_config(&self, node_id: NodeId, name: &str) -> Option<(&str, bool)> {
        if let Some(value) = self.broker_configs.get(&Some(node_id)).and_then(|c| c.get(name)) {
            return Some((value, true));
        }
        self.broker_configs.get(&None).and_then(|c| c.get(name)).map(|v| (v.as_str(), false))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn partition(leader: NodeId) -> PartitionState {
        PartitionState { replicas: vec![leader], isr: vec![leader], leader, leader_epoch: 0, partition_epoch: 0 }
    }

    #[test]
    fn topic_lifecycle() {
        let mut image = MetadataImage::default();
        let id = Uuid::new_v4();
        image.apply(&MetadataRecord::Topic { name: "t".into(), topic_id: id });
        image.apply(&MetadataRecord::Partition { topic_id: id, partition: 0, state: partition(1) });
        image.apply(&MetadataRecord::Config {
            resource: ConfigResource::Topic("t".into()),
            name: "retention.ms".into(),
            value: Some("1000".into()),
        });
        let topic = image.topic("t").expect("topic applied");
        assert_eq!(topic.partitions.len(), 1);
        assert_eq!(topic.configs.get("retention.ms").map(String::as_str), Some("1000"));
        assert_eq!(image.topic_by_id(&id).map(|t| t.name.as_str()), Some("t"));

        image.apply(&MetadataRecord::RemoveTopic { topic_id: id });
        assert!(image.topic("t").is_none());
        assert!(image.topic_by_id(&id).is_none());
    }

    #[test]
    fn records_for_missing_topics_are_skipped() {
        let mut image = MetadataImage::default();
        let before = image.clone();
        let id = Uuid::new_v4();
        image.apply(&MetadataRecord::Partition { topic_id: id, partition: 0, state: partition(1) });
        image.apply(&MetadataRecord::Config {
            resource: ConfigResource::Topic("gone".into()),
            name: "retention.ms".into(),
            value: Some("1".into()),
        });
        assert_eq!(image, before);
    }

    #[test]
    fn producer_id_blocks_only_move_forward() {
        let mut image = MetadataImage::default();
        image.apply(&MetadataRecord::ProducerIds { node_id: 1, next_producer_id: 2000 });
        image.apply(&MetadataRecord::ProducerIds { node_id: 1, next_producer_id: 1000 });
        assert_eq!(image.next_producer_id, 2000);
    }

    #[test]
    fn a_batch_that_does_not_fit_is_refused_whole() {
        let mut image = MetadataImage::default();
        let id = Uuid::new_v4();
        let topic = |name: &str, topic_id| MetadataRecord::Topic { name: name.into(), topic_id };
        image
            .apply_batch(
                &[topic("t", id), MetadataRecord::Partition { topic_id: id, partition: 0, state: partition(1) }],
                1,
            )
            .expect("a new topic fits");
        let before = image.clone();
        for (batch, why) in [
            (vec![topic("u", Uuid::new_v4()), topic("t", Uuid::new_v4())], "already exists"),
            (vec![topic("u", id)], "already exists"),
            (vec![MetadataRecord::RemoveTopic { topic_id: Uuid::new_v4() }], "does not exist"),
            (
                vec![
                    MetadataRecord::RemoveTopic { topic_id: id },
                    MetadataRecord::Partition { topic_id: id, partition: 1, state: partition(1) },
                ],
                "does not exist",
            ),
            (
                vec![MetadataRecord::Config {
                    resource: ConfigResource::Topic("gone".into()),
                    name: "retention.ms".into(),
                    value: None,
                }],
                "does not exist",
            ),
            (vec![MetadataRecord::ProducerIds { node_id: 1, next_producer_id: 0 }], "overlaps"),
        ] {
            let error = image.apply_batch(&batch, 2).expect_err(why);
            assert!(error.contains(why), "{error}");
            assert_eq!(image, before, "a refused batch changes nothing");
        }
        // Removing a topic and creating it again in one entry fits.
        let new_id = Uuid::new_v4();
        image.apply_batch(&[MetadataRecord::RemoveTopic { topic_id: id }, topic("t", new_id)], 1).expect("recreate");
        assert_eq!(image.topic("t").map(|t| t.topic_id), Some(new_id));
    }

    #[test]
    fn an_entry_copies_only_the_topics_it_changes() {
        let mut image = MetadataImage::default();
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        image.apply(&MetadataRecord::Topic { name: "a".into(), topic_id: a });
        image.apply(&MetadataRecord::Topic { name: "b".into(), topic_id: b });
        let published = image.clone();
        image
            .apply_batch(&[MetadataRecord::Partition { topic_id: a, partition: 0, state: partition(1) }], 3)
            .expect("fits");
        assert!(Arc::ptr_eq(&image.topics["b"], &published.topics["b"]), "b is shared, not copied");
        assert!(!Arc::ptr_eq(&image.topics["a"], &published.topics["a"]), "a is copied before it changes");
        assert!(published.topics["a"].partitions.is_empty(), "the published image does not change");
    }

    #[test]
    fn the_cluster_id_is_written_once() {
        let mut image = MetadataImage::default();
        let id = |id: &str| MetadataRecord::ClusterId { cluster_id: id.into() };
        image.apply_batch(&[id("a")], 1).expect("first");
        image.apply_batch(&[id("a")], 1).expect("the same again");
        assert!(image.apply_batch(&[id("b")], 1).is_err());
        assert_eq!(image.cluster_id.as_deref(), Some("a"));
    }

    #[test]
    fn duplicate_topic_name_keeps_the_first() {
        let mut image = MetadataImage::default();
        let first = Uuid::new_v4();
        image.apply(&MetadataRecord::Topic { name: "t".into(), topic_id: first });
        image.apply(&MetadataRecord::Topic { name: "t".into(), topic_id: Uuid::new_v4() });
        assert_eq!(image.topic("t").map(|t| t.topic_id), Some(first));
        assert_eq!(image.topic_names.len(), 1);
    }

    #[test]
    fn broker_config_prefers_the_node_entry() {
        let mut image = MetadataImage::default();
        let set = |node, value: &str| MetadataRecord::Config {
            resource: ConfigResource::Broker(node),
            name: "log.retention.ms".into(),
            value: Some(value.into()),
        };
        image.apply(&set(None, "10"));
        assert_eq!(image.broker_config(1, "log.retention.ms"), Some(("10", false)));
        image.apply(&set(Some(1), "20"));
        assert_eq!(image.broker_config(1, "log.retention.ms"), Some(("20", true)));
        assert_eq!(image.broker_config(2, "log.retention.ms"), Some(("10", false)));
    }
}
