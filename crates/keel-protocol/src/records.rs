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

    #[test]
    fn garbage_is_an_error() {
        for compression in [Compression::Gzip, Compression::Snappy, Compression::Lz4, Compression::Zstd] {
            let mut junk = Bytes::from_static(b"\x82SNAPPY\x00\x00\x00\x00\x01\x00\x00\x00\x01\xff\xff\xff\xffjunk");
            assert!(decompress(&mut junk, compression, 1 << 20).is_err(), "{compression:?}");
        }
    }
}
