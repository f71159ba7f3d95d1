//! `keel group list|describe|seek|delete`.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use bytes::Buf;
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestGroup;
use kafka_protocol::messages::{
    ApiKey, ConsumerGroupDescribeRequest, ConsumerProtocolAssignment, DeleteGroupsRequest, DescribeGroupsRequest,
    GroupId, ListGroupsRequest, OffsetFetchRequest,
};
use kafka_protocol::protocol::Decodable;
use serde_json::json;

use crate::client::{str_bytes, Client};
use crate::consume::commit_offsets;
use crate::error::{check, exit, CliError};
use crate::format::OffsetSpec;
use crate::offsets::{self, LATEST, READ_UNCOMMITTED};
use crate::output::{emit, table};
use crate::{connect, Format, GroupArgs, GroupCommand};

pub async fn run(args: GroupArgs) -> Result<u8, CliError> {
    let format = args.common.format;
    let mut client = connect(&args.common).await?;
    match args.command {
        GroupCommand::List => list(&mut client, format).await,
        GroupCommand::Describe { group } => describe(&mut client, format, &group).await,
        GroupCommand::Seek { group, to, topic, partition } => {
            seek(&mut client, format, &group, to, topic.as_deref(), partition).await
        }
        GroupCommand::Delete { groups } => delete(&mut client, format, &groups).await,
    }
}

async fn list(client: &mut Client, format: Format) -> Result<u8, CliError> {
    let (_, metadata) = client.metadata(Some(&[]), false).await?;
    let mut nodes: Vec<i32> = metadata.brokers.iter().map(|b| b.node_id.0).collect();
    nodes.sort_unstable();
    let mut groups: BTreeMap<String, (String, String)> = BTreeMap::new();
    for node in nodes {
        let (_, response) = client.node(node).await?.request(0..=4, |_| ListGroupsRequest::default()).await?;
        check(|| format!("cannot list the groups of node {node}"), response.error_code, None)?;
        for group in response.groups {
            let state = if group.group_state.is_empty() { "-".to_string() } else { group.group_state.to_string() };
            groups.insert(group.group_id.0.to_string(), (state, group.protocol_type.to_string()));
        }
    }
    let rows: Vec<Vec<String>> =
        groups.iter().map(|(group, (state, protocol))| vec![group.clone(), state.clone(), protocol.clone()]).collect();
    let text = table(&["GROUP", "STATE", "PROTOCOL-TYPE"], &rows);
    let json: Vec<_> = groups
        .iter()
        .map(|(group, (state, protocol))| json!({ "group": group, "state": state, "protocol_type": protocol }))
        .collect();
    emit(format, &text, &json!(json))?;
    Ok(exit::OK)
}

struct Member {
    member_id: String,
    client_id: String,
    host: String,
    assigned: Vec<(String, i32)>,
}

struct Described {
    state: String,
    protocol_type: String,
    protocol: String,
    members: Vec<Member>,
}

async fn describe_group(client: &mut Client, coordinator: i32, group: &str) -> Result<Described, CliError> {
    let (_, response) = client
        .node(coordinator)
        .await?
        .request(0..=5, |_| {
            let mut request = DescribeGroupsRequest::default();
            request.groups = vec![GroupId(str_bytes(group))];
            request
        })
        .await?;
    let described = response
        .groups
        .into_iter()
        .next()
        .ok_or_else(|| CliError::Protocol("DescribeGroups answered no group".to_string()))?;
    check(|| format!("cannot describe group {group:?}"), described.error_code, described.error_message.as_ref())?;
    if described.group_state.as_str() == "Dead" {
        // DescribeGroups describes only classic groups and calls any other Dead (Kafka's
        // behaviour); a KIP-848 consumer group answers ConsumerGroupDescribe instead.
        if let Some(consumer_group) = describe_consumer_group(client, coordinator, group).await? {
            return Ok(consumer_group);
        }
    }
    let consumer = described.protocol_type.as_str() == "consumer";
    let members = described
        .members
        .iter()
        .map(|m| {
            let mut assigned = Vec::new();
            if consumer {
                let mut bytes = m.member_assignment.clone();
                if bytes.len() >= 2 {
                    let version = bytes.get_i16();
                    if let Ok(assignment) = ConsumerProtocolAssignment::decode(&mut bytes, version.clamp(0, 3)) {
                        for topic in assignment.assigned_partitions {
                            for p in topic.partitions {
                                assigned.push((topic.topic.0.to_string(), p));
                            }
                        }
                    }
                }
            }
            Member {
                member_id: m.member_id.to_string(),
                client_id: m.client_id.to_string(),
                host: m.client_host.to_string(),
                assigned,
            }
        })
        .collect();
    Ok(Described {
        state: described.group_state.to_string(),
        protocol_type: described.protocol_type.to_string(),
        protocol: described.protocol_data.to_string(),
        members,
    })
}

