//! Kafka record batch v2 headers: parsing, validation of produce input and in-place patching.
//!
//! Batches stay opaque bytes from produce to fetch; only `baseOffset` and `partitionLeaderEpoch`
//! are ever rewritten, and both lie outside the CRC, so the producer's CRC stays valid.

use thiserror::Error;

/// Size of the fixed v2 batch header, up to and including `recordsCount`.
pub const HEADER_BYTES: usize = 61;
/// `baseOffset` + `batchLength`: the bytes not counted by `batchLength`.
pub const LOG_OVERHEAD_BYTES: usize = 12;
/// The only batch format Keel stores.
pub const MAGIC_V2: i8 = 2;
/// The CRC covers everything from `attributes` to the end of the batch.
pub const CRC_START: usize = 21;

const ATTR_COMPRESSION_MASK: i16 = 0x07;
pub(crate) const ATTR_LOG_APPEND_TIME: i16 = 0x08;
pub(crate) const ATTR_TRANSACTIONAL: i16 = 0x10;
pub(crate) const ATTR_CONTROL: i16 = 0x20;

/// Compression codec from attribute bits 0-2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
    /// Codec ids 5-7 are unassigned in Kafka.
    Unknown(u8),
}

/// Timestamp type from attribute bit 3.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimestampType {
    CreateTime,
    LogAppendTime,
}

/// Why a byte string is not acceptable as record batches; each variant maps to one Kafka code.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum BatchError {
    /// CORRUPT_MESSAGE (2): bad length, magic or CRC.
    #[error("corrupt record batch at byte {position}: {reason}")]
    Corrupt { position: usize, reason: &'static str },
    /// MESSAGE_TOO_LARGE (10).
    #[error("record batch at byte {position} is {size_bytes} bytes, over the {max_bytes}-byte limit")]
    TooLarge { position: usize, size_bytes: usize, max_bytes: usize },
    /// INVALID_RECORD (87): well-formed bytes with inconsistent contents.
    #[error("invalid record batch at byte {position}: {reason}")]
    InvalidRecord { position: usize, reason: &'static str },
    /// INVALID_RECORD (87): only the broker may write control batches.
    #[error("record batch at byte {position} is a control batch, which clients may not produce")]
    ControlBatch { position: usize },
}

/// The fixed fields of a v2 record batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: i64,
    pub batch_length: i32,
    pub partition_leader_epoch: i32,
    pub magic: i8,
    pub crc: u32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub records_count: i32,
}

fn be_i64(buf: &[u8], at: usize) -> i64 {
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&buf[at..at + 8]);
    i64::from_be_bytes(bytes)
}

fn be_i32(buf: &[u8], at: usize) -> i32 {
    let mut bytes = [0u8; 4];
    bytes.copy_from_slice(&buf[at..at + 4]);
    i32::from_be_bytes(bytes)
}

fn be_i16(buf: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([buf[at], buf[at + 1]])
}

impl BatchHeader {
    /// Parses the 61-byte header at the start of `buf`. Checks only that the bytes are there;
    /// [`validate_batches`] checks the contents.
    pub fn parse(buf: &[u8]) -> Result<BatchHeader, BatchError> {
        if buf.len() < HEADER_BYTES {
            return Err(BatchError::Corrupt { position: 0, reason: "fewer bytes than a batch header" });
        }
        Ok(BatchHeader {
            base_offset: be_i64(buf, 0),
            batch_length: be_i32(buf, 8),
            partition_leader_epoch: be_i32(buf, 12),
            magic: buf[16] as i8,
            crc: be_i32(buf, 17) as u32,
            attributes: be_i16(buf, 21),
            last_offset_delta: be_i32(buf, 23),
            base_timestamp: be_i64(buf, 27),
            max_timestamp: be_i64(buf, 35),
            producer_id: be_i64(buf, 43),
            producer_epoch: be_i16(buf, 51),
            base_sequence: be_i32(buf, 53),
            records_count: be_i32(buf, 57),
        })
    }

    /// Whole batch size in bytes (`batchLength` + 12); 0 for a negative length.
    pub fn size(&self) -> usize {
        usize::try_from(self.batch_length).map(|len| len + LOG_OVERHEAD_BYTES).unwrap_or(0)
    }

    pub fn last_offset(&self) -> i64 {
        self.base_offset.saturating_add(i64::from(self.last_offset_delta))
    }

    pub fn is_control(&self) -> bool {
        self.attributes & ATTR_CONTROL != 0
    }

    pub fn is_transactional(&self) -> bool {
        self.attributes & ATTR_TRANSACTIONAL != 0
    }

