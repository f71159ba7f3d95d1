//! Hostile and malformed input: every case gets Kafka's error code or a closed connection,
//! the broker keeps serving, and the data stored before is intact.

mod common;

use bytes::Bytes;
use common::{i16_at, Keel, Raw};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiVersionsRequest, CreateTopicsRequest, FetchRequest, MetadataRequest, ProduceRequest, ProduceResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use keel_log::testing::test_batch;

fn topic_name(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_string()))
}

fn produce(topic: &str, acks: i16, records: Vec<u8>) -> ProduceRequest {
    let mut partition = PartitionProduceData::default();
    partition.index = 0;
    partition.records = Some(Bytes::from(records));
    let mut data = TopicProduceData::default();
    data.name = topic_name(topic);
    data.partition_data = vec![partition];
    let mut request = ProduceRequest::default();
    request.acks = acks;
    request.timeout_ms = 5_000;
    request.topic_data = vec![data];
    request
}

fn produce_error(response: &ProduceResponse) -> i16 {
    response.responses[0].partition_responses[0].error_code
}

fn create_topic(raw: &mut Raw, name: &str) {
    let mut topic = CreatableTopic::default();
    topic.name = topic_name(name);
    topic.num_partitions = 1;
    topic.replication_factor = 1;
    let mut request = CreateTopicsRequest::default();
    request.topics = vec![topic];
    request.timeout_ms = 5_000;
    let response = raw.call(7, &request);
    assert_eq!(response.topics[0].error_code, 0, "{:?}", response.topics[0].error_message);
}

fn fetch(topic: &str, offset: i64) -> FetchRequest {
    let mut partition = FetchPartition::default();
    partition.partition = 0;
    partition.fetch_offset = offset;
    partition.partition_max_bytes = 1 << 20;
    let mut wanted = FetchTopic::default();
    wanted.topic = topic_name(topic);
    wanted.partitions = vec![partition];
    let mut request = FetchRequest::default();
    request.max_wait_ms = 0;
    request.max_bytes = 1 << 20;
    request.topics = vec![wanted];
    request
}

/// The broker still answers a fresh connection.
fn assert_alive(keel: &Keel) {
    let mut raw = keel.connect();
    let response = raw.call(3, &ApiVersionsRequest::default());
    assert_eq!(response.error_code, 0);
}

#[test]
fn hostile_frames_close_the_connection_and_nothing_else() {
    let keel = Keel::start(&["socket.request.max.bytes=1048576"]);

    // A negative length.
    let mut raw = keel.connect();
    raw.send_bytes(&(-1i32).to_be_bytes());
    assert!(raw.closed(), "negative frame length");

    // A length above socket.request.max.bytes: closed before anything is allocated.
    let mut raw = keel.connect();
    raw.send_bytes(&i32::MAX.to_be_bytes());
    assert!(raw.closed(), "oversized frame length");

    // A zero length.
    let mut raw = keel.connect();
    raw.send_bytes(&0i32.to_be_bytes());
    assert!(raw.closed(), "zero frame length");

    // A frame shorter than a request header.
    let mut raw = keel.connect();
    raw.send_bytes(&[0, 0, 0, 3, 0, 18, 0]);
    assert!(raw.closed(), "truncated header");

    // A truncated frame: the peer goes away mid-frame; the broker must not hang on it.
    let mut raw = keel.connect();
    raw.send_bytes(&[0, 0, 0, 100, 0, 18, 0, 3]);
    raw.stream.shutdown(std::net::Shutdown::Write).expect("shutdown");
    assert!(raw.closed(), "truncated frame");

    // An unknown API key.
    let mut raw = keel.connect();
    raw.send_bytes(&[0, 0, 0, 10, 0x7f, 0x7f, 0, 0, 0, 0, 0, 1, 0, 0]);
    assert!(raw.closed(), "unknown api key");

    // An unsupported version of an API other than ApiVersions.
    let mut raw = keel.connect();
    raw.send_bytes(&[0, 0, 0, 10, 0, 3, 0, 99, 0, 0, 0, 1, 0, 0]);
    assert!(raw.closed(), "unsupported metadata version");

    // A Metadata v0 request whose topic array claims 54 million entries.
    let mut raw = keel.connect();
    raw.send_bytes(&[0, 0, 0, 15, 0, 3, 0, 0, 0, 0, 0, 9, 0, 0, 0x03, 0x3c, 0x0c, 0x00, 0xb6]);
    assert!(raw.closed(), "lying array count");

    // A body that does not decode at all.
    let mut raw = keel.connect();
    raw.send_bytes(&[0, 0, 0, 12, 0, 0, 0, 9, 0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff]);
    assert!(raw.closed(), "garbage produce body");

    assert_alive(&keel);
}

