//! The consumer group APIs on the wire: FindCoordinator, JoinGroup, SyncGroup, Heartbeat,
//! LeaveGroup, OffsetCommit, OffsetFetch, ListGroups, DescribeGroups, DeleteGroups.
//!
//! Each request is mapped to the coordinator's plain structs, sent to the actor of the group's
//! `__consumer_offsets` partition, and the answer is shaped for the request's version (the codec
//! refuses fields a version does not have).

use std::collections::BTreeMap;
use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::find_coordinator_response::Coordinator as WireCoordinator;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::offset_commit_response::{OffsetCommitResponsePartition, OffsetCommitResponseTopic};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions, OffsetFetchResponseTopic,
    OffsetFetchResponseTopics,
};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use keel_coordinator as gc;
use keel_coordinator::ErrorCode;
use tokio::sync::oneshot;

use super::str_bytes;
use crate::broker::Broker;
use crate::groups::{submit, Call, Command};
use crate::network::{Reply, Response};

/// FindCoordinator key types.
const GROUP_KEY: i8 = 0;
const TRANSACTION_KEY: i8 = 1;

fn opt_str(s: &Option<StrBytes>) -> Option<String> {
    s.as_ref().map(|s| s.to_string())
}

pub async fn find_coordinator(
    broker: &Arc<Broker>,
    request: FindCoordinatorRequest,
    version: i16,
) -> FindCoordinatorResponse {
    let keys: Vec<String> = if version >= 4 {
        request.coordinator_keys.iter().map(|k| k.to_string()).collect()
    } else {
        vec![request.key.to_string()]
    };
    let mut coordinators = Vec::with_capacity(keys.len());
    for key in keys {
        let mut coordinator = WireCoordinator::default();
        coordinator.key = str_bytes(key.clone());
        let outcome = match request.key_type {
            GROUP_KEY if key.is_empty() => Err((ResponseError::InvalidRequest, "the group id is empty")),
            GROUP_KEY => match broker.coordinator_partition(&key).await {
                Ok(index) => Ok((crate::groups::OFFSETS_TOPIC, index)),
                Err(_) => Err((ResponseError::CoordinatorNotAvailable, "the offsets topic cannot be created")),
            },
            TRANSACTION_KEY if key.is_empty() => Err((ResponseError::InvalidRequest, "the transactional id is empty")),
            TRANSACTION_KEY => match broker.ensure_transaction_topic().await {
                Ok(count) => Ok((crate::transactions::TXN_TOPIC, crate::groups::partition_for(&key, count))),
                Err(_) => {
                    Err((ResponseError::CoordinatorNotAvailable, "the transaction state topic cannot be created"))
                }
            },
            _ => Err((ResponseError::InvalidRequest, "unknown coordinator key type")),
        };
        // The coordinator is the leader of the key's internal partition.
        let image = broker.image();
        let outcome = outcome.and_then(|(topic, index)| {
            image
                .topic(topic)
                .and_then(|t| t.partitions.get(&index))
                .and_then(|state| image.brokers.get(&state.leader))
                .ok_or((ResponseError::CoordinatorNotAvailable, "the coordinator's partition has no leader"))
        });
        match outcome {
            Ok(leader) => {
                coordinator.node_id = BrokerId(leader.node_id);
                coordinator.host = str_bytes(leader.host.clone());
                coordinator.port = i32::from(leader.port);
            }
            Err((error, message)) => {
                coordinator.error_code = error.code();
                coordinator.error_message = Some(str_bytes(message));
                coordinator.node_id = BrokerId(-1);
                coordinator.port = -1;
            }
        }
        coordinators.push(coordinator);
    }
    let mut response = FindCoordinatorResponse::default();
    if version >= 4 {
        response.coordinators = coordinators;
    } else if let Some(c) = coordinators.pop() {
        response.error_code = c.error_code;
        if version >= 1 {
            response.error_message = c.error_message;
        }
        response.node_id = c.node_id;
        response.host = c.host;
        response.port = c.port;
    }
    response
}

