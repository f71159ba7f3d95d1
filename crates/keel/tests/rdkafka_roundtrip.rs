//! librdkafka through the `rdkafka` crate: keyed records with headers and timestamps, with
//! every compression codec, produced and consumed back exactly once and in order; plus
//! ListOffsets and admin calls from the same client.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::Keel;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};

const PARTITIONS: i32 = 6;
const RECORDS: usize = 100_000;
const KEYS: usize = 1_000;
const BASE_TIMESTAMP_MS: i64 = 1_700_000_000_000;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime")
}

fn create_topic(bootstrap: &str, name: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> =
        ClientConfig::new().set("bootstrap.servers", bootstrap).create().expect("admin client");
    let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
    let results = runtime().block_on(admin.create_topics([&topic], &AdminOptions::new())).expect("create topics");
    for result in results {
        result.expect("topic created");
    }
}

fn roundtrip(keel: &Keel, codec: &str) {
    let topic = format!("roundtrip-{codec}");
    create_topic(&keel.bootstrap(), &topic, PARTITIONS);
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", keel.bootstrap())
        .set("compression.codec", codec)
        .set("linger.ms", "5")
        .set("acks", "all")
        .set("partitioner", "murmur2_random")
        .create()
        .expect("producer");
    for i in 0..RECORDS {
        let key = format!("key-{}", i % KEYS);
        let value = format!("value-{i}");
        let headers = OwnedHeaders::new()
            .insert(Header { key: "seq", value: Some(&i.to_string()) })
            .insert(Header { key: "codec", value: Some(codec) });
        let mut record =
            BaseRecord::to(&topic).key(&key).payload(&value).headers(headers).timestamp(BASE_TIMESTAMP_MS + i as i64);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((error, returned)) => {
                    assert!(
                        matches!(error.rdkafka_error_code(), Some(rdkafka::types::RDKafkaErrorCode::QueueFull)),
                        "send failed: {error}"
                    );
                    record = returned;
                    producer.poll(Duration::from_millis(10));
                }
            }
        }
    }
    producer.flush(Duration::from_secs(60)).expect("flush");
    assert_eq!(producer.in_flight_count(), 0);

    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", keel.bootstrap())
        .set("group.id", "unused-manual-assignment")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .create()
        .expect("consumer");
    let mut assignment = TopicPartitionList::new();
    for partition in 0..PARTITIONS {
        assignment.add_partition_offset(&topic, partition, Offset::Beginning).expect("assign");
    }
    consumer.assign(&assignment).expect("assign");

    let mut seen = vec![false; RECORDS];
    let mut last_seq_per_key: HashMap<String, usize> = HashMap::new();
    let mut count = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while count < RECORDS {
        assert!(std::time::Instant::now() < deadline, "{codec}: only {count} of {RECORDS} records consumed");
        let Some(message) = consumer.poll(Duration::from_millis(500)) else { continue };
        let message = message.expect("no consume errors");
        let key = std::str::from_utf8(message.key().expect("key")).expect("utf8").to_string();
        let value = std::str::from_utf8(message.payload().expect("value")).expect("utf8");
        let i: usize = value.strip_prefix("value-").expect("value shape").parse().expect("number");
        assert_eq!(key, format!("key-{}", i % KEYS));
        let headers = message.headers().expect("headers");
        assert_eq!(headers.count(), 2);
        assert_eq!(headers.get(0).value, Some(i.to_string().as_bytes()));
        assert_eq!(headers.get(1).value, Some(codec.as_bytes()));
        assert_eq!(message.timestamp().to_millis(), Some(BASE_TIMESTAMP_MS + i as i64));
        assert!(!seen[i], "{codec}: record {i} delivered twice");
        seen[i] = true;
        // Order per key (and so per partition) is the production order.
        if let Some(previous) = last_seq_per_key.insert(key, i) {
            assert!(previous < i, "{codec}: record {i} after {previous} for the same key");
        }
        count += 1;
    }
    assert!(seen.iter().all(|s| *s));

    // ListOffsets: earliest 0, latest = records in the partition, by timestamp within range.
    let mut total = 0;
    for partition in 0..PARTITIONS {
        let (low, high) = consumer.fetch_watermarks(&topic, partition, Duration::from_secs(10)).expect("watermarks");
        assert_eq!(low, 0);
        total += high;
    }
    assert_eq!(total as usize, RECORDS);
    let mut by_time = TopicPartitionList::new();
    by_time.add_partition_offset(&topic, 0, Offset::Offset(BASE_TIMESTAMP_MS + RECORDS as i64 / 2)).expect("tpl");
    let found = consumer.offsets_for_times(by_time, Duration::from_secs(10)).expect("offsets for times");
    let offset = found.find_partition(&topic, 0).expect("partition").offset();
    assert!(matches!(offset, Offset::Offset(o) if o > 0), "{offset:?}");
    let mut after_end = TopicPartitionList::new();
    after_end.add_partition_offset(&topic, 0, Offset::Offset(BASE_TIMESTAMP_MS + 10 * RECORDS as i64)).expect("tpl");
    let found = consumer.offsets_for_times(after_end, Duration::from_secs(10)).expect("offsets for times");
    assert_eq!(found.find_partition(&topic, 0).expect("partition").offset(), Offset::End);
}

#[test]
fn rdkafka_roundtrip_with_every_codec() {
    let keel = Keel::start(&[]);
    for codec in ["none", "gzip", "snappy", "lz4", "zstd"] {
        roundtrip(&keel, codec);
    }
}

/// The same through the buffered fetch path (`keel.fetch.sendfile.enable=false`).
#[test]
fn rdkafka_roundtrip_with_buffered_fetches() {
    let keel = Keel::start(&["keel.fetch.sendfile.enable=false"]);
    roundtrip(&keel, "lz4");
}
