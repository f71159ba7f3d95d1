//! Every API Keel advertises answers at every version it serves: a sample request of each
//! version gets a response that decodes at that version (the codec refuses to encode fields a
//! version lacks, so this pins the per-version shaping of every response).

mod common;

use bytes::{Bytes, BytesMut};
use common::Keel;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use keel_log::testing::test_batch;

const TOPIC: &str = "versions";

fn name() -> TopicName {
    TopicName(StrBytes::from_static_str(TOPIC))
}

fn sample(api_key: ApiKey, version: i16, topic_id: uuid::Uuid) -> RequestKind {
    match api_key {
        ApiKey::Produce => {
            let mut partition = produce_request::PartitionProduceData::default();
            partition.records = Some(Bytes::from(test_batch(2, 1_700_000_000_000, 8)));
            let mut topic = produce_request::TopicProduceData::default();
            if version >= 13 {
                topic.topic_id = topic_id;
            } else {
                topic.name = name();
            }
            topic.partition_data = vec![partition];
            let mut request = ProduceRequest::default();
            request.acks = -1;
            request.timeout_ms = 5_000;
            request.topic_data = vec![topic];
            RequestKind::Produce(request)
        }
        ApiKey::Fetch => {
            let mut partition = fetch_request::FetchPartition::default();
            partition.partition_max_bytes = 1 << 20;
            let mut topic = fetch_request::FetchTopic::default();
            if version >= 13 {
                topic.topic_id = topic_id;
            } else {
                topic.topic = name();
            }
            topic.partitions = vec![partition];
            let mut request = FetchRequest::default();
            request.max_bytes = 1 << 20;
            request.topics = vec![topic];
            RequestKind::Fetch(request)
        }
        ApiKey::ListOffsets => {
            let mut topic = list_offsets_request::ListOffsetsTopic::default();
            topic.name = name();
            topic.partitions = [-2i64, -1, 0]
                .into_iter()
                .map(|timestamp| {
                    let mut p = list_offsets_request::ListOffsetsPartition::default();
                    p.timestamp = timestamp;
                    p
                })
                .take(if version >= 1 { 1 } else { 3 })
                .collect();
            let mut request = ListOffsetsRequest::default();
            request.topics = vec![topic];
            RequestKind::ListOffsets(request)
        }
        ApiKey::Metadata => {
            let mut topic = metadata_request::MetadataRequestTopic::default();
            topic.name = Some(name());
            let mut request = MetadataRequest::default();
            request.topics = Some(vec![topic]);
            RequestKind::Metadata(request)
        }
        ApiKey::ApiVersions => RequestKind::ApiVersions(ApiVersionsRequest::default()),
        ApiKey::CreateTopics => {
            let mut topic = create_topics_request::CreatableTopic::default();
            topic.name = TopicName(StrBytes::from_string(format!("created-v{version}")));
            topic.num_partitions = 1;
            topic.replication_factor = 1;
            let mut request = CreateTopicsRequest::default();
            request.topics = vec![topic];
            RequestKind::CreateTopics(request)
        }
        ApiKey::DeleteTopics => {
            let missing = TopicName(StrBytes::from_static_str("no-such-topic"));
            let mut request = DeleteTopicsRequest::default();
            if version >= 6 {
                let mut state = delete_topics_request::DeleteTopicState::default();
                state.name = Some(missing);
                request.topics = vec![state];
            } else {
                request.topic_names = vec![missing];
            }
            RequestKind::DeleteTopics(request)
        }
        ApiKey::DeleteRecords => {
            let mut partition = delete_records_request::DeleteRecordsPartition::default();
            partition.offset = 0;
            let mut topic = delete_records_request::DeleteRecordsTopic::default();
            topic.name = name();
            topic.partitions = vec![partition];
            let mut request = DeleteRecordsRequest::default();
            request.topics = vec![topic];
            RequestKind::DeleteRecords(request)
        }
        ApiKey::DescribeConfigs => {
            let mut topic = describe_configs_request::DescribeConfigsResource::default();
            topic.resource_type = 2;
            topic.resource_name = StrBytes::from_static_str(TOPIC);
            let mut broker = describe_configs_request::DescribeConfigsResource::default();
            broker.resource_type = 4;
            broker.resource_name = StrBytes::from_static_str("1");
            let mut request = DescribeConfigsRequest::default();
            request.resources = vec![topic, broker];
            request.include_synonyms = version >= 1;
            request.include_documentation = version >= 3;
            RequestKind::DescribeConfigs(request)
        }
        ApiKey::AlterConfigs => {
            let mut config = alter_configs_request::AlterableConfig::default();
            config.name = StrBytes::from_static_str("retention.ms");
            config.value = Some(StrBytes::from_static_str("86400000"));
            let mut resource = alter_configs_request::AlterConfigsResource::default();
            resource.resource_type = 2;
            resource.resource_name = StrBytes::from_static_str(TOPIC);
            resource.configs = vec![config];
            let mut request = AlterConfigsRequest::default();
            request.resources = vec![resource];
            RequestKind::AlterConfigs(request)
        }
        ApiKey::DescribeLogDirs => RequestKind::DescribeLogDirs(DescribeLogDirsRequest::default()),
        ApiKey::CreatePartitions => {
            let mut topic = create_partitions_request::CreatePartitionsTopic::default();
            topic.name = name();
            topic.count = 1;
            let mut request = CreatePartitionsRequest::default();
            request.topics = vec![topic];
            request.validate_only = true;
            RequestKind::CreatePartitions(request)
        }
        ApiKey::IncrementalAlterConfigs => {
            let mut config = incremental_alter_configs_request::AlterableConfig::default();
            config.name = StrBytes::from_static_str("cleanup.policy");
            config.config_operation = 2;
            config.value = Some(StrBytes::from_static_str("delete"));
            let mut resource = incremental_alter_configs_request::AlterConfigsResource::default();
            resource.resource_type = 2;
            resource.resource_name = StrBytes::from_static_str(TOPIC);
            resource.configs = vec![config];
            let mut request = IncrementalAlterConfigsRequest::default();
            request.resources = vec![resource];
            RequestKind::IncrementalAlterConfigs(request)
        }
        ApiKey::DescribeCluster => RequestKind::DescribeCluster(DescribeClusterRequest::default()),
        ApiKey::DescribeQuorum => {
            let mut partition = describe_quorum_request::PartitionData::default();
            partition.partition_index = 0;
            let mut topic = describe_quorum_request::TopicData::default();
            topic.topic_name = TopicName(StrBytes::from_static_str("__cluster_metadata"));
            topic.partitions = vec![partition];
            let mut request = DescribeQuorumRequest::default();
            request.topics = vec![topic];
            RequestKind::DescribeQuorum(request)
        }
        ApiKey::FindCoordinator => {
            let mut request = FindCoordinatorRequest::default();
            if version >= 4 {
                request.coordinator_keys = vec![StrBytes::from_static_str("versions-group")];
            } else {
                request.key = StrBytes::from_static_str("versions-group");
            }
            RequestKind::FindCoordinator(request)
        }
        ApiKey::JoinGroup => {
            let mut protocol = join_group_request::JoinGroupRequestProtocol::default();
            protocol.name = StrBytes::from_static_str("range");
            protocol.metadata = Bytes::from_static(&[0, 1, 0, 0, 0, 0]);
            let mut request = JoinGroupRequest::default();
            request.group_id = GroupId(StrBytes::from_string(format!("join-v{version}")));
            request.session_timeout_ms = 10_000;
            request.rebalance_timeout_ms = 10_000;
            request.protocol_type = StrBytes::from_static_str("consumer");
            request.protocols = vec![protocol];
            RequestKind::JoinGroup(request)
        }
        ApiKey::SyncGroup => {
            let mut request = SyncGroupRequest::default();
            request.group_id = GroupId(StrBytes::from_static_str("no-such-group"));
            request.generation_id = 1;
            request.member_id = StrBytes::from_static_str("m");
            RequestKind::SyncGroup(request)
        }
        ApiKey::Heartbeat => {
            let mut request = HeartbeatRequest::default();
            request.group_id = GroupId(StrBytes::from_static_str("no-such-group"));
            request.generation_id = 1;
            request.member_id = StrBytes::from_static_str("m");
            RequestKind::Heartbeat(request)
        }
        ApiKey::LeaveGroup => {
            let mut request = LeaveGroupRequest::default();
            request.group_id = GroupId(StrBytes::from_static_str("no-such-group"));
            if version >= 3 {
                let mut member = leave_group_request::MemberIdentity::default();
                member.member_id = StrBytes::from_static_str("m");
                request.members = vec![member];
            } else {
                request.member_id = StrBytes::from_static_str("m");
            }
            RequestKind::LeaveGroup(request)
        }
        ApiKey::OffsetCommit => {
            let mut partition = offset_commit_request::OffsetCommitRequestPartition::default();
            partition.committed_offset = 1;
            let mut topic = offset_commit_request::OffsetCommitRequestTopic::default();
            if version >= 10 {
                topic.topic_id = topic_id;
            } else {
                topic.name = name();
            }
            topic.partitions = vec![partition];
            let mut request = OffsetCommitRequest::default();
            request.group_id = GroupId(StrBytes::from_static_str("versions-commit"));
            request.generation_id_or_member_epoch = -1;
            request.topics = vec![topic];
            RequestKind::OffsetCommit(request)
        }
        ApiKey::OffsetFetch => {
            let mut request = OffsetFetchRequest::default();
            if version >= 8 {
                let mut group = offset_fetch_request::OffsetFetchRequestGroup::default();
                group.group_id = GroupId(StrBytes::from_static_str("versions-commit"));
                group.topics = None;
                request.groups = vec![group];
            } else {
                let mut topic = offset_fetch_request::OffsetFetchRequestTopic::default();
                topic.name = name();
                topic.partition_indexes = vec![0];
                request.group_id = GroupId(StrBytes::from_static_str("versions-commit"));
                request.topics = Some(vec![topic]);
            }
            RequestKind::OffsetFetch(request)
        }
        ApiKey::DescribeGroups => {
            let mut request = DescribeGroupsRequest::default();
            request.groups = vec![GroupId(StrBytes::from_static_str("versions-commit"))];
            request.include_authorized_operations = version >= 3;
            RequestKind::DescribeGroups(request)
        }
        ApiKey::ListGroups => RequestKind::ListGroups(ListGroupsRequest::default()),
        ApiKey::OffsetDelete => {
            let mut partition = offset_delete_request::OffsetDeleteRequestPartition::default();
            partition.partition_index = 0;
            let mut topic = offset_delete_request::OffsetDeleteRequestTopic::default();
            topic.name = name();
            topic.partitions = vec![partition];
            let mut request = OffsetDeleteRequest::default();
            request.group_id = GroupId(StrBytes::from_static_str("versions-commit"));
            request.topics = vec![topic];
            RequestKind::OffsetDelete(request)
        }
        ApiKey::ConsumerGroupHeartbeat => {
            let mut request = ConsumerGroupHeartbeatRequest::default();
            request.group_id = GroupId(StrBytes::from_string(format!("kip848-v{version}")));
            request.member_id = StrBytes::from_string(uuid::Uuid::new_v4().to_string());
            request.member_epoch = 0;
            request.rebalance_timeout_ms = 30_000;
            request.subscribed_topic_names = Some(vec![name()]);
            request.topic_partitions = Some(Vec::new());
            RequestKind::ConsumerGroupHeartbeat(request)
        }
        ApiKey::ConsumerGroupDescribe => {
            let mut request = ConsumerGroupDescribeRequest::default();
            request.group_ids = vec![GroupId(StrBytes::from_static_str("kip848-v1"))];
            RequestKind::ConsumerGroupDescribe(request)
        }
        ApiKey::DeleteGroups => {
            let mut request = DeleteGroupsRequest::default();
            request.groups_names = vec![GroupId(StrBytes::from_static_str("no-such-group"))];
            RequestKind::DeleteGroups(request)
        }
        ApiKey::AddPartitionsToTxn => {
            let mut topic = add_partitions_to_txn_request::AddPartitionsToTxnTopic::default();
            topic.name = name();
            topic.partitions = vec![0];
            let mut request = AddPartitionsToTxnRequest::default();
            if version <= 3 {
                request.v3_and_below_transactional_id = TransactionalId(StrBytes::from_static_str("no-such-txn"));
                request.v3_and_below_topics = vec![topic];
            } else {
                let mut txn = add_partitions_to_txn_request::AddPartitionsToTxnTransaction::default();
                txn.transactional_id = TransactionalId(StrBytes::from_static_str("no-such-txn"));
                txn.verify_only = true;
                txn.topics = vec![topic];
                request.transactions = vec![txn];
            }
            RequestKind::AddPartitionsToTxn(request)
        }
        ApiKey::AddOffsetsToTxn => {
            let mut request = AddOffsetsToTxnRequest::default();
            request.transactional_id = TransactionalId(StrBytes::from_static_str("no-such-txn"));
            request.group_id = GroupId(StrBytes::from_static_str("txn-group"));
            RequestKind::AddOffsetsToTxn(request)
        }
        ApiKey::EndTxn => {
            let mut request = EndTxnRequest::default();
            request.transactional_id = TransactionalId(StrBytes::from_static_str("no-such-txn"));
            RequestKind::EndTxn(request)
        }
        ApiKey::TxnOffsetCommit => {
            let mut partition = txn_offset_commit_request::TxnOffsetCommitRequestPartition::default();
            partition.committed_offset = 1;
            let mut topic = txn_offset_commit_request::TxnOffsetCommitRequestTopic::default();
            topic.name = name();
            topic.partitions = vec![partition];
            let mut request = TxnOffsetCommitRequest::default();
            request.transactional_id = TransactionalId(StrBytes::from_static_str("no-such-txn"));
            request.group_id = GroupId(StrBytes::from_static_str("txn-group"));
            request.topics = vec![topic];
            RequestKind::TxnOffsetCommit(request)
        }
        ApiKey::DescribeProducers => {
            let mut topic = describe_producers_request::TopicRequest::default();
            topic.name = name();
            topic.partition_indexes = vec![0, 7];
            let mut request = DescribeProducersRequest::default();
            request.topics = vec![topic];
            RequestKind::DescribeProducers(request)
        }
        ApiKey::DescribeTransactions => {
            let mut request = DescribeTransactionsRequest::default();
            request.transactional_ids = vec![TransactionalId(StrBytes::from_static_str("no-such-txn"))];
            RequestKind::DescribeTransactions(request)
        }
        ApiKey::ListTransactions => {
            let mut request = ListTransactionsRequest::default();
            request.state_filters = vec![StrBytes::from_static_str("Ongoing"), StrBytes::from_static_str("Bogus")];
            request.duration_filter = -1;
            RequestKind::ListTransactions(request)
        }
        ApiKey::InitProducerId => {
            let mut request = InitProducerIdRequest::default();
            request.transactional_id = None;
            request.transaction_timeout_ms = 60_000;
            RequestKind::InitProducerId(request)
        }
        other => panic!("no sample request for {other:?}"),
    }
}

