//! Behaviour tests of the coordinator, driven through its public entry points with a fake clock,
//! plus a harness shared by the scenario and property tests.

mod consumer;
mod offset_delete;
mod property;
mod scenarios;

use std::collections::BTreeMap;

use bytes::Bytes;

pub(crate) use crate::api::*;
use crate::records::Record;
pub(crate) use crate::{Coordinator, ErrorCode, GroupConfig};

pub(crate) const GROUP: &str = "g";
pub(crate) const SESSION_MS: i32 = 10_000;
pub(crate) const REBALANCE_MS: i32 = 30_000;

/// A coordinator, a clock, and everything it has said: the log it asked to persist and one
/// response per request id (a second response for the same id fails the test).
pub(crate) struct Harness {
    pub coordinator: Coordinator,
    pub now_ms: i64,
    next_request_id: RequestId,
    pub responses: BTreeMap<RequestId, Response>,
    /// Every response in the order it was delivered.
    pub arrivals: Vec<(RequestId, Response)>,
    pub log: Vec<Record>,
}

impl Harness {
    pub fn new() -> Self {
        Self::with_config(GroupConfig::default())
    }

    pub fn with_config(config: GroupConfig) -> Self {
        Self {
            coordinator: Coordinator::new(config),
            now_ms: 1_000_000,
            next_request_id: 0,
            responses: BTreeMap::new(),
            arrivals: Vec::new(),
            log: Vec::new(),
        }
    }

    fn next_id(&mut self) -> RequestId {
        self.next_request_id += 1;
        self.next_request_id
    }

    /// Applies effects as a server would, checking the ordering contract's shape.
    pub fn apply(&mut self, effects: Vec<Effect>) {
        let mut seen_respond = false;
        for effect in effects {
            match effect {
                Effect::Persist(records) => {
                    assert!(!seen_respond, "a Persist after a Respond in one call");
                    assert!(!records.is_empty(), "an empty Persist");
                    self.log.extend(records);
                }
                Effect::Respond(id, response) => {
                    seen_respond = true;
                    self.arrivals.push((id, response.clone()));
                    let previous = self.responses.insert(id, response.clone());
                    assert!(previous.is_none(), "request {id} answered twice: {response:?}");
                }
            }
        }
    }

    pub fn advance(&mut self, ms: i64) {
        self.now_ms += ms;
        let effects = self.coordinator.tick(self.now_ms);
        self.apply(effects);
    }

    /// Runs `tick` at every deadline up to `now + ms`, as the server's timer would.
    pub fn advance_with_deadlines(&mut self, ms: i64) {
        let end_ms = self.now_ms + ms;
        while let Some(deadline_ms) = self.coordinator.next_deadline_ms() {
            if deadline_ms > end_ms {
                break;
            }
            self.now_ms = self.now_ms.max(deadline_ms);
            let effects = self.coordinator.tick(self.now_ms);
            self.apply(effects);
        }
        self.now_ms = end_ms;
    }

    pub fn join(&mut self, request: JoinGroup) -> RequestId {
        let id = self.next_id();
        let effects = self.coordinator.join_group(id, request, self.now_ms);
        self.apply(effects);
        id
    }

    pub fn sync(&mut self, request: SyncGroup) -> RequestId {
        let id = self.next_id();
        let effects = self.coordinator.sync_group(id, request, self.now_ms);
        self.apply(effects);
        id
    }

    pub fn heartbeat(&mut self, member_id: &str, generation_id: i32) -> ErrorCode {
        self.heartbeat_static(member_id, None, generation_id)
    }

    pub fn heartbeat_static(
        &mut self,
        member_id: &str,
        group_instance_id: Option<&str>,
        generation_id: i32,
    ) -> ErrorCode {
        self.heartbeat_on(GROUP, member_id, group_instance_id, generation_id)
    }

