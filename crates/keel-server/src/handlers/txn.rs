//! Producer ids and transactions: InitProducerId, AddPartitionsToTxn, AddOffsetsToTxn, EndTxn
//! and TxnOffsetCommit, and the admin side: DescribeProducers, DescribeTransactions and
//! ListTransactions. The transaction coordinator (`crate::transactions`) decides; this
//! module shapes requests and responses per version.

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnResult, AddPartitionsToTxnTopicResult,
};
use kafka_protocol::messages::txn_offset_commit_response::{
    TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};
use kafka_protocol::messages::{
    AddOffsetsToTxnRequest, AddOffsetsToTxnResponse, AddPartitionsToTxnRequest, AddPartitionsToTxnResponse,
    DescribeProducersRequest, DescribeProducersResponse, DescribeTransactionsRequest, DescribeTransactionsResponse,
    EndTxnRequest, EndTxnResponse, InitProducerIdRequest, InitProducerIdResponse, ListTransactionsRequest,
    ListTransactionsResponse, ProducerId, TopicName, TransactionalId, TxnOffsetCommitRequest, TxnOffsetCommitResponse,
};
use keel_coordinator as gc;
use keel_coordinator::transaction::TxnError;

use super::str_bytes;
use crate::broker::Broker;
use crate::groups::{Command as GroupCommand, OFFSETS_TOPIC};
use crate::transactions::{Command, TxnResult};

/// Kafka's code for a coordinator decision; PRODUCER_FENCED reads INVALID_PRODUCER_EPOCH for
/// clients older than KIP-588 (`fenced_since` is the first version that knows it).
fn code(error: TxnError, version: i16, fenced_since: i16) -> i16 {
    match error {
        TxnError::InvalidProducerIdMapping => ResponseError::InvalidProducerIdMapping,
        TxnError::ProducerFenced if version < fenced_since => ResponseError::InvalidProducerEpoch,
        TxnError::ProducerFenced => ResponseError::ProducerFenced,
        TxnError::ConcurrentTransactions => ResponseError::ConcurrentTransactions,
        TxnError::InvalidTxnState => ResponseError::InvalidTxnState,
        TxnError::InvalidTransactionTimeout => ResponseError::InvalidTransactionTimeout,
    }
    .code()
}

/// Kafka refuses an empty transactional id (null means "not transactional").
fn check_id(transactional_id: &str) -> Result<(), i16> {
    if transactional_id.is_empty() {
        return Err(ResponseError::InvalidRequest.code());
    }
    Ok(())
}

/// Asks the coordinator of `transactional_id`; no coordinator answers COORDINATOR_NOT_AVAILABLE.
async fn ask<T>(
    broker: &Arc<Broker>,
    transactional_id: &str,
    command: impl FnOnce(tokio::sync::oneshot::Sender<TxnResult<T>>) -> Command,
) -> Result<T, Result<TxnError, i16>> {
    match broker.ask_transactions(transactional_id, command).await {
        Some(Ok(value)) => Ok(value),
        Some(Err(error)) => Err(Ok(error)),
        None => Err(Err(ResponseError::CoordinatorNotAvailable.code())),
    }
}

/// InitProducerId. Without a `transactional.id`: a fresh id at epoch 0 for an idempotent
/// producer (Kafka ignores the KIP-360 fields then: the new id fences nothing). With one: the
/// transaction coordinator bumps the epoch, fencing earlier producers of that id.
pub async fn init_producer_id(
    broker: &Arc<Broker>,
    request: InitProducerIdRequest,
    version: i16,
) -> InitProducerIdResponse {
    let mut response = InitProducerIdResponse::default();
    response.producer_id = ProducerId(-1);
    response.producer_epoch = -1;
    let Some(transactional_id) = request.transactional_id.map(|id| id.to_string()) else {
        match broker.producer_ids.next(broker).await {
            Ok(id) => {
                response.producer_id = ProducerId(id);
                response.producer_epoch = 0;
            }
            Err(error) => response.error_code = error.code(),
        }
        return response;
    };
    if let Err(code) = check_id(&transactional_id) {
        response.error_code = code;
        return response;
    }
    let expected =
        (version >= 3 && request.producer_id.0 >= 0).then_some((request.producer_id.0, request.producer_epoch));
    let timeout_ms = request.transaction_timeout_ms;
    let result = ask(broker, &transactional_id, |reply| Command::InitProducerId {
        transactional_id: transactional_id.clone(),
        timeout_ms,
        expected,
        reply,
    })
    .await;
    match result {
        Ok((id, epoch)) => {
            response.producer_id = ProducerId(id);
            response.producer_epoch = epoch;
        }
        Err(Ok(error)) => response.error_code = code(error, version, 4),
        Err(Err(code)) => response.error_code = code,
    }
    response
}