/// A coordinator call on its way: queued now, answered later.
type Pending = Result<oneshot::Receiver<gc::Response>, ErrorCode>;

/// Queues a call to the group's coordinator (in request order).
async fn enqueue(broker: &Arc<Broker>, group_id: &str, request: Call) -> Pending {
    let sender = broker.coordinator(group_id).await?;
    submit(&sender, request).await.ok_or(ErrorCode::NOT_COORDINATOR)
}

/// Asks the group's coordinator something that is answered at once, and waits for it.
async fn ask<T>(
    broker: &Arc<Broker>,
    group_id: &str,
    command: impl FnOnce(oneshot::Sender<T>) -> Command,
) -> Result<T, ErrorCode> {
    let sender = broker.coordinator(group_id).await?;
    let (tx, rx) = oneshot::channel();
    sender.send(command(tx)).await.map_err(|_| ErrorCode::NOT_COORDINATOR)?;
    rx.await.map_err(|_| ErrorCode::NOT_COORDINATOR)
}

/// Waits for a queued call's answer; `Err` is the error code to answer with.
async fn answer(pending: Pending) -> Result<gc::Response, ErrorCode> {
    pending?.await.map_err(|_| ErrorCode::NOT_COORDINATOR)
}

/// Sends a call to the group's coordinator and waits for the answer.
async fn coordinate(broker: &Arc<Broker>, group_id: &str, request: Call) -> Result<gc::Response, ErrorCode> {
    answer(enqueue(broker, group_id, request).await).await
}

/// JoinGroup and SyncGroup wait for a rebalance, possibly for minutes: the connection goes on
/// with its other requests meanwhile, and the response is written in its turn.
pub async fn join_group_reply(
    broker: &Arc<Broker>,
    request: JoinGroupRequest,
    version: i16,
    client_id: &str,
    client_host: &str,
) -> Reply {
    let member_id = request.member_id.to_string();
    let group_id = request.group_id.0.to_string();
    let pending = enqueue(broker, &group_id, Call::Join(join_request(request, version, client_id, client_host))).await;
    Reply::Pending(tokio::spawn(async move {
        let answer = match answer(pending).await {
            Ok(gc::Response::JoinGroup(answer)) => answer,
            Ok(_) => gc::JoinGroupResponse::error(member_id, ErrorCode::NOT_COORDINATOR),
            Err(error) => gc::JoinGroupResponse::error(member_id, error),
        };
        Some(Response::Kind(ResponseKind::JoinGroup(join_response(answer, version))))
    }))
}

pub async fn sync_group_reply(broker: &Arc<Broker>, request: SyncGroupRequest, version: i16) -> Reply {
    let group_id = request.group_id.0.to_string();
    let pending = enqueue(broker, &group_id, Call::Sync(sync_request(request))).await;
    Reply::Pending(tokio::spawn(async move {
        let answer = match answer(pending).await {
            Ok(gc::Response::SyncGroup(answer)) => answer,
            Ok(_) => gc::SyncGroupResponse::error(ErrorCode::NOT_COORDINATOR),
            Err(error) => gc::SyncGroupResponse::error(error),
        };
        Some(Response::Kind(ResponseKind::SyncGroup(sync_response(answer, version))))
    }))
}

fn join_request(request: JoinGroupRequest, version: i16, client_id: &str, client_host: &str) -> gc::JoinGroup {
    gc::JoinGroup {
        version,
        group_id: request.group_id.0.to_string(),
        session_timeout_ms: request.session_timeout_ms,
        // v0 has no rebalance timeout: the session timeout stands in for it.
        rebalance_timeout_ms: if version >= 1 { request.rebalance_timeout_ms } else { request.session_timeout_ms },
        member_id: request.member_id.to_string(),
        group_instance_id: opt_str(&request.group_instance_id),
        protocol_type: request.protocol_type.to_string(),
        protocols: request
            .protocols
            .iter()
            .map(|p| gc::JoinProtocol { name: p.name.to_string(), metadata: p.metadata.clone() })
            .collect(),
        reason: opt_str(&request.reason),
        client_id: client_id.to_string(),
        client_host: client_host.to_string(),
    }
}

