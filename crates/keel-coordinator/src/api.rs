//! The coordinator's inputs and outputs: plain request/response structs that the server maps to
//! and from every wire version of JoinGroup, SyncGroup, Heartbeat, LeaveGroup, OffsetCommit,
//! OffsetFetch, ListGroups, DescribeGroups and DeleteGroups, plus [`Effect`].
//!
//! Field names follow Kafka's message JSON (`memberId` → `member_id`). Nullable wire strings are
//! `Option<String>`; a version that cannot carry null gets the empty string from the server.

use bytes::Bytes;

use crate::error::ErrorCode;
use crate::records::Record;

/// Chosen by the caller for every request that may be answered later; the coordinator hands it
/// back in [`Effect::Respond`]. Must be unique among requests still awaiting a response.
pub type RequestId = u64;

/// What the server must do, in order. See the crate docs for the ordering contract.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Append these records to this coordinator's `__consumer_offsets` partition, durably
    /// (replicated as for `acks=all`), before delivering any response that comes after this
    /// effect, in this `Vec` or from any later call.
    Persist(Vec<Record>),
    /// Deliver this response to the request the caller tagged with this id.
    Respond(RequestId, Response),
}

/// A delayed or immediate response of a group API.
#[derive(Debug, Clone, PartialEq)]
pub enum Response {
    JoinGroup(JoinGroupResponse),
    SyncGroup(SyncGroupResponse),
    Heartbeat(HeartbeatResponse),
    LeaveGroup(LeaveGroupResponse),
    OffsetCommit(OffsetCommitResponse),
    /// KIP-848 ConsumerGroupHeartbeat (API 68).
    ConsumerGroupHeartbeat(ConsumerGroupHeartbeatResponse),
}

impl Response {
    /// The same response carrying `error` instead: what to send when a preceding
    /// [`Effect::Persist`] failed (map the append error with [`ErrorCode::from_append_error`]).
    pub fn with_error(self, error: ErrorCode) -> Response {
        match self {
            Response::JoinGroup(r) => Response::JoinGroup(JoinGroupResponse::error(r.member_id, error)),
            Response::SyncGroup(_) => Response::SyncGroup(SyncGroupResponse::error(error)),
            Response::Heartbeat(_) => Response::Heartbeat(HeartbeatResponse { error_code: error }),
            Response::LeaveGroup(_) => {
                Response::LeaveGroup(LeaveGroupResponse { error_code: error, members: Vec::new() })
            }
            Response::OffsetCommit(mut r) => {
                for topic in &mut r.topics {
                    for partition in &mut topic.partitions {
                        partition.error_code = error;
                    }
                }
                Response::OffsetCommit(r)
            }
            Response::ConsumerGroupHeartbeat(_) => {
                Response::ConsumerGroupHeartbeat(ConsumerGroupHeartbeatResponse::error(error, None))
            }
        }
    }
}

/// A protocol a member supports, in its order of preference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinProtocol {
    pub name: String,
    pub metadata: Bytes,
}

/// JoinGroup, any version 0–9.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinGroup {
    /// The request's API version: MEMBER_ID_REQUIRED is v4+ (KIP-394), `skip_assignment` v9+.
    pub version: i16,
    pub group_id: String,
    pub session_timeout_ms: i32,
    /// v1+; for v0 the coordinator uses the session timeout, as Kafka's `JoinGroupRequest` does.
    pub rebalance_timeout_ms: i32,
    /// Empty for a member that does not know its id yet.
    pub member_id: String,
    /// v5+ (KIP-345 static membership).
    pub group_instance_id: Option<String>,
    pub protocol_type: String,
    pub protocols: Vec<JoinProtocol>,
    /// v8+ (KIP-800); informational only.
    pub reason: Option<String>,
    /// From the request header; prefix of generated member ids.
    pub client_id: String,
    /// The client's address as Kafka prints it (`/127.0.0.1`).
    pub client_host: String,
}

