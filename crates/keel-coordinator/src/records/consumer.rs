//! The KIP-848 consumer group records (Kafka 4.x `group-coordinator/src/main/resources/common/
//! message/ConsumerGroup*.json`), every value at version 0 (flexible: compact strings and
//! arrays, tagged fields). Keys are non-flexible and start with their record type:
//!
//! | type | key                                   | value                                          |
//! |------|---------------------------------------|------------------------------------------------|
//! | 3    | ConsumerGroupMetadataKey: group       | Epoch int32; tag 0 MetadataHash int64          |
//! | 4    | ConsumerGroupPartitionMetadataKey     | not written by Keel (deprecated in Kafka 4.1)  |
//! | 5    | ConsumerGroupMemberMetadataKey: group, member | InstanceId?, RackId?, ClientId, ClientHost, SubscribedTopicNames [string], SubscribedTopicRegex?, RebalanceTimeoutMs int32, ServerAssignor? (tag 0 ClassicMemberMetadata skipped) |
//! | 6    | ConsumerGroupTargetAssignmentMetadataKey: group | AssignmentEpoch int32                |
//! | 7    | ConsumerGroupTargetAssignmentMemberKey: group, member | TopicPartitions [TopicId uuid, Partitions [int32]] |
//! | 8    | ConsumerGroupCurrentMemberAssignmentKey: group, member | MemberEpoch, PreviousMemberEpoch int32, State int8, AssignedPartitions, PartitionsPendingRevocation |
//!
//! Every one of them has tombstones (a removed member or a deleted group).

use super::{Reader, RecordError, Writer};

pub const CONSUMER_GROUP_METADATA_TYPE: i16 = 3;
pub const CONSUMER_GROUP_PARTITION_METADATA_TYPE: i16 = 4;
pub const CONSUMER_GROUP_MEMBER_METADATA_TYPE: i16 = 5;
pub const CONSUMER_GROUP_TARGET_ASSIGNMENT_METADATA_TYPE: i16 = 6;
pub const CONSUMER_GROUP_TARGET_ASSIGNMENT_MEMBER_TYPE: i16 = 7;
pub const CONSUMER_GROUP_CURRENT_MEMBER_ASSIGNMENT_TYPE: i16 = 8;

/// Key of the group-level KIP-848 records (types 3, 4 and 6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerGroupKey {
    pub group: String,
}

/// Key of the member-level KIP-848 records (types 5, 7 and 8).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerGroupMemberKey {
    pub group: String,
    pub member_id: String,
}

/// Type 3: the group epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerGroupMetadataValue {
    pub epoch: i32,
    /// Tagged field 0 (Kafka 4.1, KIP-1101); 0 = absent. Keel writes its own hash of the
    /// subscribed topics' metadata, which a Kafka broker would merely find different (and
    /// rebalance once).
    pub metadata_hash: i64,
}

/// Type 5: a member's subscription and client details.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerGroupMemberMetadataValue {
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub subscribed_topic_names: Vec<String>,
    pub subscribed_topic_regex: Option<String>,
    /// -1 when unknown.
    pub rebalance_timeout_ms: i32,
    pub server_assignor: Option<String>,
}

/// Partitions of one topic, by topic id.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct TopicPartitions {
    pub topic_id: [u8; 16],
    pub partitions: Vec<i32>,
}

/// Type 6: the epoch of the group's target assignment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerGroupTargetAssignmentMetadataValue {
    pub assignment_epoch: i32,
}

/// Type 7: one member's target assignment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerGroupTargetAssignmentMemberValue {
    pub topic_partitions: Vec<TopicPartitions>,
}

/// Type 8: one member's current assignment and reconciliation state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerGroupCurrentMemberAssignmentValue {
    pub member_epoch: i32,
    pub previous_member_epoch: i32,
    /// Kafka's `MemberState`: 0 STABLE, 1 UNREVOKED_PARTITIONS, 2 UNRELEASED_PARTITIONS,
    /// 127 UNKNOWN.
    pub state: i8,
    pub assigned_partitions: Vec<TopicPartitions>,
    pub partitions_pending_revocation: Vec<TopicPartitions>,
}

impl ConsumerGroupKey {
    pub(super) fn encode(&self, record_type: i16) -> Result<Vec<u8>, RecordError> {
        let mut w = Writer::new(false);
        w.i16(record_type);
        w.string("groupId", &self.group)?;
        Ok(w.finish())
    }

