//! `Coordinator`: every classic group and committed offset of one `__consumer_offsets`
//! partition, the timers that drive them, and the entry points that do not belong to a single
//! API family (`tick`, `replay`, `on_loaded`, ListGroups, DescribeGroups, DeleteGroups).
//! JoinGroup/SyncGroup/Heartbeat/LeaveGroup are in `membership.rs`, offsets in `offsets.rs`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::api::{
    DescribedMember, Effect, GroupDescription, GroupListing, GroupState, JoinProtocol, RequestId, Response,
    TopicMetadata,
};
use crate::config::GroupConfig;
use crate::consumer_group::ConsumerGroup;
use crate::error::{ErrorCode, RecordError};
use crate::group::{ClassicGroup, Member};
use crate::offsets::OffsetAndMetadata;
use crate::records::{CoordinatorRecord, GroupMetadataKey, GroupMetadataValue, MemberMetadata, Record};
use crate::timer::{TimerAction, TimerKey, Timers};

/// Makes the random part of new member ids (`<client.id>-<suffix>`, or `<group.instance.id>-`
/// for static members, as Kafka's `ClassicGroup.generateMemberId`).
///
/// Kafka uses a random UUID so that an id handed out before a coordinator failover is never
/// handed out again; the server should plug in UUID v4 for the same reason. Tests use
/// [`SequentialMemberIds`] to stay deterministic.
pub trait MemberIdGenerator: Send {
    fn next_suffix(&mut self) -> String;
}

/// Deterministic suffixes `00000000-0000-0000-0000-000000000001`, `...02`, ...: UUID-shaped, for
/// tests and simulations. Not for production (ids repeat across coordinator restarts).
#[derive(Debug, Default, Clone)]
pub struct SequentialMemberIds {
    next: u64,
}

impl MemberIdGenerator for SequentialMemberIds {
    fn next_suffix(&mut self) -> String {
        self.next += 1;
        format!("00000000-0000-0000-0000-{:012x}", self.next)
    }
}

/// The classic group coordinator of one `__consumer_offsets` partition, as a deterministic state
/// machine. See the crate docs for the effect-ordering contract.
pub struct Coordinator {
    pub(crate) config: GroupConfig,
    pub(crate) groups: BTreeMap<String, ClassicGroup>,
    /// group → (topic, partition) → committed offset. Kept apart from `groups` like Kafka's
    /// `OffsetMetadataManager`, but a group with offsets always exists (a "simple" group).
    pub(crate) offsets: BTreeMap<String, BTreeMap<(String, i32), OffsetAndMetadata>>,
    pub(crate) timers: Timers,
    pub(crate) member_ids: Box<dyn MemberIdGenerator>,
    /// KIP-848 consumer groups; an id is never both here and in `groups`.
    pub(crate) consumer_groups: BTreeMap<String, ConsumerGroup>,
    /// Topic metadata for the server-side assignors, by name ([`Coordinator::set_topics`]).
    pub(crate) topics: BTreeMap<String, TopicMetadata>,
}

impl fmt::Debug for Coordinator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Coordinator")
            .field("config", &self.config)
            .field("groups", &self.groups)
            .field("offsets", &self.offsets)
            .field("timers", &self.timers)
            .field("consumer_groups", &self.consumer_groups)
            .field("topics", &self.topics)
            .finish_non_exhaustive()
    }
}

/// Effects of one call, collected so that every record is persisted before any response.
#[derive(Default)]
pub(crate) struct Out {
    records: Vec<CoordinatorRecord>,
    responses: Vec<(RequestId, Response)>,
}

impl Out {
    pub fn persist(&mut self, record: CoordinatorRecord) {
        self.records.push(record);
    }

    pub fn respond(&mut self, id: RequestId, response: Response) {
        self.responses.push((id, response));
    }

    pub fn has_records(&self) -> bool {
        !self.records.is_empty()
    }

