//! Controller decisions: validating admin requests against the metadata image and turning them
//! into metadata records.
//!
//! Only the active controller decides. Any broker asks it ([`Broker::ask_controller`]: locally
//! when this node leads, else over the controller listener), waits until its own image holds the
//! change, and reconciles its partitions before answering, so a client that created a topic
//! through any broker can use it at once. On the active controller ([`Decider`]) each operation
//! takes the controller lock, confirms it still leads and that its image holds every committed
//! entry (`MetadataStore::catch_up`), validates against that image and proposes the records.
//!
//! Every operation has a deadline (the request's timeout, or [`CONTROLLER_TIMEOUT`]). A proposal
//! can stall, chiefly while the metadata log's disk is full; the caller then gets
//! REQUEST_TIMED_OUT at its deadline, as from Kafka's controller, while the proposal keeps the
//! controller lock until it commits (and its partitions are reconciled) or fails. So the next
//! decision is still validated against an image that holds every earlier one, and waits (within
//! its own deadline) instead of piling more proposals behind the stalled one.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::error::ResponseError;
use keel_cluster::{
    BrokerRegistration, CallError, CallFuture, ConfigResource, ControllerService, MetadataError, MetadataImage,
    MetadataRecord, NodeId, PartitionState, QuorumState, PRODUCER_ID_BLOCK_SIZE,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::sync::OwnedMutexGuard;
use tokio::time::Instant;
use uuid::Uuid;

use crate::broker::Broker;
use crate::config::{self, ConfigError};
use crate::error::ApiError;
use crate::lifecycle::{plan_fence, plan_unfence, Heartbeat, HeartbeatReply};
use crate::placement::place_replicas;

/// Kafka's longest topic name.
pub const TOPIC_NAME_MAX_CHARS: usize = 249;
/// Kafka's `MAX_PARTITIONS_PER_BATCH`: the most partitions one request may create.
pub const PARTITIONS_PER_REQUEST_MAX: i64 = 10_000;
/// How long a controller operation waits for the metadata log when its request carries no
/// timeout (or a non-positive one): topic auto-creation, config changes, producer-id blocks.
pub const CONTROLLER_TIMEOUT: Duration = Duration::from_secs(10);

/// The deadline of an operation whose request asked for `timeout_ms` (Kafka's `timeoutMs`);
/// zero or less means [`CONTROLLER_TIMEOUT`].
pub fn deadline_after_ms(timeout_ms: i32) -> Instant {
    let timeout = u64::try_from(timeout_ms).ok().filter(|ms| *ms > 0).map(Duration::from_millis);
    Instant::now() + timeout.unwrap_or(CONTROLLER_TIMEOUT)
}

/// The default deadline of an operation that names none.
pub fn default_deadline() -> Instant {
    Instant::now() + CONTROLLER_TIMEOUT
}

fn timed_out(what: &str) -> ApiError {
    ApiError::with(
        ResponseError::RequestTimedOut,
        format!(
            "{what} within the request timeout: the metadata log is not committing (are most controllers down, or is its disk full?); \
             a change already proposed may still take effect"
        ),
    )
}

fn too_many_partitions() -> ApiError {
    ApiError::with(
        ResponseError::PolicyViolation,
        format!("excessively large number of partitions per request (at most {PARTITIONS_PER_REQUEST_MAX})"),
    )
}

pub fn validate_topic_name(name: &str) -> Result<(), ApiError> {
    let invalid =
        |why: &str| ApiError::with(ResponseError::InvalidTopicException, format!("topic name {name:?} {why}"));
    if name.is_empty() {
        return Err(invalid("is empty"));
    }
    if name == "." || name == ".." {
        return Err(invalid("cannot be \".\" or \"..\""));
    }
    if name.chars().count() > TOPIC_NAME_MAX_CHARS {
        return Err(invalid("is longer than 249 characters"));
    }
    if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '_' || c == '-') {
        return Err(invalid("may contain only ASCII letters, digits, '.', '_' and '-'"));
    }
    if name.starts_with(keel_log::manager::RESERVED_PREFIX) {
        return Err(invalid("is reserved for the cluster metadata log"));
    }
    Ok(())
}

