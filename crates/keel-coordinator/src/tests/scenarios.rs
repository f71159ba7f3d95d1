//! Scenario tests: each one pins a behaviour of Kafka's classic group coordinator.

use bytes::Bytes;

use super::*;
use crate::records::CoordinatorRecord;

/// Three consumers of a new group, joined at t, t+1s, t+2s; the group is Stable at the end.
/// Returns (harness, member ids in join order, generation).
fn stable_group_of_three() -> (Harness, Vec<String>, i32) {
    let mut h = Harness::new();
    let joins = [h.join(join_request("c1", "", None, 3))];
    h.advance(1_000);
    let joins = [joins[0], h.join(join_request("c2", "", None, 3))];
    h.advance(1_000);
    let joins = [joins[0], joins[1], h.join(join_request("c3", "", None, 3))];
    h.advance_with_deadlines(10_000);
    let ids: Vec<String> = joins.iter().map(|id| h.joined(*id).member_id.clone()).collect();
    let generation = h.joined(joins[0]).generation_id;
    let leader = h.joined(joins[0]).leader.clone();
    let syncs: Vec<RequestId> = ids
        .iter()
        .map(|m| {
            let assignments: Vec<(&str, &[u8])> = if *m == leader {
                vec![(ids[0].as_str(), b"a1"), (ids[1].as_str(), b"a2"), (ids[2].as_str(), b"a3")]
            } else {
                vec![]
            };
            h.sync(sync_request(m, generation, &assignments))
        })
        .collect();
    for sync in syncs {
        assert_eq!(h.synced(sync).error_code, ErrorCode::NONE);
    }
    // A SyncGroup answered from a Stable group does not restart the session; a heartbeat does.
    for id in &ids {
        assert_eq!(h.heartbeat(id, generation), ErrorCode::NONE);
    }
    (h, ids, generation)
}

fn state(h: &Harness) -> GroupState {
    h.coordinator.describe_group(GROUP).state
}

#[test]
fn three_members_join_a_new_group_after_the_initial_delay_and_get_their_assignments() {
    let mut h = Harness::new();
    let first = h.join(join_request("c1", "", None, 3));
    h.advance(1_000);
    let second = h.join(join_request("c2", "", None, 3));
    h.advance(1_000);
    let third = h.join(join_request("c3", "", None, 3));

    // The initial delay (3s) runs from the first join; members kept arriving, so it is
    // extended by another 3s (KIP-134): nothing is answered at t+3s.
    h.advance(1_000);
    assert_eq!(state(&h), GroupState::PreparingRebalance);
    assert!(h.join_response(first).is_none());
    h.advance(2_999);
    assert!(h.join_response(first).is_none());
    h.advance(1);

    let (r1, r2, r3) = (h.joined(first).clone(), h.joined(second).clone(), h.joined(third).clone());
    for r in [&r1, &r2, &r3] {
        assert_eq!(r.error_code, ErrorCode::NONE);
        assert_eq!(r.generation_id, 1);
        assert_eq!(r.protocol_name.as_deref(), Some("range"));
        assert_eq!(r.leader, r1.member_id, "the first member leads");
    }
    assert!(r1.member_id.starts_with("c1-"), "member ids are <client.id>-<uuid>");
    assert_eq!(r1.members.len(), 3, "the leader sees every member");
    assert!(r2.members.is_empty() && r3.members.is_empty(), "followers see none");
    assert_eq!(r1.members[0].metadata, subscription(&["t"]));
    assert_eq!(state(&h), GroupState::CompletingRebalance);

    // Followers' SyncGroups wait for the leader's.
    let s2 = h.sync(sync_request(&r2.member_id, 1, &[]));
    let s3 = h.sync(sync_request(&r3.member_id, 1, &[]));
    assert!(h.sync_response(s2).is_none() && h.sync_response(s3).is_none());
    let log_before = h.log.len();
    let s1 = h.sync(sync_request(
        &r1.member_id,
        1,
        &[(&r1.member_id, b"a1"), (&r2.member_id, b"a2"), (&r3.member_id, b"a3")],
    ));
    assert_eq!(h.synced(s1).assignment, Bytes::from_static(b"a1"));
    assert_eq!(h.synced(s2).assignment, Bytes::from_static(b"a2"));
    assert_eq!(h.synced(s3).assignment, Bytes::from_static(b"a3"));
    assert_eq!(h.synced(s2).protocol_name.as_deref(), Some("range"));
    assert_eq!(state(&h), GroupState::Stable);

    // Completing the sync wrote the group's metadata with every assignment.
    assert_eq!(h.log.len(), log_before + 1);
    let record = &h.log[log_before];
    match CoordinatorRecord::decode(&record.key, record.value.as_deref()).unwrap() {
        CoordinatorRecord::GroupMetadata { value: Some(value), .. } => {
            assert_eq!(value.generation, 1);
            assert_eq!(value.leader.as_deref(), Some(r1.member_id.as_str()));
            let assignments: Vec<&[u8]> = value.members.iter().map(|m| &m.assignment[..]).collect();
            assert_eq!(assignments, [&b"a1"[..], b"a2", b"a3"]);
        }
        other => panic!("expected group metadata, got {other:?}"),
    }

    for r in [&r1, &r2, &r3] {
        assert_eq!(h.heartbeat(&r.member_id, 1), ErrorCode::NONE);
    }
}

