//! KIP-848 consumer groups: ConsumerGroupHeartbeat, reconciliation, expiry, records.

use std::collections::{BTreeMap, BTreeSet};

use super::*;
use crate::records::CoordinatorRecord;

const T: [u8; 16] = [7; 16];

fn topics(partitions: i32) -> Vec<TopicMetadata> {
    vec![TopicMetadata { name: "t".into(), topic_id: T, partitions }]
}

fn harness() -> Harness {
    let mut h = Harness::new();
    let effects = h.coordinator.set_topics(topics(6), h.now_ms);
    h.apply(effects);
    h
}

fn join_req(member_id: &str) -> ConsumerGroupHeartbeat {
    ConsumerGroupHeartbeat {
        version: 1,
        group_id: GROUP.into(),
        member_id: member_id.into(),
        member_epoch: 0,
        instance_id: None,
        rack_id: None,
        rebalance_timeout_ms: 60_000,
        subscribed_topic_names: Some(vec!["t".into()]),
        subscribed_topic_regex: None,
        server_assignor: None,
        topic_partitions: Some(vec![]),
        client_id: "client".into(),
        client_host: "/127.0.0.1".into(),
    }
}

/// A plain heartbeat that reports the partitions owned.
fn beat(member_id: &str, epoch: i32, owned: &[i32]) -> ConsumerGroupHeartbeat {
    ConsumerGroupHeartbeat {
        member_epoch: epoch,
        rebalance_timeout_ms: -1,
        subscribed_topic_names: None,
        topic_partitions: Some(vec![ConsumerGroupTopicPartitions { topic_id: T, partitions: owned.to_vec() }]),
        ..join_req(member_id)
    }
}

impl Harness {
    fn cg(&mut self, request: ConsumerGroupHeartbeat) -> ConsumerGroupHeartbeatResponse {
        let effects = self.coordinator.consumer_group_heartbeat(4242, request, self.now_ms);
        let response = effects.iter().find_map(|e| match e {
            Effect::Respond(4242, Response::ConsumerGroupHeartbeat(r)) => Some(r.clone()),
            _ => None,
        });
        self.responses.remove(&4242);
        self.apply(effects);
        self.responses.remove(&4242);
        response.expect("one heartbeat response")
    }
}

/// A client model: remembers its epoch and the partitions it owns, and revokes or takes what
/// the coordinator says.
#[derive(Debug, Clone)]
struct Client {
    id: String,
    epoch: i32,
    owned: BTreeSet<i32>,
}

impl Client {
    fn new(id: &str) -> Self {
        Self { id: id.into(), epoch: 0, owned: BTreeSet::new() }
    }

    fn beat(&mut self, h: &mut Harness) -> ConsumerGroupHeartbeatResponse {
        let owned: Vec<i32> = self.owned.iter().copied().collect();
        let request = if self.epoch == 0 { join_req(&self.id) } else { beat(&self.id, self.epoch, &owned) };
        let response = h.cg(request);
        assert_eq!(response.error_code, ErrorCode::NONE, "{response:?}");
        self.epoch = response.member_epoch;
        if let Some(assignment) = &response.assignment {
            self.owned =
                assignment.iter().filter(|tp| tp.topic_id == T).flat_map(|tp| tp.partitions.iter().copied()).collect();
        }
        response
    }
}

/// Heartbeats every client in turn until nobody's state changes.
fn settle(h: &mut Harness, clients: &mut [Client]) {
    for _ in 0..10 {
        let before: Vec<(i32, BTreeSet<i32>)> = clients.iter().map(|c| (c.epoch, c.owned.clone())).collect();
        for c in clients.iter_mut() {
            c.beat(h);
        }
        let after: Vec<(i32, BTreeSet<i32>)> = clients.iter().map(|c| (c.epoch, c.owned.clone())).collect();
        if before == after {
            return;
        }
    }
    panic!("the group does not settle: {clients:?}");
}

fn assert_disjoint_cover(clients: &[Client], partitions: i32) {
    let mut all = BTreeSet::new();
    for c in clients {
        for p in &c.owned {
            assert!(all.insert(*p), "partition {p} owned twice: {clients:?}");
        }
    }
    assert_eq!(all, (0..partitions).collect::<BTreeSet<_>>(), "{clients:?}");
}

