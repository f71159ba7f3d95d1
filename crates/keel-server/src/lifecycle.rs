//! Broker lifecycle: registration, heartbeats, fencing and controlled shutdown, as Kafka's
//! KRaft controller runs them.
//!
//! A broker registers with the active controller when it starts (a new incarnation each
//! process start) and is fenced until its metadata image has caught up with its registration;
//! its first heartbeat after that unfences it. It then heartbeats every
//! `broker.heartbeat.interval.ms`. The active controller keeps the time of each broker's last
//! heartbeat in memory (a new active controller gives every broker a full session first) and
//! fences a broker that has sent none for `broker.session.timeout.ms`. A broker that is told to
//! stop (SIGTERM) asks for a controlled shutdown first: the controller moves its leaderships to
//! other in-sync replicas and fences it.
//!
//! What a fence or an unfence does to partitions is decided here by pure functions over the
//! image ([`plan_fence`], [`plan_unfence`], [`elect_leader`]), unit-tested without a node.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kafka_protocol::error::ResponseError;
use keel_cluster::{MetadataImage, MetadataRecord, NodeId, PartitionState};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::broker::{stopped, Broker};
use crate::error::ApiError;

/// Kafka's `broker.session.timeout.ms` default.
pub const SESSION_TIMEOUT_DEFAULT_MS: i64 = 9_000;
/// Kafka's `broker.heartbeat.interval.ms` default.
pub const HEARTBEAT_INTERVAL_DEFAULT_MS: i64 = 2_000;

/// A broker's heartbeat, as the active controller receives it (Kafka's BrokerHeartbeat).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Heartbeat {
    pub node_id: NodeId,
    pub epoch: i64,
    /// The last metadata log entry the broker has applied.
    pub applied_index: u64,
    pub want_shutdown: bool,
}

/// The active controller's answer to a heartbeat.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HeartbeatReply {
    pub fenced: bool,
    /// The broker may stop: its controlled shutdown is done.
    pub shutdown_ready: bool,
}

/// The leader `state` gets when the brokers for which `usable` is false cannot lead: the current
/// leader if it still may, else the first replica (in assignment order) that is in the ISR and
/// usable; `-1` when there is none (the partition is offline until one comes back).
pub fn elect_leader(state: &PartitionState, usable: impl Fn(NodeId) -> bool) -> NodeId {
    if state.leader >= 0 && usable(state.leader) && state.isr.contains(&state.leader) {
        return state.leader;
    }
    state.replicas.iter().copied().find(|r| state.isr.contains(r) && usable(*r)).unwrap_or(-1)
}

/// `state` with `leader` and `isr`, its epochs bumped as Kafka bumps them: the leader epoch when
/// the leader changes, the partition epoch on any change. `None` when nothing changes.
fn changed(state: &PartitionState, leader: NodeId, isr: Vec<NodeId>) -> Option<PartitionState> {
    if leader == state.leader && isr == state.isr {
        return None;
    }
    let mut next = state.clone();
    if leader != state.leader {
        next.leader_epoch += 1;
    }
    next.leader = leader;
    next.isr = isr;
    next.partition_epoch += 1;
    Some(next)
}

/// The partition records that take `node` out of service: it leaves every ISR it is in (unless
/// it is the last member: the ISR keeps the last replica known to have every record, so that no
/// other replica is elected without `unclean.leader.election.enable`), and every partition it
/// led gets another leader from the ISR, or none.
pub fn plan_fence(image: &MetadataImage, node: NodeId) -> Vec<MetadataRecord> {
    let usable = |id: NodeId| id != node && image.usable_brokers().any(|b| b.node_id == id);
    partition_changes(image, |state| {
        let isr: Vec<NodeId> = if state.isr.len() > 1 {
            state.isr.iter().copied().filter(|r| *r != node).collect()
        } else {
            state.isr.clone()
        };
        let next = PartitionState { isr: isr.clone(), ..state.clone() };
        changed(state, elect_leader(&next, usable), isr)
    })
}

/// The partition records that give leaderless partitions whose ISR holds `node` their leader
/// back once `node` is unfenced.
pub fn plan_unfence(image: &MetadataImage, node: NodeId) -> Vec<MetadataRecord> {
    let usable = |id: NodeId| id == node || image.usable_brokers().any(|b| b.node_id == id);
    partition_changes(image, |state| {
        if state.leader >= 0 || !state.isr.contains(&node) {
            return None;
        }
        changed(state, elect_leader(state, usable), state.isr.clone())
    })
}

/// The records of every partition `change` changes.
fn partition_changes(
    image: &MetadataImage,
    change: impl Fn(&PartitionState) -> Option<PartitionState>,
) -> Vec<MetadataRecord> {
    let mut records = Vec::new();
    for topic in image.topics.values() {
        for (&partition, state) in &topic.partitions {
            if let Some(state) = change(state) {
                records.push(MetadataRecord::Partition { topic_id: topic.topic_id, partition, state });
            }
        }
    }
    records
}

