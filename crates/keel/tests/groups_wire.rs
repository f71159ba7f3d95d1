//! Consumer group requests a well-behaved client never sends: fenced generations, unknown
//! members, bad group ids, follower assignments. Each gets Kafka's error code, nothing panics,
//! and the group keeps working.

mod common;

use bytes::Bytes;
use common::{decode_response, Keel, Raw};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::offset_commit_request::{OffsetCommitRequestPartition, OffsetCommitRequestTopic};
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

fn group(id: &str) -> GroupId {
    GroupId(StrBytes::from_string(id.to_string()))
}

fn join(group_id: &str, member_id: &str) -> JoinGroupRequest {
    let mut protocol = JoinGroupRequestProtocol::default();
    protocol.name = StrBytes::from_static_str("range");
    protocol.metadata = Bytes::from_static(&[0, 1, 0, 0, 0, 0, 0, 0, 0, 0]);
    let mut request = JoinGroupRequest::default();
    request.group_id = group(group_id);
    request.session_timeout_ms = 30_000;
    request.rebalance_timeout_ms = 10_000;
    request.member_id = StrBytes::from_string(member_id.to_string());
    request.protocol_type = StrBytes::from_static_str("consumer");
    request.protocols = vec![protocol];
    request
}

/// Joins as a v9 client does: the first attempt gets MEMBER_ID_REQUIRED and an id.
fn join_member(raw: &mut Raw, group_id: &str) -> JoinGroupResponse {
    let first = raw.call(9, &join(group_id, ""));
    assert_eq!(first.error_code, ResponseError::MemberIdRequired.code());
    assert!(!first.member_id.is_empty());
    raw.call(9, &join(group_id, first.member_id.as_str()))
}