/// Kafka refuses topics whose names differ only in '.' versus '_' (metric names collide).
fn colliding_topic<'a>(image: &'a MetadataImage, name: &str) -> Option<&'a str> {
    let normalized = name.replace('.', "_");
    image
        .topics
        .keys()
        .find(|existing| existing.as_str() != name && existing.replace('.', "_") == normalized)
        .map(String::as_str)
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TopicSpec {
    pub name: String,
    /// -1: `num.partitions`.
    pub num_partitions: i32,
    /// -1: `default.replication.factor`.
    pub replication_factor: i16,
    /// Manual assignment: partition index → replicas.
    pub assignments: BTreeMap<i32, Vec<NodeId>>,
    pub configs: BTreeMap<String, Option<String>>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreatedTopic {
    pub topic_id: Uuid,
    pub num_partitions: i32,
    pub replication_factor: i16,
}

fn config_error(error: ConfigError) -> ApiError {
    ApiError::with(ResponseError::InvalidConfig, error.to_string())
}

pub fn validate_topic_config(name: &str, value: &str) -> Result<(), ApiError> {
    let def = config::topic_def(name)
        .ok_or_else(|| ApiError::with(ResponseError::InvalidConfig, format!("unknown topic config {name}")))?;
    config::validate_value(name, def.kind, value).map_err(config_error)
}

impl Broker {
    /// Rack-aware replica placement over the unfenced brokers, leader first, starting at a
    /// random point of the round as Kafka does (`placement.rs` decides).
    fn assign(
        &self,
        image: &MetadataImage,
        first_partition: i32,
        count: i32,
        replication_factor: i16,
    ) -> Result<Vec<Vec<NodeId>>, ApiError> {
        let brokers: Vec<(NodeId, Option<String>)> =
            image.usable_brokers().map(|b| (b.node_id, b.rack.clone())).collect();
        let random = Uuid::new_v4().as_u128();
        let (start, shift) = ((random >> 64) as usize, random as u64 as usize);
        place_replicas(&brokers, first_partition, count, replication_factor, start, shift)
            .map_err(|error| ApiError::with(ResponseError::InvalidReplicationFactor, error.to_string()))
    }

    fn check_manual_assignment(image: &MetadataImage, replicas: &[NodeId]) -> Result<(), ApiError> {
        let mut seen = replicas.to_vec();
        seen.sort_unstable();
        seen.dedup();
        if replicas.is_empty() || seen.len() != replicas.len() {
            return Err(ApiError::with(
                ResponseError::InvalidReplicaAssignment,
                "a replica assignment must name distinct brokers",
            ));
        }
        if let Some(unknown) = replicas.iter().find(|id| !image.brokers.contains_key(id)) {
            return Err(ApiError::with(
                ResponseError::InvalidReplicaAssignment,
                format!("broker {unknown} is not registered"),
            ));
        }
        Ok(())
    }

    fn partition_records(topic_id: Uuid, first: i32, assignment: Vec<Vec<NodeId>>) -> Vec<MetadataRecord> {
        assignment
            .into_iter()
            .enumerate()
            .map(|(i, replicas)| MetadataRecord::Partition {
                topic_id,
                partition: first + i as i32,
                state: PartitionState {
                    leader: replicas[0],
                    // Until followers replicate, the leader alone is in sync.
                    isr: vec![replicas[0]],
                    replicas,
                    leader_epoch: 0,
                    partition_epoch: 0,
                },
            })
            .collect()
    }

    /// Validates a topic creation against `image` and returns its records.
    fn plan_topic(
        &self,
        image: &MetadataImage,
        spec: &TopicSpec,
    ) -> Result<(CreatedTopic, Vec<MetadataRecord>), ApiError> {
        validate_topic_name(&spec.name)?;
        if image.topic(&spec.name).is_some() {
            return Err(ApiError::with(
                ResponseError::TopicAlreadyExists,
                format!("topic '{}' already exists", spec.name),
            ));
        }
        if let Some(other) = colliding_topic(image, &spec.name) {
            return Err(ApiError::with(
                ResponseError::InvalidTopicException,
                format!("topic '{}' collides with existing topic '{other}'", spec.name),
            ));
        }
        let view = self.config(image);
        let assignment = if spec.assignments.is_empty() {
            let partitions = match spec.num_partitions {
                -1 => view.broker_i64("num.partitions").unwrap_or(1).clamp(1, PARTITIONS_PER_REQUEST_MAX) as i32,
                n if n <= 0 => {
                    return Err(ApiError::with(
                        ResponseError::InvalidPartitions,
                        "number of partitions must be larger than 0",
                    ))
                }
                n => n,
            };
            let replication_factor = match spec.replication_factor {
                -1 => view.broker_i64("default.replication.factor").unwrap_or(1) as i16,
                n => n,
            };
            self.assign(image, 0, partitions, replication_factor)?
        } else {
            if spec.num_partitions != -1 || spec.replication_factor != -1 {
                return Err(ApiError::with(
                    ResponseError::InvalidRequest,
                    "both numPartitions or replicationFactor and replicasAssignments were set; \
                     both cannot be used at the same time",
                ));
            }
            let indexes: Vec<i32> = spec.assignments.keys().copied().collect();
            if indexes != (0..indexes.len() as i32).collect::<Vec<_>>() {
                return Err(ApiError::with(
                    ResponseError::InvalidReplicaAssignment,
                    "partitions should be a consecutive 0-based integer sequence",
                ));
            }
            for replicas in spec.assignments.values() {
                Self::check_manual_assignment(image, replicas)?;
            }
            spec.assignments.values().cloned().collect()
        };
        for (name, value) in &spec.configs {
            let Some(value) = value else {
                return Err(ApiError::with(
                    ResponseError::InvalidConfig,
                    format!("null value not supported for topic config {name}"),
                ));
            };
            validate_topic_config(name, value)?;
        }
        let topic_id = Uuid::new_v4();
        let created = CreatedTopic {
            topic_id,
            num_partitions: assignment.len() as i32,
            replication_factor: assignment.first().map_or(0, |r| r.len() as i16),
        };
        let mut records = vec![MetadataRecord::Topic { name: spec.name.clone(), topic_id }];
        for (name, value) in &spec.configs {
            records.push(MetadataRecord::Config {
                resource: ConfigResource::Topic(spec.name.clone()),
                name: name.clone(),
                value: value.clone(),
            });
        }
        records.extend(Self::partition_records(topic_id, 0, assignment));
        Ok((created, records))
    }

    /// Creates topics; one result per spec, in order.
    pub async fn create_topics(
        self: &Arc<Self>,
        specs: Vec<TopicSpec>,
        validate_only: bool,
        deadline: Instant,
    ) -> Vec<Result<CreatedTopic, ApiError>> {
        let count = specs.len();
        let request = ControllerRequest::CreateTopics { specs, validate_only, timeout_ms: millis_until(deadline) };
        match self.ask_controller::<Vec<WireResult<CreatedTopic>>>(request, deadline).await {
            Ok(results) => results.into_iter().map(|r| r.map_err(ApiError::from)).collect(),
            Err(error) => vec![Err(error); count],
        }
    }

    /// Deletes topics by name; one result per name.
    pub async fn delete_topics(self: &Arc<Self>, names: Vec<String>, deadline: Instant) -> Vec<Result<Uuid, ApiError>> {
        let count = names.len();
        let request = ControllerRequest::DeleteTopics { names, timeout_ms: millis_until(deadline) };
        match self.ask_controller::<Vec<WireResult<Uuid>>>(request, deadline).await {
            Ok(results) => results.into_iter().map(|r| r.map_err(ApiError::from)).collect(),
            Err(error) => vec![Err(error); count],
        }
    }

    /// Raises a topic's partition count to `count`.
    pub async fn create_partitions(
        self: &Arc<Self>,
        name: &str,
        count: i32,
        assignments: Option<Vec<Vec<NodeId>>>,
        validate_only: bool,
        deadline: Instant,
    ) -> Result<(), ApiError> {
        let request = ControllerRequest::CreatePartitions {
            name: name.to_string(),
            count,
            assignments,
            validate_only,
            timeout_ms: millis_until(deadline),
        };
        self.ask_controller::<WireResult<()>>(request, deadline).await?.map_err(ApiError::from)
    }

    /// Applies config changes to one resource: `(name, Some(value))` sets, `(name, None)`
    /// removes. With `replace` (the legacy AlterConfigs) every config not named is removed.
    pub async fn alter_configs(
        self: &Arc<Self>,
        resource: ConfigResource,
        changes: Vec<(String, Option<String>)>,
        replace: bool,
        validate_only: bool,
    ) -> Result<(), ApiError> {
        let deadline = default_deadline();
        let request = ControllerRequest::AlterConfigs { resource, changes, replace, validate_only };
        self.ask_controller::<WireResult<()>>(request, deadline).await?.map_err(ApiError::from)
    }

    /// Registers this broker (again, when its endpoint or rack changed).
    pub async fn register(
        self: &Arc<Self>,
        registration: BrokerRegistration,
        deadline: Instant,
    ) -> Result<(), ApiError> {
        let request = ControllerRequest::RegisterBroker(registration);
        self.ask_controller::<WireResult<()>>(request, deadline).await?.map_err(ApiError::from)
    }

    /// One heartbeat to the active controller.
    pub(crate) async fn heartbeat(
        self: &Arc<Self>,
        heartbeat: Heartbeat,
        deadline: Instant,
    ) -> Result<HeartbeatReply, ApiError> {
        self.ask_controller::<WireResult<HeartbeatReply>>(ControllerRequest::Heartbeat(heartbeat), deadline)
            .await?
            .map_err(ApiError::from)
    }

    /// A block of producer ids for this broker (Kafka's AllocateProducerIds): `start..end`.
    pub async fn allocate_producer_ids(self: &Arc<Self>, deadline: Instant) -> Result<(i64, i64), ApiError> {
        let request = ControllerRequest::AllocateProducerIds { node_id: self.node_id };
        self.ask_controller::<WireResult<(i64, i64)>>(request, deadline).await?.map_err(ApiError::from)
    }

    /// The metadata quorum as the active controller sees it (who leads, each voter's progress).
    pub async fn quorum_state(self: &Arc<Self>, deadline: Instant) -> Result<QuorumState, ApiError> {
        if self.metadata.is_leader() {
            return Ok(self.metadata.quorum());
        }
        self.ask_controller::<QuorumState>(ControllerRequest::DescribeQuorum, deadline).await
    }

    /// Creates a topic with broker defaults if auto-creation is on; `Ok(false)` when it is off.
    pub async fn auto_create_topic(self: &Arc<Self>, name: &str) -> Result<bool, ApiError> {
        // The offsets topic has its own partition count and configs, whoever asks first.
        if name == crate::groups::OFFSETS_TOPIC {
            return self.ensure_offsets_topic().await.map(|_| true);
        }
        if !self.config(&self.image()).broker_bool("auto.create.topics.enable") {
            return Ok(false);
        }
        let spec = TopicSpec {
            name: name.to_string(),
            num_partitions: -1,
            replication_factor: -1,
            assignments: BTreeMap::new(),
            configs: BTreeMap::new(),
        };
        match self.create_topics(vec![spec], false, default_deadline()).await.pop() {
            Some(Ok(_)) => Ok(true),
            // A concurrent request created it first.
            Some(Err(error)) if error.code == ResponseError::TopicAlreadyExists => Ok(true),
            Some(Err(error)) => Err(error),
            None => Ok(false),
        }
    }

    /// Has the active controller decide `request` and returns its answer, once this broker's
    /// image holds the change it made and its partitions match that image (within `deadline`;
    /// a change that is committed but not yet applied here is still answered).
    async fn ask_controller<T: DeserializeOwned>(
        self: &Arc<Self>,
        request: ControllerRequest,
        deadline: Instant,
    ) -> Result<T, ApiError> {
        let request = serde_json::to_value(&request).map_err(|e| {
            ApiError::with(ResponseError::UnknownServerError, format!("cannot encode a controller request: {e}"))
        })?;
        let timeout = deadline.saturating_duration_since(Instant::now());
        let answer = self.metadata.call_controller(request, timeout).await.map_err(|e| controller_error(&e))?;
        let decided: Decided<T> = serde_json::from_value(answer).map_err(|e| {
            ApiError::with(ResponseError::UnknownServerError, format!("undecodable answer from the controller: {e}"))
        })?;
        if let Some(index) = decided.index {
            let timeout = deadline.saturating_duration_since(Instant::now());
            if self.metadata.wait_applied(index, timeout).await.is_ok() {
                self.apply_image().await?;
            }
        }
        Ok(decided.result)
    }

    /// Brings hosted partitions and the group coordinators in line with the current image. Runs
    /// after every image change ([`crate::server`]'s watcher) and before a broker answers a
    /// change it asked for.
    pub async fn apply_image(self: &Arc<Self>) -> Result<(), ApiError> {
        let broker = Arc::clone(self);
        let reconciled = tokio::task::spawn_blocking(move || broker.reconcile()).await;
        self.topics_changed().await;
        match reconciled {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(ApiError::with(ResponseError::KafkaStorageError, error.to_string())),
            Err(join) => Err(ApiError::with(ResponseError::UnknownServerError, format!("reconcile: {join}"))),
        }
    }

    /// Decides one request on the active controller.
    async fn decide(self: &Arc<Self>, request: ControllerRequest) -> Result<serde_json::Value, CallError> {
        /// The decision as the asker reads it; a refusal that is an error becomes `failed(error)`.
        fn answer<T: Serialize>(
            decided: Result<Decided<T>, Refusal>,
            failed: impl FnOnce(&ApiError) -> T,
        ) -> Result<serde_json::Value, CallError> {
            match decided {
                Ok(decided) => encode(&decided),
                Err(Refusal::NotLeader) => Err(CallError::NotLeader),
                Err(Refusal::Failed(error)) => encode(&Decided::new(failed(&error))),
            }
        }
        fn encode<T: Serialize>(decided: &Decided<T>) -> Result<serde_json::Value, CallError> {
            serde_json::to_value(decided).map_err(|e| CallError::Failed(format!("cannot encode the decision: {e}")))
        }
        fn each<T>(count: usize) -> impl FnOnce(&ApiError) -> Vec<WireResult<T>> {
            move |error| (0..count).map(|_| Err(WireError::from(error))).collect()
        }
        fn one<T>(error: &ApiError) -> WireResult<T> {
            Err(WireError::from(error))
        }
        match request {
            ControllerRequest::CreateTopics { specs, validate_only, timeout_ms } => {
                let count = specs.len();
                answer(self.decide_create_topics(specs, validate_only, decider_deadline(timeout_ms)).await, each(count))
            }
            ControllerRequest::DeleteTopics { names, timeout_ms } => {
                let count = names.len();
                answer(self.decide_delete_topics(names, decider_deadline(timeout_ms)).await, each(count))
            }
            ControllerRequest::CreatePartitions { name, count, assignments, validate_only, timeout_ms } => answer(
                self.decide_create_partitions(&name, count, assignments, validate_only, decider_deadline(timeout_ms))
                    .await,
                one,
            ),
            ControllerRequest::AlterConfigs { resource, changes, replace, validate_only } => {
                answer(self.decide_alter_configs(resource, changes, replace, validate_only).await, one)
            }
            ControllerRequest::RegisterBroker(registration) => answer(self.decide_register(registration).await, one),
            ControllerRequest::AllocateProducerIds { node_id } => answer(self.decide_producer_ids(node_id).await, one),
            ControllerRequest::Heartbeat(heartbeat) => answer(self.decide_heartbeat(heartbeat).await, one),
            ControllerRequest::DescribeQuorum if self.metadata.is_leader() => {
                encode(&Decided::new(self.metadata.quorum()))
            }
            ControllerRequest::DescribeQuorum => Err(CallError::NotLeader),
        }
    }

    async fn decide_create_topics(
        self: &Arc<Self>,
        specs: Vec<TopicSpec>,
        validate_only: bool,
        deadline: Instant,
    ) -> Result<Decided<Vec<WireResult<CreatedTopic>>>, Refusal> {
        // Checked before anything is planned: planning allocates per partition.
        let requested: i64 =
            specs
                .iter()
                .map(|s| {
                    if s.assignments.is_empty() {
                        i64::from(s.num_partitions.max(1))
                    } else {
                        s.assignments.len() as i64
                    }
                })
                .sum();
        if requested > PARTITIONS_PER_REQUEST_MAX {
            return Err(Refusal::Failed(too_many_partitions()));
        }
        let guard = self.lock_controller(deadline).await?;
        let mut image = (*self.image()).clone();
        let mut results = Vec::with_capacity(specs.len());
        let mut records = Vec::new();
        for spec in &specs {
            match self.plan_topic(&image, spec) {
                Ok((created, topic_records)) => {
                    // Later specs in the same request see this topic (duplicates are refused).
                    for record in &topic_records {
                        image.apply(record);
                    }
                    records.extend(topic_records);
                    results.push(Ok(created));
                }
                Err(error) => results.push(Err(WireError::from(&error))),
            }
        }
        if validate_only || records.is_empty() {
            return Ok(Decided::new(results));
        }
        self.commit_each(guard, records, deadline, results).await
    }

    async fn decide_delete_topics(
        self: &Arc<Self>,
        names: Vec<String>,
        deadline: Instant,
    ) -> Result<Decided<Vec<WireResult<Uuid>>>, Refusal> {
        let guard = self.lock_controller(deadline).await?;
        let image = self.image();
        let mut records = Vec::new();
        let mut results = Vec::with_capacity(names.len());
        for name in &names {
            match image.topic(name) {
                Some(topic) if !records.contains(&MetadataRecord::RemoveTopic { topic_id: topic.topic_id }) => {
                    records.push(MetadataRecord::RemoveTopic { topic_id: topic.topic_id });
                    results.push(Ok(topic.topic_id));
                }
                Some(topic) => results.push(Ok(topic.topic_id)),
                None => results.push(Err(WireError::from(&ApiError::with(
                    ResponseError::UnknownTopicOrPartition,
                    format!("topic '{name}' does not exist"),
                )))),
            }
        }
        if records.is_empty() {
            return Ok(Decided::new(results));
        }
        self.commit_each(guard, records, deadline, results).await
    }

    async fn decide_create_partitions(
        self: &Arc<Self>,
        name: &str,
        count: i32,
        assignments: Option<Vec<Vec<NodeId>>>,
        validate_only: bool,
        deadline: Instant,
    ) -> Result<Decided<WireResult<()>>, Refusal> {
        let guard = self.lock_controller(deadline).await?;
        let image = self.image();
        let records = self.plan_partitions(&image, name, count, assignments)?;
        if validate_only {
            return Ok(Decided::new(Ok(())));
        }
        Ok(Decided::committed(Ok(()), self.commit(guard, records, deadline).await?))
    }

    /// Validates a partition increase against `image` and returns its records.
    fn plan_partitions(
        &self,
        image: &MetadataImage,
        name: &str,
        count: i32,
        assignments: Option<Vec<Vec<NodeId>>>,
    ) -> Result<Vec<MetadataRecord>, ApiError> {
        let topic = image.topic(name).ok_or_else(|| {
            ApiError::with(ResponseError::UnknownTopicOrPartition, format!("topic '{name}' does not exist"))
        })?;
        let current = topic.partitions.len() as i32;
        if count <= current {
            let message = if count == current {
                format!("topic currently has {current} partitions, which is the same as the requested {count}")
            } else {
                format!("topic currently has {current} partitions, {count} would not be an increase")
            };
            return Err(ApiError::with(ResponseError::InvalidPartitions, message));
        }
        let added = count - current;
        if i64::from(added) > PARTITIONS_PER_REQUEST_MAX {
            return Err(too_many_partitions());
        }
        let assignment = match assignments {
            Some(assignments) => {
                if assignments.len() as i32 != added {
                    return Err(ApiError::with(
                        ResponseError::InvalidReplicaAssignment,
                        format!(
                            "increasing the number of partitions by {added} but {} assignments provided",
                            assignments.len()
                        ),
                    ));
                }
                for replicas in &assignments {
                    Self::check_manual_assignment(image, replicas)?;
                }
                assignments
            }
            None => {
                let replication_factor = topic.partitions.values().next().map_or(1, |p| p.replicas.len() as i16);
                self.assign(image, current, added, replication_factor)?
            }
        };
        Ok(Self::partition_records(topic.topic_id, current, assignment))
    }

    async fn decide_alter_configs(
        self: &Arc<Self>,
        resource: ConfigResource,
        changes: Vec<(String, Option<String>)>,
        replace: bool,
        validate_only: bool,
    ) -> Result<Decided<WireResult<()>>, Refusal> {
        let deadline = default_deadline();
        let guard = self.lock_controller(deadline).await?;
        let image = self.image();
        let records = plan_configs(&image, resource, changes, replace)?;
        if validate_only || records.is_empty() {
            return Ok(Decided::new(Ok(())));
        }
        Ok(Decided::committed(Ok(()), self.commit(guard, records, deadline).await?))
    }

    async fn decide_register(
        self: &Arc<Self>,
        registration: BrokerRegistration,
    ) -> Result<Decided<WireResult<()>>, Refusal> {
        let deadline = default_deadline();
        let guard = self.lock_controller(deadline).await?;
        let image = self.image();
        if image.brokers.get(&registration.node_id).is_some_and(|b| b.same_process(&registration)) {
            // A retry. The broker waits until its image is as recent as this one.
            return Ok(Decided { result: Ok(()), index: Some(image.applied_index) });
        }
        // A new process (or a new address): registered fenced, unfenced once caught up.
        let registration = BrokerRegistration { fenced: true, in_controlled_shutdown: false, ..registration };
        let index = self.commit(guard, vec![MetadataRecord::RegisterBroker(registration)], deadline).await?;
        Ok(Decided::committed(Ok(()), index))
    }

    /// A broker's heartbeat (Kafka's BrokerHeartbeat): refreshes its session; unfences it once
    /// its image has caught up with its registration; runs its controlled shutdown.
    async fn decide_heartbeat(
        self: &Arc<Self>,
        heartbeat: Heartbeat,
    ) -> Result<Decided<WireResult<HeartbeatReply>>, Refusal> {
        if !self.metadata.is_leader() {
            return Err(Refusal::NotLeader);
        }
        let stale = |why: String| Err(Refusal::Failed(ApiError::with(ResponseError::StaleBrokerEpoch, why)));
        let current = |image: &MetadataImage| image.brokers.get(&heartbeat.node_id).cloned();
        let Some(registration) = current(&self.image()) else {
            return stale(format!("broker {} is not registered", heartbeat.node_id));
        };
        if registration.epoch != heartbeat.epoch {
            return stale(format!("broker epoch {} is not the current {}", heartbeat.epoch, registration.epoch));
        }
        self.heartbeats.record(self.metadata.quorum().term, heartbeat.node_id, Instant::now());
        let unfence = registration.fenced
            && !registration.in_controlled_shutdown
            && !heartbeat.want_shutdown
            && heartbeat.applied_index >= registration.epoch as u64;
        let shut_down = heartbeat.want_shutdown && !(registration.fenced && registration.in_controlled_shutdown);
        if !unfence && !shut_down {
            let reply = HeartbeatReply { fenced: registration.fenced, shutdown_ready: heartbeat.want_shutdown };
            return Ok(Decided::new(Ok(reply)));
        }
        let deadline = default_deadline();
        let guard = self.lock_controller(deadline).await?;
        let image = self.image();
        match current(&image) {
            Some(now) if now == registration => {}
            _ => return stale(format!("broker {} changed meanwhile", heartbeat.node_id)),
        }
        let (node_id, epoch) = (heartbeat.node_id, registration.epoch);
        let (records, reply) = if shut_down {
            let mut records = vec![MetadataRecord::ChangeBroker {
                node_id,
                epoch,
                fenced: Some(true),
                in_controlled_shutdown: Some(true),
            }];
            records.extend(plan_fence(&image, node_id));
            tracing::info!(
                node_id,
                moved = records.len() - 1,
                "controlled shutdown of a broker: leaderships moved off, fenced"
            );
            (records, HeartbeatReply { fenced: true, shutdown_ready: true })
        } else {
            let mut records = vec![MetadataRecord::ChangeBroker {
                node_id,
                epoch,
                fenced: Some(false),
                in_controlled_shutdown: None,
            }];
            records.extend(plan_unfence(&image, node_id));
            tracing::info!(node_id, "unfenced a broker that caught up with the metadata log");
            (records, HeartbeatReply { fenced: false, shutdown_ready: false })
        };
        Ok(Decided::committed(Ok(reply), self.commit(guard, records, deadline).await?))
    }

    /// Fences `node` (its session expired): its leaderships move to other in-sync replicas or
    /// the partitions go offline. Runs on the active controller only.
    pub(crate) async fn fence_broker(self: &Arc<Self>, node: NodeId) -> Result<(), ApiError> {
        let deadline = default_deadline();
        let guard = match self.lock_controller(deadline).await {
            Ok(guard) => guard,
            Err(Refusal::NotLeader) => return Ok(()),
            Err(Refusal::Failed(error)) => return Err(error),
        };
        let image = self.image();
        let Some(registration) = image.brokers.get(&node).filter(|b| !b.fenced) else { return Ok(()) };
        let mut records = vec![MetadataRecord::ChangeBroker {
            node_id: node,
            epoch: registration.epoch,
            fenced: Some(true),
            in_controlled_shutdown: None,
        }];
        records.extend(plan_fence(&image, node));
        tracing::warn!(
            node,
            session_timeout_ms = self.session_timeout().as_millis() as u64,
            "fenced a broker that sent no heartbeat within the session timeout"
        );
        match self.commit(guard, records, deadline).await {
            Ok(_) | Err(Refusal::NotLeader) => Ok(()),
            Err(Refusal::Failed(error)) => Err(error),
        }
    }

    async fn decide_producer_ids(
        self: &Arc<Self>,
        node_id: NodeId,
    ) -> Result<Decided<WireResult<(i64, i64)>>, Refusal> {
        let deadline = default_deadline();
        let guard = self.lock_controller(deadline).await?;
        let start = self.image().next_producer_id;
        let end = start
            .checked_add(PRODUCER_ID_BLOCK_SIZE)
            .ok_or_else(|| ApiError::with(ResponseError::UnknownServerError, "the producer id space is exhausted"))?;
        let record = MetadataRecord::ProducerIds { node_id, next_producer_id: end };
        Ok(Decided::committed(Ok((start, end)), self.commit(guard, vec![record], deadline).await?))
    }

    /// [`Broker::commit`] for a decision with one result per item: the items that were valid
    /// fail together when the commit does.
    async fn commit_each<T>(
        self: &Arc<Self>,
        guard: OwnedMutexGuard<()>,
        records: Vec<MetadataRecord>,
        deadline: Instant,
        results: Vec<WireResult<T>>,
    ) -> Result<Decided<Vec<WireResult<T>>>, Refusal> {
        match self.commit(guard, records, deadline).await {
            Ok(index) => Ok(Decided::committed(results, index)),
            Err(Refusal::NotLeader) => Err(Refusal::NotLeader),
            Err(Refusal::Failed(error)) => {
                let error = WireError::from(&error);
                Ok(Decided::new(results.into_iter().map(|r| r.and(Err(error.clone()))).collect()))
            }
        }
    }

    /// Takes the controller lock, waiting no later than `deadline` (REQUEST_TIMED_OUT then),
    /// and makes sure this node still leads and its image holds every committed entry.
    async fn lock_controller(&self, deadline: Instant) -> Result<OwnedMutexGuard<()>, Refusal> {
        let guard = tokio::time::timeout_at(deadline, Arc::clone(&self.controller).lock_owned())
            .await
            .map_err(|_| Refusal::Failed(timed_out("the controller did not become free")))?;
        let left = deadline.saturating_duration_since(Instant::now());
        match self.metadata.catch_up(left).await {
            Ok(()) => Ok(guard),
            Err(MetadataError::NotLeader { .. }) => Err(Refusal::NotLeader),
            Err(error) => Err(Refusal::Failed(controller_error(&error))),
        }
    }

    /// Proposes records, answering no later than `deadline` with the entry's log index. The
    /// proposal goes on after the deadline, holding `guard` until it commits or fails, so no
    /// decision is validated against an image that misses it.
    async fn commit(
        self: &Arc<Self>,
        guard: OwnedMutexGuard<()>,
        records: Vec<MetadataRecord>,
        deadline: Instant,
    ) -> Result<u64, Refusal> {
        let broker = Arc::clone(self);
        let commit = tokio::spawn(async move {
            let _guard = guard;
            let started = std::time::Instant::now();
            let index = broker.metadata.propose(records).await?;
            broker.metrics.metadata_commit_duration.observe(started.elapsed().as_secs_f64());
            Ok::<_, MetadataError>(index)
        });
        match tokio::time::timeout_at(deadline, commit).await {
            Ok(Ok(Ok(index))) => Ok(index),
            Ok(Ok(Err(MetadataError::NotLeader { .. }))) => Err(Refusal::NotLeader),
            Ok(Ok(Err(error))) => Err(Refusal::Failed(controller_error(&error))),
            Ok(Err(join)) => Err(Refusal::Failed(ApiError::with(
                ResponseError::UnknownServerError,
                format!("metadata commit: {join}"),
            ))),
            Err(_) => Err(Refusal::Failed(timed_out("the metadata change was not committed"))),
        }
    }
}

/// Validates config changes of one resource against `image` and returns their records.
fn plan_configs(
    image: &MetadataImage,
    resource: ConfigResource,
    changes: Vec<(String, Option<String>)>,
    replace: bool,
) -> Result<Vec<MetadataRecord>, ApiError> {
    let current: BTreeMap<String, String> = match &resource {
        ConfigResource::Topic(name) => image
            .topic(name)
            .ok_or_else(|| {
                ApiError::with(ResponseError::UnknownTopicOrPartition, format!("topic '{name}' does not exist"))
            })?
            .configs
            .clone(),
        ConfigResource::Broker(node) => {
            if node.is_some_and(|id| !image.brokers.contains_key(&id)) {
                return Err(ApiError::with(ResponseError::InvalidRequest, "unknown broker id"));
            }
            image.broker_configs.get(node).cloned().unwrap_or_default()
        }
    };
    for (name, value) in &changes {
        match &resource {
            ConfigResource::Topic(_) => {
                if let Some(value) = value {
                    validate_topic_config(name, value)?;
                } else if config::topic_def(name).is_none() {
                    return Err(ApiError::with(ResponseError::InvalidConfig, format!("unknown topic config {name}")));
                }
            }
            ConfigResource::Broker(_) => {
                let def = config::broker_def(name).ok_or_else(|| {
                    ApiError::with(ResponseError::InvalidConfig, format!("unknown broker config {name}"))
                })?;
                if !def.dynamic {
                    return Err(config_error(ConfigError::ReadOnly { name: name.clone() }));
                }
                if let Some(value) = value {
                    config::validate_value(name, def.kind, value).map_err(config_error)?;
                }
            }
        }
    }
    let mut records = Vec::new();
    if replace {
        for name in current.keys() {
            if !changes.iter().any(|(changed, _)| changed == name) {
                records.push(MetadataRecord::Config { resource: resource.clone(), name: name.clone(), value: None });
            }
        }
    }
    for (name, value) in changes {
        if value.is_none() && !current.contains_key(&name) {
            continue;
        }
        records.push(MetadataRecord::Config { resource: resource.clone(), name, value });
    }
    Ok(records)
}

/// What a broker asks the active controller to decide (carried over the controller listener).
#[derive(Debug, Serialize, Deserialize)]
enum ControllerRequest {
    CreateTopics {
        specs: Vec<TopicSpec>,
        validate_only: bool,
        timeout_ms: u64,
    },
    DeleteTopics {
        names: Vec<String>,
        timeout_ms: u64,
    },
    CreatePartitions {
        name: String,
        count: i32,
        assignments: Option<Vec<Vec<NodeId>>>,
        validate_only: bool,
        timeout_ms: u64,
    },
    AlterConfigs {
        resource: ConfigResource,
        changes: Vec<(String, Option<String>)>,
        replace: bool,
        validate_only: bool,
    },
    RegisterBroker(BrokerRegistration),
    AllocateProducerIds {
        node_id: NodeId,
    },
    DescribeQuorum,
    Heartbeat(Heartbeat),
}

/// A Kafka error as it travels between nodes.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct WireError {
    code: i16,
    message: Option<String>,
}

