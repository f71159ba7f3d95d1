//! The group coordinators this broker runs: one actor per `__consumer_offsets` partition it
//! leads, each owning a `keel_coordinator::Coordinator` and that partition's log.
//!
//! A group belongs to partition `abs(java_hash(group_id)) % partitions` (Kafka's rule, so
//! every client and broker agrees). The actor serializes the coordinator's calls, writes the
//! records it emits to the partition with the durability of `acks=all` (appended, then
//! fsynced) before sending any response that follows them, and runs the coordinator's timers.
//! Loading replays the partition from its start. The topic is created on first use, as Kafka
//! does, with `offsets.topic.num.partitions` partitions and `cleanup.policy=compact`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use keel_coordinator as gc;
use keel_coordinator::{
    Coordinator, Effect, ErrorCode, GroupConfig, GroupDescription, GroupListing, GroupState, Heartbeat, JoinGroup,
    LeaveGroup, MemberIdGenerator, OffsetCommit, OffsetFetch, OffsetFetchResult, Record, RequestId, Response,
    SyncGroup,
};
use tokio::sync::{mpsc, oneshot};

use crate::actors::{replay_partition, Replayed};
use crate::broker::{now_ms, Broker};
use crate::controller::TopicSpec;
use crate::error::ApiError;
use crate::partition::Partition;

/// The internal topic holding committed offsets and group metadata.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";

/// Java's `String.hashCode` over UTF-16 code units: the group-to-partition rule clients and
/// brokers share.
pub fn java_hash(s: &str) -> i32 {
    s.encode_utf16().fold(0i32, |h, unit| h.wrapping_mul(31).wrapping_add(i32::from(unit)))
}

/// Kafka's `Utils.abs(groupId.hashCode()) % partitions`.
pub fn partition_for(group_id: &str, partitions: i32) -> i32 {
    let hash = java_hash(group_id);
    let abs = if hash == i32::MIN { 0 } else { hash.abs() };
    abs % partitions.max(1)
}

pub enum Command {
    Call(Call, oneshot::Sender<Response>),
    DescribeConsumer(String, oneshot::Sender<gc::ConsumerGroupDescription>),
    DeleteOffsets(gc::OffsetDelete, oneshot::Sender<gc::OffsetDeleteResponse>),
    /// The cluster's topics changed: KIP-848 groups recompute their target assignment.
    SetTopics(Vec<gc::TopicMetadata>),
    /// OffsetFetch, with the fetching member of OffsetFetch v9 (member id, member epoch), and
    /// `require_stable` (v7+: partitions with pending transactional offsets answer
    /// UNSTABLE_OFFSET_COMMIT).
    Fetch(OffsetFetch, Option<(Option<String>, i32)>, bool, oneshot::Sender<OffsetFetchResult>),
    /// TxnOffsetCommit: offsets written as part of a producer's transaction.
    TxnOffsets {
        request: OffsetCommit,
        producer_id: i64,
        producer_epoch: i16,
        reply: oneshot::Sender<gc::OffsetCommitResponse>,
    },
    /// A commit or abort marker for `producer_id` was written to this partition.
    TxnMarker {
        producer_id: i64,
        commit: bool,
        done: oneshot::Sender<()>,
    },
    List(Vec<GroupState>, oneshot::Sender<Vec<GroupListing>>),
    Describe(String, oneshot::Sender<GroupDescription>),
    Delete(Vec<String>, oneshot::Sender<Vec<(String, ErrorCode)>>),
    /// Every group's committed offsets, as (group, topic, partition, offset), for metrics.
    CommittedOffsets(oneshot::Sender<Vec<(String, String, i32, i64)>>),
}

/// The coordinator calls whose answer may wait (for a rebalance or a write).
pub enum Call {
    Join(JoinGroup),
    Sync(SyncGroup),
    Heartbeat(Heartbeat),
    Leave(LeaveGroup),
    Commit(OffsetCommit),
    ConsumerHeartbeat(gc::ConsumerGroupHeartbeat),
}