#[test]
fn api_versions_answers_unknown_versions_with_its_ranges() {
    let keel = Keel::start(&[]);
    let mut raw = keel.connect();
    // KIP-511: a version from the future gets a v0-shaped answer with UNSUPPORTED_VERSION.
    let correlation_id = raw.send(0, &ApiVersionsRequest::default());
    let _ = raw.read_frame().expect("v0 answer");
    let mut frame = {
        // Rewrite the version field of a v3 request to 99.
        use kafka_protocol::messages::RequestHeader;
        use kafka_protocol::protocol::Encodable;
        let header = RequestHeader::default()
            .with_request_api_key(18)
            .with_request_api_version(99)
            .with_correlation_id(correlation_id + 1);
        let mut body = bytes::BytesMut::new();
        header.encode(&mut body, 2).expect("header");
        body.extend_from_slice(&[0, 0, 0]); // tagged fields of a flexible body
        let mut frame = (body.len() as i32).to_be_bytes().to_vec();
        frame.extend_from_slice(&body);
        frame
    };
    raw.send_bytes(&frame);
    let response = raw.read_frame().expect("the broker answers");
    frame.clear();
    assert_eq!(i32::from_be_bytes([response[0], response[1], response[2], response[3]]), correlation_id + 1);
    assert_eq!(i16_at(&response, 4), ResponseError::UnsupportedVersion.code());
    // The api_keys array follows: at least the APIs Keel serves.
    let count = i32::from_be_bytes([response[6], response[7], response[8], response[9]]);
    assert!(count >= 10, "{count} api keys");
}

#[test]
fn bad_produce_requests_get_kafka_error_codes_and_damage_nothing() {
    let keel = Keel::start(&["auto.create.topics.enable=false", "message.max.bytes=10000"]);
    let mut raw = keel.connect();
    create_topic(&mut raw, "good");

    // A good batch first: it must survive everything below.
    let good = test_batch(3, 1_700_000_000_000, 10);
    let response = raw.call(9, &produce("good", 1, good.clone()));
    assert_eq!(produce_error(&response), 0);

    // A bad CRC.
    let mut corrupt = test_batch(3, 1_700_000_000_000, 10);
    let last = corrupt.len() - 1;
    corrupt[last] ^= 0xff;
    let response = raw.call(9, &produce("good", 1, corrupt));
    assert_eq!(produce_error(&response), ResponseError::CorruptMessage.code());

    // A batch larger than max.message.bytes.
    let response = raw.call(9, &produce("good", 1, test_batch(1, 1_700_000_000_000, 20_000)));
    assert_eq!(produce_error(&response), ResponseError::MessageTooLarge.code());

    // acks=2.
    let response = raw.call(9, &produce("good", 2, good.clone()));
    assert_eq!(produce_error(&response), ResponseError::InvalidRequiredAcks.code());

    // A record count that lies (recordsCount at byte 57 no longer matches lastOffsetDelta + 1).
    let mut lying_count = test_batch(3, 1_700_000_000_000, 10);
    lying_count[57..61].copy_from_slice(&1_000_000i32.to_be_bytes());
    keel_log::batch::recompute_crc(&mut lying_count);
    let response = raw.call(9, &produce("good", 1, lying_count));
    assert_ne!(produce_error(&response), 0);

    // A batch length that lies (claims more bytes than sent).
    let mut lying_length = test_batch(3, 1_700_000_000_000, 10);
    lying_length[8..12].copy_from_slice(&1_000_000i32.to_be_bytes());
    let response = raw.call(9, &produce("good", 1, lying_length));
    assert_eq!(produce_error(&response), ResponseError::CorruptMessage.code());

    // A batch written as a control batch by a client.
    let mut control = test_batch(1, 1_700_000_000_000, 4);
    control[22] |= 1 << 5;
    keel_log::batch::recompute_crc(&mut control);
    let response = raw.call(9, &produce("good", 1, control));
    assert_eq!(produce_error(&response), ResponseError::InvalidRecord.code());

    // An invalid topic name, and a missing topic with auto-creation off.
    let response = raw.call(9, &produce("bad name!", 1, good.clone()));
    assert_eq!(produce_error(&response), ResponseError::InvalidTopicException.code());
    let response = raw.call(9, &produce("missing", 1, good.clone()));
    assert_eq!(produce_error(&response), ResponseError::UnknownTopicOrPartition.code());

    // Clients never write the broker's internal topics.
    let mut find = kafka_protocol::messages::FindCoordinatorRequest::default();
    find.key = StrBytes::from_static_str("some-group");
    assert_eq!(raw.call(3, &find).error_code, 0);
    let response = raw.call(9, &produce("__consumer_offsets", 1, good.clone()));
    assert_eq!(produce_error(&response), ResponseError::InvalidTopicException.code());

    // A fetch beyond the log.
    let response = raw.call(12, &fetch("good", 1_000));
    assert_eq!(response.responses[0].partitions[0].error_code, ResponseError::OffsetOutOfRange.code());

    // The good batch is intact and alone: three records at offsets 0..3.
    let response = raw.call(12, &fetch("good", 0));
    let partition = &response.responses[0].partitions[0];
    assert_eq!(partition.error_code, 0);
    assert_eq!(partition.high_watermark, 3);
    let records = partition.records.clone().expect("records");
    assert_eq!(records.len(), good.len());
    // Only baseOffset (0..8) and partitionLeaderEpoch (12..16) are the broker's to patch.
    assert_eq!(&records[8..12], &good[8..12], "batch length changed");
    assert_eq!(&records[16..], &good[16..], "stored batch differs from what was produced");

    // acks=0 with an error: no response, the connection is closed.
    let mut raw0 = keel.connect();
    raw0.send(9, &produce("good", 0, test_batch(1, 1_700_000_000_000, 20_000)));
    assert!(raw0.closed(), "acks=0 error closes the connection");
    assert_alive(&keel);
}

