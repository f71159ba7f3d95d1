//! Builders of valid record batches for tests, in this crate and in the crates that use it.

use crate::builder::build_batch;

/// A valid uncompressed v2 batch of `records` records (at least one), each with a null key and a
/// value of `payload_len` bytes, all stamped `timestamp`. Base offset 0, no producer id.
pub fn test_batch(records: u32, timestamp: i64, payload_len: usize) -> Vec<u8> {
    let values: Vec<Vec<u8>> = (0..records.max(1))
        .map(|offset_delta| (0..payload_len).map(|i| (i as u8).wrapping_add(offset_delta as u8)).collect())
        .collect();
    build_batch(values.iter().map(|v| (None, Some(&v[..]))), timestamp).unwrap_or_default()
}
