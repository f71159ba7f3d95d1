//! The console's JSON endpoints (except the message browser, in `browse.rs`).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::incremental_alter_configs_request::{AlterConfigsResource, AlterableConfig};
use kafka_protocol::messages::{
    ConsumerGroupDescribeRequest, ConsumerProtocolAssignment, CreateTopicsRequest, DeleteTopicsRequest,
    DescribeConfigsRequest, DescribeGroupsRequest, GroupId, IncrementalAlterConfigsRequest, ListGroupsRequest,
    TopicName,
};
use kafka_protocol::protocol::Decodable;
use serde::Deserialize;
use serde_json::{json, Value};

use super::sampler::{self, SAMPLE_EVERY};
use super::{json, ApiError, Console};
use crate::broker::Broker;
use crate::handlers::{self, str_bytes};

/// Kafka's resource type code for topics.
const TOPIC_RESOURCE: i8 = 2;
/// How long CreateTopics/DeleteTopics may take, as Kafka's admin clients send it.
const ADMIN_TIMEOUT_MS: i32 = 30_000;
/// Limits on what a create or config request may carry.
const CONFIGS_PER_REQUEST_MAX: usize = 100;

pub async fn not_found() -> Response {
    ApiError {
        status: StatusCode::NOT_FOUND,
        error: "NOT_FOUND".into(),
        message: "There is no such API endpoint.".into(),
    }
    .into_response()
}

fn rates_json(rates: &[sampler::Rate]) -> Value {
    Value::Array(
        rates
            .iter()
            .map(|r| json!({ "at_ms": r.at_ms, "records_per_s": r.records_per_s, "bytes_per_s": r.bytes_per_s }))
            .collect(),
    )
}

/// Records held by a topic's partitions (high watermark minus log start, summed) and bytes on disk.
fn topic_size(broker: &Broker, name: &str, partitions: impl Iterator<Item = i32>) -> (i64, u64) {
    partitions.filter_map(|index| broker.replica(name, index)).fold((0, 0), |(records, bytes), p| {
        (records + (p.high_watermark() - p.log.log_start_offset()).max(0), bytes + p.log.size_bytes())
    })
}

pub async fn overview(State(console): State<Arc<Console>>) -> Result<Response, ApiError> {
    let broker = console.broker()?;
    let image = broker.image();
    let (mut topics, mut internal, mut partitions, mut records, mut bytes) = (0, 0, 0, 0i64, 0u64);
    for topic in image.topics.values() {
        if topic.is_internal() {
            internal += 1;
            continue;
        }
        topics += 1;
        partitions += topic.partitions.len();
        let (r, b) = topic_size(&broker, &topic.name, topic.partitions.keys().copied());
        records += r;
        bytes += b;
    }
    let groups = handlers::groups::list_groups(&broker, ListGroupsRequest::default(), 5).await.groups.len();
    let throughput = rates_json(&console.history().rates(None));
    let brokers: Vec<Value> = image
        .brokers
        .values()
        .map(|b| json!({ "node_id": b.node_id, "host": b.host, "port": b.port, "rack": b.rack, "fenced": b.fenced }))
        .collect();
    let quorum = broker.metadata.quorum();
    Ok(json(json!({
        "cluster_id": broker.cluster_id,
        "node_id": broker.node_id,
        "brokers": brokers,
        "quorum": {
            "leader": quorum.leader,
            "epoch": quorum.epoch(),
            "high_watermark": quorum.high_watermark(),
            "voters": quorum.voter_ids(),
        },
        "topics": topics,
        "internal_topics": internal,
        "partitions": partitions,
        "records": records,
        "bytes": bytes,
        "groups": groups,
        "sample_every_ms": SAMPLE_EVERY.as_millis() as u64,
        "throughput": throughput,
    })))
}

pub async fn topics(State(console): State<Arc<Console>>) -> Result<Response, ApiError> {
    let broker = console.broker()?;
    let image = broker.image();
    let history = console.history();
    let list: Vec<Value> = image
        .topics
        .values()
        .map(|topic| {
            let (records, bytes) = topic_size(&broker, &topic.name, topic.partitions.keys().copied());
            let rate = history.rates(Some(&topic.name)).last().copied();
            json!({
                "name": topic.name,
                "topic_id": topic.topic_id.to_string(),
                "internal": topic.is_internal(),
                "partitions": topic.partitions.len(),
                "replication_factor": topic.partitions.values().next().map_or(0, |p| p.replicas.len()),
                "records": records,
                "bytes": bytes,
                "records_per_s": rate.map_or(0.0, |r| r.records_per_s),
                "bytes_per_s": rate.map_or(0.0, |r| r.bytes_per_s),
            })
        })
        .collect();
    Ok(json(json!({ "topics": list })))
}

