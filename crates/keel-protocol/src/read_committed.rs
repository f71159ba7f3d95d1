//! The consumer's half of `read_committed` (KIP-98): a Fetch at isolation level
//! READ_COMMITTED stops at the last stable offset and lists the aborted transactions of the
//! range as (producer id, first offset); the reader drops the transactional batches of a
//! producer from its aborted transaction's first offset to that producer's abort marker, as
//! Kafka's consumer (`CompletedFetch`) does.

use std::collections::HashSet;

/// Offsets in a v2 batch header.
const ATTRIBUTES_AT: usize = 21;
const LAST_OFFSET_DELTA_AT: usize = 23;
const PRODUCER_ID_AT: usize = 43;
const HEADER_BYTES: usize = 61;
const TRANSACTIONAL_FLAG: i16 = 0x10;
const CONTROL_FLAG: i16 = 0x20;

/// Tells, batch after batch of one partition's fetched data, which batches belong to aborted
/// transactions.
pub struct AbortedFilter {
    /// Aborted transactions not reached yet, the one with the highest first offset first.
    pending: Vec<(i64, i64)>,
    /// Producers inside an aborted transaction at the current batch.
    aborting: HashSet<i64>,
}

impl AbortedFilter {
    /// From a Fetch response's aborted transactions: (producer id, first offset).
    pub fn new(aborted: impl IntoIterator<Item = (i64, i64)>) -> AbortedFilter {
        let mut pending: Vec<(i64, i64)> = aborted.into_iter().collect();
        pending.sort_by_key(|&(_, first_offset)| std::cmp::Reverse(first_offset));
        AbortedFilter { pending, aborting: HashSet::new() }
    }

    /// Whether the records of `batch` (a whole v2 batch, header first) are to be dropped:
    /// true for the data of an aborted transaction. Call it for every batch in offset order,
    /// control batches included (an abort marker ends its producer's aborted transaction).
    pub fn is_aborted(&mut self, batch: &[u8]) -> bool {
        if batch.len() < HEADER_BYTES {
            return false;
        }
        let base_offset = i64::from_be_bytes(batch[0..8].try_into().unwrap_or_default());
        let last_offset_delta =
            i32::from_be_bytes(batch[LAST_OFFSET_DELTA_AT..LAST_OFFSET_DELTA_AT + 4].try_into().unwrap_or_default());
        let attributes = i16::from_be_bytes(batch[ATTRIBUTES_AT..ATTRIBUTES_AT + 2].try_into().unwrap_or_default());
        let producer_id = i64::from_be_bytes(batch[PRODUCER_ID_AT..PRODUCER_ID_AT + 8].try_into().unwrap_or_default());
        let last_offset = base_offset.saturating_add(i64::from(last_offset_delta));
        while let Some(&(id, first_offset)) = self.pending.last() {
            if first_offset > last_offset {
                break;
            }
            self.aborting.insert(id);
            self.pending.pop();
        }
        if attributes & TRANSACTIONAL_FLAG == 0 {
            return false;
        }
        if attributes & CONTROL_FLAG != 0 {
            // The marker that ends the producer's aborted transaction.
            self.aborting.remove(&producer_id);
            return false;
        }
        self.aborting.contains(&producer_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(base_offset: i64, records: i32, producer_id: i64, transactional: bool, control: bool) -> Vec<u8> {
        let mut b = vec![0u8; HEADER_BYTES];
        b[0..8].copy_from_slice(&base_offset.to_be_bytes());
        let attributes = if transactional { TRANSACTIONAL_FLAG } else { 0 } | if control { CONTROL_FLAG } else { 0 };
        b[ATTRIBUTES_AT..ATTRIBUTES_AT + 2].copy_from_slice(&attributes.to_be_bytes());
        b[LAST_OFFSET_DELTA_AT..LAST_OFFSET_DELTA_AT + 4].copy_from_slice(&(records - 1).to_be_bytes());
        b[PRODUCER_ID_AT..PRODUCER_ID_AT + 8].copy_from_slice(&producer_id.to_be_bytes());
        b
    }

    #[test]
    fn drops_an_aborted_transaction_up_to_its_marker_only() {
        // Producer 7 commits 0..2 (marker at 2), aborts 3..5 (marker at 5), then writes 6 in a
        // new transaction; producer 8 writes 4 in its own committed transaction.
        let mut filter = AbortedFilter::new([(7, 3)]);
        assert!(!filter.is_aborted(&batch(0, 2, 7, true, false)));
        assert!(!filter.is_aborted(&batch(2, 1, 7, true, true)));
        assert!(filter.is_aborted(&batch(3, 1, 7, true, false)));
        assert!(!filter.is_aborted(&batch(4, 1, 8, true, false)));
        assert!(!filter.is_aborted(&batch(5, 1, 7, true, true)));
        assert!(!filter.is_aborted(&batch(6, 1, 7, true, false)));
    }

    #[test]
    fn non_transactional_and_short_batches_are_kept() {
        let mut filter = AbortedFilter::new([(7, 0)]);
        assert!(!filter.is_aborted(&batch(0, 1, 7, false, false)));
        assert!(!filter.is_aborted(&[0u8; 12]));
        assert!(filter.is_aborted(&batch(1, 1, 7, true, false)));
    }
}