/// Member ids as Kafka makes them: `<client id>-<uuid>` (the coordinator adds the prefix).
struct RandomMemberIds;

impl MemberIdGenerator for RandomMemberIds {
    fn next_suffix(&mut self) -> String {
        uuid::Uuid::new_v4().to_string()
    }
}

/// The group coordinators, one actor per `__consumer_offsets` partition.
pub type Groups = crate::actors::PartitionActors<Command>;

impl Broker {
    fn group_config(&self) -> GroupConfig {
        let image = self.image();
        let view = self.config(&image);
        let mut config = GroupConfig::default();
        if let Some(ms) = view.broker_i64("group.initial.rebalance.delay.ms") {
            config.group_initial_rebalance_delay_ms = ms.clamp(0, i64::from(i32::MAX)) as i32;
        }
        if let Some(ms) = view.broker_i64("group.min.session.timeout.ms") {
            config.group_min_session_timeout_ms = ms.clamp(0, i64::from(i32::MAX)) as i32;
        }
        if let Some(ms) = view.broker_i64("group.max.session.timeout.ms") {
            config.group_max_session_timeout_ms = ms.clamp(0, i64::from(i32::MAX)) as i32;
        }
        if let Some(ms) = view.broker_i64("group.consumer.heartbeat.interval.ms") {
            config.group_consumer_heartbeat_interval_ms = ms.clamp(1, i64::from(i32::MAX)) as i32;
        }
        if let Some(ms) = view.broker_i64("group.consumer.session.timeout.ms") {
            config.group_consumer_session_timeout_ms = ms.clamp(1, i64::from(i32::MAX)) as i32;
        }
        if let Some(minutes) = view.broker_i64("offsets.retention.minutes") {
            config.offsets_retention_ms = minutes.saturating_mul(60_000);
        }
        config
    }

    /// Creates `__consumer_offsets` if it does not exist yet; returns its partition count.
    pub async fn ensure_offsets_topic(self: &Arc<Self>) -> Result<i32, ApiError> {
        self.ensure_internal_topic(
            OFFSETS_TOPIC,
            "offsets.topic.num.partitions",
            "offsets.topic.replication.factor",
            "offsets.topic.segment.bytes",
            &[("cleanup.policy", "compact"), ("compression.type", "producer")],
        )
        .await
    }

    /// Creates the internal topic `name` if it does not exist yet, with the partitions,
    /// replication factor (at most the live brokers) and `segment.bytes` of the broker configs
    /// named, and `configs`; returns its partition count.
    pub async fn ensure_internal_topic(
        self: &Arc<Self>,
        name: &str,
        partitions_config: &str,
        replication_config: &str,
        segment_bytes_config: &str,
        configs: &[(&str, &str)],
    ) -> Result<i32, ApiError> {
        if let Some(topic) = self.image().topic(name) {
            return Ok(topic.partitions.len() as i32);
        }
        let image = self.image();
        let view = self.config(&image);
        let partitions = view.broker_i64(partitions_config).unwrap_or(50) as i32;
        let brokers = image.usable_brokers().count().max(1) as i64;
        let replication_factor = view.broker_i64(replication_config).unwrap_or(1).min(brokers) as i16;
        let segment_bytes = view.broker_i64(segment_bytes_config).unwrap_or(104_857_600);
        let mut configs: BTreeMap<String, Option<String>> =
            configs.iter().map(|(k, v)| (k.to_string(), Some(v.to_string()))).collect();
        configs.insert("segment.bytes".to_string(), Some(segment_bytes.to_string()));
        let spec = TopicSpec {
            name: name.to_string(),
            num_partitions: partitions,
            replication_factor,
            assignments: BTreeMap::new(),
            configs,
        };
        match self.create_topics(vec![spec], false, crate::controller::default_deadline()).await.pop() {
            Some(Ok(created)) => Ok(created.num_partitions),
            Some(Err(error)) if error.code == kafka_protocol::error::ResponseError::TopicAlreadyExists => {
                Ok(self.image().topic(name).map_or(partitions, |t| t.partitions.len() as i32))
            }
            Some(Err(error)) => Err(error),
            None => Err(ApiError::new(kafka_protocol::error::ResponseError::CoordinatorNotAvailable)),
        }
    }