    pub fn heartbeat_on(
        &mut self,
        group_id: &str,
        member_id: &str,
        group_instance_id: Option<&str>,
        generation_id: i32,
    ) -> ErrorCode {
        let id = self.next_id();
        let request = Heartbeat {
            group_id: group_id.into(),
            generation_id,
            member_id: member_id.into(),
            group_instance_id: group_instance_id.map(Into::into),
        };
        let effects = self.coordinator.heartbeat(id, request, self.now_ms);
        self.apply(effects);
        match self.responses.get(&id) {
            Some(Response::Heartbeat(r)) => r.error_code,
            other => panic!("no heartbeat response: {other:?}"),
        }
    }

    pub fn leave(&mut self, members: Vec<LeaveMember>) -> LeaveGroupResponse {
        let id = self.next_id();
        let request = LeaveGroup { group_id: GROUP.into(), members };
        let effects = self.coordinator.leave_group(id, request, self.now_ms);
        self.apply(effects);
        match self.responses.get(&id) {
            Some(Response::LeaveGroup(r)) => r.clone(),
            other => panic!("no leave response: {other:?}"),
        }
    }

    pub fn commit(&mut self, request: OffsetCommit) -> OffsetCommitResponse {
        let id = self.next_id();
        let effects = self.coordinator.commit_offsets(id, request, self.now_ms);
        self.apply(effects);
        match self.responses.get(&id) {
            Some(Response::OffsetCommit(r)) => r.clone(),
            other => panic!("no commit response: {other:?}"),
        }
    }

    pub fn join_response(&self, id: RequestId) -> Option<&JoinGroupResponse> {
        match self.responses.get(&id) {
            Some(Response::JoinGroup(r)) => Some(r),
            None => None,
            other => panic!("not a join response: {other:?}"),
        }
    }

    pub fn joined(&self, id: RequestId) -> &JoinGroupResponse {
        self.join_response(id).unwrap_or_else(|| panic!("join {id} not answered"))
    }

    pub fn sync_response(&self, id: RequestId) -> Option<&SyncGroupResponse> {
        match self.responses.get(&id) {
            Some(Response::SyncGroup(r)) => Some(r),
            None => None,
            other => panic!("not a sync response: {other:?}"),
        }
    }

    pub fn synced(&self, id: RequestId) -> &SyncGroupResponse {
        self.sync_response(id).unwrap_or_else(|| panic!("sync {id} not answered"))
    }
}

pub(crate) fn protocols(topics: &[&str]) -> Vec<JoinProtocol> {
    vec![JoinProtocol { name: "range".into(), metadata: subscription(topics) }]
}

/// A `ConsumerProtocolSubscription` v0: version, topics, null user data.
pub(crate) fn subscription(topics: &[&str]) -> Bytes {
    let mut bytes = vec![0, 0];
    bytes.extend_from_slice(&(topics.len() as i32).to_be_bytes());
    for topic in topics {
        bytes.extend_from_slice(&(topic.len() as i16).to_be_bytes());
        bytes.extend_from_slice(topic.as_bytes());
    }
    bytes.extend_from_slice(&(-1i32).to_be_bytes());
    Bytes::from(bytes)
}

pub(crate) fn join_request(
    client_id: &str,
    member_id: &str,
    group_instance_id: Option<&str>,
    version: i16,
) -> JoinGroup {
    JoinGroup {
        version,
        group_id: GROUP.into(),
        session_timeout_ms: SESSION_MS,
        rebalance_timeout_ms: REBALANCE_MS,
        member_id: member_id.into(),
        group_instance_id: group_instance_id.map(Into::into),
        protocol_type: "consumer".into(),
        protocols: protocols(&["t"]),
        reason: None,
        client_id: client_id.into(),
        client_host: "/127.0.0.1".into(),
    }
}