/// The partitions of one AddPartitionsToTxn transaction: unknown ones fail the whole request
/// (UNKNOWN_TOPIC_OR_PARTITION for them, OPERATION_NOT_ATTEMPTED for the rest), as in Kafka.
async fn add_partitions(
    broker: &Arc<Broker>,
    transactional_id: &str,
    producer_id: i64,
    producer_epoch: i16,
    topics: Vec<(String, Vec<i32>)>,
    verify_only: bool,
    version: i16,
) -> Vec<AddPartitionsToTxnTopicResult> {
    let image = broker.image();
    let known =
        |topic: &str, p: i32| image.topic(topic).is_some_and(|t| t.partitions.contains_key(&p)) && !topic.is_empty();
    let all_known = topics.iter().all(|(t, ps)| ps.iter().all(|p| known(t, *p)));
    let outcome: Result<Vec<(String, i32, i16)>, i16>;
    if let Err(code) = check_id(transactional_id) {
        outcome = Err(code);
    } else if !all_known {
        outcome = Ok(topics
            .iter()
            .flat_map(|(t, ps)| {
                ps.iter().map(move |p| {
                    let code = if known(t, *p) {
                        ResponseError::OperationNotAttempted
                    } else {
                        ResponseError::UnknownTopicOrPartition
                    };
                    (t.clone(), *p, code.code())
                })
            })
            .collect());
    } else if verify_only {
        let mut results = Vec::new();
        for (topic, partitions) in &topics {
            for &p in partitions {
                let partition = (topic.clone(), p);
                let ok = broker
                    .ask_transactions(transactional_id, |reply| Command::Verify {
                        transactional_id: transactional_id.to_string(),
                        producer_id,
                        producer_epoch,
                        partition,
                        reply,
                    })
                    .await
                    .unwrap_or(false);
                let code = if ok { 0 } else { ResponseError::InvalidTxnState.code() };
                results.push((topic.clone(), p, code));
            }
        }
        outcome = Ok(results);
    } else {
        let partitions: Vec<(String, i32)> =
            topics.iter().flat_map(|(t, ps)| ps.iter().map(move |p| (t.clone(), *p))).collect();
        let result = ask(broker, transactional_id, |reply| Command::AddPartitions {
            transactional_id: transactional_id.to_string(),
            producer_id,
            producer_epoch,
            partitions: partitions.clone(),
            reply,
        })
        .await;
        let code = match result {
            Ok(()) => 0,
            Err(Ok(error)) => code(error, version, 2),
            Err(Err(code)) => code,
        };
        outcome = Ok(partitions.into_iter().map(|(t, p)| (t, p, code)).collect());
    }
    let per_partition: Vec<(String, i32, i16)> = match outcome {
        Ok(results) => results,
        Err(code) => topics.iter().flat_map(|(t, ps)| ps.iter().map(move |p| (t.clone(), *p, code))).collect(),
    };
    let mut out: Vec<AddPartitionsToTxnTopicResult> = Vec::new();
    for (topic, partition, code) in per_partition {
        if out.last().is_none_or(|t| t.name.0.as_str() != topic) {
            let mut result = AddPartitionsToTxnTopicResult::default();
            result.name = TopicName(str_bytes(topic.clone()));
            out.push(result);
        }
        let mut result = AddPartitionsToTxnPartitionResult::default();
        result.partition_index = partition;
        result.partition_error_code = code;
        if let Some(last) = out.last_mut() {
            last.results_by_partition.push(result);
        }
    }
    out
}

