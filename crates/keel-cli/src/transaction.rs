//! `keel transaction list|describe|producers`, from ListTransactions, DescribeTransactions and
//! DescribeProducers (KIP-664): which transactions are open, what they span, and which producer
//! holds a partition's last stable offset back.

use std::collections::BTreeMap;

use kafka_protocol::messages::describe_producers_request::TopicRequest;
use kafka_protocol::messages::{
    DescribeProducersRequest, DescribeTransactionsRequest, ListTransactionsRequest, TransactionalId,
};
use serde_json::json;

use crate::client::{name, str_bytes, Client};
use crate::error::{check, exit, CliError};
use crate::offsets;
use crate::output::{emit, table};
use crate::{connect, Format, TransactionArgs, TransactionCommand};

pub async fn run(args: TransactionArgs) -> Result<u8, CliError> {
    let format = args.common.format;
    let mut client = connect(&args.common).await?;
    match args.command {
        TransactionCommand::List { states } => list(&mut client, format, &states).await,
        TransactionCommand::Describe { transactional_ids } => describe(&mut client, format, &transactional_ids).await,
        TransactionCommand::Producers { topic, partition } => producers(&mut client, format, &topic, partition).await,
    }
}

/// Every coordinator lists its own transactional ids: ask each node.
async fn list(client: &mut Client, format: Format, states: &[String]) -> Result<u8, CliError> {
    let (_, metadata) = client.metadata(Some(&[]), false).await?;
    let mut nodes: Vec<i32> = metadata.brokers.iter().map(|b| b.node_id.0).collect();
    nodes.sort_unstable();
    let mut found: BTreeMap<String, (i64, String, i32)> = BTreeMap::new();
    for node in nodes {
        let (_, response) = client
            .node(node)
            .await?
            .request(0..=1, |version| {
                let mut request = ListTransactionsRequest::default();
                request.state_filters = states.iter().map(|s| str_bytes(s)).collect();
                if version >= 1 {
                    request.duration_filter = -1;
                }
                request
            })
            .await?;
        check(|| format!("cannot list the transactions of node {node}"), response.error_code, None)?;
        if let Some(unknown) = response.unknown_state_filters.first() {
            return Err(CliError::Usage(format!(
                "unknown transaction state {:?}; states are Empty, Ongoing, PrepareCommit, PrepareAbort, CompleteCommit, CompleteAbort, Dead, PrepareEpochFence",
                unknown.as_str()
            )));
        }
        for state in response.transaction_states {
            found.insert(
                state.transactional_id.0.to_string(),
                (state.producer_id.0, state.transaction_state.to_string(), node),
            );
        }
    }
    let rows: Vec<Vec<String>> = found
        .iter()
        .map(|(id, (producer, state, node))| vec![id.clone(), producer.to_string(), state.clone(), node.to_string()])
        .collect();
    let text = table(&["TRANSACTIONAL-ID", "PRODUCER-ID", "STATE", "COORDINATOR"], &rows);
    let json: Vec<_> = found
        .iter()
        .map(|(id, (producer, state, node))| {
            json!({ "transactional_id": id, "producer_id": producer, "state": state, "coordinator": node })
        })
        .collect();
    emit(format, &text, &json!(json))?;
    Ok(exit::OK)
}

