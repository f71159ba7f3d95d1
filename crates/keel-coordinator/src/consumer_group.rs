//! KIP-848 consumer groups (the "consumer" group protocol): Kafka 4.x's
//! `GroupMetadataManager.consumerGroupHeartbeat`, `ConsumerGroup`, `ConsumerGroupMember` and
//! `CurrentAssignmentBuilder`, over the records of `records/consumer.rs`.
//!
//! The group epoch bumps whenever membership, a subscription or the metadata of a subscribed
//! topic changes; the next heartbeat then computes a new target assignment with the
//! server-side assignor (epoch = group epoch). Each member then reconciles towards its target:
//! it first revokes what it must give up (UNREVOKED_PARTITIONS, at its old epoch), then moves to
//! the target epoch and gets the new partitions that no other member still holds
//! (UNRELEASED_PARTITIONS until they are all free), then is STABLE.

use std::collections::{BTreeMap, BTreeSet};

use crate::api::{
    ConsumerGroupDescribedMember, ConsumerGroupDescription, ConsumerGroupHeartbeat, ConsumerGroupHeartbeatResponse,
    ConsumerGroupTopicPartitions, DescribedTopicPartitions, Effect, GroupDescription, GroupListing, GroupState,
    OffsetCommit, RequestId, Response, TopicMetadata,
};
use crate::assignor::{self, Assignment, TopicId};
use crate::coordinator::{Coordinator, Out};
use crate::error::ErrorCode;
use crate::membership::MAX_STRING_BYTES;
use crate::records::{
    ConsumerGroupCurrentMemberAssignmentValue, ConsumerGroupKey, ConsumerGroupMemberKey,
    ConsumerGroupMemberMetadataValue, ConsumerGroupMetadataValue, ConsumerGroupTargetAssignmentMemberValue,
    ConsumerGroupTargetAssignmentMetadataValue, CoordinatorRecord, GroupMetadataKey, TopicPartitions,
};
use crate::timer::{TimerAction, TimerKey};

/// Kafka's `LEAVE_GROUP_MEMBER_EPOCH`.
const LEAVE_EPOCH: i32 = -1;
/// Kafka's `LEAVE_GROUP_STATIC_MEMBER_EPOCH`.
const STATIC_LEAVE_EPOCH: i32 = -2;

/// Kafka's `MemberState`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MemberState {
    Stable,
    UnrevokedPartitions,
    UnreleasedPartitions,
    Unknown,
}

impl MemberState {
    fn value(self) -> i8 {
        match self {
            MemberState::Stable => 0,
            MemberState::UnrevokedPartitions => 1,
            MemberState::UnreleasedPartitions => 2,
            MemberState::Unknown => 127,
        }
    }

    fn from_value(v: i8) -> Self {
        match v {
            0 => MemberState::Stable,
            1 => MemberState::UnrevokedPartitions,
            2 => MemberState::UnreleasedPartitions,
            _ => MemberState::Unknown,
        }
    }
}

/// Kafka's `ConsumerGroupMember`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ConsumerMember {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub subscribed_topic_names: BTreeSet<String>,
    pub subscribed_topic_regex: Option<String>,
    pub rebalance_timeout_ms: i32,
    pub server_assignor: Option<String>,
    pub member_epoch: i32,
    pub previous_member_epoch: i32,
    pub state: MemberState,
    pub assigned: Assignment,
    pub pending_revocation: Assignment,
}

impl ConsumerMember {
    fn new(member_id: String) -> Self {
        Self {
            member_id,
            instance_id: None,
            rack_id: None,
            client_id: String::new(),
            client_host: String::new(),
            subscribed_topic_names: BTreeSet::new(),
            subscribed_topic_regex: None,
            rebalance_timeout_ms: -1,
            server_assignor: None,
            member_epoch: 0,
            previous_member_epoch: -1,
            state: MemberState::Stable,
            assigned: Assignment::new(),
            pending_revocation: Assignment::new(),
        }
    }

    fn metadata_value(&self) -> ConsumerGroupMemberMetadataValue {
        ConsumerGroupMemberMetadataValue {
            instance_id: self.instance_id.clone(),
            rack_id: self.rack_id.clone(),
            client_id: self.client_id.clone(),
            client_host: self.client_host.clone(),
            subscribed_topic_names: self.subscribed_topic_names.iter().cloned().collect(),
            subscribed_topic_regex: self.subscribed_topic_regex.clone(),
            rebalance_timeout_ms: self.rebalance_timeout_ms,
            server_assignor: self.server_assignor.clone(),
        }
    }

    fn assignment_value(&self) -> ConsumerGroupCurrentMemberAssignmentValue {
        ConsumerGroupCurrentMemberAssignmentValue {
            member_epoch: self.member_epoch,
            previous_member_epoch: self.previous_member_epoch,
            state: self.state.value(),
            assigned_partitions: to_topic_partitions(&self.assigned),
            partitions_pending_revocation: to_topic_partitions(&self.pending_revocation),
        }
    }

    fn same_metadata(&self, other: &ConsumerMember) -> bool {
        self.metadata_value() == other.metadata_value()
    }

    fn same_assignment(&self, other: &ConsumerMember) -> bool {
        self.assignment_value() == other.assignment_value()
    }

    /// Kafka's `isReconciledTo`.
    fn is_reconciled_to(&self, target_epoch: i32) -> bool {
        self.state == MemberState::Stable && self.member_epoch == target_epoch
    }
}

/// Kafka's `ConsumerGroup`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ConsumerGroup {
    pub group_id: String,
    pub group_epoch: i32,
    /// Hash of the subscribed topics' metadata when the epoch last bumped.
    pub metadata_hash: i64,
    pub assignment_epoch: i32,
    pub members: BTreeMap<String, ConsumerMember>,
    /// instance id → member id.
    pub static_members: BTreeMap<String, String>,
    /// member id → target assignment.
    pub target: BTreeMap<String, Assignment>,
    /// (topic id, partition) → epoch of the member holding it (assigned or pending revocation).
    pub partition_epochs: BTreeMap<(TopicId, i32), i32>,
}

impl ConsumerGroup {
    fn new(group_id: String) -> Self {
        Self {
            group_id,
            group_epoch: 0,
            metadata_hash: 0,
            assignment_epoch: 0,
            members: BTreeMap::new(),
            static_members: BTreeMap::new(),
            target: BTreeMap::new(),
            partition_epochs: BTreeMap::new(),
        }
    }

