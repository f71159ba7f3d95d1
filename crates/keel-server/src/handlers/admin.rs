//! Topic administration and cluster description: CreateTopics, DeleteTopics,
//! CreatePartitions, DeleteRecords, DescribeCluster, DescribeLogDirs.

use std::collections::BTreeMap;
use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::create_topics_response::{CreatableTopicConfigs, CreatableTopicResult};
use kafka_protocol::messages::delete_records_response::{DeleteRecordsPartitionResult, DeleteRecordsTopicResult};
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::describe_log_dirs_response::{
    DescribeLogDirsPartition, DescribeLogDirsResult, DescribeLogDirsTopic,
};
use kafka_protocol::messages::{
    BrokerId, CreatePartitionsRequest, CreatePartitionsResponse, CreateTopicsRequest, CreateTopicsResponse,
    DeleteRecordsRequest, DeleteRecordsResponse, DeleteTopicsRequest, DeleteTopicsResponse, DescribeClusterRequest,
    DescribeClusterResponse, DescribeLogDirsRequest, DescribeLogDirsResponse, DescribeQuorumRequest,
    DescribeQuorumResponse, TopicName,
};
use uuid::Uuid;

use super::metadata::CLUSTER_OPERATIONS_ALL;
use super::str_bytes;
use crate::broker::Broker;
use crate::config::TOPIC_CONFIGS;
use crate::controller::{deadline_after_ms, TopicSpec};
use crate::error::ApiError;

pub async fn create_topics(broker: &Arc<Broker>, request: CreateTopicsRequest, version: i16) -> CreateTopicsResponse {
    let deadline = deadline_after_ms(request.timeout_ms);
    let names: Vec<TopicName> = request.topics.iter().map(|t| t.name.clone()).collect();
    let specs = request
        .topics
        .into_iter()
        .map(|topic| TopicSpec {
            name: topic.name.0.to_string(),
            num_partitions: topic.num_partitions,
            replication_factor: topic.replication_factor,
            assignments: topic
                .assignments
                .into_iter()
                .map(|a| (a.partition_index, a.broker_ids.into_iter().map(|id| id.0).collect()))
                .collect(),
            configs: topic
                .configs
                .into_iter()
                .map(|c| (c.name.to_string(), c.value.map(|v| v.to_string())))
                .collect::<BTreeMap<_, _>>(),
        })
        .collect();
    let results = broker.create_topics(specs, request.validate_only, deadline).await;
    let image = broker.image();
    let mut response = CreateTopicsResponse::default();
    for (name, result) in names.into_iter().zip(results) {
        let mut topic = CreatableTopicResult::default();
        match result {
            Ok(created) => {
                if version >= 7 && !request.validate_only {
                    topic.topic_id = created.topic_id;
                }
                if version >= 5 {
                    topic.num_partitions = created.num_partitions;
                    topic.replication_factor = created.replication_factor;
                }
                // v5+: the topic's resolved configs, so tools need no DescribeConfigs.
                if version >= 5 {
                    let view = broker.config(&image);
                    topic.configs = Some(
                        TOPIC_CONFIGS
                            .iter()
                            .filter_map(|def| {
                                let layer = view.topic_layers(name.0.as_str(), def.name).into_iter().next()?;
                                let mut config = CreatableTopicConfigs::default();
                                config.name = str_bytes(def.name);
                                config.value = layer.value.map(str_bytes);
                                config.config_source = layer.source as i8;
                                Some(config)
                            })
                            .collect(),
                    );
                }
            }
            Err(error) => {
                topic.error_code = error.code();
                topic.error_message = error.message.map(str_bytes);
            }
        }
        topic.name = name;
        response.topics.push(topic);
    }
    response
}

pub async fn delete_topics(broker: &Arc<Broker>, request: DeleteTopicsRequest, version: i16) -> DeleteTopicsResponse {
    let deadline = deadline_after_ms(request.timeout_ms);
    let image = broker.image();
    // v6 names topics by name or id; earlier versions by name only.
    let wanted: Vec<(Option<String>, Uuid)> = if version >= 6 {
        request
            .topics
            .into_iter()
            .map(|t| match t.name {
                Some(name) => (Some(name.0.to_string()), t.topic_id),
                None => (image.topic_by_id(&t.topic_id).map(|topic| topic.name.clone()), t.topic_id),
            })
            .collect()
    } else {
        request.topic_names.into_iter().map(|n| (Some(n.0.to_string()), Uuid::nil())).collect()
    };
    let known: Vec<String> = wanted.iter().filter_map(|(name, _)| name.clone()).collect();
    let mut results = broker.delete_topics(known, deadline).await.into_iter();
    let mut response = DeleteTopicsResponse::default();
    for (name, topic_id) in wanted {
        let mut result = DeletableTopicResult::default();
        result.name = name.clone().map(|n| TopicName(str_bytes(n)));
        let outcome = match name {
            Some(_) => results.next().unwrap_or_else(|| Err(ApiError::new(ResponseError::UnknownServerError))),
            None => Err(ApiError::new(ResponseError::UnknownTopicId)),
        };
        match outcome {
            Ok(id) if version >= 6 => result.topic_id = id,
            Ok(_) => {}
            Err(error) => {
                result.error_code = error.code();
                if version >= 6 {
                    result.topic_id = topic_id;
                }
                if version >= 5 {
                    result.error_message = error.message.map(str_bytes);
                }
            }
        }
        response.responses.push(result);
    }
    response
}

