//! The API versions Keel advertises in ApiVersions.
//!
//! Clients take min(their max, ours) per API and infer features (and, for kafka-python, the broker
//! release) from these ranges, so the table lists only what Keel implements, with the ranges of
//! the Kafka 4.1 release whose message specs the `kafka-protocol` crate is generated from.
//! OffsetCommit and OffsetFetch stop at v9: the codec's request types end there (v10, topic
//! ids for KIP-848, is not decodable yet). Produce is listed from v0 as Kafka 4.x does: librdkafka before 2.11.1 turns compression off
//! unless Produce v0 is advertised; requests below v3 are still refused (KIP-896).

use kafka_protocol::messages::ApiKey;

/// An advertised version range of one API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiRange {
    pub api_key: ApiKey,
    pub min_version: i16,
    pub max_version: i16,
    /// The lowest version Keel actually serves (above `min_version` only for Produce).
    pub min_served_version: i16,
}

const fn range(api_key: ApiKey, min_version: i16, max_version: i16) -> ApiRange {
    ApiRange { api_key, min_version, max_version, min_served_version: min_version }
}

const ADVERTISED: &[ApiRange] = &[
    ApiRange { api_key: ApiKey::Produce, min_version: 0, max_version: 13, min_served_version: 3 },
    range(ApiKey::Fetch, 4, 18),
    range(ApiKey::ListOffsets, 1, 10),
    range(ApiKey::Metadata, 0, 13),
    range(ApiKey::OffsetCommit, 2, 9),
    range(ApiKey::OffsetFetch, 1, 9),
    range(ApiKey::FindCoordinator, 0, 6),
    range(ApiKey::JoinGroup, 0, 9),
    range(ApiKey::Heartbeat, 0, 4),
    range(ApiKey::LeaveGroup, 0, 5),
    range(ApiKey::SyncGroup, 0, 5),
    range(ApiKey::DescribeGroups, 0, 6),
    range(ApiKey::ListGroups, 0, 5),
    range(ApiKey::ApiVersions, 0, 4),
    range(ApiKey::CreateTopics, 2, 7),
    range(ApiKey::DeleteTopics, 1, 6),
    range(ApiKey::DeleteRecords, 0, 2),
    range(ApiKey::InitProducerId, 0, 5),
    range(ApiKey::AddPartitionsToTxn, 0, 5),
    range(ApiKey::AddOffsetsToTxn, 0, 4),
    range(ApiKey::EndTxn, 0, 5),
    range(ApiKey::TxnOffsetCommit, 0, 5),
    range(ApiKey::DescribeConfigs, 1, 4),
    range(ApiKey::AlterConfigs, 0, 2),
    range(ApiKey::DescribeLogDirs, 1, 4),
    range(ApiKey::CreatePartitions, 0, 3),
    range(ApiKey::DeleteGroups, 0, 2),
    range(ApiKey::IncrementalAlterConfigs, 0, 1),
    range(ApiKey::OffsetDelete, 0, 0),
    range(ApiKey::DescribeQuorum, 0, 2),
    range(ApiKey::DescribeCluster, 0, 2),
    range(ApiKey::DescribeProducers, 0, 0),
    range(ApiKey::DescribeTransactions, 0, 0),
    range(ApiKey::ListTransactions, 0, 1),
    range(ApiKey::ConsumerGroupHeartbeat, 0, 1),
    range(ApiKey::ConsumerGroupDescribe, 0, 1),
];

/// Every API Keel serves, in API key order.
pub fn advertised() -> &'static [ApiRange] {
    ADVERTISED
}

/// The advertised range of `api_key`, if Keel implements it.
pub fn lookup(api_key: ApiKey) -> Option<&'static ApiRange> {
    ADVERTISED.iter().find(|range| range.api_key == api_key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_served_version_is_decodable() {
        for range in advertised() {
            let decodable = range.api_key.valid_versions();
            assert!(
                range.min_served_version >= decodable.min && range.max_version <= decodable.max,
                "{:?} advertises {}..{} but the codec knows {}",
                range.api_key,
                range.min_served_version,
                range.max_version,
                decodable
            );
        }
    }

    #[test]
    fn sorted_by_api_key() {
        let keys: Vec<i16> = advertised().iter().map(|r| r.api_key as i16).collect();
        let mut sorted = keys.clone();
        sorted.sort_unstable();
        assert_eq!(keys, sorted);
    }
}