#[test]
fn the_sync_record_is_persisted_before_the_sync_responses() {
    let mut h = Harness::new();
    let join = h.join(join_request("c1", "", None, 3));
    h.advance_with_deadlines(10_000);
    let member_id = h.joined(join).member_id.clone();
    let effects = h.coordinator.sync_group(99, sync_request(&member_id, 1, &[(&member_id, b"x")]), h.now_ms);
    assert!(matches!(effects.as_slice(), [Effect::Persist(records), Effect::Respond(99, _)] if records.len() == 1));
}

#[test]
fn an_expired_session_removes_the_member_and_the_others_rejoin_with_the_next_generation() {
    let (mut h, ids, generation) = stable_group_of_three();
    // c1 and c2 keep heartbeating, c3 goes silent: within one session timeout it is gone.
    let silent_since_ms = h.now_ms;
    loop {
        h.advance(1_000);
        if state(&h) != GroupState::Stable {
            break;
        }
        assert_eq!(h.heartbeat(&ids[0], generation), ErrorCode::NONE);
        assert_eq!(h.heartbeat(&ids[1], generation), ErrorCode::NONE);
        assert!(h.now_ms - silent_since_ms <= SESSION_MS as i64, "c3 outlived its session");
    }
    assert_eq!(state(&h), GroupState::PreparingRebalance, "c3's session expired");
    assert_eq!(h.heartbeat(&ids[2], generation), ErrorCode::UNKNOWN_MEMBER_ID);
    assert_eq!(h.heartbeat(&ids[0], generation), ErrorCode::REBALANCE_IN_PROGRESS);

    let j1 = h.join(join_request("c1", &ids[0], None, 5));
    assert!(h.join_response(j1).is_none(), "waits for c2");
    let j2 = h.join(join_request("c2", &ids[1], None, 5));
    // Everyone known has rejoined: the join completes at once (no delay after the first one).
    assert_eq!(h.joined(j1).generation_id, generation + 1);
    assert_eq!(h.joined(j2).generation_id, generation + 1);
    assert_eq!(h.joined(j1).members.len(), 2);
}

#[test]
fn a_late_member_makes_the_others_rejoin_through_rebalance_in_progress_heartbeats() {
    let (mut h, ids, generation) = stable_group_of_three();
    let late = h.join(join_request("c4", "", None, 3));
    assert!(h.join_response(late).is_none());
    assert_eq!(state(&h), GroupState::PreparingRebalance);
    for id in &ids {
        assert_eq!(h.heartbeat(id, generation), ErrorCode::REBALANCE_IN_PROGRESS);
    }
    let rejoins: Vec<RequestId> =
        ids.iter().enumerate().map(|(i, id)| h.join(join_request(&format!("c{}", i + 1), id, None, 5))).collect();
    let r = h.joined(late).clone();
    assert_eq!(r.generation_id, generation + 1);
    for rejoin in rejoins {
        assert_eq!(h.joined(rejoin).generation_id, generation + 1);
    }
    assert_eq!(state(&h), GroupState::CompletingRebalance);
}