fn three_members() -> (Harness, Vec<Client>) {
    let mut h = harness();
    let mut clients = vec![Client::new("m1"), Client::new("m2"), Client::new("m3")];
    // m1 alone first: it gets everything.
    let first = clients[0].beat(&mut h);
    assert_eq!(first.member_epoch, 1);
    assert_eq!(clients[0].owned.len(), 6);
    assert_eq!(first.heartbeat_interval_ms, 5_000);
    clients[1].beat(&mut h);
    clients[2].beat(&mut h);
    settle(&mut h, &mut clients);
    (h, clients)
}

#[test]
fn three_members_each_get_a_disjoint_share_of_six_partitions() {
    let (h, clients) = three_members();
    assert_disjoint_cover(&clients, 6);
    for c in &clients {
        assert_eq!(c.owned.len(), 2, "{clients:?}");
        assert_eq!(c.epoch, 3);
    }
    let description = h.coordinator.describe_consumer_group(GROUP);
    assert_eq!(description.error_code, ErrorCode::NONE);
    assert_eq!(description.group_state, "Stable");
    assert_eq!(description.group_epoch, 3);
    assert_eq!(description.assignment_epoch, 3);
    assert_eq!(description.assignor_name, "uniform");
    assert_eq!(description.members.len(), 3);
    assert_eq!(description.members[0].assignment[0].topic_name, "t");
    let listed = h.coordinator.list_groups(&[]);
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].group_type, "consumer");
    assert_eq!(listed[0].state, GroupState::Stable);
    assert!(h.coordinator.list_groups(&[GroupState::Empty]).is_empty());
}

#[test]
fn a_new_member_waits_for_partitions_until_their_owner_revokes_them() {
    let mut h = harness();
    let mut m1 = Client::new("m1");
    m1.beat(&mut h);
    let mut m2 = Client::new("m2");
    let r = m2.beat(&mut h);
    // m2 is at the new epoch but gets nothing while m1 still holds the partitions.
    assert_eq!(r.member_epoch, 2);
    assert!(m2.owned.is_empty());
    assert_eq!(h.coordinator.describe_consumer_group(GROUP).group_state, "Reconciling");
    // m1 is asked to revoke half, staying at epoch 1.
    let r = m1.beat(&mut h);
    assert_eq!(r.member_epoch, 1);
    assert_eq!(m1.owned.len(), 3);
    // It still reports the old partitions: nothing changes for m2.
    let r = h.cg(beat("m2", 2, &[]));
    assert_eq!(r.assignment, None);
    // m1 acknowledges the revocation and moves to epoch 2; then m2 gets the rest.
    m1.beat(&mut h);
    assert_eq!(m1.epoch, 2);
    m2.beat(&mut h);
    assert_eq!(m2.owned.len(), 3);
    assert_disjoint_cover(&[m1, m2], 6);
    assert_eq!(h.coordinator.describe_consumer_group(GROUP).group_state, "Stable");
}

#[test]
fn a_leaving_member_s_partitions_go_to_the_others() {
    let (mut h, mut clients) = three_members();
    let leaving = clients.remove(1);
    let r = h.cg(ConsumerGroupHeartbeat { member_epoch: -1, ..beat(&leaving.id, leaving.epoch, &[]) });
    assert_eq!(r.error_code, ErrorCode::NONE);
    assert_eq!(r.member_epoch, -1);
    assert_eq!(r.member_id.as_deref(), Some(leaving.id.as_str()));
    settle(&mut h, &mut clients);
    assert_disjoint_cover(&clients, 6);
    assert!(clients.iter().all(|c| c.owned.len() == 3 && c.epoch == 4));
    // The member is gone.
    let r = h.cg(beat(&leaving.id, leaving.epoch, &[]));
    assert_eq!(r.error_code, ErrorCode::UNKNOWN_MEMBER_ID);
}

