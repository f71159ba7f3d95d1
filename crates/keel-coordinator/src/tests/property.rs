//! Property test: random clients join, sync, heartbeat, commit and leave under a random clock.
//! The coordinator must never panic, answer every request exactly once, keep its invariants,
//! and leave a log that replays to the state it ended in.

use std::collections::BTreeMap;

use bytes::Bytes;
use proptest::prelude::*;

use super::*;
use crate::group::ClassicGroup;

const CLIENTS: usize = 5;
const GROUPS: [&str; 2] = ["g", "h"];

#[derive(Debug, Clone)]
enum Op {
    /// What a well-behaved client would do next (join, rejoin, sync or heartbeat).
    Act {
        client: usize,
    },
    Join {
        client: usize,
        version: i16,
    },
    Sync {
        client: usize,
    },
    Heartbeat {
        client: usize,
    },
    Commit {
        client: usize,
        offset: i64,
    },
    Leave {
        client: usize,
    },
    Tick {
        ms: i64,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        12 => (0..CLIENTS).prop_map(|client| Op::Act { client }),
        3 => (0..CLIENTS, prop_oneof![Just(0i16), Just(3), Just(4), Just(5), Just(9)])
            .prop_map(|(client, version)| Op::Join { client, version }),
        4 => (0..CLIENTS).prop_map(|client| Op::Sync { client }),
        3 => (0..CLIENTS).prop_map(|client| Op::Heartbeat { client }),
        1 => (0..CLIENTS, 0i64..1000).prop_map(|(client, offset)| Op::Commit { client, offset }),
        1 => (0..CLIENTS).prop_map(|client| Op::Leave { client }),
        3 => prop_oneof![0i64..2_000, 0i64..15_000].prop_map(|ms| Op::Tick { ms }),
    ]
}

/// What a client knows: clients 0 and 1 are static members, the others dynamic; clients 0–3
/// share group "g", client 4 is alone in "h".
#[derive(Debug, Default, Clone)]
struct Client {
    member_id: String,
    generation_id: i32,
    /// Members listed in the last JoinGroup response that named this client leader.
    members_to_assign: Vec<String>,
    /// A JoinGroup or SyncGroup of this client is parked.
    awaiting: bool,
    synced: bool,
    needs_rejoin: bool,
}

fn instance_id(client: usize) -> Option<String> {
    (client < 2).then(|| format!("instance-{client}"))
}

fn group_of(client: usize) -> &'static str {
    GROUPS[usize::from(client >= 4)]
}

fn check_invariants(h: &Harness, generations: &mut BTreeMap<String, i32>) {
    for group in h.coordinator.groups.values() {
        check_group(group);
        let previous = generations.insert(group.group_id.clone(), group.generation_id);
        if let Some(previous) = previous {
            assert!(group.generation_id >= previous, "generation went back in {}", group.group_id);
        }
    }
}

fn check_group(group: &ClassicGroup) {
    if group.state == GroupState::Stable {
        assert!(!group.members.is_empty(), "a Stable group has members");
        for member in group.members.values() {
            assert!(!member.assignment.is_empty(), "Stable member {} has no assignment", member.member_id);
            assert!(member.awaiting_join.is_none(), "a Stable group has no parked joins");
        }
    }
    if group.state != GroupState::CompletingRebalance {
        assert!(group.members.values().all(|m| m.awaiting_sync.is_none()), "parked sync outside CompletingRebalance");
    }
    match &group.leader_id {
        Some(leader) => assert!(group.members.contains_key(leader), "the leader is a member"),
        None => assert!(group.members.is_empty(), "a group with members has a leader"),
    }
    for (instance_id, member_id) in &group.static_members {
        let member = group.members.get(member_id).expect("static member exists");
        assert_eq!(member.group_instance_id.as_ref(), Some(instance_id));
    }
    for member in group.members.values() {
        if let Some(instance_id) = &member.group_instance_id {
            assert_eq!(group.static_members.get(instance_id), Some(&member.member_id));
        }
        assert!(!group.pending_join_members.contains(&member.member_id));
    }
}

