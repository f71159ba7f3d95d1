//! Committed offsets (Kafka 4.x `OffsetMetadataManager`): OffsetCommit validation against the
//! classic group, OffsetFetch, DeleteGroups' offset tombstones and the periodic expiry of
//! offsets (KIP-211: an Empty group's offsets expire `offsets.retention.ms` after it emptied).

use std::collections::BTreeMap;

use crate::api::{
    Effect, GroupState, OffsetCommit, OffsetCommitPartition, OffsetCommitResponse, OffsetCommitResponsePartition,
    OffsetCommitResponseTopic, OffsetDelete, OffsetDeleteResponse, OffsetDeleteResponsePartition,
    OffsetDeleteResponseTopic, OffsetFetch, OffsetFetchPartition, OffsetFetchResult, OffsetFetchResultTopic, RequestId,
    Response,
};
use crate::coordinator::{Coordinator, Out};
use crate::error::ErrorCode;
use crate::group::ClassicGroup;
use crate::membership::MAX_STRING_BYTES;
use crate::records::{CoordinatorRecord, OffsetCommitKey, OffsetCommitValue};

/// One committed offset (Kafka's `OffsetAndMetadata`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OffsetAndMetadata {
    pub committed_offset: i64,
    /// -1 when unknown.
    pub leader_epoch: i32,
    pub metadata: String,
    pub commit_timestamp_ms: i64,
    /// Only for OffsetCommit v2–v4 with an explicit `retention_time_ms` (record version 1).
    pub expire_timestamp_ms: Option<i64>,
}

impl OffsetAndMetadata {
    pub fn from_record(value: &OffsetCommitValue) -> Self {
        Self {
            committed_offset: value.offset,
            leader_epoch: value.leader_epoch,
            metadata: value.metadata.clone(),
            commit_timestamp_ms: value.commit_timestamp_ms,
            expire_timestamp_ms: Some(value.expire_timestamp_ms).filter(|ts| *ts != -1),
        }
    }

    fn to_record(&self) -> OffsetCommitValue {
        OffsetCommitValue {
            offset: self.committed_offset,
            leader_epoch: self.leader_epoch,
            metadata: self.metadata.clone(),
            commit_timestamp_ms: self.commit_timestamp_ms,
            expire_timestamp_ms: self.expire_timestamp_ms.unwrap_or(-1),
        }
    }
}

fn offset_record(group_id: &str, topic: &str, partition: i32, value: Option<OffsetCommitValue>) -> CoordinatorRecord {
    CoordinatorRecord::OffsetCommit {
        key: OffsetCommitKey { group: group_id.to_owned(), topic: topic.to_owned(), partition },
        value,
    }
}

impl Coordinator {
    /// OffsetCommit (any version 2–10). The response follows the records of the accepted
    /// partitions.
    pub fn commit_offsets(&mut self, id: RequestId, request: OffsetCommit, now_ms: i64) -> Vec<Effect> {
        self.ensure_cleanup_scheduled(now_ms);
        let mut out = Out::default();
        let response = self.commit(&request, now_ms, &mut out);
        out.respond(id, Response::OffsetCommit(response));
        out.into_effects()
    }

    fn commit(&mut self, request: &OffsetCommit, now_ms: i64, out: &mut Out) -> OffsetCommitResponse {
        let all_partitions = |error: ErrorCode| OffsetCommitResponse {
            topics: request
                .topics
                .iter()
                .map(|t| OffsetCommitResponseTopic {
                    name: t.name.clone(),
                    partitions: t
                        .partitions
                        .iter()
                        .map(|p| OffsetCommitResponsePartition {
                            partition_index: p.partition_index,
                            error_code: error,
                        })
                        .collect(),
                })
                .collect(),
        };
        if let Err(error) = self.check_commit(request, now_ms) {
            return all_partitions(error);
        }

        // A commit proves the member alive in Stable and PreparingRebalance (Kafka does the same).
        if let Some(group) = self.groups.get(&request.group_id) {
            if matches!(group.state, GroupState::Stable | GroupState::PreparingRebalance) {
                if let Some(member) = group.members.get(&request.member_id) {
                    let session_timeout_ms = member.session_timeout_ms;
                    self.schedule_heartbeat(&request.group_id, &request.member_id, session_timeout_ms, now_ms);
                }
            }
        }

        let expire_timestamp_ms =
            (request.retention_time_ms != -1).then(|| now_ms.saturating_add(request.retention_time_ms));
        let mut topics = Vec::with_capacity(request.topics.len());
        for topic in &request.topics {
            let mut partitions = Vec::with_capacity(topic.partitions.len());
            for partition in &topic.partitions {
                let error = match self.offset_to_commit(&topic.name, partition, now_ms, expire_timestamp_ms) {
                    Ok(offset) => {
                        out.persist(offset_record(
                            &request.group_id,
                            &topic.name,
                            partition.partition_index,
                            Some(offset.to_record()),
                        ));
                        self.offsets
                            .entry(request.group_id.clone())
                            .or_default()
                            .insert((topic.name.clone(), partition.partition_index), offset);
                        ErrorCode::NONE
                    }
                    Err(error) => error,
                };
                partitions.push(OffsetCommitResponsePartition {
                    partition_index: partition.partition_index,
                    error_code: error,
                });
            }
            topics.push(OffsetCommitResponseTopic { name: topic.name.clone(), partitions });
        }
        OffsetCommitResponse { topics }
    }