#[test]
fn members_that_do_not_rejoin_within_the_rebalance_timeout_are_dropped() {
    let (mut h, ids, generation) = stable_group_of_three();
    let rejoin = h.join(join_request("c1", &ids[0], None, 5)); // the leader forces a rebalance
                                                               // c2 and c3 stay alive (their heartbeats say REBALANCE_IN_PROGRESS) but never rejoin.
    for _ in 0..(REBALANCE_MS / 5_000 - 1) {
        h.advance(5_000);
        assert_eq!(h.heartbeat(&ids[1], generation), ErrorCode::REBALANCE_IN_PROGRESS);
        assert_eq!(h.heartbeat(&ids[2], generation), ErrorCode::REBALANCE_IN_PROGRESS);
    }
    h.advance(4_999);
    assert!(h.join_response(rejoin).is_none());
    h.advance(1);
    let r = h.joined(rejoin);
    assert_eq!(r.generation_id, generation + 1);
    assert_eq!(r.members.len(), 1, "c2 and c3 did not rejoin");
    assert_eq!(h.heartbeat(&ids[1], generation), ErrorCode::UNKNOWN_MEMBER_ID);
}

#[test]
fn a_v4_join_without_member_id_gets_member_id_required_then_joins() {
    let mut h = Harness::new();
    let first = h.join(join_request("client", "", None, 4));
    let r = h.joined(first).clone();
    assert_eq!(r.error_code, ErrorCode::MEMBER_ID_REQUIRED);
    assert!(r.member_id.starts_with("client-"));
    let second = h.join(join_request("client", &r.member_id, None, 4));
    h.advance_with_deadlines(10_000);
    assert_eq!(h.joined(second).error_code, ErrorCode::NONE);
    assert_eq!(h.joined(second).member_id, r.member_id);
}

#[test]
fn a_pending_member_id_expires_after_the_session_timeout() {
    let mut h = Harness::new();
    let first = h.join(join_request("client", "", None, 4));
    let member_id = h.joined(first).member_id.clone();
    h.advance(SESSION_MS as i64);
    let late = h.join(join_request("client", &member_id, None, 4));
    assert_eq!(h.joined(late).error_code, ErrorCode::UNKNOWN_MEMBER_ID);
}

#[test]
fn v0_to_v3_members_without_id_are_added_directly() {
    let mut h = Harness::new();
    let join = h.join(join_request("old", "", None, 0));
    assert!(h.join_response(join).is_none(), "parked in the initial rebalance, not MEMBER_ID_REQUIRED");
    h.advance_with_deadlines(10_000);
    assert_eq!(h.joined(join).error_code, ErrorCode::NONE);
}

#[test]
fn a_static_member_restarting_within_its_session_keeps_its_assignment_without_a_rebalance() {
    let mut h = Harness::new();
    let a = h.join(join_request("c1", "", Some("instance-a"), 5));
    let b = h.join(join_request("c2", "", Some("instance-b"), 5));
    h.advance_with_deadlines(10_000);
    let (a_id, b_id) = (h.joined(a).member_id.clone(), h.joined(b).member_id.clone());
    assert!(a_id.starts_with("instance-a-"), "static member ids start with the instance id");
    let generation = h.joined(a).generation_id;
    let leader = h.joined(a).leader.clone();
    let (leader_id, follower_id) = if leader == a_id { (&a_id, &b_id) } else { (&b_id, &a_id) };
    h.sync(sync_request(follower_id, generation, &[]));
    h.sync(sync_request(leader_id, generation, &[(&a_id, b"for-a"), (&b_id, b"for-b")]));
    assert_eq!(state(&h), GroupState::Stable);

    // instance-b restarts: it has lost its member id and joins as a new member.
    h.advance(2_000);
    let log_before = h.log.len();
    let rejoin = h.join(join_request("c2", "", Some("instance-b"), 5));
    let r = h.joined(rejoin).clone();
    assert_eq!(r.error_code, ErrorCode::NONE);
    assert_ne!(r.member_id, b_id);
    assert_eq!(r.generation_id, generation, "no rebalance");
    assert_eq!(state(&h), GroupState::Stable);
    assert_eq!(h.log.len(), log_before + 1, "the new member id is persisted");

    let sync = h.sync(SyncGroup {
        group_instance_id: Some("instance-b".into()),
        ..sync_request(&r.member_id, generation, &[])
    });
    assert_eq!(h.synced(sync).assignment, Bytes::from_static(b"for-b"));

    // The old incarnation is fenced.
    assert_eq!(h.heartbeat_static(&b_id, Some("instance-b"), generation), ErrorCode::FENCED_INSTANCE_ID);
    assert_eq!(h.heartbeat_static(&r.member_id, Some("instance-b"), generation), ErrorCode::NONE);
}

