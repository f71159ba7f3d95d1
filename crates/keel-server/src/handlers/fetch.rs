//! Fetch: whole batches from each partition's log, with long polling.
//!
//! A fetch answers at once when it has `min_bytes` of data or an error; otherwise it waits
//! (without holding up the connection's later requests) until an append wakes it or
//! `max_wait_ms` passes. Fetch sessions (KIP-227) are refused the way Kafka allows: every
//! response carries session id 0, so clients keep sending full fetches, and an incremental
//! fetch gets FETCH_SESSION_ID_NOT_FOUND.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::{FetchRequest, FetchResponse, ResponseKind, TopicName};
use keel_log::ReadSlice;
use uuid::Uuid;

use crate::broker::Broker;
use crate::error::ApiError;
use crate::network::{Reply, Response};

/// Upper bound on `max_wait_ms`, whatever a client asks.
const MAX_WAIT_MS_CAP: i32 = 60_000;

struct Wanted {
    topic: TopicName,
    topic_id: Uuid,
    /// Resolved name, `None` for an unknown topic id.
    name: Option<String>,
    partition: i32,
    fetch_offset: i64,
    partition_max_bytes: i32,
    current_leader_epoch: i32,
}

struct Plan {
    wanted: Vec<Wanted>,
    max_bytes: i32,
    min_bytes: i32,
    read_committed: bool,
    version: i16,
}

pub async fn handle(broker: &Arc<Broker>, request: FetchRequest, version: i16) -> Reply {
    // Sessions are refused: an incremental fetch names a session we never created.
    if request.session_epoch > 0 {
        let mut response = FetchResponse::default();
        response.error_code = ResponseError::FetchSessionIdNotFound.code();
        return Reply::Ready(Some(Response::Kind(ResponseKind::Fetch(response))));
    }
    let image = broker.image();
    let wanted = request
        .topics
        .into_iter()
        .flat_map(|topic| {
            let name = if version >= 13 {
                image.topic_by_id(&topic.topic_id).map(|t| t.name.clone())
            } else {
                Some(topic.topic.0.to_string())
            };
            // Copied so the response does not pin the request frame (see produce.rs).
            let (topic_name, topic_id) = (TopicName(super::str_bytes(topic.topic.0.as_str())), topic.topic_id);
            topic.partitions.into_iter().map(move |p| Wanted {
                topic: topic_name.clone(),
                topic_id,
                name: name.clone(),
                partition: p.partition,
                fetch_offset: p.fetch_offset,
                partition_max_bytes: p.partition_max_bytes,
                current_leader_epoch: p.current_leader_epoch,
            })
        })
        .collect();
    // The broker's own limit (Kafka's fetch.max.bytes) bounds what a client may ask for.
    let broker_max_bytes = broker.config(&image).broker_i64("fetch.max.bytes").unwrap_or(57_671_680);
    let plan = Plan {
        wanted,
        max_bytes: i64::from(request.max_bytes).min(broker_max_bytes).clamp(0, i64::from(i32::MAX)) as i32,
        min_bytes: request.min_bytes,
        read_committed: request.isolation_level == 1,
        version,
    };
    // Subscribe before the first read so that an append in between still wakes us.
    let mut appends = broker.subscribe_appends();
    let (output, bytes, errors) = read(broker, &plan);
    let max_wait_ms = request.max_wait_ms.clamp(0, MAX_WAIT_MS_CAP);
    if enough(bytes, plan.min_bytes) || errors || max_wait_ms == 0 || plan.wanted.is_empty() {
        return Reply::Ready(Some(sent(broker, &plan, output)));
    }
    let broker = broker.clone();
    Reply::Pending(tokio::spawn(async move {
        let deadline = tokio::time::Instant::now() + Duration::from_millis(max_wait_ms as u64);
        loop {
            let woke = tokio::time::timeout_at(deadline, appends.changed()).await;
            if !matches!(woke, Ok(Ok(()))) {
                break;
            }
            if !has_new_data(&broker, &plan) {
                continue;
            }
            let (output, bytes, errors) = read(&broker, &plan);
            if enough(bytes, plan.min_bytes) || errors {
                return Some(sent(&broker, &plan, output));
            }
        }
        Some(sent(&broker, &plan, read(&broker, &plan).0))
    }))
}

/// The response to send, counted in the per-topic fetched bytes and records.
fn sent(broker: &Broker, plan: &Plan, output: FetchOutput) -> Response {
    for (wanted, slice) in plan.wanted.iter().zip(&output.slices) {
        if let (Some(name), Some(slice)) = (&wanted.name, slice) {
            if slice.len > 0 {
                let records = u64::try_from(slice.last_offset - slice.first_offset + 1).unwrap_or(0);
                broker.metrics.fetched(name, slice.len as u64, records);
            }
        }
    }
    Response::Fetch(output)
}