pub(crate) fn sync_request(member_id: &str, generation_id: i32, assignments: &[(&str, &[u8])]) -> SyncGroup {
    SyncGroup {
        group_id: GROUP.into(),
        generation_id,
        member_id: member_id.into(),
        group_instance_id: None,
        protocol_type: Some("consumer".into()),
        protocol_name: Some("range".into()),
        assignments: assignments
            .iter()
            .map(|(member_id, assignment)| SyncAssignment {
                member_id: (*member_id).into(),
                assignment: Bytes::copy_from_slice(assignment),
            })
            .collect(),
    }
}

pub(crate) fn commit_request(member_id: &str, generation_id: i32, partitions: &[(&str, i32, i64)]) -> OffsetCommit {
    let mut topics: Vec<OffsetCommitTopic> = Vec::new();
    for (topic, partition, offset) in partitions {
        let entry = OffsetCommitPartition {
            partition_index: *partition,
            committed_offset: *offset,
            committed_leader_epoch: 5,
            committed_metadata: Some("meta".into()),
        };
        match topics.iter_mut().find(|t| t.name == *topic) {
            Some(t) => t.partitions.push(entry),
            None => topics.push(OffsetCommitTopic { name: (*topic).into(), partitions: vec![entry] }),
        }
    }
    OffsetCommit {
        version: 8,
        group_id: GROUP.into(),
        generation_id,
        member_id: member_id.into(),
        group_instance_id: None,
        retention_time_ms: -1,
        topics,
    }
}

pub(crate) fn commit_errors(response: &OffsetCommitResponse) -> Vec<ErrorCode> {
    response.topics.iter().flat_map(|t| t.partitions.iter().map(|p| p.error_code)).collect()
}

/// What `__consumer_offsets` can restore: groups as their records describe them and offsets.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct PersistedView {
    groups: BTreeMap<String, GroupView>,
    offsets: BTreeMap<String, BTreeMap<(String, i32), crate::offsets::OffsetAndMetadata>>,
}

#[derive(Debug, PartialEq, Eq)]
struct GroupView {
    state: GroupState,
    generation_id: i32,
    protocol_type: Option<String>,
    protocol_name: Option<String>,
    leader_id: Option<String>,
    /// Only meaningful (and only compared) for Empty groups with a protocol type.
    emptied_at_ms: Option<i64>,
    members: Vec<MemberView>,
}

#[derive(Debug, PartialEq, Eq)]
struct MemberView {
    member_id: String,
    group_instance_id: Option<String>,
    client_id: String,
    client_host: String,
    rebalance_timeout_ms: i32,
    session_timeout_ms: i32,
    subscription: Bytes,
    assignment: Bytes,
}

pub(crate) fn persisted_view(coordinator: &Coordinator) -> PersistedView {
    let groups = coordinator
        .groups
        .values()
        .map(|g| {
            let view = GroupView {
                state: g.state,
                generation_id: g.generation_id,
                protocol_type: g.protocol_type.clone(),
                protocol_name: g.protocol_name.clone(),
                leader_id: g.leader_id.clone(),
                emptied_at_ms: if g.state == GroupState::Empty && g.protocol_type.is_some() {
                    g.current_state_timestamp_ms
                } else {
                    None
                },
                members: g
                    .members
                    .values()
                    .map(|m| MemberView {
                        member_id: m.member_id.clone(),
                        group_instance_id: m.group_instance_id.clone(),
                        client_id: m.client_id.clone(),
                        client_host: m.client_host.clone(),
                        rebalance_timeout_ms: m.rebalance_timeout_ms,
                        session_timeout_ms: m.session_timeout_ms,
                        subscription: m.metadata(g.protocol_name.as_deref()),
                        assignment: m.assignment.clone(),
                    })
                    .collect(),
            };
            (g.group_id.clone(), view)
        })
        .collect();
    PersistedView { groups, offsets: coordinator.offsets.clone() }
}

/// A fresh coordinator loaded from `log`.
pub(crate) fn replayed(log: &[Record], config: GroupConfig) -> Coordinator {
    let mut coordinator = Coordinator::new(config);
    for record in log {
        coordinator.replay(record).expect("every emitted record replays");
    }
    coordinator
}