    /// The coordinator partition of `group_id`, creating the offsets topic on first use.
    pub async fn coordinator_partition(self: &Arc<Self>, group_id: &str) -> Result<i32, ApiError> {
        let partitions = self.ensure_offsets_topic().await?;
        Ok(partition_for(group_id, partitions))
    }

    /// The actor of the coordinator for `group_id`, started (and loaded) on first use.
    /// An empty group id is INVALID_GROUP_ID for every group request, as in Kafka's
    /// `GroupCoordinatorService`.
    pub async fn coordinator(self: &Arc<Self>, group_id: &str) -> Result<mpsc::Sender<Command>, ErrorCode> {
        if group_id.is_empty() {
            return Err(ErrorCode::INVALID_GROUP_ID);
        }
        let index = self.coordinator_partition(group_id).await.map_err(|_| ErrorCode::COORDINATOR_NOT_AVAILABLE)?;
        self.coordinator_at(index).ok_or(ErrorCode::NOT_COORDINATOR)
    }

    fn coordinator_at(self: &Arc<Self>, index: i32) -> Option<mpsc::Sender<Command>> {
        let partition = self.partition(OFFSETS_TOPIC, index)?;
        let broker = self.clone();
        self.groups.get_or_start(index, partition, move |partition, rx| run(broker, partition, rx))
    }

    /// Every ordinary topic with its id and partition count, as KIP-848 assignors need them.
    pub fn topic_metadata(&self) -> Vec<gc::TopicMetadata> {
        self.image()
            .topics
            .values()
            .filter(|t| !t.is_internal())
            .map(|t| gc::TopicMetadata {
                name: t.name.clone(),
                topic_id: *t.topic_id.as_bytes(),
                partitions: t.partitions.len() as i32,
            })
            .collect()
    }

    /// Tells every running coordinator that topics changed.
    pub async fn topics_changed(&self) {
        let topics = self.topic_metadata();
        for sender in self.groups.all() {
            let _ = sender.send(Command::SetTopics(topics.clone())).await;
        }
    }

    /// A transaction marker for `producer_id` was written to `__consumer_offsets` partition
    /// `index`: its pending offsets become committed (or are dropped).
    pub async fn complete_transactional_offsets(self: &Arc<Self>, index: i32, producer_id: i64, commit: bool) {
        let Some(sender) = self.coordinator_at(index) else { return };
        let (done, wait) = oneshot::channel();
        if sender.send(Command::TxnMarker { producer_id, commit, done }).await.is_ok() {
            let _ = wait.await;
        }
    }

    /// Starts the coordinators of every `__consumer_offsets` partition this broker hosts, so
    /// that groups loaded from disk expire their members and offsets without a new request.
    pub fn start_coordinators(self: &Arc<Self>) {
        let count = self.image().topic(OFFSETS_TOPIC).map_or(0, |t| t.partitions.len() as i32);
        for index in 0..count {
            let _ = self.coordinator_at(index);
        }
    }
}

/// Queues a coordinator call; the answer arrives on the returned channel. Queuing in request
/// order keeps a connection's calls (commits, joins) in the order it sent them.
pub async fn submit(sender: &mpsc::Sender<Command>, call: Call) -> Option<oneshot::Receiver<Response>> {
    let (tx, rx) = oneshot::channel();
    sender.send(Command::Call(call, tx)).await.ok()?;
    Some(rx)
}

/// Offset records of open transactions, by producer id: (group, topic, partition, record).
type PendingOffsets = HashMap<i64, Vec<(String, String, i32, Record)>>;