fn join_response(answer: gc::JoinGroupResponse, version: i16) -> JoinGroupResponse {
    let mut response = JoinGroupResponse::default();
    response.error_code = answer.error_code.code();
    response.generation_id = answer.generation_id;
    if version >= 7 {
        response.protocol_type = answer.protocol_type.map(str_bytes);
        response.protocol_name = answer.protocol_name.map(str_bytes);
    } else {
        // Before v7 the protocol name is not nullable.
        response.protocol_name = Some(str_bytes(answer.protocol_name.unwrap_or_default()));
    }
    response.leader = str_bytes(answer.leader);
    if version >= 9 {
        response.skip_assignment = answer.skip_assignment;
    }
    response.member_id = str_bytes(answer.member_id);
    response.members = answer
        .members
        .into_iter()
        .map(|m| {
            let mut member = JoinGroupResponseMember::default();
            member.member_id = str_bytes(m.member_id);
            if version >= 5 {
                member.group_instance_id = m.group_instance_id.map(str_bytes);
            }
            member.metadata = m.metadata;
            member
        })
        .collect();
    response
}

fn sync_request(request: SyncGroupRequest) -> gc::SyncGroup {
    gc::SyncGroup {
        group_id: request.group_id.0.to_string(),
        generation_id: request.generation_id,
        member_id: request.member_id.to_string(),
        group_instance_id: opt_str(&request.group_instance_id),
        protocol_type: opt_str(&request.protocol_type),
        protocol_name: opt_str(&request.protocol_name),
        assignments: request
            .assignments
            .iter()
            .map(|a| gc::SyncAssignment { member_id: a.member_id.to_string(), assignment: a.assignment.clone() })
            .collect(),
    }
}

fn sync_response(answer: gc::SyncGroupResponse, version: i16) -> SyncGroupResponse {
    let mut response = SyncGroupResponse::default();
    response.error_code = answer.error_code.code();
    if version >= 5 {
        response.protocol_type = answer.protocol_type.map(str_bytes);
        response.protocol_name = answer.protocol_name.map(str_bytes);
    }
    response.assignment = answer.assignment;
    response
}

pub async fn heartbeat(broker: &Arc<Broker>, request: HeartbeatRequest) -> HeartbeatResponse {
    let group_id = request.group_id.0.to_string();
    let beat = gc::Heartbeat {
        group_id: group_id.clone(),
        generation_id: request.generation_id,
        member_id: request.member_id.to_string(),
        group_instance_id: opt_str(&request.group_instance_id),
    };
    let error = match coordinate(broker, &group_id, Call::Heartbeat(beat)).await {
        Ok(gc::Response::Heartbeat(answer)) => answer.error_code,
        Ok(_) => ErrorCode::NOT_COORDINATOR,
        Err(error) => error,
    };
    let mut response = HeartbeatResponse::default();
    response.error_code = error.code();
    response
}