/// The active controller's record of when each broker last sent a heartbeat. Reset whenever
/// this node starts a new term as leader, so that every broker gets a full session with it.
#[derive(Default)]
pub struct Heartbeats {
    inner: Mutex<(u64, HashMap<NodeId, Instant>)>,
}

impl Heartbeats {
    pub fn record(&self, term: u64, node: NodeId, now: Instant) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if inner.0 != term {
            *inner = (term, HashMap::new());
        }
        inner.1.insert(node, now);
    }

    /// The brokers of `unfenced` that sent no heartbeat for `timeout`, as seen in `term`. A
    /// broker not heard from yet in this term starts its session now.
    pub fn expired(&self, term: u64, unfenced: &[NodeId], now: Instant, timeout: Duration) -> Vec<NodeId> {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if inner.0 != term {
            *inner = (term, HashMap::new());
        }
        unfenced
            .iter()
            .copied()
            .filter(|node| now.duration_since(*inner.1.entry(*node).or_insert(now)) > timeout)
            .collect()
    }
}

impl Broker {
    /// `broker.session.timeout.ms`.
    pub fn session_timeout(&self) -> Duration {
        let ms =
            self.config(&self.image()).broker_i64("broker.session.timeout.ms").unwrap_or(SESSION_TIMEOUT_DEFAULT_MS);
        Duration::from_millis(ms.max(1) as u64)
    }

    /// `broker.heartbeat.interval.ms`.
    pub fn heartbeat_interval(&self) -> Duration {
        let ms = self
            .config(&self.image())
            .broker_i64("broker.heartbeat.interval.ms")
            .unwrap_or(HEARTBEAT_INTERVAL_DEFAULT_MS);
        Duration::from_millis(ms.max(1) as u64)
    }

    /// This broker's epoch: that of its registration for this process.
    pub fn broker_epoch(&self) -> Option<i64> {
        self.image().brokers.get(&self.node_id).filter(|b| b.incarnation == self.incarnation).map(|b| b.epoch)
    }

    /// One heartbeat to the active controller; re-registers when the controller no longer
    /// knows this registration (STALE_BROKER_EPOCH).
    pub async fn send_heartbeat(
        self: &Arc<Self>,
        want_shutdown: bool,
        deadline: Instant,
    ) -> Result<HeartbeatReply, ApiError> {
        let Some(epoch) = self.broker_epoch() else {
            self.register(self.registration(), deadline).await?;
            return Err(ApiError::with(ResponseError::StaleBrokerEpoch, "registered again"));
        };
        let heartbeat =
            Heartbeat { node_id: self.node_id, epoch, applied_index: self.image().applied_index, want_shutdown };
        let reply = self.heartbeat(heartbeat, deadline).await;
        if reply.as_ref().is_err_and(|e| e.code == ResponseError::StaleBrokerEpoch) {
            self.register(self.registration(), deadline).await?;
        }
        reply
    }