    /// Kafka's `ConsumerGroup.state` (`maybeUpdateGroupState`).
    pub fn state(&self) -> GroupState {
        if self.members.is_empty() {
            GroupState::Empty
        } else if self.group_epoch > self.assignment_epoch {
            GroupState::Assigning
        } else if self.members.values().all(|m| m.is_reconciled_to(self.assignment_epoch)) {
            GroupState::Stable
        } else {
            GroupState::Reconciling
        }
    }

    pub fn subscribed_topic_names(&self) -> BTreeSet<String> {
        self.members.values().flat_map(|m| m.subscribed_topic_names.iter().cloned()).collect()
    }

    /// Kafka's `ConsumerGroup.isSubscribedToTopic`.
    pub fn is_subscribed_to_topic(&self, topic: &str) -> bool {
        self.members.values().any(|m| m.subscribed_topic_names.contains(topic))
    }

    /// Inserts or replaces a member, keeping the partition epochs and static ids in step
    /// (Kafka's `updateMember`).
    fn put_member(&mut self, member: ConsumerMember) {
        self.remove_partition_epochs(&member.member_id);
        for (topic_id, partitions) in member.assigned.iter().chain(&member.pending_revocation) {
            for p in partitions {
                self.partition_epochs.insert((*topic_id, *p), member.member_epoch);
            }
        }
        if let Some(old) = self.members.get(&member.member_id) {
            if let Some(instance_id) = &old.instance_id {
                if self.static_members.get(instance_id) == Some(&member.member_id) {
                    self.static_members.remove(instance_id);
                }
            }
        }
        if let Some(instance_id) = &member.instance_id {
            self.static_members.insert(instance_id.clone(), member.member_id.clone());
        }
        self.members.insert(member.member_id.clone(), member);
    }

    fn remove_partition_epochs(&mut self, member_id: &str) {
        if let Some(old) = self.members.get(member_id) {
            for (topic_id, partitions) in old.assigned.iter().chain(&old.pending_revocation) {
                for p in partitions {
                    self.partition_epochs.remove(&(*topic_id, *p));
                }
            }
        }
    }

    fn remove_member(&mut self, member_id: &str) -> Option<ConsumerMember> {
        self.remove_partition_epochs(member_id);
        let member = self.members.remove(member_id)?;
        if let Some(instance_id) = &member.instance_id {
            if self.static_members.get(instance_id).map(String::as_str) == Some(member_id) {
                self.static_members.remove(instance_id);
            }
        }
        self.target.remove(member_id);
        Some(member)
    }

    /// The assignor to run: the most common choice among the members, else the default.
    fn assignor(&self, default: &str) -> String {
        let mut votes: BTreeMap<&str, usize> = BTreeMap::new();
        for member in self.members.values() {
            if let Some(name) = &member.server_assignor {
                *votes.entry(name.as_str()).or_default() += 1;
            }
        }
        let max = votes.values().copied().max().unwrap_or(0);
        votes.into_iter().find(|(_, n)| *n == max).map_or_else(|| default.to_owned(), |(name, _)| name.to_owned())
    }
}

fn to_topic_partitions(assignment: &Assignment) -> Vec<TopicPartitions> {
    assignment
        .iter()
        .filter(|(_, p)| !p.is_empty())
        .map(|(topic_id, partitions)| TopicPartitions {
            topic_id: *topic_id,
            partitions: partitions.iter().copied().collect(),
        })
        .collect()
}

fn from_topic_partitions(v: &[TopicPartitions]) -> Assignment {
    let mut out = Assignment::new();
    for tp in v {
        if !tp.partitions.is_empty() {
            out.entry(tp.topic_id).or_default().extend(tp.partitions.iter().copied());
        }
    }
    out
}

fn owned_from_request(v: &[ConsumerGroupTopicPartitions]) -> Assignment {
    let mut out = Assignment::new();
    for tp in v {
        if !tp.partitions.is_empty() {
            out.entry(tp.topic_id).or_default().extend(tp.partitions.iter().copied());
        }
    }
    out
}

fn is_subset(owned: &Assignment, of: &Assignment) -> bool {
    owned.iter().all(|(t, ps)| ps.is_empty() || of.get(t).is_some_and(|o| ps.is_subset(o)))
}

/// Does the member still own any of `revoking`? Unknown (`None`) counts as yes, as in Kafka.
fn owns_any(owned: Option<&Assignment>, revoking: &Assignment) -> bool {
    let Some(owned) = owned else {
        return true;
    };
    owned.iter().any(|(t, ps)| revoking.get(t).is_some_and(|r| ps.iter().any(|p| r.contains(p))))
}

