//! The metadata log's raft network. A quorum of one node sends nothing, so every connection
//! reports the target unreachable.
//!
//! This is where the multi-node cluster issue plugs in: a `RaftNetworkFactory` that dials the
//! controller listener of `node.addr` and a `RaftNetwork` that sends `AppendEntries`, `Vote` and
//! snapshot RPCs over it. Nothing else in the crate needs to change: the store already keeps
//! `BasicNode` addresses in the membership, and `Raft::add_learner` / `change_membership` work
//! once RPCs reach their targets.

// The error types are openraft's, fixed by the traits implemented here.
#![allow(clippy::result_large_err)]

use openraft::error::{InstallSnapshotError, RPCError, RaftError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use openraft::BasicNode;

use super::{RaftNodeId, TypeConfig};

type RpcResult<T, E = openraft::error::Infallible> =
    Result<T, RPCError<RaftNodeId, BasicNode, RaftError<RaftNodeId, E>>>;

/// Makes connections to other metadata nodes. In a single-node quorum it is never asked to.
#[derive(Debug, Clone, Default)]
pub struct NetworkFactory;

/// A connection that cannot reach its target: the metadata log has no transport yet.
#[derive(Debug, Clone)]
pub struct UnreachableNode {
    target: RaftNodeId,
    addr: String,
}

#[derive(Debug, thiserror::Error)]
#[error(
    "metadata node {target} at {addr:?} is unreachable: this build runs a single-node metadata \
     quorum and has no raft transport; remove the node from the voters"
)]
struct NoTransport {
    target: RaftNodeId,
    addr: String,
}

impl UnreachableNode {
    fn unreachable<T, E: std::error::Error>(&self) -> RpcResult<T, E> {
        let cause = NoTransport { target: self.target, addr: self.addr.clone() };
        Err(RPCError::Unreachable(Unreachable::new(&cause)))
    }
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = UnreachableNode;

    async fn new_client(&mut self, target: RaftNodeId, node: &BasicNode) -> Self::Network {
        UnreachableNode { target, addr: node.addr.clone() }
    }
}

impl RaftNetwork<TypeConfig> for UnreachableNode {
    async fn append_entries(
        &mut self,
        _rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<RaftNodeId>> {
        self.unreachable()
    }

    async fn install_snapshot(
        &mut self,
        _rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<RaftNodeId>, InstallSnapshotError> {
        self.unreachable()
    }

    async fn vote(&mut self, _rpc: VoteRequest<RaftNodeId>, _option: RPCOption) -> RpcResult<VoteResponse<RaftNodeId>> {
        self.unreachable()
    }
}