fn run(ops: Vec<Op>) {
    let mut h = Harness::new();
    let mut clients = vec![Client::default(); CLIENTS];
    let mut issued: BTreeMap<RequestId, usize> = BTreeMap::new();
    let mut seen = 0usize;
    let mut generations = BTreeMap::new();

    for op in ops {
        let op = match op {
            Op::Act { client } => {
                let c = &clients[client];
                if c.awaiting {
                    Op::Tick { ms: 500 }
                } else if c.member_id.is_empty() || c.needs_rejoin || c.generation_id <= 0 {
                    Op::Join { client, version: 5 }
                } else if !c.synced {
                    Op::Sync { client }
                } else {
                    Op::Heartbeat { client }
                }
            }
            op => op,
        };
        match op {
            Op::Act { .. } => {}
            Op::Join { client, version } => {
                let c = &clients[client];
                let request = JoinGroup {
                    group_id: group_of(client).into(),
                    ..join_request(&format!("client{client}"), &c.member_id, instance_id(client).as_deref(), version)
                };
                let id = h.join(request);
                issued.insert(id, client);
                clients[client].awaiting = true;
            }
            Op::Sync { client } => {
                let c = &clients[client];
                let assignments: Vec<SyncAssignment> = c
                    .members_to_assign
                    .iter()
                    .map(|m| SyncAssignment { member_id: m.clone(), assignment: Bytes::from(format!("for {m}")) })
                    .collect();
                let request = SyncGroup {
                    group_id: group_of(client).into(),
                    group_instance_id: instance_id(client),
                    assignments,
                    ..sync_request(&c.member_id, c.generation_id, &[])
                };
                let id = h.sync(request);
                issued.insert(id, client);
                clients[client].awaiting = true;
            }
            Op::Heartbeat { client } => {
                let c = clients[client].clone();
                let error =
                    h.heartbeat_on(group_of(client), &c.member_id, instance_id(client).as_deref(), c.generation_id);
                let c = &mut clients[client];
                match error {
                    ErrorCode::NONE => {}
                    ErrorCode::REBALANCE_IN_PROGRESS => c.needs_rejoin = true,
                    _ => *c = Client::default(),
                }
            }
            Op::Commit { client, offset } => {
                let c = clients[client].clone();
                let generation = if offset % 3 == 0 { -1 } else { c.generation_id };
                let request = OffsetCommit {
                    group_id: group_of(client).into(),
                    group_instance_id: instance_id(client),
                    ..commit_request(&c.member_id, generation, &[("t", (offset % 2) as i32, offset)])
                };
                h.commit(request);
            }
            Op::Leave { client } => {
                let c = clients[client].clone();
                let effects = h.coordinator.leave_group(
                    0,
                    LeaveGroup {
                        group_id: group_of(client).into(),
                        members: vec![LeaveMember {
                            member_id: c.member_id,
                            group_instance_id: instance_id(client),
                            reason: None,
                        }],
                    },
                    h.now_ms,
                );
                h.apply(effects);
                h.responses.remove(&0);
            }
            Op::Tick { ms } => h.advance(ms),
        }
        // Clients learn from the responses that arrived.
        let new: Vec<(RequestId, Response)> = h.arrivals[seen..].to_vec();
        seen = h.arrivals.len();
        for (id, response) in new {
            let Some(&client) = issued.get(&id) else {
                continue;
            };
            let c = &mut clients[client];
            c.awaiting = false;
            match response {
                Response::JoinGroup(r) if r.error_code.is_none() => {
                    c.member_id = r.member_id.clone();
                    c.generation_id = r.generation_id;
                    c.synced = false;
                    c.needs_rejoin = false;
                    c.members_to_assign = if r.leader == r.member_id && !r.skip_assignment {
                        r.members.iter().map(|m| m.member_id.clone()).collect()
                    } else {
                        Vec::new()
                    };
                }
                Response::JoinGroup(r) if r.error_code == ErrorCode::MEMBER_ID_REQUIRED => {
                    c.member_id = r.member_id.clone();
                }
                Response::JoinGroup(r) if r.error_code == ErrorCode::REBALANCE_IN_PROGRESS => {}
                Response::JoinGroup(_) => *c = Client::default(),
                Response::SyncGroup(r) if r.error_code.is_none() => c.synced = true,
                Response::SyncGroup(r) if r.error_code == ErrorCode::REBALANCE_IN_PROGRESS => c.needs_rejoin = true,
                Response::SyncGroup(_) => *c = Client::default(),
                _ => {}
            }
        }
        check_invariants(&h, &mut generations);
    }

    // With no more requests, time alone must answer everything and empty every group.
    for _ in 0..20 {
        h.advance_with_deadlines(60_000);
        check_invariants(&h, &mut generations);
    }
    for id in issued.keys() {
        assert!(h.responses.contains_key(id), "request {id} never answered");
    }
    for group in h.coordinator.groups.values() {
        assert_eq!(group.state, GroupState::Empty, "{} still has members", group.group_id);
    }
    let reloaded = replayed(&h.log, GroupConfig::default());
    assert_eq!(persisted_view(&reloaded), persisted_view(&h.coordinator));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn random_client_behaviour_keeps_the_invariants(ops in proptest::collection::vec(op(), 0..120)) {
        run(ops);
    }
}