/// Kafka answers as soon as `min_bytes` are available; `min_bytes` ≤ 0 answers at once.
fn enough(bytes: usize, min_bytes: i32) -> bool {
    bytes as i64 >= i64::from(min_bytes)
}

/// True when some requested partition has data at or past its fetch offset.
fn has_new_data(broker: &Broker, plan: &Plan) -> bool {
    plan.wanted.iter().any(|w| {
        w.name
            .as_deref()
            .and_then(|name| broker.partition(name, w.partition))
            .is_some_and(|p| p.high_watermark() > w.fetch_offset)
    })
}

/// A Fetch response whose records are file ranges, read or sent when the response is written.
pub struct FetchOutput {
    /// The response with `records` unset for the partitions that have a slice.
    pub response: FetchResponse,
    /// One entry per partition of the response, in order.
    pub slices: Vec<Option<ReadSlice>>,
}

/// Reads every requested partition; returns the response, the record bytes in it, and whether
/// any partition has an error.
fn read(broker: &Broker, plan: &Plan) -> (FetchOutput, usize, bool) {
    let mut topics: Vec<FetchableTopicResponse> = Vec::new();
    let mut remaining = plan.max_bytes.max(0) as usize;
    let mut total = 0usize;
    let mut errors = false;
    let mut slices = Vec::with_capacity(plan.wanted.len());
    for wanted in &plan.wanted {
        let mut data = PartitionData::default();
        data.partition_index = wanted.partition;
        // KIP-74: the first batch of the first non-empty partition is returned even when it
        // exceeds the limits, so that a consumer never stalls on a large batch.
        let min_one_batch = total == 0;
        match read_partition(broker, plan, wanted, remaining, min_one_batch, &mut data) {
            Ok(slice) => {
                total += slice.len;
                remaining = remaining.saturating_sub(slice.len);
                slices.push(Some(slice));
            }
            Err(error) => {
                errors = true;
                data.error_code = error.code();
                data.high_watermark = -1;
                data.last_stable_offset = -1;
                data.records = Some(Bytes::new());
                slices.push(None);
            }
        }
        let same_topic = topics.last().is_some_and(|t| {
            if plan.version >= 13 {
                t.topic_id == wanted.topic_id
            } else {
                t.topic == wanted.topic
            }
        });
        if !same_topic {
            let mut topic = FetchableTopicResponse::default();
            if plan.version >= 13 {
                topic.topic_id = wanted.topic_id;
            } else {
                topic.topic = wanted.topic.clone();
            }
            topics.push(topic);
        }
        if let Some(topic) = topics.last_mut() {
            topic.partitions.push(data);
        }
    }
    let mut response = FetchResponse::default();
    response.responses = topics;
    (FetchOutput { response, slices }, total, errors)
}

fn read_partition(
    broker: &Broker,
    plan: &Plan,
    wanted: &Wanted,
    remaining: usize,
    min_one_batch: bool,
    data: &mut PartitionData,
) -> Result<ReadSlice, ApiError> {
    let name = wanted.name.as_deref().ok_or(ResponseError::UnknownTopicId)?;
    let partition = broker.partition(name, wanted.partition).ok_or_else(|| broker.not_led(name, wanted.partition))?;
    check_leader_epoch(wanted.current_leader_epoch, partition.leader_epoch())?;
    let high_watermark = partition.high_watermark();
    let last_stable_offset = partition.last_stable_offset();
    data.high_watermark = high_watermark;
    data.last_stable_offset = last_stable_offset;
    if plan.version >= 5 {
        data.log_start_offset = partition.log.log_start_offset();
    }
    let upper_bound = if plan.read_committed { last_stable_offset } else { high_watermark };
    let max_bytes = remaining.min(wanted.partition_max_bytes.max(0) as usize);
    let slice = partition.log.read(wanted.fetch_offset, max_bytes, upper_bound, min_one_batch)?;
    if plan.read_committed {
        // The transactions aborted within what is returned: the client drops their records.
        let aborted = if slice.is_empty() {
            Vec::new()
        } else {
            partition.log.aborted_transactions(wanted.fetch_offset, slice.last_offset + 1)
        };
        data.aborted_transactions = Some(
            aborted
                .into_iter()
                .map(|a| {
                    let mut txn = kafka_protocol::messages::fetch_response::AbortedTransaction::default();
                    txn.producer_id = kafka_protocol::messages::ProducerId(a.producer_id);
                    txn.first_offset = a.first_offset;
                    txn
                })
                .collect(),
        );
    }
    Ok(slice)
}

/// KIP-320: a client that knows a newer epoch than ours is ahead of us; one with an older
/// epoch is fenced. -1 means the client does not check.
pub fn check_leader_epoch(requested: i32, current: i32) -> Result<(), ApiError> {
    if requested < 0 || requested == current {
        Ok(())
    } else if requested > current {
        Err(ApiError::new(ResponseError::UnknownLeaderEpoch))
    } else {
        Err(ApiError::new(ResponseError::FencedLeaderEpoch))
    }
}