    pub fn compression(&self) -> Compression {
        match self.attributes & ATTR_COMPRESSION_MASK {
            0 => Compression::None,
            1 => Compression::Gzip,
            2 => Compression::Snappy,
            3 => Compression::Lz4,
            4 => Compression::Zstd,
            other => Compression::Unknown(other as u8),
        }
    }

    pub fn timestamp_type(&self) -> TimestampType {
        if self.attributes & ATTR_LOG_APPEND_TIME != 0 {
            TimestampType::LogAppendTime
        } else {
            TimestampType::CreateTime
        }
    }
}

/// What a produce request's records field holds, for the caller's producer-state and timestamp
/// checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchSummary {
    pub batch_count: usize,
    pub record_count: u64,
    pub size_bytes: usize,
    /// Greatest `maxTimestamp` over all batches.
    pub max_timestamp: i64,
    pub first: BatchHeader,
    pub last: BatchHeader,
}

/// Checks one batch whose header starts `buf`; `position` is only for error messages. Returns the
/// header; the batch is `header.size()` bytes.
pub(crate) fn check_batch(buf: &[u8], position: usize) -> Result<BatchHeader, BatchError> {
    let header = check_batch_bytes(buf, position)?;
    if header.last_offset_delta < 0
        || header.records_count <= 0
        || i64::from(header.last_offset_delta) + 1 != i64::from(header.records_count)
    {
        return Err(BatchError::InvalidRecord {
            position,
            reason: "recordsCount must be lastOffsetDelta + 1 and positive",
        });
    }
    Ok(header)
}

/// Checks one batch read back from a segment. Compaction removes records from a batch but keeps
/// its last offset delta (and may keep a batch with no records for its producer's state), so a
/// stored batch holds from 0 to lastOffsetDelta + 1 records.
pub(crate) fn check_stored_batch(buf: &[u8], position: usize) -> Result<BatchHeader, BatchError> {
    let header = check_batch_bytes(buf, position)?;
    if header.last_offset_delta < 0
        || header.records_count < 0
        || i64::from(header.records_count) > i64::from(header.last_offset_delta) + 1
    {
        return Err(BatchError::InvalidRecord {
            position,
            reason: "recordsCount must be between 0 and lastOffsetDelta + 1",
        });
    }
    Ok(header)
}

/// Length, magic and CRC of the batch at the start of `buf`.
fn check_batch_bytes(buf: &[u8], position: usize) -> Result<BatchHeader, BatchError> {
    let corrupt = |reason| BatchError::Corrupt { position, reason };
    let header = BatchHeader::parse(buf).map_err(|_| corrupt("truncated batch header"))?;
    // batchLength counts from partitionLeaderEpoch on; anything shorter than the header lies.
    if (header.batch_length as i64) < (HEADER_BYTES - LOG_OVERHEAD_BYTES) as i64 {
        return Err(corrupt("batch length shorter than the batch header"));
    }
    let size_bytes = header.size();
    if size_bytes > buf.len() {
        return Err(corrupt("batch length runs past the end of the data"));
    }
    if header.magic != MAGIC_V2 {
        return Err(corrupt("magic is not 2"));
    }
    if crc32c::crc32c(&buf[CRC_START..size_bytes]) != header.crc {
        return Err(corrupt("CRC-32C mismatch"));
    }
    Ok(header)
}

/// Validates the record batches of a produce request: whole v2 batches back to back, nothing
/// else. Never panics, whatever the input.
pub fn validate_batches(buf: &[u8], max_batch_bytes: usize) -> Result<BatchSummary, BatchError> {
    let mut position = 0usize;
    let mut summary: Option<BatchSummary> = None;
    while position < buf.len() {
        let rest = &buf[position..];
        // Check the size before the CRC so an oversized batch gets MESSAGE_TOO_LARGE, as in
        // Kafka; a length claiming more bytes than were sent is corrupt, not large.
        if let Ok(header) = BatchHeader::parse(rest) {
            if header.size() > max_batch_bytes && header.size() <= rest.len() {
                return Err(BatchError::TooLarge { position, size_bytes: header.size(), max_bytes: max_batch_bytes });
            }
        }
        let header = check_batch(rest, position)?;
        if header.is_control() {
            return Err(BatchError::ControlBatch { position });
        }
        if header.producer_id >= 0 && header.base_sequence < 0 {
            return Err(BatchError::InvalidRecord {
                position,
                reason: "a batch with a producer id needs a sequence number",
            });
        }
        let size_bytes = header.size();
        summary = Some(match summary {
            None => BatchSummary {
                batch_count: 1,
                record_count: header.records_count as u64,
                size_bytes,
                max_timestamp: header.max_timestamp,
                first: header,
                last: header,
            },
            Some(s) => BatchSummary {
                batch_count: s.batch_count + 1,
                record_count: s.record_count + header.records_count as u64,
                size_bytes: s.size_bytes + size_bytes,
                max_timestamp: s.max_timestamp.max(header.max_timestamp),
                first: s.first,
                last: header,
            },
        });
        position += size_bytes;
    }
    summary.ok_or(BatchError::InvalidRecord { position: 0, reason: "no record batches" })
}

