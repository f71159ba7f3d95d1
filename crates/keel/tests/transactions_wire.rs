//! Transactional requests on the wire with wrong producer ids, epochs and states: Kafka's
//! error codes, per version, and nothing written that should not be.

mod common;

use bytes::Bytes;
use common::{Keel, Raw};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::txn_offset_commit_request::{
    TxnOffsetCommitRequestPartition, TxnOffsetCommitRequestTopic,
};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use keel_log::builder::{build_producer_batch, Producer};

const TOPIC: &str = "txn-wire";

fn topic() -> TopicName {
    TopicName(StrBytes::from_static_str(TOPIC))
}

fn txn_id(id: &'static str) -> TransactionalId {
    TransactionalId(StrBytes::from_static_str(id))
}

fn add_partitions(raw: &mut Raw, version: i16, id: &'static str, pid: i64, epoch: i16, topic_name: TopicName) -> i16 {
    let mut t = AddPartitionsToTxnTopic::default();
    t.name = topic_name;
    t.partitions = vec![0];
    let mut request = AddPartitionsToTxnRequest::default();
    request.v3_and_below_transactional_id = txn_id(id);
    request.v3_and_below_producer_id = ProducerId(pid);
    request.v3_and_below_producer_epoch = epoch;
    request.v3_and_below_topics = vec![t];
    let response = raw.call(version, &request);
    response.results_by_topic_v3_and_below[0].results_by_partition[0].partition_error_code
}

fn end_txn(raw: &mut Raw, id: &'static str, pid: i64, epoch: i16, commit: bool) -> i16 {
    let mut request = EndTxnRequest::default();
    request.transactional_id = txn_id(id);
    request.producer_id = ProducerId(pid);
    request.producer_epoch = epoch;
    request.committed = commit;
    raw.call(3, &request).error_code
}

fn produce(raw: &mut Raw, id: Option<&'static str>, pid: i64, epoch: i16, seq: i32) -> i16 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_millis() as i64;
    let producer = Producer { id: pid, epoch, base_sequence: seq };
    let batch = build_producer_batch([(None, Some(&b"v"[..]))], now, producer, true).expect("batch");
    let mut partition = PartitionProduceData::default();
    partition.index = 0;
    partition.records = Some(Bytes::from(batch));
    let mut data = TopicProduceData::default();
    data.name = topic();
    data.partition_data = vec![partition];
    let mut request = ProduceRequest::default();
    request.transactional_id = id.map(txn_id);
    request.acks = -1;
    request.timeout_ms = 5_000;
    request.topic_data = vec![data];
    let response: ProduceResponse = raw.call(9, &request);
    response.responses[0].partition_responses[0].error_code
}