    pub(super) fn decode(r: &mut Reader<'_>) -> Result<Self, RecordError> {
        Ok(Self { group: r.string("groupId")? })
    }
}

impl ConsumerGroupMemberKey {
    pub(super) fn encode(&self, record_type: i16) -> Result<Vec<u8>, RecordError> {
        let mut w = Writer::new(false);
        w.i16(record_type);
        w.string("groupId", &self.group)?;
        w.string("memberId", &self.member_id)?;
        Ok(w.finish())
    }

    pub(super) fn decode(r: &mut Reader<'_>) -> Result<Self, RecordError> {
        Ok(Self { group: r.string("groupId")?, member_id: r.string("memberId")? })
    }
}

fn value_reader<'a>(bytes: &'a [u8], record: &'static str) -> Result<Reader<'a>, RecordError> {
    let mut r = Reader::new(bytes);
    let version = r.i16("value version")?;
    if version != 0 {
        return Err(RecordError::UnsupportedVersion { record, version });
    }
    r.flexible = true;
    Ok(r)
}

fn value_writer() -> Writer {
    let mut w = Writer::new(true);
    w.i16(0);
    w
}

fn write_topic_partitions(w: &mut Writer, v: &[TopicPartitions]) -> Result<(), RecordError> {
    w.array_len(v.len())?;
    for tp in v {
        w.buf.extend_from_slice(&tp.topic_id);
        w.array_len(tp.partitions.len())?;
        for p in &tp.partitions {
            w.i32(*p);
        }
        w.tagged_fields();
    }
    Ok(())
}

fn read_topic_partitions(r: &mut Reader<'_>) -> Result<Vec<TopicPartitions>, RecordError> {
    let count = r.array_len("topicPartitions")?;
    let mut out = Vec::with_capacity(count.min(r.remaining() / 18));
    for _ in 0..count {
        let topic_id = r.array::<16>("topicId")?;
        let n = r.array_len("partitions")?;
        let mut partitions = Vec::with_capacity(n.min(r.remaining() / 4));
        for _ in 0..n {
            partitions.push(r.i32("partition")?);
        }
        // Tag 0 (AssignmentEpochs, KIP-1251) and any other tag are skipped.
        r.skip_tagged_fields()?;
        out.push(TopicPartitions { topic_id, partitions });
    }
    Ok(out)
}

fn write_string_array(w: &mut Writer, field: &'static str, v: &[String]) -> Result<(), RecordError> {
    w.array_len(v.len())?;
    for s in v {
        w.string(field, s)?;
    }
    Ok(())
}

fn read_string_array(r: &mut Reader<'_>, field: &'static str) -> Result<Vec<String>, RecordError> {
    let count = r.array_len(field)?;
    let mut out = Vec::with_capacity(count.min(r.remaining()));
    for _ in 0..count {
        out.push(r.string(field)?);
    }
    Ok(out)
}

