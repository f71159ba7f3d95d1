//! The message browser: records of one topic from an offset, a timestamp, the beginning or the
//! end, of one partition or all, with an optional text filter.
//!
//! Offsets come from the ListOffsets handler (beginning, end, by timestamp) and records from
//! the Fetch handler (read_uncommitted, no waiting), as a Kafka consumer would get them. Every
//! request is bounded: at most `LIMIT_MAX` records returned (`RECORDS_KEPT_MAX` looked at over
//! all partitions), `SCAN_BYTES_MAX` bytes of batches read or inflated, and
//! `VALUE_SHOWN_BYTES_MAX` bytes shown per key, value or header; the answer says where each
//! partition stopped so that the page can continue from there.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::response::Response;
use bytes::{Buf, Bytes};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::{FetchRequest, ListOffsetsRequest, ResponseKind, TopicName};
use kafka_protocol::records::TimestampType;
use keel_protocol::read_committed::AbortedFilter;
use serde_json::{json, Value};

use super::{json, query_params, ApiError, Console};
use crate::broker::Broker;
use crate::handlers::{self, str_bytes};
use crate::network::{Reply, Response as KafkaResponse};

/// The most records one request returns.
pub const LIMIT_MAX: usize = 500;
const LIMIT_DEFAULT: usize = 50;
/// The most bytes of batches one request reads, and of records it inflates (over all partitions).
pub const SCAN_BYTES_MAX: usize = 8 << 20;
/// The most records one request keeps before choosing the `limit` it returns (over all
/// partitions: each may contribute up to `limit`).
const RECORDS_KEPT_MAX: usize = 4 * LIMIT_MAX;
/// Bytes read per fetch of one partition.
const FETCH_BYTES: i32 = 1 << 20;
/// A compressed batch may inflate to at most this much.
const INFLATED_BATCH_BYTES_MAX: usize = 16 << 20;
/// A key, value or header value longer than this is cut (the answer says so).
pub const VALUE_SHOWN_BYTES_MAX: usize = 64 << 10;
/// The longest filter accepted.
const FILTER_CHARS_MAX: usize = 200;
/// How many partitions one request reads at most (all partitions of a topic with more are cut).
const PARTITIONS_MAX: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq)]
enum From {
    Beginning,
    End,
    Offset(i64),
    Timestamp(i64),
}

#[derive(Debug)]
struct Query {
    partition: Option<i32>,
    from: From,
    limit: usize,
    filter: Option<String>,
}

fn parse_query(raw: Option<&str>) -> Result<Query, ApiError> {
    let params: HashMap<String, String> = query_params(raw);
    let number = |name: &str| -> Result<Option<i64>, ApiError> {
        match params.get(name).map(|v| v.trim()).filter(|v| !v.is_empty()) {
            None => Ok(None),
            Some(v) => v
                .parse::<i64>()
                .map(Some)
                .map_err(|_| ApiError::bad_request(format!("'{name}' must be a whole number, not '{v}'."))),
        }
    };
    let partition = match number("partition")? {
        None => None,
        Some(p) if (0..=i64::from(i32::MAX)).contains(&p) => Some(p as i32),
        Some(p) => return Err(ApiError::bad_request(format!("'partition' must be 0 or more, not {p}."))),
    };
    let from = match params.get("from").map(String::as_str).unwrap_or("end") {
        "beginning" => From::Beginning,
        "end" => From::End,
        "offset" => match number("offset")? {
            Some(offset) if offset >= 0 => From::Offset(offset),
            Some(offset) => return Err(ApiError::bad_request(format!("'offset' must be 0 or more, not {offset}."))),
            None => return Err(ApiError::bad_request("Give an 'offset' to start from.")),
        },
        "timestamp" => match number("timestamp")? {
            Some(ms) if ms >= 0 => From::Timestamp(ms),
            Some(ms) => {
                return Err(ApiError::bad_request(format!(
                    "'timestamp' must be milliseconds since 1970 (0 or more), not {ms}."
                )))
            }
            None => return Err(ApiError::bad_request("Give a 'timestamp' (milliseconds since 1970) to start from.")),
        },
        other => {
            return Err(ApiError::bad_request(format!(
                "'from' must be one of beginning, end, offset, timestamp, not '{other}'."
            )))
        }
    };
    let limit = match number("limit")? {
        None => LIMIT_DEFAULT,
        Some(n) if (1..=LIMIT_MAX as i64).contains(&n) => n as usize,
        Some(n) => return Err(ApiError::bad_request(format!("'limit' must be between 1 and {LIMIT_MAX}, not {n}."))),
    };
    let filter = params.get("filter").map(|f| f.trim().to_lowercase()).filter(|f| !f.is_empty());
    if filter.as_ref().is_some_and(|f| f.chars().count() > FILTER_CHARS_MAX) {
        return Err(ApiError::bad_request(format!("The filter may have at most {FILTER_CHARS_MAX} characters.")));
    }
    Ok(Query { partition, from, limit, filter })
}