#[test]
fn stale_or_future_epochs_are_fenced() {
    let (mut h, clients) = three_members();
    let c = &clients[0];
    let r = h.cg(beat(&c.id, c.epoch + 1, &[]));
    assert_eq!(r.error_code, ErrorCode::FENCED_MEMBER_EPOCH);
    assert!(r.error_message.is_some());
    assert_eq!(r.member_id, None);
    // An old epoch that is not the previous one (or owns more than it has) is fenced too.
    let r = h.cg(beat(&c.id, 1, &[0, 1, 2, 3, 4, 5]));
    assert_eq!(r.error_code, ErrorCode::FENCED_MEMBER_EPOCH);
    // The previous epoch with a subset of the assignment is accepted (a lost response).
    let owned: Vec<i32> = c.owned.iter().copied().collect();
    let previous = {
        let g = &h.coordinator.consumer_groups[GROUP];
        g.members[&c.id].previous_member_epoch
    };
    let r = h.cg(beat(&c.id, previous, &owned));
    assert_eq!(r.error_code, ErrorCode::NONE);
    assert_eq!(r.member_epoch, c.epoch);
    // Unknown members and groups.
    assert_eq!(h.cg(beat("nobody", 3, &[])).error_code, ErrorCode::UNKNOWN_MEMBER_ID);
    let r = h.cg(ConsumerGroupHeartbeat { group_id: "other".into(), ..beat("m1", 3, &[]) });
    assert_eq!(r.error_code, ErrorCode::GROUP_ID_NOT_FOUND);
}

#[test]
fn invalid_requests_are_refused() {
    let mut h = harness();
    let cases = [
        ConsumerGroupHeartbeat { member_id: String::new(), ..join_req("x") },
        ConsumerGroupHeartbeat { rebalance_timeout_ms: -1, ..join_req("x") },
        ConsumerGroupHeartbeat { topic_partitions: None, ..join_req("x") },
        ConsumerGroupHeartbeat { subscribed_topic_names: None, ..join_req("x") },
        ConsumerGroupHeartbeat { subscribed_topic_regex: Some("t.*".into()), ..join_req("x") },
        ConsumerGroupHeartbeat { member_epoch: -3, ..join_req("x") },
        ConsumerGroupHeartbeat { member_epoch: -2, ..join_req("x") },
    ];
    for case in cases {
        assert_eq!(h.cg(case).error_code, ErrorCode::INVALID_REQUEST);
    }
    let r = h.cg(ConsumerGroupHeartbeat { server_assignor: Some("sticky".into()), ..join_req("x") });
    assert_eq!(r.error_code, ErrorCode::UNSUPPORTED_ASSIGNOR);
    assert!(h.log.is_empty(), "no record for refused requests");
    assert!(h.coordinator.consumer_groups.is_empty());
}

#[test]
fn v0_members_get_an_id_from_the_coordinator() {
    let mut h = harness();
    let r = h.cg(ConsumerGroupHeartbeat { version: 0, member_id: String::new(), ..join_req("") });
    assert_eq!(r.error_code, ErrorCode::NONE);
    let id = r.member_id.unwrap();
    assert!(!id.is_empty());
    assert_eq!(r.member_epoch, 1);
}

#[test]
fn a_silent_member_is_removed_after_the_session_timeout() {
    let (mut h, mut clients) = three_members();
    let silent = clients.remove(2);
    for _ in 0..9 {
        h.advance(5_000);
        for c in clients.iter_mut() {
            c.beat(&mut h);
        }
    }
    assert_eq!(h.coordinator.describe_consumer_group(GROUP).members.len(), 2);
    settle(&mut h, &mut clients);
    assert_disjoint_cover(&clients, 6);
    assert_eq!(h.cg(beat(&silent.id, silent.epoch, &[])).error_code, ErrorCode::UNKNOWN_MEMBER_ID);
}

#[test]
fn a_member_that_does_not_revoke_in_time_is_fenced() {
    let mut h = harness();
    let mut m1 = Client::new("m1");
    m1.beat(&mut h);
    let mut m2 = Client::new("m2");
    m2.beat(&mut h);
    // m1 learns it must revoke, then keeps reporting everything.
    let r = m1.beat(&mut h);
    assert_eq!(r.member_epoch, 1);
    for _ in 0..13 {
        h.advance(5_000);
        let all: Vec<i32> = (0..6).collect();
        let r = h.cg(beat("m1", 1, &all));
        if r.error_code != ErrorCode::NONE {
            assert_eq!(r.error_code, ErrorCode::UNKNOWN_MEMBER_ID);
            break;
        }
        m2.beat(&mut h);
    }
    // m1 was removed after its 60 s rebalance timeout; m2 gets everything.
    assert!(!h.coordinator.consumer_groups[GROUP].members.contains_key("m1"));
    settle(&mut h, std::slice::from_mut(&mut m2));
    assert_eq!(m2.owned.len(), 6);
}