#[test]
fn invalid_topic_names_are_refused() {
    let keel = Keel::start(&[]);
    let mut raw = keel.connect();
    for name in ["bad name", "..", "a/b", &"x".repeat(250)] {
        let mut topic = CreatableTopic::default();
        topic.name = topic_name(name);
        topic.num_partitions = 1;
        topic.replication_factor = 1;
        let mut request = CreateTopicsRequest::default();
        request.topics = vec![topic];
        let response = raw.call(7, &request);
        assert_eq!(response.topics[0].error_code, ResponseError::InvalidTopicException.code(), "{name}");
        // Metadata with auto-creation gives the same answer and creates nothing.
        let mut wanted = kafka_protocol::messages::metadata_request::MetadataRequestTopic::default();
        wanted.name = Some(topic_name(name));
        let mut request = MetadataRequest::default();
        request.topics = Some(vec![wanted]);
        request.allow_auto_topic_creation = true;
        let response = raw.call(12, &request);
        assert_eq!(response.topics[0].error_code, ResponseError::InvalidTopicException.code(), "{name}");
    }
    // A partition count no request may ask for: refused before anything is planned.
    for validate_only in [true, false] {
        let mut topic = CreatableTopic::default();
        topic.name = topic_name("huge");
        topic.num_partitions = 2_000_000_000;
        topic.replication_factor = 1;
        let mut request = CreateTopicsRequest::default();
        request.topics = vec![topic];
        request.validate_only = validate_only;
        let response = raw.call(7, &request);
        assert_eq!(response.topics[0].error_code, ResponseError::PolicyViolation.code());
    }
    // Replication factor above the live brokers.
    let mut topic = CreatableTopic::default();
    topic.name = topic_name("rf3");
    topic.num_partitions = 1;
    topic.replication_factor = 3;
    let mut request = CreateTopicsRequest::default();
    request.topics = vec![topic];
    let response = raw.call(7, &request);
    assert_eq!(response.topics[0].error_code, ResponseError::InvalidReplicationFactor.code());
}

/// A gzip batch of one record whose value inflates to `inflated_bytes` zeros, compressed as it
/// is written so that the test never holds the inflated bytes.
fn gzip_bomb(inflated_bytes: usize) -> Vec<u8> {
    use std::io::Write;
    fn varint(out: &mut Vec<u8>, value: i64) {
        let mut zigzag = ((value << 1) ^ (value >> 63)) as u64;
        while zigzag >= 0x80 {
            out.push(zigzag as u8 | 0x80);
            zigzag >>= 7;
        }
        out.push(zigzag as u8);
    }
    let mut value_length = Vec::new();
    varint(&mut value_length, inflated_bytes as i64);
    // attributes, timestampDelta, offsetDelta, null key, value length, value, no headers
    let body_bytes = 3 + 1 + value_length.len() + inflated_bytes + 1;
    let mut head = Vec::new();
    varint(&mut head, body_bytes as i64);
    head.extend([0, 0, 0]);
    varint(&mut head, -1);
    head.extend(&value_length);
    let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gzip.write_all(&head).expect("gzip");
    let zeros = vec![0u8; 1 << 20];
    let mut left = inflated_bytes;
    while left > 0 {
        let n = left.min(zeros.len());
        gzip.write_all(&zeros[..n]).expect("gzip");
        left -= n;
    }
    gzip.write_all(&[0]).expect("gzip");
    let records = gzip.finish().expect("gzip");

    let mut batch = test_batch(1, 1_700_000_000_000, 0);
    batch.truncate(61);
    batch.extend(&records);
    let batch_length = (batch.len() - 12) as i32;
    batch[8..12].copy_from_slice(&batch_length.to_be_bytes());
    batch[22] = (batch[22] & !0x07) | 1; // gzip
    keel_log::batch::recompute_crc(&mut batch);
    batch
}

