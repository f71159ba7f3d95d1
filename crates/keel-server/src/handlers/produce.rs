//! Produce: validate each partition's batch, append it, and answer per `acks`.
//!
//! Batches stay bytes: the broker checks them (CRC, structure, size, no client control
//! batches) and the log patches base offset and leader epoch in place. `acks=-1` answers once
//! the appended data is fsynced (group commit: concurrent producers share an fsync), unless
//! the topic sets `flush.messages`/`flush.ms` (Kafka's page-cache mode, `waits_for_fsync`);
//! `acks=1` answers once it is in the page cache; `acks=0` never answers, and closes the
//! connection on error as Kafka does. A failed write or fsync (a full disk) answers
//! KAFKA_STORAGE_ERROR and leaves the log as it was.

use std::cell::RefCell;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse, ResponseKind, TopicName};
use keel_log::batch::{self, BatchHeader, TimestampType};
use keel_log::{Log, LogError};

use super::str_bytes;
use crate::broker::{now_ms, Broker};
use crate::error::ApiError;
use crate::network::{Reply, Response};
use crate::partition::Partition;

mod validate;

/// Bit 3 of the batch attributes: timestamps are the broker's append time.
const LOG_APPEND_TIME_FLAG: i16 = 1 << 3;
/// Offset of `attributes` and `maxTimestamp` in a batch header.
const ATTRIBUTES_AT: usize = 21;
const MAX_TIMESTAMP_AT: usize = 35;

