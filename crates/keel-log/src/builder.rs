//! Building uncompressed record batches (magic 2) from keys and values: how the broker writes
//! its own records (`__consumer_offsets`), and how tests make valid input.

use crate::batch::{recompute_crc, HEADER_BYTES, LOG_OVERHEAD_BYTES, MAGIC_V2};

fn put_varint(out: &mut Vec<u8>, value: i64) {
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
    batch.extend(0i16.to_be_bytes()); // attributes
    batch.extend((count - 1).to_be_bytes()); // lastOffsetDelta
    batch.extend(timestamp_ms.to_be_bytes()); // baseTimestamp
    batch.extend(timestamp_ms.to_be_bytes()); // maxTimestamp
    batch.extend((-1i64).to_be_bytes()); // producerId
    batch.extend((-1i16).to_be_bytes()); // producerEpoch
    batch.extend((-1i32).to_be_bytes()); // baseSequence
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
}
