//! One classic group's in-memory state (Kafka's `ClassicGroup` and `ClassicGroupMember`):
//! members, static-member map, KIP-394 pending members, protocol selection. Transitions that
//! need timers or responses live in `membership.rs`; this file only keeps the data consistent.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;

use crate::api::{GroupState, JoinGroupMember, JoinProtocol, RequestId};
use crate::error::ErrorCode;

/// Kafka's `ConsumerProtocol.PROTOCOL_TYPE`: groups of this type have their subscriptions parsed
/// for offset expiry (KIP-496).
pub(crate) const CONSUMER_PROTOCOL_TYPE: &str = "consumer";

#[derive(Debug, Clone)]
pub(crate) struct Member {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub rebalance_timeout_ms: i32,
    pub session_timeout_ms: i32,
    pub protocol_type: String,
    /// In the member's order of preference.
    pub protocols: Vec<JoinProtocol>,
    pub assignment: Bytes,
    /// The parked JoinGroup of this member, answered when the join phase completes.
    pub awaiting_join: Option<RequestId>,
    /// The parked SyncGroup of this member, answered when the leader's assignment is in.
    pub awaiting_sync: Option<RequestId>,
    /// Joined in the current join phase and never completed one: it cannot heartbeat yet, so it
    /// does not get the "awaiting join satisfies the heartbeat" exemption.
    pub is_new: bool,
}

impl Member {
    pub fn is_static(&self) -> bool {
        self.group_instance_id.is_some()
    }

    /// Kafka's `hasSatisfiedHeartbeat`: a known member parked in join or sync is alive by
    /// definition; a new member must complete its join before its session timer runs out.
    pub fn has_satisfied_heartbeat(&self) -> bool {
        !self.is_new && (self.awaiting_join.is_some() || self.awaiting_sync.is_some())
    }

    pub fn supports(&self, protocol: &str) -> bool {
        self.protocols.iter().any(|p| p.name == protocol)
    }

    pub fn metadata(&self, protocol: Option<&str>) -> Bytes {
        protocol
            .and_then(|name| self.protocols.iter().find(|p| p.name == name))
            .map(|p| p.metadata.clone())
            .unwrap_or_default()
    }

    /// Kafka's `vote`: the first of the member's protocols (by preference) among `candidates`.
    fn vote<'a>(&'a self, candidates: &BTreeSet<&str>) -> Option<&'a str> {
        self.protocols.iter().map(|p| p.name.as_str()).find(|name| candidates.contains(name))
    }
}

#[derive(Debug, Clone)]
pub(crate) struct ClassicGroup {
    pub group_id: String,
    pub state: GroupState,
    /// The state before the last transition: an initial rebalance is one entered from Empty.
    pub previous_state: GroupState,
    /// When the group entered its current state; for an Empty group this is when it lost its
    /// last member, the start of its offsets' retention (KIP-211).
    pub current_state_timestamp_ms: Option<i64>,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub generation_id: i32,
    pub leader_id: Option<String>,
    /// Ordered by member id so that iteration, and with it leader re-election, is deterministic.
    pub members: BTreeMap<String, Member>,
    /// group.instance.id → current member id (KIP-345).
    pub static_members: BTreeMap<String, String>,
    /// Member ids handed out with MEMBER_ID_REQUIRED that have not joined yet (KIP-394).
    pub pending_join_members: BTreeSet<String>,
    /// Members that have not sent SyncGroup for the current generation.
    pub pending_sync_members: BTreeSet<String>,
    /// A member joined during the initial delayed rebalance: extend the delay (KIP-134).
    pub new_member_added: bool,
    /// Topics the members subscribe to, when the protocol is "consumer" and parsable.
    pub subscribed_topics: Option<BTreeSet<String>>,
}

impl ClassicGroup {
    pub fn new(group_id: String, now_ms: Option<i64>) -> Self {
        Self {
            group_id,
            state: GroupState::Empty,
            previous_state: GroupState::Dead,
            current_state_timestamp_ms: now_ms,
            protocol_type: None,
            protocol_name: None,
            generation_id: 0,
            leader_id: None,
            members: BTreeMap::new(),
            static_members: BTreeMap::new(),
            pending_join_members: BTreeSet::new(),
            pending_sync_members: BTreeSet::new(),
            new_member_added: false,
            subscribed_topics: None,
        }
    }

    pub fn transition_to(&mut self, state: GroupState, now_ms: i64) {
        self.previous_state = self.state;
        self.state = state;
        self.current_state_timestamp_ms = Some(now_ms);
    }

    pub fn is_leader(&self, member_id: &str) -> bool {
        self.leader_id.as_deref() == Some(member_id)
    }

    pub fn leader_or_empty(&self) -> String {
        self.leader_id.clone().unwrap_or_default()
    }

    /// Kafka's `canRebalance`: PreparingRebalance may be entered from these states.
    pub fn can_rebalance(&self) -> bool {
        matches!(self.state, GroupState::Stable | GroupState::CompletingRebalance | GroupState::Empty)
    }