pub async fn leave_group(broker: &Arc<Broker>, request: LeaveGroupRequest, version: i16) -> LeaveGroupResponse {
    let group_id = request.group_id.0.to_string();
    let members = if version >= 3 {
        request
            .members
            .iter()
            .map(|m| gc::LeaveMember {
                member_id: m.member_id.to_string(),
                group_instance_id: opt_str(&m.group_instance_id),
                reason: opt_str(&m.reason),
            })
            .collect()
    } else {
        vec![gc::LeaveMember { member_id: request.member_id.to_string(), group_instance_id: None, reason: None }]
    };
    let leave = gc::LeaveGroup { group_id: group_id.clone(), members };
    let answer = match coordinate(broker, &group_id, Call::Leave(leave)).await {
        Ok(gc::Response::LeaveGroup(answer)) => answer,
        Ok(_) => gc::LeaveGroupResponse { error_code: ErrorCode::NOT_COORDINATOR, members: Vec::new() },
        Err(error) => gc::LeaveGroupResponse { error_code: error, members: Vec::new() },
    };
    let mut response = LeaveGroupResponse::default();
    if version >= 3 {
        response.error_code = answer.error_code.code();
        response.members = answer
            .members
            .into_iter()
            .map(|m| {
                let mut member = MemberResponse::default();
                member.member_id = str_bytes(m.member_id);
                member.group_instance_id = m.group_instance_id.map(str_bytes);
                member.error_code = m.error_code.code();
                member
            })
            .collect();
    } else {
        // v0-v2 name one member: its error is the response's.
        let member_error = answer.members.first().map_or(ErrorCode::NONE, |m| m.error_code);
        response.error_code = if answer.error_code.is_none() { member_error.code() } else { answer.error_code.code() };
    }
    response
}

pub async fn offset_commit(broker: &Arc<Broker>, request: OffsetCommitRequest, version: i16) -> OffsetCommitResponse {
    let image = broker.image();
    let group_id = request.group_id.0.to_string();
    // Topics that do not exist are answered here; the rest go to the coordinator.
    let mut unknown: Vec<OffsetCommitResponseTopic> = Vec::new();
    let mut known = Vec::new();
    for topic in &request.topics {
        // OffsetCommit is served up to v9, which names topics (v10 adds topic ids).
        match image.topic(topic.name.0.as_str()) {
            Some(existing) => {
                let (name, count) = (existing.name.clone(), existing.partitions.len() as i32);
                let (inside, outside): (Vec<_>, Vec<_>) =
                    topic.partitions.iter().partition(|p| p.partition_index >= 0 && p.partition_index < count);
                if !outside.is_empty() {
                    unknown.push(commit_errors(topic, &outside, ResponseError::UnknownTopicOrPartition));
                }
                known.push(gc::OffsetCommitTopic {
                    name,
                    partitions: inside
                        .into_iter()
                        .map(|p| gc::OffsetCommitPartition {
                            partition_index: p.partition_index,
                            committed_offset: p.committed_offset,
                            committed_leader_epoch: p.committed_leader_epoch,
                            committed_metadata: opt_str(&p.committed_metadata),
                        })
                        .collect(),
                });
            }
            None => {
                let all: Vec<_> = topic.partitions.iter().collect();
                unknown.push(commit_errors(topic, &all, ResponseError::UnknownTopicOrPartition));
            }
        }
    }
    let commit = gc::OffsetCommit {
        version,
        group_id: group_id.clone(),
        generation_id: request.generation_id_or_member_epoch,
        member_id: request.member_id.to_string(),
        group_instance_id: opt_str(&request.group_instance_id),
        retention_time_ms: request.retention_time_ms,
        topics: known,
    };
    let requested = commit.topics.clone();
    let answer = match coordinate(broker, &group_id, Call::Commit(commit)).await {
        Ok(gc::Response::OffsetCommit(answer)) => answer,
        other => {
            let error = other.err().unwrap_or(ErrorCode::NOT_COORDINATOR);
            gc::OffsetCommitResponse {
                topics: requested
                    .iter()
                    .map(|t| gc::OffsetCommitResponseTopic {
                        name: t.name.clone(),
                        partitions: t
                            .partitions
                            .iter()
                            .map(|p| gc::OffsetCommitResponsePartition {
                                partition_index: p.partition_index,
                                error_code: error,
                            })
                            .collect(),
                    })
                    .collect(),
            }
        }
    };
    let mut response = OffsetCommitResponse::default();
    for topic in answer.topics {
        let mut out = OffsetCommitResponseTopic::default();
        out.name = TopicName(str_bytes(topic.name));
        out.partitions = topic
            .partitions
            .into_iter()
            .map(|p| {
                let mut partition = OffsetCommitResponsePartition::default();
                partition.partition_index = p.partition_index;
                partition.error_code = p.error_code.code();
                partition
            })
            .collect();
        response.topics.push(out);
    }
    response.topics.extend(unknown);
    response
}