/// ConsumerGroupDescribe (KIP-848); `None` when the broker does not serve it or the group is
/// not a consumer group.
async fn describe_consumer_group(
    client: &mut Client,
    coordinator: i32,
    group: &str,
) -> Result<Option<Described>, CliError> {
    let connection = client.node(coordinator).await?;
    if connection.version(ApiKey::ConsumerGroupDescribe, 0..=1).is_err() {
        return Ok(None);
    }
    let (_, response) = connection
        .request(0..=1, |_| {
            let mut request = ConsumerGroupDescribeRequest::default();
            request.group_ids = vec![GroupId(str_bytes(group))];
            request
        })
        .await?;
    let Some(described) = response.groups.into_iter().next() else {
        return Ok(None);
    };
    if described.error_code == 69 {
        return Ok(None);
    }
    check(|| format!("cannot describe group {group:?}"), described.error_code, described.error_message.as_ref())?;
    let members = described
        .members
        .iter()
        .map(|m| Member {
            member_id: m.member_id.to_string(),
            client_id: m.client_id.to_string(),
            host: m.client_host.to_string(),
            assigned: m
                .assignment
                .topic_partitions
                .iter()
                .flat_map(|t| t.partitions.iter().map(|p| (t.topic_name.0.to_string(), *p)))
                .collect(),
        })
        .collect();
    Ok(Some(Described {
        state: described.group_state.to_string(),
        protocol_type: "consumer".to_string(),
        protocol: described.assignor_name.to_string(),
        members,
    }))
}

/// Every committed offset of `group`: (topic, partition) -> offset.
async fn all_committed(
    client: &mut Client,
    coordinator: i32,
    group: &str,
) -> Result<BTreeMap<(String, i32), i64>, CliError> {
    let (version, response) = client
        .node(coordinator)
        .await?
        .request(2..=8, |version| {
            let mut request = OffsetFetchRequest::default();
            if version >= 8 {
                let mut entry = OffsetFetchRequestGroup::default();
                entry.group_id = GroupId(str_bytes(group));
                entry.topics = None;
                request.groups = vec![entry];
            } else {
                request.group_id = GroupId(str_bytes(group));
                request.topics = None;
            }
            request
        })
        .await?;
    let context = || format!("cannot fetch the committed offsets of group {group:?}");
    let mut committed = BTreeMap::new();
    if version >= 8 {
        for entry in &response.groups {
            check(context, entry.error_code, None)?;
            for topic in &entry.topics {
                for p in &topic.partitions {
                    if p.error_code == 0 && p.committed_offset >= 0 {
                        committed.insert((topic.name.0.to_string(), p.partition_index), p.committed_offset);
                    }
                }
            }
        }
    } else {
        check(context, response.error_code, None)?;
        for topic in &response.topics {
            for p in &topic.partitions {
                if p.error_code == 0 && p.committed_offset >= 0 {
                    committed.insert((topic.name.0.to_string(), p.partition_index), p.committed_offset);
                }
            }
        }
    }
    Ok(committed)
}