    /// Kafka's offset commit validation: the group and the committing member.
    fn check_commit(&mut self, request: &OffsetCommit, now_ms: i64) -> Result<(), ErrorCode> {
        // Kafka accepts the empty group id here (only null is INVALID_GROUP_ID); a key that no
        // record could hold is refused.
        if request.group_id.len() > MAX_STRING_BYTES {
            return Err(ErrorCode::INVALID_GROUP_ID);
        }
        if let Some(validation) = self.validate_consumer_offset_commit(request) {
            validation?;
        } else {
            match self.groups.get(&request.group_id) {
                None if request.generation_id < 0 => {
                    // A consumer without group management (or the admin client) commits: Kafka
                    // creates a "simple" group, Empty and without protocol type.
                    let group = ClassicGroup::new(request.group_id.clone(), Some(now_ms));
                    self.groups.insert(request.group_id.clone(), group);
                }
                // OffsetCommit v9+ says so; older clients only understand ILLEGAL_GENERATION.
                None if request.version >= 9 => return Err(ErrorCode::GROUP_ID_NOT_FOUND),
                None => return Err(ErrorCode::ILLEGAL_GENERATION),
                Some(group) => {
                    validate_offset_commit(group, request)?;
                }
            }
        }
        Ok(())
    }

    /// The offset a commit of `partition` of `topic` stores, or why that partition is refused
    /// (Kafka's per-partition checks).
    fn offset_to_commit(
        &self,
        topic: &str,
        partition: &OffsetCommitPartition,
        now_ms: i64,
        expire_timestamp_ms: Option<i64>,
    ) -> Result<OffsetAndMetadata, ErrorCode> {
        let metadata = partition.committed_metadata.clone().unwrap_or_default();
        // `String.length()` in Kafka: UTF-16 code units.
        if metadata.encode_utf16().count() > self.config.offset_metadata_max_bytes || metadata.len() > MAX_STRING_BYTES
        {
            return Err(ErrorCode::OFFSET_METADATA_TOO_LARGE);
        }
        if topic.len() > MAX_STRING_BYTES {
            // No such topic can exist (names are at most 249 characters).
            return Err(ErrorCode::UNKNOWN_TOPIC_OR_PARTITION);
        }
        Ok(OffsetAndMetadata {
            committed_offset: partition.committed_offset,
            leader_epoch: partition.committed_leader_epoch,
            metadata,
            commit_timestamp_ms: now_ms,
            expire_timestamp_ms,
        })
    }

    /// TxnOffsetCommit: validates like OffsetCommit and returns the offset records to write as
    /// part of the producer's transaction, without applying them; they become committed offsets
    /// when the commit marker arrives ([`Coordinator::replay`] each), and are dropped on abort.
    pub fn transactional_offset_records(
        &mut self,
        request: &OffsetCommit,
        now_ms: i64,
    ) -> (OffsetCommitResponse, Vec<(String, i32, crate::Record)>) {
        let mut records = Vec::new();
        let checked = self.check_commit(request, now_ms);
        let topics = request
            .topics
            .iter()
            .map(|topic| OffsetCommitResponseTopic {
                name: topic.name.clone(),
                partitions: topic
                    .partitions
                    .iter()
                    .map(|partition| {
                        let offset = checked.and_then(|()| self.offset_to_commit(&topic.name, partition, now_ms, None));
                        let error = match offset {
                            Err(error) => error,
                            Ok(offset) => {
                                let record = offset_record(
                                    &request.group_id,
                                    &topic.name,
                                    partition.partition_index,
                                    Some(offset.to_record()),
                                );
                                match record.encode() {
                                    Ok(record) => {
                                        records.push((topic.name.clone(), partition.partition_index, record));
                                        ErrorCode::NONE
                                    }
                                    Err(_) => ErrorCode::INVALID_REQUEST,
                                }
                            }
                        };
                        OffsetCommitResponsePartition { partition_index: partition.partition_index, error_code: error }
                    })
                    .collect(),
            })
            .collect();
        (OffsetCommitResponse { topics }, records)
    }

