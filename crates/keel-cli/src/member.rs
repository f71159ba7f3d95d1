//! A member of a classic consumer group (`keel consume --group`): JoinGroup and SyncGroup with
//! the `range` assignor, heartbeats between fetches, commits with the member's generation, and
//! LeaveGroup at the end. It shares partitions with any other consumer of the group that speaks
//! the classic protocol (every Kafka client does), so several `keel consume --group` processes,
//! or a mix with other clients, split a topic between them.
//!
//! The member runs in the consume loop itself: a fetch waits at most half a second, so the
//! heartbeat, due every `heartbeat.interval.ms` (3 s), is never late by more than that.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::consumer_protocol_assignment::{self, ConsumerProtocolAssignment};
use kafka_protocol::messages::consumer_protocol_subscription::ConsumerProtocolSubscription;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::{
    GroupId, HeartbeatRequest, JoinGroupRequest, LeaveGroupRequest, SyncGroupRequest, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable};

use crate::client::{name, str_bytes, Client};
use crate::error::CliError;

/// Kafka's consumer defaults.
const SESSION_TIMEOUT_MS: i32 = 45_000;
const REBALANCE_TIMEOUT_MS: i32 = 300_000;
const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(3);
const ASSIGNOR: &str = "range";
/// Error codes that send a member back to JoinGroup.
const REBALANCE_IN_PROGRESS: i16 = 27;
const ILLEGAL_GENERATION: i16 = 22;
const UNKNOWN_MEMBER_ID: i16 = 25;
const MEMBER_ID_REQUIRED: i16 = 79;
const NOT_COORDINATOR: i16 = 16;
const COORDINATOR_NOT_AVAILABLE: i16 = 15;
const COORDINATOR_LOAD_IN_PROGRESS: i16 = 14;
/// JoinGroup rounds before giving up (each may wait for the other members).
const JOIN_ATTEMPTS_MAX: u32 = 20;

pub struct Member {
    pub group: String,
    topic: String,
    coordinator: i32,
    pub member_id: String,
    pub generation: i32,
    next_heartbeat: Instant,
}

/// What a heartbeat found.
pub enum Beat {
    Fine,
    /// The group is rebalancing (or forgot this member): commit, then [`Member::join`] again.
    Rejoin,
}

impl Member {
    pub fn new(group: &str, topic: &str) -> Member {
        Member {
            group: group.to_string(),
            topic: topic.to_string(),
            coordinator: -1,
            member_id: String::new(),
            generation: -1,
            next_heartbeat: Instant::now(),
        }
    }

