//! The `__consumer_offsets` records of classic groups, byte for byte as Kafka writes them, so
//! Kafka tooling (`kafka-console-consumer --formatter ...GroupMetadataMessageFormatter`,
//! `kafka-dump-log --offsets-decoder`) can read Keel's data and Keel can load Kafka's.
//!
//! Every key and value starts with an `i16` version (Kafka's `MessageUtil.toVersionPrefixedBytes`);
//! for keys that version is the *record type* (`GroupCoordinatorRecordSerde.apiMessageKeyFor`):
//!
//! | type | key (fields, all versions non-flexible)            | value                          |
//! |------|----------------------------------------------------|--------------------------------|
//! | 0, 1 | OffsetCommitKey: group string, topic string, partition int32 | OffsetCommitValue v0–v4 |
//! | 2    | GroupMetadataKey: group string                     | GroupMetadataValue v0–v4       |
//! | 3, 5–8 | KIP-848 consumer group records: see `records/consumer.rs` |                     |
//! | 4, 9+ | partition metadata (deprecated) and share-group records: not decoded |          |
//!
//! Checked against apache/kafka `group-coordinator/src/main/resources/common/message/`
//! `OffsetCommitKey.json`, `OffsetCommitValue.json`, `GroupMetadataKey.json`,
//! `GroupMetadataValue.json`, and `GroupCoordinatorRecordHelpers.java` /
//! `MetadataVersion.offsetCommitValueVersion`/`groupMetadataValueVersion` for what is written:
//! keys at type 1 and 2, OffsetCommitValue v3 (v1 when the commit carries an explicit expire
//! timestamp, OffsetCommit v2–v4 `retention_time_ms`), GroupMetadataValue v3. Versions 4 are the
//! first flexible ones (compact strings/arrays/bytes, tagged fields; KIP-915) and are decoded.
//!
//! Kafka wire primitives: big-endian integers; `string` = i16 length + UTF-8 (-1 = null);
//! `bytes` = i32 length + data; arrays = i32 count; flexible versions use unsigned varints of
//! length+1 (0 = null) and end every struct with a tagged-field section.
//!
//! Decoding is for untrusted bytes: every length is checked against the bytes remaining before
//! anything is allocated, and nothing panics.

use bytes::Bytes;

use crate::error::RecordError;

mod consumer;
mod transaction;
pub use consumer::{
    ConsumerGroupCurrentMemberAssignmentValue, ConsumerGroupKey, ConsumerGroupMemberKey,
    ConsumerGroupMemberMetadataValue, ConsumerGroupMetadataValue, ConsumerGroupTargetAssignmentMemberValue,
    ConsumerGroupTargetAssignmentMetadataValue, TopicPartitions, CONSUMER_GROUP_CURRENT_MEMBER_ASSIGNMENT_TYPE,
    CONSUMER_GROUP_MEMBER_METADATA_TYPE, CONSUMER_GROUP_METADATA_TYPE, CONSUMER_GROUP_PARTITION_METADATA_TYPE,
    CONSUMER_GROUP_TARGET_ASSIGNMENT_MEMBER_TYPE, CONSUMER_GROUP_TARGET_ASSIGNMENT_METADATA_TYPE,
};
pub use transaction::{decode_transaction_key, encode_transaction_key, TransactionLogValue};

/// One record of `__consumer_offsets` as stored in the log: key bytes and value bytes, `None`
/// for a tombstone (which compaction eventually uses to drop the key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub key: Vec<u8>,
    pub value: Option<Vec<u8>>,
}

/// Record type (key version) Kafka writes for offset commits; type 0 is decoded too.
pub const OFFSET_COMMIT_KEY_VERSION: i16 = 1;
/// Record type (key version) of group metadata.
pub const GROUP_METADATA_KEY_VERSION: i16 = 2;
/// OffsetCommitValue version Kafka 2.1+ writes.
pub const OFFSET_COMMIT_VALUE_VERSION: i16 = 3;
/// OffsetCommitValue version for commits with an explicit expire timestamp.
pub const OFFSET_COMMIT_VALUE_VERSION_WITH_EXPIRE_TIMESTAMP: i16 = 1;
/// GroupMetadataValue version Kafka 2.3+ writes (the highest non-flexible one).
pub const GROUP_METADATA_VALUE_VERSION: i16 = 3;