    /// Every committed offset of every group, as (group, topic, partition, offset).
    pub fn committed_offsets(&self) -> Vec<(String, String, i32, i64)> {
        self.offsets
            .iter()
            .flat_map(|(group, offsets)| {
                offsets
                    .iter()
                    .map(move |((topic, partition), o)| (group.clone(), topic.clone(), *partition, o.committed_offset))
            })
            .collect()
    }

    /// OffsetFetch for one group. An unknown group is not an error: every requested partition
    /// reads -1 (and "all partitions" reads nothing), as Kafka. Offsets pending in an open
    /// transaction are the server's to report (UNSTABLE_OFFSET_COMMIT, `groups.rs`).
    pub fn fetch_offsets(&self, request: &OffsetFetch) -> OffsetFetchResult {
        let group_offsets =
            if self.groups.contains_key(&request.group_id) || self.consumer_groups.contains_key(&request.group_id) {
                self.offsets.get(&request.group_id)
            } else {
                None
            };
        let partition = |topic: &str, partition_index: i32| match group_offsets
            .and_then(|o| o.get(&(topic.to_owned(), partition_index)))
        {
            Some(offset) => OffsetFetchPartition {
                partition_index,
                committed_offset: offset.committed_offset,
                committed_leader_epoch: offset.leader_epoch,
                metadata: offset.metadata.clone(),
                error_code: ErrorCode::NONE,
            },
            None => OffsetFetchPartition {
                partition_index,
                committed_offset: -1,
                committed_leader_epoch: -1,
                metadata: String::new(),
                error_code: ErrorCode::NONE,
            },
        };
        let topics = match &request.topics {
            Some(topics) => topics
                .iter()
                .map(|t| OffsetFetchResultTopic {
                    name: t.name.clone(),
                    partitions: t.partition_indexes.iter().map(|p| partition(&t.name, *p)).collect(),
                })
                .collect(),
            None => {
                let mut by_topic: BTreeMap<&str, Vec<OffsetFetchPartition>> = BTreeMap::new();
                for (topic, partition_index) in group_offsets.into_iter().flat_map(|o| o.keys()) {
                    by_topic.entry(topic).or_default().push(partition(topic, *partition_index));
                }
                by_topic
                    .into_iter()
                    .map(|(name, partitions)| OffsetFetchResultTopic { name: name.to_owned(), partitions })
                    .collect()
            }
        };
        OffsetFetchResult { group_id: request.group_id.clone(), error_code: ErrorCode::NONE, topics }
    }

    /// OffsetDelete (Kafka's `OffsetMetadataManager.deleteOffsets`): the group must exist
    /// (GROUP_ID_NOT_FOUND); a classic group with members must use the "consumer" protocol
    /// (NON_EMPTY_GROUP otherwise); partitions of topics the group subscribes to get
    /// GROUP_SUBSCRIBED_TO_TOPIC, the others lose their committed offset (a tombstone when one
    /// exists) and get NONE. Send the response after the returned `Persist`; if it fails, send
    /// [`OffsetDeleteResponse::with_error`].
    pub fn delete_offsets(&mut self, request: &OffsetDelete, now_ms: i64) -> (OffsetDeleteResponse, Vec<Effect>) {
        self.ensure_cleanup_scheduled(now_ms);
        let mut out = Out::default();
        let response = self.delete_offsets_inner(request, &mut out);
        (response, out.into_effects())
    }

