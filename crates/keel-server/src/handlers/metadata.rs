//! Metadata: brokers, controller, topics and partitions, with auto-creation on request.

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse, TopicName};
use keel_cluster::{MetadataImage, TopicImage};
use uuid::Uuid;

use super::str_bytes;
use crate::broker::Broker;
use crate::controller::validate_topic_name;

/// Kafka's bit set of the operations on a topic (READ..ALTER_CONFIGS), all allowed while no
/// authorizer is configured.
pub const TOPIC_OPERATIONS_ALL: i32 =
    (1 << 3) | (1 << 4) | (1 << 5) | (1 << 6) | (1 << 7) | (1 << 8) | (1 << 10) | (1 << 11);
/// Kafka's bit set of cluster operations (CREATE, ALTER, DESCRIBE, CLUSTER_ACTION,
/// DESCRIBE_CONFIGS, ALTER_CONFIGS, IDEMPOTENT_WRITE).
pub const CLUSTER_OPERATIONS_ALL: i32 = (1 << 5) | (1 << 7) | (1 << 8) | (1 << 9) | (1 << 10) | (1 << 11) | (1 << 12);

pub async fn handle(broker: &Arc<Broker>, request: MetadataRequest, version: i16) -> MetadataResponse {
    // v0 has no null topic list: an empty list means every topic.
    let requested = match request.topics {
        Some(topics) if version == 0 && topics.is_empty() => None,
        other => other,
    };
    let allow_auto_create = version < 4 || request.allow_auto_topic_creation;
    let mut topics = Vec::new();
    match requested {
        None => {
            let image = broker.image();
            topics.extend(
                image.topics.values().map(|t| topic_response(&image, t, request.include_topic_authorized_operations)),
            );
        }
        Some(wanted) => {
            for wanted in wanted {
                let response = match wanted.name {
                    Some(name) => {
                        named_topic(
                            broker,
                            name.0.as_str(),
                            allow_auto_create,
                            request.include_topic_authorized_operations,
                        )
                        .await
                    }
                    None => topic_by_id(broker, wanted.topic_id, request.include_topic_authorized_operations),
                };
                topics.push(response);
            }
        }
    }
    let image = broker.image();
    let mut response = MetadataResponse::default();
    response.brokers = brokers(&image);
    response.cluster_id = Some(str_bytes(broker.cluster_id.clone()));
    response.controller_id = BrokerId(broker.controller_id());
    response.topics = topics;
    if request.include_cluster_authorized_operations {
        response.cluster_authorized_operations = CLUSTER_OPERATIONS_ALL;
    }
    fit_to_version(&mut response, version);
    response
}

/// Resets the fields that `version` does not carry (the codec refuses to drop set fields).
fn fit_to_version(response: &mut MetadataResponse, version: i16) {
    let defaults = MetadataResponse::default();
    if version < 1 {
        response.controller_id = defaults.controller_id;
        response.brokers.iter_mut().for_each(|b| b.rack = None);
    }
    if version < 2 {
        response.cluster_id = None;
    }
    if !(8..=10).contains(&version) {
        response.cluster_authorized_operations = defaults.cluster_authorized_operations;
    }
    let topic_defaults = MetadataResponseTopic::default();
    for topic in &mut response.topics {
        if version < 1 {
            topic.is_internal = false;
        }
        if version < 8 {
            topic.topic_authorized_operations = topic_defaults.topic_authorized_operations;
        }
        if version < 10 {
            topic.topic_id = Uuid::nil();
        }
        for partition in &mut topic.partitions {
            if version < 5 {
                partition.offline_replicas.clear();
            }
            if version < 7 {
                partition.leader_epoch = -1;
            }
        }
    }
}

/// The brokers clients may use: registered and not fenced (Kafka's alive brokers).
pub fn brokers(image: &MetadataImage) -> Vec<MetadataResponseBroker> {
    image
        .brokers
        .values()
        .filter(|b| !b.fenced)
        .map(|b| {
            let mut broker = MetadataResponseBroker::default();
            broker.node_id = BrokerId(b.node_id);
            broker.host = str_bytes(b.host.clone());
            broker.port = i32::from(b.port);
            broker.rack = b.rack.clone().map(str_bytes);
            broker
        })
        .collect()
}

fn error_topic(name: Option<&str>, topic_id: Uuid, error: ResponseError) -> MetadataResponseTopic {
    let mut topic = MetadataResponseTopic::default();
    topic.name = name.map(|n| TopicName(str_bytes(n)));
    topic.topic_id = topic_id;
    topic.error_code = error.code();
    topic
}

async fn named_topic(
    broker: &Arc<Broker>,
    name: &str,
    allow_auto_create: bool,
    include_ops: bool,
) -> MetadataResponseTopic {
    if let Some(topic) = broker.image().topic(name) {
        return topic_response(&broker.image(), topic, include_ops);
    }
    if let Err(error) = validate_topic_name(name) {
        return error_topic(Some(name), Uuid::nil(), error.code);
    }
    if allow_auto_create {
        match broker.auto_create_topic(name).await {
            Ok(true) => {
                let image = broker.image();
                if let Some(topic) = image.topic(name) {
                    return topic_response(&image, topic, include_ops);
                }
            }
            Ok(false) => {}
            Err(error) => return error_topic(Some(name), Uuid::nil(), error.code),
        }
    }
    error_topic(Some(name), Uuid::nil(), ResponseError::UnknownTopicOrPartition)
}

fn topic_by_id(broker: &Broker, topic_id: Uuid, include_ops: bool) -> MetadataResponseTopic {
    let image = broker.image();
    match image.topic_by_id(&topic_id) {
        Some(topic) => topic_response(&image, topic, include_ops),
        None => error_topic(None, topic_id, ResponseError::UnknownTopicId),
    }
}

pub fn topic_response(image: &MetadataImage, topic: &TopicImage, include_ops: bool) -> MetadataResponseTopic {
    let mut response = MetadataResponseTopic::default();
    response.name = Some(TopicName(str_bytes(topic.name.clone())));
    response.topic_id = topic.topic_id;
    response.is_internal = topic.is_internal();
    if include_ops {
        response.topic_authorized_operations = TOPIC_OPERATIONS_ALL;
    }
    response.partitions = topic
        .partitions
        .iter()
        .map(|(&index, state)| {
            let mut partition = MetadataResponsePartition::default();
            partition.partition_index = index;
            partition.leader_id = BrokerId(state.leader);
            partition.leader_epoch = state.leader_epoch;
            partition.replica_nodes = state.replicas.iter().copied().map(BrokerId).collect();
            partition.isr_nodes = state.isr.iter().copied().map(BrokerId).collect();
            partition.offline_replicas =
                state.replicas.iter().filter(|id| !image.is_broker_alive(**id)).copied().map(BrokerId).collect();
            if state.leader < 0 {
                partition.error_code = ResponseError::LeaderNotAvailable.code();
            }
            partition
        })
        .collect();
    response
}
