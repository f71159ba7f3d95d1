//! `keel consume TOPIC`: fetches from each partition's leader and prints every record with a
//! format string or as one JSON object per line.
//!
//! With `--group`, the consumer joins the group as a classic member (`member.rs`), reads the
//! partitions the group gives it from the group's committed offsets, commits its progress with
//! its generation after every fetch, rejoins on a rebalance and leaves the group at the end.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::time::Duration;

use bytes::{Buf, Bytes};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::offset_commit_request::{OffsetCommitRequestPartition, OffsetCommitRequestTopic};
use kafka_protocol::messages::offset_fetch_request::{
    OffsetFetchRequestGroup, OffsetFetchRequestTopic, OffsetFetchRequestTopics,
};
use kafka_protocol::messages::{BrokerId, FetchRequest, GroupId, OffsetCommitRequest, OffsetFetchRequest};
use kafka_protocol::records::TimestampType;
use kafka_protocol::ResponseError;
use keel_protocol::read_committed::AbortedFilter;
use serde_json::json;

use crate::client::{name, str_bytes, Client};
use crate::error::{check, exit, CliError};
use crate::format::{OffsetSpec, RecordView, Template};
use crate::member::{Beat, Member};
use crate::offsets::{self, TopicInfo};
use crate::{connect, ConsumeArgs, Format};

const FETCH_MAX_WAIT_MS: i32 = 500;
const FETCH_BYTES_MAX: i32 = 50 << 20;
const PARTITION_FETCH_BYTES_MAX: i32 = 1 << 20;
/// The most a fetched batch may inflate to: a few compressed bytes can claim gigabytes.
const BATCH_INFLATED_BYTES_MAX: usize = 128 << 20;
/// Consecutive retriable fetch errors before giving up.
const FETCH_RETRIES_MAX: u32 = 20;