    fn delete_offsets_inner(&mut self, request: &OffsetDelete, out: &mut Out) -> OffsetDeleteResponse {
        let error = |error_code| OffsetDeleteResponse { error_code, topics: Vec::new() };
        if request.group_id.is_empty() || request.group_id.len() > MAX_STRING_BYTES {
            return error(ErrorCode::INVALID_GROUP_ID);
        }
        // Kafka's `Group.isSubscribedToTopic` per group type.
        let subscribed: Box<dyn Fn(&str) -> bool + '_> =
            if let Some(group) = self.consumer_groups.get(&request.group_id) {
                Box::new(move |topic| group.is_subscribed_to_topic(topic))
            } else {
                match self.groups.get(&request.group_id) {
                    None | Some(ClassicGroup { state: GroupState::Dead, .. }) => {
                        return error(ErrorCode::GROUP_ID_NOT_FOUND)
                    }
                    // Kafka's `ClassicGroup.validateOffsetDelete`.
                    Some(group) if group.state != GroupState::Empty && !group.uses_consumer_protocol() => {
                        return error(ErrorCode::NON_EMPTY_GROUP)
                    }
                    Some(group) => Box::new(move |topic| group.is_subscribed_to_topic(topic)),
                }
            };
        let mut topics = Vec::with_capacity(request.topics.len());
        let mut deleted = Vec::new();
        for topic in &request.topics {
            let subscribed_to_topic = subscribed(&topic.name);
            let partitions = topic
                .partition_indexes
                .iter()
                .map(|&partition_index| {
                    let error_code = if subscribed_to_topic {
                        ErrorCode::GROUP_SUBSCRIBED_TO_TOPIC
                    } else {
                        deleted.push((topic.name.clone(), partition_index));
                        ErrorCode::NONE
                    };
                    OffsetDeleteResponsePartition { partition_index, error_code }
                })
                .collect();
            topics.push(OffsetDeleteResponseTopic { name: topic.name.clone(), partitions });
        }
        drop(subscribed);
        if let Some(offsets) = self.offsets.get_mut(&request.group_id) {
            for key in deleted {
                // Only offsets that exist get a tombstone; the others still succeed.
                if offsets.remove(&key).is_some() {
                    out.persist(offset_record(&request.group_id, &key.0, key.1, None));
                }
            }
            if offsets.is_empty() {
                self.offsets.remove(&request.group_id);
            }
        }
        OffsetDeleteResponse { error_code: ErrorCode::NONE, topics }
    }

    /// Tombstones for every offset of a group (DeleteGroups).
    pub(crate) fn delete_all_offsets(&mut self, group_id: &str, out: &mut Out) {
        for (topic, partition) in self.offsets.remove(group_id).into_iter().flat_map(|o| o.into_keys()) {
            out.persist(offset_record(group_id, &topic, partition, None));
        }
    }

    /// Kafka's `cleanupGroupMetadata`: expire offsets, then delete Empty groups left with none.
    pub(crate) fn cleanup_group_metadata(&mut self, now_ms: i64, out: &mut Out) {
        let group_ids: Vec<String> = self.groups.keys().cloned().collect();
        for group_id in group_ids {
            let all_offsets_expired = self.cleanup_expired_offsets(&group_id, now_ms, out);
            let is_empty = self.groups.get(&group_id).is_some_and(|g| g.state == GroupState::Empty);
            if all_offsets_expired && is_empty {
                self.delete_group(&group_id, out);
            }
        }
        // KIP-848 consumer groups: offsets of topics nobody subscribes to expire from their
        // commit (Kafka's `ConsumerGroup.offsetExpirationCondition`); an empty group left
        // without offsets is deleted.
        let group_ids: Vec<String> = self.consumer_groups.keys().cloned().collect();
        for group_id in group_ids {
            let all_offsets_expired = self.cleanup_expired_consumer_offsets(&group_id, now_ms, out);
            let is_empty = self.consumer_groups.get(&group_id).is_some_and(|g| g.members.is_empty());
            if all_offsets_expired && is_empty {
                self.remove_consumer_group(&group_id, out);
            }
        }
    }

    fn cleanup_expired_consumer_offsets(&mut self, group_id: &str, now_ms: i64, out: &mut Out) -> bool {
        let Some(group) = self.consumer_groups.get(group_id) else {
            return false;
        };
        let Some(offsets) = self.offsets.get_mut(group_id) else {
            return true;
        };
        let retention_ms = self.config.offsets_retention_ms;
        let mut all_expired = true;
        offsets.retain(|(topic, partition), offset| {
            if group.is_subscribed_to_topic(topic) {
                all_expired = false;
                return true;
            }
            let expired = match offset.expire_timestamp_ms {
                Some(expire_timestamp_ms) => now_ms >= expire_timestamp_ms,
                None => now_ms.saturating_sub(offset.commit_timestamp_ms) >= retention_ms,
            };
            if expired {
                out.persist(offset_record(group_id, topic, *partition, None));
                false
            } else {
                all_expired = false;
                true
            }
        });
        if offsets.is_empty() {
            self.offsets.remove(group_id);
        }
        all_expired
    }