#[test]
fn every_advertised_version_answers() {
    // New groups form at once, so that the JoinGroup samples answer without waiting.
    let keel = Keel::start(&["group.initial.rebalance.delay.ms=0"]);
    let mut raw = keel.connect();

    // The topic the samples use, and its id.
    let mut create = create_topics_request::CreatableTopic::default();
    create.name = name();
    create.num_partitions = 1;
    create.replication_factor = 1;
    let mut request = CreateTopicsRequest::default();
    request.topics = vec![create];
    let created = raw.call(7, &request);
    let topic_id = created.topics[0].topic_id;
    assert!(!topic_id.is_nil());

    let advertised = raw.call(3, &ApiVersionsRequest::default());
    let mut checked = 0;
    for api in &advertised.api_keys {
        let api_key = ApiKey::try_from(api.api_key).expect("known api key");
        // Produce v0-v2 are listed (for old librdkafka) but refused, as Kafka 4 does.
        let first = if api_key == ApiKey::Produce { 3 } else { api.min_version };
        for version in first..=api.max_version {
            let request = sample(api_key, version, topic_id);
            let mut header = RequestHeader::default()
                .with_request_api_key(api.api_key)
                .with_request_api_version(version)
                .with_correlation_id(i32::from(version) * 1000 + i32::from(api.api_key));
            header.client_id = Some(StrBytes::from_static_str("versions-test"));
            let mut body = BytesMut::new();
            header.encode(&mut body, api_key.request_header_version(version)).expect("header");
            request.encode(&mut body, version).expect("request encodes");
            let mut frame = (body.len() as i32).to_be_bytes().to_vec();
            frame.extend_from_slice(&body);
            raw.send_bytes(&frame);
            let mut response = raw.read_frame().unwrap_or_else(|| panic!("{api_key:?} v{version}: connection closed"));
            let response_header = ResponseHeader::decode(&mut response, api_key.response_header_version(version))
                .unwrap_or_else(|e| panic!("{api_key:?} v{version}: header: {e}"));
            assert_eq!(response_header.correlation_id, header.correlation_id, "{api_key:?} v{version}");
            ResponseKind::decode(api_key, &mut response, version)
                .unwrap_or_else(|e| panic!("{api_key:?} v{version}: response does not decode: {e}"));
            assert!(response.is_empty(), "{api_key:?} v{version}: {} trailing bytes", response.len());
            checked += 1;
        }
    }
    assert!(checked > 80, "only {checked} api versions checked");
}