    /// Heartbeats until the controller unfences this broker (it has caught up), each attempt
    /// within `report_every`; prints progress while the quorum does not answer.
    pub async fn wait_unfenced(self: &Arc<Self>, report_every: Duration) -> Result<(), ApiError> {
        loop {
            match self.send_heartbeat(false, Instant::now() + report_every).await {
                Ok(reply) if !reply.fenced => return Ok(()),
                Ok(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                Err(error) if error.code == ResponseError::StaleBrokerEpoch => {}
                Err(error) if error.code == ResponseError::RequestTimedOut => println!(
                    "keel node {} waiting for the controller quorum to unfence it: {}",
                    self.node_id,
                    error.message.unwrap_or_default()
                ),
                Err(error) => return Err(error),
            }
        }
    }

    /// Asks the active controller for a controlled shutdown: it moves this broker's
    /// leaderships to other in-sync replicas and fences it. Skipped when this broker is the only
    /// one (there is nobody to hand over to). Best effort within `timeout`.
    pub async fn controlled_shutdown(self: &Arc<Self>, timeout: Duration) {
        let image = self.image();
        if image.brokers.keys().all(|id| *id == self.node_id) {
            return;
        }
        match self.send_heartbeat(true, Instant::now() + timeout).await {
            Ok(reply) if reply.shutdown_ready => tracing::info!("controlled shutdown done: leaderships moved off"),
            Ok(_) => tracing::warn!("the controller did not complete the controlled shutdown"),
            Err(error) => {
                tracing::warn!(error = %error.message.unwrap_or_default(), "controlled shutdown failed; stopping anyway")
            }
        }
    }
}

/// Heartbeats to the active controller every `broker.heartbeat.interval.ms` until `stop`.
pub async fn heartbeat_loop(broker: Arc<Broker>, mut stop: watch::Receiver<bool>) {
    loop {
        let interval = broker.heartbeat_interval();
        tokio::select! {
            _ = stopped(&mut stop) => return,
            _ = tokio::time::sleep(interval) => {}
        }
        let deadline = Instant::now() + interval.max(Duration::from_millis(500));
        if let Err(error) = broker.send_heartbeat(false, deadline).await {
            tracing::debug!(error = %error.message.unwrap_or_default(), "heartbeat failed");
        }
    }
}

/// On the active controller: fences every broker whose session expired, checked every
/// second (Kafka's `BrokerHeartbeatManager`). Runs on every node; does nothing on the others.
pub async fn fence_expired_brokers(broker: Arc<Broker>, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stopped(&mut stop) => return,
            _ = tick.tick() => {}
        }
        if !broker.metadata.is_leader() {
            continue;
        }
        let image = broker.image();
        let unfenced: Vec<NodeId> = image.brokers.values().filter(|b| !b.fenced).map(|b| b.node_id).collect();
        let term = broker.metadata.quorum().term;
        let expired = broker.heartbeats.expired(term, &unfenced, Instant::now(), broker.session_timeout());
        for node in expired {
            if let Err(error) = broker.fence_broker(node).await {
                tracing::warn!(node, error = %error.message.unwrap_or_default(), "cannot fence a broker whose session expired");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keel_cluster::BrokerRegistration;
    use uuid::Uuid;

    fn image(brokers: &[(NodeId, bool)], partitions: &[(Vec<NodeId>, Vec<NodeId>, NodeId)]) -> MetadataImage {
        let mut image = MetadataImage::default();
        for &(node_id, fenced) in brokers {
            image.apply(&MetadataRecord::RegisterBroker(BrokerRegistration { node_id, fenced, ..Default::default() }));
        }
        let topic_id = Uuid::new_v4();
        image.apply(&MetadataRecord::Topic { name: "t".into(), topic_id });
        for (partition, (replicas, isr, leader)) in partitions.iter().enumerate() {
            image.apply(&MetadataRecord::Partition {
                topic_id,
                partition: partition as i32,
                state: PartitionState {
                    replicas: replicas.clone(),
                    isr: isr.clone(),
                    leader: *leader,
                    leader_epoch: 0,
                    partition_epoch: 0,
                },
            });
        }
        image
    }

    fn states(records: &[MetadataRecord]) -> Vec<(i32, NodeId, Vec<NodeId>, i32)> {
        records
            .iter()
            .filter_map(|r| match r {
                MetadataRecord::Partition { partition, state, .. } => {
                    Some((*partition, state.leader, state.isr.clone(), state.leader_epoch))
                }
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_leader_is_elected_from_the_usable_isr_in_assignment_order() {
        let state =
            PartitionState { replicas: vec![1, 2, 3], isr: vec![3, 2], leader: 1, leader_epoch: 4, partition_epoch: 7 };
        assert_eq!(elect_leader(&state, |_| true), 2, "the leader is not in the ISR: the first ISR replica");
        assert_eq!(elect_leader(&state, |id| id != 2), 3);
        assert_eq!(elect_leader(&state, |id| id == 1), -1, "no usable ISR member: offline");
        let led = PartitionState { leader: 3, ..state };
        assert_eq!(elect_leader(&led, |_| true), 3, "a usable leader keeps leading");
    }

    #[test]
    fn fencing_moves_leadership_to_the_isr_or_leaves_the_partition_offline() {
        let image = image(
            &[(1, false), (2, false), (3, false)],
            &[
                (vec![1, 2, 3], vec![1, 2, 3], 1),
                (vec![1, 2], vec![1], 1),
                (vec![2, 3], vec![2, 3], 2),
                (vec![3, 1], vec![3, 1], 3),
            ],
        );
        assert_eq!(
            states(&plan_fence(&image, 1)),
            vec![
                (0, 2, vec![2, 3], 1), // led by 1: the next ISR replica leads, 1 leaves the ISR
                (1, -1, vec![1], 1),   // 1 was the only in-sync replica: offline, ISR kept
                (3, 3, vec![3], 0),    // 1 leaves the ISR of a partition it did not lead
            ]
        );
    }

    #[test]
    fn unfencing_brings_back_leaderless_partitions_it_holds_in_sync() {
        let mut image = image(&[(1, true), (2, false)], &[(vec![1, 2], vec![1], -1), (vec![2, 1], vec![2], 2)]);
        let epoch = image.brokers[&1].epoch;
        image.apply(&MetadataRecord::ChangeBroker {
            node_id: 1,
            epoch,
            fenced: Some(false),
            in_controlled_shutdown: None,
        });
        assert_eq!(states(&plan_unfence(&image, 1)), vec![(0, 1, vec![1], 1)]);
        assert!(plan_unfence(&image, 2).is_empty(), "nothing is leaderless with 2 in its ISR");
    }

    #[test]
    fn sessions_expire_after_the_timeout_and_restart_with_a_new_term() {
        let heartbeats = Heartbeats::default();
        let start = Instant::now();
        let timeout = Duration::from_secs(9);
        assert!(heartbeats.expired(1, &[1, 2], start, timeout).is_empty(), "a new term starts every session");
        heartbeats.record(1, 1, start + Duration::from_secs(5));
        assert_eq!(heartbeats.expired(1, &[1, 2], start + Duration::from_secs(10), timeout), vec![2]);
        assert!(
            heartbeats.expired(2, &[1, 2], start + Duration::from_secs(30), timeout).is_empty(),
            "a new term gives everyone a full session"
        );
    }
}