#[test]
fn a_static_member_does_not_block_the_join_by_not_rejoining() {
    let mut h = Harness::new();
    let a = h.join(join_request("c1", "", Some("instance-a"), 5));
    let b = h.join(join_request("c2", "", None, 3));
    h.advance_with_deadlines(10_000);
    let (a_id, b_id) = (h.joined(a).member_id.clone(), h.joined(b).member_id.clone());
    assert_eq!(h.joined(a).leader, a_id);
    assert_eq!(h.heartbeat_static(&a_id, Some("instance-a"), 1), ErrorCode::NONE);
    // b changes its subscription, which forces a rebalance that a sits out.
    let rejoin = h.join(JoinGroup { protocols: protocols(&["t", "u"]), ..join_request("c2", &b_id, None, 5) });
    assert!(h.join_response(rejoin).is_none());
    // a stays alive (heartbeats say REBALANCE_IN_PROGRESS) but does not rejoin.
    for _ in 0..(REBALANCE_MS / 5_000 - 1) {
        h.advance(5_000);
        assert_eq!(h.heartbeat_static(&a_id, Some("instance-a"), 1), ErrorCode::REBALANCE_IN_PROGRESS);
    }
    h.advance(5_000);
    let r = h.joined(rejoin);
    assert_eq!(r.members.len(), 2, "the static member stays without rejoining (KIP-345)");
    assert_eq!(r.leader, b_id, "the leader did not rejoin, so the first that did leads");
}

#[test]
fn offset_commits_are_fenced_by_generation_membership_and_rebalance() {
    let (mut h, ids, generation) = stable_group_of_three();
    let ok = h.commit(commit_request(&ids[0], generation, &[("t", 0, 10)]));
    assert_eq!(commit_errors(&ok), [ErrorCode::NONE]);

    let stale = h.commit(commit_request(&ids[0], generation - 1, &[("t", 0, 11)]));
    assert_eq!(commit_errors(&stale), [ErrorCode::ILLEGAL_GENERATION]);
    let stranger = h.commit(commit_request("nobody", generation, &[("t", 0, 11), ("t", 1, 1)]));
    assert_eq!(commit_errors(&stranger), [ErrorCode::UNKNOWN_MEMBER_ID, ErrorCode::UNKNOWN_MEMBER_ID]);
    let simple = h.commit(commit_request("", -1, &[("t", 0, 11)]));
    assert_eq!(commit_errors(&simple), [ErrorCode::UNKNOWN_MEMBER_ID], "the group is not empty");

    // In CompletingRebalance the member has the new generation but no assignment yet.
    for (i, id) in ids.iter().enumerate() {
        h.join(join_request(&format!("c{}", i + 1), id, None, 5));
    }
    assert_eq!(state(&h), GroupState::CompletingRebalance);
    let early = h.commit(commit_request(&ids[0], generation + 1, &[("t", 0, 12)]));
    assert_eq!(commit_errors(&early), [ErrorCode::REBALANCE_IN_PROGRESS]);

    let fetched = h.coordinator.fetch_offsets(&OffsetFetch {
        group_id: GROUP.into(),
        topics: Some(vec![OffsetFetchTopic { name: "t".into(), partition_indexes: vec![0, 1] }]),
    });
    let partitions = &fetched.topics[0].partitions;
    assert_eq!((partitions[0].committed_offset, partitions[0].committed_leader_epoch), (10, 5));
    assert_eq!(partitions[0].metadata, "meta");
    assert_eq!((partitions[1].committed_offset, partitions[1].committed_leader_epoch), (-1, -1));
}