/// Partition -> leader of every partition of `topics` that still exists.
async fn leaders_of(client: &mut Client, topics: &BTreeSet<String>) -> Result<HashMap<(String, i32), i32>, CliError> {
    if topics.is_empty() {
        return Ok(HashMap::new());
    }
    let names: Vec<String> = topics.iter().cloned().collect();
    let (_, metadata) = client.metadata(Some(&names), false).await?;
    Ok(offsets::topics(&metadata)
        .iter()
        .filter(|t| t.error_code == 0)
        .flat_map(|t| t.partitions.iter().map(|p| ((t.name.clone(), p.partition), p.leader)))
        .collect())
}

async fn describe(client: &mut Client, format: Format, group: &str) -> Result<u8, CliError> {
    let (coordinator, coordinator_addr) = client.coordinator(group).await?;
    let described = describe_group(client, coordinator, group).await?;
    let committed = all_committed(client, coordinator, group).await?;
    if described.state == "Dead" && committed.is_empty() {
        return Err(CliError::broker(format!("cannot describe group {group:?}"), 69, None));
    }
    let mut owner: HashMap<(String, i32), &Member> = HashMap::new();
    for member in &described.members {
        for tp in &member.assigned {
            owner.insert(tp.clone(), member);
        }
    }
    let partitions: BTreeSet<(String, i32)> = committed.keys().cloned().chain(owner.keys().cloned()).collect();
    let topics: BTreeSet<String> = partitions.iter().map(|(t, _)| t.clone()).collect();
    let leaders = leaders_of(client, &topics).await?;
    let live: Vec<(String, i32)> =
        partitions.iter().filter(|tp| leaders.get(*tp).is_some_and(|l| *l >= 0)).cloned().collect();
    let ends = offsets::list_offsets(client, &leaders, &live, LATEST, READ_UNCOMMITTED).await?;

    let mut rows = Vec::new();
    let mut json_partitions = Vec::new();
    let mut total_lag: i64 = 0;
    for tp in &partitions {
        let current = committed.get(tp).copied();
        let end = ends.get(tp).copied();
        let lag = match (current, end) {
            (Some(current), Some(end)) => Some((end - current).max(0)),
            _ => None,
        };
        total_lag += lag.unwrap_or(0);
        let member = owner.get(tp);
        let show = |v: Option<i64>| v.map_or("-".to_string(), |v| v.to_string());
        rows.push(vec![
            tp.0.clone(),
            tp.1.to_string(),
            show(current),
            show(end),
            show(lag),
            member.map_or("-".to_string(), |m| m.member_id.clone()),
            member.map_or("-".to_string(), |m| m.client_id.clone()),
            member.map_or("-".to_string(), |m| m.host.clone()),
        ]);
        json_partitions.push(json!({
            "topic": tp.0,
            "partition": tp.1,
            "current_offset": current,
            "log_end_offset": end,
            "lag": lag,
            "member_id": member.map(|m| m.member_id.clone()),
            "client_id": member.map(|m| m.client_id.clone()),
            "host": member.map(|m| m.host.clone()),
        }));
    }
    let mut text = format!(
        "Group:        {group}\nState:        {}\nCoordinator:  {coordinator} ({coordinator_addr})\nMembers:      {}\nTotal lag:    {total_lag}\n",
        described.state,
        described.members.len(),
    );
    if !described.protocol_type.is_empty() {
        let protocol = format!("Protocol:     {} {}", described.protocol_type, described.protocol);
        text.push_str(protocol.trim_end());
        text.push('\n');
    }
    text.push('\n');
    if rows.is_empty() {
        text.push_str("no committed offsets and no assigned partitions\n");
    } else {
        text.push_str(&table(
            &["TOPIC", "PARTITION", "CURRENT-OFFSET", "LOG-END-OFFSET", "LAG", "MEMBER", "CLIENT-ID", "HOST"],
            &rows,
        ));
    }
    let json = json!({
        "group": group,
        "state": described.state,
        "protocol_type": described.protocol_type,
        "protocol": described.protocol,
        "coordinator": { "node_id": coordinator, "address": coordinator_addr },
        "members": described.members.iter().map(|m| json!({
            "member_id": m.member_id,
            "client_id": m.client_id,
            "host": m.host,
            "assignment": m.assigned.iter().map(|(t, p)| json!({ "topic": t, "partition": p })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "total_lag": total_lag,
        "partitions": json_partitions,
    });
    emit(format, &text, &json)?;
    Ok(exit::OK)
}

async fn seek(
    client: &mut Client,
    format: Format,
    group: &str,
    to: OffsetSpec,
    topic: Option<&str>,
    partition: Option<i32>,
) -> Result<u8, CliError> {
    let (coordinator, _) = client.coordinator(group).await?;
    let described = describe_group(client, coordinator, group).await?;
    if !described.members.is_empty() {
        return Err(CliError::other(format!(
            "group {group:?} has {} active member(s) (state {}); offsets can be moved only while a group has no \
             members: stop its consumers and try again",
            described.members.len(),
            described.state
        )));
    }
    let wanted: Vec<(String, i32)> = match topic {
        Some(topic) => {
            let info = offsets::topic(client, topic, false, "cannot seek on topic").await?;
            match partition {
                Some(p) if info.partitions.iter().any(|i| i.partition == p) => vec![(topic.to_string(), p)],
                Some(p) => return Err(CliError::Usage(format!("topic {topic:?} has no partition {p}"))),
                None => info.partitions.iter().map(|p| (topic.to_string(), p.partition)).collect(),
            }
        }
        None => {
            let committed = all_committed(client, coordinator, group).await?;
            if committed.is_empty() {
                return Err(CliError::Usage(format!(
                    "group {group:?} has no committed offsets; name the topic to seek with --topic"
                )));
            }
            committed.into_keys().collect()
        }
    };
    let topics: BTreeSet<String> = wanted.iter().map(|(t, _)| t.clone()).collect();
    let leaders = leaders_of(client, &topics).await?;
    let wanted: Vec<(String, i32)> = wanted.into_iter().filter(|tp| leaders.contains_key(tp)).collect();
    let targets = offsets::resolve(client, &leaders, &wanted, to).await?;
    let mut by_topic: BTreeMap<String, BTreeMap<i32, i64>> = BTreeMap::new();
    for ((topic, p), offset) in &targets {
        by_topic.entry(topic.clone()).or_default().insert(*p, *offset);
    }
    commit_offsets(client, group, None, &by_topic).await?;
    let rows: Vec<Vec<String>> =
        targets.iter().map(|((t, p), offset)| vec![t.clone(), p.to_string(), offset.to_string()]).collect();
    let text = format!("moved group {group:?}\n{}", table(&["TOPIC", "PARTITION", "NEW-OFFSET"], &rows));
    let json = json!({
        "group": group,
        "partitions": targets.iter().map(|((t, p), offset)| json!({ "topic": t, "partition": p, "offset": offset })).collect::<Vec<_>>(),
    });
    emit(format, &text, &json)?;
    Ok(exit::OK)
}

async fn delete(client: &mut Client, format: Format, groups: &[String]) -> Result<u8, CliError> {
    let mut text = String::new();
    let mut results = Vec::new();
    let mut first_error = None;
    for group in groups {
        let (coordinator, _) = client.coordinator(group).await?;
        let (_, response) = client
            .node(coordinator)
            .await?
            .request(0..=2, |_| {
                let mut request = DeleteGroupsRequest::default();
                request.groups_names = vec![GroupId(str_bytes(group))];
                request
            })
            .await?;
        for result in &response.results {
            if result.error_code == 0 {
                text.push_str(&format!("deleted group {:?}\n", result.group_id.0.as_str()));
                results.push(json!({ "group": result.group_id.0.as_str(), "deleted": true }));
            } else if first_error.is_none() {
                first_error = Some(CliError::broker(
                    format!("cannot delete group {:?}", result.group_id.0.as_str()),
                    result.error_code,
                    None,
                ));
            }
        }
    }
    emit(format, &text, &json!(results))?;
    match first_error {
        Some(error) => Err(error),
        None => Ok(exit::OK),
    }
}
