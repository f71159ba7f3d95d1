//! DescribeConfigs, AlterConfigs and IncrementalAlterConfigs for topics and brokers.

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
};
use kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse as IncrementalResult;
use kafka_protocol::messages::{
    AlterConfigsRequest, AlterConfigsResponse, DescribeConfigsRequest, DescribeConfigsResponse,
    IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse,
};
use kafka_protocol::protocol::StrBytes;
use keel_cluster::ConfigResource;

use super::str_bytes;
use crate::broker::Broker;
use crate::config::{self, ConfigSource, ConfigType, Resolved, BROKER_CONFIGS, TOPIC_CONFIGS};
use crate::error::ApiError;

/// Kafka's resource type codes.
const TOPIC: i8 = 2;
const BROKER: i8 = 4;

fn resource(broker: &Broker, resource_type: i8, name: &str) -> Result<ConfigResource, ApiError> {
    match resource_type {
        TOPIC => Ok(ConfigResource::Topic(name.to_string())),
        BROKER if name.is_empty() => Ok(ConfigResource::Broker(None)),
        BROKER => match name.parse::<i32>() {
            Ok(id) if id == broker.node_id => Ok(ConfigResource::Broker(Some(id))),
            _ => Err(ApiError::with(
                ResponseError::InvalidRequest,
                format!("unexpected broker id {name:?}, expected {} or the empty string", broker.node_id),
            )),
        },
        other => Err(ApiError::with(
            ResponseError::InvalidRequest,
            format!("resource type {other} is not supported; use 2 (topic) or 4 (broker)"),
        )),
    }
}

struct Entry {
    name: &'static str,
    kind: ConfigType,
    read_only: bool,
    doc: &'static str,
    layers: Vec<Resolved>,
}

pub fn describe(broker: &Arc<Broker>, request: DescribeConfigsRequest, version: i16) -> DescribeConfigsResponse {
    let image = broker.image();
    let view = broker.config(&image);
    let mut response = DescribeConfigsResponse::default();
    for wanted in request.resources {
        let mut result = DescribeConfigsResult::default();
        result.resource_type = wanted.resource_type;
        result.resource_name = wanted.resource_name.clone();
        let entries: Result<Vec<Entry>, ApiError> = resource(broker, wanted.resource_type, &wanted.resource_name)
            .and_then(|resource| match resource {
                ConfigResource::Topic(name) => {
                    if image.topic(&name).is_none() {
                        return Err(ApiError::with(
                            ResponseError::UnknownTopicOrPartition,
                            format!("topic '{name}' does not exist"),
                        ));
                    }
                    Ok(TOPIC_CONFIGS
                        .iter()
                        .map(|def| Entry {
                            name: def.name,
                            kind: def.kind,
                            read_only: false,
                            doc: def.doc,
                            layers: view.topic_layers(&name, def.name),
                        })
                        .collect())
                }
                ConfigResource::Broker(Some(_)) => Ok(BROKER_CONFIGS
                    .iter()
                    .map(|def| Entry {
                        name: def.name,
                        kind: def.kind,
                        read_only: !def.dynamic,
                        doc: def.doc,
                        layers: view.broker_layers(def.name),
                    })
                    .collect()),
                // The cluster-wide default: only what is set dynamically for every broker.
                ConfigResource::Broker(None) => Ok(BROKER_CONFIGS
                    .iter()
                    .filter_map(|def| {
                        let value = image.broker_configs.get(&None)?.get(def.name)?;
                        Some(Entry {
                            name: def.name,
                            kind: def.kind,
                            read_only: !def.dynamic,
                            doc: def.doc,
                            layers: vec![Resolved {
                                name: def.name.into(),
                                value: Some(value.clone()),
                                source: ConfigSource::DynamicDefaultBrokerConfig,
                            }],
                        })
                    })
                    .collect()),
            });
        match entries {
            Ok(entries) => {
                let keys: Option<Vec<String>> =
                    wanted.configuration_keys.map(|keys| keys.iter().map(|k| k.to_string()).collect());
                result.configs = entries
                    .into_iter()
                    .filter(|e| keys.as_ref().is_none_or(|keys| keys.iter().any(|k| k == e.name)))
                    .map(|e| describe_entry(e, request.include_synonyms, request.include_documentation, version))
                    .collect();
            }
            Err(error) => {
                result.error_code = error.code();
                result.error_message = error.message.map(str_bytes);
            }
        }
        response.results.push(result);
    }
    response
}