#[test]
fn transactional_requests_get_kafkas_errors() {
    let keel = Keel::start(&[]);
    let mut raw = keel.connect();
    let mut t = CreatableTopic::default();
    t.name = topic();
    t.num_partitions = 1;
    t.replication_factor = 1;
    let mut create = CreateTopicsRequest::default();
    create.topics = vec![t];
    assert_eq!(raw.call(7, &create).topics[0].error_code, 0);

    let mut init = InitProducerIdRequest::default();
    init.transactional_id = Some(txn_id("tx-a"));
    init.transaction_timeout_ms = 60_000;
    let response = raw.call(4, &init);
    assert_eq!(response.error_code, 0);
    let (pid, epoch) = (response.producer_id.0, response.producer_epoch);
    assert_eq!(epoch, 0);
    // A timeout above transaction.max.timeout.ms.
    let mut too_long = init.clone();
    too_long.transaction_timeout_ms = 900_001;
    assert_eq!(raw.call(4, &too_long).error_code, ResponseError::InvalidTransactionTimeout.code());

    // EndTxn with no transaction open, and for an id nobody initialized.
    assert_eq!(end_txn(&mut raw, "tx-a", pid, epoch, true), ResponseError::InvalidTxnState.code());
    assert_eq!(end_txn(&mut raw, "tx-none", pid, epoch, true), ResponseError::InvalidProducerIdMapping.code());
    // A transactional batch before its partition was added, or without the transactional id.
    assert_eq!(produce(&mut raw, Some("tx-a"), pid, epoch, 0), ResponseError::InvalidTxnState.code());
    assert_eq!(produce(&mut raw, None, pid, epoch, 0), ResponseError::InvalidTxnState.code());
    // Wrong producer id, wrong epoch (PRODUCER_FENCED from v2, INVALID_PRODUCER_EPOCH before),
    // an unknown topic.
    assert_eq!(
        add_partitions(&mut raw, 3, "tx-a", pid + 1, epoch, topic()),
        ResponseError::InvalidProducerIdMapping.code()
    );
    assert_eq!(add_partitions(&mut raw, 3, "tx-a", pid, epoch + 1, topic()), ResponseError::ProducerFenced.code());
    assert_eq!(
        add_partitions(&mut raw, 1, "tx-a", pid, epoch + 1, topic()),
        ResponseError::InvalidProducerEpoch.code()
    );
    let unknown = TopicName(StrBytes::from_static_str("no-such-topic"));
    assert_eq!(add_partitions(&mut raw, 3, "tx-a", pid, epoch, unknown), ResponseError::UnknownTopicOrPartition.code());

    // The happy path: add, produce, commit; a retried commit succeeds, an abort after it does not.
    assert_eq!(add_partitions(&mut raw, 3, "tx-a", pid, epoch, topic()), 0);
    assert_eq!(produce(&mut raw, Some("tx-a"), pid, epoch, 0), 0);
    assert_eq!(end_txn(&mut raw, "tx-a", pid, epoch, true), 0);
    assert_eq!(end_txn(&mut raw, "tx-a", pid, epoch, true), 0);
    assert_eq!(end_txn(&mut raw, "tx-a", pid, epoch, false), ResponseError::InvalidTxnState.code());

    // TxnOffsetCommit: without AddOffsetsToTxn the group is not in the transaction; once it is,
    // an unknown group with a generation is ILLEGAL_GENERATION, as in Kafka.
    assert_eq!(add_partitions(&mut raw, 3, "tx-a", pid, epoch, topic()), 0);
    let mut commit = TxnOffsetCommitRequest::default();
    commit.transactional_id = txn_id("tx-a");
    commit.group_id = GroupId(StrBytes::from_static_str("txn-wire-group"));
    commit.producer_id = ProducerId(pid);
    commit.producer_epoch = epoch;
    commit.generation_id = 5;
    commit.member_id = StrBytes::from_static_str("someone");
    let mut p = TxnOffsetCommitRequestPartition::default();
    p.committed_offset = 1;
    let mut t = TxnOffsetCommitRequestTopic::default();
    t.name = topic();
    t.partitions = vec![p];
    commit.topics = vec![t];
    let code = |r: TxnOffsetCommitResponse| r.topics[0].partitions[0].error_code;
    assert_eq!(code(raw.call(3, &commit)), ResponseError::InvalidTxnState.code());
    let mut add_offsets = AddOffsetsToTxnRequest::default();
    add_offsets.transactional_id = txn_id("tx-a");
    add_offsets.producer_id = ProducerId(pid);
    add_offsets.producer_epoch = epoch;
    add_offsets.group_id = GroupId(StrBytes::from_static_str("txn-wire-group"));
    assert_eq!(raw.call(3, &add_offsets).error_code, 0);
    assert_eq!(code(raw.call(3, &commit)), ResponseError::IllegalGeneration.code());
    commit.generation_id = -1;
    commit.member_id = StrBytes::default();
    assert_eq!(code(raw.call(3, &commit)), 0);

    // The admin view of it: the transaction is open on the topic and __consumer_offsets, and the
    // partition knows the producer.
    let mut describe = DescribeTransactionsRequest::default();
    describe.transactional_ids = vec![txn_id("tx-a"), txn_id("tx-none")];
    let described = raw.call(0, &describe);
    assert_eq!(described.transaction_states[0].transaction_state.as_str(), "Ongoing");
    assert_eq!(described.transaction_states[0].producer_id.0, pid);
    let topics: Vec<&str> = described.transaction_states[0].topics.iter().map(|t| t.topic.0.as_str()).collect();
    assert_eq!(topics, ["__consumer_offsets", TOPIC]);
    assert_eq!(described.transaction_states[1].error_code, ResponseError::TransactionalIdNotFound.code());
    let mut list = ListTransactionsRequest::default();
    list.state_filters = vec![StrBytes::from_static_str("Ongoing")];
    list.duration_filter = -1;
    let listed = raw.call(1, &list);
    assert_eq!(listed.transaction_states.len(), 1);
    assert_eq!(listed.transaction_states[0].transactional_id.as_str(), "tx-a");
    let mut producers = DescribeProducersRequest::default();
    let mut wanted = describe_producers_request::TopicRequest::default();
    wanted.name = topic();
    wanted.partition_indexes = vec![0];
    producers.topics = vec![wanted];
    let described = raw.call(0, &producers);
    let active = &described.topics[0].partitions[0].active_producers;
    assert_eq!(active.len(), 1);
    assert_eq!((active[0].producer_id.0, active[0].last_sequence), (pid, 0));

    // A second InitProducerId fences the first producer (its open transaction is aborted).
    let response = raw.call(4, &init);
    assert_eq!(response.error_code, 0);
    assert!(response.producer_epoch > epoch);
    assert_eq!(end_txn(&mut raw, "tx-a", pid, epoch, true), ResponseError::ProducerFenced.code());
    assert_eq!(produce(&mut raw, Some("tx-a"), pid, epoch, 1), ResponseError::InvalidTxnState.code());
}