    /// One `Persist` with every record (so the responses wait for all of them), then the
    /// responses in the order they were produced.
    pub fn into_effects(self) -> Vec<Effect> {
        let mut effects = Vec::with_capacity(self.responses.len() + 1);
        if !self.records.is_empty() {
            let mut encoded = Vec::with_capacity(self.records.len());
            for record in &self.records {
                match record.encode() {
                    Ok(record) => encoded.push(record),
                    // Entry points refuse strings a Kafka record cannot hold before changing any
                    // state, so this cannot happen; if it did, persisting the rest is the best
                    // that can be done without panicking.
                    Err(error) => debug_assert!(false, "unencodable record {record:?}: {error}"),
                }
            }
            effects.push(Effect::Persist(encoded));
        }
        effects.extend(self.responses.into_iter().map(|(id, r)| Effect::Respond(id, r)));
        effects
    }
}

impl Coordinator {
    /// A coordinator with deterministic member ids ([`SequentialMemberIds`]); production should
    /// use [`Coordinator::with_member_id_generator`] with random UUIDs.
    pub fn new(config: GroupConfig) -> Self {
        Self::with_member_id_generator(config, Box::new(SequentialMemberIds::default()))
    }

    pub fn with_member_id_generator(config: GroupConfig, member_ids: Box<dyn MemberIdGenerator>) -> Self {
        Self {
            config,
            groups: BTreeMap::new(),
            offsets: BTreeMap::new(),
            timers: Timers::default(),
            member_ids,
            consumer_groups: BTreeMap::new(),
            topics: BTreeMap::new(),
        }
    }

    pub fn config(&self) -> &GroupConfig {
        &self.config
    }

    /// When `tick` must run next; `None` when nothing is scheduled.
    pub fn next_deadline_ms(&self) -> Option<i64> {
        self.timers.next_deadline_ms()
    }

    /// Fires every deadline at or before `now_ms`: session expiry (member removed, rebalance),
    /// join completion (initial delay or rebalance timeout), sync expiry, and the periodic
    /// offset/group expiry. A deadline that a firing timer sets at or before `now_ms` again
    /// waits for the next `tick`, so one call always terminates.
    pub fn tick(&mut self, now_ms: i64) -> Vec<Effect> {
        self.ensure_cleanup_scheduled(now_ms);
        let mut out = Out::default();
        let mut fired = BTreeSet::new();
        while let Some((key, action)) = self.timers.pop_due(now_ms, &fired) {
            fired.insert(key.clone());
            match (key, action) {
                (TimerKey::Heartbeat { group_id, member_id }, _) => {
                    self.expire_heartbeat(&group_id, &member_id, now_ms, &mut out)
                }
                (TimerKey::Join { group_id }, TimerAction::InitialJoin { delay_ms, remaining_ms }) => {
                    self.try_complete_initial_rebalance(&group_id, delay_ms, remaining_ms, now_ms, &mut out)
                }
                (TimerKey::Join { group_id }, _) => self.complete_join_by_id(&group_id, now_ms, &mut out),
                (TimerKey::Sync { group_id }, TimerAction::ExpireSync { generation_id }) => {
                    self.expire_pending_sync(&group_id, generation_id, now_ms, &mut out)
                }
                (TimerKey::Sync { .. }, _) => {}
                (TimerKey::ConsumerSession { group_id, member_id }, _) => {
                    self.fence_consumer_member(&group_id, &member_id, &mut out)
                }
                (
                    TimerKey::ConsumerRebalance { group_id, member_id },
                    TimerAction::ExpireConsumerRebalance { member_epoch },
                ) => self.expire_consumer_rebalance(&group_id, &member_id, member_epoch, &mut out),
                (TimerKey::ConsumerRebalance { .. }, _) => {}
                (TimerKey::GroupCleanup, _) => {
                    self.cleanup_group_metadata(now_ms, &mut out);
                    self.timers.schedule(
                        TimerKey::GroupCleanup,
                        now_ms.saturating_add(self.config.offsets_retention_check_interval_ms),
                        TimerAction::GroupCleanup,
                    );
                }
            }
        }
        out.into_effects()
    }