/// AddPartitionsToTxn: v0–v3 from producers (one transaction); v4+ batched, and with
/// `verify_only` the KIP-890 check that partitions are part of an open transaction.
pub async fn add_partitions_to_txn(
    broker: &Arc<Broker>,
    request: AddPartitionsToTxnRequest,
    version: i16,
) -> AddPartitionsToTxnResponse {
    let mut response = AddPartitionsToTxnResponse::default();
    let topics = |topics: Vec<kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic>| {
        topics.into_iter().map(|t| (t.name.0.to_string(), t.partitions)).collect::<Vec<_>>()
    };
    if version <= 3 {
        let id = request.v3_and_below_transactional_id.to_string();
        response.results_by_topic_v3_and_below = add_partitions(
            broker,
            &id,
            request.v3_and_below_producer_id.0,
            request.v3_and_below_producer_epoch,
            topics(request.v3_and_below_topics),
            false,
            version,
        )
        .await;
        return response;
    }
    for transaction in request.transactions {
        let id = transaction.transactional_id.to_string();
        let mut result = AddPartitionsToTxnResult::default();
        result.transactional_id = transaction.transactional_id.clone();
        result.topic_results = add_partitions(
            broker,
            &id,
            transaction.producer_id.0,
            transaction.producer_epoch,
            topics(transaction.topics),
            transaction.verify_only,
            version,
        )
        .await;
        response.results_by_transaction.push(result);
    }
    response
}

/// AddOffsetsToTxn: the group's `__consumer_offsets` partition joins the transaction.
pub async fn add_offsets_to_txn(
    broker: &Arc<Broker>,
    request: AddOffsetsToTxnRequest,
    version: i16,
) -> AddOffsetsToTxnResponse {
    let mut response = AddOffsetsToTxnResponse::default();
    let id = request.transactional_id.to_string();
    if let Err(code) = check_id(&id) {
        response.error_code = code;
        return response;
    }
    let group_id = request.group_id.to_string();
    if group_id.is_empty() {
        response.error_code = ResponseError::InvalidGroupId.code();
        return response;
    }
    let partition = match broker.coordinator_partition(&group_id).await {
        Ok(partition) => partition,
        Err(error) => {
            response.error_code = error.code();
            return response;
        }
    };
    let (producer_id, producer_epoch) = (request.producer_id.0, request.producer_epoch);
    let result = ask(broker, &id, |reply| Command::AddPartitions {
        transactional_id: id.clone(),
        producer_id,
        producer_epoch,
        partitions: vec![(OFFSETS_TOPIC.to_string(), partition)],
        reply,
    })
    .await;
    response.error_code = match result {
        Ok(()) => 0,
        Err(Ok(error)) => code(error, version, 2),
        Err(Err(code)) => code,
    };
    response
}

/// EndTxn: commit or abort. Answered once the decision is durable; the markers follow.
pub async fn end_txn(broker: &Arc<Broker>, request: EndTxnRequest, version: i16) -> EndTxnResponse {
    let mut response = EndTxnResponse::default();
    response.producer_id = ProducerId(-1);
    response.producer_epoch = -1;
    let id = request.transactional_id.to_string();
    if let Err(code) = check_id(&id) {
        response.error_code = code;
        return response;
    }
    let (producer_id, producer_epoch, commit) = (request.producer_id.0, request.producer_epoch, request.committed);
    let result = ask(broker, &id, |reply| Command::EndTxn {
        transactional_id: id.clone(),
        producer_id,
        producer_epoch,
        commit,
        reply,
    })
    .await;
    match result {
        Ok(()) => {
            if version >= 5 {
                response.producer_id = ProducerId(producer_id);
                response.producer_epoch = producer_epoch;
            }
        }
        Err(Ok(error)) => response.error_code = code(error, version, 2),
        Err(Err(code)) => response.error_code = code,
    }
    response
}

