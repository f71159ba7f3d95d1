//! The records of `__transaction_state` (Kafka's `TransactionLogKey` and `TransactionLogValue`
//! at version 0, non-flexible):
//!
//! - key: version int16 (0), TransactionalId string;
//! - value: version int16 (0), ProducerId int64, ProducerEpoch int16, TransactionTimeoutMs
//!   int32, TransactionStatus int8, TransactionPartitions nullable [Topic string, PartitionIds
//!   [int32]], TransactionLastUpdateTimestampMs int64, TransactionStartTimestampMs int64.
//!
//! A tombstone (no value) removes an expired transactional id.

use std::collections::{BTreeMap, BTreeSet};

use super::{Reader, RecordError, Writer};

pub const TRANSACTION_LOG_KEY_VERSION: i16 = 0;
pub const TRANSACTION_LOG_VALUE_VERSION: i16 = 0;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransactionLogValue {
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub transaction_timeout_ms: i32,
    /// Kafka's `TransactionState` id: 0 Empty, 1 Ongoing, 2 PrepareCommit, 3 PrepareAbort,
    /// 4 CompleteCommit, 5 CompleteAbort, 6 Dead, 7 PrepareEpochFence.
    pub transaction_status: i8,
    pub partitions: BTreeSet<(String, i32)>,
    pub last_update_timestamp_ms: i64,
    pub start_timestamp_ms: i64,
}

pub fn encode_transaction_key(transactional_id: &str) -> Result<Vec<u8>, RecordError> {
    let mut w = Writer::new(false);
    w.i16(TRANSACTION_LOG_KEY_VERSION);
    w.string("transactional_id", transactional_id)?;
    Ok(w.finish())
}

/// The transactional id of a `__transaction_state` key.
pub fn decode_transaction_key(bytes: &[u8]) -> Result<String, RecordError> {
    let mut r = Reader::new(bytes);
    let version = r.i16("key version")?;
    if version != TRANSACTION_LOG_KEY_VERSION {
        return Err(RecordError::UnsupportedVersion { record: "transaction log key", version });
    }
    r.string("transactional_id")
}

impl TransactionLogValue {
    pub fn encode(&self) -> Result<Vec<u8>, RecordError> {
        let mut w = Writer::new(false);
        w.i16(TRANSACTION_LOG_VALUE_VERSION);
        w.i64(self.producer_id);
        w.i16(self.producer_epoch);
        w.i32(self.transaction_timeout_ms);
        w.buf.push(self.transaction_status as u8);
        let mut by_topic: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
        for (topic, partition) in &self.partitions {
            by_topic.entry(topic).or_default().push(*partition);
        }
        w.array_len(by_topic.len())?;
        for (topic, partitions) in by_topic {
            w.string("topic", topic)?;
            w.array_len(partitions.len())?;
            for partition in partitions {
                w.i32(partition);
            }
        }
        w.i64(self.last_update_timestamp_ms);
        w.i64(self.start_timestamp_ms);
        Ok(w.finish())
    }

    pub fn decode(bytes: &[u8]) -> Result<TransactionLogValue, RecordError> {
        let mut r = Reader::new(bytes);
        let version = r.i16("value version")?;
        if version != TRANSACTION_LOG_VALUE_VERSION {
            return Err(RecordError::UnsupportedVersion { record: "transaction log value", version });
        }
        let producer_id = r.i64("producer_id")?;
        let producer_epoch = r.i16("producer_epoch")?;
        let transaction_timeout_ms = r.i32("transaction_timeout_ms")?;
        let transaction_status = r.take("transaction_status", 1)?[0] as i8;
        let mut partitions = BTreeSet::new();
        let topics = r.i32("partitions")?;
        for _ in 0..topics.max(0) {
            let topic = r.string("topic")?;
            let count = r.array_len("partition_ids")?;
            for _ in 0..count {
                partitions.insert((topic.clone(), r.i32("partition_id")?));
            }
        }
        let last_update_timestamp_ms = r.i64("last_update_timestamp_ms")?;
        let start_timestamp_ms = r.i64("start_timestamp_ms")?;
        Ok(TransactionLogValue {
            producer_id,
            producer_epoch,
            transaction_timeout_ms,
            transaction_status,
            partitions,
            last_update_timestamp_ms,
            start_timestamp_ms,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transaction_records_round_trip() {
        let key = encode_transaction_key("my-txn").unwrap();
        assert_eq!(key, [0, 0, 0, 6, b'm', b'y', b'-', b't', b'x', b'n']);
        assert_eq!(decode_transaction_key(&key).unwrap(), "my-txn");
        let value = TransactionLogValue {
            producer_id: 42,
            producer_epoch: 3,
            transaction_timeout_ms: 60_000,
            transaction_status: 1,
            partitions: [("a".to_string(), 0), ("a".to_string(), 2), ("b".to_string(), 1)].into_iter().collect(),
            last_update_timestamp_ms: 1_000,
            start_timestamp_ms: 900,
        };
        let bytes = value.encode().unwrap();
        assert_eq!(TransactionLogValue::decode(&bytes).unwrap(), value);
        for cut in 0..bytes.len() {
            assert!(TransactionLogValue::decode(&bytes[..cut]).is_err());
        }
    }
}
