//! Server-side assignors of KIP-848 consumer groups (Kafka's `UniformAssignor` and
//! `RangeAssignor` in `org.apache.kafka.coordinator.group.assignor`). Pure functions of the
//! members' subscriptions, the topics' metadata and the previous target assignment; every
//! iteration is ordered, so the outcome is deterministic.
//!
//! - `uniform` (the default): sticky and balanced. Every member keeps the partitions of its
//!   previous target that it still subscribes to, the rest go to the least-loaded subscribed
//!   member, then partitions move from the most to the least loaded member while that narrows
//!   the gap by 2 or more. With identical subscriptions every member ends with ⌊P/M⌋ or ⌈P/M⌉
//!   partitions, as Kafka's `OptimizedUniformAssignmentBuilder`; with different subscriptions
//!   this is a local optimum like Kafka's `GeneralUniformAssignmentBuilder` (not the same
//!   partition choices).
//! - `range`: per topic, the subscribers sorted by member id get contiguous ranges, the first
//!   `P % M` one partition more (co-partitioned topics land on the same member). Not sticky.

use std::collections::{BTreeMap, BTreeSet};

use crate::api::TopicMetadata;

pub(crate) type TopicId = [u8; 16];
/// topic id → partitions.
pub(crate) type Assignment = BTreeMap<TopicId, BTreeSet<i32>>;

pub(crate) const UNIFORM: &str = "uniform";
pub(crate) const RANGE: &str = "range";

/// Runs the named assignor (`uniform` for unknown names). `subscriptions`: member id →
/// subscribed topic names; `topics`: by name.
pub(crate) fn assign(
    assignor: &str,
    subscriptions: &BTreeMap<String, BTreeSet<String>>,
    topics: &BTreeMap<String, TopicMetadata>,
    previous: &BTreeMap<String, Assignment>,
) -> BTreeMap<String, Assignment> {
    if assignor == RANGE {
        range(subscriptions, topics)
    } else {
        uniform(subscriptions, topics, previous)
    }
}

/// Partitions as (topic name, partition), the order every step uses.
type Key<'a> = (&'a str, i32);

fn uniform(
    subscriptions: &BTreeMap<String, BTreeSet<String>>,
    topics: &BTreeMap<String, TopicMetadata>,
    previous: &BTreeMap<String, Assignment>,
) -> BTreeMap<String, Assignment> {
    let by_id: BTreeMap<TopicId, &TopicMetadata> = topics.values().map(|t| (t.topic_id, t)).collect();
    let subscribed = |member: &str, topic: &str| subscriptions.get(member).is_some_and(|topics| topics.contains(topic));
    let mut owned: BTreeMap<&str, BTreeSet<Key<'_>>> =
        subscriptions.keys().map(|m| (m.as_str(), BTreeSet::new())).collect();
    let mut owner: BTreeMap<Key<'_>, &str> = BTreeMap::new();
    // 1. Stickiness: keep what is still valid.
    for (member, assignment) in previous {
        let Some(set) = owned.get_mut(member.as_str()) else {
            continue;
        };
        for (topic_id, partitions) in assignment {
            let Some(topic) = by_id.get(topic_id) else {
                continue;
            };
            if !subscribed(member, &topic.name) {
                continue;
            }
            for &p in partitions {
                let key = (topic.name.as_str(), p);
                if p >= 0 && p < topic.partitions && !owner.contains_key(&key) {
                    owner.insert(key, member.as_str());
                    set.insert(key);
                }
            }
        }
    }
    // 2. Unassigned partitions to the least-loaded subscriber (ties: smallest member id).
    let mut all_topics: BTreeSet<&str> = BTreeSet::new();
    for topics_of_member in subscriptions.values() {
        all_topics.extend(topics_of_member.iter().map(String::as_str));
    }
    for topic_name in all_topics {
        let Some(topic) = topics.get(topic_name) else {
            continue;
        };
        for p in 0..topic.partitions.max(0) {
            let key = (topic.name.as_str(), p);
            if owner.contains_key(&key) {
                continue;
            }
            let target = owned
                .iter()
                .filter(|(m, _)| subscribed(m, topic_name))
                .min_by_key(|(m, set)| (set.len(), **m))
                .map(|(m, _)| *m);
            if let Some(member) = target {
                owner.insert(key, member);
                if let Some(set) = owned.get_mut(member) {
                    set.insert(key);
                }
            }
        }
    }
    // 3. Balance: move a partition from a loaded member to a subscriber with at least two
    // fewer, until none can move. Each move lowers the sum of squared counts, so this ends.
    loop {
        let mut donors: Vec<(&str, usize)> = owned.iter().map(|(m, s)| (*m, s.len())).collect();
        donors.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        let least = donors.last().map_or(0, |d| d.1);
        let mut moved = None;
        'search: for (donor, count) in donors {
            if count < least + 2 {
                break;
            }
            // Highest partitions first, so that the lowest stay where they are.
            for key in owned[donor].iter().rev() {
                let receiver = owned
                    .iter()
                    .filter(|(m, s)| **m != donor && s.len() + 2 <= count && subscribed(m, key.0))
                    .min_by_key(|(m, s)| (s.len(), **m))
                    .map(|(m, _)| *m);
                if let Some(receiver) = receiver {
                    moved = Some((donor, receiver, *key));
                    break 'search;
                }
            }
        }
        let Some((donor, receiver, key)) = moved else {
            break;
        };
        if let Some(set) = owned.get_mut(donor) {
            set.remove(&key);
        }
        if let Some(set) = owned.get_mut(receiver) {
            set.insert(key);
        }
    }
    owned
        .into_iter()
        .map(|(member, keys)| {
            let mut assignment = Assignment::new();
            for (topic, p) in keys {
                if let Some(t) = topics.get(topic) {
                    assignment.entry(t.topic_id).or_default().insert(p);
                }
            }
            (member.to_owned(), assignment)
        })
        .collect()
}