pub async fn messages(
    State(console): State<Arc<Console>>,
    Path(name): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let broker = console.broker()?;
    let query = parse_query(raw.as_deref())?;
    let image = broker.image();
    let Some(topic) = image.topic(&name) else {
        return Err(ApiError::kafka(
            kafka_protocol::error::ResponseError::UnknownTopicOrPartition.code(),
            Some(&format!("topic '{name}' does not exist")),
        ));
    };
    let partitions: Vec<i32> = match query.partition {
        Some(p) if topic.partitions.contains_key(&p) => vec![p],
        Some(p) => {
            return Err(ApiError::kafka(
                kafka_protocol::error::ResponseError::UnknownTopicOrPartition.code(),
                Some(&format!("topic '{name}' has no partition {p} (it has {})", topic.partitions.len())),
            ))
        }
        None => topic.partitions.keys().copied().take(PARTITIONS_MAX).collect(),
    };
    let mut records = Vec::new();
    let mut positions = Vec::new();
    let mut scan_budget = SCAN_BYTES_MAX;
    for &partition in &partitions {
        let (start, end) = start_offset(&broker, &name, partition, query.from, query.limit)?;
        let kept_room = RECORDS_KEPT_MAX.saturating_sub(records.len()).min(query.limit);
        let mut read = if kept_room == 0 {
            PartitionRead { records: Vec::new(), next_offset: start, scanned: 0 }
        } else {
            read_partition(&broker, &name, partition, (start, end), kept_room, &query, &mut scan_budget).await?
        };
        positions.push(json!({
            "partition": partition,
            "start_offset": start,
            "next_offset": read.next_offset,
            "high_watermark": end,
            "scanned": read.scanned,
        }));
        records.append(&mut read.records);
    }
    // Partitions interleave by time; "end" keeps the newest `limit`, the others the oldest.
    records.sort_by_key(|r| (r.timestamp, r.partition, r.offset));
    let truncated = records.len() > query.limit;
    if truncated {
        if query.from == From::End {
            records.drain(..records.len() - query.limit);
        } else {
            records.truncate(query.limit);
        }
    }
    Ok(json(json!({
        "topic": name,
        "records": records.into_iter().map(|r| r.json).collect::<Vec<_>>(),
        "partitions": positions,
        "limit": query.limit,
        "more": truncated,
    })))
}

/// Where to start reading `partition`, and its high watermark.
fn start_offset(
    broker: &Broker,
    topic: &str,
    partition: i32,
    from: From,
    limit: usize,
) -> Result<(i64, i64), ApiError> {
    let earliest = list_offset(broker, topic, partition, -2)?;
    let latest = list_offset(broker, topic, partition, -1)?;
    let start = match from {
        From::Beginning => earliest,
        From::End => (latest - limit as i64).max(earliest),
        From::Offset(offset) => offset.clamp(earliest, latest),
        // No record at or after the time: nothing to show, start at the end.
        From::Timestamp(ms) => match list_offset(broker, topic, partition, ms)? {
            -1 => latest,
            offset => offset,
        },
    };
    Ok((start, latest))
}

