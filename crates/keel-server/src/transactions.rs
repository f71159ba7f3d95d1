//! The transaction coordinators this broker runs: one actor per `__transaction_state`
//! partition, each owning the metadata of the transactional ids that hash to it
//! (`abs(java_hash(transactional_id)) % partitions`, as for groups).
//!
//! The actor runs one request at a time, so a transaction's steps never interleave: a state
//! change is written to its partition and fsynced before the client hears of it; after EndTxn
//! the actor answers once PrepareCommit/PrepareAbort is durable, then writes the commit or abort
//! marker to every partition of the transaction (the group coordinator learns of markers in
//! `__consumer_offsets`), then records CompleteCommit/CompleteAbort. Requests that arrive
//! meanwhile wait their turn, so a client never sees CONCURRENT_TRANSACTIONS from a
//! transaction of its own. Loading replays the partition and finishes prepared transactions;
//! open ones abort when they time out.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use keel_coordinator::records::{decode_transaction_key, TransactionLogValue};
use keel_coordinator::transaction::{EndDecision, InitDecision, TxnError, TxnMetadata, TxnState};
use keel_log::producer::Marker;
use tokio::sync::{mpsc, oneshot};

use crate::actors::{replay_partition, Replayed};
use crate::broker::{now_ms, Broker};
use crate::error::ApiError;
use crate::groups::{partition_for, OFFSETS_TOPIC};
use crate::partition::Partition;

/// The internal topic holding transaction metadata.
pub const TXN_TOPIC: &str = "__transaction_state";
/// Attempts at writing one marker before the coordinator gives up on that partition.
const MARKER_ATTEMPTS: u32 = 5;

pub type TxnResult<T> = Result<T, TxnError>;

pub enum Command {
    InitProducerId {
        transactional_id: String,
        timeout_ms: i32,
        expected: Option<(i64, i16)>,
        reply: oneshot::Sender<TxnResult<(i64, i16)>>,
    },
    AddPartitions {
        transactional_id: String,
        producer_id: i64,
        producer_epoch: i16,
        partitions: Vec<(String, i32)>,
        reply: oneshot::Sender<TxnResult<()>>,
    },
    EndTxn {
        transactional_id: String,
        producer_id: i64,
        producer_epoch: i16,
        commit: bool,
        reply: oneshot::Sender<TxnResult<()>>,
    },
    /// KIP-890: is this partition part of the producer's open transaction?
    Verify {
        transactional_id: String,
        producer_id: i64,
        producer_epoch: i16,
        partition: (String, i32),
        reply: oneshot::Sender<bool>,
    },
    Describe(Vec<String>, oneshot::Sender<Vec<(String, Option<TxnMetadata>)>>),
    List(oneshot::Sender<Vec<TxnMetadata>>),
}

impl Command {
    fn transactional_id(&self) -> Option<&str> {
        match self {
            Command::InitProducerId { transactional_id, .. }
            | Command::AddPartitions { transactional_id, .. }
            | Command::EndTxn { transactional_id, .. }
            | Command::Verify { transactional_id, .. } => Some(transactional_id),
            Command::Describe(..) | Command::List(_) => None,
        }
    }
}

/// The transaction coordinators, one actor per `__transaction_state` partition.
pub type Transactions = crate::actors::PartitionActors<Command>;

impl Broker {
    /// Creates `__transaction_state` if it does not exist yet; returns its partition count.
    pub async fn ensure_transaction_topic(self: &Arc<Self>) -> Result<i32, ApiError> {
        self.ensure_internal_topic(
            TXN_TOPIC,
            "transaction.state.log.num.partitions",
            "transaction.state.log.replication.factor",
            "transaction.state.log.segment.bytes",
            &[("cleanup.policy", "compact"), ("compression.type", "uncompressed")],
        )
        .await
    }

    /// The actor of the coordinator for `transactional_id`, started (and loaded) on first use.
    pub async fn transaction_coordinator(self: &Arc<Self>, transactional_id: &str) -> Option<mpsc::Sender<Command>> {
        let partitions = self.ensure_transaction_topic().await.ok()?;
        self.transaction_coordinator_at(partition_for(transactional_id, partitions))
    }

    fn transaction_coordinator_at(self: &Arc<Self>, index: i32) -> Option<mpsc::Sender<Command>> {
        let partition = self.partition(TXN_TOPIC, index)?;
        let broker = self.clone();
        self.transactions.get_or_start(index, partition, move |partition, rx| run(broker, partition, rx))
    }

    /// Starts the coordinators of every `__transaction_state` partition hosted here, so that
    /// prepared transactions complete and open ones time out after a restart.
    pub fn start_transaction_coordinators(self: &Arc<Self>) {
        let count = self.image().topic(TXN_TOPIC).map_or(0, |t| t.partitions.len() as i32);
        for index in 0..count {
            let _ = self.transaction_coordinator_at(index);
        }
    }

