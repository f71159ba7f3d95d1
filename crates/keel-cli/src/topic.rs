//! `keel topic create|delete|list|describe|alter-config|add-partitions|trim`.

use std::collections::{BTreeMap, HashMap};

use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::delete_records_request::{DeleteRecordsPartition, DeleteRecordsTopic};
use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::incremental_alter_configs_request::{AlterConfigsResource, AlterableConfig};
use kafka_protocol::messages::{
    CreatePartitionsRequest, CreateTopicsRequest, DeleteRecordsRequest, DeleteTopicsRequest, DescribeConfigsRequest,
    IncrementalAlterConfigsRequest,
};
use serde_json::json;

use crate::client::{name, str_bytes, Client};
use crate::error::{check, exit, CliError};
use crate::offsets::{self, EARLIEST, LATEST, READ_COMMITTED, READ_UNCOMMITTED};
use crate::output::{emit, ids, table};
use crate::{connect, Format, TopicArgs, TopicCommand};

const TOPIC_RESOURCE: i8 = 2;
const REQUEST_TIMEOUT_MS: i32 = 30_000;

pub async fn run(args: TopicArgs) -> Result<u8, CliError> {
    let format = args.common.format;
    // Check the arguments before connecting.
    if let TopicCommand::AlterConfig { set, delete, .. } = &args.command {
        if set.is_empty() && delete.is_empty() {
            return Err(CliError::Usage("nothing to change: give --set KEY=VALUE or --delete KEY".to_string()));
        }
        for pair in set {
            key_value(pair, "--set")?;
        }
    }
    if let TopicCommand::Create { configs, .. } = &args.command {
        for pair in configs {
            key_value(pair, "--config")?;
        }
    }
    let mut client = connect(&args.common).await?;
    match args.command {
        TopicCommand::Create { topic, partitions, replication_factor, configs, if_not_exists } => {
            create(&mut client, format, &topic, partitions, replication_factor, &configs, if_not_exists).await
        }
        TopicCommand::Delete { topics, if_exists } => delete(&mut client, format, &topics, if_exists).await,
        TopicCommand::List { internal } => list(&mut client, format, internal).await,
        TopicCommand::Describe { topic, all_configs } => describe(&mut client, format, &topic, all_configs).await,
        TopicCommand::AlterConfig { topic, set, delete } => {
            alter_config(&mut client, format, &topic, &set, &delete).await
        }
        TopicCommand::AddPartitions { topic, partitions } => {
            add_partitions(&mut client, format, &topic, partitions).await
        }
        TopicCommand::Trim { topic, partition, before } => trim(&mut client, format, &topic, partition, before).await,
    }
}

fn key_value<'a>(pair: &'a str, flag: &str) -> Result<(&'a str, &'a str), CliError> {
    match pair.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key, value)),
        _ => Err(CliError::Usage(format!("{flag} {pair:?} must be KEY=VALUE, e.g. {flag} retention.ms=86400000"))),
    }
}

async fn create(
    client: &mut Client,
    format: Format,
    topic: &str,
    partitions: Option<i32>,
    replication_factor: Option<i16>,
    configs: &[String],
    if_not_exists: bool,
) -> Result<u8, CliError> {
    let (version, response) = client
        .any()
        .request(2..=7, |_| {
            let mut wanted = CreatableTopic::default();
            wanted.name = name(topic);
            wanted.num_partitions = partitions.unwrap_or(-1);
            wanted.replication_factor = replication_factor.unwrap_or(-1);
            wanted.configs = configs
                .iter()
                .filter_map(|pair| pair.split_once('='))
                .map(|(key, value)| {
                    let mut config = CreatableTopicConfig::default();
                    config.name = str_bytes(key);
                    config.value = Some(str_bytes(value));
                    config
                })
                .collect();
            let mut request = CreateTopicsRequest::default();
            request.topics = vec![wanted];
            request.timeout_ms = REQUEST_TIMEOUT_MS;
            request
        })
        .await?;
    let result =
        response.topics.first().ok_or_else(|| CliError::Protocol("CreateTopics answered no topic".to_string()))?;
    if result.error_code == 36 && if_not_exists {
        let text = format!("topic {topic:?} already exists\n");
        emit(format, &text, &json!({ "topic": topic, "created": false }))?;
        return Ok(exit::OK);
    }
    check(|| format!("cannot create topic {topic:?}"), result.error_code, result.error_message.as_ref())?;
    let (partitions, replication_factor) = if version >= 5 {
        (result.num_partitions, result.replication_factor as i32)
    } else {
        let info = offsets::topic(client, topic, false, "cannot describe topic").await?;
        (info.partitions.len() as i32, info.partitions.first().map_or(0, |p| p.replicas.len() as i32))
    };
    let text = format!("created topic {topic:?}: {partitions} partitions, replication factor {replication_factor}\n");
    let json = json!({
        "topic": topic,
        "created": true,
        "partitions": partitions,
        "replication_factor": replication_factor,
    });
    emit(format, &text, &json)?;
    Ok(exit::OK)
}