pub async fn create_partitions(broker: &Arc<Broker>, request: CreatePartitionsRequest) -> CreatePartitionsResponse {
    let deadline = deadline_after_ms(request.timeout_ms);
    let mut response = CreatePartitionsResponse::default();
    for topic in request.topics {
        let assignments = topic
            .assignments
            .map(|a| a.into_iter().map(|p| p.broker_ids.into_iter().map(|id| id.0).collect()).collect());
        let result = broker
            .create_partitions(topic.name.0.as_str(), topic.count, assignments, request.validate_only, deadline)
            .await;
        let mut topic_result = CreatePartitionsTopicResult::default();
        topic_result.name = topic.name;
        if let Err(error) = result {
            topic_result.error_code = error.code();
            topic_result.error_message = error.message.map(str_bytes);
        }
        response.results.push(topic_result);
    }
    response
}

pub fn delete_records(broker: &Broker, request: DeleteRecordsRequest) -> DeleteRecordsResponse {
    let mut response = DeleteRecordsResponse::default();
    for topic in request.topics {
        let mut topic_result = DeleteRecordsTopicResult::default();
        topic_result.name = topic.name.clone();
        for wanted in topic.partitions {
            let mut result = DeleteRecordsPartitionResult::default();
            result.partition_index = wanted.partition_index;
            let outcome = broker
                .partition(topic.name.0.as_str(), wanted.partition_index)
                .ok_or_else(|| broker.not_led(topic.name.0.as_str(), wanted.partition_index))
                .and_then(|partition| {
                    let high_watermark = partition.high_watermark();
                    // -1 deletes everything up to the high watermark.
                    let offset = if wanted.offset == -1 { high_watermark } else { wanted.offset };
                    if offset < 0 || offset > high_watermark {
                        return Err(ApiError::new(ResponseError::OffsetOutOfRange));
                    }
                    Ok(partition.log.delete_records_before(offset)?)
                });
            match outcome {
                Ok(low_watermark) => result.low_watermark = low_watermark,
                Err(error) => {
                    result.error_code = error.code();
                    result.low_watermark = -1;
                }
            }
            topic_result.partitions.push(result);
        }
        response.topics.push(topic_result);
    }
    if let Err(error) = broker.logs.checkpoint() {
        tracing::warn!(%error, "cannot checkpoint the new log start offsets");
    }
    response
}

pub fn describe_cluster(broker: &Broker, request: DescribeClusterRequest) -> DescribeClusterResponse {
    let image = broker.image();
    let mut response = DescribeClusterResponse::default();
    // endpoint_type 1 = brokers, 2 = controllers (KIP-919); this node is both.
    if !matches!(request.endpoint_type, 1 | 2) {
        response.error_code = ResponseError::UnsupportedEndpointType.code();
        response.error_message = Some(str_bytes("endpoint type must be 1 (brokers) or 2 (controllers)"));
        return response;
    }
    response.endpoint_type = request.endpoint_type;
    response.cluster_id = str_bytes(broker.cluster_id.clone());
    response.controller_id = BrokerId(broker.controller_id());
    // Fenced brokers only when asked for (v2, KIP-1073), as Kafka lists them.
    response.brokers = image
        .brokers
        .values()
        .filter(|b| !b.fenced || request.include_fenced_brokers)
        .map(|b| {
            let mut out = DescribeClusterBroker::default();
            out.broker_id = BrokerId(b.node_id);
            out.host = str_bytes(b.host.clone());
            out.port = i32::from(b.port);
            out.rack = b.rack.clone().map(str_bytes);
            out.is_fenced = b.fenced;
            out
        })
        .collect();
    if request.include_cluster_authorized_operations {
        response.cluster_authorized_operations = CLUSTER_OPERATIONS_ALL;
    }
    response
}

/// The metadata log's topic in DescribeQuorum, as KRaft names it.
const METADATA_TOPIC: &str = "__cluster_metadata";

