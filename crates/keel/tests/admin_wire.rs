//! Behaviour pinned over the wire where the client libraries in the suite do not reach:
//! DescribeLogDirs v1+, fetch long polling and declined fetch sessions.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::Keel;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    describe_quorum_request, CreateTopicsRequest, DescribeLogDirsRequest, DescribeQuorumRequest, FetchRequest,
    ProduceRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use keel_log::testing::test_batch;

fn name(topic: &str) -> TopicName {
    TopicName(StrBytes::from_string(topic.to_string()))
}

fn create(keel: &Keel, topic: &str, partitions: i32) {
    let mut wanted = CreatableTopic::default();
    wanted.name = name(topic);
    wanted.num_partitions = partitions;
    wanted.replication_factor = 1;
    let mut request = CreateTopicsRequest::default();
    request.topics = vec![wanted];
    let response = keel.connect().call(7, &request);
    assert_eq!(response.topics[0].error_code, 0);
}

fn produce(keel: &Keel, topic: &str, partition: i32, records: u32) {
    let mut data = PartitionProduceData::default();
    data.index = partition;
    data.records = Some(Bytes::from(test_batch(records, 1_700_000_000_000, 100)));
    let mut topic_data = TopicProduceData::default();
    topic_data.name = name(topic);
    topic_data.partition_data = vec![data];
    let mut request = ProduceRequest::default();
    request.acks = -1;
    request.timeout_ms = 5_000;
    request.topic_data = vec![topic_data];
    let response = keel.connect().call(9, &request);
    assert_eq!(response.responses[0].partition_responses[0].error_code, 0);
}

fn fetch(topic: &str, offset: i64, max_wait_ms: i32) -> FetchRequest {
    let mut partition = FetchPartition::default();
    partition.fetch_offset = offset;
    partition.partition_max_bytes = 1 << 20;
    let mut wanted = FetchTopic::default();
    wanted.topic = name(topic);
    wanted.partitions = vec![partition];
    let mut request = FetchRequest::default();
    request.max_wait_ms = max_wait_ms;
    request.min_bytes = 1;
    request.max_bytes = 1 << 20;
    request.session_epoch = -1;
    request.topics = vec![wanted];
    request
}

#[test]
fn describe_log_dirs_reports_every_hosted_partition_with_its_size() {
    let keel = Keel::start(&[]);
    create(&keel, "dirs", 2);
    produce(&keel, "dirs", 1, 10);
    for version in 1..=4 {
        // A null topic list asks for every partition.
        let mut request = DescribeLogDirsRequest::default();
        request.topics = None;
        let response = keel.connect().call(version, &request);
        assert_eq!(response.results.len(), 1);
        let dir = &response.results[0];
        assert_eq!(dir.error_code, 0);
        assert!(dir.log_dir.as_str().ends_with("data"), "{}", dir.log_dir.as_str());
        let topic = dir.topics.iter().find(|t| t.name.0.as_str() == "dirs").expect("topic listed");
        let sizes: Vec<(i32, i64)> = topic.partitions.iter().map(|p| (p.partition_index, p.partition_size)).collect();
        assert_eq!(sizes.len(), 2);
        assert_eq!(sizes[0], (0, 0));
        assert_eq!(sizes[1].0, 1);
        assert!(sizes[1].1 > 1000, "partition 1 holds ten 100-byte records: {sizes:?}");
    }
}