/// The commit or abort marker of a control batch (`batch` starts with its header): the key and
/// value of its one control record. `None` for a data batch or an unreadable control record.
pub fn read_marker(batch: &[u8]) -> Option<crate::producer::Marker> {
    let header = BatchHeader::parse(batch).ok()?;
    if !header.is_control() || header.compression() != Compression::None {
        return None;
    }
    let mut records = batch.get(HEADER_BYTES..header.size().min(batch.len()))?;
    let _length = read_varint(&mut records)?;
    let (_attributes, rest) = records.split_first()?;
    records = rest;
    let _timestamp_delta = read_varint(&mut records)?;
    let _offset_delta = read_varint(&mut records)?;
    let key = read_sized(&mut records)?;
    let value = read_sized(&mut records)?;
    if key.len() < 4 || value.len() < 6 {
        return None;
    }
    let commit = match be_i16(key, 2) {
        0 => false,
        1 => true,
        _ => return None,
    };
    Some(crate::producer::Marker { commit, coordinator_epoch: be_i32(value, 2) })
}

/// A zig-zag varint, advancing `buf`.
pub(crate) fn read_varint(buf: &mut &[u8]) -> Option<i64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let (byte, rest) = buf.split_first()?;
        *buf = rest;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(((value >> 1) as i64) ^ -((value & 1) as i64));
        }
    }
    None
}

/// A varint-length-prefixed byte string (null reads as empty).
fn read_sized<'a>(buf: &mut &'a [u8]) -> Option<&'a [u8]> {
    let len = read_varint(buf)?;
    let len = usize::try_from(len).unwrap_or(0);
    let (bytes, rest) = buf.split_at_checked(len)?;
    *buf = rest;
    Some(bytes)
}

/// Sets `baseOffset`; outside the CRC, so the batch stays valid. No-op on a short slice.
pub fn patch_base_offset(batch: &mut [u8], offset: i64) {
    if let Some(field) = batch.get_mut(0..8) {
        field.copy_from_slice(&offset.to_be_bytes());
    }
}

/// Sets `partitionLeaderEpoch`; outside the CRC. No-op on a short slice.
pub fn patch_leader_epoch(batch: &mut [u8], leader_epoch: i32) {
    if let Some(field) = batch.get_mut(12..16) {
        field.copy_from_slice(&leader_epoch.to_be_bytes());
    }
}

/// Recomputes the CRC after a change inside the CRC-covered area (e.g. setting LogAppendTime).
/// No-op on a slice shorter than a header.
pub fn recompute_crc(batch: &mut [u8]) {
    if batch.len() < HEADER_BYTES {
        return;
    }
    let crc = crc32c::crc32c(&batch[CRC_START..]);
    batch[17..21].copy_from_slice(&crc.to_be_bytes());
}

/// Iterator over `(position, header)` of the batches in a byte slice. Checks only that each
/// header is present and its length fits; yields one error and then stops.
pub struct BatchHeaders<'a> {
    buf: &'a [u8],
    position: usize,
    failed: bool,
}

/// Walks the batch headers in `buf` without checking CRCs.
pub fn batch_headers(buf: &[u8]) -> BatchHeaders<'_> {
    BatchHeaders { buf, position: 0, failed: false }
}