async fn delete(client: &mut Client, format: Format, topics: &[String], if_exists: bool) -> Result<u8, CliError> {
    let (_, response) = client
        .any()
        .request(1..=6, |version| {
            let mut request = DeleteTopicsRequest::default();
            if version >= 6 {
                request.topics = topics
                    .iter()
                    .map(|topic| {
                        let mut state = DeleteTopicState::default();
                        state.name = Some(name(topic));
                        state
                    })
                    .collect();
            } else {
                request.topic_names = topics.iter().map(|t| name(t)).collect();
            }
            request.timeout_ms = REQUEST_TIMEOUT_MS;
            request
        })
        .await?;
    let mut text = String::new();
    let mut results = Vec::new();
    let mut first_error = None;
    for result in &response.responses {
        let topic = result.name.as_ref().map(|n| n.0.to_string()).unwrap_or_default();
        match result.error_code {
            0 => {
                text.push_str(&format!("deleted topic {topic:?}\n"));
                results.push(json!({ "topic": topic, "deleted": true }));
            }
            3 if if_exists => {
                text.push_str(&format!("topic {topic:?} does not exist\n"));
                results.push(json!({ "topic": topic, "deleted": false }));
            }
            code => {
                if first_error.is_none() {
                    first_error = Some(CliError::broker(
                        format!("cannot delete topic {topic:?}"),
                        code,
                        result.error_message.as_ref().map(|m| m.to_string()),
                    ));
                }
            }
        }
    }
    emit(format, &text, &json!(results))?;
    match first_error {
        Some(error) => Err(error),
        None => Ok(exit::OK),
    }
}

async fn list(client: &mut Client, format: Format, internal: bool) -> Result<u8, CliError> {
    let (_, metadata) = client.metadata(None, false).await?;
    let topics: Vec<_> = offsets::topics(&metadata).into_iter().filter(|t| internal || !t.internal).collect();
    let rows: Vec<Vec<String>> = topics
        .iter()
        .map(|t| {
            vec![
                t.name.clone(),
                t.partitions.len().to_string(),
                t.partitions.first().map_or(0, |p| p.replicas.len()).to_string(),
            ]
        })
        .collect();
    let text = table(&["TOPIC", "PARTITIONS", "REPLICATION-FACTOR"], &rows);
    let json: Vec<_> = topics
        .iter()
        .map(|t| {
            json!({
                "topic": t.name,
                "partitions": t.partitions.len(),
                "replication_factor": t.partitions.first().map_or(0, |p| p.replicas.len()),
                "internal": t.internal,
            })
        })
        .collect();
    emit(format, &text, &json!(json))?;
    Ok(exit::OK)
}

/// Kafka's names for DescribeConfigs sources.
pub fn source_name(source: i8) -> &'static str {
    match source {
        1 => "DYNAMIC_TOPIC_CONFIG",
        2 => "DYNAMIC_BROKER_CONFIG",
        3 => "DYNAMIC_DEFAULT_BROKER_CONFIG",
        4 => "STATIC_BROKER_CONFIG",
        5 => "DEFAULT_CONFIG",
        6 => "DYNAMIC_BROKER_LOGGER_CONFIG",
        7 => "CLIENT_METRICS_CONFIG",
        8 => "GROUP_CONFIG",
        _ => "UNKNOWN",
    }
}