fn config_source(code: i8) -> &'static str {
    match code {
        1 => "topic",
        2 => "broker",
        3 => "cluster default",
        4 => "broker file",
        _ => "default",
    }
}

pub async fn topic(State(console): State<Arc<Console>>, Path(name): Path<String>) -> Result<Response, ApiError> {
    let broker = console.broker()?;
    let image = broker.image();
    let Some(topic) = image.topic(&name) else {
        return Err(unknown_topic(&name));
    };
    let partitions: Vec<Value> = topic
        .partitions
        .iter()
        .map(|(&index, state)| {
            let hosted = broker.replica(&name, index);
            json!({
                "partition": index,
                "leader": state.leader,
                "replicas": state.replicas,
                "isr": state.isr,
                "log_start_offset": hosted.as_ref().map(|p| p.log.log_start_offset()),
                "high_watermark": hosted.as_ref().map(|p| p.high_watermark()),
                "last_stable_offset": hosted.as_ref().map(|p| p.last_stable_offset()),
                "bytes": hosted.as_ref().map(|p| p.log.size_bytes()),
            })
        })
        .collect();
    let mut request = DescribeConfigsRequest::default();
    let mut resource = DescribeConfigsResource::default();
    resource.resource_type = TOPIC_RESOURCE;
    resource.resource_name = str_bytes(name.as_str());
    // `None`: every config (an empty list would ask for none).
    resource.configuration_keys = None;
    request.resources.push(resource);
    request.include_documentation = true;
    request.include_synonyms = false;
    let described = handlers::configs::describe(&broker, request, 4);
    let mut configs = Vec::new();
    for result in described.results {
        if result.error_code != 0 {
            return Err(ApiError::kafka(result.error_code, result.error_message.as_deref()));
        }
        for c in result.configs {
            configs.push(json!({
                "name": c.name.as_str(),
                "value": c.value.as_deref(),
                "source": config_source(c.config_source),
                "is_default": c.config_source == 5,
                "read_only": c.read_only,
                "sensitive": c.is_sensitive,
                "doc": c.documentation.as_deref(),
            }));
        }
    }
    let (records, bytes) = topic_size(&broker, &name, topic.partitions.keys().copied());
    let throughput = rates_json(&console.history().rates(Some(&name)));
    Ok(json(json!({
        "name": name,
        "topic_id": topic.topic_id.to_string(),
        "internal": topic.is_internal(),
        "replication_factor": topic.partitions.values().next().map_or(0, |p| p.replicas.len()),
        "records": records,
        "bytes": bytes,
        "partitions": partitions,
        "configs": configs,
        "throughput": throughput,
        "sample_every_ms": SAMPLE_EVERY.as_millis() as u64,
    })))
}

fn unknown_topic(name: &str) -> ApiError {
    ApiError::kafka(
        kafka_protocol::error::ResponseError::UnknownTopicOrPartition.code(),
        Some(&format!("topic '{name}' does not exist")),
    )
}

/// The body as JSON; a body over axum's limit (2 MiB) is refused from its length.
fn parse_body<T: serde::de::DeserializeOwned>(body: Result<Bytes, BytesRejection>) -> Result<T, ApiError> {
    let body = body.map_err(|rejection| {
        let status = rejection.status();
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError {
                status,
                error: "PAYLOAD_TOO_LARGE".into(),
                message: "The request body is larger than 2 MiB; send a smaller one.".into(),
            }
        } else {
            ApiError { status, error: "INVALID_REQUEST".into(), message: format!("{}.", rejection.body_text()) }
        }
    })?;
    serde_json::from_slice(&body)
        .map_err(|error| ApiError::bad_request(format!("The request body is not valid: {error}.")))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewTopic {
    name: String,
    #[serde(default = "one")]
    partitions: i32,
    #[serde(default = "one_short")]
    replication_factor: i16,
    #[serde(default)]
    configs: BTreeMap<String, String>,
}

fn one() -> i32 {
    1
}

fn one_short() -> i16 {
    1
}

pub async fn create_topic(
    State(console): State<Arc<Console>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let broker = console.broker()?;
    let new: NewTopic = parse_body(body)?;
    if new.configs.len() > CONFIGS_PER_REQUEST_MAX {
        return Err(ApiError::bad_request(format!("At most {CONFIGS_PER_REQUEST_MAX} configs per request.")));
    }
    let mut topic = CreatableTopic::default();
    topic.name = TopicName(str_bytes(new.name.as_str()));
    topic.num_partitions = new.partitions;
    topic.replication_factor = new.replication_factor;
    topic.configs = new
        .configs
        .into_iter()
        .map(|(name, value)| {
            let mut config = CreatableTopicConfig::default();
            config.name = str_bytes(name);
            config.value = Some(str_bytes(value));
            config
        })
        .collect();
    let mut request = CreateTopicsRequest::default();
    request.topics.push(topic);
    request.timeout_ms = ADMIN_TIMEOUT_MS;
    let response = handlers::admin::create_topics(&broker, request, 7).await;
    let Some(result) = response.topics.into_iter().next() else {
        return Err(ApiError::kafka(-1, None));
    };
    if result.error_code != 0 {
        return Err(ApiError::kafka(result.error_code, result.error_message.as_deref()));
    }
    Ok(json(json!({
        "name": result.name.0.as_str(),
        "topic_id": result.topic_id.to_string(),
        "partitions": result.num_partitions,
        "replication_factor": result.replication_factor,
    })))
}

