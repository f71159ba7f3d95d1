//! Encoding Fetch responses whose record data comes from files.
//!
//! The generic encoder would need every partition's records as bytes in memory and then copy
//! them into the output. Here the response is written field by field, byte-identical to
//! kafka-protocol's encoding (a test pins that for every version), and each partition's records
//! are left to a `fill` callback: it may read the file range straight into the output buffer
//! (one copy) or append nothing and let the caller `sendfile` the range between the bytes
//! before and after it (no copy).

use bytes::{BufMut, BytesMut};
use kafka_protocol::messages::fetch_response::PartitionData;
use kafka_protocol::messages::{ApiKey, FetchResponse};
use kafka_protocol::protocol::Encodable;

/// Where the records of one partition go: how many bytes they are, and whether they are
/// written by `fill` or supplied in `PartitionData::records`.
pub trait RecordsSource {
    /// Length of the records of the `index`-th partition of the response (in order), or
    /// `None` to use the partition's own `records` field.
    fn len(&self, index: usize) -> Option<usize>;
    /// Appends the records of the `index`-th partition to `out` (or nothing, to send them
    /// separately); returns the number of bytes appended.
    fn fill(&mut self, out: &mut BytesMut, index: usize) -> anyhow::Result<usize>;
}

/// Records carried in the response itself.
pub struct Inline;

impl RecordsSource for Inline {
    fn len(&self, _index: usize) -> Option<usize> {
        None
    }
    fn fill(&mut self, _out: &mut BytesMut, _index: usize) -> anyhow::Result<usize> {
        Ok(0)
    }
}

fn put_uvarint(out: &mut BytesMut, mut value: u64) {
    while value >= 0x80 {
        out.put_u8((value as u8 & 0x7f) | 0x80);
        value >>= 7;
    }
    out.put_u8(value as u8);
}

fn uvarint_len(mut value: u64) -> usize {
    let mut len = 1;
    while value >= 0x80 {
        value >>= 7;
        len += 1;
    }
    len
}

fn put_array_len(out: &mut BytesMut, len: usize, flexible: bool) {
    if flexible {
        put_uvarint(out, len as u64 + 1);
    } else {
        out.put_i32(len as i32);
    }
}

/// One tagged field: tag, size, then the struct.
fn put_tagged<T: Encodable>(out: &mut BytesMut, tag: u32, value: &T, version: i16) -> anyhow::Result<()> {
    put_uvarint(out, u64::from(tag));
    put_uvarint(out, value.compute_size(version)? as u64);
    value.encode(out, version)
}

/// Appends one Fetch response frame (length, header, body) to `out`. Returns the frame's
/// total length including bytes that `records` chose not to append.
pub fn encode_fetch_response(
    out: &mut BytesMut,
    version: i16,
    correlation_id: i32,
    response: &FetchResponse,
    records: &mut impl RecordsSource,
) -> anyhow::Result<usize> {
    anyhow::ensure!((4..=18).contains(&version), "fetch v{version} is not encodable");
    anyhow::ensure!(response.unknown_tagged_fields.is_empty(), "unknown tagged fields are not encoded");
    let flexible = version >= 12;
    let start = out.len();
    let mut withheld = 0usize;
    out.put_i32(0);
    out.put_i32(correlation_id);
    if ApiKey::Fetch.response_header_version(version) >= 1 {
        out.put_u8(0);
    }
    out.put_i32(response.throttle_time_ms);
    if version >= 7 {
        out.put_i16(response.error_code);
        out.put_i32(response.session_id);
    } else {
        anyhow::ensure!(response.session_id == 0, "session_id needs fetch v7");
    }
    put_array_len(out, response.responses.len(), flexible);
    let mut index = 0usize;
    for topic in &response.responses {
        if version <= 12 {
            let name = topic.topic.0.as_str().as_bytes();
            if flexible {
                put_uvarint(out, name.len() as u64 + 1);
            } else {
                out.put_i16(name.len() as i16);
            }
            out.put_slice(name);
        }
        if version >= 13 {
            out.put_slice(topic.topic_id.as_bytes());
        }
        put_array_len(out, topic.partitions.len(), flexible);
        for partition in &topic.partitions {
            withheld += put_partition(out, version, partition, records, index)?;
            index += 1;
        }
        if flexible {
            anyhow::ensure!(topic.unknown_tagged_fields.is_empty(), "unknown tagged fields are not encoded");
            out.put_u8(0);
        }
    }
    if flexible {
        if version >= 16 && !response.node_endpoints.is_empty() {
            out.put_u8(1);
            put_uvarint(out, 0);
            let mut size = uvarint_len(response.node_endpoints.len() as u64 + 1);
            for endpoint in &response.node_endpoints {
                size += endpoint.compute_size(version)?;
            }
            put_uvarint(out, size as u64);
            put_array_len(out, response.node_endpoints.len(), true);
            for endpoint in &response.node_endpoints {
                endpoint.encode(out, version)?;
            }
        } else {
            out.put_u8(0);
        }
    }
    let total = out.len() - start + withheld;
    let length = i32::try_from(total - 4)?;
    out[start..start + 4].copy_from_slice(&length.to_be_bytes());
    Ok(total)
}