    pub fn num_awaiting_join(&self) -> usize {
        self.members.values().filter(|m| m.awaiting_join.is_some()).count()
    }

    /// Every known member has rejoined and no KIP-394 pending member is still expected.
    pub fn has_all_members_joined(&self) -> bool {
        self.members.len() == self.num_awaiting_join() && self.pending_join_members.is_empty()
    }

    /// The group's rebalance timeout: the largest of its members'.
    pub fn rebalance_timeout_ms(&self) -> i32 {
        self.members.values().map(|m| m.rebalance_timeout_ms).max().unwrap_or(0).max(0)
    }

    /// Kafka's `supportsProtocols`: an Empty group takes any non-empty protocol type and list;
    /// otherwise the type must match and one of the protocols must be supported by every member.
    pub fn supports_protocols(&self, protocol_type: &str, protocols: &[JoinProtocol]) -> bool {
        if self.state == GroupState::Empty {
            return !protocol_type.is_empty() && !protocols.is_empty();
        }
        self.protocol_type.as_deref() == Some(protocol_type)
            && protocols.iter().any(|p| self.members.values().all(|m| m.supports(&p.name)))
    }

    /// Kafka's `selectProtocol`: among the protocols every member supports, each member votes for
    /// its most preferred; most votes wins. Kafka breaks ties by hash order; Keel by name so the
    /// outcome is deterministic. `None` for an empty group or no common protocol.
    pub fn select_protocol(&self) -> Option<String> {
        let first = self.members.values().next()?;
        let candidates: BTreeSet<&str> = first
            .protocols
            .iter()
            .map(|p| p.name.as_str())
            .filter(|name| self.members.values().all(|m| m.supports(name)))
            .collect();
        let mut votes: BTreeMap<&str, usize> = BTreeMap::new();
        for member in self.members.values() {
            if let Some(name) = member.vote(&candidates) {
                *votes.entry(name).or_default() += 1;
            }
        }
        let max_votes = votes.values().copied().max()?;
        votes.into_iter().find(|(_, n)| *n == max_votes).map(|(name, _)| name.to_owned())
    }

    /// Adds a member (Kafka's `ClassicGroup.add`): the first member fixes the protocol type and
    /// becomes leader; a pending (KIP-394) id stops being pending.
    pub fn add(&mut self, member: Member) {
        if let Some(instance_id) = &member.group_instance_id {
            self.static_members.insert(instance_id.clone(), member.member_id.clone());
        }
        if self.members.is_empty() {
            self.protocol_type = Some(member.protocol_type.clone());
        }
        if self.leader_id.is_none() {
            self.leader_id = Some(member.member_id.clone());
        }
        self.pending_join_members.remove(&member.member_id);
        self.members.insert(member.member_id.clone(), member);
    }

    /// Removes a member or pending member (Kafka's `ClassicGroup.remove`); a removed leader is
    /// replaced by the first remaining member. Returns the member so parked requests can be
    /// answered.
    pub fn remove(&mut self, member_id: &str) -> Option<Member> {
        let removed = self.members.remove(member_id);
        if let Some(instance_id) = removed.as_ref().and_then(|m| m.group_instance_id.as_ref()) {
            self.static_members.remove(instance_id);
        }
        if self.is_leader(member_id) {
            self.leader_id = self.members.keys().next().cloned();
        }
        self.pending_join_members.remove(member_id);
        self.pending_sync_members.remove(member_id);
        removed
    }

    /// Kafka's `maybeElectNewJoinedLeader`: if the leader did not rejoin, the first member that
    /// did becomes leader. False when nobody rejoined (or the group has no leader).
    pub fn maybe_elect_new_joined_leader(&mut self) -> bool {
        let Some(leader_id) = self.leader_id.clone() else {
            return false;
        };
        let leader_rejoined = self.members.get(&leader_id).is_some_and(|m| m.awaiting_join.is_some());
        if leader_rejoined {
            return true;
        }
        match self.members.values().find(|m| m.awaiting_join.is_some()) {
            Some(member) => {
                self.leader_id = Some(member.member_id.clone());
                true
            }
            None => false,
        }
    }

    /// Kafka's `validateMember`: a static member's instance id must map to this member id
    /// (else FENCED_INSTANCE_ID), and the member must exist (else UNKNOWN_MEMBER_ID).
    pub fn validate_member(&self, member_id: &str, group_instance_id: Option<&str>) -> Result<(), ErrorCode> {
        if let Some(instance_id) = group_instance_id {
            match self.static_members.get(instance_id) {
                None => return Err(ErrorCode::UNKNOWN_MEMBER_ID),
                Some(existing) if existing != member_id => return Err(ErrorCode::FENCED_INSTANCE_ID),
                Some(_) => {}
            }
        }
        if !self.members.contains_key(member_id) {
            return Err(ErrorCode::UNKNOWN_MEMBER_ID);
        }
        Ok(())
    }