    /// Sends a command built around a reply channel to `transactional_id`'s coordinator and
    /// waits for the answer; `None` when no coordinator can take it.
    pub async fn ask_transactions<T>(
        self: &Arc<Self>,
        transactional_id: &str,
        command: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Option<T> {
        let sender = self.transaction_coordinator(transactional_id).await?;
        let (tx, rx) = oneshot::channel();
        sender.send(command(tx)).await.ok()?;
        rx.await.ok()
    }
}

struct Actor {
    broker: Arc<Broker>,
    partition: Arc<Partition>,
    txns: HashMap<String, TxnMetadata>,
}

async fn run(broker: Arc<Broker>, partition: Arc<Partition>, mut rx: mpsc::Receiver<Command>) {
    let txns = match load(&partition) {
        Ok(txns) => txns,
        Err(error) => {
            tracing::error!(partition = partition.index, %error, "cannot load transaction coordinator");
            return;
        }
    };
    let mut actor = Actor { broker, partition, txns };
    // Prepared transactions were answered before the restart: finish them.
    let prepared: Vec<TxnMetadata> = actor.txns.values().filter(|m| m.is_prepared()).cloned().collect();
    for meta in prepared {
        actor.finish(meta).await;
    }
    let every = actor
        .broker
        .statics
        .get("transaction.abort.timed.out.transaction.cleanup.interval.ms")
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(10_000)
        .max(1);
    let mut timeouts = tokio::time::interval(Duration::from_millis(every));
    loop {
        tokio::select! {
            command = rx.recv() => match command {
                Some(command) => actor.handle(command).await,
                None => return,
            },
            _ = timeouts.tick() => actor.abort_timed_out().await,
        }
    }
}

impl Actor {
    async fn handle(&mut self, command: Command) {
        if command.transactional_id().is_some_and(str::is_empty) {
            // Callers check; an empty id never names a transaction.
            return;
        }
        match command {
            Command::InitProducerId { transactional_id, timeout_ms, expected, reply } => {
                let result = self.init_producer_id(&transactional_id, timeout_ms, expected).await;
                let _ = reply.send(result);
            }
            Command::AddPartitions { transactional_id, producer_id, producer_epoch, partitions, reply } => {
                let result = match self.txns.get(&transactional_id) {
                    None => Err(TxnError::InvalidProducerIdMapping),
                    Some(meta) => match meta.add_partitions(producer_id, producer_epoch, &partitions, now_ms()) {
                        Ok(Some(next)) => self.write(next).await,
                        Ok(None) => Ok(()),
                        Err(error) => Err(error),
                    },
                };
                let _ = reply.send(result);
            }
            Command::EndTxn { transactional_id, producer_id, producer_epoch, commit, reply } => {
                let decision = match self.txns.get(&transactional_id) {
                    None => Err(TxnError::InvalidProducerIdMapping),
                    Some(meta) => meta.end(producer_id, producer_epoch, commit, now_ms()),
                };
                match decision {
                    Ok(EndDecision::Prepare(prepared)) => {
                        let written = self.write(prepared.clone()).await;
                        let ok = written.is_ok();
                        let _ = reply.send(written);
                        if ok {
                            self.finish(prepared).await;
                        }
                    }
                    Ok(EndDecision::AlreadyDone) => {
                        let _ = reply.send(Ok(()));
                    }
                    Err(error) => {
                        let _ = reply.send(Err(error));
                    }
                }
            }
            Command::Verify { transactional_id, producer_id, producer_epoch, partition, reply } => {
                let ok = self.txns.get(&transactional_id).is_some_and(|m| {
                    m.producer_id == producer_id
                        && m.producer_epoch == producer_epoch
                        && m.state == TxnState::Ongoing
                        && m.partitions.contains(&partition)
                });
                let _ = reply.send(ok);
            }
            Command::Describe(ids, reply) => {
                let found = ids.into_iter().map(|id| {
                    let meta = self.txns.get(&id).cloned();
                    (id, meta)
                });
                let _ = reply.send(found.collect());
            }
            Command::List(reply) => {
                let _ = reply.send(self.txns.values().cloned().collect());
            }
        }
    }

    async fn init_producer_id(
        &mut self,
        transactional_id: &str,
        timeout_ms: i32,
        mut expected: Option<(i64, i16)>,
    ) -> TxnResult<(i64, i16)> {
        let max_timeout = self.broker.statics.get("transaction.max.timeout.ms").and_then(|v| v.parse::<i32>().ok());
        if timeout_ms <= 0 || timeout_ms > max_timeout.unwrap_or(900_000) {
            return Err(TxnError::InvalidTransactionTimeout);
        }
        let mut fresh = None;
        let mut meta = match self.txns.get(transactional_id) {
            Some(meta) => meta.clone(),
            None => {
                let id = self.new_producer_id().await?;
                TxnMetadata::new(transactional_id, id, timeout_ms, now_ms())
            }
        };
        // At most: abort an open transaction, then take a new id, then decide.
        for _ in 0..3 {
            match meta.init(timeout_ms, expected, fresh, now_ms())? {
                InitDecision::Ready(next) => {
                    self.write(next.clone()).await?;
                    return Ok((next.producer_id, next.producer_epoch));
                }
                InitDecision::AbortFirst(aborting) => {
                    self.write(aborting.clone()).await?;
                    meta = self.finish(aborting).await;
                    // The producer that opened it is fenced now, on this caller's behalf.
                    expected = None;
                }
                InitDecision::NeedsProducerId => fresh = Some(self.new_producer_id().await?),
            }
        }
        Err(TxnError::ConcurrentTransactions)
    }