#[test]
fn simple_commits_work_on_unknown_and_empty_groups_and_fetch_returns_them() {
    let mut h = Harness::new();
    let r = h.commit(commit_request("", -1, &[("t", 0, 5), ("u", 2, 7)]));
    assert_eq!(commit_errors(&r), [ErrorCode::NONE, ErrorCode::NONE]);
    assert_eq!(h.coordinator.list_groups(&[])[0].state, GroupState::Empty);
    let all = h.coordinator.fetch_offsets(&OffsetFetch { group_id: GROUP.into(), topics: None });
    let summary: Vec<(String, i32, i64)> = all
        .topics
        .iter()
        .flat_map(|t| t.partitions.iter().map(move |p| (t.name.clone(), p.partition_index, p.committed_offset)))
        .collect();
    assert_eq!(summary, [("t".into(), 0, 5), ("u".into(), 2, 7)]);

    let unknown = h.coordinator.fetch_offsets(&OffsetFetch {
        group_id: "other".into(),
        topics: Some(vec![OffsetFetchTopic { name: "t".into(), partition_indexes: vec![0] }]),
    });
    assert_eq!(unknown.topics[0].partitions[0].committed_offset, -1);
    assert_eq!(unknown.error_code, ErrorCode::NONE);
}

#[test]
fn commits_to_a_missing_group_with_a_generation_fail_by_version() {
    let mut h = Harness::new();
    let old = h.commit(commit_request("m", 3, &[("t", 0, 1)]));
    assert_eq!(commit_errors(&old), [ErrorCode::ILLEGAL_GENERATION]);
    let new = h.commit(OffsetCommit { version: 9, ..commit_request("m", 3, &[("t", 0, 1)]) });
    assert_eq!(commit_errors(&new), [ErrorCode::GROUP_ID_NOT_FOUND]);
}

#[test]
fn oversized_commit_metadata_is_refused_per_partition() {
    let mut h = Harness::new();
    let mut request = commit_request("", -1, &[("t", 0, 1), ("t", 1, 1)]);
    request.topics[0].partitions[1].committed_metadata = Some("x".repeat(4097));
    let r = h.commit(request);
    assert_eq!(commit_errors(&r), [ErrorCode::NONE, ErrorCode::OFFSET_METADATA_TOO_LARGE]);
}

#[test]
fn a_follower_s_assignments_are_ignored_and_unknown_members_cannot_sync() {
    let mut h = Harness::new();
    let a = h.join(join_request("c1", "", None, 3));
    let b = h.join(join_request("c2", "", None, 3));
    h.advance_with_deadlines(10_000);
    let (a_id, b_id) = (h.joined(a).member_id.clone(), h.joined(b).member_id.clone());
    assert_eq!(h.joined(a).leader, a_id);

    let follower = h.sync(sync_request(&b_id, 1, &[(&a_id, b"bogus"), (&b_id, b"bogus")]));
    assert!(h.sync_response(follower).is_none(), "still waiting for the leader");
    assert_eq!(state(&h), GroupState::CompletingRebalance);
    let unknown = h.sync(sync_request("stranger", 1, &[]));
    assert_eq!(h.synced(unknown).error_code, ErrorCode::UNKNOWN_MEMBER_ID);
    let stale = h.sync(sync_request(&b_id, 0, &[]));
    assert_eq!(h.synced(stale).error_code, ErrorCode::ILLEGAL_GENERATION);

    let leader = h.sync(sync_request(&a_id, 1, &[(&a_id, b"real-a")]));
    assert_eq!(h.synced(leader).assignment, Bytes::from_static(b"real-a"));
    assert_eq!(h.synced(follower).assignment, Bytes::new(), "the leader gave b nothing");
}

#[test]
fn sync_during_preparing_rebalance_is_refused() {
    let (mut h, ids, generation) = stable_group_of_three();
    h.join(join_request("c4", "", None, 3));
    let sync = h.sync(sync_request(&ids[1], generation, &[]));
    assert_eq!(h.synced(sync).error_code, ErrorCode::REBALANCE_IN_PROGRESS);
}