fn commit_errors(
    topic: &offset_commit_request::OffsetCommitRequestTopic,
    partitions: &[&offset_commit_request::OffsetCommitRequestPartition],
    error: ResponseError,
) -> OffsetCommitResponseTopic {
    let mut out = OffsetCommitResponseTopic::default();
    out.name = TopicName(str_bytes(topic.name.0.as_str()));
    out.partitions = partitions
        .iter()
        .map(|p| {
            let mut partition = OffsetCommitResponsePartition::default();
            partition.partition_index = p.partition_index;
            partition.error_code = error.code();
            partition
        })
        .collect();
    out
}

/// Fetches one group's committed offsets; `topics` None means every partition it has.
async fn fetch_group(
    broker: &Arc<Broker>,
    group_id: &str,
    topics: Option<Vec<gc::OffsetFetchTopic>>,
    member: Option<(Option<String>, i32)>,
    require_stable: bool,
) -> gc::OffsetFetchResult {
    let request = gc::OffsetFetch { group_id: group_id.to_string(), topics };
    ask(broker, group_id, |tx| Command::Fetch(request, member, require_stable, tx)).await.unwrap_or_else(|error| {
        gc::OffsetFetchResult { group_id: group_id.to_string(), error_code: error, topics: Vec::new() }
    })
}

pub async fn offset_fetch(broker: &Arc<Broker>, request: OffsetFetchRequest, version: i16) -> OffsetFetchResponse {
    let mut response = OffsetFetchResponse::default();
    if version < 8 {
        let topics = request.topics.map(|topics| {
            topics
                .into_iter()
                .map(|t| gc::OffsetFetchTopic { name: t.name.0.to_string(), partition_indexes: t.partition_indexes })
                .collect()
        });
        let require_stable = version >= 7 && request.require_stable;
        let result = fetch_group(broker, request.group_id.0.as_str(), topics, None, require_stable).await;
        if version >= 2 {
            response.error_code = result.error_code.code();
        }
        response.topics = result
            .topics
            .into_iter()
            .map(|t| {
                let mut topic = OffsetFetchResponseTopic::default();
                topic.name = TopicName(str_bytes(t.name));
                topic.partitions = t
                    .partitions
                    .into_iter()
                    .map(|p| {
                        let mut partition = OffsetFetchResponsePartition::default();
                        partition.partition_index = p.partition_index;
                        partition.committed_offset = p.committed_offset;
                        if version >= 5 {
                            partition.committed_leader_epoch = p.committed_leader_epoch;
                        }
                        partition.metadata = Some(str_bytes(p.metadata));
                        partition.error_code = p.error_code.code();
                        partition
                    })
                    .collect();
                topic
            })
            .collect();
        return response;
    }
    for group in request.groups {
        // v9 (KIP-848) names the fetching member; consumer groups check its epoch.
        let member = (version >= 9).then(|| (group.member_id.as_ref().map(|m| m.to_string()), group.member_epoch));
        let topics = group.topics.map(|topics| {
            topics
                .into_iter()
                .map(|t| gc::OffsetFetchTopic { name: t.name.0.to_string(), partition_indexes: t.partition_indexes })
                .collect()
        });
        let result = fetch_group(broker, group.group_id.0.as_str(), topics, member, request.require_stable).await;
        let mut out = OffsetFetchResponseGroup::default();
        out.group_id = group.group_id;
        out.error_code = result.error_code.code();
        out.topics = result
            .topics
            .into_iter()
            .map(|t| {
                let mut topic = OffsetFetchResponseTopics::default();
                topic.name = TopicName(str_bytes(t.name));
                topic.partitions = t
                    .partitions
                    .into_iter()
                    .map(|p| {
                        let mut partition = OffsetFetchResponsePartitions::default();
                        partition.partition_index = p.partition_index;
                        partition.committed_offset = p.committed_offset;
                        partition.committed_leader_epoch = p.committed_leader_epoch;
                        partition.metadata = Some(str_bytes(p.metadata));
                        partition.error_code = p.error_code.code();
                        partition
                    })
                    .collect();
                topic
            })
            .collect();
        response.groups.push(out);
    }
    response
}