    async fn new_producer_id(&self) -> TxnResult<i64> {
        // A failure to reach the metadata log is transient for the client.
        self.broker.producer_ids.next(&self.broker).await.map_err(|_| TxnError::ConcurrentTransactions)
    }

    /// Writes `meta` to the partition (durably) and makes it current.
    async fn write(&mut self, meta: TxnMetadata) -> TxnResult<()> {
        let record = meta.to_record();
        if let Err(error) = crate::groups::persist(&self.broker, &self.partition, &[record]).await {
            tracing::error!(partition = self.partition.index, %error, "cannot write transaction state");
            // The client retries; the state in memory still matches the log.
            return Err(TxnError::ConcurrentTransactions);
        }
        self.txns.insert(meta.transactional_id.clone(), meta);
        Ok(())
    }

    /// Writes the markers of a prepared transaction, then its completion. Returns the completed
    /// metadata (the prepared one if completion could not be written).
    async fn finish(&mut self, prepared: TxnMetadata) -> TxnMetadata {
        let commit = prepared.state == TxnState::PrepareCommit;
        let marker = Marker { commit, coordinator_epoch: self.partition.leader_epoch().max(0) };
        for (topic, index) in &prepared.partitions {
            write_marker(&self.broker, topic, *index, prepared.producer_id, prepared.producer_epoch, marker).await;
        }
        let complete = prepared.complete(now_ms());
        match self.write(complete.clone()).await {
            Ok(()) => complete,
            Err(_) => prepared,
        }
    }

    async fn abort_timed_out(&mut self) {
        let now = now_ms();
        let expired: Vec<TxnMetadata> = self.txns.values().filter_map(|m| m.timed_out(now)).collect();
        for aborting in expired {
            tracing::info!(transactional_id = %aborting.transactional_id, "aborting a transaction past its timeout");
            if self.write(aborting.clone()).await.is_ok() {
                self.finish(aborting).await;
            }
        }
    }
}

/// Writes one marker and waits until it is durable; tells the group coordinator when the
/// partition is one of `__consumer_offsets`. Retries a few times: a partition left without its
/// marker would hold its last stable offset back.
async fn write_marker(broker: &Arc<Broker>, topic: &str, index: i32, producer_id: i64, epoch: i16, marker: Marker) {
    let Some(partition) = broker.partition(topic, index) else {
        return; // the topic was deleted: nothing to mark
    };
    for attempt in 1..=MARKER_ATTEMPTS {
        let log = partition.log.clone();
        let leader_epoch = partition.leader_epoch();
        let written = tokio::task::spawn_blocking(move || {
            let info = log.append_marker(producer_id, epoch, marker, leader_epoch, now_ms())?;
            log.flush_to(info.last_offset + 1)
        })
        .await;
        match written {
            Ok(Ok(_)) => {
                broker.notify_append();
                if topic == OFFSETS_TOPIC {
                    broker.complete_transactional_offsets(index, producer_id, marker.commit).await;
                }
                return;
            }
            Ok(Err(keel_log::LogError::Producer(error))) => {
                // The partition has seen a newer epoch: this marker is a zombie's.
                tracing::warn!(topic, partition = index, %error, "transaction marker refused");
                return;
            }
            failed => {
                tracing::warn!(topic, partition = index, attempt, result = ?failed.map(|r| r.map(|_| ())), "cannot write a transaction marker");
                tokio::time::sleep(Duration::from_millis(100 * u64::from(attempt))).await;
            }
        }
    }
    tracing::error!(topic, partition = index, producer_id, "gave up writing a transaction marker");
}

/// Every transactional id's latest metadata, from the partition's records in offset order.
fn load(partition: &Partition) -> Result<HashMap<String, TxnMetadata>, String> {
    let mut txns = HashMap::new();
    replay_partition(partition, |_, batch| {
        let Replayed::Records(records) = batch else { return };
        for record in records {
            let Ok(id) = decode_transaction_key(&record.key) else { continue };
            match record.value {
                None => {
                    txns.remove(&id);
                }
                Some(value) => match TransactionLogValue::decode(&value) {
                    Ok(value) => {
                        if let Some(meta) = TxnMetadata::from_record(id.clone(), &value) {
                            txns.insert(id, meta);
                        }
                    }
                    Err(error) => tracing::warn!(%error, "skipping an unreadable transaction record"),
                },
            }
        }
    })?;
    Ok(txns)
}