thread_local! {
    /// The append buffer: the batch is copied here to be patched, reused across requests.
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

struct Appended {
    log: Arc<Log>,
    next_offset: i64,
    /// The answer waits for an fsync covering the append.
    wait_fsync: bool,
}

/// Whether an append's answer waits for an fsync that covers it. Keel's default durability,
/// with `flush.messages` and `flush.ms` unset: every `acks=all` answer follows the fsync
/// (group commit), `acks=1` answers from the page cache. Setting either selects Kafka's
/// page-cache mode, where fsyncs follow those configs alone: the append that leaves
/// `flush.messages` records unflushed waits for an fsync before its answer (as Kafka's
/// append flushes in line), the background flusher applies both configs, and `acks=all` means
/// written to every in-sync replica's page cache, as in Kafka.
fn waits_for_fsync(log: &Log, acks: i16) -> bool {
    let config = log.config();
    if config.flush_messages.is_none() && config.flush_ms.is_none() {
        return acks == -1;
    }
    let unflushed = (log.log_end_offset() - log.durable_offset()).max(0) as u64;
    acks != 0 && config.flush_messages.is_some_and(|messages| unflushed >= messages)
}

pub async fn handle(broker: &Arc<Broker>, request: ProduceRequest, version: i16) -> Reply {
    let acks = request.acks;
    let transactional_id = request.transactional_id.as_ref().map(|id| id.to_string());
    let mut failed = false;
    let mut appended = Vec::new();
    let mut responses = Vec::with_capacity(request.topic_data.len());
    for topic in request.topic_data {
        let name = if version >= 13 {
            broker.image().topic_by_id(&topic.topic_id).map(|t| t.name.clone())
        } else {
            Some(topic.name.0.to_string())
        };
        let mut topic_response = TopicProduceResponse::default();
        // A copy, not a slice of the request frame: a response holding a slice would keep the
        // whole frame alive until it is written, and the connection's read buffer could not
        // be reused for the next frame.
        topic_response.name = TopicName(str_bytes(topic.name.0.as_str()));
        topic_response.topic_id = topic.topic_id;
        for data in topic.partition_data {
            let mut response = PartitionProduceResponse::default();
            response.index = data.index;
            let result = match (&name, acks) {
                (_, a) if !matches!(a, -1..=1) => Err(ApiError::new(ResponseError::InvalidRequiredAcks)),
                (None, _) => Err(ApiError::new(ResponseError::UnknownTopicId)),
                (Some(name), _) => {
                    let records = data.records.as_deref();
                    append(broker, name, data.index, records, acks, version, transactional_id.as_deref()).await
                }
            };
            match result {
                Ok((partition, info, log_append_time)) => {
                    let bytes = data.records.as_ref().map_or(0, |r| r.len() as u64);
                    let records = u64::try_from(info.last_offset - info.base_offset + 1).unwrap_or(0);
                    broker.metrics.produced(&partition.topic, bytes, records);
                    response.base_offset = info.base_offset;
                    response.log_append_time_ms = log_append_time;
                    if version >= 5 {
                        response.log_start_offset = partition.log.log_start_offset();
                    }
                    appended.push(Appended {
                        log: partition.log.clone(),
                        next_offset: info.last_offset + 1,
                        wait_fsync: waits_for_fsync(&partition.log, acks),
                    });
                }
                Err(error) => {
                    failed = true;
                    response.error_code = for_version(error.code(), version);
                    if version >= 8 {
                        response.record_errors = validate::response_record_errors(&error.record_errors);
                        response.error_message = error.message.map(str_bytes);
                    }
                    response.base_offset = -1;
                }
            }
            topic_response.partition_responses.push(response);
        }
        if version >= 13 {
            topic_response.name = TopicName::default();
        }
        responses.push(topic_response);
    }
    if !appended.is_empty() {
        broker.notify_append();
    }
    let mut response = ProduceResponse::default();
    response.responses = responses;
    let waits = appended.iter().any(|a| a.wait_fsync);
    match acks {
        0 if failed => Reply::Close,
        0 => Reply::Ready(None),
        _ if waits => Reply::Pending(tokio::spawn(async move {
            wait_durable(appended, &mut response, version).await;
            Some(Response::Kind(ResponseKind::Produce(response)))
        })),
        _ => Reply::Ready(Some(Response::Kind(ResponseKind::Produce(response)))),
    }
}

/// Waits until every appended partition that needs it is fsynced to its appended end; a
/// partition whose flush fails reports KAFKA_STORAGE_ERROR instead of its offset.
async fn wait_durable(appended: Vec<Appended>, response: &mut ProduceResponse, version: i16) {
    // One result per appended partition, in response order; those that need no fsync are Ok.
    let flushes: Vec<_> = appended
        .into_iter()
        .map(|a| {
            a.wait_fsync
                .then(|| tokio::task::spawn_blocking(move || a.log.flush_to(a.next_offset).map_err(|e| e.to_string())))
        })
        .collect();
    let mut results = Vec::with_capacity(flushes.len());
    for flush in flushes {
        results.push(match flush {
            None => Ok(0),
            Some(flush) => flush.await.unwrap_or_else(|error| Err(error.to_string())),
        });
    }
    let mut results = results.into_iter();
    for partition in response.responses.iter_mut().flat_map(|t| t.partition_responses.iter_mut()) {
        if partition.error_code != 0 {
            continue;
        }
        if let Some(Err(error)) = results.next() {
            warn_storage_error(&error);
            partition.error_code = for_version(ResponseError::KafkaStorageError.code(), version);
            if version >= 8 {
                partition.error_message = Some(str_bytes(error));
            }
            partition.base_offset = -1;
            partition.log_start_offset = -1;
        }
    }
}

/// KAFKA_STORAGE_ERROR (a failed write or fsync: a full disk, an I/O error) is answered from
/// Produce v4 on; ProduceRequest.json: "Version 4 is the same as version 3, but the requester
/// must be prepared to handle a KAFKA_STORAGE_ERROR". A v3 client gets the retriable
/// NOT_LEADER_OR_FOLLOWER, which makes it refresh metadata and retry.
fn for_version(error_code: i16, version: i16) -> i16 {
    if version < 4 && error_code == ResponseError::KafkaStorageError.code() {
        ResponseError::NotLeaderOrFollower.code()
    } else {
        error_code
    }
}

async fn append(
    broker: &Arc<Broker>,
    topic: &str,
    index: i32,
    records: Option<&[u8]>,
    acks: i16,
    version: i16,
    transactional_id: Option<&str>,
) -> Result<(Arc<Partition>, keel_log::AppendInfo, i64), ApiError> {
    let partition = match broker.partition(topic, index) {
        Some(partition) => partition,
        None => {
            let image = broker.image();
            if image.topic(topic).is_none() {
                crate::controller::validate_topic_name(topic)?;
                broker.auto_create_topic(topic).await?;
            }
            broker.partition(topic, index).ok_or_else(|| broker.not_led(topic, index))?
        }
    };
    // Only the broker writes its internal topics (Kafka: "Cannot append to internal topic").
    if keel_cluster::metadata::is_internal_topic(topic) {
        return Err(ApiError::with(
            ResponseError::InvalidTopicException,
            format!("cannot append to internal topic {topic}"),
        ));
    }
    let records = records.ok_or_else(|| ApiError::with(ResponseError::InvalidRecord, "no records"))?;
    let image = broker.image();
    let view = broker.config(&image);
    let max_message_bytes = view.topic_i64(topic, "max.message.bytes").unwrap_or(1_048_588).max(0) as usize;
    let summary = batch::validate_batches(records, max_message_bytes).map_err(|e| ApiError::from(&e))?;
    // Since v3 a partition's data is exactly one batch (KIP-98).
    if summary.batch_count != 1 {
        return Err(ApiError::with(
            ResponseError::InvalidRecord,
            "produce requests since v3 must contain exactly one record batch per partition",
        ));
    }
    check_batch(&summary.first, version)?;
    if summary.first.is_transactional() {
        verify_transaction(broker, transactional_id, &summary.first, topic, index).await?;
    }
    let min_insync = view.topic_i64(topic, "min.insync.replicas").unwrap_or(1);
    let isr = image.topic(topic).and_then(|t| t.partitions.get(&index)).map_or(0, |p| p.isr.len() as i64);
    if acks == -1 && isr < min_insync {
        return Err(ApiError::with(
            ResponseError::NotEnoughReplicas,
            format!("{isr} in-sync replicas, min.insync.replicas is {min_insync}"),
        ));
    }
    let rules = validate::RecordRules::of(&view, topic);
    let log_append_time = rules.log_append_time;
    let now = now_ms();
    let records = validate::apply(&rules, records, &summary.first, now)?;
    let info = SCRATCH
        .with(|scratch| {
            let mut buf = scratch.borrow_mut();
            buf.clear();
            buf.extend_from_slice(&records);
            if log_append_time {
                set_log_append_time(&mut buf, now);
            }
            partition.log.append(&mut buf, partition.leader_epoch(), now)
        })
        .inspect_err(|error| {
            if matches!(error, LogError::Io { .. } | LogError::Failed { .. }) {
                warn_storage_error(error);
            }
        })?;
    // A retried batch is answered with its original offsets (Kafka gives no append time then).
    Ok((partition, info, if log_append_time && !info.duplicate { now } else { -1 }))
}

/// Logs a failed write or fsync (a full disk, an I/O error) at most every ten seconds:
/// producers retry every batch, and a full disk would otherwise write a line per request. The
/// error names the file (and so the partition).
fn warn_storage_error(error: &dyn std::fmt::Display) {
    static LAST_WARNING_MS: AtomicI64 = AtomicI64::new(i64::MIN);
    let now = now_ms();
    let last = LAST_WARNING_MS.load(Ordering::Relaxed);
    if now.saturating_sub(last) >= 10_000
        && LAST_WARNING_MS.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok()
    {
        tracing::warn!(%error, "produce failed with KAFKA_STORAGE_ERROR (repeats are not logged for 10 s)");
    }
}

/// Checks Kafka applies beyond the batch structure.
fn check_batch(header: &BatchHeader, version: i16) -> Result<(), ApiError> {
    match header.compression() {
        batch::Compression::Unknown(codec) => {
            return Err(ApiError::with(
                ResponseError::UnsupportedCompressionType,
                format!("unknown compression codec {codec}"),
            ))
        }
        // zstd needs Produce v7 (KIP-110).
        batch::Compression::Zstd if version < 7 => {
            return Err(ApiError::new(ResponseError::UnsupportedCompressionType))
        }
        _ => {}
    }
    Ok(())
}

/// KIP-890 part 1: a transactional batch is written only if its partition is part of the
/// producer's open transaction, so a late write of a zombie or an aborted transaction cannot
/// start a transaction the coordinator knows nothing of.
async fn verify_transaction(
    broker: &Arc<Broker>,
    transactional_id: Option<&str>,
    header: &BatchHeader,
    topic: &str,
    index: i32,
) -> Result<(), ApiError> {
    let Some(transactional_id) = transactional_id.filter(|id| !id.is_empty()) else {
        return Err(ApiError::with(ResponseError::InvalidTxnState, "a transactional batch needs the transactional id"));
    };
    let verified = broker
        .ask_transactions(transactional_id, |reply| crate::transactions::Command::Verify {
            transactional_id: transactional_id.to_string(),
            producer_id: header.producer_id,
            producer_epoch: header.producer_epoch,
            partition: (topic.to_string(), index),
            reply,
        })
        .await;
    match verified {
        Some(true) => Ok(()),
        Some(false) => Err(ApiError::with(
            ResponseError::InvalidTxnState,
            format!("{topic}-{index} is not part of an open transaction of this producer"),
        )),
        None => Err(ApiError::new(ResponseError::NotEnoughReplicas)),
    }
}

/// `message.timestamp.type=LogAppendTime`: the broker's clock stamps the batch. This changes
/// CRC-covered bytes, so the CRC is recomputed.
fn set_log_append_time(batch: &mut [u8], now: i64) {
    if batch.len() < batch::HEADER_BYTES {
        return;
    }
    let attributes = i16::from_be_bytes([batch[ATTRIBUTES_AT], batch[ATTRIBUTES_AT + 1]]) | LOG_APPEND_TIME_FLAG;
    batch[ATTRIBUTES_AT..ATTRIBUTES_AT + 2].copy_from_slice(&attributes.to_be_bytes());
    batch[MAX_TIMESTAMP_AT..MAX_TIMESTAMP_AT + 8].copy_from_slice(&now.to_be_bytes());
    batch::recompute_crc(batch);
    debug_assert!(BatchHeader::parse(batch).is_ok_and(|h| h.timestamp_type() == TimestampType::LogAppendTime));
}