/// ListOffsets for one partition (`timestamp` -2 earliest, -1 latest, or a time).
fn list_offset(broker: &Broker, topic: &str, partition: i32, timestamp: i64) -> Result<i64, ApiError> {
    let mut wanted = ListOffsetsPartition::default();
    wanted.partition_index = partition;
    wanted.timestamp = timestamp;
    wanted.current_leader_epoch = -1;
    let mut topic_request = ListOffsetsTopic::default();
    topic_request.name = TopicName(str_bytes(topic));
    topic_request.partitions.push(wanted);
    let mut request = ListOffsetsRequest::default();
    request.replica_id = kafka_protocol::messages::BrokerId(-1);
    request.topics.push(topic_request);
    let response = handlers::list_offsets::handle(broker, request, 7);
    let answer =
        response.topics.into_iter().flat_map(|t| t.partitions).next().ok_or_else(|| ApiError::kafka(-1, None))?;
    if answer.error_code != 0 {
        return Err(ApiError::kafka(answer.error_code, None));
    }
    Ok(answer.offset)
}

struct Shown {
    timestamp: i64,
    partition: i32,
    offset: i64,
    json: Value,
}

struct PartitionRead {
    records: Vec<Shown>,
    /// The offset after the last record read (the next page starts here).
    next_offset: i64,
    /// Records looked at, matching the filter or not.
    scanned: u64,
}

/// Reads `partition` from `start` below `end`, keeping at most `keep` records.
async fn read_partition(
    broker: &Arc<Broker>,
    topic: &str,
    partition: i32,
    (start, end): (i64, i64),
    keep: usize,
    query: &Query,
    scan_budget: &mut usize,
) -> Result<PartitionRead, ApiError> {
    let mut out = PartitionRead { records: Vec::new(), next_offset: start, scanned: 0 };
    while out.next_offset < end && out.records.len() < keep && *scan_budget > 0 {
        let (bytes, mut aborted) = fetch(broker, topic, partition, out.next_offset).await?;
        if bytes.is_empty() {
            break;
        }
        *scan_budget = scan_budget.saturating_sub(bytes.len());
        let before = out.next_offset;
        decode_into(bytes, partition, (query, keep), end, scan_budget, &mut aborted, &mut out)?;
        if out.next_offset <= before {
            break; // nothing past `before` in what was read: do not spin
        }
    }
    Ok(out)
}

/// One read_committed Fetch of `partition` from `offset` through the Kafka handler: the
/// batches' bytes, and the filter of the aborted transactions among them.
async fn fetch(
    broker: &Arc<Broker>,
    topic: &str,
    partition: i32,
    offset: i64,
) -> Result<(Bytes, AbortedFilter), ApiError> {
    let mut wanted = FetchPartition::default();
    wanted.partition = partition;
    wanted.fetch_offset = offset;
    wanted.partition_max_bytes = FETCH_BYTES;
    wanted.current_leader_epoch = -1;
    wanted.log_start_offset = -1;
    let mut fetch_topic = FetchTopic::default();
    fetch_topic.topic = TopicName(str_bytes(topic));
    fetch_topic.partitions.push(wanted);
    let mut request = FetchRequest::default();
    request.replica_id = kafka_protocol::messages::BrokerId(-1);
    request.max_wait_ms = 0;
    request.min_bytes = 0;
    request.max_bytes = FETCH_BYTES;
    request.session_epoch = -1;
    // What a read_committed consumer sees: up to the last stable offset, aborted
    // transactions' records dropped (below, with the response's aborted transactions).
    request.isolation_level = 1;
    request.topics.push(fetch_topic);
    let output = match handlers::fetch::handle(broker, request, 12).await {
        Reply::Ready(Some(KafkaResponse::Fetch(output))) => output,
        Reply::Ready(Some(KafkaResponse::Kind(ResponseKind::Fetch(response)))) => {
            return Err(ApiError::kafka(response.error_code, None))
        }
        Reply::Pending(handle) => match handle.await {
            Ok(Some(KafkaResponse::Fetch(output))) => output,
            _ => return Err(ApiError::kafka(-1, None)),
        },
        _ => return Err(ApiError::kafka(-1, None)),
    };
    let data = output.response.responses.first().and_then(|t| t.partitions.first());
    if let Some(error) = data.map(|d| d.error_code).filter(|code| *code != 0) {
        return Err(ApiError::kafka(error, None));
    }
    let aborted = AbortedFilter::new(
        data.and_then(|d| d.aborted_transactions.as_ref())
            .into_iter()
            .flatten()
            .map(|a| (a.producer_id.0, a.first_offset)),
    );
    let Some(Some(slice)) = output.slices.into_iter().next() else {
        return Ok((data.and_then(|d| d.records.clone()).unwrap_or_default(), aborted));
    };
    let mut buffer = Vec::with_capacity(slice.len);
    tokio::task::block_in_place(|| slice.read_into(&mut buffer))
        .map_err(|error| ApiError::kafka(-1, Some(&format!("cannot read the partition's log: {error}"))))?;
    Ok((Bytes::from(buffer), aborted))
}

