//! ListOffsets: earliest, latest, by timestamp and max timestamp.

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::list_offsets_response::{ListOffsetsPartitionResponse, ListOffsetsTopicResponse};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};

use super::fetch::check_leader_epoch;
use crate::broker::Broker;
use crate::error::ApiError;
use crate::partition::Partition;

const LATEST: i64 = -1;
const EARLIEST: i64 = -2;
const MAX_TIMESTAMP: i64 = -3;
const EARLIEST_LOCAL: i64 = -4;
const LATEST_TIERED: i64 = -5;
const EARLIEST_PENDING_UPLOAD: i64 = -6;

pub fn handle(broker: &Broker, request: ListOffsetsRequest, version: i16) -> ListOffsetsResponse {
    let read_committed = request.isolation_level == 1;
    let mut response = ListOffsetsResponse::default();
    for topic in request.topics {
        let mut topic_response = ListOffsetsTopicResponse::default();
        topic_response.name = topic.name.clone();
        for wanted in topic.partitions {
            let mut partition_response = ListOffsetsPartitionResponse::default();
            partition_response.partition_index = wanted.partition_index;
            let result = broker
                .partition(topic.name.0.as_str(), wanted.partition_index)
                .ok_or_else(|| broker.not_led(topic.name.0.as_str(), wanted.partition_index))
                .and_then(|partition| {
                    check_leader_epoch(wanted.current_leader_epoch, partition.leader_epoch())?;
                    lookup(&partition, wanted.timestamp, read_committed)
                });
            match result {
                Ok((offset, timestamp, leader_epoch)) => {
                    partition_response.offset = offset;
                    partition_response.timestamp = timestamp;
                    if version >= 4 {
                        partition_response.leader_epoch = leader_epoch;
                    }
                }
                Err(error) => {
                    partition_response.error_code = error.code();
                    partition_response.offset = -1;
                    partition_response.timestamp = -1;
                }
            }
            topic_response.partitions.push(partition_response);
        }
        response.topics.push(topic_response);
    }
    response
}

/// (offset, timestamp, leader epoch of that offset); offset -1 when nothing matches.
fn lookup(partition: &Partition, target: i64, read_committed: bool) -> Result<(i64, i64, i32), ApiError> {
    let log = &partition.log;
    let epoch_of = |offset: i64| {
        log.epoch_entries()
            .iter()
            .rev()
            .find(|(_, start)| *start <= offset)
            .map_or(partition.leader_epoch(), |(epoch, _)| *epoch)
    };
    let latest = if read_committed { partition.last_stable_offset() } else { partition.high_watermark() };
    let found = match target {
        LATEST => Some((latest, -1)),
        EARLIEST | EARLIEST_LOCAL => Some((log.log_start_offset(), -1)),
        // No tiered storage: nothing is uploaded or pending upload.
        LATEST_TIERED | EARLIEST_PENDING_UPLOAD => Some((-1, -1)),
        MAX_TIMESTAMP => match log.max_timestamp_batch()? {
            Some((_, batch)) => record_with(batch, |timestamp, best| timestamp > best, latest),
            None => None,
        },
        target if target >= 0 => match log.find_batch_by_timestamp(target)? {
            Some((_, batch)) => {
                let start = log.log_start_offset();
                first_record_at_or_after(batch, target, start, latest)
            }
            None => None,
        },
        other => {
            return Err(ApiError::with(ResponseError::InvalidRequest, format!("unknown timestamp {other}")));
        }
    };
    Ok(match found {
        Some((offset, timestamp)) if offset >= 0 => (offset, timestamp, epoch_of(offset)),
        Some((offset, timestamp)) => (offset, timestamp, -1),
        None => (-1, -1, -1),
    })
}

/// The most a stored batch may inflate to when its records are decoded (a compressed batch
/// can claim any size; see `keel_protocol::records`).
const INFLATED_BATCH_MAX_BYTES: usize = 128 << 20;

/// Decodes a stored batch (decompressing if needed) into (offset, timestamp) pairs. In a
/// LogAppendTime batch every record's timestamp is the batch's append time (its maxTimestamp).
fn records(batch: Vec<u8>) -> Vec<(i64, i64)> {
    let append_time = keel_log::BatchHeader::parse(&batch)
        .ok()
        .filter(|h| h.timestamp_type() == keel_log::batch::TimestampType::LogAppendTime)
        .map(|h| h.max_timestamp);
    match keel_protocol::records::decode_batch(Bytes::from(batch), INFLATED_BATCH_MAX_BYTES) {
        Ok(set) => set.records.iter().map(|r| (r.offset, append_time.unwrap_or(r.timestamp))).collect(),
        Err(error) => {
            tracing::warn!(%error, "cannot decode a stored batch for a timestamp lookup");
            Vec::new()
        }
    }
}

fn first_record_at_or_after(batch: Vec<u8>, target: i64, start: i64, latest: i64) -> Option<(i64, i64)> {
    records(batch).into_iter().find(|&(offset, timestamp)| timestamp >= target && offset >= start && offset < latest)
}

/// The record picked by `better` (the first of equals), among those below `latest`.
fn record_with(batch: Vec<u8>, better: impl Fn(i64, i64) -> bool, latest: i64) -> Option<(i64, i64)> {
    records(batch).into_iter().filter(|&(offset, _)| offset < latest).fold(None, |best, (offset, timestamp)| match best
    {
        Some((_, best_ts)) if !better(timestamp, best_ts) => best,
        _ => Some((offset, timestamp)),
    })
}