    /// Applies one record read from `__consumer_offsets`, in log order, to rebuild the state on
    /// load (Kafka's `GroupMetadataManager.replay` / `OffsetMetadataManager.replay`): a later
    /// record for a key wins, a tombstone deletes. Groups come back Stable (with members) or
    /// Empty, with no timers; call [`Coordinator::on_loaded`] after the last record.
    ///
    /// Only records of non-transactional batches belong here. KIP-848 consumer group records
    /// (types 3, 5–8) rebuild consumer groups; other types (4, share groups) give
    /// [`RecordError::UnknownRecordType`]; Kafka's loader logs and skips them.
    pub fn replay(&mut self, record: &Record) -> Result<(), RecordError> {
        match CoordinatorRecord::decode(&record.key, record.value.as_deref())? {
            CoordinatorRecord::OffsetCommit { key, value: Some(value) } => {
                // Offsets without group metadata belong to a "simple" group (manual commits).
                if !self.consumer_groups.contains_key(&key.group) {
                    self.groups.entry(key.group.clone()).or_insert_with(|| ClassicGroup::new(key.group.clone(), None));
                }
                self.offsets
                    .entry(key.group)
                    .or_default()
                    .insert((key.topic, key.partition), OffsetAndMetadata::from_record(&value));
            }
            CoordinatorRecord::OffsetCommit { key, value: None } => {
                if let Some(offsets) = self.offsets.get_mut(&key.group) {
                    offsets.remove(&(key.topic, key.partition));
                    if offsets.is_empty() {
                        self.offsets.remove(&key.group);
                    }
                }
            }
            CoordinatorRecord::GroupMetadata { key, value: Some(value) } => {
                let group = group_from_record(key.group.clone(), value);
                self.groups.insert(key.group, group);
            }
            CoordinatorRecord::GroupMetadata { key, value: None } => {
                self.groups.remove(&key.group);
                if !self.consumer_groups.contains_key(&key.group) {
                    self.timers.cancel_group(&key.group);
                }
            }
            consumer => self.replay_consumer(consumer),
        }
        Ok(())
    }

    /// Finishes a load (Kafka's `onLoaded`): every loaded member gets a session deadline, a
    /// group over `group.max.size` rebalances, and the expiry sweep is scheduled.
    pub fn on_loaded(&mut self, now_ms: i64) -> Vec<Effect> {
        self.ensure_cleanup_scheduled(now_ms);
        let mut out = Out::default();
        self.on_consumer_groups_loaded(now_ms);
        let group_ids: Vec<String> = self.groups.keys().cloned().collect();
        for group_id in group_ids {
            let Some(group) = self.groups.get(&group_id) else {
                continue;
            };
            let sessions: Vec<(String, i32)> =
                group.members.values().map(|m| (m.member_id.clone(), m.session_timeout_ms)).collect();
            let oversized = group.members.len() > self.config.group_max_size;
            for (member_id, session_timeout_ms) in sessions {
                self.schedule_heartbeat(&group_id, &member_id, session_timeout_ms, now_ms);
            }
            if oversized {
                // The limit may have been lowered: rebalance so the extra members drop out.
                self.with_group(&group_id, |this, group| this.prepare_rebalance(group, now_ms, &mut out));
            }
        }
        out.into_effects()
    }

    /// ListGroups: every group whose state is in `states_filter` (all when it is empty),
    /// classic and consumer (KIP-848) groups alike, ordered by group id.
    pub fn list_groups(&self, states_filter: &[GroupState]) -> Vec<GroupListing> {
        let mut listings: Vec<GroupListing> = self
            .groups
            .values()
            .filter(|g| states_filter.is_empty() || states_filter.contains(&g.state))
            .map(|g| GroupListing {
                group_id: g.group_id.clone(),
                protocol_type: g.protocol_type.clone().unwrap_or_default(),
                state: g.state,
                group_type: "classic",
            })
            .chain(self.list_consumer_groups(states_filter))
            .collect();
        listings.sort_by(|a, b| a.group_id.cmp(&b.group_id));
        listings
    }