/// Decodes whole batches, keeping records from `out.next_offset` below `end` that match the
/// filter, until `keep` are kept or the budget of inflated bytes is spent.
fn decode_into(
    mut batches: Bytes,
    partition: i32,
    (query, keep): (&Query, usize),
    end: i64,
    inflate_budget: &mut usize,
    aborted: &mut AbortedFilter,
    out: &mut PartitionRead,
) -> Result<(), ApiError> {
    while batches.len() >= 12 && out.records.len() < keep && *inflate_budget > 0 {
        let batch_length = (&batches[8..12]).get_i32();
        if batch_length < 0 || batches.len() < 12 + batch_length as usize {
            break; // a partial batch at the end of the read
        }
        let batch = batches.split_to(12 + batch_length as usize);
        let base_offset = (&batch[0..8]).get_i64();
        let last_offset = base_offset + if batch.len() >= 27 { i64::from((&batch[23..27]).get_i32()) } else { 0 };
        // With LogAppendTime every record's timestamp is the batch's maxTimestamp.
        let max_timestamp = if batch.len() >= 43 { (&batch[35..43]).get_i64() } else { -1 };
        if aborted.is_aborted(&batch) {
            // An aborted transaction's records: a read_committed consumer never sees them.
            if last_offset < end {
                out.next_offset = out.next_offset.max(last_offset + 1);
            }
            continue;
        }
        let set = keel_protocol::records::decode_batch(batch, INFLATED_BATCH_BYTES_MAX).map_err(|error| {
            ApiError::kafka(
                kafka_protocol::error::ResponseError::CorruptMessage.code(),
                Some(&format!("cannot decode the batch at offset {base_offset} of partition {partition}: {error}")),
            )
        })?;
        let inflated: usize = set
            .records
            .iter()
            .map(|r| {
                r.key.as_ref().map_or(0, |k| k.len())
                    + r.value.as_ref().map_or(0, |v| v.len())
                    + r.headers.iter().map(|(k, v)| k.len() + v.as_ref().map_or(0, |v| v.len())).sum::<usize>()
            })
            .sum();
        *inflate_budget = inflate_budget.saturating_sub(inflated);
        let mut stopped_early = false;
        for record in &set.records {
            if record.offset < out.next_offset {
                continue;
            }
            if record.offset >= end {
                break;
            }
            if out.records.len() >= keep {
                stopped_early = true;
                break;
            }
            out.next_offset = record.offset + 1;
            if record.control {
                continue;
            }
            out.scanned += 1;
            let timestamp = match record.timestamp_type {
                TimestampType::LogAppend => max_timestamp,
                TimestampType::Creation => record.timestamp,
            };
            let headers: Vec<(String, Option<&[u8]>)> =
                record.headers.iter().map(|(k, v)| (k.to_string(), v.as_deref())).collect();
            if let Some(filter) = &query.filter {
                let matches = |bytes: Option<&[u8]>| {
                    bytes.is_some_and(|b| String::from_utf8_lossy(b).to_lowercase().contains(filter.as_str()))
                };
                let hit = matches(record.key.as_deref())
                    || matches(record.value.as_deref())
                    || headers.iter().any(|(k, v)| k.to_lowercase().contains(filter.as_str()) || matches(*v));
                if !hit {
                    continue;
                }
            }
            let header_json: Vec<Value> =
                headers.iter().map(|(k, v)| json!({ "key": k, "value": shown(*v) })).collect();
            out.records.push(Shown {
                timestamp,
                partition,
                offset: record.offset,
                json: json!({
                    "partition": partition,
                    "offset": record.offset,
                    "timestamp": timestamp,
                    "timestamp_type": if matches!(record.timestamp_type, TimestampType::LogAppend) { "LogAppendTime" } else { "CreateTime" },
                    "key": shown(record.key.as_deref()),
                    "value": shown(record.value.as_deref()),
                    "headers": header_json,
                }),
            });
        }
        // A batch of only control records (or one read to its end) moves past its last offset.
        if !stopped_early && out.next_offset <= last_offset && last_offset < end {
            out.next_offset = last_offset + 1;
        }
    }
    Ok(())
}

