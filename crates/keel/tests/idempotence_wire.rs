//! Idempotent produce on the wire: producer ids survive restarts, retries get their original
//! offsets, and wrong sequences, epochs and sequence-less batches get Kafka's error codes.

mod common;

use bytes::Bytes;
use common::{Keel, Raw};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    CreateTopicsRequest, InitProducerIdRequest, ProduceRequest, ProduceResponse, TopicName, TransactionalId,
};
use kafka_protocol::protocol::StrBytes;
use keel_log::builder::{build_producer_batch, Producer};

const TOPIC: &str = "idempotent";

fn produce(records: Vec<u8>) -> ProduceRequest {
    let mut partition = PartitionProduceData::default();
    partition.index = 0;
    partition.records = Some(Bytes::from(records));
    let mut data = TopicProduceData::default();
    data.name = TopicName(StrBytes::from_static_str(TOPIC));
    data.partition_data = vec![partition];
    let mut request = ProduceRequest::default();
    request.acks = -1;
    request.timeout_ms = 5_000;
    request.topic_data = vec![data];
    request
}

fn batch(id: i64, epoch: i16, base_sequence: i32, records: usize) -> Vec<u8> {
    let values: Vec<Vec<u8>> = (0..records).map(|i| format!("value-{base_sequence}-{i}").into_bytes()).collect();
    let producer = Producer { id, epoch, base_sequence };
    // Producer state expires `producer.id.expiration.ms` after the batch timestamp: use now.
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_millis() as i64;
    build_producer_batch(values.iter().map(|v| (None, Some(&v[..]))), now, producer, false).expect("records")
}

/// (error code, base offset) of the one partition produced to.
fn send(raw: &mut Raw, records: Vec<u8>) -> (i16, i64) {
    let response: ProduceResponse = raw.call(9, &produce(records));
    let partition = &response.responses[0].partition_responses[0];
    (partition.error_code, partition.base_offset)
}

fn init_producer_id(raw: &mut Raw, version: i16) -> (i16, i64, i16) {
    let mut request = InitProducerIdRequest::default();
    request.transactional_id = None;
    request.transaction_timeout_ms = 60_000;
    let response = raw.call(version, &request);
    (response.error_code, response.producer_id.0, response.producer_epoch)
}

#[test]
fn idempotent_produce_follows_kafkas_rules() {
    let mut keel = Keel::start(&[]);
    let mut raw = keel.connect();
    let mut topic = CreatableTopic::default();
    topic.name = TopicName(StrBytes::from_static_str(TOPIC));
    topic.num_partitions = 1;
    topic.replication_factor = 1;
    let mut create = CreateTopicsRequest::default();
    create.topics = vec![topic];
    assert_eq!(raw.call(7, &create).topics[0].error_code, 0);

    // Ids are unique, at every version.
    let (error, pid, epoch) = init_producer_id(&mut raw, 0);
    assert_eq!((error, epoch), (0, 0));
    let (_, second, _) = init_producer_id(&mut raw, 5);
    assert_ne!(pid, second);
    // An empty transactional id is not "none" (Kafka: INVALID_REQUEST).
    let mut empty = InitProducerIdRequest::default();
    empty.transactional_id = Some(TransactionalId(StrBytes::from_static_str("")));
    assert_eq!(raw.call(4, &empty).error_code, ResponseError::InvalidRequest.code());

    assert_eq!(send(&mut raw, batch(pid, 0, 0, 3)), (0, 0));
    assert_eq!(send(&mut raw, batch(pid, 0, 3, 2)), (0, 3));
    // A retry of either recent batch is answered with its first offsets, and not written.
    assert_eq!(send(&mut raw, batch(pid, 0, 0, 3)), (0, 0));
    assert_eq!(send(&mut raw, batch(pid, 0, 3, 2)), (0, 3));
    // A gap in the sequence.
    let (error, offset) = send(&mut raw, batch(pid, 0, 9, 1));
    assert_eq!((error, offset), (ResponseError::OutOfOrderSequenceNumber.code(), -1));
    // A bumped epoch must start at 0; once it has, the old epoch is fenced.
    assert_eq!(send(&mut raw, batch(pid, 1, 5, 1)).0, ResponseError::OutOfOrderSequenceNumber.code());
    assert_eq!(send(&mut raw, batch(pid, 1, 0, 1)), (0, 5));
    assert_eq!(send(&mut raw, batch(pid, 0, 5, 1)).0, ResponseError::InvalidProducerEpoch.code());
    // A producer id without a sequence number is not a valid batch.
    assert_eq!(send(&mut raw, batch(pid, 1, -1, 1)).0, ResponseError::InvalidRecord.code());

    // After kill -9 the producer state is rebuilt from the log: the retry is still a duplicate,
    // and the next id is not one given before.
    keel.kill9();
    keel.restart();
    let mut raw = keel.connect();
    assert_eq!(send(&mut raw, batch(pid, 1, 0, 1)), (0, 5));
    assert_eq!(send(&mut raw, batch(pid, 1, 1, 1)), (0, 6));
    let (_, third, _) = init_producer_id(&mut raw, 3);
    assert!(third != pid && third != second, "producer id {third} handed out twice");
}
