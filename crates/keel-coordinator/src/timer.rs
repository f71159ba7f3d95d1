//! Deadlines of the coordinator (Kafka's `CoordinatorTimer` keys): member sessions, the join
//! phase (initial delay or rebalance timeout), the sync phase, and the offset expiry sweep.
//! Scheduling a key again replaces its deadline, as in Kafka; the server only needs
//! `next_deadline_ms` and a call to `tick` when it passes.

use std::collections::{BTreeMap, BTreeSet};

/// What a deadline is for. Ordered so that simultaneous deadlines fire in a fixed order.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum TimerKey {
    /// A member's (or KIP-394 pending member's) session.
    Heartbeat { group_id: String, member_id: String },
    /// The join phase of a group.
    Join { group_id: String },
    /// The sync phase of a group: members that did not sync by then are removed.
    Sync { group_id: String },
    /// The periodic offset and group expiry sweep (`offsets.retention.check.interval.ms`).
    GroupCleanup,
    /// A KIP-848 consumer group member's session.
    ConsumerSession { group_id: String, member_id: String },
    /// A KIP-848 member's deadline to revoke partitions (its rebalance timeout).
    ConsumerRebalance { group_id: String, member_id: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TimerAction {
    ExpireHeartbeat,
    /// Kafka's `tryCompleteInitialRebalanceElseSchedule(delayMs, remainingMs)`.
    InitialJoin {
        delay_ms: i32,
        remaining_ms: i32,
    },
    CompleteJoin,
    ExpireSync {
        generation_id: i32,
    },
    GroupCleanup,
    ExpireConsumerSession,
    /// Fence the member if it is still at this epoch and has not revoked its partitions.
    ExpireConsumerRebalance {
        member_epoch: i32,
    },
}

#[derive(Debug, Default, Clone)]
pub(crate) struct Timers {
    by_key: BTreeMap<TimerKey, (i64, TimerAction)>,
    by_deadline: BTreeSet<(i64, TimerKey)>,
}

impl Timers {
    pub fn schedule(&mut self, key: TimerKey, deadline_ms: i64, action: TimerAction) {
        self.cancel(&key);
        self.by_deadline.insert((deadline_ms, key.clone()));
        self.by_key.insert(key, (deadline_ms, action));
    }

    pub fn cancel(&mut self, key: &TimerKey) {
        if let Some((deadline_ms, _)) = self.by_key.remove(key) {
            self.by_deadline.remove(&(deadline_ms, key.clone()));
        }
    }

    pub fn contains(&self, key: &TimerKey) -> bool {
        self.by_key.contains_key(key)
    }

    pub fn next_deadline_ms(&self) -> Option<i64> {
        self.by_deadline.first().map(|(deadline_ms, _)| *deadline_ms)
    }

    /// Removes and returns the earliest timer due at `now_ms` whose key is not in `skip`.
    pub fn pop_due(&mut self, now_ms: i64, skip: &BTreeSet<TimerKey>) -> Option<(TimerKey, TimerAction)> {
        let key = self
            .by_deadline
            .iter()
            .take_while(|(deadline_ms, _)| *deadline_ms <= now_ms)
            .find(|(_, key)| !skip.contains(key))
            .map(|(_, key)| key.clone())?;
        let (deadline_ms, action) = self.by_key.remove(&key)?;
        self.by_deadline.remove(&(deadline_ms, key.clone()));
        Some((key, action))
    }

    /// Cancels every timer of a group (it is being deleted).
    pub fn cancel_group(&mut self, group_id: &str) {
        let keys: Vec<TimerKey> = self
            .by_key
            .keys()
            .filter(|key| match key {
                TimerKey::Heartbeat { group_id: g, .. }
                | TimerKey::Join { group_id: g }
                | TimerKey::Sync { group_id: g }
                | TimerKey::ConsumerSession { group_id: g, .. }
                | TimerKey::ConsumerRebalance { group_id: g, .. } => g == group_id,
                TimerKey::GroupCleanup => false,
            })
            .cloned()
            .collect();
        for key in keys {
            self.cancel(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rescheduling_replaces_the_deadline() {
        let mut timers = Timers::default();
        let key = TimerKey::Join { group_id: "g".into() };
        timers.schedule(key.clone(), 100, TimerAction::CompleteJoin);
        timers.schedule(key.clone(), 50, TimerAction::CompleteJoin);
        assert_eq!(timers.next_deadline_ms(), Some(50));
        assert_eq!(timers.pop_due(49, &BTreeSet::new()), None);
        assert_eq!(timers.pop_due(50, &BTreeSet::new()), Some((key, TimerAction::CompleteJoin)));
        assert_eq!(timers.next_deadline_ms(), None);
    }
}