/// Key of a committed offset: group, topic, partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetCommitKey {
    pub group: String,
    pub topic: String,
    pub partition: i32,
}

/// A committed offset. `leader_epoch` and `expire_timestamp_ms` use Kafka's `-1` sentinel for
/// "absent", exactly as the record does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetCommitValue {
    pub offset: i64,
    /// Versions 3+; -1 when unknown.
    pub leader_epoch: i32,
    pub metadata: String,
    pub commit_timestamp_ms: i64,
    /// Version 1 only; -1 when absent.
    pub expire_timestamp_ms: i64,
}

/// Key of a group's metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupMetadataKey {
    pub group: String,
}

/// A classic group's membership after a completed rebalance (or an empty group).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupMetadataValue {
    /// Empty for a group without protocol type.
    pub protocol_type: String,
    pub generation: i32,
    pub protocol: Option<String>,
    pub leader: Option<String>,
    /// Versions 2+; -1 when unknown.
    pub current_state_timestamp_ms: i64,
    pub members: Vec<MemberMetadata>,
}

/// One member inside [`GroupMetadataValue`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberMetadata {
    pub member_id: String,
    /// Versions 3+ (KIP-345 static membership).
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    /// Versions 1+; -1 when absent (Kafka then uses the session timeout on load).
    pub rebalance_timeout_ms: i32,
    pub session_timeout_ms: i32,
    /// The member's metadata for the group's selected protocol.
    pub subscription: Bytes,
    pub assignment: Bytes,
}

/// A decoded `__consumer_offsets` record of a classic group; `None` values are tombstones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CoordinatorRecord {
    OffsetCommit {
        key: OffsetCommitKey,
        value: Option<OffsetCommitValue>,
    },
    GroupMetadata {
        key: GroupMetadataKey,
        value: Option<GroupMetadataValue>,
    },
    /// Type 3 (KIP-848): the consumer group's epoch.
    ConsumerGroupMetadata {
        key: ConsumerGroupKey,
        value: Option<ConsumerGroupMetadataValue>,
    },
    /// Type 5 (KIP-848): a member's subscription.
    ConsumerGroupMemberMetadata {
        key: ConsumerGroupMemberKey,
        value: Option<ConsumerGroupMemberMetadataValue>,
    },
    /// Type 6 (KIP-848): the target assignment's epoch.
    ConsumerGroupTargetAssignmentMetadata {
        key: ConsumerGroupKey,
        value: Option<ConsumerGroupTargetAssignmentMetadataValue>,
    },
    /// Type 7 (KIP-848): a member's target assignment.
    ConsumerGroupTargetAssignmentMember {
        key: ConsumerGroupMemberKey,
        value: Option<ConsumerGroupTargetAssignmentMemberValue>,
    },
    /// Type 8 (KIP-848): a member's current assignment.
    ConsumerGroupCurrentMemberAssignment {
        key: ConsumerGroupMemberKey,
        value: Option<ConsumerGroupCurrentMemberAssignmentValue>,
    },
}

impl CoordinatorRecord {
    /// Encodes the record as Kafka 4.x writes it (see the module docs for the versions).
    pub fn encode(&self) -> Result<Record, RecordError> {
        match self {
            Self::OffsetCommit { key, value } => {
                let value = match value {
                    None => None,
                    Some(value) => {
                        let version = if value.expire_timestamp_ms >= 0 {
                            OFFSET_COMMIT_VALUE_VERSION_WITH_EXPIRE_TIMESTAMP
                        } else {
                            OFFSET_COMMIT_VALUE_VERSION
                        };
                        Some(value.encode(version)?)
                    }
                };
                Ok(Record { key: key.encode()?, value })
            }
            Self::GroupMetadata { key, value } => {
                let value = match value {
                    None => None,
                    Some(value) => Some(value.encode(GROUP_METADATA_VALUE_VERSION)?),
                };
                Ok(Record { key: key.encode()?, value })
            }
            Self::ConsumerGroupMetadata { key, value } => Ok(Record {
                key: key.encode(CONSUMER_GROUP_METADATA_TYPE)?,
                value: value.as_ref().map(|v| v.encode()).transpose()?,
            }),
            Self::ConsumerGroupMemberMetadata { key, value } => Ok(Record {
                key: key.encode(CONSUMER_GROUP_MEMBER_METADATA_TYPE)?,
                value: value.as_ref().map(|v| v.encode()).transpose()?,
            }),
            Self::ConsumerGroupTargetAssignmentMetadata { key, value } => Ok(Record {
                key: key.encode(CONSUMER_GROUP_TARGET_ASSIGNMENT_METADATA_TYPE)?,
                value: value.as_ref().map(|v| v.encode()).transpose()?,
            }),
            Self::ConsumerGroupTargetAssignmentMember { key, value } => Ok(Record {
                key: key.encode(CONSUMER_GROUP_TARGET_ASSIGNMENT_MEMBER_TYPE)?,
                value: value.as_ref().map(|v| v.encode()).transpose()?,
            }),
            Self::ConsumerGroupCurrentMemberAssignment { key, value } => Ok(Record {
                key: key.encode(CONSUMER_GROUP_CURRENT_MEMBER_ASSIGNMENT_TYPE)?,
                value: value.as_ref().map(|v| v.encode()).transpose()?,
            }),
        }
    }