async fn describe(client: &mut Client, format: Format, topic: &str, all_configs: bool) -> Result<u8, CliError> {
    let info = offsets::topic(client, topic, false, "cannot describe topic").await?;
    let (_, response) = client
        .any()
        .request(1..=4, |_| {
            let mut resource = DescribeConfigsResource::default();
            resource.resource_type = TOPIC_RESOURCE;
            resource.resource_name = str_bytes(topic);
            resource.configuration_keys = None;
            let mut request = DescribeConfigsRequest::default();
            request.resources = vec![resource];
            request
        })
        .await?;
    let result = response
        .results
        .first()
        .ok_or_else(|| CliError::Protocol("DescribeConfigs answered no resource".to_string()))?;
    check(
        || format!("cannot describe the configs of topic {topic:?}"),
        result.error_code,
        result.error_message.as_ref(),
    )?;
    let mut configs: Vec<(String, Option<String>, &'static str, bool)> = result
        .configs
        .iter()
        .filter(|c| all_configs || c.config_source != 5)
        .map(|c| {
            (c.name.to_string(), c.value.as_ref().map(|v| v.to_string()), source_name(c.config_source), c.is_sensitive)
        })
        .collect();
    configs.sort();

    let leaders = offsets::leaders(&info);
    let wanted: Vec<(String, i32)> =
        info.partitions.iter().filter(|p| p.leader >= 0).map(|p| (info.name.clone(), p.partition)).collect();
    let starts = offsets::list_offsets(client, &leaders, &wanted, EARLIEST, READ_UNCOMMITTED).await?;
    let ends = offsets::list_offsets(client, &leaders, &wanted, LATEST, READ_UNCOMMITTED).await?;
    let stables = offsets::list_offsets(client, &leaders, &wanted, LATEST, READ_COMMITTED).await?;
    let offset = |map: &BTreeMap<(String, i32), i64>, partition: i32| map.get(&(info.name.clone(), partition)).copied();
    let show = |value: Option<i64>| value.map_or("-".to_string(), |v| v.to_string());

    let replication_factor = info.partitions.first().map_or(0, |p| p.replicas.len());
    let mut text = format!(
        "Topic:               {}\nTopic id:            {}\nPartitions:          {}\nReplication factor:  {}\n",
        info.name,
        info.topic_id,
        info.partitions.len(),
        replication_factor
    );
    if configs.is_empty() {
        text.push_str("Configs:             all defaults (--all-configs lists them)\n");
    } else {
        text.push_str("Configs:\n");
        let width = configs.iter().map(|(name, ..)| name.len()).max().unwrap_or(0);
        for (name, value, source, sensitive) in &configs {
            let value =
                if *sensitive { "(sensitive)".to_string() } else { value.clone().unwrap_or_else(|| "null".into()) };
            text.push_str(&format!("  {name:width$} = {value}  ({source})\n"));
        }
    }
    text.push('\n');
    let rows: Vec<Vec<String>> = info
        .partitions
        .iter()
        .map(|p| {
            vec![
                p.partition.to_string(),
                p.leader.to_string(),
                ids(&p.replicas),
                ids(&p.isr),
                show(offset(&starts, p.partition)),
                show(offset(&ends, p.partition)),
                show(offset(&stables, p.partition)),
            ]
        })
        .collect();
    text.push_str(&table(&["PARTITION", "LEADER", "REPLICAS", "ISR", "LOG-START", "HIGH-WATERMARK", "LSO"], &rows));

    let json = json!({
        "topic": info.name,
        "topic_id": info.topic_id,
        "internal": info.internal,
        "partition_count": info.partitions.len(),
        "replication_factor": replication_factor,
        "configs": configs.iter().map(|(name, value, source, sensitive)| json!({
            "name": name, "value": value, "source": source, "sensitive": sensitive,
        })).collect::<Vec<_>>(),
        "partitions": info.partitions.iter().map(|p| json!({
            "partition": p.partition,
            "leader": p.leader,
            "replicas": p.replicas,
            "isr": p.isr,
            "offline_replicas": p.offline,
            "log_start_offset": offset(&starts, p.partition),
            "high_watermark": offset(&ends, p.partition),
            "last_stable_offset": offset(&stables, p.partition),
        })).collect::<Vec<_>>(),
    });
    emit(format, &text, &json)?;
    Ok(exit::OK)
}

async fn alter_config(
    client: &mut Client,
    format: Format,
    topic: &str,
    set: &[String],
    delete: &[String],
) -> Result<u8, CliError> {
    let pairs: Vec<(&str, &str)> = set.iter().map(|pair| key_value(pair, "--set")).collect::<Result<_, _>>()?;
    let (_, response) = client
        .any()
        .request(0..=1, |_| {
            let mut configs = Vec::new();
            for (key, value) in &pairs {
                let mut config = AlterableConfig::default();
                config.name = str_bytes(key);
                config.config_operation = 0; // SET
                config.value = Some(str_bytes(value));
                configs.push(config);
            }
            for key in delete {
                let mut config = AlterableConfig::default();
                config.name = str_bytes(key);
                config.config_operation = 1; // DELETE
                config.value = None;
                configs.push(config);
            }
            let mut resource = AlterConfigsResource::default();
            resource.resource_type = TOPIC_RESOURCE;
            resource.resource_name = str_bytes(topic);
            resource.configs = configs;
            let mut request = IncrementalAlterConfigsRequest::default();
            request.resources = vec![resource];
            request
        })
        .await?;
    let result = response
        .responses
        .first()
        .ok_or_else(|| CliError::Protocol("IncrementalAlterConfigs answered no resource".to_string()))?;
    check(|| format!("cannot alter the configs of topic {topic:?}"), result.error_code, result.error_message.as_ref())?;
    let mut text = format!("updated topic {topic:?}:");
    for (key, value) in &pairs {
        text.push_str(&format!(" set {key}={value};"));
    }
    for key in delete {
        text.push_str(&format!(" deleted {key};"));
    }
    text.pop();
    text.push('\n');
    let set_json: BTreeMap<&str, &str> = pairs.iter().copied().collect();
    emit(format, &text, &json!({ "topic": topic, "set": set_json, "deleted": delete }))?;
    Ok(exit::OK)
}

async fn add_partitions(client: &mut Client, format: Format, topic: &str, partitions: i32) -> Result<u8, CliError> {
    let (_, response) = client
        .any()
        .request(0..=3, |_| {
            let mut wanted = CreatePartitionsTopic::default();
            wanted.name = name(topic);
            wanted.count = partitions;
            wanted.assignments = None;
            let mut request = CreatePartitionsRequest::default();
            request.topics = vec![wanted];
            request.timeout_ms = REQUEST_TIMEOUT_MS;
            request
        })
        .await?;
    let result =
        response.results.first().ok_or_else(|| CliError::Protocol("CreatePartitions answered no topic".to_string()))?;
    check(|| format!("cannot add partitions to topic {topic:?}"), result.error_code, result.error_message.as_ref())?;
    let text = format!("topic {topic:?} now has {partitions} partitions\n");
    emit(format, &text, &json!({ "topic": topic, "partitions": partitions }))?;
    Ok(exit::OK)
}

async fn trim(
    client: &mut Client,
    format: Format,
    topic: &str,
    partition: Option<i32>,
    before: crate::format::OffsetSpec,
) -> Result<u8, CliError> {
    let info = offsets::topic(client, topic, false, "cannot trim topic").await?;
    let wanted: Vec<(String, i32)> = match partition {
        Some(p) if info.partitions.iter().any(|i| i.partition == p) => vec![(info.name.clone(), p)],
        Some(p) => {
            return Err(CliError::broker(format!("cannot trim partition {p} of topic {topic:?}"), 3, None));
        }
        None => info.partitions.iter().map(|p| (info.name.clone(), p.partition)).collect(),
    };
    let leaders = offsets::leaders(&info);
    let targets = offsets::resolve(client, &leaders, &wanted, before).await?;
    let mut by_leader: BTreeMap<i32, Vec<(i32, i64)>> = BTreeMap::new();
    for ((_, p), offset) in &targets {
        by_leader.entry(leaders[&(info.name.clone(), *p)]).or_default().push((*p, *offset));
    }
    let mut low_watermarks: HashMap<i32, i64> = HashMap::new();
    for (leader, partitions) in by_leader {
        let (_, response) = client
            .node(leader)
            .await?
            .request(0..=2, |_| {
                let mut wanted = DeleteRecordsTopic::default();
                wanted.name = name(topic);
                wanted.partitions = partitions
                    .iter()
                    .map(|(p, offset)| {
                        let mut partition = DeleteRecordsPartition::default();
                        partition.partition_index = *p;
                        partition.offset = *offset;
                        partition
                    })
                    .collect();
                let mut request = DeleteRecordsRequest::default();
                request.topics = vec![wanted];
                request.timeout_ms = REQUEST_TIMEOUT_MS;
                request
            })
            .await?;
        for result in response.topics.iter().flat_map(|t| t.partitions.iter()) {
            check(
                || format!("cannot trim partition {} of topic {topic:?}", result.partition_index),
                result.error_code,
                None,
            )?;
            low_watermarks.insert(result.partition_index, result.low_watermark);
        }
    }
    let mut partitions: Vec<(i32, i64)> = low_watermarks.into_iter().collect();
    partitions.sort();
    let rows: Vec<Vec<String>> = partitions.iter().map(|(p, low)| vec![p.to_string(), low.to_string()]).collect();
    let text = format!("trimmed topic {topic:?}\n{}", table(&["PARTITION", "LOG-START"], &rows));
    let json = json!({
        "topic": topic,
        "partitions": partitions.iter().map(|(p, low)| json!({ "partition": p, "log_start_offset": low })).collect::<Vec<_>>(),
    });
    emit(format, &text, &json)?;
    Ok(exit::OK)
}
