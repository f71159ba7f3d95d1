//! OffsetDelete (API 47) against classic groups.

use super::*;
use crate::records::CoordinatorRecord;

fn delete(h: &mut Harness, group_id: &str, topics: &[(&str, &[i32])]) -> OffsetDeleteResponse {
    let request = OffsetDelete {
        group_id: group_id.into(),
        topics: topics
            .iter()
            .map(|(name, partitions)| OffsetDeleteTopic {
                name: (*name).into(),
                partition_indexes: partitions.to_vec(),
            })
            .collect(),
    };
    let (response, effects) = h.coordinator.delete_offsets(&request, h.now_ms);
    h.apply(effects);
    response
}

fn errors(response: &OffsetDeleteResponse) -> Vec<(String, i32, ErrorCode)> {
    response
        .topics
        .iter()
        .flat_map(|t| t.partitions.iter().map(move |p| (t.name.clone(), p.partition_index, p.error_code)))
        .collect()
}

fn committed(h: &Harness, topic: &str, partition: i32) -> i64 {
    h.coordinator
        .fetch_offsets(&OffsetFetch {
            group_id: GROUP.into(),
            topics: Some(vec![OffsetFetchTopic { name: topic.into(), partition_indexes: vec![partition] }]),
        })
        .topics[0]
        .partitions[0]
        .committed_offset
}

/// A Stable "consumer" group of one member subscribed to "t", with offsets on "t" and "old".
fn stable_consumer_group() -> (Harness, String) {
    let mut h = Harness::new();
    let join = h.join(join_request("c1", "", None, 3));
    h.advance_with_deadlines(10_000);
    let member_id = h.joined(join).member_id.clone();
    h.sync(sync_request(&member_id, 1, &[(&member_id, b"a")]));
    let response = h.commit(commit_request(&member_id, 1, &[("t", 0, 1), ("old", 0, 2), ("old", 1, 3)]));
    assert!(commit_errors(&response).iter().all(|e| e.is_none()));
    (h, member_id)
}

#[test]
fn unknown_groups_and_empty_ids_are_refused() {
    let mut h = Harness::new();
    let response = delete(&mut h, "nope", &[("t", &[0])]);
    assert_eq!(response.error_code, ErrorCode::GROUP_ID_NOT_FOUND);
    assert!(response.topics.is_empty());
    assert_eq!(delete(&mut h, "", &[("t", &[0])]).error_code, ErrorCode::INVALID_GROUP_ID);
    assert!(h.log.is_empty());
}

#[test]
fn a_live_consumer_group_keeps_subscribed_topics_and_loses_the_others() {
    let (mut h, _) = stable_consumer_group();
    let log_len = h.log.len();
    let response = delete(&mut h, GROUP, &[("t", &[0]), ("old", &[0, 1, 7])]);
    assert_eq!(response.error_code, ErrorCode::NONE);
    assert_eq!(
        errors(&response),
        [
            ("t".into(), 0, ErrorCode::GROUP_SUBSCRIBED_TO_TOPIC),
            ("old".into(), 0, ErrorCode::NONE),
            ("old".into(), 1, ErrorCode::NONE),
            // Nothing committed there: still NONE, and no tombstone.
            ("old".into(), 7, ErrorCode::NONE),
        ]
    );
    let tombstones: Vec<_> =
        h.log[log_len..].iter().map(|r| CoordinatorRecord::decode(&r.key, r.value.as_deref()).unwrap()).collect();
    assert_eq!(tombstones.len(), 2);
    assert!(tombstones.iter().all(|r| matches!(r, CoordinatorRecord::OffsetCommit { value: None, .. })));
    assert_eq!(committed(&h, "t", 0), 1);
    assert_eq!(committed(&h, "old", 0), -1);
    // The tombstones replay to the same offsets.
    let reloaded = replayed(&h.log, GroupConfig::default());
    assert_eq!(persisted_view(&reloaded), persisted_view(&h.coordinator));
}

#[test]
fn a_live_group_of_another_protocol_type_is_non_empty() {
    let mut h = Harness::new();
    let join = h.join(JoinGroup { protocol_type: "connect".into(), ..join_request("c1", "", None, 3) });
    h.advance_with_deadlines(10_000);
    assert_eq!(h.joined(join).error_code, ErrorCode::NONE);
    let response = delete(&mut h, GROUP, &[("t", &[0])]);
    assert_eq!(response.error_code, ErrorCode::NON_EMPTY_GROUP);
}

#[test]
fn an_empty_group_loses_any_offset() {
    let mut h = Harness::new();
    // A simple (manual-commit) group.
    h.commit(commit_request("", -1, &[("t", 0, 5)]));
    let response = delete(&mut h, GROUP, &[("t", &[0])]);
    assert_eq!(errors(&response), [("t".into(), 0, ErrorCode::NONE)]);
    assert_eq!(committed(&h, "t", 0), -1);
    // The group is still there (Kafka only deletes it in the expiry sweep).
    assert_eq!(delete(&mut h, GROUP, &[("t", &[0])]).error_code, ErrorCode::NONE);
}
