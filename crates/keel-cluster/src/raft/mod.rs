//! The openraft plumbing of the cluster-metadata log: the type config, the durable log storage,
//! the state machine that builds the [`MetadataImage`](crate::MetadataImage), and the network.
//!
//! Architecture invariant: nothing outside this module names an openraft type except
//! [`crate::store`], which owns the `Raft` instance.

pub mod disk_full;
pub(crate) mod file;
pub mod log_store;
pub mod network;
pub mod state_machine;

use std::io::Cursor;

use serde::{Deserialize, Serialize};

use crate::metadata::MetadataRecord;

/// The application data of one metadata log entry: records applied atomically, in order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MetadataBatch {
    pub records: Vec<MetadataRecord>,
}

/// What applying one entry came to: `Err` with the reason when its records did not fit the
/// image and none of them was applied.
pub type ApplyOutcome = Result<(), String>;

openraft::declare_raft_types!(
    /// Openraft's types for the cluster-metadata log.
    pub TypeConfig:
        D = MetadataBatch,
        R = ApplyOutcome,
        NodeId = u64,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// Openraft's node id: Kafka's `node.id` widened (node ids are never negative).
pub type RaftNodeId = u64;
pub type Raft = openraft::Raft<TypeConfig>;
pub type LogId = openraft::LogId<RaftNodeId>;
pub type Vote = openraft::Vote<RaftNodeId>;
pub type Entry = openraft::Entry<TypeConfig>;
pub type StorageError = openraft::StorageError<RaftNodeId>;
pub type StoredMembership = openraft::StoredMembership<RaftNodeId, openraft::BasicNode>;
pub type SnapshotMeta = openraft::SnapshotMeta<RaftNodeId, openraft::BasicNode>;
pub type Snapshot = openraft::Snapshot<TypeConfig>;