#[test]
fn invalid_session_timeouts_and_group_ids_are_refused() {
    let mut h = Harness::new();
    for session_timeout_ms in [5_999, 1_800_001] {
        let join = h.join(JoinGroup { session_timeout_ms, ..join_request("c", "", None, 5) });
        assert_eq!(h.joined(join).error_code, ErrorCode::INVALID_SESSION_TIMEOUT);
    }
    let join = h.join(JoinGroup { group_id: String::new(), ..join_request("c", "", None, 5) });
    assert_eq!(h.joined(join).error_code, ErrorCode::INVALID_GROUP_ID);
    let sync = h.sync(SyncGroup { group_id: String::new(), ..sync_request("m", 1, &[]) });
    assert_eq!(h.synced(sync).error_code, ErrorCode::INVALID_GROUP_ID);
    assert!(h.coordinator.list_groups(&[]).is_empty(), "no group was created");
    assert!(h.log.is_empty());
}

#[test]
fn an_inconsistent_protocol_is_refused() {
    let (mut h, _, _) = stable_group_of_three();
    let other_type = h.join(JoinGroup { protocol_type: "connect".into(), ..join_request("x", "", None, 5) });
    assert_eq!(h.joined(other_type).error_code, ErrorCode::INCONSISTENT_GROUP_PROTOCOL);
    let other_protocol = h.join(JoinGroup {
        protocols: vec![JoinProtocol { name: "sticky".into(), metadata: Bytes::new() }],
        ..join_request("x", "", None, 5)
    });
    assert_eq!(h.joined(other_protocol).error_code, ErrorCode::INCONSISTENT_GROUP_PROTOCOL);
}

#[test]
fn group_max_size_turns_away_extra_members() {
    let mut h = Harness::with_config(GroupConfig { group_max_size: 1, ..GroupConfig::default() });
    let first = h.join(join_request("c1", "", None, 3));
    let second = h.join(join_request("c2", "", None, 3));
    assert!(h.join_response(first).is_none());
    assert_eq!(h.joined(second).error_code, ErrorCode::GROUP_MAX_SIZE_REACHED);
}