impl Iterator for BatchHeaders<'_> {
    type Item = Result<(usize, BatchHeader), BatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.position >= self.buf.len() {
            return None;
        }
        let position = self.position;
        let rest = &self.buf[position..];
        let parsed =
            BatchHeader::parse(rest).map_err(|_| BatchError::Corrupt { position, reason: "truncated batch header" });
        let result = parsed.and_then(|header| {
            if header.size() < HEADER_BYTES || header.size() > rest.len() {
                Err(BatchError::Corrupt { position, reason: "batch length does not fit the data" })
            } else {
                Ok((position, header))
            }
        });
        match &result {
            Ok((_, header)) => self.position += header.size(),
            Err(_) => self.failed = true,
        }
        Some(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::test_batch;
    use proptest::prelude::*;

    #[test]
    fn parses_a_synthetic_batch() {
        let batch = test_batch(3, 1_000, 10);
        let header = BatchHeader::parse(&batch).expect("header");
        assert_eq!(header.size(), batch.len());
        assert_eq!(header.records_count, 3);
        assert_eq!(header.last_offset_delta, 2);
        assert_eq!(header.max_timestamp, 1_000);
        assert_eq!(header.magic, MAGIC_V2);
        assert_eq!(header.compression(), Compression::None);
        assert_eq!(header.timestamp_type(), TimestampType::CreateTime);
        assert!(!header.is_control());
        assert!(!header.is_transactional());
    }

    #[test]
    fn parse_rejects_short_input() {
        assert!(BatchHeader::parse(&[0u8; 60]).is_err());
    }

    #[test]
    fn validates_several_batches() {
        let mut buf = test_batch(2, 5, 3);
        buf.extend(test_batch(4, 9, 0));
        let summary = validate_batches(&buf, 1 << 20).expect("valid");
        assert_eq!(summary.batch_count, 2);
        assert_eq!(summary.record_count, 6);
        assert_eq!(summary.max_timestamp, 9);
        assert_eq!(summary.size_bytes, buf.len());
        assert_eq!(summary.last.records_count, 4);
    }

    #[test]
    fn rejects_trailing_garbage_and_lying_length() {
        let mut buf = test_batch(1, 0, 4);
        buf.push(0);
        assert!(matches!(validate_batches(&buf, 1 << 20), Err(BatchError::Corrupt { .. })));
        let mut lying = test_batch(1, 0, 4);
        lying[8..12].copy_from_slice(&1000i32.to_be_bytes());
        assert!(matches!(validate_batches(&lying, 1 << 20), Err(BatchError::Corrupt { .. })));
        lying[8..12].copy_from_slice(&10i32.to_be_bytes());
        assert!(matches!(validate_batches(&lying, 1 << 20), Err(BatchError::Corrupt { .. })));
    }

    #[test]
    fn distinct_errors_for_size_control_magic_and_counts() {
        let batch = test_batch(1, 0, 100);
        assert!(matches!(validate_batches(&batch, 50), Err(BatchError::TooLarge { .. })));
        let mut control = batch.clone();
        control[22] |= 0x20;
        recompute_crc(&mut control);
        assert_eq!(validate_batches(&control, 1 << 20), Err(BatchError::ControlBatch { position: 0 }));
        let mut magic = batch.clone();
        magic[16] = 1;
        assert!(matches!(validate_batches(&magic, 1 << 20), Err(BatchError::Corrupt { .. })));
        let mut counts = batch.clone();
        counts[57..61].copy_from_slice(&5i32.to_be_bytes());
        recompute_crc(&mut counts);
        assert!(matches!(validate_batches(&counts, 1 << 20), Err(BatchError::InvalidRecord { .. })));
        assert!(matches!(validate_batches(&[], 1 << 20), Err(BatchError::InvalidRecord { .. })));
    }

    #[test]
    fn patches_stay_outside_the_crc() {
        let mut batch = test_batch(2, 0, 8);
        patch_base_offset(&mut batch, 42);
        patch_leader_epoch(&mut batch, 7);
        let header = validate_batches(&batch, 1 << 20).expect("valid").first;
        assert_eq!(header.base_offset, 42);
        assert_eq!(header.partition_leader_epoch, 7);
        assert_eq!(header.last_offset(), 43);
        patch_base_offset(&mut [0u8; 3], 1); // short slices are ignored, not a panic
    }

    #[test]
    fn header_iterator_walks_and_stops_on_error() {
        let mut buf = test_batch(1, 0, 0);
        buf.extend(test_batch(2, 0, 0));
        buf.extend([1, 2, 3]);
        let items: Vec<_> = batch_headers(&buf).collect();
        assert_eq!(items.len(), 3);
        assert!(items[0].is_ok() && items[1].is_ok() && items[2].is_err());
    }

    proptest! {
        #[test]
        fn never_panics_on_any_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = validate_batches(&bytes, 1 << 20);
            let _ = batch_headers(&bytes).count();
        }

        #[test]
        fn synthetic_batches_validate(records in 1u32..20, ts in 0i64..i64::MAX / 2, payload in 0usize..64) {
            let batch = test_batch(records, ts, payload);
            let summary = validate_batches(&batch, 1 << 20).expect("valid");
            prop_assert_eq!(summary.record_count, u64::from(records));
            prop_assert_eq!(summary.max_timestamp, ts);
        }

        #[test]
        fn any_flip_in_crc_area_is_corrupt(records in 1u32..5, payload in 0usize..32, pick in any::<prop::sample::Index>(), bit in 0u8..8) {
            let mut batch = test_batch(records, 7, payload);
            let at = CRC_START + pick.index(batch.len() - CRC_START);
            batch[at] ^= 1 << bit;
            let result = validate_batches(&batch, 1 << 20);
            prop_assert!(matches!(result, Err(BatchError::Corrupt { .. })), "{:?}", result);
        }
    }
}