/// A stable hash (FNV-1a) of the metadata of the subscribed topics that exist, so that a
/// change in partition count or topic id bumps the group epoch. 0 when nothing is subscribed.
fn metadata_hash(subscribed: &BTreeSet<String>, topics: &BTreeMap<String, TopicMetadata>) -> i64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut any = false;
    let mut feed = |bytes: &[u8]| {
        for b in bytes {
            hash ^= u64::from(*b);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    for name in subscribed {
        if let Some(topic) = topics.get(name) {
            any = true;
            feed(name.as_bytes());
            feed(&[0]);
            feed(&topic.topic_id);
            feed(&topic.partitions.to_be_bytes());
        }
    }
    if any {
        hash as i64
    } else {
        0
    }
}

/// Kafka's `CurrentAssignmentBuilder.build`.
fn reconcile(
    member: &ConsumerMember,
    target_epoch: i32,
    target: &Assignment,
    partition_epochs: &BTreeMap<(TopicId, i32), i32>,
    owned: Option<&Assignment>,
) -> ConsumerMember {
    match member.state {
        MemberState::Stable if member.member_epoch != target_epoch => {
            next_assignment(member, member.member_epoch, target_epoch, target, partition_epochs, owned)
        }
        MemberState::Stable | MemberState::Unknown => member.clone(),
        MemberState::UnrevokedPartitions => {
            if owns_any(owned, &member.pending_revocation) {
                member.clone()
            } else {
                next_assignment(
                    member,
                    (member.member_epoch + 1).min(target_epoch),
                    target_epoch,
                    target,
                    partition_epochs,
                    owned,
                )
            }
        }
        MemberState::UnreleasedPartitions => {
            next_assignment(member, member.member_epoch, target_epoch, target, partition_epochs, owned)
        }
    }
}

/// Kafka's `CurrentAssignmentBuilder.computeNextAssignment`.
fn next_assignment(
    member: &ConsumerMember,
    member_epoch: i32,
    target_epoch: i32,
    target: &Assignment,
    partition_epochs: &BTreeMap<(TopicId, i32), i32>,
    owned: Option<&Assignment>,
) -> ConsumerMember {
    let mut has_unreleased = false;
    let mut assigned = Assignment::new();
    let mut revoking = Assignment::new();
    let mut pending_assignment = Assignment::new();
    let empty = BTreeSet::new();
    let topic_ids: BTreeSet<TopicId> = target.keys().chain(member.assigned.keys()).copied().collect();
    for topic_id in topic_ids {
        let target_partitions = target.get(&topic_id).unwrap_or(&empty);
        let current = member.assigned.get(&topic_id).unwrap_or(&empty);
        let kept: BTreeSet<i32> = current.intersection(target_partitions).copied().collect();
        let revoke: BTreeSet<i32> = current.difference(&kept).copied().collect();
        let mut assign: BTreeSet<i32> = target_partitions.difference(&kept).copied().collect();
        let before = assign.len();
        // Partitions another member still holds are unreleased: not given yet.
        assign.retain(|p| !partition_epochs.contains_key(&(topic_id, *p)));
        has_unreleased |= assign.len() != before;
        if !kept.is_empty() {
            assigned.insert(topic_id, kept);
        }
        if !revoke.is_empty() {
            revoking.insert(topic_id, revoke);
        }
        if !assign.is_empty() {
            pending_assignment.insert(topic_id, assign);
        }
    }
    let mut next = member.clone();
    let update_epoch = |next: &mut ConsumerMember, epoch: i32| {
        // Kafka's `Builder.updateMemberEpoch`.
        next.previous_member_epoch = next.member_epoch;
        next.member_epoch = epoch;
    };
    if !revoking.is_empty() && owns_any(owned, &revoking) {
        next.state = MemberState::UnrevokedPartitions;
        update_epoch(&mut next, member_epoch);
        next.assigned = assigned;
        next.pending_revocation = revoking;
    } else {
        for (topic_id, partitions) in pending_assignment {
            assigned.entry(topic_id).or_default().extend(partitions);
        }
        next.state = if has_unreleased { MemberState::UnreleasedPartitions } else { MemberState::Stable };
        update_epoch(&mut next, target_epoch);
        next.assigned = assigned;
        next.pending_revocation = Assignment::new();
    }
    next
}

fn heartbeat_error(id: RequestId, error: ErrorCode, message: impl Into<String>, out: &mut Out) {
    out.respond(
        id,
        Response::ConsumerGroupHeartbeat(ConsumerGroupHeartbeatResponse::error(error, Some(message.into()))),
    );
}

fn group_key(group_id: &str) -> ConsumerGroupKey {
    ConsumerGroupKey { group: group_id.to_owned() }
}

fn member_key(group_id: &str, member_id: &str) -> ConsumerGroupMemberKey {
    ConsumerGroupMemberKey { group: group_id.to_owned(), member_id: member_id.to_owned() }
}

fn epoch_record(group: &ConsumerGroup) -> CoordinatorRecord {
    CoordinatorRecord::ConsumerGroupMetadata {
        key: group_key(&group.group_id),
        value: Some(ConsumerGroupMetadataValue { epoch: group.group_epoch, metadata_hash: group.metadata_hash }),
    }
}

fn member_metadata_record(group_id: &str, member: &ConsumerMember) -> CoordinatorRecord {
    CoordinatorRecord::ConsumerGroupMemberMetadata {
        key: member_key(group_id, &member.member_id),
        value: Some(member.metadata_value()),
    }
}

fn current_assignment_record(group_id: &str, member: &ConsumerMember) -> CoordinatorRecord {
    CoordinatorRecord::ConsumerGroupCurrentMemberAssignment {
        key: member_key(group_id, &member.member_id),
        value: Some(member.assignment_value()),
    }
}

fn target_member_record(group_id: &str, member_id: &str, target: &Assignment) -> CoordinatorRecord {
    CoordinatorRecord::ConsumerGroupTargetAssignmentMember {
        key: member_key(group_id, member_id),
        value: Some(ConsumerGroupTargetAssignmentMemberValue { topic_partitions: to_topic_partitions(target) }),
    }
}

/// Tombstones of a member, in Kafka's order (`removeMember`): current assignment, target
/// assignment, subscription.
fn member_tombstones(group_id: &str, member_id: &str, out: &mut Out) {
    out.persist(CoordinatorRecord::ConsumerGroupCurrentMemberAssignment {
        key: member_key(group_id, member_id),
        value: None,
    });
    out.persist(CoordinatorRecord::ConsumerGroupTargetAssignmentMember {
        key: member_key(group_id, member_id),
        value: None,
    });
    out.persist(CoordinatorRecord::ConsumerGroupMemberMetadata { key: member_key(group_id, member_id), value: None });
}

/// Kafka's `throwIfConsumerGroupHeartbeatRequestIsInvalid`.
fn validate_request(req: &ConsumerGroupHeartbeat, assignors: &[String]) -> Result<(), String> {
    if req.group_id.is_empty() {
        return Err("GroupId can't be empty.".into());
    }
    if req.group_id.len() > MAX_STRING_BYTES || req.member_id.len() > MAX_STRING_BYTES {
        return Err("GroupId or MemberId is too long.".into());
    }
    if req.instance_id.as_deref() == Some("") {
        return Err("InstanceId can't be empty.".into());
    }
    if req.rack_id.as_deref() == Some("") {
        return Err("RackId can't be empty.".into());
    }
    if req.version >= 1 && req.member_id.is_empty() {
        return Err("MemberId can't be empty.".into());
    }
    match req.member_epoch {
        0 => {
            if req.rebalance_timeout_ms == -1 {
                return Err("RebalanceTimeoutMs must be provided in first request.".into());
            }
            if req.topic_partitions.as_ref().is_none_or(|p| !p.is_empty()) {
                return Err("TopicPartitions must be empty when (re-)joining.".into());
            }
            if req.subscribed_topic_names.is_none() && req.subscribed_topic_regex.is_none() {
                return Err("SubscribedTopicNames or SubscribedTopicRegex must be set in first request.".into());
            }
        }
        STATIC_LEAVE_EPOCH if req.instance_id.is_none() => {
            return Err("InstanceId can't be null.".into());
        }
        epoch if epoch < STATIC_LEAVE_EPOCH => {
            return Err(format!("MemberEpoch {epoch} is invalid."));
        }
        _ => {
            if req.member_id.is_empty() {
                return Err("MemberId can't be empty.".into());
            }
        }
    }
    if req.subscribed_topic_regex.as_deref().is_some_and(|r| !r.is_empty()) {
        return Err("SubscribedTopicRegex is not supported by this broker.".into());
    }
    let too_long = |s: &Option<String>| s.as_ref().is_some_and(|s| s.len() > MAX_STRING_BYTES);
    if too_long(&req.instance_id)
        || too_long(&req.rack_id)
        || too_long(&req.server_assignor)
        || req.client_id.len() > MAX_STRING_BYTES
        || req.client_host.len() > MAX_STRING_BYTES
        || req.subscribed_topic_names.iter().flatten().any(|t| t.len() > MAX_STRING_BYTES)
    {
        return Err("A string field is too long.".into());
    }
    if let Some(name) = &req.server_assignor {
        if !assignors.iter().any(|a| a == name) {
            // Reported as UNSUPPORTED_ASSIGNOR by the caller.
            return Err(String::new());
        }
    }
    Ok(())
}

impl Coordinator {
    /// Feeds the topics the server-side assignors see (name, id, partition count): call on
    /// every metadata change that touches topics, and once after loading. A consumer group
    /// whose subscribed topics changed (created, deleted, repartitioned) gets a new group epoch
    /// (persisted) and a new target assignment at its next heartbeat.
    pub fn set_topics(&mut self, topics: Vec<TopicMetadata>, now_ms: i64) -> Vec<Effect> {
        self.ensure_cleanup_scheduled(now_ms);
        self.topics = topics.into_iter().map(|t| (t.name.clone(), t)).collect();
        let mut out = Out::default();
        let topics = &self.topics;
        for group in self.consumer_groups.values_mut() {
            if group.members.is_empty() {
                continue;
            }
            let hash = metadata_hash(&group.subscribed_topic_names(), topics);
            if hash != group.metadata_hash {
                group.metadata_hash = hash;
                group.group_epoch += 1;
                out.persist(epoch_record(group));
            }
        }
        out.into_effects()
    }

    /// ConsumerGroupHeartbeat (KIP-848), versions 0–1. One response, after the records.
    pub fn consumer_group_heartbeat(&mut self, id: RequestId, req: ConsumerGroupHeartbeat, now_ms: i64) -> Vec<Effect> {
        self.ensure_cleanup_scheduled(now_ms);
        let mut out = Out::default();
        if let Err(message) = validate_request(&req, &self.config.group_consumer_assignors) {
            if message.is_empty() {
                let name = req.server_assignor.clone().unwrap_or_default();
                heartbeat_error(
                    id,
                    ErrorCode::UNSUPPORTED_ASSIGNOR,
                    format!(
                        "ServerAssignor {name} is not supported. Supported assignors: {}.",
                        self.config.group_consumer_assignors.join(", ")
                    ),
                    &mut out,
                );
            } else {
                heartbeat_error(id, ErrorCode::INVALID_REQUEST, message, &mut out);
            }
            return out.into_effects();
        }
        let result = if req.member_epoch == LEAVE_EPOCH || req.member_epoch == STATIC_LEAVE_EPOCH {
            self.consumer_group_leave(&req, now_ms, &mut out)
        } else {
            self.consumer_heartbeat(&req, now_ms, &mut out)
        };
        match result {
            Ok(response) => out.respond(id, Response::ConsumerGroupHeartbeat(response)),
            Err((error, message)) => heartbeat_error(id, error, message, &mut out),
        }
        out.into_effects()
    }

    fn heartbeat_interval_ms(&self) -> i32 {
        self.config.group_consumer_heartbeat_interval_ms
    }

    fn consumer_heartbeat(
        &mut self,
        req: &ConsumerGroupHeartbeat,
        now_ms: i64,
        out: &mut Out,
    ) -> Result<ConsumerGroupHeartbeatResponse, (ErrorCode, String)> {
        let group_id = req.group_id.clone();
        let joining = req.member_epoch == 0;
        // Kafka's `getOrMaybeCreateConsumerGroup`: an empty classic group gives way.
        if !self.consumer_groups.contains_key(&group_id) {
            if !joining {
                return Err((ErrorCode::GROUP_ID_NOT_FOUND, format!("Consumer group {group_id} not found.")));
            }
            if let Some(classic) = self.groups.get(&group_id) {
                if classic.state != GroupState::Empty && classic.state != GroupState::Dead {
                    return Err((
                        ErrorCode::GROUP_ID_NOT_FOUND,
                        format!(
                            "Cannot upgrade classic group {group_id} to consumer group because \
                             it is not empty (online upgrade is not supported)."
                        ),
                    ));
                }
                self.groups.remove(&group_id);
                self.timers.cancel_group(&group_id);
                out.persist(CoordinatorRecord::GroupMetadata {
                    key: GroupMetadataKey { group: group_id.clone() },
                    value: None,
                });
            }
        }
        let mut group = self.consumer_groups.remove(&group_id).unwrap_or_else(|| ConsumerGroup::new(group_id.clone()));
        let result = self.consumer_heartbeat_in(&mut group, req, now_ms, out);
        // A group created by a failed join is not kept (Kafka reverts it with the batch).
        if !(group.members.is_empty() && group.group_epoch == 0) {
            self.consumer_groups.insert(group_id, group);
        }
        result
    }

    fn consumer_heartbeat_in(
        &mut self,
        group: &mut ConsumerGroup,
        req: &ConsumerGroupHeartbeat,
        now_ms: i64,
        out: &mut Out,
    ) -> Result<ConsumerGroupHeartbeatResponse, (ErrorCode, String)> {
        let group_id = group.group_id.clone();
        let owned = req.topic_partitions.as_deref().map(owned_from_request);
        let mut member_id = req.member_id.clone();
        if member_id.is_empty() {
            // v0: the coordinator names the member.
            member_id = self.member_ids.next_suffix();
        }
        let fenced = |message: String| (ErrorCode::FENCED_MEMBER_EPOCH, message);
        // The member before this heartbeat (a fresh one for a new member).
        let mut replaced_static: Option<ConsumerMember> = None;
        let member = match &req.instance_id {
            None => match group.members.get(&member_id) {
                Some(member) => member.clone(),
                None if req.member_epoch == 0 => ConsumerMember::new(member_id.clone()),
                None => {
                    return Err((
                        ErrorCode::UNKNOWN_MEMBER_ID,
                        format!("Member {member_id} is not a member of group {group_id}."),
                    ))
                }
            },
            Some(instance_id) => {
                let existing = group.static_members.get(instance_id).and_then(|m| group.members.get(m));
                if req.member_epoch == 0 {
                    match existing {
                        None => group
                            .members
                            .get(&member_id)
                            .cloned()
                            .unwrap_or_else(|| ConsumerMember::new(member_id.clone())),
                        Some(old) if old.member_epoch != STATIC_LEAVE_EPOCH => {
                            return Err((
                                ErrorCode::UNRELEASED_INSTANCE_ID,
                                format!(
                                    "Static member {member_id} with instance id {instance_id} \
                                     cannot join the group because the instance id is owned by \
                                     {} member.",
                                    old.member_id
                                ),
                            ))
                        }
                        Some(old) => {
                            // The new instance takes over the old one's subscription and
                            // assignment, at epoch 0 (Kafka's `Builder(existing, memberId)`).
                            replaced_static = Some(old.clone());
                            ConsumerMember {
                                member_id: member_id.clone(),
                                member_epoch: 0,
                                previous_member_epoch: 0,
                                ..old.clone()
                            }
                        }
                    }
                } else {
                    let Some(member) = group.members.get(&member_id) else {
                        return Err((
                            ErrorCode::UNKNOWN_MEMBER_ID,
                            format!("Member {member_id} is not a member of group {group_id}."),
                        ));
                    };
                    match group.static_members.get(instance_id) {
                        Some(owner) if owner == &member_id => {}
                        Some(_) => {
                            return Err((
                                ErrorCode::FENCED_INSTANCE_ID,
                                format!(
                                    "Static member {member_id} with instance id {instance_id} \
                                     was fenced by another member."
                                ),
                            ))
                        }
                        None => {
                            return Err((
                                ErrorCode::UNKNOWN_MEMBER_ID,
                                format!("Instance id {instance_id} is unknown in group {group_id}."),
                            ))
                        }
                    }
                    member.clone()
                }
            }
        };
        let is_new = !group.members.contains_key(&member_id);
        if is_new && replaced_static.is_none() && group.members.len() >= self.config.group_consumer_max_size {
            return Err((
                ErrorCode::GROUP_MAX_SIZE_REACHED,
                format!(
                    "The consumer group has reached its maximum capacity of {} members.",
                    self.config.group_consumer_max_size
                ),
            ));
        }
        // Kafka's `throwIfConsumerGroupMemberEpochIsInvalid`: for every dynamic member (a known
        // member rejoining with epoch 0 is fenced unless 0 was its previous epoch), for static
        // members once they are in.
        if req.instance_id.is_none() || req.member_epoch != 0 {
            if req.member_epoch > member.member_epoch {
                return Err(fenced(format!(
                    "The consumer group member has a greater member epoch ({}) than the one \
                     known by the group coordinator ({}). The member must abandon all its \
                     partitions and rejoin.",
                    req.member_epoch, member.member_epoch
                )));
            }
            if req.member_epoch < member.member_epoch
                && (req.member_epoch != member.previous_member_epoch
                    || !owned.as_ref().is_some_and(|o| is_subset(o, &member.assigned)))
            {
                return Err(fenced(format!(
                    "The consumer group member has a smaller member epoch ({}) than the one \
                     known by the group coordinator ({}). The member must abandon all its \
                     partitions and rejoin.",
                    req.member_epoch, member.member_epoch
                )));
            }
        }

        // 1. The member's new metadata; a new member or a new subscription bumps the epoch.
        let mut updated = member.clone();
        updated.member_id = member_id.clone();
        if req.instance_id.is_some() {
            updated.instance_id = req.instance_id.clone();
        }
        if req.rack_id.is_some() {
            updated.rack_id = req.rack_id.clone();
        }
        if req.rebalance_timeout_ms > 0 {
            updated.rebalance_timeout_ms = req.rebalance_timeout_ms;
        }
        if req.server_assignor.is_some() {
            updated.server_assignor = req.server_assignor.clone();
        }
        if let Some(names) = &req.subscribed_topic_names {
            updated.subscribed_topic_names = names.iter().cloned().collect();
        }
        if let Some(regex) = &req.subscribed_topic_regex {
            updated.subscribed_topic_regex = Some(regex.clone()).filter(|r| !r.is_empty());
        }
        updated.client_id = req.client_id.clone();
        updated.client_host = req.client_host.clone();

        if let Some(old) = &replaced_static {
            // Kafka's `replaceMember`: the old instance's records go, the new one's come.
            member_tombstones(&group_id, &old.member_id, out);
            let target = group.target.get(&old.member_id).cloned().unwrap_or_default();
            group.remove_member(&old.member_id);
            self.timers
                .cancel(&TimerKey::ConsumerSession { group_id: group_id.clone(), member_id: old.member_id.clone() });
            self.timers
                .cancel(&TimerKey::ConsumerRebalance { group_id: group_id.clone(), member_id: old.member_id.clone() });
            out.persist(member_metadata_record(&group_id, &updated));
            out.persist(target_member_record(&group_id, &member_id, &target));
            out.persist(current_assignment_record(&group_id, &updated));
            group.target.insert(member_id.clone(), target);
            group.put_member(updated.clone());
        }

        let subscription_changed = is_new && replaced_static.is_none()
            || updated.subscribed_topic_names != member.subscribed_topic_names
            || updated.subscribed_topic_regex != member.subscribed_topic_regex;
        if replaced_static.is_none() && (is_new || !updated.same_metadata(&member)) {
            out.persist(member_metadata_record(&group_id, &updated));
        }
        // Apply the subscription before computing the hash and the target.
        let previous_state = group.members.get(&member_id).cloned();
        group.put_member(updated.clone());
        let hash = metadata_hash(&group.subscribed_topic_names(), &self.topics);
        if subscription_changed || hash != group.metadata_hash {
            group.group_epoch += 1;
            group.metadata_hash = hash;
            out.persist(epoch_record(group));
        }

        // 2. A new target assignment when the group epoch moved past it.
        if group.group_epoch > group.assignment_epoch {
            self.compute_target_assignment(group, out);
        }

        // 3. Reconcile the member towards its target.
        let target = group.target.get(&member_id).cloned().unwrap_or_default();
        // Partitions held by others only: the member's own do not block it.
        group.remove_partition_epochs(&member_id);
        let reconciled = if updated.is_reconciled_to(group.assignment_epoch) {
            updated.clone()
        } else {
            reconcile(&updated, group.assignment_epoch, &target, &group.partition_epochs, owned.as_ref())
        };
        let before = previous_state.unwrap_or_else(|| member.clone());
        if !reconciled.same_assignment(&before) || (is_new && replaced_static.is_none()) {
            out.persist(current_assignment_record(&group_id, &reconciled));
        }
        group.put_member(reconciled.clone());

        // Timers: the session, and the deadline to revoke partitions.
        self.timers.schedule(
            TimerKey::ConsumerSession { group_id: group_id.clone(), member_id: member_id.clone() },
            now_ms.saturating_add(i64::from(self.config.group_consumer_session_timeout_ms)),
            TimerAction::ExpireConsumerSession,
        );
        let rebalance_key = TimerKey::ConsumerRebalance { group_id: group_id.clone(), member_id: member_id.clone() };
        if reconciled.state == MemberState::UnrevokedPartitions {
            if before.state != MemberState::UnrevokedPartitions
                || before.member_epoch != reconciled.member_epoch
                || !self.timers.contains(&rebalance_key)
            {
                self.timers.schedule(
                    rebalance_key,
                    now_ms.saturating_add(i64::from(reconciled.rebalance_timeout_ms.max(0))),
                    TimerAction::ExpireConsumerRebalance { member_epoch: reconciled.member_epoch },
                );
            }
        } else {
            self.timers.cancel(&rebalance_key);
        }

        // Kafka sends the assignment on a join, a full request, or when it changed.
        let full_request = req.rebalance_timeout_ms != -1
            && (req.subscribed_topic_names.is_some() || req.subscribed_topic_regex.is_some())
            && req.topic_partitions.is_some();
        let assignment = (req.member_epoch == 0 || full_request || reconciled.assigned != member.assigned).then(|| {
            reconciled
                .assigned
                .iter()
                .map(|(topic_id, partitions)| ConsumerGroupTopicPartitions {
                    topic_id: *topic_id,
                    partitions: partitions.iter().copied().collect(),
                })
                .collect()
        });
        Ok(ConsumerGroupHeartbeatResponse {
            error_code: ErrorCode::NONE,
            error_message: None,
            member_id: Some(member_id),
            member_epoch: reconciled.member_epoch,
            heartbeat_interval_ms: self.heartbeat_interval_ms(),
            assignment,
        })
    }

    /// Kafka's `updateTargetAssignment`: runs the assignor for every member and persists the
    /// targets that changed, then the new assignment epoch.
    fn compute_target_assignment(&self, group: &mut ConsumerGroup, out: &mut Out) {
        let default = self.config.group_consumer_assignors.first().map_or(assignor::UNIFORM, String::as_str);
        let assignor_name = group.assignor(default);
        let subscriptions: BTreeMap<String, BTreeSet<String>> =
            group.members.values().map(|m| (m.member_id.clone(), m.subscribed_topic_names.clone())).collect();
        let new_target = assignor::assign(&assignor_name, &subscriptions, &self.topics, &group.target);
        for (member_id, assignment) in &new_target {
            if group.target.get(member_id) != Some(assignment) {
                out.persist(target_member_record(&group.group_id, member_id, assignment));
            }
        }
        group.target = new_target;
        group.assignment_epoch = group.group_epoch;
        out.persist(CoordinatorRecord::ConsumerGroupTargetAssignmentMetadata {
            key: group_key(&group.group_id),
            value: Some(ConsumerGroupTargetAssignmentMetadataValue { assignment_epoch: group.assignment_epoch }),
        });
    }

    /// Kafka's `consumerGroupLeave`: -1 removes the member (a dynamic member's -2 too), a static
    /// member's -2 keeps its assignment for its session timeout so that its next instance can
    /// take over.
    fn consumer_group_leave(
        &mut self,
        req: &ConsumerGroupHeartbeat,
        _now_ms: i64,
        out: &mut Out,
    ) -> Result<ConsumerGroupHeartbeatResponse, (ErrorCode, String)> {
        let group_id = &req.group_id;
        let Some(group) = self.consumer_groups.get_mut(group_id) else {
            return Err((ErrorCode::GROUP_ID_NOT_FOUND, format!("Consumer group {group_id} not found.")));
        };
        let member_id = match &req.instance_id {
            None => {
                if !group.members.contains_key(&req.member_id) {
                    return Err((
                        ErrorCode::UNKNOWN_MEMBER_ID,
                        format!("Member {} is not a member of group {group_id}.", req.member_id),
                    ));
                }
                req.member_id.clone()
            }
            Some(instance_id) => match group.static_members.get(instance_id) {
                None => {
                    return Err((
                        ErrorCode::UNKNOWN_MEMBER_ID,
                        format!("Instance id {instance_id} is unknown in group {group_id}."),
                    ))
                }
                Some(owner) if owner != &req.member_id => {
                    return Err((
                        ErrorCode::FENCED_INSTANCE_ID,
                        format!(
                            "Static member {} with instance id {instance_id} was fenced by \
                             another member.",
                            req.member_id
                        ),
                    ))
                }
                Some(owner) => owner.clone(),
            },
        };
        if req.member_epoch == STATIC_LEAVE_EPOCH && req.instance_id.is_some() {
            let mut member = group.members[&member_id].clone();
            member.previous_member_epoch = member.member_epoch;
            member.member_epoch = STATIC_LEAVE_EPOCH;
            out.persist(current_assignment_record(group_id, &member));
            group.put_member(member);
            self.timers
                .cancel(&TimerKey::ConsumerRebalance { group_id: group_id.clone(), member_id: member_id.clone() });
        } else {
            self.fence_consumer_member(group_id, &member_id, out);
        }
        Ok(ConsumerGroupHeartbeatResponse {
            error_code: ErrorCode::NONE,
            error_message: None,
            member_id: Some(member_id),
            member_epoch: req.member_epoch,
            heartbeat_interval_ms: 0,
            assignment: None,
        })
    }

    /// Kafka's `consumerGroupFenceMember`: the member's records are tombstoned and the group
    /// epoch bumps, so the others get its partitions at their next heartbeats.
    pub(crate) fn fence_consumer_member(&mut self, group_id: &str, member_id: &str, out: &mut Out) {
        let Some(group) = self.consumer_groups.get_mut(group_id) else {
            return;
        };
        if group.remove_member(member_id).is_none() {
            return;
        }
        member_tombstones(group_id, member_id, out);
        group.metadata_hash = metadata_hash(&group.subscribed_topic_names(), &self.topics);
        group.group_epoch += 1;
        out.persist(epoch_record(group));
        self.timers
            .cancel(&TimerKey::ConsumerSession { group_id: group_id.to_owned(), member_id: member_id.to_owned() });
        self.timers
            .cancel(&TimerKey::ConsumerRebalance { group_id: group_id.to_owned(), member_id: member_id.to_owned() });
    }

    /// A member's rebalance timeout passed: fenced if it still has not revoked.
    pub(crate) fn expire_consumer_rebalance(
        &mut self,
        group_id: &str,
        member_id: &str,
        member_epoch: i32,
        out: &mut Out,
    ) {
        let still_revoking = self
            .consumer_groups
            .get(group_id)
            .and_then(|g| g.members.get(member_id))
            .is_some_and(|m| m.member_epoch == member_epoch && m.state == MemberState::UnrevokedPartitions);
        if still_revoking {
            self.fence_consumer_member(group_id, member_id, out);
        }
    }

    /// ConsumerGroupDescribe (KIP-848) for one group.
    pub fn describe_consumer_group(&self, group_id: &str) -> ConsumerGroupDescription {
        // Kafka sets only the error code (the state stays the wire default, "").
        let not_found = |_reason: String| ConsumerGroupDescription {
            error_code: ErrorCode::GROUP_ID_NOT_FOUND,
            error_message: None,
            group_id: group_id.to_owned(),
            group_state: String::new(),
            group_epoch: 0,
            assignment_epoch: 0,
            assignor_name: String::new(),
            members: Vec::new(),
        };
        let Some(group) = self.consumer_groups.get(group_id) else {
            return if self.groups.contains_key(group_id) {
                not_found(format!("Group {group_id} is not a consumer group."))
            } else {
                not_found(format!("Group {group_id} not found."))
            };
        };
        let default = self.config.group_consumer_assignors.first().map_or(assignor::UNIFORM, String::as_str);
        ConsumerGroupDescription {
            error_code: ErrorCode::NONE,
            error_message: None,
            group_id: group.group_id.clone(),
            group_state: group.state().name().to_owned(),
            group_epoch: group.group_epoch,
            assignment_epoch: group.assignment_epoch,
            assignor_name: group.assignor(default),
            members: group
                .members
                .values()
                .map(|m| ConsumerGroupDescribedMember {
                    member_id: m.member_id.clone(),
                    instance_id: m.instance_id.clone(),
                    rack_id: m.rack_id.clone(),
                    member_epoch: m.member_epoch,
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    subscribed_topic_names: m.subscribed_topic_names.iter().cloned().collect(),
                    subscribed_topic_regex: m.subscribed_topic_regex.clone(),
                    assignment: self.described(&m.assigned),
                    target_assignment: self.described(group.target.get(&m.member_id).unwrap_or(&Assignment::new())),
                    member_type: 1,
                })
                .collect(),
        }
    }

    fn described(&self, assignment: &Assignment) -> Vec<DescribedTopicPartitions> {
        assignment
            .iter()
            .map(|(topic_id, partitions)| DescribedTopicPartitions {
                topic_id: *topic_id,
                topic_name: self
                    .topics
                    .values()
                    .find(|t| t.topic_id == *topic_id)
                    .map(|t| t.name.clone())
                    .unwrap_or_default(),
                partitions: partitions.iter().copied().collect(),
            })
            .collect()
    }

    /// ListGroups rows of the consumer groups.
    pub(crate) fn list_consumer_groups(&self, states_filter: &[GroupState]) -> Vec<GroupListing> {
        self.consumer_groups
            .values()
            .filter(|g| states_filter.is_empty() || states_filter.contains(&g.state()))
            .map(|g| GroupListing {
                group_id: g.group_id.clone(),
                protocol_type: "consumer".to_owned(),
                state: g.state(),
                group_type: "consumer",
            })
            .collect()
    }

    /// DescribeGroups (the classic API) of a consumer group: Kafka's `describeGroups` only
    /// describes classic groups and reports any other as Dead, with no error.
    pub(crate) fn describe_consumer_group_as_classic(&self, group_id: &str) -> Option<GroupDescription> {
        let group = self.consumer_groups.get(group_id)?;
        Some(GroupDescription {
            error_code: ErrorCode::NONE,
            group_id: group.group_id.clone(),
            state: GroupState::Dead,
            protocol_type: String::new(),
            protocol_data: String::new(),
            members: Vec::new(),
        })
    }

    /// DeleteGroups of a consumer group: only an Empty one; tombstones for its records.
    pub(crate) fn delete_consumer_group(&mut self, group_id: &str, out: &mut Out) -> ErrorCode {
        let Some(group) = self.consumer_groups.get(group_id) else {
            return ErrorCode::GROUP_ID_NOT_FOUND;
        };
        if !group.members.is_empty() {
            return ErrorCode::NON_EMPTY_GROUP;
        }
        self.delete_all_offsets(group_id, out);
        self.remove_consumer_group(group_id, out);
        ErrorCode::NONE
    }

    /// Tombstones of an empty consumer group (Kafka's `createGroupTombstoneRecords`).
    pub(crate) fn remove_consumer_group(&mut self, group_id: &str, out: &mut Out) {
        if let Some(group) = self.consumer_groups.remove(group_id) {
            for member_id in group.members.keys() {
                member_tombstones(group_id, member_id, out);
            }
        }
        self.timers.cancel_group(group_id);
        out.persist(CoordinatorRecord::ConsumerGroupTargetAssignmentMetadata { key: group_key(group_id), value: None });
        out.persist(CoordinatorRecord::ConsumerGroupMetadata { key: group_key(group_id), value: None });
    }

    /// A classic JoinGroup for the id of a consumer group: an empty one is removed (Kafka
    /// converts it), a live one refuses (Keel has no classic members in consumer groups).
    pub(crate) fn classic_join_conflict(&mut self, group_id: &str, out: &mut Out) -> Option<ErrorCode> {
        let group = self.consumer_groups.get(group_id)?;
        if group.members.is_empty() {
            self.remove_consumer_group(group_id, out);
            None
        } else {
            Some(ErrorCode::INCONSISTENT_GROUP_PROTOCOL)
        }
    }

    /// OffsetCommit against a consumer group (Kafka's `ConsumerGroup.validateOffsetCommit`):
    /// `None` when the group is not a consumer group.
    pub(crate) fn validate_consumer_offset_commit(&self, request: &OffsetCommit) -> Option<Result<(), ErrorCode>> {
        let group = self.consumer_groups.get(&request.group_id)?;
        if request.generation_id < 0 && group.members.is_empty() {
            return Some(Ok(()));
        }
        let Some(member) = group.members.get(&request.member_id) else {
            return Some(Err(ErrorCode::UNKNOWN_MEMBER_ID));
        };
        if request.version < 9 {
            return Some(Err(ErrorCode::UNSUPPORTED_VERSION));
        }
        if request.generation_id != member.member_epoch {
            return Some(Err(ErrorCode::STALE_MEMBER_EPOCH));
        }
        Some(Ok(()))
    }

    /// OffsetFetch v9+ names the fetching member (Kafka's `ConsumerGroup.validateOffsetFetch`):
    /// an admin fetch (no member id, negative epoch) always passes; otherwise the member must
    /// exist (UNKNOWN_MEMBER_ID) at that epoch (STALE_MEMBER_EPOCH). Only consumer groups check.
    pub fn validate_offset_fetch(
        &self,
        group_id: &str,
        member_id: Option<&str>,
        member_epoch: i32,
    ) -> Result<(), ErrorCode> {
        let Some(group) = self.consumer_groups.get(group_id) else { return Ok(()) };
        let Some(member_id) = member_id else {
            return if member_epoch < 0 { Ok(()) } else { Err(ErrorCode::UNKNOWN_MEMBER_ID) };
        };
        let member = group.members.get(member_id).ok_or(ErrorCode::UNKNOWN_MEMBER_ID)?;
        if member_epoch != member.member_epoch {
            return Err(ErrorCode::STALE_MEMBER_EPOCH);
        }
        Ok(())
    }

    /// Applies one KIP-848 record (Kafka's `GroupMetadataManager.replay` for them).
    pub(crate) fn replay_consumer(&mut self, record: CoordinatorRecord) {
        let group_of = |this: &mut Self, group_id: &str| -> bool {
            // A consumer group replaces an empty classic (simple) group of the same id.
            if let Some(classic) = this.groups.get(group_id) {
                if classic.members.is_empty() {
                    this.groups.remove(group_id);
                }
            }
            this.consumer_groups.entry(group_id.to_owned()).or_insert_with(|| ConsumerGroup::new(group_id.to_owned()));
            true
        };
        match record {
            CoordinatorRecord::ConsumerGroupMetadata { key, value: Some(v) } => {
                group_of(self, &key.group);
                if let Some(g) = self.consumer_groups.get_mut(&key.group) {
                    g.group_epoch = v.epoch;
                    g.metadata_hash = v.metadata_hash;
                }
            }
            CoordinatorRecord::ConsumerGroupMetadata { key, value: None } => {
                self.consumer_groups.remove(&key.group);
                self.timers.cancel_group(&key.group);
            }
            CoordinatorRecord::ConsumerGroupTargetAssignmentMetadata { key, value } => {
                if let Some(v) = value {
                    group_of(self, &key.group);
                    if let Some(g) = self.consumer_groups.get_mut(&key.group) {
                        g.assignment_epoch = v.assignment_epoch;
                    }
                } else if let Some(g) = self.consumer_groups.get_mut(&key.group) {
                    g.assignment_epoch = 0;
                }
            }
            CoordinatorRecord::ConsumerGroupMemberMetadata { key, value } => match value {
                Some(v) => {
                    group_of(self, &key.group);
                    if let Some(g) = self.consumer_groups.get_mut(&key.group) {
                        let mut member = g
                            .members
                            .get(&key.member_id)
                            .cloned()
                            .unwrap_or_else(|| ConsumerMember::new(key.member_id.clone()));
                        member.instance_id = v.instance_id;
                        member.rack_id = v.rack_id;
                        member.client_id = v.client_id;
                        member.client_host = v.client_host;
                        member.subscribed_topic_names = v.subscribed_topic_names.into_iter().collect();
                        member.subscribed_topic_regex = v.subscribed_topic_regex;
                        member.rebalance_timeout_ms = v.rebalance_timeout_ms;
                        member.server_assignor = v.server_assignor;
                        g.put_member(member);
                    }
                }
                None => {
                    if let Some(g) = self.consumer_groups.get_mut(&key.group) {
                        g.remove_partition_epochs(&key.member_id);
                        if let Some(m) = g.members.remove(&key.member_id) {
                            if let Some(instance_id) = m.instance_id {
                                if g.static_members.get(&instance_id) == Some(&key.member_id) {
                                    g.static_members.remove(&instance_id);
                                }
                            }
                        }
                    }
                }
            },
            CoordinatorRecord::ConsumerGroupTargetAssignmentMember { key, value } => match value {
                Some(v) => {
                    group_of(self, &key.group);
                    if let Some(g) = self.consumer_groups.get_mut(&key.group) {
                        g.target.insert(key.member_id, from_topic_partitions(&v.topic_partitions));
                    }
                }
                None => {
                    if let Some(g) = self.consumer_groups.get_mut(&key.group) {
                        g.target.remove(&key.member_id);
                    }
                }
            },
            CoordinatorRecord::ConsumerGroupCurrentMemberAssignment { key, value } => {
                let Some(g) = self.consumer_groups.get_mut(&key.group) else {
                    return;
                };
                let Some(mut member) = g.members.get(&key.member_id).cloned() else {
                    // Kafka writes the subscription first; an assignment alone is stale.
                    return;
                };
                match value {
                    Some(v) => {
                        member.member_epoch = v.member_epoch;
                        member.previous_member_epoch = v.previous_member_epoch;
                        member.state = MemberState::from_value(v.state);
                        member.assigned = from_topic_partitions(&v.assigned_partitions);
                        member.pending_revocation = from_topic_partitions(&v.partitions_pending_revocation);
                    }
                    None => {
                        member.member_epoch = 0;
                        member.previous_member_epoch = -1;
                        member.state = MemberState::Stable;
                        member.assigned.clear();
                        member.pending_revocation.clear();
                    }
                }
                g.put_member(member);
            }
            _ => {}
        }
    }

    /// After a load: every member gets a fresh session, and a member that must revoke
    /// partitions a fresh rebalance timeout (Kafka's `onLoaded`).
    pub(crate) fn on_consumer_groups_loaded(&mut self, now_ms: i64) {
        let session_ms = i64::from(self.config.group_consumer_session_timeout_ms);
        let mut timers = Vec::new();
        for group in self.consumer_groups.values() {
            for member in group.members.values() {
                timers.push((
                    TimerKey::ConsumerSession { group_id: group.group_id.clone(), member_id: member.member_id.clone() },
                    now_ms.saturating_add(session_ms),
                    TimerAction::ExpireConsumerSession,
                ));
                if member.state == MemberState::UnrevokedPartitions {
                    timers.push((
                        TimerKey::ConsumerRebalance {
                            group_id: group.group_id.clone(),
                            member_id: member.member_id.clone(),
                        },
                        now_ms.saturating_add(i64::from(member.rebalance_timeout_ms.max(0))),
                        TimerAction::ExpireConsumerRebalance { member_epoch: member.member_epoch },
                    ));
                }
            }
        }
        for (key, deadline_ms, action) in timers {
            self.timers.schedule(key, deadline_ms, action);
        }
    }
}
