//! The topic configs that act on a produced batch's records, as Kafka's `LogValidator` applies
//! them: `message.timestamp.before.max.ms` / `after.max.ms`, keys on compacted topics, and
//! `compression.type` recompression. Records are decoded (with bounded decompression) only
//! when one of these can change the outcome; otherwise the batch goes on as the bytes it came as.

use std::borrow::Cow;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::produce_response::BatchIndexAndErrorMessage;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::Compression;
use keel_log::batch::{BatchHeader, TimestampType};
use keel_protocol::records::{self, RecordSummary, RecordsError};

use crate::config::ConfigView;
use crate::error::ApiError;

/// The most a produced batch may inflate to when the broker must read its records (a few KB of
/// zstd can claim gigabytes; CVE-2023-34455). Beyond it the batch is refused.
pub const INFLATED_BATCH_MAX_BYTES: usize = 64 << 20;

/// Kafka's `RecordBatch.NO_TIMESTAMP`: a record without a timestamp is never out of bounds.
const NO_TIMESTAMP: i64 = -1;
/// Attribute bit 3, and where the attributes are in a batch header.
const LOG_APPEND_TIME_FLAG: i16 = 1 << 3;
const ATTRIBUTES_AT: usize = 21;

/// The record-handling configs of one topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordRules {
    pub log_append_time: bool,
    /// `message.timestamp.before.max.ms`; `None` when unbounded (`Long.MAX_VALUE`).
    pub before_max_ms: Option<i64>,
    /// `message.timestamp.after.max.ms`; `None` when unbounded.
    pub after_max_ms: Option<i64>,
    /// `cleanup.policy` contains `compact`: every record needs a key.
    pub keys_required: bool,
    /// `compression.type`; `None` for `producer` (keep the producer's codec).
    pub compression: Option<Compression>,
    /// `max.message.bytes`, checked again after recompression.
    pub max_message_bytes: usize,
}

impl RecordRules {
    pub fn of(view: &ConfigView<'_>, topic: &str) -> RecordRules {
        let bound = |name: &str| view.topic_i64(topic, name).filter(|ms| (0..i64::MAX).contains(ms));
        let compression = match view.topic(topic, "compression.type").as_deref().map(str::trim) {
            Some("uncompressed") => Some(Compression::None),
            Some("gzip") => Some(Compression::Gzip),
            Some("snappy") => Some(Compression::Snappy),
            Some("lz4") => Some(Compression::Lz4),
            Some("zstd") => Some(Compression::Zstd),
            _ => None,
        };
        RecordRules {
            log_append_time: view.topic(topic, "message.timestamp.type").as_deref() == Some("LogAppendTime"),
            before_max_ms: bound("message.timestamp.before.max.ms"),
            after_max_ms: bound("message.timestamp.after.max.ms"),
            keys_required: view
                .topic(topic, "cleanup.policy")
                .is_some_and(|policy| policy.split(',').any(|p| p.trim() == "compact")),
            compression,
            max_message_bytes: view.topic_i64(topic, "max.message.bytes").unwrap_or(1_048_588).max(0) as usize,
        }
    }

    /// Whether `timestamp_ms` lies outside `[now - before, now + after]` (CreateTime topics).
    fn timestamp_out_of_bounds(&self, timestamp_ms: i64, now_ms: i64) -> bool {
        if self.log_append_time || timestamp_ms == NO_TIMESTAMP {
            return false;
        }
        let difference = now_ms.saturating_sub(timestamp_ms);
        self.before_max_ms.is_some_and(|before| difference > before)
            || self.after_max_ms.is_some_and(|after| difference.saturating_neg() > after)
    }
}