    /// DescribeGroups for one group, as Kafka's `describeGroups`: member metadata and the
    /// protocol only when Stable; an unknown group is Dead with no error.
    pub fn describe_group(&self, group_id: &str) -> GroupDescription {
        if let Some(description) = self.describe_consumer_group_as_classic(group_id) {
            return description;
        }
        let Some(group) = self.groups.get(group_id) else {
            return GroupDescription {
                error_code: ErrorCode::NONE,
                group_id: group_id.to_owned(),
                state: GroupState::Dead,
                protocol_type: String::new(),
                protocol_data: String::new(),
                members: Vec::new(),
            };
        };
        let stable = group.state == GroupState::Stable;
        let protocol = if stable { group.protocol_name.clone() } else { None };
        GroupDescription {
            error_code: ErrorCode::NONE,
            group_id: group.group_id.clone(),
            state: group.state,
            protocol_type: group.protocol_type.clone().unwrap_or_default(),
            protocol_data: protocol.clone().unwrap_or_default(),
            members: group
                .members
                .values()
                .map(|m| DescribedMember {
                    member_id: m.member_id.clone(),
                    group_instance_id: m.group_instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    member_metadata: if stable { m.metadata(protocol.as_deref()) } else { Default::default() },
                    member_assignment: m.assignment.clone(),
                })
                .collect(),
        }
    }

    /// DeleteGroups: only Empty groups can go (NON_EMPTY_GROUP otherwise, GROUP_ID_NOT_FOUND
    /// for unknown ones); their offsets and metadata get tombstones. Send the response after
    /// the returned `Persist`.
    pub fn delete_groups(&mut self, group_ids: &[String], now_ms: i64) -> (Vec<(String, ErrorCode)>, Vec<Effect>) {
        self.ensure_cleanup_scheduled(now_ms);
        let mut out = Out::default();
        let mut results = Vec::with_capacity(group_ids.len());
        for group_id in group_ids {
            if self.consumer_groups.contains_key(group_id) {
                let error = self.delete_consumer_group(group_id, &mut out);
                results.push((group_id.clone(), error));
                continue;
            }
            let error = match self.groups.get(group_id) {
                None | Some(ClassicGroup { state: GroupState::Dead, .. }) => ErrorCode::GROUP_ID_NOT_FOUND,
                Some(group) if group.state != GroupState::Empty => ErrorCode::NON_EMPTY_GROUP,
                Some(_) => {
                    self.delete_all_offsets(group_id, &mut out);
                    self.delete_group(group_id, &mut out);
                    ErrorCode::NONE
                }
            };
            results.push((group_id.clone(), error));
        }
        (results, out.into_effects())
    }

    /// Removes a group and writes its tombstone.
    pub(crate) fn delete_group(&mut self, group_id: &str, out: &mut Out) {
        self.groups.remove(group_id);
        self.timers.cancel_group(group_id);
        out.persist(CoordinatorRecord::GroupMetadata {
            key: GroupMetadataKey { group: group_id.to_owned() },
            value: None,
        });
    }

    pub(crate) fn ensure_cleanup_scheduled(&mut self, now_ms: i64) {
        if !self.timers.contains(&TimerKey::GroupCleanup) {
            self.timers.schedule(
                TimerKey::GroupCleanup,
                now_ms.saturating_add(self.config.offsets_retention_check_interval_ms),
                TimerAction::GroupCleanup,
            );
        }
    }

    pub(crate) fn schedule_heartbeat(&mut self, group_id: &str, member_id: &str, timeout_ms: i32, now_ms: i64) {
        schedule_heartbeat(&mut self.timers, group_id, member_id, timeout_ms, now_ms);
    }
}