    /// Joins (or rejoins) the group and returns this member's partitions of the topic.
    pub async fn join(&mut self, client: &mut Client) -> Result<Vec<i32>, CliError> {
        let mut attempts = 0;
        loop {
            attempts += 1;
            if attempts > JOIN_ATTEMPTS_MAX {
                return Err(CliError::Protocol(format!(
                    "could not join group {:?} after {JOIN_ATTEMPTS_MAX} attempts",
                    self.group
                )));
            }
            if self.coordinator < 0 {
                self.coordinator = client.coordinator(&self.group).await?.0;
            }
            match self.join_once(client).await? {
                Some(partitions) => {
                    self.next_heartbeat = Instant::now() + HEARTBEAT_INTERVAL;
                    return Ok(partitions);
                }
                None => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// One JoinGroup + SyncGroup round; `None` when it must be tried again.
    async fn join_once(&mut self, client: &mut Client) -> Result<Option<Vec<i32>>, CliError> {
        let subscription = encode_subscription(&self.topic);
        let connection = client.node(self.coordinator).await?;
        let version = connection.version(kafka_protocol::messages::ApiKey::JoinGroup, 4..=9)?;
        let mut request = JoinGroupRequest::default();
        request.group_id = GroupId(str_bytes(&self.group));
        request.session_timeout_ms = SESSION_TIMEOUT_MS;
        request.rebalance_timeout_ms = REBALANCE_TIMEOUT_MS;
        request.member_id = str_bytes(&self.member_id);
        request.group_instance_id = None;
        request.protocol_type = str_bytes("consumer");
        let mut protocol = JoinGroupRequestProtocol::default();
        protocol.name = str_bytes(ASSIGNOR);
        protocol.metadata = subscription;
        request.protocols = vec![protocol];
        if version >= 8 {
            request.reason = None;
        }
        // The coordinator answers once every member has rejoined, within the rebalance timeout.
        let wait = Duration::from_millis(REBALANCE_TIMEOUT_MS as u64);
        let joined = connection.call(version, &request, wait).await?;
        match joined.error_code {
            0 => {}
            MEMBER_ID_REQUIRED => {
                // KIP-394: join again with the id the coordinator gave.
                self.member_id = joined.member_id.to_string();
                return Ok(None);
            }
            UNKNOWN_MEMBER_ID => {
                self.member_id.clear();
                return Ok(None);
            }
            REBALANCE_IN_PROGRESS | ILLEGAL_GENERATION => return Ok(None),
            NOT_COORDINATOR | COORDINATOR_NOT_AVAILABLE | COORDINATOR_LOAD_IN_PROGRESS => {
                self.coordinator = -1;
                return Ok(None);
            }
            code => return Err(CliError::broker(format!("cannot join group {:?}", self.group), code, None)),
        }
        self.member_id = joined.member_id.to_string();
        self.generation = joined.generation_id;
        let protocol_name = joined.protocol_name.as_ref().map(|p| p.to_string());
        if protocol_name.as_deref().is_some_and(|p| p != ASSIGNOR) {
            return Err(CliError::Protocol(format!(
                "group {:?} chose assignor {protocol_name:?}, which keel does not implement",
                self.group
            )));
        }
        let assignments = if joined.leader.as_str() == self.member_id {
            let members: Vec<(String, Vec<String>)> = joined
                .members
                .iter()
                .map(|m| Ok((m.member_id.to_string(), decode_subscription(&m.metadata)?)))
                .collect::<Result<_, CliError>>()?;
            let topics: BTreeSet<&String> = members.iter().flat_map(|(_, topics)| topics).collect();
            let mut partitions = BTreeMap::new();
            for topic in topics {
                // A topic the cluster does not know is assigned to nobody, as Kafka's assignors do.
                if let Ok(info) = crate::offsets::topic(client, topic, false, "").await {
                    partitions.insert(topic.clone(), info.partitions.iter().map(|p| p.partition).collect());
                }
            }
            range_assign(&members, &partitions)
                .into_iter()
                .map(|(member_id, assigned)| {
                    let mut assignment = SyncGroupRequestAssignment::default();
                    assignment.member_id = str_bytes(&member_id);
                    assignment.assignment = encode_assignment(&assigned);
                    assignment
                })
                .collect()
        } else {
            Vec::new()
        };
        let connection = client.node(self.coordinator).await?;
        let version = connection.version(kafka_protocol::messages::ApiKey::SyncGroup, 3..=5)?;
        let mut request = SyncGroupRequest::default();
        request.group_id = GroupId(str_bytes(&self.group));
        request.generation_id = self.generation;
        request.member_id = str_bytes(&self.member_id);
        request.group_instance_id = None;
        if version >= 5 {
            request.protocol_type = Some(str_bytes("consumer"));
            request.protocol_name = Some(str_bytes(ASSIGNOR));
        }
        request.assignments = assignments;
        let synced = connection.call(version, &request, wait).await?;
        match synced.error_code {
            0 => Ok(Some(decode_assignment(&synced.assignment, &self.topic)?)),
            REBALANCE_IN_PROGRESS | ILLEGAL_GENERATION => Ok(None),
            UNKNOWN_MEMBER_ID => {
                self.member_id.clear();
                Ok(None)
            }
            NOT_COORDINATOR | COORDINATOR_NOT_AVAILABLE => {
                self.coordinator = -1;
                Ok(None)
            }
            code => Err(CliError::broker(format!("cannot sync group {:?}", self.group), code, None)),
        }
    }

    /// Sends a heartbeat when one is due.
    pub async fn heartbeat(&mut self, client: &mut Client) -> Result<Beat, CliError> {
        if Instant::now() < self.next_heartbeat {
            return Ok(Beat::Fine);
        }
        let (group, generation, member_id) = (&self.group, self.generation, &self.member_id);
        let (_, response) = client
            .node(self.coordinator)
            .await?
            .request(1..=4, |_| {
                let mut request = HeartbeatRequest::default();
                request.group_id = GroupId(str_bytes(group));
                request.generation_id = generation;
                request.member_id = str_bytes(member_id);
                request.group_instance_id = None;
                request
            })
            .await?;
        self.next_heartbeat = Instant::now() + HEARTBEAT_INTERVAL;
        match response.error_code {
            0 => Ok(Beat::Fine),
            REBALANCE_IN_PROGRESS => Ok(Beat::Rejoin),
            ILLEGAL_GENERATION | UNKNOWN_MEMBER_ID => {
                self.generation = -1;
                if response.error_code == UNKNOWN_MEMBER_ID {
                    self.member_id.clear();
                }
                Ok(Beat::Rejoin)
            }
            NOT_COORDINATOR | COORDINATOR_NOT_AVAILABLE => {
                self.coordinator = -1;
                Ok(Beat::Rejoin)
            }
            code => Err(CliError::broker(format!("heartbeat to group {:?} failed", self.group), code, None)),
        }
    }

    /// Leaves the group so that the others get its partitions at once (best effort).
    pub async fn leave(&mut self, client: &mut Client) {
        if self.member_id.is_empty() || self.coordinator < 0 {
            return;
        }
        let Ok(connection) = client.node(self.coordinator).await else { return };
        let (group, member_id) = (&self.group, &self.member_id);
        let _ = connection
            .request(1..=5, |version| {
                let mut request = LeaveGroupRequest::default();
                request.group_id = GroupId(str_bytes(group));
                if version >= 3 {
                    let mut member = MemberIdentity::default();
                    member.member_id = str_bytes(member_id);
                    member.group_instance_id = None;
                    if version >= 5 {
                        member.reason = Some(str_bytes("keel consume stopped"));
                    }
                    request.members = vec![member];
                } else {
                    request.member_id = str_bytes(member_id);
                }
                request
            })
            .await;
        self.member_id.clear();
        self.generation = -1;
    }
}

/// The `range` assignor (Kafka's RangeAssignor): per topic, the partitions in order are cut into
/// contiguous ranges over the subscribed members sorted by member id; the first
/// `partitions % members` members get one more.
pub fn range_assign(
    members: &[(String, Vec<String>)],
    partitions: &BTreeMap<String, Vec<i32>>,
) -> BTreeMap<String, BTreeMap<String, Vec<i32>>> {
    let mut result: BTreeMap<String, BTreeMap<String, Vec<i32>>> =
        members.iter().map(|(id, _)| (id.clone(), BTreeMap::new())).collect();
    for (topic, all) in partitions {
        let mut subscribed: Vec<&String> =
            members.iter().filter(|(_, topics)| topics.contains(topic)).map(|(id, _)| id).collect();
        subscribed.sort();
        if subscribed.is_empty() {
            continue;
        }
        let mut sorted = all.clone();
        sorted.sort_unstable();
        let (each, extra) = (sorted.len() / subscribed.len(), sorted.len() % subscribed.len());
        let mut start = 0;
        for (i, member) in subscribed.into_iter().enumerate() {
            let len = each + usize::from(i < extra);
            if len > 0 {
                if let Some(assigned) = result.get_mut(member) {
                    assigned.insert(topic.clone(), sorted[start..start + len].to_vec());
                }
            }
            start += len;
        }
    }
    result
}

/// ConsumerProtocolSubscription v0 (topics, no user data), with its version prefix.
fn encode_subscription(topic: &str) -> Bytes {
    let mut subscription = ConsumerProtocolSubscription::default();
    subscription.topics = vec![str_bytes(topic)];
    subscription.user_data = None;
    versioned(0, &subscription)
}

/// The topics of a member's subscription, of any version (a newer one is read as the newest
/// this client knows, whose fields come first, as Kafka's ConsumerProtocol does).
fn decode_subscription(metadata: &Bytes) -> Result<Vec<String>, CliError> {
    let mut buf = metadata.clone();
    let bad = |e: &dyn std::fmt::Display| {
        CliError::Protocol(format!("a group member sent a subscription keel cannot read: {e}"))
    };
    if buf.len() < 2 {
        return Err(bad(&"too short"));
    }
    let version = buf.get_i16().clamp(0, 3);
    let subscription = ConsumerProtocolSubscription::decode(&mut buf, version).map_err(|e| bad(&e))?;
    Ok(subscription.topics.iter().map(|t| t.to_string()).collect())
}

fn encode_assignment(assigned: &BTreeMap<String, Vec<i32>>) -> Bytes {
    let mut assignment = ConsumerProtocolAssignment::default();
    assignment.assigned_partitions = assigned
        .iter()
        .map(|(topic, partitions)| {
            let mut entry = consumer_protocol_assignment::TopicPartition::default();
            entry.topic = name(topic);
            entry.partitions = partitions.clone();
            entry
        })
        .collect();
    assignment.user_data = None;
    versioned(0, &assignment)
}

/// This member's partitions of `topic` in the leader's assignment (empty: none).
fn decode_assignment(bytes: &Bytes, topic: &str) -> Result<Vec<i32>, CliError> {
    if bytes.is_empty() {
        return Ok(Vec::new());
    }
    let mut buf = bytes.clone();
    let bad = |e: &dyn std::fmt::Display| {
        CliError::Protocol(format!("the group leader sent an assignment keel cannot read: {e}"))
    };
    if buf.len() < 2 {
        return Err(bad(&"too short"));
    }
    let version = buf.get_i16().clamp(0, 3);
    let assignment = ConsumerProtocolAssignment::decode(&mut buf, version).map_err(|e| bad(&e))?;
    let wanted = TopicName(str_bytes(topic));
    let mut partitions: Vec<i32> = assignment
        .assigned_partitions
        .iter()
        .filter(|a| a.topic == wanted)
        .flat_map(|a| a.partitions.clone())
        .collect();
    partitions.sort_unstable();
    partitions.dedup();
    Ok(partitions)
}

fn versioned<M: Encodable>(version: i16, message: &M) -> Bytes {
    let mut out = BytesMut::new();
    out.put_i16(version);
    // Encoding a message built here at a version it supports cannot fail.
    let _ = message.encode(&mut out, version);
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(list: &[(&str, &[&str])]) -> Vec<(String, Vec<String>)> {
        list.iter().map(|(id, topics)| (id.to_string(), topics.iter().map(|t| t.to_string()).collect())).collect()
    }

    #[test]
    fn range_gives_contiguous_ranges_and_the_first_members_one_more() {
        let partitions = BTreeMap::from([("t".to_string(), (0..7).collect::<Vec<i32>>())]);
        let assigned = range_assign(&members(&[("b", &["t"]), ("a", &["t"]), ("c", &["t"])]), &partitions);
        assert_eq!(assigned["a"]["t"], vec![0, 1, 2]);
        assert_eq!(assigned["b"]["t"], vec![3, 4]);
        assert_eq!(assigned["c"]["t"], vec![5, 6]);
    }

    #[test]
    fn range_assigns_each_topic_to_its_subscribers_only() {
        let partitions = BTreeMap::from([("t".to_string(), vec![0, 1]), ("u".to_string(), vec![0])]);
        let assigned = range_assign(&members(&[("a", &["t"]), ("b", &["t", "u"]), ("c", &["t"])]), &partitions);
        assert_eq!(assigned["a"]["t"], vec![0]);
        assert_eq!(assigned["b"]["t"], vec![1]);
        assert_eq!(assigned["b"]["u"], vec![0]);
        assert!(assigned["c"].is_empty());
    }

    #[test]
    fn subscriptions_and_assignments_round_trip() {
        assert_eq!(decode_subscription(&encode_subscription("orders")).unwrap(), vec!["orders".to_string()]);
        let assignment = BTreeMap::from([("orders".to_string(), vec![2, 0]), ("other".to_string(), vec![1])]);
        assert_eq!(decode_assignment(&encode_assignment(&assignment), "orders").unwrap(), vec![0, 2]);
        assert_eq!(decode_assignment(&Bytes::new(), "orders").unwrap(), Vec::<i32>::new());
        assert!(decode_subscription(&Bytes::from_static(&[0])).is_err());
        assert!(decode_assignment(&Bytes::from_static(&[0, 0, 0, 0, 0, 9]), "orders").is_err());
    }
}