    /// The members as the leader's JoinGroup response lists them.
    pub fn join_response_members(&self) -> Vec<JoinGroupMember> {
        self.members
            .values()
            .map(|m| JoinGroupMember {
                member_id: m.member_id.clone(),
                group_instance_id: m.group_instance_id.clone(),
                metadata: m.metadata(self.protocol_name.as_deref()),
            })
            .collect()
    }

    pub fn uses_consumer_protocol(&self) -> bool {
        self.protocol_type.as_deref() == Some(CONSUMER_PROTOCOL_TYPE)
    }

    /// Kafka's `computeSubscribedTopics`: the union of the members' subscribed topics for a
    /// "consumer" group, `None` when unknown (other protocol types, no protocol, unparsable).
    pub fn compute_subscribed_topics(&self) -> Option<BTreeSet<String>> {
        if !self.uses_consumer_protocol() {
            return None;
        }
        if self.members.is_empty() {
            return Some(BTreeSet::new());
        }
        let protocol = self.protocol_name.as_deref()?;
        let mut topics = BTreeSet::new();
        for member in self.members.values() {
            topics.extend(parse_subscription_topics(&member.metadata(Some(protocol)))?);
        }
        Some(topics)
    }

    /// Kafka's `isSubscribedToTopic`: unknown subscriptions count as subscribed for "consumer"
    /// groups, so their offsets are never expired by mistake.
    pub fn is_subscribed_to_topic(&self, topic: &str) -> bool {
        match &self.subscribed_topics {
            Some(topics) => topics.contains(topic),
            None => self.uses_consumer_protocol(),
        }
    }
}

/// Reads the topic list of a `ConsumerProtocolSubscription` (any version: every version starts
/// with `version: i16, topics: [string]` in the classic encoding, which is what Kafka parses with
/// its v0 schema). `None` when the bytes do not parse.
pub(crate) fn parse_subscription_topics(metadata: &[u8]) -> Option<Vec<String>> {
    fn take<'a>(buf: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        if buf.len() < n {
            return None;
        }
        let (head, tail) = buf.split_at(n);
        *buf = tail;
        Some(head)
    }
    let mut buf = metadata;
    let _version = take(&mut buf, 2)?;
    let count = i32::from_be_bytes(take(&mut buf, 4)?.try_into().ok()?);
    let count = usize::try_from(count).ok()?;
    let mut topics = Vec::with_capacity(count.min(buf.len() / 2));
    for _ in 0..count {
        let len = i16::from_be_bytes(take(&mut buf, 2)?.try_into().ok()?);
        let len = usize::try_from(len).ok()?;
        let topic = std::str::from_utf8(take(&mut buf, len)?).ok()?;
        topics.push(topic.to_owned());
    }
    Some(topics)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: &str, protocols: &[&str]) -> Member {
        Member {
            member_id: id.into(),
            group_instance_id: None,
            client_id: "c".into(),
            client_host: "/h".into(),
            rebalance_timeout_ms: 1000,
            session_timeout_ms: 1000,
            protocol_type: "consumer".into(),
            protocols: protocols
                .iter()
                .map(|name| JoinProtocol { name: (*name).into(), metadata: Bytes::new() })
                .collect(),
            assignment: Bytes::new(),
            awaiting_join: None,
            awaiting_sync: None,
            is_new: false,
        }
    }

    #[test]
    fn protocol_selection_takes_the_most_voted_common_protocol() {
        let mut group = ClassicGroup::new("g".into(), Some(0));
        group.add(member("a", &["range", "roundrobin", "sticky"]));
        group.add(member("b", &["roundrobin", "range"]));
        group.add(member("c", &["roundrobin", "range", "sticky"]));
        // Common: range, roundrobin. Votes: a → range, b → roundrobin, c → roundrobin.
        assert_eq!(group.select_protocol().as_deref(), Some("roundrobin"));
    }

    #[test]
    fn an_empty_group_accepts_any_protocol_but_a_live_one_needs_a_common_one() {
        let mut group = ClassicGroup::new("g".into(), Some(0));
        let p = |n: &str| JoinProtocol { name: n.into(), metadata: Bytes::new() };
        assert!(group.supports_protocols("consumer", &[p("range")]));
        assert!(!group.supports_protocols("", &[p("range")]));
        assert!(!group.supports_protocols("consumer", &[]));
        group.add(member("a", &["range"]));
        group.transition_to(GroupState::PreparingRebalance, 0);
        assert!(group.supports_protocols("consumer", &[p("sticky"), p("range")]));
        assert!(!group.supports_protocols("consumer", &[p("sticky")]));
        assert!(!group.supports_protocols("connect", &[p("range")]));
    }

    #[test]
    fn subscription_topics_parse_from_consumer_protocol_bytes() {
        // version 1, topics ["a", "bc"], then v1's user data and owned partitions (ignored).
        let bytes = [0, 1, 0, 0, 0, 2, 0, 1, b'a', 0, 2, b'b', b'c', 0xff, 0xff, 0xff, 0xff];
        assert_eq!(parse_subscription_topics(&bytes), Some(vec!["a".into(), "bc".into()]));
        assert_eq!(parse_subscription_topics(&[0, 1, 0, 0, 0, 9]), None);
    }
}
