//! Where the replicas of new partitions go: Kafka's rack-aware assignment
//! (`AdminUtils.assignReplicasToBrokersRackAware`) as a pure function of the brokers, the
//! partitions and a starting point, so the controller's decision is unit-tested without a node.
//!
//! Brokers are arranged alternating racks (`a1, b1, c1, a2, b2, ...`); partition `p`'s leader is
//! the broker at `(p + start) % n` of that list, so leaders go round the brokers evenly; each
//! further replica walks on from the leader with a shift that grows every `n` partitions, taking
//! a broker only if its rack has no replica yet (while some rack has none) and it has none yet
//! (while some broker has none). Brokers without a `broker.rack` count as one rack of their own.

use std::collections::{BTreeMap, BTreeSet};

use keel_cluster::NodeId;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlacementError {
    #[error("replication factor must be larger than 0")]
    ReplicationFactorTooSmall,
    #[error(
        "unable to replicate the partition {replication_factor} time(s): the target replication \
         factor of {replication_factor} cannot be reached because only {brokers} broker(s) are registered"
    )]
    NotEnoughBrokers { replication_factor: i16, brokers: usize },
}

/// Brokers in rack-alternating order: the first broker (by id) of each rack (racks in order),
/// then the second of each, and so on.
fn rack_alternated(brokers: &[(NodeId, Option<String>)]) -> Vec<(NodeId, Option<String>)> {
    let mut by_rack: BTreeMap<Option<String>, Vec<NodeId>> = BTreeMap::new();
    for (id, rack) in brokers {
        by_rack.entry(rack.clone()).or_default().push(*id);
    }
    for ids in by_rack.values_mut() {
        ids.sort_unstable();
        ids.reverse();
    }
    let mut arranged = Vec::with_capacity(brokers.len());
    while arranged.len() < brokers.len() {
        for (rack, ids) in by_rack.iter_mut() {
            if let Some(id) = ids.pop() {
                arranged.push((id, rack.clone()));
            }
        }
    }
    arranged
}

/// Kafka's `replicaIndex`: the broker `replica_index + 1` steps (modulo a shift) after the
/// leader, never the leader itself.
fn replica_index(first: usize, shift: usize, replica_index: usize, brokers: usize) -> usize {
    let step = 1 + (shift + replica_index) % (brokers - 1);
    (first + step) % brokers
}