    /// Decodes a record read from `__consumer_offsets`. Types other than 0–2 give
    /// [`RecordError::UnknownRecordType`], which a loader should skip as Kafka's does.
    pub fn decode(key: &[u8], value: Option<&[u8]>) -> Result<Self, RecordError> {
        let mut reader = Reader::new(key);
        let record_type = reader.i16("key version")?;
        match record_type {
            0 | 1 => {
                let key = OffsetCommitKey {
                    group: reader.string("group")?,
                    topic: reader.string("topic")?,
                    partition: reader.i32("partition")?,
                };
                let value = value.map(OffsetCommitValue::decode).transpose()?;
                Ok(Self::OffsetCommit { key, value })
            }
            2 => {
                let key = GroupMetadataKey { group: reader.string("group")? };
                let value = value.map(GroupMetadataValue::decode).transpose()?;
                Ok(Self::GroupMetadata { key, value })
            }
            CONSUMER_GROUP_METADATA_TYPE => Ok(Self::ConsumerGroupMetadata {
                key: ConsumerGroupKey::decode(&mut reader)?,
                value: value.map(ConsumerGroupMetadataValue::decode).transpose()?,
            }),
            CONSUMER_GROUP_MEMBER_METADATA_TYPE => Ok(Self::ConsumerGroupMemberMetadata {
                key: ConsumerGroupMemberKey::decode(&mut reader)?,
                value: value.map(ConsumerGroupMemberMetadataValue::decode).transpose()?,
            }),
            CONSUMER_GROUP_TARGET_ASSIGNMENT_METADATA_TYPE => Ok(Self::ConsumerGroupTargetAssignmentMetadata {
                key: ConsumerGroupKey::decode(&mut reader)?,
                value: value.map(ConsumerGroupTargetAssignmentMetadataValue::decode).transpose()?,
            }),
            CONSUMER_GROUP_TARGET_ASSIGNMENT_MEMBER_TYPE => Ok(Self::ConsumerGroupTargetAssignmentMember {
                key: ConsumerGroupMemberKey::decode(&mut reader)?,
                value: value.map(ConsumerGroupTargetAssignmentMemberValue::decode).transpose()?,
            }),
            CONSUMER_GROUP_CURRENT_MEMBER_ASSIGNMENT_TYPE => Ok(Self::ConsumerGroupCurrentMemberAssignment {
                key: ConsumerGroupMemberKey::decode(&mut reader)?,
                value: value.map(ConsumerGroupCurrentMemberAssignmentValue::decode).transpose()?,
            }),
            other => Err(RecordError::UnknownRecordType(other)),
        }
    }
}

impl OffsetCommitKey {
    /// Key bytes at record type 1.
    pub fn encode(&self) -> Result<Vec<u8>, RecordError> {
        let mut w = Writer::new(false);
        w.i16(OFFSET_COMMIT_KEY_VERSION);
        w.string("group", &self.group)?;
        w.string("topic", &self.topic)?;
        w.i32(self.partition);
        Ok(w.finish())
    }
}

impl GroupMetadataKey {
    /// Key bytes at record type 2.
    pub fn encode(&self) -> Result<Vec<u8>, RecordError> {
        let mut w = Writer::new(false);
        w.i16(GROUP_METADATA_KEY_VERSION);
        w.string("group", &self.group)?;
        Ok(w.finish())
    }
}

