//! Request handlers, one module per API family. Each takes the decoded request and returns
//! the response body; errors become Kafka error codes here, per partition or per resource.

pub mod admin;
pub mod api_versions;
pub mod configs;
pub mod fetch;
pub mod groups;
pub mod list_offsets;
pub mod metadata;
pub mod produce;
pub mod txn;

use std::sync::Arc;

use kafka_protocol::messages::{RequestKind, ResponseKind};
use kafka_protocol::protocol::StrBytes;
use keel_protocol::Request;

use crate::broker::Broker;
use crate::network::{Reply, Response};

pub async fn handle(broker: &Arc<Broker>, request: Request, client_host: &str) -> Reply {
    let version = request.version();
    let client_id = request.header.client_id.as_ref().map_or("", |id| id.as_str()).to_string();
    let ready = |response: ResponseKind| Reply::Ready(Some(Response::Kind(response)));
    match request.body {
        RequestKind::ApiVersions(_) => ready(ResponseKind::ApiVersions(api_versions::supported())),
        RequestKind::Metadata(r) => ready(ResponseKind::Metadata(metadata::handle(broker, r, version).await)),
        RequestKind::Produce(r) => produce::handle(broker, r, version).await,
        RequestKind::Fetch(r) => fetch::handle(broker, r, version).await,
        RequestKind::ListOffsets(r) => ready(ResponseKind::ListOffsets(list_offsets::handle(broker, r, version))),
        RequestKind::CreateTopics(r) => {
            ready(ResponseKind::CreateTopics(admin::create_topics(broker, r, version).await))
        }
        RequestKind::DeleteTopics(r) => {
            ready(ResponseKind::DeleteTopics(admin::delete_topics(broker, r, version).await))
        }
        RequestKind::CreatePartitions(r) => {
            ready(ResponseKind::CreatePartitions(admin::create_partitions(broker, r).await))
        }
        RequestKind::DeleteRecords(r) => ready(ResponseKind::DeleteRecords(admin::delete_records(broker, r))),
        RequestKind::DescribeCluster(r) => ready(ResponseKind::DescribeCluster(admin::describe_cluster(broker, r))),
        RequestKind::DescribeQuorum(r) => ready(ResponseKind::DescribeQuorum(admin::describe_quorum(broker, r).await)),
        RequestKind::DescribeLogDirs(r) => ready(ResponseKind::DescribeLogDirs(admin::describe_log_dirs(broker, r))),
        RequestKind::DescribeConfigs(r) => ready(ResponseKind::DescribeConfigs(configs::describe(broker, r, version))),
        RequestKind::AlterConfigs(r) => ready(ResponseKind::AlterConfigs(configs::alter(broker, r).await)),
        RequestKind::IncrementalAlterConfigs(r) => {
            ready(ResponseKind::IncrementalAlterConfigs(configs::incremental_alter(broker, r).await))
        }
        RequestKind::FindCoordinator(r) => {
            ready(ResponseKind::FindCoordinator(groups::find_coordinator(broker, r, version).await))
        }
        RequestKind::JoinGroup(r) => groups::join_group_reply(broker, r, version, &client_id, client_host).await,
        RequestKind::SyncGroup(r) => groups::sync_group_reply(broker, r, version).await,
        RequestKind::Heartbeat(r) => ready(ResponseKind::Heartbeat(groups::heartbeat(broker, r).await)),
        RequestKind::LeaveGroup(r) => ready(ResponseKind::LeaveGroup(groups::leave_group(broker, r, version).await)),
        RequestKind::OffsetCommit(r) => {
            ready(ResponseKind::OffsetCommit(groups::offset_commit(broker, r, version).await))
        }
        RequestKind::OffsetFetch(r) => ready(ResponseKind::OffsetFetch(groups::offset_fetch(broker, r, version).await)),
        RequestKind::ListGroups(r) => ready(ResponseKind::ListGroups(groups::list_groups(broker, r, version).await)),
        RequestKind::DescribeGroups(r) => {
            ready(ResponseKind::DescribeGroups(groups::describe_groups(broker, r, version).await))
        }
        RequestKind::DeleteGroups(r) => ready(ResponseKind::DeleteGroups(groups::delete_groups(broker, r).await)),
        RequestKind::OffsetDelete(r) => ready(ResponseKind::OffsetDelete(groups::offset_delete(broker, r).await)),
        RequestKind::ConsumerGroupHeartbeat(r) => ready(ResponseKind::ConsumerGroupHeartbeat(
            groups::consumer_group_heartbeat(broker, r, version, &client_id, client_host).await,
        )),
        RequestKind::ConsumerGroupDescribe(r) => {
            ready(ResponseKind::ConsumerGroupDescribe(groups::consumer_group_describe(broker, r, version).await))
        }
        RequestKind::InitProducerId(r) => {
            ready(ResponseKind::InitProducerId(txn::init_producer_id(broker, r, version).await))
        }
        RequestKind::AddPartitionsToTxn(r) => {
            ready(ResponseKind::AddPartitionsToTxn(txn::add_partitions_to_txn(broker, r, version).await))
        }
        RequestKind::AddOffsetsToTxn(r) => {
            ready(ResponseKind::AddOffsetsToTxn(txn::add_offsets_to_txn(broker, r, version).await))
        }
        RequestKind::EndTxn(r) => ready(ResponseKind::EndTxn(txn::end_txn(broker, r, version).await)),
        RequestKind::DescribeProducers(r) => ready(ResponseKind::DescribeProducers(txn::describe_producers(broker, r))),
        RequestKind::DescribeTransactions(r) => {
            ready(ResponseKind::DescribeTransactions(txn::describe_transactions(broker, r).await))
        }
        RequestKind::ListTransactions(r) => {
            ready(ResponseKind::ListTransactions(txn::list_transactions(broker, r, version).await))
        }
        RequestKind::TxnOffsetCommit(r) => {
            ready(ResponseKind::TxnOffsetCommit(txn::txn_offset_commit(broker, r, version).await))
        }
        // The codec only decodes APIs from the advertised table, all of which are above.
        other => {
            tracing::warn!(request = ?std::mem::discriminant(&other), "no handler; closing connection");
            Reply::Close
        }
    }
}

pub(crate) fn str_bytes(s: impl Into<String>) -> StrBytes {
    StrBytes::from_string(s.into())
}