/// One member as the leader sees it in its JoinGroup response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinGroupMember {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub metadata: Bytes,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinGroupResponse {
    pub error_code: ErrorCode,
    /// -1 on errors.
    pub generation_id: i32,
    /// v7+ on the wire.
    pub protocol_type: Option<String>,
    /// Nullable from v7; older versions write an empty string for `None`.
    pub protocol_name: Option<String>,
    pub leader: String,
    /// v9+: the static leader rejoined without a rebalance and must not reassign (KIP-814).
    pub skip_assignment: bool,
    pub member_id: String,
    /// Only the leader gets the members, with their metadata for the selected protocol.
    pub members: Vec<JoinGroupMember>,
}

impl JoinGroupResponse {
    pub fn error(member_id: String, error_code: ErrorCode) -> Self {
        Self {
            error_code,
            generation_id: -1,
            protocol_type: None,
            protocol_name: None,
            leader: String::new(),
            skip_assignment: false,
            member_id,
            members: Vec::new(),
        }
    }
}

/// One member's assignment in the leader's SyncGroup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncAssignment {
    pub member_id: String,
    pub assignment: Bytes,
}

/// SyncGroup, any version 0–5.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncGroup {
    pub group_id: String,
    pub generation_id: i32,
    pub member_id: String,
    /// v3+.
    pub group_instance_id: Option<String>,
    /// v5+; checked against the group's when both are present.
    pub protocol_type: Option<String>,
    /// v5+; checked against the group's when both are present.
    pub protocol_name: Option<String>,
    /// Only the leader's are used; Kafka ignores a follower's.
    pub assignments: Vec<SyncAssignment>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncGroupResponse {
    pub error_code: ErrorCode,
    /// v5+.
    pub protocol_type: Option<String>,
    /// v5+.
    pub protocol_name: Option<String>,
    pub assignment: Bytes,
}

impl SyncGroupResponse {
    pub fn error(error_code: ErrorCode) -> Self {
        Self { error_code, protocol_type: None, protocol_name: None, assignment: Bytes::new() }
    }
}

/// Heartbeat, any version 0–4.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heartbeat {
    pub group_id: String,
    pub generation_id: i32,
    pub member_id: String,
    /// v3+.
    pub group_instance_id: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeartbeatResponse {
    pub error_code: ErrorCode,
}

/// One member leaving. LeaveGroup v0–v2 carry a single `member_id`: the server passes it as a
/// one-element list (Kafka's `LeaveGroupRequest.members()` does the same).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaveMember {
    /// Empty when a static member is removed by instance id (admin `removeMembersFromConsumerGroup`).
    pub member_id: String,
    pub group_instance_id: Option<String>,
    /// v5+; informational only.
    pub reason: Option<String>,
}

/// LeaveGroup, any version 0–5.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaveGroup {
    pub group_id: String,
    pub members: Vec<LeaveMember>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaveMemberResponse {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub error_code: ErrorCode,
}

