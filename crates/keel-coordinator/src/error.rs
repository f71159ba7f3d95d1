//! Kafka error codes as the coordinator returns them, and the typed errors of record decoding.

use std::fmt;

/// A Kafka protocol error code (`org.apache.kafka.common.protocol.Errors`), carried in responses.
///
/// A newtype rather than an enum so that codes the coordinator never produces (but a server may
/// want to put in a response built by [`crate::Response::with_error`]) still fit.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ErrorCode(pub i16);

impl ErrorCode {
    pub const UNKNOWN_SERVER_ERROR: Self = Self(-1);
    pub const NONE: Self = Self(0);
    pub const UNKNOWN_TOPIC_OR_PARTITION: Self = Self(3);
    pub const INVALID_FETCH_SIZE: Self = Self(4);
    pub const NOT_LEADER_OR_FOLLOWER: Self = Self(6);
    pub const REQUEST_TIMED_OUT: Self = Self(7);
    pub const MESSAGE_TOO_LARGE: Self = Self(10);
    pub const OFFSET_METADATA_TOO_LARGE: Self = Self(12);
    pub const COORDINATOR_LOAD_IN_PROGRESS: Self = Self(14);
    pub const COORDINATOR_NOT_AVAILABLE: Self = Self(15);
    pub const NOT_COORDINATOR: Self = Self(16);
    pub const RECORD_LIST_TOO_LARGE: Self = Self(18);
    pub const NOT_ENOUGH_REPLICAS: Self = Self(19);
    pub const ILLEGAL_GENERATION: Self = Self(22);
    pub const INCONSISTENT_GROUP_PROTOCOL: Self = Self(23);
    pub const INVALID_GROUP_ID: Self = Self(24);
    pub const UNKNOWN_MEMBER_ID: Self = Self(25);
    pub const INVALID_SESSION_TIMEOUT: Self = Self(26);
    pub const REBALANCE_IN_PROGRESS: Self = Self(27);
    pub const INVALID_REQUEST: Self = Self(42);
    pub const KAFKA_STORAGE_ERROR: Self = Self(56);
    pub const NON_EMPTY_GROUP: Self = Self(68);
    pub const GROUP_ID_NOT_FOUND: Self = Self(69);
    pub const MEMBER_ID_REQUIRED: Self = Self(79);
    pub const GROUP_MAX_SIZE_REACHED: Self = Self(81);
    pub const FENCED_INSTANCE_ID: Self = Self(82);
    pub const GROUP_SUBSCRIBED_TO_TOPIC: Self = Self(86);
    pub const UNSTABLE_OFFSET_COMMIT: Self = Self(88);
    pub const UNSUPPORTED_VERSION: Self = Self(35);
    pub const FENCED_MEMBER_EPOCH: Self = Self(110);
    pub const UNRELEASED_INSTANCE_ID: Self = Self(111);
    pub const UNSUPPORTED_ASSIGNOR: Self = Self(112);
    pub const STALE_MEMBER_EPOCH: Self = Self(113);

    /// The numeric code as it goes on the wire.
    pub fn code(self) -> i16 {
        self.0
    }

    pub fn is_none(self) -> bool {
        self == Self::NONE
    }

    /// Kafka's name for the code, for logs and test failures.
    pub fn name(self) -> &'static str {
        match self.0 {
            -1 => "UNKNOWN_SERVER_ERROR",
            0 => "NONE",
            3 => "UNKNOWN_TOPIC_OR_PARTITION",
            4 => "INVALID_FETCH_SIZE",
            6 => "NOT_LEADER_OR_FOLLOWER",
            7 => "REQUEST_TIMED_OUT",
            10 => "MESSAGE_TOO_LARGE",
            12 => "OFFSET_METADATA_TOO_LARGE",
            14 => "COORDINATOR_LOAD_IN_PROGRESS",
            15 => "COORDINATOR_NOT_AVAILABLE",
            16 => "NOT_COORDINATOR",
            18 => "RECORD_LIST_TOO_LARGE",
            19 => "NOT_ENOUGH_REPLICAS",
            22 => "ILLEGAL_GENERATION",
            23 => "INCONSISTENT_GROUP_PROTOCOL",
            24 => "INVALID_GROUP_ID",
            25 => "UNKNOWN_MEMBER_ID",
            26 => "INVALID_SESSION_TIMEOUT",
            27 => "REBALANCE_IN_PROGRESS",
            42 => "INVALID_REQUEST",
            56 => "KAFKA_STORAGE_ERROR",
            68 => "NON_EMPTY_GROUP",
            69 => "GROUP_ID_NOT_FOUND",
            79 => "MEMBER_ID_REQUIRED",
            81 => "GROUP_MAX_SIZE_REACHED",
            82 => "FENCED_INSTANCE_ID",
            86 => "GROUP_SUBSCRIBED_TO_TOPIC",
            88 => "UNSTABLE_OFFSET_COMMIT",
            35 => "UNSUPPORTED_VERSION",
            110 => "FENCED_MEMBER_EPOCH",
            111 => "UNRELEASED_INSTANCE_ID",
            112 => "UNSUPPORTED_ASSIGNOR",
            113 => "STALE_MEMBER_EPOCH",
            _ => "UNKNOWN",
        }
    }

    /// Maps the error of a failed `__consumer_offsets` append to the error a group client should
    /// see, as Kafka's `GroupMetadataManager.appendGroupMetadataErrorToResponseError` does: the
    /// client must rediscover the coordinator or retry, never learn about replication internals.
    pub fn from_append_error(append_error: ErrorCode) -> ErrorCode {
        match append_error {
            Self::UNKNOWN_TOPIC_OR_PARTITION | Self::NOT_ENOUGH_REPLICAS | Self::REQUEST_TIMED_OUT => {
                Self::COORDINATOR_NOT_AVAILABLE
            }
            Self::NOT_LEADER_OR_FOLLOWER | Self::KAFKA_STORAGE_ERROR => Self::NOT_COORDINATOR,
            Self::MESSAGE_TOO_LARGE | Self::RECORD_LIST_TOO_LARGE | Self::INVALID_FETCH_SIZE => {
                Self::UNKNOWN_SERVER_ERROR
            }
            other => other,
        }
    }
}

impl fmt::Debug for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}({})", self.name(), self.0)
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// Why a `__consumer_offsets` record could not be encoded or decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("record {what} is truncated: needed {needed} bytes, {remaining} remain")]
    Truncated { what: &'static str, needed: usize, remaining: usize },
    /// Kafka's loader logs and skips these (KIP-848 and share-group records are types 3 and up).
    #[error("unknown __consumer_offsets record type {0}; skip it")]
    UnknownRecordType(i16),
    #[error("unsupported {record} version {version}")]
    UnsupportedVersion { record: &'static str, version: i16 },
    #[error("a record of type {0} must have a value (only offset commits and group metadata have tombstones)")]
    MissingValue(i16),
    #[error("field {field} is null but not nullable")]
    UnexpectedNull { field: &'static str },
    #[error("field {field} has an invalid length {length}")]
    InvalidLength { field: &'static str, length: i64 },
    #[error("field {field} is not valid UTF-8")]
    InvalidUtf8 { field: &'static str },
    #[error("field {field} is {length} bytes, more than a Kafka string can hold (32767)")]
    StringTooLong { field: &'static str, length: usize },
}