struct Actor {
    broker: Arc<Broker>,
    partition: Arc<Partition>,
    coordinator: Coordinator,
    pending: PendingOffsets,
    next_id: RequestId,
    waiting: HashMap<RequestId, oneshot::Sender<Response>>,
}

async fn run(broker: Arc<Broker>, partition: Arc<Partition>, mut rx: mpsc::Receiver<Command>) {
    let (coordinator, pending) = match load(&broker, &partition) {
        Ok(loaded) => loaded,
        Err(error) => {
            tracing::error!(partition = partition.index, %error, "cannot load group coordinator");
            return;
        }
    };
    let mut actor = Actor { broker, partition, coordinator, pending, next_id: 0, waiting: HashMap::new() };
    // Consumer groups (KIP-848) assign from topic metadata: give it before serving.
    let effects = actor.coordinator.set_topics(actor.broker.topic_metadata(), now_ms());
    actor.apply(effects).await;
    let effects = actor.coordinator.on_loaded(now_ms());
    actor.apply(effects).await;
    loop {
        let deadline = actor.coordinator.next_deadline_ms();
        let sleep = async {
            match deadline {
                Some(at) => {
                    let wait_ms = (at - now_ms()).max(0) as u64;
                    tokio::time::sleep(std::time::Duration::from_millis(wait_ms)).await
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            command = rx.recv() => match command {
                Some(command) => actor.handle(command).await,
                None => return,
            },
            _ = sleep => {
                let effects = actor.coordinator.tick(now_ms());
                actor.apply(effects).await;
            }
        }
    }
}

impl Actor {
    async fn handle(&mut self, command: Command) {
        let now = now_ms();
        match command {
            Command::Call(call, reply) => {
                self.next_id += 1;
                let id = self.next_id;
                self.waiting.insert(id, reply);
                let effects = match call {
                    Call::Join(request) => self.coordinator.join_group(id, request, now),
                    Call::Sync(request) => self.coordinator.sync_group(id, request, now),
                    Call::Heartbeat(request) => self.coordinator.heartbeat(id, request, now),
                    Call::Leave(request) => self.coordinator.leave_group(id, request, now),
                    Call::Commit(request) => self.coordinator.commit_offsets(id, request, now),
                    Call::ConsumerHeartbeat(request) => self.coordinator.consumer_group_heartbeat(id, request, now),
                };
                self.apply(effects).await;
            }
            Command::DescribeConsumer(group_id, reply) => {
                let _ = reply.send(self.coordinator.describe_consumer_group(&group_id));
            }
            Command::DeleteOffsets(request, reply) => {
                let (response, effects) = self.coordinator.delete_offsets(&request, now);
                let response = match self.apply(effects).await {
                    Some(error) => response.with_error(error),
                    None => response,
                };
                let _ = reply.send(response);
            }
            Command::SetTopics(topics) => {
                let effects = self.coordinator.set_topics(topics, now);
                self.apply(effects).await;
            }
            Command::TxnOffsets { request, producer_id, producer_epoch, reply } => {
                let (mut response, records) = self.coordinator.transactional_offset_records(&request, now);
                if !records.is_empty() {
                    let batch: Vec<Record> = records.iter().map(|(_, _, r)| r.clone()).collect();
                    match persist_transactional(&self.broker, &self.partition, &batch, producer_id, producer_epoch)
                        .await
                    {
                        Ok(()) => {
                            let pending = self.pending.entry(producer_id).or_default();
                            for (topic, partition, record) in records {
                                pending.push((request.group_id.clone(), topic, partition, record));
                            }
                        }
                        Err(error) => {
                            for partition in response.topics.iter_mut().flat_map(|t| t.partitions.iter_mut()) {
                                if partition.error_code == ErrorCode::NONE {
                                    partition.error_code = error;
                                }
                            }
                        }
                    }
                }
                let _ = reply.send(response);
            }
            Command::TxnMarker { producer_id, commit, done } => {
                if let Some(records) = self.pending.remove(&producer_id) {
                    if commit {
                        for (_, _, _, record) in records {
                            let _ = self.coordinator.replay(&record);
                        }
                    }
                }
                let _ = done.send(());
            }
            Command::Fetch(request, member, require_stable, reply) => {
                let checked = match &member {
                    Some((member_id, epoch)) => {
                        self.coordinator.validate_offset_fetch(&request.group_id, member_id.as_deref(), *epoch)
                    }
                    None => Ok(()),
                };
                let mut result = match checked {
                    Ok(()) => self.coordinator.fetch_offsets(&request),
                    Err(error) => {
                        OffsetFetchResult { group_id: request.group_id, error_code: error, topics: Vec::new() }
                    }
                };
                if require_stable {
                    // KIP-447: a partition with offsets in an open transaction is not stable yet.
                    let group = &result.group_id;
                    let unstable = |topic: &str, partition: i32| {
                        self.pending.values().flatten().any(|(g, t, p, _)| g == group && t == topic && *p == partition)
                    };
                    let marks: Vec<(usize, usize)> = result
                        .topics
                        .iter()
                        .enumerate()
                        .flat_map(|(ti, t)| {
                            t.partitions
                                .iter()
                                .enumerate()
                                .filter(|(_, p)| unstable(&t.name, p.partition_index))
                                .map(move |(pi, _)| (ti, pi))
                        })
                        .collect();
                    for (ti, pi) in marks {
                        let partition = &mut result.topics[ti].partitions[pi];
                        partition.error_code = ErrorCode::UNSTABLE_OFFSET_COMMIT;
                        partition.committed_offset = -1;
                    }
                }
                let _ = reply.send(result);
            }
            Command::List(states, reply) => {
                let _ = reply.send(self.coordinator.list_groups(&states));
            }
            Command::CommittedOffsets(reply) => {
                let _ = reply.send(self.coordinator.committed_offsets());
            }
            Command::Describe(group_id, reply) => {
                let _ = reply.send(self.coordinator.describe_group(&group_id));
            }
            Command::Delete(group_ids, reply) => {
                let (results, effects) = self.coordinator.delete_groups(&group_ids, now);
                let failed = self.apply(effects).await;
                let results = match failed {
                    Some(error) => results.into_iter().map(|(id, _)| (id, error)).collect(),
                    None => results,
                };
                let _ = reply.send(results);
            }
        }
    }

    /// Runs effects in order: a write completes (durably) before the responses after it.
    /// Returns the error code of a failed write, after which the coordinator is rebuilt from
    /// its log and every waiting request is answered with that error.
    async fn apply(&mut self, effects: Vec<Effect>) -> Option<ErrorCode> {
        let mut failed: Option<ErrorCode> = None;
        for effect in effects {
            match effect {
                Effect::Persist(records) if failed.is_none() => {
                    if let Err(error) = persist(&self.broker, &self.partition, &records).await {
                        tracing::error!(partition = self.partition.index, %error, "cannot write group records");
                        failed = Some(ErrorCode::from_append_error(ErrorCode::KAFKA_STORAGE_ERROR));
                    }
                }
                Effect::Persist(_) => {}
                Effect::Respond(id, response) => {
                    let response = match failed {
                        Some(error) => response.with_error(error),
                        None => response,
                    };
                    if let Some(reply) = self.waiting.remove(&id) {
                        let _ = reply.send(response);
                    }
                }
            }
        }
        if let Some(error) = failed {
            // Never keep a coordinator whose state is ahead of its log.
            for (_, reply) in self.waiting.drain() {
                drop(reply);
            }
            match load(&self.broker, &self.partition) {
                Ok((coordinator, pending)) => {
                    self.coordinator = coordinator;
                    self.pending = pending;
                }
                Err(load_error) => tracing::error!(%load_error, "cannot reload group coordinator"),
            }
            return Some(error);
        }
        None
    }
}

/// Appends offset records as part of a producer's transaction (transactional batch with the
/// producer's id and epoch) and waits until they are fsynced.
async fn persist_transactional(
    broker: &Broker,
    partition: &Partition,
    records: &[Record],
    producer_id: i64,
    producer_epoch: i16,
) -> Result<(), ErrorCode> {
    let producer = keel_log::builder::Producer { id: producer_id, epoch: producer_epoch, base_sequence: -1 };
    let Some(mut batch) = keel_log::builder::build_producer_batch(
        records.iter().map(|r| (Some(&r.key[..]), r.value.as_deref())),
        now_ms(),
        producer,
        true,
    ) else {
        return Ok(());
    };
    let log = partition.log.clone();
    let leader_epoch = partition.leader_epoch();
    let appended = tokio::task::spawn_blocking(move || {
        let info = log.append_from(&mut batch, leader_epoch, now_ms(), keel_log::producer::Origin::Coordinator)?;
        log.flush_to(info.last_offset + 1)
    })
    .await;
    broker.notify_append();
    match appended {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(keel_log::LogError::Producer(keel_log::producer::ProducerError::InvalidProducerEpoch { .. }))) => {
            Err(ErrorCode(kafka_protocol::error::ResponseError::ProducerFenced.code()))
        }
        _ => Err(ErrorCode::KAFKA_STORAGE_ERROR),
    }
}

/// Appends records to the partition and waits until they are fsynced.
pub(crate) async fn persist(broker: &Broker, partition: &Partition, records: &[Record]) -> Result<(), String> {
    let Some(mut batch) =
        keel_log::builder::build_batch(records.iter().map(|r| (Some(&r.key[..]), r.value.as_deref())), now_ms())
    else {
        return Ok(());
    };
    let log = partition.log.clone();
    let info = log.append(&mut batch, partition.leader_epoch(), now_ms()).map_err(|e| e.to_string())?;
    broker.notify_append();
    let end = info.last_offset + 1;
    tokio::task::spawn_blocking(move || log.flush_to(end))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    Ok(())
}

/// Builds a coordinator from every record of the partition, in offset order: transactional
/// offsets wait for their marker (applied on commit, dropped on abort), and those still open
/// at the end are returned as pending.
fn load(broker: &Broker, partition: &Partition) -> Result<(Coordinator, PendingOffsets), String> {
    let mut coordinator = Coordinator::with_member_id_generator(broker.group_config(), Box::new(RandomMemberIds));
    let mut pending = PendingOffsets::new();
    let mut replayed = 0usize;
    replay_partition(partition, |header, batch| match batch {
        Replayed::Marker(marker) => {
            if let (Some(marker), Some(records)) = (marker, pending.remove(&header.producer_id)) {
                if marker.commit {
                    for (_, _, _, record) in records {
                        let _ = coordinator.replay(&record);
                    }
                }
            }
        }
        Replayed::Records(records) if header.is_transactional() => {
            for record in records {
                if let Ok(gc::records::CoordinatorRecord::OffsetCommit { key, .. }) =
                    gc::records::CoordinatorRecord::decode(&record.key, record.value.as_deref())
                {
                    pending.entry(header.producer_id).or_default().push((key.group, key.topic, key.partition, record));
                }
            }
        }
        Replayed::Records(records) => {
            for record in records {
                if let Err(error) = coordinator.replay(&record) {
                    tracing::debug!(%error, "skipping a record the coordinator does not know");
                }
                replayed += 1;
            }
        }
    })?;
    tracing::debug!(partition = partition.index, records = replayed, "group coordinator loaded");
    Ok((coordinator, pending))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_hash_to_partitions_as_in_kafka() {
        // Java: "test-group".hashCode() == 627841412; "".hashCode() == 0.
        assert_eq!(java_hash("test-group"), 627_841_412);
        assert_eq!(java_hash(""), 0);
        assert_eq!(partition_for("test-group", 50), 12);
        // Non-ASCII text hashes by UTF-16 code units, as Java does.
        assert_eq!(java_hash("é"), 0xe9);
        assert_eq!(java_hash("😀"), 1_772_899);
    }
}