pub async fn list_groups(broker: &Arc<Broker>, request: ListGroupsRequest, version: i16) -> ListGroupsResponse {
    let mut response = ListGroupsResponse::default();
    let mut states = Vec::new();
    if version >= 4 {
        for name in &request.states_filter {
            match gc::GroupState::parse(name.as_str()) {
                Some(state) => states.push(state),
                // An unknown state matches no classic group.
                None => return response,
            }
        }
    }
    let types: Vec<String> = if version >= 5 {
        request.types_filter.iter().map(|t| t.as_str().to_ascii_lowercase()).collect()
    } else {
        Vec::new()
    };
    let mut listings = BTreeMap::new();
    for sender in broker.groups.all() {
        let (tx, rx) = oneshot::channel();
        if sender.send(Command::List(states.clone(), tx)).await.is_err() {
            continue;
        }
        for listing in rx.await.unwrap_or_default() {
            if types.is_empty() || types.iter().any(|t| t == listing.group_type) {
                listings.insert(listing.group_id.clone(), listing);
            }
        }
    }
    response.groups = listings
        .into_values()
        .map(|l| {
            let mut group = ListedGroup::default();
            group.group_id = GroupId(str_bytes(l.group_id));
            group.protocol_type = str_bytes(l.protocol_type);
            if version >= 4 {
                group.group_state = str_bytes(l.state.name());
            }
            if version >= 5 {
                // Kafka prints the group type capitalized ("Classic", "Consumer").
                let mut kind = l.group_type.to_string();
                if let Some(first) = kind.get_mut(..1) {
                    first.make_ascii_uppercase();
                }
                group.group_type = str_bytes(kind);
            }
            group
        })
        .collect();
    response
}

/// DescribeGroups' "authorized operations" bit set for groups (READ, DESCRIBE, DELETE), all
/// allowed while no authorizer is configured.
const GROUP_OPERATIONS_ALL: i32 = (1 << 3) | (1 << 6) | (1 << 8);

pub async fn describe_groups(
    broker: &Arc<Broker>,
    request: DescribeGroupsRequest,
    version: i16,
) -> DescribeGroupsResponse {
    let mut response = DescribeGroupsResponse::default();
    for group_id in request.groups {
        let id = group_id.0.to_string();
        let description = ask(broker, &id, |tx| Command::Describe(id.clone(), tx)).await;
        let mut group = DescribedGroup::default();
        group.group_id = group_id;
        match description {
            Ok(d) => {
                group.error_code = d.error_code.code();
                if version < 6 && d.error_code == ErrorCode::GROUP_ID_NOT_FOUND {
                    // Before v6 an unknown group is a Dead one with no error.
                    group.error_code = 0;
                }
                if version >= 6 && !d.error_code.is_none() {
                    group.error_message = Some(str_bytes(d.error_code.name()));
                }
                group.group_state = str_bytes(d.state.name());
                group.protocol_type = str_bytes(d.protocol_type);
                group.protocol_data = str_bytes(d.protocol_data);
                group.members = d
                    .members
                    .into_iter()
                    .map(|m| {
                        let mut member = DescribedGroupMember::default();
                        member.member_id = str_bytes(m.member_id);
                        if version >= 4 {
                            member.group_instance_id = m.group_instance_id.map(str_bytes);
                        }
                        member.client_id = str_bytes(m.client_id);
                        member.client_host = str_bytes(m.client_host);
                        member.member_metadata = m.member_metadata;
                        member.member_assignment = m.member_assignment;
                        member
                    })
                    .collect();
            }
            Err(error) => {
                group.error_code = error.code();
                group.group_state = str_bytes("Dead");
            }
        }
        if version >= 3 && request.include_authorized_operations {
            group.authorized_operations = GROUP_OPERATIONS_ALL;
        }
        response.groups.push(group);
    }
    response
}

