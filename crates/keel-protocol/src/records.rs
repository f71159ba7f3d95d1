//! Decoding stored record batches into records, with decompression bounded.
//!
//! The broker keeps batches as bytes and decodes records only where it must (timestamp
//! lookups today). A compressed batch is a size claim the producer made up: a few kilobytes
//! of zstd can inflate to gigabytes (Kafka's CVE-2023-34455 was the snappy form of this). Every
//! codec here stops at `max_bytes` of output and fails instead of growing further.

use std::io::Read;

use bytes::{Buf, Bytes};
use kafka_protocol::records::{Compression, RecordBatchDecoder, RecordSet};

#[derive(Debug, thiserror::Error)]
pub enum RecordsError {
    #[error("batch inflates beyond {max_bytes} bytes")]
    TooLarge { max_bytes: usize },
    #[error("cannot decode records: {0}")]
    Decode(String),
}

/// Size of the fixed record batch v2 header; the records section follows it.
const BATCH_HEADER_BYTES: usize = 61;
const ATTRIBUTES_AT: usize = 21;
const CRC_AT: usize = 17;
const BATCH_LENGTH_AT: usize = 8;
const BASE_TIMESTAMP_AT: usize = 27;
/// `baseOffset` and `batchLength` are not counted by `batchLength`.
const LOG_OVERHEAD_BYTES: usize = 12;
const COMPRESSION_MASK: i16 = 0x07;

/// The codec of a batch's attribute bits 0-2; `None` for ids Kafka does not assign.
pub fn batch_compression(attributes: i16) -> Option<Compression> {
    match attributes & COMPRESSION_MASK {
        0 => Some(Compression::None),
        1 => Some(Compression::Gzip),
        2 => Some(Compression::Snappy),
        3 => Some(Compression::Lz4),
        4 => Some(Compression::Zstd),
        _ => None,
    }
}

/// The records section of one whole v2 `batch` (header already validated by the caller),
/// decompressed with at most `max_bytes` of output.
pub fn batch_records(batch: &[u8], max_bytes: usize) -> Result<Bytes, RecordsError> {
    let (header, section) = batch
        .split_at_checked(BATCH_HEADER_BYTES)
        .ok_or_else(|| RecordsError::Decode("fewer bytes than a batch header".into()))?;
    let attributes = i16::from_be_bytes([header[ATTRIBUTES_AT], header[ATTRIBUTES_AT + 1]]);
    let compression = batch_compression(attributes)
        .ok_or_else(|| RecordsError::Decode(format!("unknown compression codec {}", attributes & COMPRESSION_MASK)))?;
    if compression == Compression::None && section.len() > max_bytes {
        return Err(RecordsError::TooLarge { max_bytes });
    }
    decompress(&mut Bytes::copy_from_slice(section), compression, max_bytes)
}

/// What the produce path looks at in one record, read without copying keys or values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordSummary {
    pub timestamp_delta: i64,
    pub offset_delta: i32,
    pub has_key: bool,
}

/// Reads a zig-zag varint of at most `max_bytes` bytes (5 for an int, 10 for a long).
fn varint(data: &mut &[u8], max_bytes: usize) -> Result<i64, RecordsError> {
    let mut value = 0u64;
    for i in 0..max_bytes {
        let (&byte, rest) = data.split_first().ok_or_else(|| RecordsError::Decode("truncated varint".into()))?;
        *data = rest;
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok(((value >> 1) as i64) ^ -((value & 1) as i64));
        }
    }
    Err(RecordsError::Decode("varint too long".into()))
}

/// Skips a varint-length-prefixed byte string (-1 is null); returns whether it was non-null.
fn skip_bytes(data: &mut &[u8], nullable: bool) -> Result<bool, RecordsError> {
    let len = varint(data, 5)?;
    if len == -1 && nullable {
        return Ok(false);
    }
    let len = usize::try_from(len).map_err(|_| RecordsError::Decode(format!("invalid length {len}")))?;
    let rest = data.get(len..).ok_or_else(|| RecordsError::Decode("length runs past the record".into()))?;
    *data = rest;
    Ok(true)
}