/// DescribeQuorum (KIP-595/KIP-836): the metadata quorum's leader, epoch and high watermark, and
/// each voter's log end offset, as the leader sees them. Offsets are the metadata log's entry
/// indexes (the high watermark is one past the last committed entry); this node does not keep
/// fetch timestamps, so they are -1 (unknown). Any node answers with the active controller's
/// view (asked over the controller listener when another node leads), as a Kafka broker
/// forwards it to its controller; without a reachable leader the partition's error says why.
/// A partition other than `__cluster_metadata`-0 is UNKNOWN_TOPIC_OR_PARTITION.
pub async fn describe_quorum(broker: &Arc<Broker>, request: DescribeQuorumRequest) -> DescribeQuorumResponse {
    use kafka_protocol::messages::describe_quorum_response::{PartitionData, ReplicaState, TopicData};
    let mut response = DescribeQuorumResponse::default();
    let valid = request.topics.len() == 1
        && request.topics[0].topic_name.as_str() == METADATA_TOPIC
        && request.topics[0].partitions.len() == 1
        && request.topics[0].partitions[0].partition_index == 0;
    if !valid {
        // Kafka's getPartitionLevelErrorResponse: every partition asked for, with the error.
        response.topics = request
            .topics
            .iter()
            .map(|wanted| {
                let mut topic = TopicData::default();
                topic.topic_name = wanted.topic_name.clone();
                topic.partitions = wanted
                    .partitions
                    .iter()
                    .map(|p| {
                        let mut partition = PartitionData::default();
                        partition.partition_index = p.partition_index;
                        partition.error_code = ResponseError::UnknownTopicOrPartition.code();
                        partition
                    })
                    .collect();
                topic
            })
            .collect();
        return response;
    }
    let mut partition = PartitionData::default();
    let (quorum, error) = match broker.quorum_state(crate::controller::default_deadline()).await {
        Ok(quorum) => (quorum, None),
        Err(error) => (broker.metadata.quorum(), Some(error)),
    };
    partition.leader_id = BrokerId(quorum.leader.unwrap_or(-1));
    partition.leader_epoch = quorum.epoch();
    if let Some(error) = error {
        partition.error_code = error.code();
        partition.error_message = error.message.map(str_bytes);
    } else {
        partition.high_watermark = quorum.high_watermark();
        let replica = |&(node, matched): &(keel_cluster::NodeId, Option<u64>)| {
            let mut replica = ReplicaState::default();
            replica.replica_id = BrokerId(node);
            // The leader's own log end is its log's; a single voter has no replication
            // progress to report.
            replica.log_end_offset = if Some(node) == quorum.leader {
                quorum.log_end_offset()
            } else {
                matched.map_or(-1, |index| index as i64 + 1)
            };
            replica.last_fetch_timestamp = -1;
            replica.last_caught_up_timestamp = -1;
            replica
        };
        partition.current_voters = quorum.voters.iter().map(replica).collect();
        partition.observers = quorum.observers.iter().map(replica).collect();
    }
    let mut topic = TopicData::default();
    topic.topic_name = TopicName(str_bytes(METADATA_TOPIC));
    topic.partitions = vec![partition];
    response.topics = vec![topic];
    response
}

pub fn describe_log_dirs(broker: &Broker, request: DescribeLogDirsRequest) -> DescribeLogDirsResponse {
    let mut by_topic: BTreeMap<String, Vec<DescribeLogDirsPartition>> = BTreeMap::new();
    let wanted = request
        .topics
        .map(|topics| topics.into_iter().map(|t| (t.topic.0.to_string(), t.partitions)).collect::<BTreeMap<_, _>>());
    for partition in broker.partitions.all() {
        if let Some(wanted) = &wanted {
            match wanted.get(&partition.topic) {
                Some(indexes) if indexes.contains(&partition.index) => {}
                _ => continue,
            }
        }
        let mut out = DescribeLogDirsPartition::default();
        out.partition_index = partition.index;
        out.partition_size = partition.log.size_bytes() as i64;
        out.offset_lag = 0;
        by_topic.entry(partition.topic.clone()).or_default().push(out);
    }
    let mut result = DescribeLogDirsResult::default();
    let dir = std::fs::canonicalize(&broker.data_dir).unwrap_or_else(|_| broker.data_dir.clone());
    result.log_dir = str_bytes(dir.display().to_string());
    // Volume sizes are not measured yet; -1 is Kafka's "unknown".
    result.total_bytes = -1;
    result.usable_bytes = -1;
    result.topics = by_topic
        .into_iter()
        .map(|(name, mut partitions)| {
            partitions.sort_by_key(|p| p.partition_index);
            let mut topic = DescribeLogDirsTopic::default();
            topic.name = TopicName(str_bytes(name));
            topic.partitions = partitions;
            topic
        })
        .collect();
    let mut response = DescribeLogDirsResponse::default();
    response.results = vec![result];
    response
}