#[test]
fn more_partitions_bump_the_epoch_and_get_assigned() {
    let (mut h, mut clients) = three_members();
    let effects = h.coordinator.set_topics(topics(9), h.now_ms);
    assert!(matches!(effects.as_slice(), [Effect::Persist(_)]));
    h.apply(effects);
    settle(&mut h, &mut clients);
    assert_disjoint_cover(&clients, 9);
    assert!(clients.iter().all(|c| c.owned.len() == 3 && c.epoch == 4));
    // The same metadata again changes nothing.
    assert!(h.coordinator.set_topics(topics(9), h.now_ms).is_empty());
}

#[test]
fn range_assignor_gives_contiguous_ranges() {
    let mut h = harness();
    let mut clients = vec![Client::new("a"), Client::new("b")];
    for c in clients.iter_mut() {
        let r = h.cg(ConsumerGroupHeartbeat { server_assignor: Some("range".into()), ..join_req(&c.id) });
        c.epoch = r.member_epoch;
    }
    settle(&mut h, &mut clients);
    assert_eq!(clients[0].owned, BTreeSet::from([0, 1, 2]));
    assert_eq!(clients[1].owned, BTreeSet::from([3, 4, 5]));
    assert_eq!(h.coordinator.describe_consumer_group(GROUP).assignor_name, "range");
}

#[test]
fn a_static_member_can_be_replaced_after_a_temporary_leave() {
    let mut h = harness();
    let join = |id: &str| ConsumerGroupHeartbeat { instance_id: Some("i1".into()), ..join_req(id) };
    let r = h.cg(join("old"));
    assert_eq!(r.member_epoch, 1);
    // Another instance with the same id cannot join while "old" holds it.
    assert_eq!(h.cg(join("new")).error_code, ErrorCode::UNRELEASED_INSTANCE_ID);
    let r = h.cg(ConsumerGroupHeartbeat { member_epoch: -2, instance_id: Some("i1".into()), ..beat("old", 1, &[]) });
    assert_eq!((r.error_code, r.member_epoch), (ErrorCode::NONE, -2));
    let epoch_before = h.coordinator.consumer_groups[GROUP].group_epoch;
    let r = h.cg(join("new"));
    assert_eq!(r.error_code, ErrorCode::NONE);
    assert_eq!(r.member_epoch, 1);
    assert_eq!(r.assignment.unwrap()[0].partitions, [0, 1, 2, 3, 4, 5]);
    // No rebalance: same epoch.
    assert_eq!(h.coordinator.consumer_groups[GROUP].group_epoch, epoch_before);
    assert!(!h.coordinator.consumer_groups[GROUP].members.contains_key("old"));
    let reloaded = replayed(&h.log, GroupConfig::default());
    assert_eq!(reloaded.consumer_groups, h.coordinator.consumer_groups);
}

#[test]
fn offset_commits_check_the_member_epoch() {
    let (mut h, clients) = three_members();
    let c = &clients[0];
    let commit = |member_id: &str, epoch: i32, version: i16| OffsetCommit {
        version,
        ..commit_request(member_id, epoch, &[("t", 0, 10)])
    };
    let ok = h.commit(commit(&c.id, c.epoch, 9));
    assert_eq!(commit_errors(&ok), [ErrorCode::NONE]);
    let stale = h.commit(commit(&c.id, c.epoch - 1, 9));
    assert_eq!(commit_errors(&stale), [ErrorCode::STALE_MEMBER_EPOCH]);
    let unknown = h.commit(commit("nobody", c.epoch, 9));
    assert_eq!(commit_errors(&unknown), [ErrorCode::UNKNOWN_MEMBER_ID]);
    let old = h.commit(commit(&c.id, c.epoch, 8));
    assert_eq!(commit_errors(&old), [ErrorCode::UNSUPPORTED_VERSION]);
    // Admin commits only while the group is empty.
    let admin = h.commit(commit("", -1, 9));
    assert_eq!(commit_errors(&admin), [ErrorCode::UNKNOWN_MEMBER_ID]);
    let fetched = h.coordinator.fetch_offsets(&OffsetFetch { group_id: GROUP.into(), topics: None });
    assert_eq!(fetched.topics[0].partitions[0].committed_offset, 10);
    // OffsetFetch v9 names the member: its epoch must be current; an admin fetch always passes.
    let check = |member: Option<&str>, epoch| h.coordinator.validate_offset_fetch(GROUP, member, epoch);
    assert_eq!(check(Some(&c.id), c.epoch), Ok(()));
    assert_eq!(check(None, -1), Ok(()));
    assert_eq!(check(Some(&c.id), c.epoch - 1), Err(ErrorCode::STALE_MEMBER_EPOCH));
    assert_eq!(check(Some("nobody"), c.epoch), Err(ErrorCode::UNKNOWN_MEMBER_ID));
    assert_eq!(h.coordinator.validate_offset_fetch("some-classic-group", Some("x"), 3), Ok(()));
    // OffsetDelete: the group subscribes to "t".
    let (response, _) = h.coordinator.delete_offsets(
        &OffsetDelete {
            group_id: GROUP.into(),
            topics: vec![OffsetDeleteTopic { name: "t".into(), partition_indexes: vec![0] }],
        },
        h.now_ms,
    );
    assert_eq!(response.topics[0].partitions[0].error_code, ErrorCode::GROUP_SUBSCRIBED_TO_TOPIC);
}