fn create_topic_with(raw: &mut Raw, name: &str, configs: &[(&str, &str)]) {
    use kafka_protocol::messages::create_topics_request::CreatableTopicConfig;
    let mut topic = CreatableTopic::default();
    topic.name = topic_name(name);
    topic.num_partitions = 1;
    topic.replication_factor = 1;
    topic.configs = configs
        .iter()
        .map(|(key, value)| {
            let mut config = CreatableTopicConfig::default();
            config.name = StrBytes::from_string(key.to_string());
            config.value = Some(StrBytes::from_string(value.to_string()));
            config
        })
        .collect();
    let mut request = CreateTopicsRequest::default();
    request.topics = vec![topic];
    request.timeout_ms = 5_000;
    let response = raw.call(7, &request);
    assert_eq!(response.topics[0].error_code, 0, "{:?}", response.topics[0].error_message);
}

#[test]
fn a_compression_bomb_is_refused_where_the_broker_must_read_records() {
    let keel = Keel::start(&[]);
    let mut raw = keel.connect();
    create_topic_with(&mut raw, "recompressed", &[("compression.type", "zstd")]);
    create_topic_with(&mut raw, "as-produced", &[]);
    // 512 MiB of zeros in about half a megabyte.
    let bomb = gzip_bomb(512 << 20);
    assert!(bomb.len() < 1_000_000, "{} bytes", bomb.len());

    // Recompression must inflate the records: it stops at its bound.
    let response = raw.call(9, &produce("recompressed", 1, bomb.clone()));
    let partition = &response.responses[0].partition_responses[0];
    assert_eq!(partition.error_code, ResponseError::MessageTooLarge.code(), "{:?}", partition.error_message);
    let peak = keel.peak_rss_bytes().expect("peak memory of the broker");
    assert!(peak < 400 << 20, "the broker peaked at {} MiB", peak >> 20);

    // Where nothing needs the records, the batch is stored as it came (Kafka accepts it too:
    // its in-place path streams over the records without keeping them).
    let response = raw.call(9, &produce("as-produced", 1, bomb));
    assert_eq!(produce_error(&response), 0);
    let response = raw.call(12, &fetch("recompressed", 0));
    assert_eq!(response.responses[0].partitions[0].high_watermark, 0);
    assert_alive(&keel);
}

#[test]
fn compacted_topics_refuse_records_without_keys_with_record_errors() {
    let keel = Keel::start(&[]);
    let mut raw = keel.connect();
    create_topic_with(&mut raw, "compacted", &[("cleanup.policy", "compact,delete")]);
    let keyless = keel_log::builder::build_batch(
        [(Some(&b"k"[..]), Some(&b"v"[..])), (None, Some(&b"v"[..])), (None, None)],
        1_700_000_000_000,
    )
    .expect("batch");
    for version in [7, 8, 11] {
        let response = raw.call(version, &produce("compacted", 1, keyless.clone()));
        let partition = &response.responses[0].partition_responses[0];
        assert_eq!(partition.error_code, ResponseError::InvalidRecord.code(), "v{version}");
        let indexes: Vec<i32> = partition.record_errors.iter().map(|e| e.batch_index).collect();
        if version >= 8 {
            assert_eq!(indexes, vec![1, 2]);
            assert!(partition.record_errors[0]
                .batch_index_error_message
                .as_ref()
                .is_some_and(|m| m.contains("without key")));
            assert!(partition.error_message.as_ref().is_some_and(|m| m.contains("2 record errors")));
        } else {
            assert!(indexes.is_empty() && partition.error_message.is_none(), "v{version} has no such fields");
        }
    }
    let keyed = keel_log::builder::build_batch([(Some(&b"k"[..]), None)], 1_700_000_000_000).expect("batch");
    assert_eq!(produce_error(&raw.call(9, &produce("compacted", 1, keyed))), 0);
    let response = raw.call(12, &fetch("compacted", 0));
    assert_eq!(response.responses[0].partitions[0].high_watermark, 1);
}
