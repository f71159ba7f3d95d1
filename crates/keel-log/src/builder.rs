//! Building uncompressed record batches (magic 2) from keys and values: how the broker writes
//! its own records (`__consumer_offsets`), and how tests make valid input.

use crate::batch::{recompute_crc, ATTR_CONTROL, ATTR_TRANSACTIONAL, HEADER_BYTES, LOG_OVERHEAD_BYTES, MAGIC_V2};
use crate::producer::Marker;

pub(crate) fn put_varint(out: &mut Vec<u8>, value: i64) {
    // Kafka record fields are zig-zag varints.
    let mut zigzag = ((value << 1) ^ (value >> 63)) as u64;
    loop {
        let byte = (zigzag & 0x7f) as u8;
        zigzag >>= 7;
        if zigzag == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

fn put_bytes(out: &mut Vec<u8>, bytes: Option<&[u8]>) {
    match bytes {
        None => put_varint(out, -1),
        Some(bytes) => {
            put_varint(out, bytes.len() as i64);
            out.extend_from_slice(bytes);
        }
    }
}

/// One uncompressed v2 batch holding `records` (key, value) in order, all stamped
/// `timestamp_ms`, with no producer id and no headers. Base offset 0 (the log assigns it).
/// Returns `None` for an empty record list: Kafka has no empty batches.
pub fn build_batch<'a>(
    records: impl IntoIterator<Item = (Option<&'a [u8]>, Option<&'a [u8]>)>,
    timestamp_ms: i64,
) -> Option<Vec<u8>> {
    build(records, timestamp_ms, Producer::NONE, 0)
}

/// The producer fields of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Producer {
    pub id: i64,
    pub epoch: i16,
    pub base_sequence: i32,
}

impl Producer {
    pub const NONE: Producer = Producer { id: -1, epoch: -1, base_sequence: -1 };
}

/// Like [`build_batch`], with producer fields and, with `transactional`, the transactional bit.
pub fn build_producer_batch<'a>(
    records: impl IntoIterator<Item = (Option<&'a [u8]>, Option<&'a [u8]>)>,
    timestamp_ms: i64,
    producer: Producer,
    transactional: bool,
) -> Option<Vec<u8>> {
    build(records, timestamp_ms, producer, if transactional { ATTR_TRANSACTIONAL } else { 0 })
}

/// A transaction marker: a control batch (transactional and control bits set) holding one
/// control record, key = version 0 + type (0 abort, 1 commit), value = version 0 + the
/// coordinator epoch.
pub fn build_marker_batch(producer_id: i64, producer_epoch: i16, marker: Marker, timestamp_ms: i64) -> Vec<u8> {
    let mut key = Vec::with_capacity(4);
    key.extend(0i16.to_be_bytes());
    key.extend(i16::from(marker.commit).to_be_bytes());
    let mut value = Vec::with_capacity(6);
    value.extend(0i16.to_be_bytes());
    value.extend(marker.coordinator_epoch.to_be_bytes());
    let producer = Producer { id: producer_id, epoch: producer_epoch, base_sequence: -1 };
    build([(Some(&key[..]), Some(&value[..]))], timestamp_ms, producer, ATTR_TRANSACTIONAL | ATTR_CONTROL)
        .unwrap_or_default()
}

fn build<'a>(
    records: impl IntoIterator<Item = (Option<&'a [u8]>, Option<&'a [u8]>)>,
    timestamp_ms: i64,
    producer: Producer,
    attributes: i16,
) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    let mut record = Vec::new();
    let mut count = 0i32;
    for (key, value) in records {
        record.clear();
        record.push(0); // attributes
        put_varint(&mut record, 0); // timestampDelta
        put_varint(&mut record, i64::from(count)); // offsetDelta
        put_bytes(&mut record, key);
        put_bytes(&mut record, value);
        put_varint(&mut record, 0); // no headers
        put_varint(&mut body, record.len() as i64);
        body.extend_from_slice(&record);
        count += 1;
    }
    if count == 0 {
        return None;
    }
    let mut batch = Vec::with_capacity(HEADER_BYTES + body.len());
    batch.extend(0i64.to_be_bytes()); // baseOffset
    let batch_length = (HEADER_BYTES - LOG_OVERHEAD_BYTES + body.len()) as i32;
    batch.extend(batch_length.to_be_bytes());
    batch.extend((-1i32).to_be_bytes()); // partitionLeaderEpoch
    batch.push(MAGIC_V2 as u8);
    batch.extend(0u32.to_be_bytes()); // crc, filled below
    batch.extend(attributes.to_be_bytes());
    batch.extend((count - 1).to_be_bytes()); // lastOffsetDelta
    batch.extend(timestamp_ms.to_be_bytes()); // baseTimestamp
    batch.extend(timestamp_ms.to_be_bytes()); // maxTimestamp
    batch.extend(producer.id.to_be_bytes());
    batch.extend(producer.epoch.to_be_bytes());
    batch.extend(producer.base_sequence.to_be_bytes());
    batch.extend(count.to_be_bytes());
    batch.extend(body);
    recompute_crc(&mut batch);
    Some(batch)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::validate_batches;

    #[test]
    fn builds_valid_batches() {
        let batch =
            build_batch([(Some(&b"k"[..]), Some(&b"v"[..])), (Some(&b"k2"[..]), None)], 42).expect("two records");
        let summary = validate_batches(&batch, 1 << 20).expect("valid");
        assert_eq!(summary.record_count, 2);
        assert!(build_batch(std::iter::empty(), 0).is_none());
    }

    #[test]
    fn marker_batches_round_trip() {
        let marker = Marker { commit: true, coordinator_epoch: 7 };
        let batch = build_marker_batch(42, 3, marker, 1000);
        let header = crate::batch::check_batch(&batch, 0).expect("valid batch");
        assert!(header.is_control() && header.is_transactional());
        assert_eq!((header.producer_id, header.producer_epoch, header.base_sequence), (42, 3, -1));
        assert_eq!(crate::batch::read_marker(&batch), Some(marker));
        let abort = Marker { commit: false, coordinator_epoch: 0 };
        assert_eq!(crate::batch::read_marker(&build_marker_batch(1, 0, abort, 0)), Some(abort));
        // A data batch is no marker.
        assert_eq!(crate::batch::read_marker(&build_batch([(None, Some(&b"v"[..]))], 0).unwrap()), None);
    }
}