pub(crate) fn schedule_heartbeat(timers: &mut Timers, group_id: &str, member_id: &str, timeout_ms: i32, now_ms: i64) {
    timers.schedule(
        TimerKey::Heartbeat { group_id: group_id.to_owned(), member_id: member_id.to_owned() },
        now_ms.saturating_add(i64::from(timeout_ms)),
        TimerAction::ExpireHeartbeat,
    );
}

/// The GroupMetadata record of a group (Kafka's `newGroupMetadataRecord`): members with their
/// metadata for the selected protocol and their current assignment.
pub(crate) fn group_metadata_record(group: &ClassicGroup) -> CoordinatorRecord {
    let protocol = group.protocol_name.as_deref();
    CoordinatorRecord::GroupMetadata {
        key: GroupMetadataKey { group: group.group_id.clone() },
        value: Some(GroupMetadataValue {
            protocol_type: group.protocol_type.clone().unwrap_or_default(),
            generation: group.generation_id,
            protocol: group.protocol_name.clone(),
            leader: group.leader_id.clone(),
            current_state_timestamp_ms: group.current_state_timestamp_ms.unwrap_or(-1),
            members: group
                .members
                .values()
                .map(|m| MemberMetadata {
                    member_id: m.member_id.clone(),
                    group_instance_id: m.group_instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    rebalance_timeout_ms: m.rebalance_timeout_ms,
                    session_timeout_ms: m.session_timeout_ms,
                    subscription: m.metadata(protocol),
                    assignment: m.assignment.clone(),
                })
                .collect(),
        }),
    }
}

/// The empty-group record Kafka writes when a JoinGroup creates a group but nothing else is
/// written (`newEmptyGroupMetadataRecord`), so the group survives a failover.
pub(crate) fn empty_group_metadata_record(group: &ClassicGroup) -> CoordinatorRecord {
    CoordinatorRecord::GroupMetadata {
        key: GroupMetadataKey { group: group.group_id.clone() },
        value: Some(GroupMetadataValue {
            protocol_type: String::new(),
            generation: 0,
            protocol: None,
            leader: None,
            current_state_timestamp_ms: group.current_state_timestamp_ms.unwrap_or(-1),
            members: Vec::new(),
        }),
    }
}

/// Rebuilds a group from its record as Kafka's `replay(GroupMetadataKey, GroupMetadataValue)`:
/// Stable with members, Empty without; each member supports just the selected protocol.
fn group_from_record(group_id: String, value: GroupMetadataValue) -> ClassicGroup {
    let mut group = ClassicGroup::new(group_id, None);
    group.state = if value.members.is_empty() { GroupState::Empty } else { GroupState::Stable };
    group.generation_id = value.generation;
    group.protocol_type = Some(value.protocol_type.clone()).filter(|t| !t.is_empty());
    group.protocol_name = value.protocol.clone();
    group.leader_id = value.leader.clone();
    group.current_state_timestamp_ms = Some(value.current_state_timestamp_ms).filter(|ts| *ts != -1);
    for m in value.members {
        let member = Member {
            member_id: m.member_id,
            group_instance_id: m.group_instance_id,
            client_id: m.client_id,
            client_host: m.client_host,
            // Records before v1 have no rebalance timeout: Kafka uses the session timeout.
            rebalance_timeout_ms: if m.rebalance_timeout_ms == -1 {
                m.session_timeout_ms
            } else {
                m.rebalance_timeout_ms
            },
            session_timeout_ms: m.session_timeout_ms,
            protocol_type: value.protocol_type.clone(),
            protocols: vec![JoinProtocol {
                name: value.protocol.clone().unwrap_or_default(),
                metadata: m.subscription,
            }],
            assignment: m.assignment,
            awaiting_join: None,
            awaiting_sync: None,
            is_new: false,
        };
        if let Some(instance_id) = &member.group_instance_id {
            group.static_members.insert(instance_id.clone(), member.member_id.clone());
        }
        group.members.insert(member.member_id.clone(), member);
    }
    group.subscribed_topics = group.compute_subscribed_topics();
    group
}
