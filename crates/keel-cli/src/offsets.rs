//! Topic layouts from Metadata, and offsets from ListOffsets at each partition's leader.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::{BrokerId, ListOffsetsRequest, MetadataResponse};
use kafka_protocol::protocol::StrBytes;

use crate::client::{name, Client};
use crate::error::{check, CliError};
use crate::format::OffsetSpec;

/// ListOffsets special timestamps.
pub const EARLIEST: i64 = -2;
pub const LATEST: i64 = -1;
pub const READ_UNCOMMITTED: i8 = 0;
pub const READ_COMMITTED: i8 = 1;

#[derive(Debug, Clone)]
pub struct PartitionInfo {
    pub partition: i32,
    pub leader: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    pub offline: Vec<i32>,
}

#[derive(Debug, Clone)]
pub struct TopicInfo {
    pub name: String,
    pub topic_id: String,
    pub internal: bool,
    pub error_code: i16,
    pub partitions: Vec<PartitionInfo>,
}

/// Every topic of a Metadata answer, sorted by name, partitions by index.
pub fn topics(metadata: &MetadataResponse) -> Vec<TopicInfo> {
    let mut topics: Vec<TopicInfo> = metadata
        .topics
        .iter()
        .map(|topic| {
            let mut partitions: Vec<PartitionInfo> = topic
                .partitions
                .iter()
                .map(|p| PartitionInfo {
                    partition: p.partition_index,
                    leader: p.leader_id.0,
                    replicas: p.replica_nodes.iter().map(|b| b.0).collect(),
                    isr: p.isr_nodes.iter().map(|b| b.0).collect(),
                    offline: p.offline_replicas.iter().map(|b| b.0).collect(),
                })
                .collect();
            partitions.sort_by_key(|p| p.partition);
            TopicInfo {
                name: topic.name.as_ref().map(|n| n.0.to_string()).unwrap_or_default(),
                topic_id: topic.topic_id.to_string(),
                internal: topic.is_internal,
                error_code: topic.error_code,
                partitions,
            }
        })
        .collect();
    topics.sort_by(|a, b| a.name.cmp(&b.name));
    topics
}

/// One topic's layout. A topic being created (LEADER_NOT_AVAILABLE, or partitions without a
/// leader yet) is asked for again for a few seconds.
pub async fn topic(client: &mut Client, topic: &str, auto_create: bool, context: &str) -> Result<TopicInfo, CliError> {
    let wanted = [topic.to_string()];
    let mut attempts = 0;
    loop {
        attempts += 1;
        let (_, metadata) = client.metadata(Some(&wanted), auto_create).await?;
        let info = topics(&metadata)
            .into_iter()
            .find(|t| t.name == topic)
            .ok_or_else(|| CliError::Protocol(format!("Metadata did not answer for topic {topic:?}")))?;
        let settling = info.error_code == 5 || (info.error_code == 0 && info.partitions.iter().any(|p| p.leader < 0));
        if settling && attempts < 50 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        check(|| format!("{context} {topic:?}"), info.error_code, None)?;
        return Ok(info);
    }
}

/// Partition -> leader for the partitions of `info`.
pub fn leaders(info: &TopicInfo) -> HashMap<(String, i32), i32> {
    info.partitions.iter().map(|p| ((info.name.clone(), p.partition), p.leader)).collect()
}

/// ListOffsets for `timestamp` (or EARLIEST/LATEST) of each partition, at its leader.
pub async fn list_offsets(
    client: &mut Client,
    leaders: &HashMap<(String, i32), i32>,
    wanted: &[(String, i32)],
    timestamp: i64,
    isolation_level: i8,
) -> Result<BTreeMap<(String, i32), i64>, CliError> {
    let mut by_leader: BTreeMap<i32, BTreeMap<String, Vec<i32>>> = BTreeMap::new();
    for (topic, partition) in wanted {
        let leader = leaders.get(&(topic.clone(), *partition)).copied().unwrap_or(-1);
        if leader < 0 {
            return Err(CliError::broker(format!("partition {topic}-{partition} has no leader"), 5, None));
        }
        by_leader.entry(leader).or_default().entry(topic.clone()).or_default().push(*partition);
    }
    let mut offsets = BTreeMap::new();
    for (leader, topics) in by_leader {
        let (_, response) = client
            .node(leader)
            .await?
            .request(1..=8, |version| {
                let mut request = ListOffsetsRequest::default();
                request.replica_id = BrokerId(-1);
                if version >= 2 {
                    request.isolation_level = isolation_level;
                }
                request.topics = topics
                    .iter()
                    .map(|(topic, partitions)| {
                        let mut wanted = ListOffsetsTopic::default();
                        wanted.name = name(topic);
                        wanted.partitions = partitions
                            .iter()
                            .map(|p| {
                                let mut partition = ListOffsetsPartition::default();
                                partition.partition_index = *p;
                                partition.current_leader_epoch = -1;
                                partition.timestamp = timestamp;
                                partition
                            })
                            .collect();
                        wanted
                    })
                    .collect();
                request
            })
            .await?;
        for topic in response.topics {
            for partition in topic.partitions {
                let topic_name = topic.name.0.to_string();
                check(
                    || format!("cannot list offsets of {topic_name}-{}", partition.partition_index),
                    partition.error_code,
                    None::<&StrBytes>,
                )?;
                offsets.insert((topic_name, partition.partition_index), partition.offset);
            }
        }
    }
    Ok(offsets)
}

/// Resolves an offset spec for each partition. Offsets are kept within [log start, high
/// watermark], as kafka-consumer-groups --reset-offsets does; a timestamp after the last
/// record resolves to the end.
pub async fn resolve(
    client: &mut Client,
    leaders: &HashMap<(String, i32), i32>,
    wanted: &[(String, i32)],
    spec: OffsetSpec,
) -> Result<BTreeMap<(String, i32), i64>, CliError> {
    match spec {
        OffsetSpec::Start => list_offsets(client, leaders, wanted, EARLIEST, READ_UNCOMMITTED).await,
        OffsetSpec::End => list_offsets(client, leaders, wanted, LATEST, READ_UNCOMMITTED).await,
        OffsetSpec::Timestamp(timestamp) => {
            let mut found = list_offsets(client, leaders, wanted, timestamp, READ_UNCOMMITTED).await?;
            if found.values().any(|offset| *offset < 0) {
                let ends = list_offsets(client, leaders, wanted, LATEST, READ_UNCOMMITTED).await?;
                for (key, offset) in found.iter_mut() {
                    if *offset < 0 {
                        *offset = ends.get(key).copied().unwrap_or(0);
                    }
                }
            }
            Ok(found)
        }
        OffsetSpec::FromEnd(_) | OffsetSpec::Offset(_) => {
            let starts = list_offsets(client, leaders, wanted, EARLIEST, READ_UNCOMMITTED).await?;
            let ends = list_offsets(client, leaders, wanted, LATEST, READ_UNCOMMITTED).await?;
            Ok(starts
                .into_iter()
                .map(|(key, start)| {
                    let end = ends.get(&key).copied().unwrap_or(start);
                    let offset = match spec {
                        OffsetSpec::FromEnd(count) => end.saturating_sub(count),
                        OffsetSpec::Offset(offset) => offset,
                        _ => unreachable!("matched above"),
                    };
                    (key, offset.clamp(start, end.max(start)))
                })
                .collect())
        }
    }
}