/// A key, value or header value for display: `null`, UTF-8 text, or hex for other bytes; cut at
/// `VALUE_SHOWN_BYTES_MAX` with the full size given.
fn shown(bytes: Option<&[u8]>) -> Value {
    let Some(bytes) = bytes else {
        return Value::Null;
    };
    let size = bytes.len();
    let cut = &bytes[..size.min(VALUE_SHOWN_BYTES_MAX)];
    match std::str::from_utf8(cut) {
        Ok(text) => json!({ "encoding": "utf8", "text": text, "size": size, "truncated": size > cut.len() }),
        // A cut through a multi-byte character is still text.
        Err(error) if size > cut.len() && error.error_len().is_none() => {
            let text = std::str::from_utf8(&cut[..error.valid_up_to()]).unwrap_or_default();
            json!({ "encoding": "utf8", "text": text, "size": size, "truncated": true })
        }
        Err(_) => {
            let hex_cut = &cut[..cut.len().min(VALUE_SHOWN_BYTES_MAX / 2)];
            let mut hex = String::with_capacity(hex_cut.len() * 2);
            for byte in hex_cut {
                hex.push_str(&format!("{byte:02x}"));
            }
            json!({ "encoding": "hex", "text": hex, "size": size, "truncated": size > hex_cut.len() })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_checked() {
        let q = parse_query(None).expect("defaults");
        assert_eq!((q.partition, q.from, q.limit), (None, From::End, LIMIT_DEFAULT));
        let q = parse_query(Some("partition=2&from=offset&offset=10&limit=500&filter=Abc")).expect("valid");
        assert_eq!((q.partition, q.from, q.limit, q.filter.as_deref()), (Some(2), From::Offset(10), 500, Some("abc")));
        for bad in [
            "partition=-1",
            "partition=99999999999",
            "partition=x",
            "limit=0",
            "limit=501",
            "limit=99999999999999999999999",
            "from=offset",
            "from=offset&offset=-5",
            "from=timestamp&timestamp=-1",
            "from=somewhere",
        ] {
            assert!(parse_query(Some(bad)).is_err(), "{bad} must be refused");
        }
        assert!(parse_query(Some(&format!("filter={}", "x".repeat(FILTER_CHARS_MAX + 1)))).is_err());
    }

    #[test]
    fn values_are_shown_as_text_or_hex_and_cut() {
        assert_eq!(shown(None), Value::Null);
        assert_eq!(shown(Some(b"hi")), json!({ "encoding": "utf8", "text": "hi", "size": 2, "truncated": false }));
        assert_eq!(
            shown(Some(&[0xff, 0x00, 0x10])),
            json!({ "encoding": "hex", "text": "ff0010", "size": 3, "truncated": false })
        );
        let long = "é".repeat(VALUE_SHOWN_BYTES_MAX);
        let value = shown(Some(long.as_bytes()));
        assert_eq!(value["encoding"], "utf8");
        assert_eq!(value["truncated"], true);
        assert!(value["text"].as_str().expect("text").len() <= VALUE_SHOWN_BYTES_MAX);
        let binary = vec![0xffu8; VALUE_SHOWN_BYTES_MAX * 2];
        let value = shown(Some(&binary));
        assert_eq!(value["encoding"], "hex");
        assert_eq!(value["truncated"], true);
        assert_eq!(value["text"].as_str().expect("hex").len(), VALUE_SHOWN_BYTES_MAX);
    }
}