fn range(
    subscriptions: &BTreeMap<String, BTreeSet<String>>,
    topics: &BTreeMap<String, TopicMetadata>,
) -> BTreeMap<String, Assignment> {
    let mut out: BTreeMap<String, Assignment> = subscriptions.keys().map(|m| (m.clone(), Assignment::new())).collect();
    for topic in topics.values() {
        let members: Vec<&String> =
            subscriptions.iter().filter(|(_, t)| t.contains(&topic.name)).map(|(m, _)| m).collect();
        if members.is_empty() || topic.partitions <= 0 {
            continue;
        }
        let n = members.len() as i32;
        let per = topic.partitions / n;
        let extra = topic.partitions % n;
        let mut start = 0;
        for (i, member) in members.into_iter().enumerate() {
            let len = per + i32::from((i as i32) < extra);
            if len > 0 {
                if let Some(a) = out.get_mut(member) {
                    a.entry(topic.topic_id).or_default().extend(start..start + len);
                }
            }
            start += len;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topic(name: &str, id: u8, partitions: i32) -> (String, TopicMetadata) {
        (name.to_owned(), TopicMetadata { name: name.to_owned(), topic_id: [id; 16], partitions })
    }

    fn subs(members: &[(&str, &[&str])]) -> BTreeMap<String, BTreeSet<String>> {
        members.iter().map(|(m, t)| ((*m).to_owned(), t.iter().map(|s| (*s).to_owned()).collect())).collect()
    }

    fn counts(a: &BTreeMap<String, Assignment>) -> Vec<usize> {
        a.values().map(|x| x.values().map(BTreeSet::len).sum()).collect()
    }

    fn disjoint_and_complete(a: &BTreeMap<String, Assignment>, total: usize) {
        let mut seen = BTreeSet::new();
        for assignment in a.values() {
            for (t, ps) in assignment {
                for p in ps {
                    assert!(seen.insert((*t, *p)), "partition assigned twice");
                }
            }
        }
        assert_eq!(seen.len(), total);
    }

    #[test]
    fn uniform_is_balanced_deterministic_and_sticky() {
        let topics: BTreeMap<_, _> = [topic("a", 1, 7), topic("b", 2, 5)].into_iter().collect();
        let s = subs(&[("m1", &["a", "b"]), ("m2", &["a", "b"]), ("m3", &["a", "b"])]);
        let first = uniform(&s, &topics, &BTreeMap::new());
        assert_eq!(first, uniform(&s, &topics, &BTreeMap::new()));
        disjoint_and_complete(&first, 12);
        assert_eq!(counts(&first), [4, 4, 4]);
        // A fourth member takes partitions without moving any other.
        let s4 = subs(&[("m1", &["a", "b"]), ("m2", &["a", "b"]), ("m3", &["a", "b"]), ("m4", &["a", "b"])]);
        let second = uniform(&s4, &topics, &first);
        disjoint_and_complete(&second, 12);
        assert_eq!(counts(&second), [3, 3, 3, 3]);
        for m in ["m1", "m2", "m3"] {
            for (t, ps) in &second[m] {
                assert!(ps.is_subset(&first[m][t]), "{m} got a partition it did not have");
            }
        }
    }

    #[test]
    fn uniform_respects_heterogeneous_subscriptions() {
        let topics: BTreeMap<_, _> = [topic("a", 1, 4), topic("b", 2, 4)].into_iter().collect();
        let s = subs(&[("m1", &["a"]), ("m2", &["a", "b"]), ("m3", &["b"])]);
        let out = uniform(&s, &topics, &BTreeMap::new());
        disjoint_and_complete(&out, 8);
        assert!(out["m1"].keys().all(|t| *t == [1; 16]));
        assert!(out["m3"].keys().all(|t| *t == [2; 16]));
        let c = counts(&out);
        assert!(c.iter().max().unwrap() - c.iter().min().unwrap() <= 1, "{c:?}");
    }

    #[test]
    fn range_gives_contiguous_ranges_with_the_extra_first() {
        let topics: BTreeMap<_, _> = [topic("a", 1, 5), topic("b", 2, 5)].into_iter().collect();
        let s = subs(&[("m1", &["a", "b"]), ("m2", &["a", "b"])]);
        let out = range(&s, &topics);
        assert_eq!(out["m1"][&[1; 16]], BTreeSet::from([0, 1, 2]));
        assert_eq!(out["m2"][&[1; 16]], BTreeSet::from([3, 4]));
        assert_eq!(out["m1"][&[2; 16]], BTreeSet::from([0, 1, 2]));
        disjoint_and_complete(&out, 10);
    }

    #[test]
    fn unknown_topics_and_members_without_subscriptions_get_nothing() {
        let topics: BTreeMap<_, _> = [topic("a", 1, 2)].into_iter().collect();
        let s = subs(&[("m1", &["missing"]), ("m2", &[])]);
        for out in [uniform(&s, &topics, &BTreeMap::new()), range(&s, &topics)] {
            assert!(out.values().all(BTreeMap::is_empty));
        }
    }
}