/// TxnOffsetCommit: the group coordinator writes the offsets as part of the transaction; they
/// become the group's committed offsets with the commit marker.
pub async fn txn_offset_commit(
    broker: &Arc<Broker>,
    request: TxnOffsetCommitRequest,
    version: i16,
) -> TxnOffsetCommitResponse {
    let group_id = request.group_id.to_string();
    let commit = gc::OffsetCommit {
        version: 0,
        group_id: group_id.clone(),
        generation_id: if version >= 3 { request.generation_id } else { -1 },
        member_id: if version >= 3 { request.member_id.to_string() } else { String::new() },
        group_instance_id: request.group_instance_id.as_ref().map(|id| id.to_string()),
        retention_time_ms: -1,
        topics: request
            .topics
            .iter()
            .map(|t| gc::OffsetCommitTopic {
                name: t.name.0.to_string(),
                partitions: t
                    .partitions
                    .iter()
                    .map(|p| gc::OffsetCommitPartition {
                        partition_index: p.partition_index,
                        committed_offset: p.committed_offset,
                        committed_leader_epoch: if version >= 2 { p.committed_leader_epoch } else { -1 },
                        committed_metadata: p.committed_metadata.as_ref().map(|m| m.to_string()),
                    })
                    .collect(),
            })
            .collect(),
    };
    // Every partition of the request with one error.
    let everywhere = |code: i16| {
        let topics = commit.topics.iter().map(|t| gc::OffsetCommitResponseTopic {
            name: t.name.clone(),
            partitions: t
                .partitions
                .iter()
                .map(|p| gc::OffsetCommitResponsePartition {
                    partition_index: p.partition_index,
                    error_code: gc::ErrorCode(code),
                })
                .collect(),
        });
        txn_commit_topics(gc::OffsetCommitResponse { topics: topics.collect() })
    };
    let mut response = TxnOffsetCommitResponse::default();
    let transactional_id = request.transactional_id.to_string();
    if transactional_id.is_empty() {
        response.topics = everywhere(ResponseError::InvalidRequest.code());
        return response;
    }
    // Only the producer that owns the transaction, with the group's partition added, may commit.
    let sender = match broker.coordinator(&group_id).await {
        Ok(sender) => sender,
        Err(error) => {
            response.topics = everywhere(error.code());
            return response;
        }
    };
    let partition = broker.coordinator_partition(&group_id).await.unwrap_or(-1);
    let (producer_id, producer_epoch) = (request.producer_id.0, request.producer_epoch);
    let verified = broker
        .ask_transactions(&transactional_id, |reply| Command::Verify {
            transactional_id: transactional_id.clone(),
            producer_id,
            producer_epoch,
            partition: (OFFSETS_TOPIC.to_string(), partition),
            reply,
        })
        .await
        .unwrap_or(false);
    if !verified {
        response.topics = everywhere(ResponseError::InvalidTxnState.code());
        return response;
    }
    let (tx, rx) = tokio::sync::oneshot::channel();
    let command = GroupCommand::TxnOffsets { request: commit.clone(), producer_id, producer_epoch, reply: tx };
    let sent = sender.send(command).await;
    let Ok(result) = (match sent {
        Ok(()) => rx.await.map_err(|_| ()),
        Err(_) => Err(()),
    }) else {
        response.topics = everywhere(ResponseError::NotCoordinator.code());
        return response;
    };
    response.topics = txn_commit_topics(result);
    response
}

/// The group coordinator's answer, as TxnOffsetCommit topics.
fn txn_commit_topics(answer: gc::OffsetCommitResponse) -> Vec<TxnOffsetCommitResponseTopic> {
    answer
        .topics
        .into_iter()
        .map(|t| {
            let mut topic = TxnOffsetCommitResponseTopic::default();
            topic.name = TopicName(str_bytes(t.name));
            topic.partitions = t
                .partitions
                .into_iter()
                .map(|p| {
                    let mut partition = TxnOffsetCommitResponsePartition::default();
                    partition.partition_index = p.partition_index;
                    partition.error_code = p.error_code.code();
                    partition
                })
                .collect();
            topic
        })
        .collect()
}

/// DescribeProducers: the producer state of each partition (Kafka's `kafka-transactions.sh
/// describe-producers`).
pub fn describe_producers(broker: &Arc<Broker>, request: DescribeProducersRequest) -> DescribeProducersResponse {
    use kafka_protocol::messages::describe_producers_response::{PartitionResponse, ProducerState, TopicResponse};
    let mut response = DescribeProducersResponse::default();
    for topic in request.topics {
        let mut out = TopicResponse::default();
        out.name = TopicName(str_bytes(topic.name.0.as_str()));
        for index in topic.partition_indexes {
            let mut partition = PartitionResponse::default();
            partition.partition_index = index;
            match broker.partition(topic.name.0.as_str(), index) {
                None => partition.error_code = ResponseError::UnknownTopicOrPartition.code(),
                Some(p) => {
                    let states = p.log.producer_states();
                    let mut producers: Vec<_> = states.entries().collect();
                    producers.sort_by_key(|e| e.producer_id);
                    partition.active_producers = producers
                        .into_iter()
                        .map(|e| {
                            let mut state = ProducerState::default();
                            state.producer_id = ProducerId(e.producer_id);
                            state.producer_epoch = i32::from(e.epoch);
                            state.last_sequence = e.last_seq();
                            state.last_timestamp = e.last_timestamp;
                            state.coordinator_epoch = e.coordinator_epoch;
                            state.current_txn_start_offset = e.current_txn_first_offset.unwrap_or(-1);
                            state
                        })
                        .collect();
                }
            }
            out.partitions.push(partition);
        }
        response.topics.push(out);
    }
    response
}

