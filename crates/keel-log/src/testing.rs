//! Builders of valid record batches for tests, in this crate and in the crates that use it.

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

/// A valid uncompressed v2 batch of `records` records (at least one), each with a null key and a
/// value of `payload_len` bytes, all stamped `timestamp`. Base offset 0, no producer id.
pub fn test_batch(records: u32, timestamp: i64, payload_len: usize) -> Vec<u8> {
    let records = records.max(1);
    let mut body = Vec::new();
    for offset_delta in 0..records {
        let mut record = Vec::new();
        record.push(0); // attributes
        put_varint(&mut record, 0); // timestampDelta
        put_varint(&mut record, i64::from(offset_delta));
        put_varint(&mut record, -1); // null key
        put_varint(&mut record, payload_len as i64);
        record.extend((0..payload_len).map(|i| (i as u8).wrapping_add(offset_delta as u8)));
        put_varint(&mut record, 0); // no headers
        put_varint(&mut body, record.len() as i64);
        body.extend(record);
    }
    let mut batch = Vec::with_capacity(HEADER_BYTES + body.len());
    batch.extend(0i64.to_be_bytes()); // baseOffset
    let batch_length = (HEADER_BYTES - LOG_OVERHEAD_BYTES + body.len()) as i32;
    batch.extend(batch_length.to_be_bytes());
    batch.extend((-1i32).to_be_bytes()); // partitionLeaderEpoch
    batch.push(MAGIC_V2 as u8);
    batch.extend(0u32.to_be_bytes()); // crc, filled below
    batch.extend(0i16.to_be_bytes()); // attributes
    batch.extend((records as i32 - 1).to_be_bytes()); // lastOffsetDelta
    batch.extend(timestamp.to_be_bytes()); // baseTimestamp
    batch.extend(timestamp.to_be_bytes()); // maxTimestamp
    batch.extend((-1i64).to_be_bytes()); // producerId
    batch.extend((-1i16).to_be_bytes()); // producerEpoch
    batch.extend((-1i32).to_be_bytes()); // baseSequence
    batch.extend((records as i32).to_be_bytes());
    batch.extend(body);
    recompute_crc(&mut batch);
    batch
}