/// Walks the uncompressed records section of a v2 batch, checking each record's framing
/// (Kafka's `DefaultRecord.readFrom`); fails unless exactly `records_count` records fill it.
pub fn walk_records(mut section: &[u8], records_count: i32) -> Result<Vec<RecordSummary>, RecordsError> {
    let invalid = |reason: String| RecordsError::Decode(reason);
    // The smallest record is 7 bytes, so the section bounds the allocation.
    let count = usize::try_from(records_count).map_err(|_| invalid(format!("invalid record count {records_count}")))?;
    let mut records = Vec::with_capacity(count.min(section.len() / 7));
    while !section.is_empty() {
        if records.len() == count {
            return Err(invalid(format!("bytes left after the {count} declared records")));
        }
        let len = varint(&mut section, 5)?;
        let len = usize::try_from(len).map_err(|_| invalid(format!("invalid record length {len}")))?;
        let (mut record, rest) =
            section.split_at_checked(len).ok_or_else(|| invalid("record runs past the batch".into()))?;
        section = rest;
        let (_attributes, body) = record.split_first().ok_or_else(|| invalid("empty record".into()))?;
        record = body;
        let timestamp_delta = varint(&mut record, 10)?;
        let offset_delta =
            i32::try_from(varint(&mut record, 5)?).map_err(|_| invalid("offset delta out of range".into()))?;
        let has_key = skip_bytes(&mut record, true)?;
        skip_bytes(&mut record, true)?;
        let headers = varint(&mut record, 5)?;
        if headers < 0 {
            return Err(invalid(format!("invalid header count {headers}")));
        }
        for _ in 0..headers {
            skip_bytes(&mut record, false)?;
            skip_bytes(&mut record, true)?;
        }
        if !record.is_empty() {
            return Err(invalid("record length does not match its fields".into()));
        }
        records.push(RecordSummary { timestamp_delta, offset_delta, has_key });
    }
    if records.len() != count {
        return Err(invalid(format!("{} records found, {count} declared", records.len())));
    }
    Ok(records)
}

/// `baseTimestamp` of a batch whose header the caller validated.
pub fn batch_base_timestamp(batch: &[u8]) -> i64 {
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&batch[BASE_TIMESTAMP_AT..BASE_TIMESTAMP_AT + 8]);
    i64::from_be_bytes(bytes)
}

/// Compresses an uncompressed records section with `compression` (snappy in the xerial framing
/// Java clients and brokers write).
pub fn compress(section: &[u8], compression: Compression) -> Result<Vec<u8>, RecordsError> {
    use kafka_protocol::compression::{Compressor, Gzip, Lz4, Snappy, Zstd};
    let mut out = bytes::BytesMut::new();
    let copy = |buf: &mut bytes::BytesMut| -> anyhow::Result<()> {
        buf.extend_from_slice(section);
        Ok(())
    };
    let encoded = match compression {
        Compression::None => return Ok(section.to_vec()),
        Compression::Gzip => Gzip::compress(&mut out, copy),
        Compression::Snappy => Snappy::compress(&mut out, copy),
        Compression::Lz4 => Lz4::compress(&mut out, copy),
        Compression::Zstd => Zstd::compress(&mut out, copy),
    };
    encoded.map_err(|e| RecordsError::Decode(format!("cannot compress: {e}")))?;
    Ok(out.to_vec())
}