impl From<&ApiError> for WireError {
    fn from(error: &ApiError) -> Self {
        WireError { code: error.code(), message: error.message.clone() }
    }
}

impl From<WireError> for ApiError {
    fn from(error: WireError) -> Self {
        let code = ResponseError::try_from_code(error.code).unwrap_or(ResponseError::UnknownServerError);
        ApiError { code, message: error.message, record_errors: Vec::new() }
    }
}

type WireResult<T> = Result<T, WireError>;

/// The active controller's answer: the result and, when it committed a change, the log index
/// of that change.
#[derive(Debug, Serialize, Deserialize)]
struct Decided<T> {
    result: T,
    index: Option<u64>,
}

impl<T> Decided<T> {
    fn new(result: T) -> Self {
        Decided { result, index: None }
    }

    /// The answer to a change committed as log entry `index`.
    fn committed(result: T, index: u64) -> Self {
        Decided { result, index: Some(index) }
    }
}

/// Why a decision was not made: this node does not lead (any more; the asker finds the active
/// controller), or the request fails with an error.
enum Refusal {
    NotLeader,
    Failed(ApiError),
}

impl From<ApiError> for Refusal {
    fn from(error: ApiError) -> Self {
        Refusal::Failed(error)
    }
}

/// The decisions this node makes while it is the active controller, as the metadata store
/// serves them (to this broker and to the others).
pub struct Decider(pub std::sync::Weak<Broker>);

