//! Keel's group coordinator: Kafka's classic consumer group protocol (JoinGroup, SyncGroup,
//! Heartbeat, LeaveGroup, static membership, committed offsets, OffsetDelete) and KIP-848
//! consumer groups (ConsumerGroupHeartbeat) as a deterministic state machine over the records of
//! one `__consumer_offsets` partition.
//!
//! Architecture invariant: no I/O, no async runtime, no clock, no `kafka-protocol` types in the
//! API. Every entry point takes the current time (`now_ms`) and returns [`Effect`]s; the server
//! maps wire versions to the plain structs of [`api`], runs the effects, and calls
//! [`Coordinator::tick`] at [`Coordinator::next_deadline_ms`]. The behaviour follows Apache Kafka
//! 4.x's `GroupMetadataManager` (classic paths), `ClassicGroup` and `OffsetMetadataManager`.
//!
//! # The effect ordering contract
//!
//! The coordinator applies every change to its in-memory state at once (Kafka applies it too,
//! then waits for the write before answering). What the server must do:
//!
//! 1. **Effects run in order.** Within the `Vec` a call returns, every [`Effect::Persist`] comes
//!    before the [`Effect::Respond`]s that depend on it (one `Persist` per call at most, first).
//! 2. **A response waits for every earlier write.** A `Respond` may be delivered only once every
//!    `Persist` emitted before it — by the same call or by any earlier call, `tick` included — is
//!    durable in `__consumer_offsets` (replicated like `acks=all`). The simplest way: one FIFO of
//!    effects per coordinator, where a response leaves only when the writes ahead of it are done.
//!    Answers of the read-only calls (`fetch_offsets`, `describe_group`, `list_groups`) may reflect
//!    writes still in flight; to read only committed state as Kafka does, answer them after the
//!    writes in flight at the time of the call complete.
//! 3. **A failed write is a lost coordinator.** Kafka reverts its state to the last committed
//!    snapshot when an append fails. Keel's equivalent: answer every response still queued after
//!    the failed `Persist` with [`Response::with_error`] and
//!    [`ErrorCode::from_append_error`]`(append error)`, drop this `Coordinator`, and build a new one
//!    by [`Coordinator::replay`]ing the partition (or give up leadership of it). Never keep using a
//!    coordinator whose state is ahead of its log.
//! 4. **Load before serving.** On becoming leader of the partition: [`Coordinator::new`], `replay`
//!    every record of every non-transactional batch in offset order, then
//!    [`Coordinator::on_loaded`]; until then answer group requests with COORDINATOR_LOAD_IN_PROGRESS.
//! 5. **Calls are serialized.** One call at a time per coordinator; [`RequestId`]s are unique among
//!    requests awaiting an answer; every request with an id gets exactly one `Respond`.
//!
//! # KIP-848 consumer groups
//!
//! [`Coordinator::consumer_group_heartbeat`] (ConsumerGroupHeartbeat v0–1),
//! [`Coordinator::describe_consumer_group`] (ConsumerGroupDescribe) and
//! [`Coordinator::set_topics`] run the "consumer" group protocol with server-side assignors
//! (`uniform`, `range`). The assignors only see what `set_topics` told them: call it after
//! `replay` and before serving (it is a no-op when nothing changed since the last epoch), and
//! again on every topic creation, deletion or partition change. Consumer group state is
//! persisted as Kafka's records (types 3, 5, 6, 7, 8) and rebuilt by `replay`.
//!
//! # What the server does itself
//!
//! NOT_COORDINATOR for groups hashed to another partition, COORDINATOR_LOAD_IN_PROGRESS while
//! loading, UNKNOWN_TOPIC_OR_PARTITION for committed topics that do not exist, authorization, and
//! version-specific response shaping (e.g. LeaveGroup v0–v2 carry one member's error at the top).

pub mod api;
mod assignor;
mod config;
mod consumer_group;
mod coordinator;
pub mod error;
mod group;
mod membership;
mod offsets;
pub mod records;
mod timer;
pub mod transaction;

#[cfg(test)]
mod tests;

pub use api::{
    ConsumerGroupDescribedMember, ConsumerGroupDescription, ConsumerGroupHeartbeat, ConsumerGroupHeartbeatResponse,
    ConsumerGroupTopicPartitions, DescribedTopicPartitions, OffsetDelete, OffsetDeleteResponse,
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic, OffsetDeleteTopic, TopicMetadata,
};
pub use api::{
    DescribedMember, Effect, GroupDescription, GroupListing, GroupState, Heartbeat, HeartbeatResponse, JoinGroup,
    JoinGroupMember, JoinGroupResponse, JoinProtocol, LeaveGroup, LeaveGroupResponse, LeaveMember, LeaveMemberResponse,
    OffsetCommit, OffsetCommitPartition, OffsetCommitResponse, OffsetCommitResponsePartition,
    OffsetCommitResponseTopic, OffsetCommitTopic, OffsetFetch, OffsetFetchPartition, OffsetFetchResult,
    OffsetFetchResultTopic, OffsetFetchTopic, RequestId, Response, SyncAssignment, SyncGroup, SyncGroupResponse,
};
pub use config::GroupConfig;
pub use coordinator::{Coordinator, MemberIdGenerator, SequentialMemberIds};
pub use error::{ErrorCode, RecordError};
pub use records::{CoordinatorRecord, Record};