fn topics_of(meta: &keel_coordinator::transaction::TxnMetadata) -> Vec<(String, Vec<i32>)> {
    let mut topics: Vec<(String, Vec<i32>)> = Vec::new();
    for (topic, partition) in &meta.partitions {
        match topics.last_mut() {
            Some((name, partitions)) if name == topic => partitions.push(*partition),
            _ => topics.push((topic.clone(), vec![*partition])),
        }
    }
    topics
}

/// DescribeTransactions: each transactional id's state, TRANSACTIONAL_ID_NOT_FOUND for ids
/// no producer initialized.
pub async fn describe_transactions(
    broker: &Arc<Broker>,
    request: DescribeTransactionsRequest,
) -> DescribeTransactionsResponse {
    use kafka_protocol::messages::describe_transactions_response::{TopicData, TransactionState};
    let mut response = DescribeTransactionsResponse::default();
    for id in request.transactional_ids {
        let name = id.to_string();
        let mut state = TransactionState::default();
        state.transactional_id = TransactionalId(str_bytes(name.clone()));
        state.producer_id = ProducerId(-1);
        state.producer_epoch = -1;
        let found = if name.is_empty() {
            None
        } else {
            broker.ask_transactions(&name, |reply| Command::Describe(vec![name.clone()], reply)).await
        };
        match found.and_then(|mut found| found.pop()).and_then(|(_, meta)| meta) {
            None => state.error_code = ResponseError::TransactionalIdNotFound.code(),
            Some(meta) => {
                state.transaction_state = str_bytes(meta.state.name());
                state.transaction_timeout_ms = meta.timeout_ms;
                state.transaction_start_time_ms = meta.start_ms;
                state.producer_id = ProducerId(meta.producer_id);
                state.producer_epoch = meta.producer_epoch;
                state.topics = topics_of(&meta)
                    .into_iter()
                    .map(|(topic, partitions)| {
                        let mut data = TopicData::default();
                        data.topic = TopicName(str_bytes(topic));
                        data.partitions = partitions;
                        data
                    })
                    .collect();
            }
        }
        response.transaction_states.push(state);
    }
    response
}

/// ListTransactions: every transactional id this broker coordinates, filtered by state,
/// producer id and (v1+) how long the open transaction has run.
pub async fn list_transactions(
    broker: &Arc<Broker>,
    request: ListTransactionsRequest,
    version: i16,
) -> ListTransactionsResponse {
    use keel_coordinator::transaction::TxnState;
    let mut response = ListTransactionsResponse::default();
    const STATES: [TxnState; 8] = [
        TxnState::Empty,
        TxnState::Ongoing,
        TxnState::PrepareCommit,
        TxnState::PrepareAbort,
        TxnState::CompleteCommit,
        TxnState::CompleteAbort,
        TxnState::Dead,
        TxnState::PrepareEpochFence,
    ];
    let wanted_states: Vec<&str> = request.state_filters.iter().map(|s| s.as_str()).collect();
    response.unknown_state_filters = request
        .state_filters
        .iter()
        .filter(|s| !STATES.iter().any(|state| state.name() == s.as_str()))
        .cloned()
        .collect();
    let producers: Vec<i64> = request.producer_id_filters.iter().map(|p| p.0).collect();
    let min_duration = if version >= 1 { request.duration_filter } else { -1 };
    if broker.image().topic(crate::transactions::TXN_TOPIC).is_some() {
        broker.start_transaction_coordinators();
    }
    let now = crate::broker::now_ms();
    for sender in broker.transactions.all() {
        let (tx, rx) = tokio::sync::oneshot::channel();
        if sender.send(Command::List(tx)).await.is_err() {
            continue;
        }
        let Ok(all) = rx.await else { continue };
        for meta in all {
            let state_ok = wanted_states.is_empty() || wanted_states.contains(&meta.state.name());
            let producer_ok = producers.is_empty() || producers.contains(&meta.producer_id);
            let duration_ok = min_duration < 0 || (meta.start_ms >= 0 && now - meta.start_ms >= min_duration);
            if state_ok && producer_ok && duration_ok {
                let mut state = kafka_protocol::messages::list_transactions_response::TransactionState::default();
                state.transactional_id = TransactionalId(str_bytes(meta.transactional_id.clone()));
                state.producer_id = ProducerId(meta.producer_id);
                state.transaction_state = str_bytes(meta.state.name());
                response.transaction_states.push(state);
            }
        }
    }
    response.transaction_states.sort_by(|a, b| a.transactional_id.as_str().cmp(b.transactional_id.as_str()));
    response
}