/// Applies `rules` to the one validated batch `batch` (header `header`) of a produce request.
/// Returns the batch to append: `batch` itself, or its recompressed copy.
pub fn apply<'a>(
    rules: &RecordRules,
    batch: &'a [u8],
    header: &BatchHeader,
    now_ms: i64,
) -> Result<Cow<'a, [u8]>, ApiError> {
    if header.timestamp_type() == TimestampType::LogAppendTime {
        // Only the broker sets LogAppendTime. Kafka reads every record of such a batch as
        // stamped `maxTimestamp`: on a LogAppendTime topic, or without a timestamp, that is
        // INVALID_TIMESTAMP; on a CreateTime topic it checks that timestamp and stores the batch
        // as CreateTime (`DefaultRecordBatch.setMaxTimestamp`).
        let producer_stamped = || {
            record_errors(
                ResponseError::InvalidTimestamp,
                vec![(
                    0,
                    "Invalid timestamp type in message. Producer should not set timestamp type to LogAppendTime."
                        .into(),
                )],
            )
        };
        if rules.log_append_time || header.max_timestamp == NO_TIMESTAMP {
            return Err(producer_stamped());
        }
        if rules.timestamp_out_of_bounds(header.max_timestamp, now_ms) {
            return Err(record_errors(
                ResponseError::InvalidTimestamp,
                vec![(0, format!("Timestamp {} of message with offset 0 is out of range.", header.max_timestamp))],
            ));
        }
        let mut create_time = batch.to_vec();
        let attributes = header.attributes & !LOG_APPEND_TIME_FLAG;
        create_time[ATTRIBUTES_AT..ATTRIBUTES_AT + 2].copy_from_slice(&attributes.to_be_bytes());
        keel_log::batch::recompute_crc(&mut create_time);
        let header = BatchHeader { attributes, ..*header };
        return apply(rules, &create_time, &header, now_ms).map(|out| Cow::Owned(out.into_owned()));
    }
    let source = records::batch_compression(header.attributes);
    let recompress_to = rules.compression.filter(|target| Some(*target) != source);
    // Without a lower bound only the batch's maxTimestamp can break the upper one.
    let check_timestamps = !rules.log_append_time
        && (rules.before_max_ms.is_some() || rules.timestamp_out_of_bounds(header.max_timestamp, now_ms));
    if !check_timestamps && !rules.keys_required && recompress_to.is_none() {
        return Ok(Cow::Borrowed(batch));
    }
    let section = records::batch_records(batch, INFLATED_BATCH_MAX_BYTES).map_err(records_error)?;
    let records = records::walk_records(&section, header.records_count).map_err(records_error)?;
    check_records(rules, &records, records::batch_base_timestamp(batch), check_timestamps, now_ms)?;
    let Some(target) = recompress_to else {
        return Ok(Cow::Borrowed(batch));
    };
    let recompressed = records::recompress_batch(batch, &section, target).map_err(records_error)?;
    if recompressed.len() > rules.max_message_bytes {
        return Err(ApiError::with(
            ResponseError::MessageTooLarge,
            format!(
                "the batch is {} bytes after recompression to {target:?}, over max.message.bytes {}",
                recompressed.len(),
                rules.max_message_bytes
            ),
        ));
    }
    Ok(Cow::Owned(recompressed))
}

/// Kafka's per-record checks: a key on compacted topics (INVALID_RECORD), the timestamp
/// bounds (INVALID_TIMESTAMP). Every failing record is reported, as Kafka does.
fn check_records(
    rules: &RecordRules,
    records: &[RecordSummary],
    base_timestamp: i64,
    check_timestamps: bool,
    now_ms: i64,
) -> Result<(), ApiError> {
    let mut errors = Vec::new();
    let mut invalid_timestamp = false;
    for (index, record) in records.iter().enumerate() {
        let batch_index = index as i32;
        if rules.keys_required && !record.has_key {
            errors.push((batch_index, "Compacted topic cannot accept message without key.".to_string()));
            continue;
        }
        let timestamp = base_timestamp.saturating_add(record.timestamp_delta);
        if check_timestamps && rules.timestamp_out_of_bounds(timestamp, now_ms) {
            invalid_timestamp = true;
            let low = rules.before_max_ms.map_or(i64::MIN, |before| now_ms.saturating_sub(before));
            let high = rules.after_max_ms.map_or(i64::MAX, |after| now_ms.saturating_add(after));
            errors.push((
                batch_index,
                format!(
                    "Timestamp {timestamp} of message with offset {} is out of range. \
                     The timestamp should be within [{low}, {high}]",
                    record.offset_delta
                ),
            ));
        }
    }
    if errors.is_empty() {
        return Ok(());
    }
    let code = if invalid_timestamp { ResponseError::InvalidTimestamp } else { ResponseError::InvalidRecord };
    Err(record_errors(code, errors))
}

