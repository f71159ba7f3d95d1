//! Cluster metadata: the records, the image they build, and the replicated log that commits them.

pub mod metadata;
pub mod raft;
pub mod store;

pub use metadata::{
    BrokerRegistration, ConfigResource, MetadataImage, MetadataRecord, NodeId, PartitionState, TopicImage,
    PRODUCER_ID_BLOCK_SIZE,
};
pub use raft::network::{CallError, CallFuture, ControllerService};
pub use store::{parse_voters, MetadataError, MetadataStore, QuorumState, StoreOptions, Voters};