impl ControllerService for Decider {
    fn call(&self, request: serde_json::Value) -> CallFuture {
        let broker = self.0.upgrade();
        Box::pin(async move {
            let broker = broker.ok_or(CallError::NotReady)?;
            let request: ControllerRequest = serde_json::from_value(request)
                .map_err(|e| CallError::Failed(format!("undecodable controller request: {e}")))?;
            broker.decide(request).await
        })
    }
}

/// The Kafka error a broker answers when the metadata log or the active controller failed it.
fn controller_error(error: &MetadataError) -> ApiError {
    match error {
        MetadataError::Timeout { .. } => timed_out("no active controller decided"),
        MetadataError::Unanswered(_) => ApiError::with(ResponseError::RequestTimedOut, error.to_string()),
        _ => ApiError::with(ResponseError::UnknownServerError, format!("metadata log: {error}")),
    }
}

/// Milliseconds left until `deadline` (at least 1).
fn millis_until(deadline: Instant) -> u64 {
    (deadline.saturating_duration_since(Instant::now()).as_millis() as u64).max(1)
}

/// The deadline of a decision asked with `timeout_ms` left: a little earlier, so that the answer
/// (a timeout included) reaches the asker before it gives up.
fn decider_deadline(timeout_ms: u64) -> Instant {
    let timeout = Duration::from_millis(timeout_ms);
    Instant::now() + timeout - (timeout / 10).min(Duration::from_millis(100))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names() {
        for good in ["a", "topic-1", "my.topic_2", &"x".repeat(249)] {
            assert!(validate_topic_name(good).is_ok(), "{good}");
        }
        for bad in ["", ".", "..", "with space", "slash/", "ü", "__cluster_metadata", &"x".repeat(250)] {
            let error = validate_topic_name(bad).expect_err(bad);
            assert_eq!(error.code, ResponseError::InvalidTopicException);
        }
    }

    #[test]
    fn dot_and_underscore_collide() {
        let mut image = MetadataImage::default();
        image.apply(&MetadataRecord::Topic { name: "a.b".into(), topic_id: Uuid::new_v4() });
        assert_eq!(colliding_topic(&image, "a_b"), Some("a.b"));
        assert_eq!(colliding_topic(&image, "a.b"), None);
        assert_eq!(colliding_topic(&image, "a-b"), None);
    }
}