async fn describe(client: &mut Client, format: Format, ids: &[String]) -> Result<u8, CliError> {
    let mut texts = Vec::new();
    let mut jsons = Vec::new();
    for id in ids {
        let (coordinator, _) = client.transaction_coordinator(id).await?;
        let (_, response) = client
            .node(coordinator)
            .await?
            .request(0..=0, |_| {
                let mut request = DescribeTransactionsRequest::default();
                request.transactional_ids = vec![TransactionalId(str_bytes(id))];
                request
            })
            .await?;
        let state = response
            .transaction_states
            .into_iter()
            .next()
            .ok_or_else(|| CliError::Protocol("DescribeTransactions answered nothing".to_string()))?;
        check(|| format!("cannot describe transactional id {id:?}"), state.error_code, None)?;
        let mut partitions: Vec<(String, i32)> =
            state.topics.iter().flat_map(|t| t.partitions.iter().map(move |p| (t.topic.0.to_string(), *p))).collect();
        partitions.sort();
        let started = if state.transaction_start_time_ms < 0 {
            "-".to_string()
        } else {
            state.transaction_start_time_ms.to_string()
        };
        let listed: Vec<String> = partitions.iter().map(|(t, p)| format!("{t}-{p}")).collect();
        texts.push(format!(
            "Transactional id:  {id}\nCoordinator:       {coordinator}\nState:             {}\nProducer:          id {} epoch {}\nTimeout:           {} ms\nStarted:           {started}\nPartitions:        {}\n",
            state.transaction_state.as_str(),
            state.producer_id.0,
            state.producer_epoch,
            state.transaction_timeout_ms,
            if listed.is_empty() { "-".to_string() } else { listed.join(" ") },
        ));
        jsons.push(json!({
            "transactional_id": id,
            "coordinator": coordinator,
            "state": state.transaction_state.as_str(),
            "producer_id": state.producer_id.0,
            "producer_epoch": state.producer_epoch,
            "timeout_ms": state.transaction_timeout_ms,
            "start_time_ms": (state.transaction_start_time_ms >= 0).then_some(state.transaction_start_time_ms),
            "partitions": partitions.iter().map(|(t, p)| json!({ "topic": t, "partition": p })).collect::<Vec<_>>(),
        }));
    }
    let json = if jsons.len() == 1 { jsons.remove(0) } else { json!(jsons) };
    emit(format, &texts.join("\n"), &json)?;
    Ok(exit::OK)
}

/// DescribeProducers goes to each partition's leader.
async fn producers(client: &mut Client, format: Format, topic: &str, partition: Option<i32>) -> Result<u8, CliError> {
    let info = offsets::topic(client, topic, false, "cannot describe the producers of topic").await?;
    let wanted: Vec<i32> = match partition {
        Some(p) if info.partitions.iter().any(|i| i.partition == p) => vec![p],
        Some(p) => {
            return Err(CliError::Usage(format!(
                "topic {topic:?} has no partition {p} (it has {})",
                info.partitions.len()
            )))
        }
        None => info.partitions.iter().map(|p| p.partition).collect(),
    };
    let mut by_leader: BTreeMap<i32, Vec<i32>> = BTreeMap::new();
    for p in &info.partitions {
        if wanted.contains(&p.partition) {
            by_leader.entry(p.leader).or_default().push(p.partition);
        }
    }
    let mut rows: Vec<(i32, i64, i32, i32, i64, i64)> = Vec::new();
    for (leader, partitions) in by_leader {
        if leader < 0 {
            return Err(CliError::Protocol(format!("partitions {partitions:?} of topic {topic:?} have no leader")));
        }
        let (_, response) = client
            .node(leader)
            .await?
            .request(0..=0, |_| {
                let mut entry = TopicRequest::default();
                entry.name = name(topic);
                entry.partition_indexes = partitions.clone();
                let mut request = DescribeProducersRequest::default();
                request.topics = vec![entry];
                request
            })
            .await?;
        for p in response.topics.iter().flat_map(|t| t.partitions.iter()) {
            check(
                || format!("cannot describe the producers of {topic}-{}", p.partition_index),
                p.error_code,
                p.error_message.as_ref(),
            )?;
            for producer in &p.active_producers {
                rows.push((
                    p.partition_index,
                    producer.producer_id.0,
                    producer.producer_epoch,
                    producer.last_sequence,
                    producer.last_timestamp,
                    producer.current_txn_start_offset,
                ));
            }
        }
    }
    rows.sort();
    let dash = |v: i64| if v < 0 { "-".to_string() } else { v.to_string() };
    let text_rows: Vec<Vec<String>> = rows
        .iter()
        .map(|&(p, id, epoch, sequence, timestamp, txn_start)| {
            vec![
                p.to_string(),
                id.to_string(),
                epoch.to_string(),
                sequence.to_string(),
                dash(timestamp),
                dash(txn_start),
            ]
        })
        .collect();
    let text = table(
        &["PARTITION", "PRODUCER-ID", "EPOCH", "LAST-SEQUENCE", "LAST-TIMESTAMP", "OPEN-TXN-START-OFFSET"],
        &text_rows,
    );
    let json: Vec<_> = rows
        .iter()
        .map(|&(p, id, epoch, sequence, timestamp, txn_start)| {
            json!({
                "partition": p,
                "producer_id": id,
                "producer_epoch": epoch,
                "last_sequence": sequence,
                "last_timestamp": timestamp,
                "open_transaction_start_offset": (txn_start >= 0).then_some(txn_start),
            })
        })
        .collect();
    emit(format, &text, &json!(json))?;
    Ok(exit::OK)
}