/// For v0–v2 the server reports the top-level error, or else the single member's error, as the
/// response error (Kafka's `LeaveGroupResponse` does this for old versions).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaveGroupResponse {
    pub error_code: ErrorCode,
    pub members: Vec<LeaveMemberResponse>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetCommitPartition {
    pub partition_index: i32,
    pub committed_offset: i64,
    /// v6+; -1 when unknown.
    pub committed_leader_epoch: i32,
    /// Null is stored as the empty string, as Kafka does.
    pub committed_metadata: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetCommitTopic {
    pub name: String,
    pub partitions: Vec<OffsetCommitPartition>,
}

/// OffsetCommit, any version 2–10. The server answers UNKNOWN_TOPIC_OR_PARTITION itself for
/// topics or partitions that do not exist (Kafka's `KafkaApis` does) and passes the rest here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetCommit {
    /// v9+ answers GROUP_ID_NOT_FOUND where older versions get ILLEGAL_GENERATION.
    pub version: i16,
    pub group_id: String,
    /// `generationIdOrMemberEpoch`; -1 for a simple (standalone or admin) commit.
    pub generation_id: i32,
    pub member_id: String,
    /// v7+.
    pub group_instance_id: Option<String>,
    /// v2–v4 `retention_time_ms`; -1 for the broker's retention.
    pub retention_time_ms: i64,
    pub topics: Vec<OffsetCommitTopic>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetCommitResponsePartition {
    pub partition_index: i32,
    pub error_code: ErrorCode,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetCommitResponseTopic {
    pub name: String,
    pub partitions: Vec<OffsetCommitResponsePartition>,
}

/// OffsetCommit has no top-level error: a request-wide failure is on every partition, as in
/// Kafka's `OffsetCommitRequest.getErrorResponse`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetCommitResponse {
    pub topics: Vec<OffsetCommitResponseTopic>,
}

/// One group of an OffsetFetch (v8+ batches groups; the server calls once per group).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetFetch {
    pub group_id: String,
    /// `None` fetches every committed partition of the group.
    pub topics: Option<Vec<OffsetFetchTopic>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetFetchTopic {
    pub name: String,
    pub partition_indexes: Vec<i32>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetFetchPartition {
    pub partition_index: i32,
    /// -1 when nothing is committed.
    pub committed_offset: i64,
    /// -1 when unknown.
    pub committed_leader_epoch: i32,
    pub metadata: String,
    pub error_code: ErrorCode,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetFetchResultTopic {
    pub name: String,
    pub partitions: Vec<OffsetFetchPartition>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetFetchResult {
    pub group_id: String,
    pub error_code: ErrorCode,
    pub topics: Vec<OffsetFetchResultTopic>,
}

/// The state of a classic group (Kafka's `ClassicGroupState`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum GroupState {
    /// No members; offsets may remain. Simple (standalone) consumer groups stay here.
    Empty,
    /// Waiting for members to (re)join; heartbeats get REBALANCE_IN_PROGRESS.
    PreparingRebalance,
    /// Joined; waiting for the leader's SyncGroup with the assignment.
    CompletingRebalance,
    /// Every member has its assignment for the current generation.
    Stable,
    /// Removed. Only reported for groups the coordinator does not know.
    Dead,
    /// KIP-848 consumer groups only: the group epoch is ahead of the target assignment.
    Assigning,
    /// KIP-848 consumer groups only: some member has not reached the target assignment.
    Reconciling,
}

impl GroupState {
    /// Kafka's name, as ListGroups and DescribeGroups report it.
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
            GroupState::Dead => "Dead",
            GroupState::Assigning => "Assigning",
            GroupState::Reconciling => "Reconciling",
        }
    }

    /// Parses a ListGroups v4+ `states_filter` entry, case-insensitively as Kafka does.
    pub fn parse(name: &str) -> Option<GroupState> {
        let name = name.trim();
        [
            GroupState::Empty,
            GroupState::PreparingRebalance,
            GroupState::CompletingRebalance,
            GroupState::Stable,
            GroupState::Dead,
            GroupState::Assigning,
            GroupState::Reconciling,
        ]
        .into_iter()
        .find(|state| state.name().eq_ignore_ascii_case(name))
    }
}

/// One row of ListGroups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupListing {
    pub group_id: String,
    /// Empty for a simple group.
    pub protocol_type: String,
    pub state: GroupState,
    /// "classic" or "consumer" (ListGroups v5+ `group_type`, KIP-848; Kafka prints them
    /// capitalized: "Classic", "Consumer").
    pub group_type: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DescribedMember {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    /// Metadata for the selected protocol; empty unless the group is Stable (as Kafka).
    pub member_metadata: Bytes,
    pub member_assignment: Bytes,
}

/// One group of DescribeGroups. An unknown group is reported as Dead with no error, as Kafka.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupDescription {
    pub error_code: ErrorCode,
    pub group_id: String,
    pub state: GroupState,
    pub protocol_type: String,
    /// The selected protocol when Stable, else empty.
    pub protocol_data: String,
    pub members: Vec<DescribedMember>,
}