fn last_stable_offset(raw: &mut Raw) -> (i64, i64) {
    use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
    let mut offsets = |isolation: i8| {
        let mut partition = ListOffsetsPartition::default();
        partition.timestamp = -1;
        let mut t = ListOffsetsTopic::default();
        t.name = topic();
        t.partitions = vec![partition];
        let mut request = ListOffsetsRequest::default();
        request.replica_id = BrokerId(-1);
        request.isolation_level = isolation;
        request.topics = vec![t];
        let response: ListOffsetsResponse = raw.call(5, &request);
        response.topics[0].partitions[0].offset
    };
    (offsets(1), offsets(0))
}

fn describe_state(raw: &mut Raw, id: &'static str) -> String {
    let mut describe = DescribeTransactionsRequest::default();
    describe.transactional_ids = vec![txn_id(id)];
    raw.call(0, &describe).transaction_states[0].transaction_state.to_string()
}

#[test]
fn an_open_transaction_survives_a_crash_and_times_out_after_it() {
    let mut keel = Keel::start(&["transaction.abort.timed.out.transaction.cleanup.interval.ms=200"]);
    let mut raw = keel.connect();
    let mut t = CreatableTopic::default();
    t.name = topic();
    t.num_partitions = 1;
    t.replication_factor = 1;
    let mut create = CreateTopicsRequest::default();
    create.topics = vec![t];
    assert_eq!(raw.call(7, &create).topics[0].error_code, 0);
    let mut init = InitProducerIdRequest::default();
    init.transactional_id = Some(txn_id("tx-crash"));
    init.transaction_timeout_ms = 3_000;
    let response = raw.call(4, &init);
    let (pid, epoch) = (response.producer_id.0, response.producer_epoch);
    // One committed transaction, then one left open.
    assert_eq!(add_partitions(&mut raw, 3, "tx-crash", pid, epoch, topic()), 0);
    assert_eq!(produce(&mut raw, Some("tx-crash"), pid, epoch, 0), 0);
    assert_eq!(end_txn(&mut raw, "tx-crash", pid, epoch, true), 0);
    assert_eq!(add_partitions(&mut raw, 3, "tx-crash", pid, epoch, topic()), 0);
    assert_eq!(produce(&mut raw, Some("tx-crash"), pid, epoch, 1), 0);
    // Offsets: 0 data, 1 commit marker, 2 open data. The LSO stops at the open transaction.
    assert_eq!(last_stable_offset(&mut raw), (2, 3));

    keel.kill9();
    keel.restart();
    let mut raw = keel.connect();
    assert_eq!(last_stable_offset(&mut raw), (2, 3), "the open transaction is still open after the crash");
    assert_eq!(describe_state(&mut raw, "tx-crash"), "Ongoing");
    // Its timeout passes: the coordinator aborts it (abort marker at 3) and the LSO moves on.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while describe_state(&mut raw, "tx-crash") != "CompleteAbort" {
        assert!(std::time::Instant::now() < deadline, "the timed-out transaction was not aborted");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(last_stable_offset(&mut raw), (4, 4));
    // The producer of the aborted transaction was fenced by the abort.
    assert_eq!(produce(&mut raw, Some("tx-crash"), pid, epoch, 2), ResponseError::InvalidTxnState.code());
}