pub async fn delete_topic(State(console): State<Arc<Console>>, Path(name): Path<String>) -> Result<Response, ApiError> {
    let broker = console.broker()?;
    let mut state = DeleteTopicState::default();
    state.name = Some(TopicName(str_bytes(name.as_str())));
    let mut request = DeleteTopicsRequest::default();
    request.topics.push(state);
    request.timeout_ms = ADMIN_TIMEOUT_MS;
    let response = handlers::admin::delete_topics(&broker, request, 6).await;
    let Some(result) = response.responses.into_iter().next() else {
        return Err(ApiError::kafka(-1, None));
    };
    if result.error_code != 0 {
        return Err(ApiError::kafka(result.error_code, result.error_message.as_deref()));
    }
    Ok(json(json!({ "deleted": name })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigChanges {
    #[serde(default)]
    set: BTreeMap<String, String>,
    #[serde(default)]
    delete: Vec<String>,
}

/// IncrementalAlterConfigs: `set` (operation SET) and `delete` (operation DELETE, back to the
/// inherited value).
pub async fn alter_configs(
    State(console): State<Arc<Console>>,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let broker = console.broker()?;
    let changes: ConfigChanges = parse_body(body)?;
    if changes.set.len() + changes.delete.len() > CONFIGS_PER_REQUEST_MAX {
        return Err(ApiError::bad_request(format!("At most {CONFIGS_PER_REQUEST_MAX} configs per request.")));
    }
    if changes.set.is_empty() && changes.delete.is_empty() {
        return Err(ApiError::bad_request("Nothing to change: give configs to set or to delete."));
    }
    if broker.image().topic(&name).is_none() {
        return Err(unknown_topic(&name));
    }
    let mut resource = AlterConfigsResource::default();
    resource.resource_type = TOPIC_RESOURCE;
    resource.resource_name = str_bytes(name.as_str());
    for (key, value) in changes.set {
        let mut config = AlterableConfig::default();
        config.name = str_bytes(key);
        config.config_operation = 0;
        config.value = Some(str_bytes(value));
        resource.configs.push(config);
    }
    for key in changes.delete {
        let mut config = AlterableConfig::default();
        config.name = str_bytes(key);
        config.config_operation = 1;
        resource.configs.push(config);
    }
    let mut request = IncrementalAlterConfigsRequest::default();
    request.resources.push(resource);
    let response = handlers::configs::incremental_alter(&broker, request).await;
    if let Some(result) = response.responses.into_iter().find(|r| r.error_code != 0) {
        return Err(ApiError::kafka(result.error_code, result.error_message.as_deref()));
    }
    Ok(json(json!({ "altered": name })))
}

/// A group as the console shows it, from DescribeGroups (classic) or ConsumerGroupDescribe.
struct Described {
    state: String,
    protocol: String,
    members: Vec<Value>,
}

async fn describe_group(broker: &Arc<Broker>, id: &str, group_type: &str) -> Result<Described, ApiError> {
    if group_type.eq_ignore_ascii_case("consumer") {
        let mut request = ConsumerGroupDescribeRequest::default();
        request.group_ids.push(GroupId(str_bytes(id)));
        let response = handlers::groups::consumer_group_describe(broker, request, 1).await;
        let group = response.groups.into_iter().next().ok_or_else(|| ApiError::kafka(-1, None))?;
        if group.error_code != 0 {
            return Err(ApiError::kafka(group.error_code, group.error_message.as_deref()));
        }
        let members = group
            .members
            .iter()
            .map(|m| {
                let assignment: Vec<Value> = m
                    .assignment
                    .topic_partitions
                    .iter()
                    .map(|t| json!({ "topic": t.topic_name.0.as_str(), "partitions": t.partitions }))
                    .collect();
                json!({
                    "member_id": m.member_id.as_str(),
                    "instance_id": m.instance_id.as_deref(),
                    "client_id": m.client_id.as_str(),
                    "host": m.client_host.as_str(),
                    "assignment": assignment,
                })
            })
            .collect();
        return Ok(Described {
            state: group.group_state.to_string(),
            protocol: format!("consumer (KIP-848), assignor {}", group.assignor_name.as_str()),
            members,
        });
    }
    let mut request = DescribeGroupsRequest::default();
    request.groups.push(GroupId(str_bytes(id)));
    let response = handlers::groups::describe_groups(broker, request, 5).await;
    let group = response.groups.into_iter().next().ok_or_else(|| ApiError::kafka(-1, None))?;
    if group.error_code != 0 {
        return Err(ApiError::kafka(group.error_code, group.error_message.as_deref()));
    }
    let is_consumer = group.protocol_type.as_str() == "consumer";
    let members = group
        .members
        .iter()
        .map(|m| {
            let assignment: Vec<Value> =
                if is_consumer { classic_assignment(&m.member_assignment) } else { Vec::new() };
            json!({
                "member_id": m.member_id.as_str(),
                "instance_id": m.group_instance_id.as_deref(),
                "client_id": m.client_id.as_str(),
                "host": m.client_host.as_str(),
                "assignment": assignment,
            })
        })
        .collect();
    let protocol = match (group.protocol_type.as_str(), group.protocol_data.as_str()) {
        ("", _) => "classic".to_string(),
        (kind, "") => format!("classic ({kind})"),
        (kind, assignor) => format!("classic ({kind}), assignor {assignor}"),
    };
    Ok(Described { state: group.group_state.to_string(), protocol, members })
}

/// A classic consumer's assignment (Kafka's ConsumerProtocolAssignment); empty when the
/// member's bytes are not one.
fn classic_assignment(bytes: &Bytes) -> Vec<Value> {
    let mut buf = bytes.clone();
    if buf.len() < 2 {
        return Vec::new();
    }
    let version = i16::from_be_bytes([buf[0], buf[1]]).clamp(0, 3);
    let _ = bytes::Buf::get_i16(&mut buf);
    match ConsumerProtocolAssignment::decode(&mut buf, version) {
        Ok(assignment) => assignment
            .assigned_partitions
            .iter()
            .map(|t| json!({ "topic": t.topic.0.as_str(), "partitions": t.partitions }))
            .collect(),
        Err(_) => Vec::new(),
    }
}

pub async fn groups(State(console): State<Arc<Console>>) -> Result<Response, ApiError> {
    let broker = console.broker()?;
    let listed = handlers::groups::list_groups(&broker, ListGroupsRequest::default(), 5).await;
    let mut out = Vec::new();
    for group in listed.groups.iter().take(500) {
        let id = group.group_id.0.as_str();
        let lags = sampler::committed_lags(&broker, id).await;
        let members = describe_group(&broker, id, group.group_type.as_str()).await.map_or(0, |d| d.members.len());
        out.push(json!({
            "group_id": id,
            "type": group.group_type.as_str(),
            "state": group.group_state.as_str(),
            "members": members,
            "topics": lags.iter().map(|l| l.topic.as_str()).collect::<std::collections::BTreeSet<_>>(),
            "lag": lags.iter().map(|l| l.lag).sum::<i64>(),
        }));
    }
    Ok(json(json!({ "groups": out })))
}

pub async fn group(State(console): State<Arc<Console>>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let broker = console.broker()?;
    let listed = handlers::groups::list_groups(&broker, ListGroupsRequest::default(), 5).await;
    let Some(listing) = listed.groups.iter().find(|g| g.group_id.0.as_str() == id) else {
        return Err(ApiError::kafka(
            kafka_protocol::error::ResponseError::GroupIdNotFound.code(),
            Some(&format!("group '{id}' does not exist")),
        ));
    };
    let described = describe_group(&broker, &id, listing.group_type.as_str()).await?;
    let offsets: Vec<Value> = sampler::committed_lags(&broker, &id)
        .await
        .into_iter()
        .map(|l| {
            json!({
                "topic": l.topic,
                "partition": l.partition,
                "committed_offset": l.committed,
                "high_watermark": l.high_watermark,
                "lag": l.lag,
            })
        })
        .collect();
    let history: Vec<Value> = console
        .history()
        .lag_history(&id)
        .into_iter()
        .map(|sample| {
            let partitions: serde_json::Map<String, Value> = sample
                .lags
                .iter()
                .map(|(topic, partition, lag)| (format!("{topic}-{partition}"), json!(lag)))
                .collect();
            json!({
                "at_ms": sample.at_ms,
                "total": sample.lags.iter().map(|l| l.2).sum::<i64>(),
                "partitions": partitions,
            })
        })
        .collect();
    Ok(json(json!({
        "group_id": id,
        "type": listing.group_type.as_str(),
        "state": described.state,
        "protocol": described.protocol,
        "members": described.members,
        "offsets": offsets,
        "lag_history": history,
        "sample_every_ms": SAMPLE_EVERY.as_millis() as u64,
    })))
}