fn sync(
    group_id: &str,
    generation_id: i32,
    member_id: &str,
    assignments: Vec<(&str, &'static [u8])>,
) -> SyncGroupRequest {
    let mut request = SyncGroupRequest::default();
    request.group_id = group(group_id);
    request.generation_id = generation_id;
    request.member_id = StrBytes::from_string(member_id.to_string());
    request.protocol_type = Some(StrBytes::from_static_str("consumer"));
    request.protocol_name = Some(StrBytes::from_static_str("range"));
    request.assignments = assignments
        .into_iter()
        .map(|(member, bytes)| {
            let mut assignment = SyncGroupRequestAssignment::default();
            assignment.member_id = StrBytes::from_string(member.to_string());
            assignment.assignment = Bytes::from_static(bytes);
            assignment
        })
        .collect();
    request
}

fn commit(group_id: &str, generation_id: i32, member_id: &str) -> OffsetCommitRequest {
    let mut partition = OffsetCommitRequestPartition::default();
    partition.partition_index = 0;
    partition.committed_offset = 5;
    let mut topic = OffsetCommitRequestTopic::default();
    topic.name = TopicName(StrBytes::from_static_str("commits"));
    topic.partitions = vec![partition];
    let mut request = OffsetCommitRequest::default();
    request.group_id = group(group_id);
    request.generation_id_or_member_epoch = generation_id;
    request.member_id = StrBytes::from_string(member_id.to_string());
    request.topics = vec![topic];
    request
}

fn commit_error(response: &OffsetCommitResponse) -> i16 {
    response.topics[0].partitions[0].error_code
}

fn create_topic(raw: &mut Raw, name: &str) {
    let mut topic = create_topics_request::CreatableTopic::default();
    topic.name = TopicName(StrBytes::from_string(name.to_string()));
    topic.num_partitions = 1;
    topic.replication_factor = 1;
    let mut request = CreateTopicsRequest::default();
    request.topics = vec![topic];
    assert_eq!(raw.call(7, &request).topics[0].error_code, 0);
}

#[test]
fn fenced_and_malformed_group_requests_get_kafka_error_codes() {
    let keel = Keel::start(&["group.initial.rebalance.delay.ms=0"]);
    let mut raw = keel.connect();
    create_topic(&mut raw, "commits");

    let joined = join_member(&mut raw, "g");
    assert_eq!(joined.error_code, 0);
    let member = joined.member_id.to_string();
    let generation = joined.generation_id;
    assert_eq!(joined.leader.as_str(), member, "the only member leads");
    let synced = raw.call(5, &sync("g", generation, &member, vec![(&member, b"assignment")]));
    assert_eq!(synced.error_code, 0);
    assert_eq!(&synced.assignment[..], b"assignment");

    // A commit from the current generation works; a stale or future generation is fenced.
    assert_eq!(commit_error(&raw.call(8, &commit("g", generation, &member))), 0);
    assert_eq!(
        commit_error(&raw.call(8, &commit("g", generation + 1, &member))),
        ResponseError::IllegalGeneration.code()
    );
    // An unknown member.
    assert_eq!(
        commit_error(&raw.call(8, &commit("g", generation, "not-a-member"))),
        ResponseError::UnknownMemberId.code()
    );
    // Heartbeats are fenced the same way.
    let mut beat = HeartbeatRequest::default();
    beat.group_id = group("g");
    beat.generation_id = generation - 1;
    beat.member_id = StrBytes::from_string(member.clone());
    assert_eq!(raw.call(4, &beat).error_code, ResponseError::IllegalGeneration.code());
    beat.generation_id = generation;
    beat.member_id = StrBytes::from_static_str("not-a-member");
    assert_eq!(raw.call(4, &beat).error_code, ResponseError::UnknownMemberId.code());

    // An empty group id is invalid, for joins and for commits.
    let response = raw.call(9, &join("", ""));
    assert_eq!(response.error_code, ResponseError::InvalidGroupId.code());
    assert_eq!(commit_error(&raw.call(8, &commit("", -1, ""))), ResponseError::InvalidGroupId.code());
    // A group id longer than a record key string can hold.
    let long = "g".repeat(40_000);
    let response = raw.call(9, &join(&long, ""));
    assert_eq!(response.error_code, ResponseError::InvalidGroupId.code());

    // The committed offset survived all of that.
    let mut topic = offset_fetch_request::OffsetFetchRequestTopic::default();
    topic.name = TopicName(StrBytes::from_static_str("commits"));
    topic.partition_indexes = vec![0];
    let mut fetch = OffsetFetchRequest::default();
    fetch.group_id = group("g");
    fetch.topics = Some(vec![topic]);
    let fetched = raw.call(7, &fetch);
    assert_eq!(fetched.error_code, 0);
    assert_eq!(fetched.topics[0].partitions[0].committed_offset, 5);
}

#[test]
fn a_followers_assignments_are_ignored() {
    let keel = Keel::start(&["group.initial.rebalance.delay.ms=0"]);
    let mut leader_conn = keel.connect();
    let mut follower_conn = keel.connect();

    // The leader forms the group; the follower's join starts a rebalance that the leader joins.
    let leader = join_member(&mut leader_conn, "two");
    let leader_id = leader.member_id.to_string();
    assert_eq!(
        leader_conn.call(5, &sync("two", leader.generation_id, &leader_id, vec![(&leader_id, b"solo")])).error_code,
        0
    );
    let first = follower_conn.call(9, &join("two", ""));
    let follower_id = first.member_id.to_string();
    follower_conn.send(9, &join("two", &follower_id));
    let rejoined = leader_conn.call(9, &join("two", &leader_id));
    assert_eq!(rejoined.error_code, 0);
    let generation = rejoined.generation_id;
    assert_eq!(rejoined.leader.as_str(), leader_id);
    assert_eq!(rejoined.members.len(), 2);
    let follower_joined: JoinGroupResponse =
        decode_response(follower_conn.read_frame().expect("the follower's join is answered"), ApiKey::JoinGroup, 9);
    assert_eq!(follower_joined.error_code, 0);
    assert_eq!(follower_joined.generation_id, generation);

    // The follower syncs first, with assignments of its own: they are ignored.
    follower_conn
        .send(5, &sync("two", generation, &follower_id, vec![(&follower_id, b"mine"), (&leader_id, b"yours")]));
    let synced =
        leader_conn.call(5, &sync("two", generation, &leader_id, vec![(&leader_id, b"L"), (&follower_id, b"F")]));
    assert_eq!(synced.error_code, 0);
    assert_eq!(&synced.assignment[..], b"L");
    let follower_synced: SyncGroupResponse =
        decode_response(follower_conn.read_frame().expect("the follower's sync is answered"), ApiKey::SyncGroup, 5);
    assert_eq!(follower_synced.error_code, 0);
    assert_eq!(&follower_synced.assignment[..], b"F", "the follower gets the leader's assignment");
}