impl OffsetCommitValue {
    /// Value bytes at `version` (0–4), version prefix included. Fields a version lacks are
    /// dropped, as Kafka's generated writer does for ignorable fields.
    pub fn encode(&self, version: i16) -> Result<Vec<u8>, RecordError> {
        if !(0..=4).contains(&version) {
            return Err(RecordError::UnsupportedVersion { record: "OffsetCommitValue", version });
        }
        let mut w = Writer::new(version >= 4);
        w.i16(version);
        w.i64(self.offset);
        if version >= 3 {
            w.i32(self.leader_epoch);
        }
        w.string("metadata", &self.metadata)?;
        w.i64(self.commit_timestamp_ms);
        if version == 1 {
            w.i64(self.expire_timestamp_ms);
        }
        w.tagged_fields();
        Ok(w.finish())
    }

    /// Decodes value bytes of any version 0–4.
    pub fn decode(bytes: &[u8]) -> Result<Self, RecordError> {
        let mut r = Reader::new(bytes);
        let version = r.i16("value version")?;
        if !(0..=4).contains(&version) {
            return Err(RecordError::UnsupportedVersion { record: "OffsetCommitValue", version });
        }
        r.flexible = version >= 4;
        let offset = r.i64("offset")?;
        let leader_epoch = if version >= 3 { r.i32("leaderEpoch")? } else { -1 };
        let metadata = r.string("metadata")?;
        let commit_timestamp_ms = r.i64("commitTimestamp")?;
        let expire_timestamp_ms = if version == 1 { r.i64("expireTimestamp")? } else { -1 };
        r.skip_tagged_fields()?;
        Ok(Self { offset, leader_epoch, metadata, commit_timestamp_ms, expire_timestamp_ms })
    }
}

impl GroupMetadataValue {
    /// Value bytes at `version` (0–4), version prefix included.
    pub fn encode(&self, version: i16) -> Result<Vec<u8>, RecordError> {
        if !(0..=4).contains(&version) {
            return Err(RecordError::UnsupportedVersion { record: "GroupMetadataValue", version });
        }
        let mut w = Writer::new(version >= 4);
        w.i16(version);
        w.string("protocolType", &self.protocol_type)?;
        w.i32(self.generation);
        w.nullable_string("protocol", self.protocol.as_deref())?;
        w.nullable_string("leader", self.leader.as_deref())?;
        if version >= 2 {
            w.i64(self.current_state_timestamp_ms);
        }
        w.array_len(self.members.len())?;
        for member in &self.members {
            w.string("memberId", &member.member_id)?;
            if version >= 3 {
                w.nullable_string("groupInstanceId", member.group_instance_id.as_deref())?;
            }
            w.string("clientId", &member.client_id)?;
            w.string("clientHost", &member.client_host)?;
            if version >= 1 {
                w.i32(member.rebalance_timeout_ms);
            }
            w.i32(member.session_timeout_ms);
            w.bytes("subscription", &member.subscription)?;
            w.bytes("assignment", &member.assignment)?;
            w.tagged_fields();
        }
        w.tagged_fields();
        Ok(w.finish())
    }

    /// Decodes value bytes of any version 0–4.
    pub fn decode(bytes: &[u8]) -> Result<Self, RecordError> {
        let mut r = Reader::new(bytes);
        let version = r.i16("value version")?;
        if !(0..=4).contains(&version) {
            return Err(RecordError::UnsupportedVersion { record: "GroupMetadataValue", version });
        }
        r.flexible = version >= 4;
        let protocol_type = r.string("protocolType")?;
        let generation = r.i32("generation")?;
        let protocol = r.nullable_string("protocol")?;
        let leader = r.nullable_string("leader")?;
        let current_state_timestamp_ms = if version >= 2 { r.i64("currentStateTimestamp")? } else { -1 };
        // Each member takes at least a few bytes on the wire: never reserve more entries than
        // the remaining bytes could hold.
        let count = r.array_len("members")?;
        let mut members = Vec::with_capacity(count.min(r.remaining() / 8));
        for _ in 0..count {
            let member_id = r.string("memberId")?;
            let group_instance_id = if version >= 3 { r.nullable_string("groupInstanceId")? } else { None };
            let client_id = r.string("clientId")?;
            let client_host = r.string("clientHost")?;
            let rebalance_timeout_ms = if version >= 1 { r.i32("rebalanceTimeout")? } else { -1 };
            let session_timeout_ms = r.i32("sessionTimeout")?;
            let subscription = r.bytes("subscription")?;
            let assignment = r.bytes("assignment")?;
            r.skip_tagged_fields()?;
            members.push(MemberMetadata {
                member_id,
                group_instance_id,
                client_id,
                client_host,
                rebalance_timeout_ms,
                session_timeout_ms,
                subscription,
                assignment,
            });
        }
        r.skip_tagged_fields()?;
        Ok(Self { protocol_type, generation, protocol, leader, current_state_timestamp_ms, members })
    }
}