#[test]
fn leaving_members_trigger_a_rebalance_and_the_last_one_empties_the_group() {
    let (mut h, ids, generation) = stable_group_of_three();
    let r = h.leave(vec![LeaveMember { member_id: ids[2].clone(), group_instance_id: None, reason: None }]);
    assert_eq!(r.members[0].error_code, ErrorCode::NONE);
    assert_eq!(state(&h), GroupState::PreparingRebalance);
    let r = h.leave(vec![
        LeaveMember { member_id: ids[0].clone(), group_instance_id: None, reason: None },
        LeaveMember { member_id: ids[1].clone(), group_instance_id: None, reason: None },
        LeaveMember { member_id: "ghost".into(), group_instance_id: None, reason: None },
    ]);
    let errors: Vec<ErrorCode> = r.members.iter().map(|m| m.error_code).collect();
    assert_eq!(errors, [ErrorCode::NONE, ErrorCode::NONE, ErrorCode::UNKNOWN_MEMBER_ID]);
    let description = h.coordinator.describe_group(GROUP);
    assert_eq!(description.state, GroupState::Empty);
    assert_eq!(h.coordinator.describe_group(GROUP).members.len(), 0);
    // The empty generation was written.
    let last = h.log.last().unwrap();
    match CoordinatorRecord::decode(&last.key, last.value.as_deref()).unwrap() {
        CoordinatorRecord::GroupMetadata { value: Some(v), .. } => {
            assert_eq!(v.generation, generation + 1);
            assert!(v.members.is_empty());
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_static_member_can_be_removed_by_instance_id() {
    let mut h = Harness::new();
    h.join(join_request("c1", "", Some("i1"), 5));
    h.advance_with_deadlines(10_000);
    let r = h.leave(vec![LeaveMember { member_id: String::new(), group_instance_id: Some("i1".into()), reason: None }]);
    assert_eq!(r.members[0].error_code, ErrorCode::NONE);
    assert_eq!(state(&h), GroupState::Empty);
}

#[test]
fn describe_and_list_report_kafka_s_view() {
    let (h, ids, _) = stable_group_of_three();
    let d = h.coordinator.describe_group(GROUP);
    assert_eq!(
        (d.state, d.protocol_type.as_str(), d.protocol_data.as_str()),
        (GroupState::Stable, "consumer", "range")
    );
    assert_eq!(d.members[0].member_id, ids[0]);
    assert_eq!(d.members[0].member_assignment, Bytes::from_static(b"a1"));
    assert_eq!(d.members[0].member_metadata, subscription(&["t"]));
    assert_eq!(h.coordinator.describe_group("nope").state, GroupState::Dead);
    assert_eq!(h.coordinator.list_groups(&[GroupState::Stable]).len(), 1);
    assert!(h.coordinator.list_groups(&[GroupState::Empty]).is_empty());
    assert_eq!(GroupState::parse(" stable "), Some(GroupState::Stable));
}

#[test]
fn only_empty_groups_can_be_deleted_and_deletion_writes_tombstones() {
    let (mut h, ids, generation) = stable_group_of_three();
    h.commit(commit_request(&ids[0], generation, &[("t", 0, 1)]));
    let (results, effects) = h.coordinator.delete_groups(&[GROUP.into(), "missing".into()], h.now_ms);
    assert_eq!(
        results,
        [(GROUP.into(), ErrorCode::NON_EMPTY_GROUP), ("missing".into(), ErrorCode::GROUP_ID_NOT_FOUND)]
    );
    assert!(effects.is_empty());

    h.leave(ids.iter().map(|m| LeaveMember { member_id: m.clone(), group_instance_id: None, reason: None }).collect());
    let (results, effects) = h.coordinator.delete_groups(&[GROUP.into()], h.now_ms);
    assert_eq!(results, [(GROUP.into(), ErrorCode::NONE)]);
    let [Effect::Persist(records)] = effects.as_slice() else { panic!("{effects:?}") };
    let tombstones: Vec<CoordinatorRecord> =
        records.iter().map(|r| CoordinatorRecord::decode(&r.key, r.value.as_deref()).unwrap()).collect();
    assert!(matches!(
        &tombstones[..],
        [CoordinatorRecord::OffsetCommit { value: None, .. }, CoordinatorRecord::GroupMetadata { value: None, .. },]
    ));
    assert!(h.coordinator.list_groups(&[]).is_empty());
}

#[test]
fn an_empty_group_s_offsets_expire_a_retention_period_after_it_emptied() {
    let config = GroupConfig {
        offsets_retention_ms: 100_000,
        offsets_retention_check_interval_ms: 10_000,
        ..GroupConfig::default()
    };
    let mut h = Harness::with_config(config.clone());
    let join = h.join(join_request("c1", "", None, 3));
    h.advance_with_deadlines(10_000);
    let member_id = h.joined(join).member_id.clone();
    h.sync(sync_request(&member_id, 1, &[(&member_id, b"a")]));
    h.commit(commit_request(&member_id, 1, &[("t", 0, 42)]));

    // Stays a member well past the retention: a live group's offsets never expire.
    for _ in 0..30 {
        h.advance_with_deadlines(5_000);
        assert_eq!(h.heartbeat(&member_id, 1), ErrorCode::NONE);
    }
    h.leave(vec![LeaveMember { member_id: member_id.clone(), group_instance_id: None, reason: None }]);
    let emptied_at_ms = h.now_ms;
    h.advance_with_deadlines(90_000);
    assert_eq!(h.coordinator.list_groups(&[]).len(), 1, "not yet");
    h.advance_with_deadlines(20_000);
    assert!(h.coordinator.list_groups(&[]).is_empty(), "offsets expired, then the group went");
    assert!(h.now_ms - emptied_at_ms >= 100_000);

    let tail: Vec<CoordinatorRecord> = h.log[h.log.len() - 2..]
        .iter()
        .map(|r| CoordinatorRecord::decode(&r.key, r.value.as_deref()).unwrap())
        .collect();
    assert!(matches!(
        &tail[..],
        [CoordinatorRecord::OffsetCommit { value: None, .. }, CoordinatorRecord::GroupMetadata { value: None, .. },]
    ));
    // And the log replays to nothing at all.
    let reloaded = replayed(&h.log, config);
    assert!(reloaded.list_groups(&[]).is_empty());
}

#[test]
fn offsets_of_topics_a_stable_consumer_group_no_longer_subscribes_to_expire() {
    let config = GroupConfig {
        offsets_retention_ms: 100_000,
        offsets_retention_check_interval_ms: 10_000,
        ..GroupConfig::default()
    };
    let mut h = Harness::with_config(config);
    let join = h.join(join_request("c1", "", None, 3)); // subscribes to "t"
    h.advance_with_deadlines(10_000);
    let member_id = h.joined(join).member_id.clone();
    h.sync(sync_request(&member_id, 1, &[(&member_id, b"a")]));
    h.commit(commit_request(&member_id, 1, &[("t", 0, 1), ("old", 0, 2)]));
    for _ in 0..25 {
        h.advance_with_deadlines(5_000);
        h.heartbeat(&member_id, 1);
    }
    let all = h.coordinator.fetch_offsets(&OffsetFetch { group_id: GROUP.into(), topics: None });
    let topics: Vec<&str> = all.topics.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(topics, ["t"]);
}

#[test]
fn replaying_the_emitted_records_rebuilds_the_same_groups_and_offsets() {
    let (mut h, ids, generation) = stable_group_of_three();
    h.commit(commit_request(&ids[0], generation, &[("t", 0, 100), ("t", 1, 200)]));
    h.commit(commit_request(&ids[1], generation, &[("t", 1, 250)]));
    // OffsetCommit v2–v4 may set a retention (written as OffsetCommitValue v1); those versions
    // carry no leader epoch.
    let mut simple = OffsetCommit {
        version: 4,
        retention_time_ms: 60_000,
        group_id: "simple".into(),
        ..commit_request("", -1, &[("s", 0, 1)])
    };
    simple.topics[0].partitions[0].committed_leader_epoch = -1;
    h.commit(simple);
    // A second group that became Empty.
    let other = h.join(JoinGroup { group_id: "other".into(), ..join_request("o", "", None, 3) });
    for id in &ids {
        h.heartbeat(id, generation);
    }
    h.advance_with_deadlines(5_000);
    let other_id = h.joined(other).member_id.clone();
    h.leave_group_of("other", &other_id);

    let reloaded = replayed(&h.log, GroupConfig::default());
    assert_eq!(persisted_view(&reloaded), persisted_view(&h.coordinator));
}

#[test]
fn a_reloaded_group_keeps_working_and_expires_silent_members() {
    let (h, ids, generation) = stable_group_of_three();
    let mut coordinator = replayed(&h.log, GroupConfig::default());
    let mut now_ms = h.now_ms;
    assert!(coordinator.on_loaded(now_ms).is_empty());
    let hb = |c: &mut Coordinator, m: &str, now_ms: i64| {
        let effects = c.heartbeat(
            1,
            Heartbeat {
                group_id: GROUP.into(),
                generation_id: generation,
                member_id: m.into(),
                group_instance_id: None,
            },
            now_ms,
        );
        match effects.as_slice() {
            [Effect::Respond(_, Response::Heartbeat(r))] => r.error_code,
            other => panic!("{other:?}"),
        }
    };
    now_ms += 5_000;
    assert_eq!(hb(&mut coordinator, &ids[0], now_ms), ErrorCode::NONE);
    now_ms += SESSION_MS as i64 - 4_000;
    coordinator.tick(now_ms);
    // Only the member that heartbeat after the load is left, and a rebalance is on.
    assert_eq!(coordinator.describe_group(GROUP).members.len(), 1);
    assert_eq!(coordinator.describe_group(GROUP).state, GroupState::PreparingRebalance);
}

impl Harness {
    fn leave_group_of(&mut self, group_id: &str, member_id: &str) {
        let effects = self.coordinator.leave_group(
            999_999,
            LeaveGroup {
                group_id: group_id.into(),
                members: vec![LeaveMember { member_id: member_id.into(), group_instance_id: None, reason: None }],
            },
            self.now_ms,
        );
        self.apply(effects);
    }
}