pub async fn run(args: ConsumeArgs) -> Result<u8, CliError> {
    let template = Template::parse(args.format_string.as_deref().unwrap_or("%v\\n"));
    let mut client = connect(&args.common).await?;
    let mut info = offsets::topic(&mut client, &args.topic, false, "cannot consume from topic").await?;
    if info.partitions.is_empty() {
        return Err(CliError::Protocol(format!("the cluster lists topic {:?} with no partitions", args.topic)));
    }
    let mut member = args.group.as_deref().map(|group| Member::new(group, &args.topic));
    let partitions: Vec<i32> = match (&mut member, args.partition) {
        (Some(member), _) => member.join(&mut client).await?,
        (None, Some(p)) if info.partitions.iter().any(|i| i.partition == p) => vec![p],
        (None, Some(p)) => {
            return Err(CliError::Usage(format!(
                "topic {:?} has no partition {p} (it has {})",
                args.topic,
                info.partitions.len()
            )))
        }
        (None, None) => info.partitions.iter().map(|p| p.partition).collect(),
    };
    let positions = start_positions(&mut client, &info, args.group.as_deref(), &partitions, args.offset).await?;

    let mut consumer = Consumer {
        topic: args.topic.clone(),
        format: args.common.format,
        template,
        positions,
        high_watermarks: HashMap::new(),
        remaining: args.count,
        out: std::io::BufWriter::new(std::io::stdout()),
        committed: BTreeMap::new(),
        read_committed: !args.read_uncommitted,
    };
    let stop_at_end = args.exit || args.count.is_some();
    let mut interrupt = std::pin::pin!(tokio::signal::ctrl_c());
    let mut failures = 0;
    let outcome = loop {
        if consumer.remaining == Some(0) || (stop_at_end && consumer.at_end()) {
            break Ok(());
        }
        let step = tokio::select! {
            step = consumer.fetch_round(&mut client, &info) => step,
            _ = &mut interrupt => break Ok(()),
        };
        match step {
            Ok(Step::Continue) => failures = 0,
            Ok(Step::StdoutClosed) => break Ok(()),
            Ok(Step::Refresh) => {
                failures += 1;
                if failures > FETCH_RETRIES_MAX {
                    break Err(CliError::Protocol(format!(
                        "the leaders of topic {:?} kept failing fetches; giving up",
                        args.topic
                    )));
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
                info = offsets::topic(&mut client, &args.topic, false, "cannot consume from topic").await?;
            }
            Err(error) => break Err(error),
        }
        if let Err(error) = consumer.commit(&mut client, member.as_ref()).await {
            break Err(error);
        }
        if let Some(member) = member.as_mut() {
            // A rebalance: the progress so far is committed above; rejoin and start the new
            // partitions from the group's committed offsets.
            let rejoined = match member.heartbeat(&mut client).await {
                Ok(Beat::Fine) => continue,
                Ok(Beat::Rejoin) => member.join(&mut client).await,
                Err(error) => break Err(error),
            };
            let positions = match rejoined {
                Ok(partitions) => start_positions(&mut client, &info, Some(&member.group), &partitions, None).await,
                Err(error) => Err(error),
            };
            match positions {
                Ok(positions) => consumer.reassign(positions),
                Err(error) => break Err(error),
            }
        }
    };
    let _ = consumer.out.flush();
    let committed = consumer.commit(&mut client, member.as_ref()).await;
    if let Some(member) = member.as_mut() {
        member.leave(&mut client).await;
    }
    outcome?;
    committed?;
    Ok(exit::OK)
}

/// Where to start reading each partition: `offset` when given, else the group's committed
/// offset, else the start of the partition.
async fn start_positions(
    client: &mut Client,
    info: &TopicInfo,
    group: Option<&str>,
    partitions: &[i32],
    offset: Option<OffsetSpec>,
) -> Result<BTreeMap<i32, i64>, CliError> {
    let mut positions: BTreeMap<i32, i64> = BTreeMap::new();
    if partitions.is_empty() {
        return Ok(positions);
    }
    if let (Some(group), None) = (group, offset) {
        let committed = committed_offsets(client, group, &info.name, partitions).await?;
        positions.extend(committed.into_iter().filter(|(p, offset)| *offset >= 0 && partitions.contains(p)));
    }
    let missing: Vec<(String, i32)> =
        partitions.iter().filter(|p| !positions.contains_key(p)).map(|p| (info.name.clone(), *p)).collect();
    if !missing.is_empty() {
        let spec = offset.unwrap_or(OffsetSpec::Start);
        let resolved = offsets::resolve(client, &offsets::leaders(info), &missing, spec).await?;
        positions.extend(resolved.into_iter().map(|((_, p), offset)| (p, offset)));
    }
    Ok(positions)
}

/// The group's committed offset per partition (-1 when none).
async fn committed_offsets(
    client: &mut Client,
    group: &str,
    topic: &str,
    partitions: &[i32],
) -> Result<BTreeMap<i32, i64>, CliError> {
    let (coordinator, _) = client.coordinator(group).await?;
    let (version, response) = client
        .node(coordinator)
        .await?
        .request(1..=8, |version| {
            let mut request = OffsetFetchRequest::default();
            if version >= 8 {
                let mut wanted = OffsetFetchRequestTopics::default();
                wanted.name = name(topic);
                wanted.partition_indexes = partitions.to_vec();
                let mut entry = OffsetFetchRequestGroup::default();
                entry.group_id = GroupId(str_bytes(group));
                entry.topics = Some(vec![wanted]);
                request.groups = vec![entry];
            } else {
                let mut wanted = OffsetFetchRequestTopic::default();
                wanted.name = name(topic);
                wanted.partition_indexes = partitions.to_vec();
                request.group_id = GroupId(str_bytes(group));
                request.topics = Some(vec![wanted]);
            }
            request
        })
        .await?;
    let context = || format!("cannot fetch the committed offsets of group {group:?}");
    let mut offsets = BTreeMap::new();
    if version >= 8 {
        for entry in &response.groups {
            check(context, entry.error_code, None)?;
            for p in entry.topics.iter().flat_map(|t| t.partitions.iter()) {
                check(context, p.error_code, None)?;
                offsets.insert(p.partition_index, p.committed_offset);
            }
        }
    } else {
        if version >= 2 {
            check(context, response.error_code, None)?;
        }
        for p in response.topics.iter().flat_map(|t| t.partitions.iter()) {
            check(context, p.error_code, None)?;
            offsets.insert(p.partition_index, p.committed_offset);
        }
    }
    Ok(offsets)
}

/// Commits `offsets` for `group`: as `member` (its generation and member id), or as a simple
/// consumer (generation -1, no member id) when `None`.
pub async fn commit_offsets(
    client: &mut Client,
    group: &str,
    member: Option<&Member>,
    topic_offsets: &BTreeMap<String, BTreeMap<i32, i64>>,
) -> Result<(), CliError> {
    let (coordinator, _) = client.coordinator(group).await?;
    let (_, response) = client
        .node(coordinator)
        .await?
        .request(2..=8, |version| {
            let mut request = OffsetCommitRequest::default();
            request.group_id = GroupId(str_bytes(group));
            request.generation_id_or_member_epoch = member.map_or(-1, |m| m.generation);
            request.member_id = str_bytes(member.map_or("", |m| m.member_id.as_str()));
            if version <= 4 {
                request.retention_time_ms = -1;
            }
            request.topics = topic_offsets
                .iter()
                .map(|(topic, partitions)| {
                    let mut entry = OffsetCommitRequestTopic::default();
                    entry.name = name(topic);
                    entry.partitions = partitions
                        .iter()
                        .map(|(p, offset)| {
                            let mut partition = OffsetCommitRequestPartition::default();
                            partition.partition_index = *p;
                            partition.committed_offset = *offset;
                            if version >= 6 {
                                partition.committed_leader_epoch = -1;
                            }
                            partition.committed_metadata = Some(str_bytes(""));
                            partition
                        })
                        .collect();
                    entry
                })
                .collect();
            request
        })
        .await?;
    for topic in &response.topics {
        for p in &topic.partitions {
            let hint = match (p.error_code, member) {
                (25 | 22, None) => " (the group has active members; stop them first)",
                _ => "",
            };
            check(
                || format!("cannot commit offsets of group {group:?} for {}-{}{hint}", topic.name.0, p.partition_index),
                p.error_code,
                None,
            )?;
        }
    }
    Ok(())
}

enum Step {
    Continue,
    /// A retriable error: refresh the metadata and go again.
    Refresh,
    StdoutClosed,
}

struct Consumer {
    topic: String,
    format: Format,
    template: Template,
    positions: BTreeMap<i32, i64>,
    high_watermarks: HashMap<i32, i64>,
    remaining: Option<u64>,
    out: std::io::BufWriter<std::io::Stdout>,
    /// The offsets last committed, per partition (with `--group`).
    committed: BTreeMap<i32, i64>,
    /// Fetch up to the last stable offset and skip aborted transactions' records.
    read_committed: bool,
}

impl Consumer {
    /// Every partition has been read up to the high watermark of its last fetch.
    fn at_end(&self) -> bool {
        self.positions.iter().all(|(p, position)| self.high_watermarks.get(p).is_some_and(|hw| position >= hw))
    }

    /// Reads `positions` from now on (a new assignment).
    fn reassign(&mut self, positions: BTreeMap<i32, i64>) {
        self.positions = positions;
        self.high_watermarks.clear();
        self.committed.clear();
    }

    async fn commit(&mut self, client: &mut Client, member: Option<&Member>) -> Result<(), CliError> {
        let Some(member) = member else {
            return Ok(());
        };
        let changed: BTreeMap<i32, i64> = self
            .positions
            .iter()
            .filter(|(p, offset)| self.committed.get(p) != Some(offset))
            .map(|(p, o)| (*p, *o))
            .collect();
        if changed.is_empty() {
            return Ok(());
        }
        let mut topics = BTreeMap::new();
        topics.insert(self.topic.clone(), changed.clone());
        match commit_offsets(client, &member.group, Some(member), &topics).await {
            Ok(()) => {}
            // The group is rebalancing or moved on without this member: the next heartbeat
            // rejoins, and the records since the last commit are read again (at least once).
            Err(CliError::Broker { code: 22 | 25 | 27, .. }) => return Ok(()),
            Err(error) => return Err(error),
        }
        self.committed.extend(changed);
        Ok(())
    }

    /// One Fetch to each leader of the partitions still being read.
    async fn fetch_round(&mut self, client: &mut Client, info: &TopicInfo) -> Result<Step, CliError> {
        if self.positions.is_empty() {
            // A group member with no partitions (more members than partitions) waits.
            tokio::time::sleep(Duration::from_millis(FETCH_MAX_WAIT_MS as u64)).await;
            return Ok(Step::Continue);
        }
        let mut by_leader: BTreeMap<i32, Vec<i32>> = BTreeMap::new();
        for partition in self.positions.keys() {
            let leader = info.partitions.iter().find(|p| p.partition == *partition).map_or(-1, |p| p.leader);
            if leader < 0 {
                return Ok(Step::Refresh);
            }
            by_leader.entry(leader).or_default().push(*partition);
        }
        for (leader, partitions) in by_leader {
            let connection = client.node(leader).await?;
            let version = connection.version(kafka_protocol::messages::ApiKey::Fetch, 4..=12)?;
            let mut topic = FetchTopic::default();
            topic.topic = name(&self.topic);
            topic.partitions = partitions
                .iter()
                .map(|p| {
                    let mut partition = FetchPartition::default();
                    partition.partition = *p;
                    partition.fetch_offset = self.positions[p];
                    partition.partition_max_bytes = PARTITION_FETCH_BYTES_MAX;
                    if version >= 9 {
                        partition.current_leader_epoch = -1;
                    }
                    if version >= 5 {
                        partition.log_start_offset = -1;
                    }
                    partition
                })
                .collect();
            let mut request = FetchRequest::default();
            request.replica_id = BrokerId(-1);
            request.max_wait_ms = FETCH_MAX_WAIT_MS;
            request.min_bytes = 1;
            request.max_bytes = FETCH_BYTES_MAX;
            request.isolation_level = i8::from(self.read_committed);
            if version >= 7 {
                request.session_id = 0;
                request.session_epoch = -1;
            }
            request.topics = vec![topic];
            let response = connection.call(version, &request, Duration::from_millis(FETCH_MAX_WAIT_MS as u64)).await?;
            if version >= 7 && response.error_code != 0 {
                check(|| format!("cannot fetch from topic {:?}", self.topic), response.error_code, None)?;
            }
            for partition in response.responses.iter().flat_map(|t| t.partitions.iter()) {
                let p = partition.partition_index;
                if !self.positions.contains_key(&p) {
                    continue; // not asked for
                }
                if partition.error_code != 0 {
                    let error = ResponseError::try_from_code(partition.error_code);
                    if error.is_some_and(|e| e.is_retriable()) {
                        return Ok(Step::Refresh);
                    }
                    let hint = if partition.error_code == 1 { "; start elsewhere with --offset start|end" } else { "" };
                    return Err(CliError::broker(
                        format!(
                            "cannot fetch partition {p} of topic {:?} at offset {}{hint}",
                            self.topic, self.positions[&p]
                        ),
                        partition.error_code,
                        None,
                    ));
                }
                // What can be read: up to the last stable offset for read_committed (v4+).
                let readable = if self.read_committed && partition.last_stable_offset >= 0 {
                    partition.last_stable_offset
                } else {
                    partition.high_watermark
                };
                self.high_watermarks.insert(p, readable);
                let aborted: Vec<(i64, i64)> = partition
                    .aborted_transactions
                    .iter()
                    .flatten()
                    .map(|a| (a.producer_id.0, a.first_offset))
                    .collect();
                if let Some(records) = &partition.records {
                    if self.deliver(p, records.clone(), aborted)? {
                        return Ok(Step::StdoutClosed);
                    }
                }
                if self.remaining == Some(0) {
                    return Ok(Step::Continue);
                }
            }
        }
        Ok(Step::Continue)
    }

    /// Prints the records of a fetched partition from the current position on. Returns true
    /// when stdout was closed (a pipe whose reader went away).
    ///
    /// `aborted` lists the aborted transactions of the fetched range as (producer id, first
    /// offset): a transactional batch of a producer whose aborted transaction has begun is
    /// skipped, until that producer's abort marker (Kafka's consumer does the same).
    fn deliver(&mut self, partition: i32, mut records: Bytes, aborted: Vec<(i64, i64)>) -> Result<bool, CliError> {
        let mut line = Vec::new();
        let mut delivered_any = false;
        let mut aborted = AbortedFilter::new(aborted);
        while records.len() >= 12 {
            let batch_length = (&records[8..12]).get_i32();
            if batch_length < 0 || records.len() < 12 + batch_length as usize {
                break; // a partial batch at the end of the fetch
            }
            let batch = records.split_to(12 + batch_length as usize);
            let base_offset = (&batch[0..8]).get_i64();
            let last_offset_delta = if batch.len() >= 27 { (&batch[23..27]).get_i32() } else { 0 };
            // With LogAppendTime every record's timestamp is the batch's maxTimestamp, which the
            // decoder does not apply.
            let max_timestamp = if batch.len() >= 43 { (&batch[35..43]).get_i64() } else { -1 };
            let skip = aborted.is_aborted(&batch);
            let set = keel_protocol::records::decode_batch(batch, BATCH_INFLATED_BYTES_MAX).map_err(|e| {
                CliError::Protocol(format!(
                    "cannot decode a record batch of partition {partition} at offset {base_offset}: {e}"
                ))
            })?;
            for record in &set.records {
                let position = self.positions[&partition];
                if record.offset < position || record.control || skip {
                    continue;
                }
                if self.remaining == Some(0) {
                    break;
                }
                line.clear();
                let headers: Vec<(&str, Option<&[u8]>)> =
                    record.headers.iter().map(|(k, v)| (k.as_str(), v.as_deref())).collect();
                let view = RecordView {
                    topic: &self.topic,
                    partition,
                    offset: record.offset,
                    timestamp: match record.timestamp_type {
                        TimestampType::LogAppend => max_timestamp,
                        TimestampType::Creation => record.timestamp,
                    },
                    key: record.key.as_deref(),
                    value: record.value.as_deref(),
                    headers,
                };
                match self.format {
                    Format::Text => self.template.render(&view, &mut line),
                    Format::Json => {
                        let text = |bytes: Option<&[u8]>| bytes.map(|b| String::from_utf8_lossy(b).into_owned());
                        let headers: serde_json::Map<String, serde_json::Value> =
                            view.headers.iter().map(|(k, v)| (k.to_string(), json!(text(*v)))).collect();
                        let object = json!({
                            "topic": view.topic,
                            "partition": partition,
                            "offset": record.offset,
                            "timestamp": view.timestamp,
                            "key": text(view.key),
                            "value": text(view.value),
                            "headers": headers,
                        });
                        line.extend_from_slice(object.to_string().as_bytes());
                        line.push(b'\n');
                    }
                }
                if let Err(error) = self.out.write_all(&line) {
                    return stdout_error(error);
                }
                self.positions.insert(partition, record.offset + 1);
                if let Some(remaining) = self.remaining.as_mut() {
                    *remaining -= 1;
                }
                delivered_any = true;
            }
            if self.remaining == Some(0) {
                break;
            }
            // Past the whole batch, including control records and offsets compacted away.
            let next = base_offset + last_offset_delta as i64 + 1;
            if next > self.positions[&partition] {
                self.positions.insert(partition, next);
            }
            delivered_any = true;
        }
        if !records.is_empty() && !delivered_any {
            return Err(CliError::Protocol(format!(
                "partition {partition} returned {} bytes holding no whole record batch",
                records.len()
            )));
        }
        if let Err(error) = self.out.flush() {
            return stdout_error(error);
        }
        Ok(false)
    }
}

fn stdout_error(error: std::io::Error) -> Result<bool, CliError> {
    if error.kind() == std::io::ErrorKind::BrokenPipe {
        Ok(true)
    } else {
        Err(CliError::other(format!("cannot write to stdout: {error}")))
    }
}