/// Serializer for Kafka's primitive types, classic or flexible.
struct Writer {
    buf: Vec<u8>,
    flexible: bool,
}

impl Writer {
    fn new(flexible: bool) -> Self {
        Self { buf: Vec::with_capacity(64), flexible }
    }

    fn finish(self) -> Vec<u8> {
        self.buf
    }

    fn i16(&mut self, v: i16) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }

    fn i32(&mut self, v: i32) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }

    fn i64(&mut self, v: i64) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }

    fn uvarint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.buf.push((v as u8 & 0x7f) | 0x80);
            v >>= 7;
        }
        self.buf.push(v as u8);
    }

    fn nullable_string(&mut self, field: &'static str, v: Option<&str>) -> Result<(), RecordError> {
        match v {
            None if self.flexible => self.uvarint(0),
            None => self.i16(-1),
            Some(s) => {
                // Kafka's generated writers reject strings longer than 0x7fff in every version.
                if s.len() > i16::MAX as usize {
                    return Err(RecordError::StringTooLong { field, length: s.len() });
                }
                if self.flexible {
                    self.uvarint(s.len() as u64 + 1);
                } else {
                    self.i16(s.len() as i16);
                }
                self.buf.extend_from_slice(s.as_bytes());
            }
        }
        Ok(())
    }

    fn string(&mut self, field: &'static str, v: &str) -> Result<(), RecordError> {
        self.nullable_string(field, Some(v))
    }

    fn bytes(&mut self, field: &'static str, v: &[u8]) -> Result<(), RecordError> {
        if v.len() > i32::MAX as usize - 1 {
            return Err(RecordError::InvalidLength { field, length: v.len() as i64 });
        }
        if self.flexible {
            self.uvarint(v.len() as u64 + 1);
        } else {
            self.i32(v.len() as i32);
        }
        self.buf.extend_from_slice(v);
        Ok(())
    }

    fn array_len(&mut self, len: usize) -> Result<(), RecordError> {
        if len > i32::MAX as usize - 1 {
            return Err(RecordError::InvalidLength { field: "members", length: len as i64 });
        }
        if self.flexible {
            self.uvarint(len as u64 + 1);
        } else {
            self.i32(len as i32);
        }
        Ok(())
    }

    /// An empty tagged-field section (flexible versions only); Keel writes no tagged fields.
    fn tagged_fields(&mut self) {
        if self.flexible {
            self.uvarint(0);
        }
    }
}