/// Re-encodes one whole v2 `batch` whose records section, decompressed, is `section`, with
/// `target` compression. Everything but the codec bits, the length and the CRC is kept as it
/// was: offsets, timestamps, producer id, epoch and sequence, the transactional and
/// timestamp-type bits, and the records byte for byte (duplicate header keys included).
pub fn recompress_batch(batch: &[u8], section: &[u8], target: Compression) -> Result<Vec<u8>, RecordsError> {
    let header = batch
        .get(..BATCH_HEADER_BYTES)
        .ok_or_else(|| RecordsError::Decode("fewer bytes than a batch header".into()))?;
    let records = compress(section, target)?;
    let batch_length = i32::try_from(BATCH_HEADER_BYTES - LOG_OVERHEAD_BYTES + records.len())
        .map_err(|_| RecordsError::TooLarge { max_bytes: i32::MAX as usize })?;
    let mut out = Vec::with_capacity(BATCH_HEADER_BYTES + records.len());
    out.extend_from_slice(header);
    out.extend_from_slice(&records);
    out[BATCH_LENGTH_AT..BATCH_LENGTH_AT + 4].copy_from_slice(&batch_length.to_be_bytes());
    let attributes = i16::from_be_bytes([out[ATTRIBUTES_AT], out[ATTRIBUTES_AT + 1]]);
    let attributes = (attributes & !COMPRESSION_MASK) | target as i16;
    out[ATTRIBUTES_AT..ATTRIBUTES_AT + 2].copy_from_slice(&attributes.to_be_bytes());
    let crc = crc32c::crc32c(&out[ATTRIBUTES_AT..]);
    out[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
    Ok(out)
}

/// Decodes one batch (magic 2), inflating at most `max_bytes` of records.
pub fn decode_batch(batch: Bytes, max_bytes: usize) -> Result<RecordSet, RecordsError> {
    let mut buf = batch;
    let too_large = std::cell::Cell::new(false);
    let decompress = |compressed: &mut Bytes, compression: Compression| -> anyhow::Result<Bytes> {
        let result = decompress(compressed, compression, max_bytes);
        if matches!(result, Err(RecordsError::TooLarge { .. })) {
            too_large.set(true);
        }
        result.map_err(anyhow::Error::from)
    };
    RecordBatchDecoder::decode_with_custom_compression(&mut buf, Some(decompress)).map_err(|error| {
        if too_large.get() {
            RecordsError::TooLarge { max_bytes }
        } else {
            RecordsError::Decode(error.to_string())
        }
    })
}

/// Inflates `compressed` with `compression`, refusing output beyond `max_bytes`.
pub fn decompress(compressed: &mut Bytes, compression: Compression, max_bytes: usize) -> Result<Bytes, RecordsError> {
    let input = compressed.copy_to_bytes(compressed.remaining());
    let decode = |e: std::io::Error| RecordsError::Decode(e.to_string());
    match compression {
        Compression::None => Ok(input),
        Compression::Gzip => read_bounded(flate2::read::GzDecoder::new(input.reader()), max_bytes),
        Compression::Lz4 => read_bounded(lz4::Decoder::new(input.reader()).map_err(decode)?, max_bytes),
        Compression::Zstd => read_bounded(zstd::stream::Decoder::new(input.reader()).map_err(decode)?, max_bytes),
        Compression::Snappy => snappy(&input, max_bytes),
    }
}

fn read_bounded(reader: impl Read, max_bytes: usize) -> Result<Bytes, RecordsError> {
    let mut out = Vec::new();
    reader.take(max_bytes as u64 + 1).read_to_end(&mut out).map_err(|e| RecordsError::Decode(e.to_string()))?;
    if out.len() > max_bytes {
        return Err(RecordsError::TooLarge { max_bytes });
    }
    Ok(Bytes::from(out))
}

/// The xerial framing Java clients write: a 16-byte header, then (length, block) pairs.
const XERIAL_MAGIC: &[u8] = b"\x82SNAPPY\x00";
const XERIAL_HEADER_BYTES: usize = 16;

fn snappy(input: &[u8], max_bytes: usize) -> Result<Bytes, RecordsError> {
    let decode = |e: snap::Error| RecordsError::Decode(e.to_string());
    let mut out = Vec::new();
    let block = |compressed: &[u8], out: &mut Vec<u8>| -> Result<(), RecordsError> {
        let len = snap::raw::decompress_len(compressed).map_err(decode)?;
        if out.len().saturating_add(len) > max_bytes {
            return Err(RecordsError::TooLarge { max_bytes });
        }
        let start = out.len();
        out.resize(start + len, 0);
        snap::raw::Decoder::new().decompress(compressed, &mut out[start..]).map_err(decode)?;
        Ok(())
    };
    if !input.starts_with(XERIAL_MAGIC) || input.len() < XERIAL_HEADER_BYTES {
        block(input, &mut out)?;
        return Ok(Bytes::from(out));
    }
    let mut rest = &input[XERIAL_HEADER_BYTES..];
    while !rest.is_empty() {
        let Some((len, tail)) = rest.split_first_chunk::<4>() else {
            return Err(RecordsError::Decode("truncated snappy block length".into()));
        };
        let len = u32::from_be_bytes(*len) as usize;
        let Some((compressed, tail)) = tail.split_at_checked(len) else {
            return Err(RecordsError::Decode("truncated snappy block".into()));
        };
        block(compressed, &mut out)?;
        rest = tail;
    }
    Ok(Bytes::from(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use kafka_protocol::records::{Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType};

    fn batch(compression: Compression, value_bytes: usize, count: usize) -> Bytes {
        let records: Vec<Record> = (0..count)
            .map(|i| Record {
                transactional: false,
                control: false,
                partition_leader_epoch: 0,
                producer_id: -1,
                producer_epoch: -1,
                timestamp_type: TimestampType::Creation,
                offset: i as i64,
                sequence: i as i32,
                timestamp: 1_000 + i as i64,
                key: None,
                value: Some(Bytes::from(vec![b'a'; value_bytes])),
                headers: Default::default(),
                delete_horizon: false,
            })
            .collect();
        let mut out = BytesMut::new();
        RecordBatchEncoder::encode(&mut out, records.iter(), &RecordEncodeOptions { version: 2, compression })
            .expect("encode");
        out.freeze()
    }

    #[test]
    fn every_codec_decodes_within_the_bound() {
        for compression in
            [Compression::None, Compression::Gzip, Compression::Snappy, Compression::Lz4, Compression::Zstd]
        {
            let set = decode_batch(batch(compression, 100, 50), 1 << 20).expect("decodes");
            assert_eq!(set.records.len(), 50, "{compression:?}");
            assert_eq!(set.records[49].timestamp, 1_049);
        }
    }

    #[test]
    fn a_batch_that_inflates_past_the_bound_is_refused() {
        // 64 MiB of one byte compresses to almost nothing.
        for compression in [Compression::Gzip, Compression::Snappy, Compression::Lz4, Compression::Zstd] {
            let bomb = batch(compression, 1 << 20, 64);
            assert!(bomb.len() < 4 << 20, "{compression:?} compressed to {} bytes", bomb.len());
            assert!(matches!(decode_batch(bomb, 8 << 20), Err(RecordsError::TooLarge { .. })), "{compression:?}");
        }
    }

    fn header_of(batch: &[u8]) -> raw::Header {
        raw::Header::of(batch)
    }

    /// Fields of a v2 header, read by hand so that the tests do not trust the code under test.
    mod raw {
        #[derive(Debug, PartialEq, Eq)]
        pub struct Header {
            pub batch_length: i32,
            pub attributes: i16,
            pub rest: Vec<u8>,
        }

        impl Header {
            pub fn of(batch: &[u8]) -> Header {
                Header {
                    batch_length: i32::from_be_bytes(batch[8..12].try_into().expect("4 bytes")),
                    attributes: i16::from_be_bytes([batch[21], batch[22]]),
                    rest: batch[23..61].to_vec(),
                }
            }
        }
    }

    /// A batch with two records sharing a header key, as Kafka allows and the encoder cannot
    /// write: built uncompressed by hand, then compressed with `compression`.
    fn batch_with_duplicate_headers(compression: Compression) -> Vec<u8> {
        let mut record = vec![0u8]; // attributes
        record.push(4); // timestampDelta 2
        record.push(0); // offsetDelta 0
        record.extend([2, b'k']); // key "k"
        record.extend([2, b'v']); // value "v"
        record.push(4); // 2 headers
        record.extend([2, b'h', 2, b'1', 2, b'h', 1]); // h=1, h=null
        let mut section = vec![record.len() as u8 * 2];
        section.extend(&record);
        let mut second = vec![0u8, 0, 2, 1, 2, b'w', 0]; // null key, offsetDelta 1
        second.insert(0, (second.len() * 2) as u8);
        section.extend(&second);
        let mut batch = Vec::new();
        batch.extend(0i64.to_be_bytes());
        batch.extend(0i32.to_be_bytes()); // batchLength, set by recompress_batch
        batch.extend((-1i32).to_be_bytes());
        batch.push(2);
        batch.extend(0u32.to_be_bytes());
        batch.extend((1i16 << 4).to_be_bytes()); // transactional, uncompressed
        batch.extend(1i32.to_be_bytes());
        batch.extend(1_000i64.to_be_bytes());
        batch.extend(1_002i64.to_be_bytes());
        batch.extend(7i64.to_be_bytes()); // producer id
        batch.extend(3i16.to_be_bytes()); // epoch
        batch.extend(41i32.to_be_bytes()); // base sequence
        batch.extend(2i32.to_be_bytes());
        recompress_batch(&batch, &section, compression).expect("encode")
    }

    #[test]
    fn walk_records_reads_timestamps_offsets_and_keys() {
        let batch = batch_with_duplicate_headers(Compression::None);
        let section = batch_records(&batch, 1 << 20).expect("records");
        let records = walk_records(&section, 2).expect("walk");
        assert_eq!(
            records,
            vec![
                RecordSummary { timestamp_delta: 2, offset_delta: 0, has_key: true },
                RecordSummary { timestamp_delta: 0, offset_delta: 1, has_key: false },
            ]
        );
        assert_eq!(batch_base_timestamp(&batch), 1_000);
        assert!(walk_records(&section, 3).is_err(), "fewer records than declared");
        assert!(walk_records(&section, 1).is_err(), "more records than declared");
        assert!(walk_records(&section[..section.len() - 1], 2).is_err(), "truncated");
        assert!(walk_records(&[0x01], 1).is_err(), "negative length");
        assert!(walk_records(&[0xff; 12], 1).is_err(), "endless varint");
    }

    #[test]
    fn recompression_keeps_every_field_and_record_byte() {
        let original = batch_with_duplicate_headers(Compression::None);
        let section = batch_records(&original, 1 << 20).expect("records");
        for target in [Compression::Gzip, Compression::Snappy, Compression::Lz4, Compression::Zstd, Compression::None] {
            let recompressed = recompress_batch(&original, &section, target).expect("recompress");
            let (before, after) = (header_of(&original), header_of(&recompressed));
            assert_eq!(after.attributes, (1 << 4) | target as i16, "{target:?}");
            assert_eq!(after.rest, before.rest, "{target:?}: offsets, timestamps, producer fields");
            assert_eq!(after.batch_length as usize + 12, recompressed.len());
            assert_eq!(batch_records(&recompressed, 1 << 20).expect("records"), section, "{target:?}");
            // The CRC is right: kafka-protocol's decoder checks it.
            let set = decode_batch(Bytes::from(recompressed), 1 << 20).expect("decodes");
            assert_eq!(set.records.len(), 2);
            assert_eq!((set.records[0].producer_id, set.records[0].sequence), (7, 41));
            assert_eq!(set.records[0].timestamp, 1_002);
            assert!(set.records[0].transactional);
        }
    }

    #[test]
    fn batch_records_is_bounded() {
        let bomb = batch(Compression::Zstd, 1 << 20, 16);
        assert!(matches!(batch_records(&bomb, 1 << 20), Err(RecordsError::TooLarge { .. })));
        let plain = batch(Compression::None, 1000, 4);
        assert!(matches!(batch_records(&plain, 100), Err(RecordsError::TooLarge { .. })));
    }

    proptest::proptest! {
        #[test]
        fn walking_arbitrary_records_never_panics(
            raw in proptest::collection::vec(proptest::num::u8::ANY, 0..512),
            count in -2i32..64,
        ) {
            if let Ok(records) = walk_records(&raw, count) {
                proptest::prop_assert_eq!(records.len() as i32, count);
            }
        }

        #[test]
        fn arbitrary_batches_never_panic(raw in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let mut batch = raw;
            if batch.len() > 21 {
                batch[21] &= 0x07; // a known or unknown codec
            }
            let _ = batch_records(&batch, 1 << 16);
        }
    }

    #[test]
    fn garbage_is_an_error() {
        for compression in [Compression::Gzip, Compression::Snappy, Compression::Lz4, Compression::Zstd] {
            let mut junk = Bytes::from_static(b"\x82SNAPPY\x00\x00\x00\x00\x01\x00\x00\x00\x01\xff\xff\xff\xffjunk");
            assert!(decompress(&mut junk, compression, 1 << 20).is_err(), "{compression:?}");
        }
    }
}
