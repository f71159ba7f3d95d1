//! The metadata log's raft transport between controllers, on the controller listener.
//!
//! One TCP connection per (sender, target) pair, opened on first use and reused; requests on it
//! are strictly one at a time (openraft calls a client sequentially). A frame is a `u32`
//! big-endian length (at most [`FRAME_BYTES_MAX`]) followed by that many bytes of JSON: a
//! [`Request`] from the sender, a [`Reply`] back. Every read and write is bounded by the RPC's
//! deadline; any failure drops the connection, and the next RPC dials again (reconnects).
//!
//! The listener side ([`serve`]) hands each request to the local raft and writes the answer. A
//! frame that is too long or does not decode closes its connection and is logged; nothing else
//! is touched. TLS comes with the security work.

// The error types are openraft's, fixed by the traits implemented here.
#![allow(clippy::result_large_err)]

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use openraft::BasicNode;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::{Raft, RaftNodeId, TypeConfig};
use crate::raft::file::FRAME_BYTES_MAX;

type RpcResult<T, E = openraft::error::Infallible> =
    Result<T, RPCError<RaftNodeId, BasicNode, RaftError<RaftNodeId, E>>>;

/// Longest a dial may take; a dead address must not hold an election for a whole RPC deadline.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

/// What one controller asks another.
#[derive(Debug, Serialize, Deserialize)]
pub enum Request {
    AppendEntries(AppendEntriesRequest<TypeConfig>),
    Vote(VoteRequest<RaftNodeId>),
    InstallSnapshot(InstallSnapshotRequest<TypeConfig>),
}

/// The answer, as the target's raft gave it.
#[derive(Debug, Serialize, Deserialize)]
pub enum Reply {
    AppendEntries(Result<AppendEntriesResponse<RaftNodeId>, RaftError<RaftNodeId>>),
    Vote(Result<VoteResponse<RaftNodeId>, RaftError<RaftNodeId>>),
    InstallSnapshot(Result<InstallSnapshotResponse<RaftNodeId>, RaftError<RaftNodeId, InstallSnapshotError>>),
}

#[derive(Debug, thiserror::Error)]
enum FrameError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("frame of {0} bytes exceeds the limit of {FRAME_BYTES_MAX}")]
    TooLong(usize),
    #[error("undecodable frame: {0}")]
    Decode(#[from] serde_json::Error),
    #[error("timed out after {0:?}")]
    Timeout(Duration),
}

async fn read_frame<T: for<'de> Deserialize<'de>>(stream: &mut TcpStream) -> Result<T, FrameError> {
    let len = stream.read_u32().await? as usize;
    if len > FRAME_BYTES_MAX {
        return Err(FrameError::TooLong(len));
    }
    let mut buf = vec![0u8; len];
    stream.read_exact(&mut buf).await?;
    Ok(serde_json::from_slice(&buf)?)
}

/// Encodes `value` as a frame; `Err(len)` when it is longer than a frame may be.
fn encode_frame<T: Serialize>(value: &T) -> Result<Vec<u8>, FrameError> {
    let mut out = vec![0u8; 4];
    serde_json::to_writer(&mut out, value)?;
    let len = out.len() - 4;
    if len > FRAME_BYTES_MAX {
        return Err(FrameError::TooLong(len));
    }
    out[..4].copy_from_slice(&(len as u32).to_be_bytes());
    Ok(out)
}

/// Makes connections to the other controllers, at the addresses of their `BasicNode`s.
#[derive(Debug, Clone, Default)]
pub struct NetworkFactory;

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = Connection;

    async fn new_client(&mut self, target: RaftNodeId, node: &BasicNode) -> Self::Network {
        Connection { target, addr: node.addr.clone(), stream: None }
    }
}

/// The sender's end of a connection to one controller.
#[derive(Debug)]
pub struct Connection {
    target: RaftNodeId,
    addr: String,
    stream: Option<TcpStream>,
}

#[derive(Debug, thiserror::Error)]
#[error("controller {target} at {addr:?}: {detail}")]
struct TransportError {
    target: RaftNodeId,
    addr: String,
    detail: String,
}

impl Connection {
    fn error(&self, detail: impl std::fmt::Display) -> TransportError {
        TransportError { target: self.target, addr: self.addr.clone(), detail: detail.to_string() }
    }