/// Bounds-checked reader of Kafka's primitive types.
struct Reader<'a> {
    buf: &'a [u8],
    flexible: bool,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Self { buf, flexible: false }
    }

    fn remaining(&self) -> usize {
        self.buf.len()
    }

    fn take(&mut self, what: &'static str, n: usize) -> Result<&'a [u8], RecordError> {
        if self.buf.len() < n {
            return Err(RecordError::Truncated { what, needed: n, remaining: self.buf.len() });
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], RecordError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(what, N)?);
        Ok(out)
    }

    fn i16(&mut self, what: &'static str) -> Result<i16, RecordError> {
        Ok(i16::from_be_bytes(self.array(what)?))
    }

    fn i32(&mut self, what: &'static str) -> Result<i32, RecordError> {
        Ok(i32::from_be_bytes(self.array(what)?))
    }

    fn i64(&mut self, what: &'static str) -> Result<i64, RecordError> {
        Ok(i64::from_be_bytes(self.array(what)?))
    }

    fn uvarint(&mut self, what: &'static str) -> Result<u64, RecordError> {
        let mut value = 0u64;
        for shift in (0..35).step_by(7) {
            let [byte] = self.array::<1>(what)?;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        // Kafka's varints for lengths are at most 5 bytes (32 bits).
        Err(RecordError::InvalidLength { field: what, length: -1 })
    }

    /// Length of a string, bytes or array: `None` for null.
    fn length(&mut self, what: &'static str, wide: bool) -> Result<Option<usize>, RecordError> {
        let length: i64 = if self.flexible {
            self.uvarint(what)? as i64 - 1
        } else if wide {
            i64::from(self.i32(what)?)
        } else {
            i64::from(self.i16(what)?)
        };
        match length {
            -1 => Ok(None),
            n if n < -1 => Err(RecordError::InvalidLength { field: what, length: n }),
            n => Ok(Some(n as usize)),
        }
    }

    fn nullable_string(&mut self, what: &'static str) -> Result<Option<String>, RecordError> {
        let Some(len) = self.length(what, false)? else {
            return Ok(None);
        };
        if len > i16::MAX as usize {
            return Err(RecordError::InvalidLength { field: what, length: len as i64 });
        }
        let raw = self.take(what, len)?;
        let s = std::str::from_utf8(raw).map_err(|_| RecordError::InvalidUtf8 { field: what })?;
        Ok(Some(s.to_owned()))
    }

    fn string(&mut self, what: &'static str) -> Result<String, RecordError> {
        self.nullable_string(what)?.ok_or(RecordError::UnexpectedNull { field: what })
    }

    fn bytes(&mut self, what: &'static str) -> Result<Bytes, RecordError> {
        let len = self.length(what, true)?.ok_or(RecordError::UnexpectedNull { field: what })?;
        Ok(Bytes::copy_from_slice(self.take(what, len)?))
    }

    fn array_len(&mut self, what: &'static str) -> Result<usize, RecordError> {
        self.length(what, true)?.ok_or(RecordError::UnexpectedNull { field: what })
    }

    /// Skips a tagged-field section (flexible versions): Kafka readers ignore unknown tags.
    fn skip_tagged_fields(&mut self) -> Result<(), RecordError> {
        if !self.flexible {
            return Ok(());
        }
        let count = self.uvarint("tagged fields")?;
        for _ in 0..count {
            let _tag = self.uvarint("tag")?;
            let size = self.uvarint("tag size")?;
            let size =
                usize::try_from(size).map_err(|_| RecordError::InvalidLength { field: "tag size", length: -1 })?;
            self.take("tagged field", size)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn offset_value() -> OffsetCommitValue {
        OffsetCommitValue {
            offset: 42,
            leader_epoch: 7,
            metadata: "m".into(),
            commit_timestamp_ms: 1000,
            expire_timestamp_ms: -1,
        }
    }

    #[test]
    fn offset_commit_record_matches_hand_checked_bytes() {
        let record = CoordinatorRecord::OffsetCommit {
            key: OffsetCommitKey { group: "g".into(), topic: "t".into(), partition: 3 },
            value: Some(offset_value()),
        };
        let encoded = record.encode().unwrap();
        #[rustfmt::skip]
        let key = [
            0, 1,            // record type 1 (OffsetCommitKey)
            0, 1, b'g',      // group
            0, 1, b't',      // topic
            0, 0, 0, 3,      // partition
        ];
        #[rustfmt::skip]
        let value = [
            0, 3,                        // OffsetCommitValue v3
            0, 0, 0, 0, 0, 0, 0, 42,     // offset
            0, 0, 0, 7,                  // leaderEpoch
            0, 1, b'm',                  // metadata
            0, 0, 0, 0, 0, 0, 0x03, 0xe8, // commitTimestamp 1000
        ];
        assert_eq!(encoded.key, key);
        assert_eq!(encoded.value.as_deref(), Some(&value[..]));
        let decoded = CoordinatorRecord::decode(&encoded.key, encoded.value.as_deref()).unwrap();
        assert_eq!(decoded, record);
    }

    #[test]
    fn offset_commit_with_expire_timestamp_is_written_at_version_1() {
        let value = OffsetCommitValue { expire_timestamp_ms: 5000, ..offset_value() };
        let record = CoordinatorRecord::OffsetCommit {
            key: OffsetCommitKey { group: "g".into(), topic: "t".into(), partition: 0 },
            value: Some(value.clone()),
        };
        let encoded = record.encode().unwrap();
        let bytes = encoded.value.clone().unwrap();
        assert_eq!(&bytes[..2], &[0, 1]);
        // v1 has no leader epoch: it decodes as -1.
        let decoded = OffsetCommitValue::decode(&bytes).unwrap();
        assert_eq!(decoded, OffsetCommitValue { leader_epoch: -1, ..value });
    }

    #[test]
    fn group_metadata_record_matches_hand_checked_bytes() {
        let record = CoordinatorRecord::GroupMetadata {
            key: GroupMetadataKey { group: "g".into() },
            value: Some(GroupMetadataValue {
                protocol_type: "consumer".into(),
                generation: 1,
                protocol: Some("range".into()),
                leader: Some("m".into()),
                current_state_timestamp_ms: 5,
                members: vec![MemberMetadata {
                    member_id: "m".into(),
                    group_instance_id: None,
                    client_id: "c".into(),
                    client_host: "/h".into(),
                    rebalance_timeout_ms: 300,
                    session_timeout_ms: 100,
                    subscription: Bytes::from_static(&[1, 2]),
                    assignment: Bytes::from_static(&[3]),
                }],
            }),
        };
        let encoded = record.encode().unwrap();
        assert_eq!(encoded.key, [0, 2, 0, 1, b'g']);
        #[rustfmt::skip]
        let value: Vec<u8> = [
            &[0, 3][..],                              // GroupMetadataValue v3
            &[0, 8], b"consumer",                     // protocolType
            &[0, 0, 0, 1],                            // generation
            &[0, 5], b"range",                        // protocol
            &[0, 1], b"m",                            // leader
            &[0, 0, 0, 0, 0, 0, 0, 5],                // currentStateTimestamp
            &[0, 0, 0, 1],                            // members: 1
            &[0, 1], b"m",                            //   memberId
            &[0xff, 0xff],                            //   groupInstanceId: null
            &[0, 1], b"c",                            //   clientId
            &[0, 2], b"/h",                           //   clientHost
            &[0, 0, 0x01, 0x2c],                      //   rebalanceTimeout 300
            &[0, 0, 0, 100],                          //   sessionTimeout
            &[0, 0, 0, 2, 1, 2],                      //   subscription
            &[0, 0, 0, 1, 3],                         //   assignment
        ]
        .concat();
        assert_eq!(encoded.value.as_deref(), Some(&value[..]));
        let decoded = CoordinatorRecord::decode(&encoded.key, encoded.value.as_deref()).unwrap();
        assert_eq!(decoded, record);
    }

    #[test]
    fn tombstones_have_no_value() {
        let record = CoordinatorRecord::GroupMetadata { key: GroupMetadataKey { group: "g".into() }, value: None };
        let encoded = record.encode().unwrap();
        assert_eq!(encoded.value, None);
        assert_eq!(CoordinatorRecord::decode(&encoded.key, None).unwrap(), record);
    }

    #[test]
    fn offset_commit_key_version_0_decodes() {
        let key = [0, 0, 0, 1, b'g', 0, 1, b't', 0, 0, 0, 9];
        let decoded = CoordinatorRecord::decode(&key, None).unwrap();
        assert_eq!(
            decoded,
            CoordinatorRecord::OffsetCommit {
                key: OffsetCommitKey { group: "g".into(), topic: "t".into(), partition: 9 },
                value: None,
            }
        );
    }

    #[test]
    fn flexible_version_4_decodes_with_unknown_tagged_fields() {
        #[rustfmt::skip]
        let value: Vec<u8> = [
            &[0, 4][..],                 // OffsetCommitValue v4 (flexible)
            &[0, 0, 0, 0, 0, 0, 0, 42],  // offset
            &[0, 0, 0, 7],               // leaderEpoch
            &[2], b"m",                  // compact string: length + 1
            &[0, 0, 0, 0, 0, 0, 0x03, 0xe8],
            &[1, 9, 2, 0xaa, 0xbb],      // one tagged field (tag 9, two bytes) to skip
        ]
        .concat();
        assert_eq!(OffsetCommitValue::decode(&value).unwrap(), offset_value());
    }

    #[test]
    fn unknown_record_types_are_reported_for_skipping() {
        // Type 4 is KIP-848's ConsumerGroupPartitionMetadataKey (not kept by Keel), 9+ are
        // share-group records.
        assert_eq!(
            CoordinatorRecord::decode(&[0, 4, 0, 1, b'g'], Some(&[0, 0])),
            Err(RecordError::UnknownRecordType(4))
        );
        assert_eq!(
            CoordinatorRecord::decode(&[0, 9, 0, 1, b'g'], Some(&[0, 0])),
            Err(RecordError::UnknownRecordType(9))
        );
    }

    #[test]
    fn huge_array_count_does_not_allocate() {
        let mut value = GroupMetadataValue {
            protocol_type: String::new(),
            generation: 0,
            protocol: None,
            leader: None,
            current_state_timestamp_ms: -1,
            members: vec![],
        }
        .encode(3)
        .unwrap();
        let n = value.len();
        value[n - 4..].copy_from_slice(&i32::MAX.to_be_bytes());
        assert!(matches!(GroupMetadataValue::decode(&value), Err(RecordError::Truncated { .. })));
    }

    #[test]
    fn strings_longer_than_kafka_allows_are_refused() {
        let key = OffsetCommitKey { group: "g".repeat(40_000), topic: "t".into(), partition: 0 };
        assert!(matches!(key.encode(), Err(RecordError::StringTooLong { .. })));
    }

    fn arb_string() -> impl Strategy<Value = String> {
        "[a-z0-9/._-]{0,12}"
    }

    fn arb_member() -> impl Strategy<Value = MemberMetadata> {
        (
            arb_string(),
            proptest::option::of(arb_string()),
            arb_string(),
            arb_string(),
            any::<i32>(),
            any::<i32>(),
            proptest::collection::vec(any::<u8>(), 0..16),
            proptest::collection::vec(any::<u8>(), 0..16),
        )
            .prop_map(|(m, i, c, h, r, s, sub, a)| MemberMetadata {
                member_id: m,
                group_instance_id: i,
                client_id: c,
                client_host: h,
                rebalance_timeout_ms: r,
                session_timeout_ms: s,
                subscription: Bytes::from(sub),
                assignment: Bytes::from(a),
            })
    }

    fn arb_group_value() -> impl Strategy<Value = GroupMetadataValue> {
        (
            arb_string(),
            any::<i32>(),
            proptest::option::of(arb_string()),
            proptest::option::of(arb_string()),
            any::<i64>(),
            proptest::collection::vec(arb_member(), 0..4),
        )
            .prop_map(|(t, g, p, l, ts, members)| GroupMetadataValue {
                protocol_type: t,
                generation: g,
                protocol: p,
                leader: l,
                current_state_timestamp_ms: ts,
                members,
            })
    }

    /// What survives a round trip at `version`: fields the version lacks come back as defaults.
    fn group_value_at(mut v: GroupMetadataValue, version: i16) -> GroupMetadataValue {
        if version < 2 {
            v.current_state_timestamp_ms = -1;
        }
        for m in &mut v.members {
            if version < 1 {
                m.rebalance_timeout_ms = -1;
            }
            if version < 3 {
                m.group_instance_id = None;
            }
        }
        v
    }

    proptest! {
        #[test]
        fn group_metadata_value_round_trips_at_every_version(v in arb_group_value(), version in 0i16..=4) {
            let bytes = v.encode(version).unwrap();
            prop_assert_eq!(GroupMetadataValue::decode(&bytes).unwrap(), group_value_at(v, version));
        }

        #[test]
        fn offset_commit_value_round_trips_at_every_version(
            offset in any::<i64>(), epoch in any::<i32>(), metadata in arb_string(),
            commit in any::<i64>(), expire in any::<i64>(), version in 0i16..=4,
        ) {
            let v = OffsetCommitValue {
                offset, leader_epoch: epoch, metadata, commit_timestamp_ms: commit, expire_timestamp_ms: expire,
            };
            let bytes = v.encode(version).unwrap();
            let expected = OffsetCommitValue {
                leader_epoch: if version >= 3 { epoch } else { -1 },
                expire_timestamp_ms: if version == 1 { expire } else { -1 },
                ..v
            };
            prop_assert_eq!(OffsetCommitValue::decode(&bytes).unwrap(), expected);
        }

        #[test]
        fn decoding_arbitrary_bytes_never_panics(
            key in proptest::collection::vec(any::<u8>(), 0..64),
            value in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..256)),
        ) {
            let _ = CoordinatorRecord::decode(&key, value.as_deref());
        }
    }
}