#[test]
fn replay_rebuilds_the_same_consumer_groups() {
    let (mut h, mut clients) = three_members();
    h.commit(OffsetCommit { version: 9, ..commit_request(&clients[0].id, clients[0].epoch, &[("t", 0, 10)]) });
    // Leave one member mid-reconciliation.
    let leaving = clients.remove(0);
    h.cg(ConsumerGroupHeartbeat { member_epoch: -1, ..beat(&leaving.id, leaving.epoch, &[]) });
    clients[0].beat(&mut h);
    let mut reloaded = replayed(&h.log, GroupConfig::default());
    assert_eq!(reloaded.consumer_groups, h.coordinator.consumer_groups);
    assert_eq!(persisted_view(&reloaded), persisted_view(&h.coordinator));
    // The reloaded coordinator keeps going: after set_topics and on_loaded the members settle.
    let effects = reloaded.set_topics(topics(6), h.now_ms);
    assert!(effects.is_empty(), "same metadata: no epoch bump");
    assert!(reloaded.on_loaded(h.now_ms).is_empty());
    h.coordinator = reloaded;
    settle(&mut h, &mut clients);
    assert_disjoint_cover(&clients, 6);
}

#[test]
fn every_record_round_trips_and_tombstones_delete() {
    let (mut h, mut clients) = three_members();
    for c in clients.drain(..) {
        h.cg(ConsumerGroupHeartbeat { member_epoch: -1, ..beat(&c.id, c.epoch, &[]) });
    }
    let kinds: BTreeSet<i16> = h.log.iter().map(|r| i16::from_be_bytes([r.key[0], r.key[1]])).collect();
    assert_eq!(kinds, BTreeSet::from([3, 5, 6, 7, 8]));
    for record in &h.log {
        let decoded = CoordinatorRecord::decode(&record.key, record.value.as_deref()).unwrap();
        assert_eq!(&decoded.encode().unwrap(), record);
    }
    assert_eq!(h.coordinator.describe_consumer_group(GROUP).group_state, "Empty");
    // An empty consumer group can be deleted; then nothing is left after a replay.
    let (results, effects) = h.coordinator.delete_groups(&[GROUP.to_owned()], h.now_ms);
    h.apply(effects);
    assert_eq!(results, [(GROUP.to_owned(), ErrorCode::NONE)]);
    let reloaded = replayed(&h.log, GroupConfig::default());
    assert!(reloaded.consumer_groups.is_empty());
    assert!(reloaded.groups.is_empty());
    assert_eq!(h.coordinator.describe_consumer_group(GROUP).error_code, ErrorCode::GROUP_ID_NOT_FOUND);
}