    /// Sends `request` and reads the reply, within `deadline`. A failure to connect is
    /// `Unreachable` (openraft backs off); a failure on an open connection is a network error
    /// (retried at once, on a new connection).
    async fn call<E: std::error::Error>(
        &mut self,
        request: &Request,
        deadline: Duration,
    ) -> Result<Reply, RPCError<RaftNodeId, BasicNode, RaftError<RaftNodeId, E>>> {
        let frame = match encode_frame(request) {
            Ok(frame) => frame,
            Err(FrameError::TooLong(_)) => {
                let entries = match request {
                    Request::AppendEntries(rpc) => rpc.entries.len() as u64,
                    _ => 1,
                };
                return Err(RPCError::PayloadTooLarge(PayloadTooLarge::new_entries_hint((entries / 2).max(1))));
            }
            Err(e) => return Err(RPCError::Network(NetworkError::new(&self.error(e)))),
        };
        let work = async {
            if self.stream.is_none() {
                let stream = tokio::time::timeout(CONNECT_TIMEOUT.min(deadline), TcpStream::connect(&self.addr))
                    .await
                    .map_err(|_| (true, FrameError::Timeout(CONNECT_TIMEOUT)))?
                    .map_err(|e| (true, FrameError::Io(e)))?;
                let _ = stream.set_nodelay(true);
                self.stream = Some(stream);
            }
            let stream = self.stream.as_mut().ok_or((true, FrameError::Timeout(deadline)))?;
            stream.write_all(&frame).await.map_err(|e| (false, FrameError::Io(e)))?;
            read_frame::<Reply>(stream).await.map_err(|e| (false, e))
        };
        match tokio::time::timeout(deadline, work).await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err((connecting, e))) => {
                self.stream = None;
                let error = self.error(e);
                if connecting {
                    Err(RPCError::Unreachable(Unreachable::new(&error)))
                } else {
                    Err(RPCError::Network(NetworkError::new(&error)))
                }
            }
            Err(_) => {
                // A reply may still be on its way: the connection cannot be reused.
                self.stream = None;
                Err(RPCError::Network(NetworkError::new(&self.error(FrameError::Timeout(deadline)))))
            }
        }
    }

    fn unexpected<E: std::error::Error>(&self) -> RPCError<RaftNodeId, BasicNode, RaftError<RaftNodeId, E>> {
        RPCError::Network(NetworkError::new(&self.error("answered with the reply to another request")))
    }
}

fn remote<T, E: std::error::Error>(target: RaftNodeId, result: Result<T, RaftError<RaftNodeId, E>>) -> RpcResult<T, E> {
    result.map_err(|e| RPCError::RemoteError(RemoteError::new(target, e)))
}

impl RaftNetwork<TypeConfig> for Connection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<RaftNodeId>> {
        match self.call(&Request::AppendEntries(rpc), option.hard_ttl()).await? {
            Reply::AppendEntries(result) => remote(self.target, result),
            _ => Err(self.unexpected()),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<RaftNodeId>, InstallSnapshotError> {
        match self.call(&Request::InstallSnapshot(rpc), option.hard_ttl()).await? {
            Reply::InstallSnapshot(result) => remote(self.target, result),
            _ => Err(self.unexpected()),
        }
    }

    async fn vote(&mut self, rpc: VoteRequest<RaftNodeId>, option: RPCOption) -> RpcResult<VoteResponse<RaftNodeId>> {
        match self.call(&Request::Vote(rpc), option.hard_ttl()).await? {
            Reply::Vote(result) => remote(self.target, result),
            _ => Err(self.unexpected()),
        }
    }
}

/// Serves the controller listener: every connection's requests go to `raft`, one at a time, in
/// order. Runs until the task is aborted, which closes the listener and every connection it
/// accepted (a restarted node must not leave its peers talking to the old instance).
pub async fn serve(listener: TcpListener, raft: Raft) {
    let mut connections = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    connections.spawn(serve_connection(stream, peer, raft.clone()));
                }
                Err(error) => {
                    // Out of descriptors and the like: wait rather than spin.
                    tracing::warn!(%error, "controller listener accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = connections.join_next() => {}
        }
    }
}

async fn serve_connection(mut stream: TcpStream, peer: SocketAddr, raft: Raft) {
    loop {
        let request = match read_frame::<Request>(&mut stream).await {
            Ok(request) => request,
            Err(FrameError::Io(e)) if e.kind() == io::ErrorKind::UnexpectedEof => return,
            Err(error) => {
                tracing::warn!(%peer, %error, "closing a controller connection that sent an invalid frame");
                return;
            }
        };
        let reply = match request {
            Request::AppendEntries(rpc) => Reply::AppendEntries(raft.append_entries(rpc).await),
            Request::Vote(rpc) => Reply::Vote(raft.vote(rpc).await),
            Request::InstallSnapshot(rpc) => Reply::InstallSnapshot(raft.install_snapshot(rpc).await),
        };
        let written = match encode_frame(&reply) {
            Ok(frame) => stream.write_all(&frame).await.map_err(FrameError::Io),
            Err(e) => Err(e),
        };
        if let Err(error) = written {
            tracing::debug!(%peer, %error, "controller connection closed while answering");
            return;
        }
    }
}