#[test]
fn an_empty_fetch_waits_and_an_append_wakes_it() {
    let keel = Keel::start(&[]);
    create(&keel, "poll", 1);

    // Nothing to read: the answer comes after max_wait_ms, empty.
    let started = Instant::now();
    let response = keel.connect().call(12, &fetch("poll", 0, 300));
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(250), "answered after {waited:?}, before max_wait_ms");
    let partition = &response.responses[0].partitions[0];
    assert_eq!(partition.error_code, 0);
    assert_eq!(partition.records.as_ref().map(Bytes::len), Some(0));

    // A long poll is answered by the append, not by the timeout.
    let bootstrap = keel.kafka;
    let poller = std::thread::spawn(move || {
        let mut raw = common::Raw::connect(bootstrap);
        let started = Instant::now();
        let response = raw.call(12, &fetch("poll", 0, 20_000));
        (started.elapsed(), response)
    });
    std::thread::sleep(Duration::from_millis(300));
    produce(&keel, "poll", 0, 3);
    let (waited, response) = poller.join().expect("poller");
    assert!(waited < Duration::from_secs(10), "the append did not wake the fetch ({waited:?})");
    let partition = &response.responses[0].partitions[0];
    assert_eq!(partition.high_watermark, 3);
    assert!(partition.records.as_ref().is_some_and(|r| !r.is_empty()));
}

#[test]
fn fetch_sessions_are_declined_the_way_kip_227_allows() {
    let keel = Keel::start(&[]);
    create(&keel, "sessions", 1);
    produce(&keel, "sessions", 0, 1);
    let mut raw = keel.connect();

    // A client asking for a new session (epoch 0) gets a full response and session id 0.
    let mut request = fetch("sessions", 0, 0);
    request.session_epoch = 0;
    let response = raw.call(12, &request);
    assert_eq!(response.error_code, 0);
    assert_eq!(response.session_id, 0);
    assert_eq!(response.responses[0].partitions[0].high_watermark, 1);

    // An incremental fetch names a session that does not exist.
    let mut request = fetch("sessions", 0, 0);
    request.session_id = 123;
    request.session_epoch = 1;
    let response = raw.call(12, &request);
    assert_eq!(response.error_code, ResponseError::FetchSessionIdNotFound.code());
}

#[test]
fn silent_connections_are_closed_after_connections_max_idle_ms() {
    let keel = Keel::start(&["connections.max.idle.ms=300"]);
    let mut silent = keel.connect();
    let started = Instant::now();
    assert!(silent.closed(), "the broker keeps a silent connection open");
    assert!(started.elapsed() >= Duration::from_millis(250), "closed before the idle time");
    // A connection that keeps talking stays open.
    let mut busy = keel.connect();
    for _ in 0..5 {
        std::thread::sleep(Duration::from_millis(150));
        let response = busy.call(3, &kafka_protocol::messages::ApiVersionsRequest::default());
        assert_eq!(response.error_code, 0);
    }
}

fn describe_quorum(topic: &str, partition: i32) -> DescribeQuorumRequest {
    let mut wanted = describe_quorum_request::PartitionData::default();
    wanted.partition_index = partition;
    let mut topic_data = describe_quorum_request::TopicData::default();
    topic_data.topic_name = name(topic);
    topic_data.partitions = vec![wanted];
    let mut request = DescribeQuorumRequest::default();
    request.topics = vec![topic_data];
    request
}

#[test]
fn describe_quorum_reports_the_metadata_leader_and_its_log() {
    let keel = Keel::start(&[]);
    let before = keel.connect().call(2, &describe_quorum("__cluster_metadata", 0));
    let partition = &before.topics[0].partitions[0];
    assert_eq!(partition.error_code, 0);
    assert_eq!(partition.leader_id.0, 1);
    assert!(partition.leader_epoch >= 1);
    assert_eq!(partition.current_voters.len(), 1);
    let voter = &partition.current_voters[0];
    assert_eq!(voter.replica_id.0, 1);
    assert!(partition.high_watermark > 0 && voter.log_end_offset >= partition.high_watermark, "{partition:?}");
    // A metadata change moves the high watermark.
    create(&keel, "quorum-moves", 1);
    let after = keel.connect().call(2, &describe_quorum("__cluster_metadata", 0));
    assert!(after.topics[0].partitions[0].high_watermark > partition.high_watermark);
    // Only the metadata partition has a quorum.
    for (topic, index) in [("__cluster_metadata", 1), ("quorum-moves", 0)] {
        let other = keel.connect().call(2, &describe_quorum(topic, index));
        assert_eq!(other.topics[0].partitions[0].error_code, ResponseError::UnknownTopicOrPartition.code());
    }
}