pub async fn delete_groups(broker: &Arc<Broker>, request: DeleteGroupsRequest) -> DeleteGroupsResponse {
    let mut response = DeleteGroupsResponse::default();
    for group_id in request.groups_names {
        let id = group_id.0.to_string();
        let error = match ask(broker, &id, |tx| Command::Delete(vec![id.clone()], tx)).await {
            Ok(results) => results.into_iter().next().map_or(ErrorCode::NOT_COORDINATOR, |(_, error)| error),
            Err(error) => error,
        };
        let mut result = DeletableGroupResult::default();
        result.group_id = group_id;
        result.error_code = error.code();
        response.results.push(result);
    }
    response
}

pub async fn consumer_group_heartbeat(
    broker: &Arc<Broker>,
    request: ConsumerGroupHeartbeatRequest,
    version: i16,
    client_id: &str,
    client_host: &str,
) -> ConsumerGroupHeartbeatResponse {
    let group_id = request.group_id.0.to_string();
    let heartbeat = gc::ConsumerGroupHeartbeat {
        version,
        group_id: group_id.clone(),
        member_id: request.member_id.to_string(),
        member_epoch: request.member_epoch,
        instance_id: opt_str(&request.instance_id),
        rack_id: opt_str(&request.rack_id),
        rebalance_timeout_ms: request.rebalance_timeout_ms,
        subscribed_topic_names: request
            .subscribed_topic_names
            .map(|names| names.iter().map(|n| n.0.to_string()).collect()),
        subscribed_topic_regex: opt_str(&request.subscribed_topic_regex),
        server_assignor: opt_str(&request.server_assignor),
        topic_partitions: request.topic_partitions.map(|topics| {
            topics
                .iter()
                .map(|t| gc::ConsumerGroupTopicPartitions {
                    topic_id: *t.topic_id.as_bytes(),
                    partitions: t.partitions.clone(),
                })
                .collect()
        }),
        client_id: client_id.to_string(),
        client_host: client_host.to_string(),
    };
    let answer = match coordinate(broker, &group_id, Call::ConsumerHeartbeat(heartbeat)).await {
        Ok(gc::Response::ConsumerGroupHeartbeat(answer)) => answer,
        Ok(_) => gc::ConsumerGroupHeartbeatResponse::error(ErrorCode::NOT_COORDINATOR, None),
        Err(error) => gc::ConsumerGroupHeartbeatResponse::error(error, None),
    };
    let mut response = ConsumerGroupHeartbeatResponse::default();
    response.error_code = answer.error_code.code();
    response.error_message = answer.error_message.map(str_bytes);
    response.member_id = answer.member_id.map(str_bytes);
    response.member_epoch = answer.member_epoch;
    response.heartbeat_interval_ms = answer.heartbeat_interval_ms;
    response.assignment = answer.assignment.map(|topics| {
        let mut assignment = consumer_group_heartbeat_response::Assignment::default();
        assignment.topic_partitions = topics
            .into_iter()
            .map(|t| {
                let mut out = consumer_group_heartbeat_response::TopicPartitions::default();
                out.topic_id = uuid::Uuid::from_bytes(t.topic_id);
                out.partitions = t.partitions;
                out
            })
            .collect();
        assignment
    });
    response
}