/// Writes one partition; returns the record bytes withheld by `records`.
fn put_partition(
    out: &mut BytesMut,
    version: i16,
    partition: &PartitionData,
    records: &mut impl RecordsSource,
    index: usize,
) -> anyhow::Result<usize> {
    let flexible = version >= 12;
    anyhow::ensure!(partition.unknown_tagged_fields.is_empty(), "unknown tagged fields are not encoded");
    out.put_i32(partition.partition_index);
    out.put_i16(partition.error_code);
    out.put_i64(partition.high_watermark);
    out.put_i64(partition.last_stable_offset);
    if version >= 5 {
        out.put_i64(partition.log_start_offset);
    }
    match &partition.aborted_transactions {
        None if flexible => out.put_u8(0),
        None => out.put_i32(-1),
        Some(aborted) => {
            put_array_len(out, aborted.len(), flexible);
            for transaction in aborted {
                out.put_i64(transaction.producer_id.0);
                out.put_i64(transaction.first_offset);
                if flexible {
                    out.put_u8(0);
                }
            }
        }
    }
    if version >= 11 {
        out.put_i32(partition.preferred_read_replica.0);
    } else {
        anyhow::ensure!(partition.preferred_read_replica.0 == -1, "preferred_read_replica needs fetch v11");
    }
    let mut withheld = 0;
    match records.len(index) {
        Some(len) => {
            if flexible {
                put_uvarint(out, len as u64 + 1);
            } else {
                out.put_i32(i32::try_from(len)?);
            }
            let appended = records.fill(out, index)?;
            anyhow::ensure!(appended == len || appended == 0, "records source appended {appended} of {len} bytes");
            withheld = len - appended;
        }
        None => match &partition.records {
            None if flexible => out.put_u8(0),
            None => out.put_i32(-1),
            Some(bytes) => {
                if flexible {
                    put_uvarint(out, bytes.len() as u64 + 1);
                } else {
                    out.put_i32(i32::try_from(bytes.len())?);
                }
                out.put_slice(bytes);
            }
        },
    }
    if flexible {
        let diverging = partition.diverging_epoch != Default::default();
        let leader = partition.current_leader != Default::default();
        let snapshot = partition.snapshot_id != Default::default();
        out.put_u8(u8::from(diverging) + u8::from(leader) + u8::from(snapshot));
        if diverging {
            put_tagged(out, 0, &partition.diverging_epoch, version)?;
        }
        if leader {
            put_tagged(out, 1, &partition.current_leader, version)?;
        }
        if snapshot {
            put_tagged(out, 2, &partition.snapshot_id, version)?;
        }
    }
    Ok(withheld)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use kafka_protocol::messages::fetch_response::{
        AbortedTransaction, EpochEndOffset, FetchableTopicResponse, LeaderIdAndEpoch, NodeEndpoint,
    };
    use kafka_protocol::messages::{BrokerId, ProducerId, ResponseKind, TopicName};
    use kafka_protocol::protocol::StrBytes;

    fn sample(version: i16, seed: u8) -> FetchResponse {
        let mut response = FetchResponse::default();
        response.throttle_time_ms = i32::from(seed);
        if version >= 7 {
            response.error_code = i16::from(seed % 3);
            response.session_id = i32::from(seed) * 7;
        }
        for t in 0..(1 + seed % 3) {
            let mut topic = FetchableTopicResponse::default();
            if version <= 12 {
                topic.topic = TopicName(StrBytes::from_string(format!("topic-{t}-{}", "x".repeat(seed as usize % 5))));
            }
            if version >= 13 {
                topic.topic_id = uuid::Uuid::from_bytes([seed.wrapping_add(t); 16]);
            }
            for p in 0..(seed % 4) {
                let mut partition = PartitionData::default();
                partition.partition_index = i32::from(p);
                partition.error_code = i16::from(p % 2);
                partition.high_watermark = 1000 + i64::from(p);
                partition.last_stable_offset = 900;
                if version >= 5 {
                    partition.log_start_offset = i64::from(seed);
                }
                partition.aborted_transactions = match p % 3 {
                    0 => None,
                    1 => Some(Vec::new()),
                    _ => {
                        Some(vec![AbortedTransaction::default().with_producer_id(ProducerId(7)).with_first_offset(11)])
                    }
                };
                if version >= 11 {
                    partition.preferred_read_replica = BrokerId(i32::from(p) - 1);
                }
                partition.records = match (p + seed) % 3 {
                    0 => None,
                    1 => Some(Bytes::new()),
                    _ => Some(Bytes::from(vec![seed; 200 + usize::from(p) * 100])),
                };
                if version >= 12 && p == 2 {
                    partition.current_leader =
                        LeaderIdAndEpoch::default().with_leader_id(BrokerId(3)).with_leader_epoch(4);
                    partition.diverging_epoch = EpochEndOffset::default().with_epoch(2).with_end_offset(99);
                }
                topic.partitions.push(partition);
            }
            response.responses.push(topic);
        }
        if version >= 16 && seed % 2 == 0 {
            response.node_endpoints = vec![NodeEndpoint::default()
                .with_node_id(BrokerId(3))
                .with_host(StrBytes::from_static_str("host"))
                .with_port(9092)];
        }
        response
    }

    /// Supplies each partition's records from the response itself, through `fill`.
    struct FromResponse(Vec<Option<Bytes>>, bool);

    impl RecordsSource for FromResponse {
        fn len(&self, index: usize) -> Option<usize> {
            self.0[index].as_ref().map(Bytes::len)
        }
        fn fill(&mut self, out: &mut BytesMut, index: usize) -> anyhow::Result<usize> {
            if self.1 {
                return Ok(0);
            }
            let bytes = self.0[index].as_ref().map_or(&[][..], |b| &b[..]);
            out.put_slice(bytes);
            Ok(bytes.len())
        }
    }

    #[test]
    fn identical_to_the_generic_encoder_for_every_version() {
        for version in 4..=18 {
            for seed in 0..12u8 {
                let response = sample(version, seed);
                let mut expected = BytesMut::new();
                crate::encode_response(
                    &mut expected,
                    ApiKey::Fetch,
                    version,
                    42,
                    &ResponseKind::Fetch(response.clone()),
                )
                .expect("generic encoding");

                let mut inline = BytesMut::new();
                let total = encode_fetch_response(&mut inline, version, 42, &response, &mut Inline).expect("inline");
                assert_eq!(inline, expected, "inline v{version} seed {seed}");
                assert_eq!(total, expected.len());

                let all: Vec<Option<Bytes>> =
                    response.responses.iter().flat_map(|t| t.partitions.iter().map(|p| p.records.clone())).collect();
                let mut filled = BytesMut::new();
                let total =
                    encode_fetch_response(&mut filled, version, 42, &response, &mut FromResponse(all.clone(), false))
                        .expect("filled");
                assert_eq!(filled, expected, "filled v{version} seed {seed}");
                assert_eq!(total, expected.len());

                // Withheld records: the frame length still counts them.
                let mut withheld = BytesMut::new();
                let total =
                    encode_fetch_response(&mut withheld, version, 42, &response, &mut FromResponse(all.clone(), true))
                        .expect("withheld");
                let record_bytes: usize = all.iter().flatten().map(Bytes::len).sum();
                assert_eq!(total, expected.len());
                assert_eq!(withheld.len() + record_bytes, expected.len());
                assert_eq!(&withheld[..4], &expected[..4]);
            }
        }
    }
}