#[test]
fn classic_and_consumer_groups_share_the_id_space() {
    let mut h = harness();
    // A live classic group: a consumer member cannot take it over.
    let join = h.join(join_request("c1", "", None, 3));
    h.advance_with_deadlines(10_000);
    assert_eq!(h.joined(join).error_code, ErrorCode::NONE);
    assert_eq!(h.cg(join_req("m1")).error_code, ErrorCode::GROUP_ID_NOT_FOUND);
    assert_eq!(h.coordinator.describe_consumer_group(GROUP).error_code, ErrorCode::GROUP_ID_NOT_FOUND);
    // A simple (empty) classic group is converted.
    let mut h = harness();
    h.commit(commit_request("", -1, &[("t", 0, 5)]));
    assert_eq!(h.cg(join_req("m1")).error_code, ErrorCode::NONE);
    assert!(h.coordinator.groups.is_empty());
    let reloaded = replayed(&h.log, GroupConfig::default());
    assert!(reloaded.groups.is_empty());
    assert_eq!(reloaded.consumer_groups, h.coordinator.consumer_groups);
    // A classic join against the live consumer group is refused.
    let join = h.join(join_request("c1", "", None, 3));
    assert_eq!(h.joined(join).error_code, ErrorCode::INCONSISTENT_GROUP_PROTOCOL);
    // DescribeGroups (classic) reports a consumer group as Dead, as Kafka.
    let description = h.coordinator.describe_group(GROUP);
    assert_eq!(description.state, GroupState::Dead);
    assert!(description.members.is_empty());
}

#[test]
fn assignments_are_deterministic_across_runs() {
    let run = || {
        let (h, clients) = three_members();
        (clients.iter().map(|c| (c.id.clone(), c.owned.clone())).collect::<BTreeMap<_, _>>(), h.log)
    };
    assert_eq!(run(), run());
}

#[test]
fn a_known_member_rejoining_with_epoch_zero_is_fenced() {
    let (mut h, clients) = three_members();
    let r = h.cg(join_req(&clients[0].id));
    assert_eq!(r.error_code, ErrorCode::FENCED_MEMBER_EPOCH);
}

#[test]
fn an_empty_consumer_group_s_offsets_expire_and_then_the_group_goes() {
    let config = GroupConfig {
        offsets_retention_ms: 100_000,
        offsets_retention_check_interval_ms: 10_000,
        ..GroupConfig::default()
    };
    let mut h = Harness::with_config(config);
    let effects = h.coordinator.set_topics(topics(6), h.now_ms);
    h.apply(effects);
    let mut c = Client::new("m1");
    c.beat(&mut h);
    h.commit(OffsetCommit { version: 9, ..commit_request("m1", c.epoch, &[("t", 0, 10), ("other", 0, 1)]) });
    // "other" is not subscribed: it expires while the member is still there; "t" does not.
    for _ in 0..12 {
        h.advance(10_000);
        c.beat(&mut h);
    }
    let fetched = h.coordinator.fetch_offsets(&OffsetFetch { group_id: GROUP.into(), topics: None });
    let names: Vec<&str> = fetched.topics.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["t"]);
    h.cg(ConsumerGroupHeartbeat { member_epoch: -1, ..beat("m1", c.epoch, &[]) });
    h.advance(110_000);
    assert!(h.coordinator.consumer_groups.is_empty());
    assert!(h.coordinator.offsets.is_empty());
    let reloaded = replayed(&h.log, GroupConfig::default());
    assert!(reloaded.consumer_groups.is_empty() && reloaded.offsets.is_empty());
}

#[test]
fn a_reloaded_member_that_must_revoke_still_has_a_deadline() {
    // Sessions far longer than the 60 s rebalance timeout: only the latter can remove m1.
    let config = GroupConfig { group_consumer_session_timeout_ms: 600_000, ..GroupConfig::default() };
    let mut h = Harness::with_config(config.clone());
    let effects = h.coordinator.set_topics(topics(6), h.now_ms);
    h.apply(effects);
    let mut m1 = Client::new("m1");
    m1.beat(&mut h);
    let mut m2 = Client::new("m2");
    m2.beat(&mut h);
    m1.beat(&mut h); // now UNREVOKED_PARTITIONS
    let mut reloaded = replayed(&h.log, config);
    assert!(reloaded.set_topics(topics(6), h.now_ms).is_empty());
    assert!(reloaded.on_loaded(h.now_ms).is_empty());
    h.coordinator = reloaded;
    for _ in 0..11 {
        h.advance(5_000);
        m2.beat(&mut h);
    }
    assert_eq!(h.coordinator.describe_consumer_group(GROUP).members.len(), 2);
    h.advance(5_000);
    assert_eq!(h.coordinator.describe_consumer_group(GROUP).members.len(), 1);
    settle(&mut h, std::slice::from_mut(&mut m2));
    assert_eq!(m2.owned.len(), 6);
}