impl ConsumerGroupMetadataValue {
    pub fn encode(&self) -> Result<Vec<u8>, RecordError> {
        let mut w = value_writer();
        w.i32(self.epoch);
        if self.metadata_hash != 0 {
            // One tagged field: tag 0, size 8, the hash.
            w.uvarint(1);
            w.uvarint(0);
            w.uvarint(8);
            w.i64(self.metadata_hash);
        } else {
            w.tagged_fields();
        }
        Ok(w.finish())
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, RecordError> {
        let mut r = value_reader(bytes, "ConsumerGroupMetadataValue")?;
        let epoch = r.i32("epoch")?;
        let mut metadata_hash = 0;
        let tags = r.uvarint("tagged fields")?;
        for _ in 0..tags {
            let tag = r.uvarint("tag")?;
            let size = usize::try_from(r.uvarint("tag size")?)
                .map_err(|_| RecordError::InvalidLength { field: "tag size", length: -1 })?;
            if tag == 0 && size == 8 {
                metadata_hash = r.i64("metadataHash")?;
            } else {
                r.take("tagged field", size)?;
            }
        }
        Ok(Self { epoch, metadata_hash })
    }
}

impl ConsumerGroupMemberMetadataValue {
    pub fn encode(&self) -> Result<Vec<u8>, RecordError> {
        let mut w = value_writer();
        w.nullable_string("instanceId", self.instance_id.as_deref())?;
        w.nullable_string("rackId", self.rack_id.as_deref())?;
        w.string("clientId", &self.client_id)?;
        w.string("clientHost", &self.client_host)?;
        write_string_array(&mut w, "subscribedTopicNames", &self.subscribed_topic_names)?;
        w.nullable_string("subscribedTopicRegex", self.subscribed_topic_regex.as_deref())?;
        w.i32(self.rebalance_timeout_ms);
        w.nullable_string("serverAssignor", self.server_assignor.as_deref())?;
        w.tagged_fields();
        Ok(w.finish())
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, RecordError> {
        let mut r = value_reader(bytes, "ConsumerGroupMemberMetadataValue")?;
        let value = Self {
            instance_id: r.nullable_string("instanceId")?,
            rack_id: r.nullable_string("rackId")?,
            client_id: r.string("clientId")?,
            client_host: r.string("clientHost")?,
            subscribed_topic_names: read_string_array(&mut r, "subscribedTopicNames")?,
            subscribed_topic_regex: r.nullable_string("subscribedTopicRegex")?,
            rebalance_timeout_ms: r.i32("rebalanceTimeoutMs")?,
            server_assignor: r.nullable_string("serverAssignor")?,
        };
        // Tag 0 (ClassicMemberMetadata) is skipped: Keel has no classic members in consumer
        // groups.
        r.skip_tagged_fields()?;
        Ok(value)
    }
}

impl ConsumerGroupTargetAssignmentMetadataValue {
    pub fn encode(&self) -> Result<Vec<u8>, RecordError> {
        let mut w = value_writer();
        w.i32(self.assignment_epoch);
        w.tagged_fields();
        Ok(w.finish())
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, RecordError> {
        let mut r = value_reader(bytes, "ConsumerGroupTargetAssignmentMetadataValue")?;
        let assignment_epoch = r.i32("assignmentEpoch")?;
        r.skip_tagged_fields()?;
        Ok(Self { assignment_epoch })
    }
}

impl ConsumerGroupTargetAssignmentMemberValue {
    pub fn encode(&self) -> Result<Vec<u8>, RecordError> {
        let mut w = value_writer();
        write_topic_partitions(&mut w, &self.topic_partitions)?;
        w.tagged_fields();
        Ok(w.finish())
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, RecordError> {
        let mut r = value_reader(bytes, "ConsumerGroupTargetAssignmentMemberValue")?;
        let topic_partitions = read_topic_partitions(&mut r)?;
        r.skip_tagged_fields()?;
        Ok(Self { topic_partitions })
    }
}

impl ConsumerGroupCurrentMemberAssignmentValue {
    pub fn encode(&self) -> Result<Vec<u8>, RecordError> {
        let mut w = value_writer();
        w.i32(self.member_epoch);
        w.i32(self.previous_member_epoch);
        w.buf.push(self.state as u8);
        write_topic_partitions(&mut w, &self.assigned_partitions)?;
        write_topic_partitions(&mut w, &self.partitions_pending_revocation)?;
        w.tagged_fields();
        Ok(w.finish())
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, RecordError> {
        let mut r = value_reader(bytes, "ConsumerGroupCurrentMemberAssignmentValue")?;
        let member_epoch = r.i32("memberEpoch")?;
        let previous_member_epoch = r.i32("previousMemberEpoch")?;
        let [state] = r.array::<1>("state")?;
        let assigned_partitions = read_topic_partitions(&mut r)?;
        let partitions_pending_revocation = read_topic_partitions(&mut r)?;
        r.skip_tagged_fields()?;
        Ok(Self {
            member_epoch,
            previous_member_epoch,
            state: state as i8,
            assigned_partitions,
            partitions_pending_revocation,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::CoordinatorRecord;
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn current_member_assignment_matches_hand_checked_bytes() {
        let record = CoordinatorRecord::ConsumerGroupCurrentMemberAssignment {
            key: ConsumerGroupMemberKey { group: "g".into(), member_id: "m".into() },
            value: Some(ConsumerGroupCurrentMemberAssignmentValue {
                member_epoch: 5,
                previous_member_epoch: 4,
                state: 1,
                assigned_partitions: vec![TopicPartitions { topic_id: [9; 16], partitions: vec![0, 2] }],
                partitions_pending_revocation: vec![],
            }),
        };
        let encoded = record.encode().unwrap();
        assert_eq!(encoded.key, [0, 8, 0, 1, b'g', 0, 1, b'm']);
        #[rustfmt::skip]
        let value: Vec<u8> = [
            &[0, 0][..],          // version 0 (flexible)
            &[0, 0, 0, 5],        // MemberEpoch
            &[0, 0, 0, 4],        // PreviousMemberEpoch
            &[1],                 // State: UNREVOKED_PARTITIONS
            &[2],                 // AssignedPartitions: 1 entry (compact: n + 1)
            &[9; 16],             //   TopicId
            &[3, 0, 0, 0, 0, 0, 0, 0, 2], // Partitions [0, 2]
            &[0],                 //   tagged fields
            &[1],                 // PartitionsPendingRevocation: empty
            &[0],                 // tagged fields
        ]
        .concat();
        assert_eq!(encoded.value.as_deref(), Some(&value[..]));
        assert_eq!(CoordinatorRecord::decode(&encoded.key, encoded.value.as_deref()).unwrap(), record);
    }

    #[test]
    fn group_metadata_hash_is_tagged_field_zero() {
        let v = ConsumerGroupMetadataValue { epoch: 3, metadata_hash: 0x0102 };
        let bytes = v.encode().unwrap();
        assert_eq!(bytes, [0, 0, 0, 0, 0, 3, 1, 0, 8, 0, 0, 0, 0, 0, 0, 1, 2]);
        assert_eq!(ConsumerGroupMetadataValue::decode(&bytes).unwrap(), v);
        let no_hash = ConsumerGroupMetadataValue { epoch: 3, metadata_hash: 0 };
        assert_eq!(no_hash.encode().unwrap(), [0, 0, 0, 0, 0, 3, 0]);
    }

    fn arb_tps() -> impl Strategy<Value = Vec<TopicPartitions>> {
        proptest::collection::vec(
            (any::<[u8; 16]>(), proptest::collection::vec(any::<i32>(), 0..5))
                .prop_map(|(topic_id, partitions)| TopicPartitions { topic_id, partitions }),
            0..4,
        )
    }

    proptest! {
        #[test]
        fn member_records_round_trip(
            instance in proptest::option::of("[a-z]{0,8}"),
            rack in proptest::option::of("[a-z]{0,8}"),
            topics in proptest::collection::vec("[a-z]{1,8}", 0..4),
            timeout in any::<i32>(),
            assignor in proptest::option::of("[a-z]{0,8}"),
            epoch in any::<i32>(), prev in any::<i32>(), state in any::<i8>(),
            assigned in arb_tps(), revoking in arb_tps(),
        ) {
            let metadata = ConsumerGroupMemberMetadataValue {
                instance_id: instance,
                rack_id: rack,
                client_id: "c".into(),
                client_host: "/h".into(),
                subscribed_topic_names: topics,
                subscribed_topic_regex: None,
                rebalance_timeout_ms: timeout,
                server_assignor: assignor,
            };
            prop_assert_eq!(
                ConsumerGroupMemberMetadataValue::decode(&metadata.encode().unwrap()).unwrap(),
                metadata
            );
            let current = ConsumerGroupCurrentMemberAssignmentValue {
                member_epoch: epoch,
                previous_member_epoch: prev,
                state,
                assigned_partitions: assigned.clone(),
                partitions_pending_revocation: revoking,
            };
            prop_assert_eq!(
                ConsumerGroupCurrentMemberAssignmentValue::decode(&current.encode().unwrap()).unwrap(),
                current
            );
            let target = ConsumerGroupTargetAssignmentMemberValue { topic_partitions: assigned };
            prop_assert_eq!(
                ConsumerGroupTargetAssignmentMemberValue::decode(&target.encode().unwrap()).unwrap(),
                target
            );
        }

        #[test]
        fn decoding_arbitrary_consumer_records_never_panics(
            record_type in 3i16..=8,
            key in proptest::collection::vec(any::<u8>(), 0..24),
            value in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..128)),
        ) {
            let mut full_key = record_type.to_be_bytes().to_vec();
            full_key.extend(key);
            let value = value.map(|mut v| {
                // Mostly version 0, so that decoding goes past the version check.
                if v.len() >= 2 { v[0] = 0; v[1] = 0; }
                v
            });
            let _ = CoordinatorRecord::decode(&full_key, value.as_deref());
        }
    }
}