/// Kafka's `RecordValidationException`: the partition's error, a summary message, and the
/// failing records by their index in the batch.
fn record_errors(code: ResponseError, errors: Vec<(i32, String)>) -> ApiError {
    let message = if code == ResponseError::InvalidTimestamp {
        "One or more records have been rejected due to invalid timestamp".to_string()
    } else {
        let shown: Vec<String> = errors
            .iter()
            .take(3)
            .map(|(index, message)| format!("RecordError(batchIndex={index}, message='{message}')"))
            .collect();
        format!(
            "One or more records have been rejected due to {} record errors in total, and only showing the first \
             three errors at most: [{}]",
            errors.len(),
            shown.join(", ")
        )
    };
    ApiError { record_errors: errors, ..ApiError::with(code, message) }
}

/// `record_errors` of a Produce v8+ partition response.
pub fn response_record_errors(errors: &[(i32, String)]) -> Vec<BatchIndexAndErrorMessage> {
    errors
        .iter()
        .map(|(index, message)| {
            BatchIndexAndErrorMessage::default()
                .with_batch_index(*index)
                .with_batch_index_error_message(Some(StrBytes::from_string(message.clone())))
        })
        .collect()
}

fn records_error(error: RecordsError) -> ApiError {
    match error {
        RecordsError::TooLarge { .. } => ApiError::with(ResponseError::MessageTooLarge, error.to_string()),
        RecordsError::Decode(_) => ApiError::with(ResponseError::InvalidRecord, error.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keel_log::builder::build_batch;

    fn rules() -> RecordRules {
        RecordRules {
            log_append_time: false,
            before_max_ms: None,
            after_max_ms: Some(3_600_000),
            keys_required: false,
            compression: None,
            max_message_bytes: 1_048_588,
        }
    }

    fn header(batch: &[u8]) -> BatchHeader {
        keel_log::batch::validate_batches(batch, usize::MAX).expect("valid").first
    }

    const NOW: i64 = 10_000_000;

    #[test]
    fn nothing_to_check_keeps_the_bytes() {
        let batch = build_batch([(None, Some(&b"v"[..]))], NOW).expect("batch");
        let out = apply(&rules(), &batch, &header(&batch), NOW).expect("accepted");
        assert!(matches!(out, Cow::Borrowed(_)));
    }

    #[test]
    fn timestamps_outside_the_window_are_invalid() {
        let future = build_batch([(None, Some(&b"v"[..]))], NOW + 3_600_001).expect("batch");
        let error = apply(&rules(), &future, &header(&future), NOW).expect_err("too far ahead");
        assert_eq!(error.code, ResponseError::InvalidTimestamp);
        assert_eq!(error.record_errors.len(), 1);
        assert!(error.record_errors[0].1.contains("out of range"), "{:?}", error.record_errors);
        let edge = build_batch([(None, Some(&b"v"[..]))], NOW + 3_600_000).expect("batch");
        assert!(apply(&rules(), &edge, &header(&edge), NOW).is_ok());

        let old = build_batch([(None, Some(&b"v"[..])), (None, Some(&b"w"[..]))], NOW - 61_000).expect("batch");
        let bounded = RecordRules { before_max_ms: Some(60_000), ..rules() };
        let error = apply(&bounded, &old, &header(&old), NOW).expect_err("too old");
        assert_eq!(error.code, ResponseError::InvalidTimestamp);
        assert_eq!(error.record_errors.iter().map(|e| e.0).collect::<Vec<_>>(), vec![0, 1]);
        assert!(apply(&rules(), &old, &header(&old), NOW).is_ok(), "no lower bound by default");
        // LogAppendTime topics do not look at producer timestamps.
        let log_append = RecordRules { log_append_time: true, ..bounded };
        assert!(apply(&log_append, &future, &header(&future), NOW).is_ok());
        // NO_TIMESTAMP is never out of bounds.
        let none = build_batch([(None, Some(&b"v"[..]))], -1).expect("batch");
        assert!(apply(&bounded, &none, &header(&none), NOW).is_ok());
    }

    #[test]
    fn compacted_topics_need_keys() {
        let compacted = RecordRules { keys_required: true, ..rules() };
        let keyed = build_batch([(Some(&b"k"[..]), Some(&b"v"[..]))], NOW).expect("batch");
        assert!(apply(&compacted, &keyed, &header(&keyed), NOW).is_ok());
        let mixed = build_batch([(Some(&b"k"[..]), Some(&b"v"[..])), (None, Some(&b"v"[..]))], NOW).expect("batch");
        let error = apply(&compacted, &mixed, &header(&mixed), NOW).expect_err("a record without a key");
        assert_eq!(error.code, ResponseError::InvalidRecord);
        assert_eq!(error.record_errors.iter().map(|e| e.0).collect::<Vec<_>>(), vec![1]);
        assert!(error.message.as_deref().is_some_and(|m| m.contains("batchIndex=1")), "{error:?}");
    }

    #[test]
    fn recompression_changes_the_codec_only_when_needed() {
        let batch = build_batch([(Some(&b"k"[..]), Some(&b"value"[..]))], NOW).expect("batch");
        let zstd = RecordRules { compression: Some(Compression::Zstd), ..rules() };
        let out = apply(&zstd, &batch, &header(&batch), NOW).expect("recompressed");
        let recompressed = header(&out);
        assert_eq!(recompressed.compression(), keel_log::batch::Compression::Zstd);
        let again = apply(&zstd, &out, &recompressed, NOW).expect("already zstd");
        assert!(matches!(again, Cow::Borrowed(_)));
        let uncompressed = RecordRules { compression: Some(Compression::None), ..rules() };
        let back = apply(&uncompressed, &out, &recompressed, NOW).expect("decompressed");
        assert_eq!(&*back, &batch[..]);
    }

    fn stamped_log_append_time(timestamp: i64) -> Vec<u8> {
        let mut batch = build_batch([(None, Some(&b"v"[..]))], timestamp).expect("batch");
        batch[22] |= 1 << 3;
        keel_log::batch::recompute_crc(&mut batch);
        batch
    }

    #[test]
    fn a_producer_set_log_append_time_is_refused_on_log_append_time_topics() {
        let batch = stamped_log_append_time(NOW);
        let log_append = RecordRules { log_append_time: true, ..rules() };
        let error = apply(&log_append, &batch, &header(&batch), NOW).expect_err("refused");
        assert_eq!(error.code, ResponseError::InvalidTimestamp);
    }

    #[test]
    fn a_producer_set_log_append_time_becomes_create_time_on_create_time_topics() {
        let batch = stamped_log_append_time(NOW - 5);
        let out = apply(&rules(), &batch, &header(&batch), NOW).expect("accepted");
        let stored = header(&out);
        assert_eq!(stored.timestamp_type(), TimestampType::CreateTime);
        assert_eq!(stored.max_timestamp, NOW - 5);
        assert_eq!(&out[23..], &batch[23..], "only the attributes and the CRC change");
        // Its maxTimestamp is what Kafka checks, and -1 is no timestamp at all.
        for refused in [stamped_log_append_time(NOW + 3_600_001), stamped_log_append_time(-1)] {
            let error = apply(&rules(), &refused, &header(&refused), NOW).expect_err("refused");
            assert_eq!(error.code, ResponseError::InvalidTimestamp);
        }
    }
}