fn described_assignment(topics: Vec<gc::DescribedTopicPartitions>) -> consumer_group_describe_response::Assignment {
    let mut assignment = consumer_group_describe_response::Assignment::default();
    assignment.topic_partitions = topics
        .into_iter()
        .map(|t| {
            let mut out = consumer_group_describe_response::TopicPartitions::default();
            out.topic_id = uuid::Uuid::from_bytes(t.topic_id);
            out.topic_name = TopicName(str_bytes(t.topic_name));
            out.partitions = t.partitions;
            out
        })
        .collect();
    assignment
}

pub async fn consumer_group_describe(
    broker: &Arc<Broker>,
    request: ConsumerGroupDescribeRequest,
    version: i16,
) -> ConsumerGroupDescribeResponse {
    let mut response = ConsumerGroupDescribeResponse::default();
    for group_id in request.group_ids {
        let id = group_id.0.to_string();
        let description = ask(broker, &id, |tx| Command::DescribeConsumer(id.clone(), tx)).await;
        let mut group = consumer_group_describe_response::DescribedGroup::default();
        group.group_id = group_id;
        match description {
            Ok(d) => {
                group.error_code = d.error_code.code();
                group.error_message = d.error_message.map(str_bytes);
                group.group_state = str_bytes(d.group_state);
                group.group_epoch = d.group_epoch;
                group.assignment_epoch = d.assignment_epoch;
                group.assignor_name = str_bytes(d.assignor_name);
                group.members = d
                    .members
                    .into_iter()
                    .map(|m| {
                        let mut member = consumer_group_describe_response::Member::default();
                        member.member_id = str_bytes(m.member_id);
                        member.instance_id = m.instance_id.map(str_bytes);
                        member.rack_id = m.rack_id.map(str_bytes);
                        member.member_epoch = m.member_epoch;
                        member.client_id = str_bytes(m.client_id);
                        member.client_host = str_bytes(m.client_host);
                        member.subscribed_topic_names =
                            m.subscribed_topic_names.into_iter().map(|n| TopicName(str_bytes(n))).collect();
                        member.subscribed_topic_regex = m.subscribed_topic_regex.map(str_bytes);
                        member.assignment = described_assignment(m.assignment);
                        member.target_assignment = described_assignment(m.target_assignment);
                        if version >= 1 {
                            member.member_type = m.member_type;
                        }
                        member
                    })
                    .collect();
            }
            Err(error) => group.error_code = error.code(),
        }
        if request.include_authorized_operations {
            group.authorized_operations = GROUP_OPERATIONS_ALL;
        }
        response.groups.push(group);
    }
    response
}

pub async fn offset_delete(broker: &Arc<Broker>, request: OffsetDeleteRequest) -> OffsetDeleteResponse {
    let group_id = request.group_id.0.to_string();
    let wanted = gc::OffsetDelete {
        group_id: group_id.clone(),
        topics: request
            .topics
            .iter()
            .map(|t| gc::OffsetDeleteTopic {
                name: t.name.0.to_string(),
                partition_indexes: t.partitions.iter().map(|p| p.partition_index).collect(),
            })
            .collect(),
    };
    let answer = ask(broker, &group_id, |tx| Command::DeleteOffsets(wanted, tx)).await;
    let mut response = OffsetDeleteResponse::default();
    match answer {
        Ok(answer) => {
            response.error_code = answer.error_code.code();
            response.topics = answer
                .topics
                .into_iter()
                .map(|t| {
                    let mut topic = offset_delete_response::OffsetDeleteResponseTopic::default();
                    topic.name = TopicName(str_bytes(t.name));
                    topic.partitions = t
                        .partitions
                        .into_iter()
                        .map(|p| {
                            let mut partition = offset_delete_response::OffsetDeleteResponsePartition::default();
                            partition.partition_index = p.partition_index;
                            partition.error_code = p.error_code.code();
                            partition
                        })
                        .collect();
                    topic
                })
                .collect();
        }
        Err(error) => response.error_code = error.code(),
    }
    response
}