    /// Kafka's `cleanupExpiredOffsets`. Returns whether the group has no offsets left.
    fn cleanup_expired_offsets(&mut self, group_id: &str, now_ms: i64, out: &mut Out) -> bool {
        let Some(group) = self.groups.get(group_id) else {
            return false;
        };
        let Some(offsets) = self.offsets.get_mut(group_id) else {
            return true;
        };
        let Some(base) = offset_expiration_base(group) else {
            return false;
        };
        let retention_ms = self.config.offsets_retention_ms;
        let mut all_expired = true;
        offsets.retain(|(topic, partition), offset| {
            if group.is_subscribed_to_topic(topic) {
                all_expired = false;
                return true;
            }
            let expired = match offset.expire_timestamp_ms {
                // Commits with an explicit retention (OffsetCommit v2–v4) keep the old rule.
                Some(expire_timestamp_ms) => now_ms >= expire_timestamp_ms,
                None => now_ms.saturating_sub(base.timestamp_ms(offset)) >= retention_ms,
            };
            if expired {
                out.persist(offset_record(group_id, topic, *partition, None));
                false
            } else {
                all_expired = false;
                true
            }
        });
        if offsets.is_empty() {
            self.offsets.remove(group_id);
        }
        all_expired
    }
}

/// From when an offset's retention runs (Kafka's `OffsetExpirationCondition` base timestamp).
#[derive(Debug, Clone, Copy)]
enum ExpirationBase {
    /// From when the group became Empty (KIP-211); from the commit for groups loaded from
    /// records without that timestamp.
    EmptiedAt(Option<i64>),
    /// From the last commit.
    CommitTimestamp,
}

impl ExpirationBase {
    fn timestamp_ms(self, offset: &OffsetAndMetadata) -> i64 {
        match self {
            ExpirationBase::EmptiedAt(Some(emptied_at_ms)) => emptied_at_ms,
            ExpirationBase::EmptiedAt(None) | ExpirationBase::CommitTimestamp => offset.commit_timestamp_ms,
        }
    }
}

/// Kafka's `ClassicGroup.offsetExpirationCondition`: `None` when no offset of the group may
/// expire now.
fn offset_expiration_base(group: &ClassicGroup) -> Option<ExpirationBase> {
    match (&group.protocol_type, group.state) {
        (Some(_), GroupState::Empty) => Some(ExpirationBase::EmptiedAt(group.current_state_timestamp_ms)),
        // A Stable consumer group whose subscriptions are known: offsets of topics nobody
        // subscribes to any more expire from their commit (KIP-496).
        (Some(_), GroupState::Stable) if group.uses_consumer_protocol() && group.subscribed_topics.is_some() => {
            Some(ExpirationBase::CommitTimestamp)
        }
        (Some(_), _) => None,
        // A simple group (manual commits only).
        (None, _) => Some(ExpirationBase::CommitTimestamp),
    }
}

/// Kafka's `ClassicGroup.validateOffsetCommit` for non-transactional commits.
fn validate_offset_commit(group: &ClassicGroup, request: &OffsetCommit) -> Result<(), ErrorCode> {
    if group.state == GroupState::Dead {
        return Err(ErrorCode::COORDINATOR_NOT_AVAILABLE);
    }
    // Generation -1: the admin client or a consumer without group management. Allowed while
    // nobody owns the partitions.
    if request.generation_id < 0 && group.state == GroupState::Empty {
        return Ok(());
    }
    if request.generation_id >= 0 || !request.member_id.is_empty() || request.group_instance_id.is_some() {
        group.validate_member(&request.member_id, request.group_instance_id.as_deref())?;
        if request.generation_id != group.generation_id {
            return Err(ErrorCode::ILLEGAL_GENERATION);
        }
    } else if group.state != GroupState::Empty {
        return Err(ErrorCode::UNKNOWN_MEMBER_ID);
    }
    // The member has the new generation from its JoinGroup response but no assignment yet: it
    // must not commit for partitions it may be about to lose.
    if group.state == GroupState::CompletingRebalance {
        return Err(ErrorCode::REBALANCE_IN_PROGRESS);
    }
    Ok(())
}