fn describe_entry(
    entry: Entry,
    include_synonyms: bool,
    include_documentation: bool,
    version: i16,
) -> DescribeConfigsResourceResult {
    let sensitive = entry.kind == ConfigType::Password;
    let mut out = DescribeConfigsResourceResult::default();
    out.name = str_bytes(entry.name);
    let top = entry.layers.first();
    out.value = if sensitive { None } else { top.and_then(|l| l.value.clone()).map(str_bytes) };
    out.config_source = top.map_or(ConfigSource::DefaultConfig, |l| l.source) as i8;
    out.read_only = entry.read_only;
    out.is_sensitive = sensitive;
    if include_synonyms {
        out.synonyms = entry
            .layers
            .iter()
            .map(|layer| {
                let mut synonym = DescribeConfigsSynonym::default();
                synonym.name = str_bytes(layer.name.clone());
                synonym.value = if sensitive { None } else { layer.value.clone().map(str_bytes) };
                synonym.source = layer.source as i8;
                synonym
            })
            .collect();
    }
    if version >= 3 {
        out.config_type = entry.kind as i8;
        if include_documentation {
            out.documentation = Some(str_bytes(entry.doc));
        }
    }
    out
}

pub async fn alter(broker: &Arc<Broker>, request: AlterConfigsRequest) -> AlterConfigsResponse {
    let mut response = AlterConfigsResponse::default();
    for wanted in request.resources {
        let changes =
            wanted.configs.into_iter().map(|c| (c.name.to_string(), c.value.map(|v| v.to_string()))).collect();
        let result = match resource(broker, wanted.resource_type, &wanted.resource_name) {
            Ok(resource) => broker.alter_configs(resource, changes, true, request.validate_only).await,
            Err(error) => Err(error),
        };
        let mut out = AlterConfigsResourceResponse::default();
        out.resource_type = wanted.resource_type;
        out.resource_name = wanted.resource_name;
        if let Err(error) = result {
            out.error_code = error.code();
            out.error_message = error.message.map(str_bytes);
        }
        response.responses.push(out);
    }
    response
}

/// IncrementalAlterConfigs operations (KIP-339).
const SET: i8 = 0;
const DELETE: i8 = 1;
const APPEND: i8 = 2;
const SUBTRACT: i8 = 3;

pub async fn incremental_alter(
    broker: &Arc<Broker>,
    request: IncrementalAlterConfigsRequest,
) -> IncrementalAlterConfigsResponse {
    let mut response = IncrementalAlterConfigsResponse::default();
    for wanted in request.resources {
        let result = match resource(broker, wanted.resource_type, &wanted.resource_name) {
            Ok(resource) => {
                let image = broker.image();
                let view = broker.config(&image);
                let current = |name: &str| match &resource {
                    ConfigResource::Topic(topic) => view.topic(topic, name),
                    ConfigResource::Broker(_) => view.broker(name),
                };
                let kind = |name: &str| match &resource {
                    ConfigResource::Topic(_) => config::topic_def(name).map(|d| d.kind),
                    ConfigResource::Broker(_) => config::broker_def(name).map(|d| d.kind),
                };
                let changes: Result<Vec<_>, ApiError> = wanted
                    .configs
                    .iter()
                    .map(|c| {
                        let name = c.name.to_string();
                        let value = c.value.as_ref().map(StrBytes::to_string);
                        match c.config_operation {
                            SET => Ok((name, value)),
                            DELETE => Ok((name, None)),
                            APPEND | SUBTRACT => {
                                if kind(&name) != Some(ConfigType::List) {
                                    return Err(ApiError::with(
                                        ResponseError::InvalidConfig,
                                        format!("config {name} is not a list; APPEND and SUBTRACT apply to lists only"),
                                    ));
                                }
                                let mut items: Vec<String> = current(&name)
                                    .map(|v| {
                                        v.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect()
                                    })
                                    .unwrap_or_default();
                                for item in value.iter().flat_map(|v| v.split(',')).map(str::trim) {
                                    if c.config_operation == APPEND {
                                        if !items.iter().any(|i| i == item) {
                                            items.push(item.to_string());
                                        }
                                    } else {
                                        items.retain(|i| i != item);
                                    }
                                }
                                Ok((name, Some(items.join(","))))
                            }
                            other => Err(ApiError::with(
                                ResponseError::InvalidRequest,
                                format!("unknown config operation {other}"),
                            )),
                        }
                    })
                    .collect();
                match changes {
                    Ok(changes) => broker.alter_configs(resource, changes, false, request.validate_only).await,
                    Err(error) => Err(error),
                }
            }
            Err(error) => Err(error),
        };
        let mut out = IncrementalResult::default();
        out.resource_type = wanted.resource_type;
        out.resource_name = wanted.resource_name;
        if let Err(error) = result {
            out.error_code = error.code();
            out.error_message = error.message.map(str_bytes);
        }
        response.responses.push(out);
    }
    response
}