/// Replica lists, leader first, for partitions `first_partition .. first_partition + count`
/// over `brokers` (id, rack). `start` and `shift` choose where the round begins (Kafka draws
/// them at random; the caller passes them in, so the result is reproducible).
pub fn place_replicas(
    brokers: &[(NodeId, Option<String>)],
    first_partition: i32,
    count: i32,
    replication_factor: i16,
    start: usize,
    shift: usize,
) -> Result<Vec<Vec<NodeId>>, PlacementError> {
    if replication_factor <= 0 {
        return Err(PlacementError::ReplicationFactorTooSmall);
    }
    let factor = replication_factor as usize;
    if factor > brokers.len() {
        return Err(PlacementError::NotEnoughBrokers { replication_factor, brokers: brokers.len() });
    }
    let arranged = rack_alternated(brokers);
    let n = arranged.len();
    let rack_count = arranged.iter().map(|(_, rack)| rack).collect::<BTreeSet<_>>().len();
    let start = start % n;
    let mut assignment = Vec::with_capacity(count.max(0) as usize);
    for partition in first_partition.max(0)..first_partition.max(0) + count.max(0) {
        let partition = partition as usize;
        // Kafka adds one to the shift at every multiple of `n`; from the partition index, so
        // that partitions added later continue the same round.
        let shift = shift % n + partition / n;
        let first = (partition + start) % n;
        let (leader, leader_rack) = &arranged[first];
        let mut replicas = vec![*leader];
        let mut racks = BTreeSet::from([leader_rack.clone()]);
        let mut k = 0;
        while replicas.len() < factor {
            let (broker, rack) = &arranged[replica_index(first, shift * rack_count, k, n)];
            k += 1;
            let rack_ok = !racks.contains(rack) || racks.len() == rack_count;
            let broker_ok = !replicas.contains(broker);
            if rack_ok && broker_ok {
                replicas.push(*broker);
                racks.insert(rack.clone());
            }
            debug_assert!(k <= 4 * n * n, "placement must terminate");
        }
        assignment.push(replicas);
    }
    Ok(assignment)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn brokers(racks: &[(NodeId, Option<&str>)]) -> Vec<(NodeId, Option<String>)> {
        racks.iter().map(|(id, rack)| (*id, rack.map(str::to_string))).collect()
    }

    #[test]
    fn one_broker_holds_everything() {
        let one = brokers(&[(1, None)]);
        assert_eq!(place_replicas(&one, 0, 3, 1, 7, 3).unwrap(), vec![vec![1], vec![1], vec![1]]);
        assert_eq!(
            place_replicas(&one, 0, 1, 2, 0, 0),
            Err(PlacementError::NotEnoughBrokers { replication_factor: 2, brokers: 1 })
        );
        assert_eq!(place_replicas(&one, 0, 1, 0, 0, 0), Err(PlacementError::ReplicationFactorTooSmall));
    }

    #[test]
    fn replicas_are_distinct_and_leaders_balanced() {
        let three = brokers(&[(1, None), (2, None), (3, None)]);
        for start in 0..3 {
            for shift in 0..3 {
                let assignment = place_replicas(&three, 0, 30, 3, start, shift).unwrap();
                let mut leaders: HashMap<NodeId, usize> = HashMap::new();
                let mut followers: HashMap<NodeId, usize> = HashMap::new();
                for replicas in &assignment {
                    let distinct: BTreeSet<_> = replicas.iter().collect();
                    assert_eq!(distinct.len(), 3, "{replicas:?}");
                    *leaders.entry(replicas[0]).or_default() += 1;
                    *followers.entry(replicas[1]).or_default() += 1;
                }
                assert_eq!(leaders.values().copied().collect::<BTreeSet<_>>(), BTreeSet::from([10]));
                assert_eq!(followers.values().copied().collect::<BTreeSet<_>>(), BTreeSet::from([10]));
            }
        }
        // RF 2 over 5 brokers: every broker leads 2 of 10 partitions.
        let five = brokers(&[(1, None), (2, None), (3, None), (4, None), (5, None)]);
        let assignment = place_replicas(&five, 0, 10, 2, 2, 1).unwrap();
        let mut leaders: HashMap<NodeId, usize> = HashMap::new();
        for replicas in &assignment {
            assert_ne!(replicas[0], replicas[1]);
            *leaders.entry(replicas[0]).or_default() += 1;
        }
        assert!(leaders.values().all(|&count| count == 2), "{leaders:?}");
    }

    #[test]
    fn every_partition_spans_as_many_racks_as_it_can() {
        // Six brokers in three racks of two; RF 3 puts one replica in each rack.
        let racked =
            brokers(&[(1, Some("a")), (2, Some("a")), (3, Some("b")), (4, Some("b")), (5, Some("c")), (6, Some("c"))]);
        let rack_of: HashMap<NodeId, String> = racked.iter().map(|(id, r)| (*id, r.clone().unwrap())).collect();
        for (start, shift) in [(0, 0), (1, 2), (5, 4)] {
            for replicas in place_replicas(&racked, 0, 24, 3, start, shift).unwrap() {
                let racks: BTreeSet<_> = replicas.iter().map(|id| &rack_of[id]).collect();
                assert_eq!(racks.len(), 3, "{replicas:?}");
            }
            // RF 4 over 3 racks: every rack, and one rack twice, never a broker twice.
            for replicas in place_replicas(&racked, 0, 12, 4, start, shift).unwrap() {
                let racks: BTreeSet<_> = replicas.iter().map(|id| &rack_of[id]).collect();
                let distinct: BTreeSet<_> = replicas.iter().collect();
                assert_eq!((racks.len(), distinct.len()), (3, 4), "{replicas:?}");
            }
        }
        // Uneven racks: two brokers in a, one in b; RF 2 always uses both racks.
        let uneven = brokers(&[(1, Some("a")), (2, Some("a")), (3, Some("b"))]);
        for replicas in place_replicas(&uneven, 0, 9, 2, 1, 1).unwrap() {
            assert!(replicas.contains(&3), "{replicas:?}");
        }
    }

    #[test]
    fn later_partitions_continue_the_round() {
        let three = brokers(&[(1, None), (2, None), (3, None)]);
        let all = place_replicas(&three, 0, 9, 2, 1, 0).unwrap();
        let tail = place_replicas(&three, 4, 5, 2, 1, 0).unwrap();
        assert_eq!(tail, all[4..].to_vec());
    }
}