/// OffsetDelete (API 47), any version 0–1: delete a group's committed offsets for partitions
/// nobody in the group consumes any more.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetDelete {
    pub group_id: String,
    pub topics: Vec<OffsetDeleteTopic>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetDeleteTopic {
    pub name: String,
    pub partition_indexes: Vec<i32>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetDeleteResponsePartition {
    pub partition_index: i32,
    pub error_code: ErrorCode,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetDeleteResponseTopic {
    pub name: String,
    pub partitions: Vec<OffsetDeleteResponsePartition>,
}

/// A top-level error (GROUP_ID_NOT_FOUND, NON_EMPTY_GROUP, INVALID_GROUP_ID) comes with no
/// topics, as in Kafka's `OffsetDeleteResponse` built from an exception.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetDeleteResponse {
    pub error_code: ErrorCode,
    pub topics: Vec<OffsetDeleteResponseTopic>,
}

impl OffsetDeleteResponse {
    /// The response to send when the `Persist` returned with it failed.
    pub fn with_error(self, error: ErrorCode) -> Self {
        Self { error_code: error, topics: Vec::new() }
    }
}

/// A topic as the server-side assignors of KIP-848 consumer groups see it
/// ([`crate::Coordinator::set_topics`]).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct TopicMetadata {
    pub name: String,
    pub topic_id: [u8; 16],
    pub partitions: i32,
}

/// Partitions of one topic, by topic id (ConsumerGroupHeartbeat `TopicPartitions`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ConsumerGroupTopicPartitions {
    pub topic_id: [u8; 16],
    pub partitions: Vec<i32>,
}

/// ConsumerGroupHeartbeat (API 68), versions 0–1 (KIP-848).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerGroupHeartbeat {
    /// v1+ requires the client to generate its member id; v0 sends "" when joining.
    pub version: i16,
    pub group_id: String,
    pub member_id: String,
    /// 0 to join, -1 to leave, -2 for a static member leaving temporarily.
    pub member_epoch: i32,
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    /// -1 when unchanged.
    pub rebalance_timeout_ms: i32,
    /// `None` when unchanged.
    pub subscribed_topic_names: Option<Vec<String>>,
    /// v1+; `None` when unchanged. Keel does not support regex subscriptions (INVALID_REQUEST).
    pub subscribed_topic_regex: Option<String>,
    /// `None` when unchanged.
    pub server_assignor: Option<String>,
    /// The partitions the member owns; `None` when unchanged.
    pub topic_partitions: Option<Vec<ConsumerGroupTopicPartitions>>,
    /// From the request header.
    pub client_id: String,
    /// The client's address as Kafka prints it (`/127.0.0.1`).
    pub client_host: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerGroupHeartbeatResponse {
    pub error_code: ErrorCode,
    pub error_message: Option<String>,
    /// `None` on errors.
    pub member_id: Option<String>,
    pub member_epoch: i32,
    pub heartbeat_interval_ms: i32,
    /// The member's assigned partitions; `None` when unchanged (the wire's null).
    pub assignment: Option<Vec<ConsumerGroupTopicPartitions>>,
}

impl ConsumerGroupHeartbeatResponse {
    pub fn error(error_code: ErrorCode, error_message: Option<String>) -> Self {
        Self { error_code, error_message, member_id: None, member_epoch: 0, heartbeat_interval_ms: 0, assignment: None }
    }
}

/// One topic's partitions in ConsumerGroupDescribe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DescribedTopicPartitions {
    pub topic_id: [u8; 16],
    /// Empty when the topic is no longer known.
    pub topic_name: String,
    pub partitions: Vec<i32>,
}

/// One member in ConsumerGroupDescribe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerGroupDescribedMember {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    pub member_epoch: i32,
    pub client_id: String,
    pub client_host: String,
    pub subscribed_topic_names: Vec<String>,
    pub subscribed_topic_regex: Option<String>,
    pub assignment: Vec<DescribedTopicPartitions>,
    pub target_assignment: Vec<DescribedTopicPartitions>,
    /// v1+ `MemberType`: 1 = consumer protocol (Keel has no classic members in these groups).
    pub member_type: i8,
}

/// ConsumerGroupDescribe (API 69) for one group. GROUP_ID_NOT_FOUND with a message for an
/// unknown group or a classic one, as Kafka.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerGroupDescription {
    pub error_code: ErrorCode,
    pub error_message: Option<String>,
    pub group_id: String,
    /// Kafka's capitalized state name: "Empty", "Assigning", "Reconciling", "Stable", "Dead".
    pub group_state: String,
    pub group_epoch: i32,
    pub assignment_epoch: i32,
    /// The assignor the group uses (a member's choice, else the default).
    pub assignor_name: String,
    pub members: Vec<ConsumerGroupDescribedMember>,
}
