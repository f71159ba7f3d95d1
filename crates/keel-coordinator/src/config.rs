//! `GroupConfig`: the broker configs the classic group coordinator reads, with Kafka's names and
//! defaults (`GroupCoordinatorConfig` in Kafka 4.x).

/// Broker configs of the group coordinator. Field names are Kafka's config names with dots as
/// underscores; units are in the names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupConfig {
    /// `group.min.session.timeout.ms`: JoinGroup with a smaller session timeout fails with
    /// INVALID_SESSION_TIMEOUT.
    pub group_min_session_timeout_ms: i32,
    /// `group.max.session.timeout.ms`: JoinGroup with a larger session timeout fails with
    /// INVALID_SESSION_TIMEOUT.
    pub group_max_session_timeout_ms: i32,
    /// `group.initial.rebalance.delay.ms`: how long the first rebalance of an empty group waits
    /// for more members (Kafka's `InitialDelayedJoin`, KIP-134).
    pub group_initial_rebalance_delay_ms: i32,
    /// `group.max.size`: members beyond this get GROUP_MAX_SIZE_REACHED (KIP-389).
    pub group_max_size: usize,
    /// `offsets.retention.minutes` in milliseconds: how long the offsets of an empty group (or of
    /// a simple consumer's commit) are kept.
    pub offsets_retention_ms: i64,
    /// `offsets.retention.check.interval.ms`: period of the expiry sweep over all groups.
    pub offsets_retention_check_interval_ms: i64,
    /// `offset.metadata.max.bytes`: longer commit metadata gets OFFSET_METADATA_TOO_LARGE.
    /// Counted like Java's `String.length()` (UTF-16 code units), as Kafka does.
    pub offset_metadata_max_bytes: usize,
    /// Kafka's `CLASSIC_GROUP_NEW_MEMBER_JOIN_TIMEOUT_MS` (5 minutes, not configurable there):
    /// a new member's parked JoinGroup is dropped after this, since a new member cannot heartbeat.
    pub group_new_member_join_timeout_ms: i32,
    /// `group.consumer.session.timeout.ms` (KIP-848): a consumer group member that does not
    /// heartbeat for this long is removed.
    pub group_consumer_session_timeout_ms: i32,
    /// `group.consumer.heartbeat.interval.ms` (KIP-848): returned in every heartbeat response.
    pub group_consumer_heartbeat_interval_ms: i32,
    /// `group.consumer.max.size`: members beyond this get GROUP_MAX_SIZE_REACHED.
    pub group_consumer_max_size: usize,
    /// `group.consumer.assignors`: the server-side assignors, the first being the default.
    /// Keel implements "uniform" and "range".
    pub group_consumer_assignors: Vec<String>,
}

impl Default for GroupConfig {
    fn default() -> Self {
        Self {
            group_min_session_timeout_ms: 6_000,
            group_max_session_timeout_ms: 1_800_000,
            group_initial_rebalance_delay_ms: 3_000,
            group_max_size: i32::MAX as usize,
            offsets_retention_ms: 7 * 24 * 60 * 60 * 1000,
            offsets_retention_check_interval_ms: 600_000,
            offset_metadata_max_bytes: 4096,
            group_new_member_join_timeout_ms: 5 * 60 * 1000,
            group_consumer_session_timeout_ms: 45_000,
            group_consumer_heartbeat_interval_ms: 5_000,
            group_consumer_max_size: i32::MAX as usize,
            group_consumer_assignors: vec!["uniform".to_owned(), "range".to_owned()],
        }
    }
}
