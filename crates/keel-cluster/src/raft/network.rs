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
//!
//! Every request carries the sender's cluster id (once it knows it, [`Identity`]). A node that
//! knows another cluster id refuses it ([`Reply::WrongCluster`]), and both ends record the
//! conflict: a node started with another cluster's data directory never votes in, or takes
//! entries from, a cluster it does not belong to. A node that sees a conflict while it starts
//! stops with a message that says why (so does a member of the right cluster that starts while
//! the wrong one is up: an operator error either way, named on both); running nodes only log it.
//!
//! The same listener carries calls to the active controller ([`Request::Controller`]): a broker
//! that is not the active controller sends it the admin operations (create topics, configs,
//! broker registration, producer-id blocks) and gets its decision back. Their content is the
//! server's ([`ControllerService`]); the transport only frames them. They use their own pooled
//! connections ([`ControllerClient`]), so a slow decision never delays a raft message.

// The error types are openraft's, fixed by the traits implemented here.
#![allow(clippy::result_large_err)]

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
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
    /// An operation for the active controller, as the server encodes it.
    Controller(serde_json::Value),
    /// A broker that is not a voter asks to follow the metadata log as an observer (an
    /// openraft learner at `addr`); only the leader adds it.
    AddObserver {
        node_id: RaftNodeId,
        addr: String,
    },
}

/// A request with the sender's cluster id, `None` while the sender does not know it yet.
#[derive(Debug, Serialize, Deserialize)]
struct Envelope<R> {
    cluster_id: Option<String>,
    request: R,
}

/// The cluster this node belongs to, shared by its transport's both sides.
#[derive(Debug, Default)]
pub struct Identity {
    cluster_id: std::sync::RwLock<Option<String>>,
    /// A peer of another cluster refused this node: (peer address, its cluster id).
    conflict: Mutex<Option<(String, String)>>,
}

impl Identity {
    pub fn cluster_id(&self) -> Option<String> {
        self.cluster_id.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn set_cluster_id(&self, id: &str) {
        *self.cluster_id.write().unwrap_or_else(|p| p.into_inner()) = Some(id.to_string());
    }

    /// The first peer that refused this node as belonging to another cluster, and its id.
    pub fn conflict(&self) -> Option<(String, String)> {
        self.conflict.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn record_conflict(&self, peer: &str, theirs: Option<String>) {
        let mut conflict = self.conflict.lock().unwrap_or_else(|p| p.into_inner());
        if conflict.is_none() {
            tracing::error!(peer, cluster_id = ?theirs, ours = ?self.cluster_id(), "a controller of another cluster refused this node");
            *conflict = Some((peer.to_string(), theirs.unwrap_or_default()));
        }
    }

    /// Whether a request from a node of `theirs` may be served here.
    fn admits(&self, theirs: &Option<String>) -> bool {
        match (self.cluster_id(), theirs) {
            (Some(ours), Some(theirs)) => ours == *theirs,
            _ => true,
        }
    }
}

/// The answer, as the target's raft (or controller) gave it.
#[derive(Debug, Serialize, Deserialize)]
pub enum Reply {
    /// The target belongs to another cluster (its id) and did not look at the request.
    WrongCluster(Option<String>),
    AppendEntries(Result<AppendEntriesResponse<RaftNodeId>, RaftError<RaftNodeId>>),
    Vote(Result<VoteResponse<RaftNodeId>, RaftError<RaftNodeId>>),
    InstallSnapshot(Result<InstallSnapshotResponse<RaftNodeId>, RaftError<RaftNodeId, InstallSnapshotError>>),
    Controller(Result<serde_json::Value, CallError>),
    AddObserver(Result<(), CallError>),
}

/// Why a controller did not decide a call. The operation's own errors (a topic that exists,
/// an invalid config) are part of its answer, not this.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, thiserror::Error)]
pub enum CallError {
    /// Only the active controller decides; the caller finds the current one and asks again.
    #[error("this node is not the active controller")]
    NotLeader,
    /// The node is still starting (its controller service is not installed yet).
    #[error("the controller is not serving yet")]
    NotReady,
    /// The call could not be carried out (it did not decode, or the controller failed).
    #[error("{0}")]
    Failed(String),
}

/// What a controller call's future resolves to.
pub type CallFuture = Pin<Box<dyn Future<Output = Result<serde_json::Value, CallError>> + Send>>;

/// The server's decision logic, as the controller listener reaches it.
pub trait ControllerService: Send + Sync {
    fn call(&self, request: serde_json::Value) -> CallFuture;
}

/// Where the server installs its [`ControllerService`] once it is built (the listener starts
/// before, and answers [`CallError::NotReady`] until then).
pub type ServiceSlot = Arc<OnceLock<Arc<dyn ControllerService>>>;

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

/// Why a controller call got no answer.
#[derive(Debug, thiserror::Error)]
#[error("controller at {addr:?}: {detail}")]
pub struct CallFailure {
    pub addr: String,
    pub detail: String,
    /// Whether the request may have reached the controller (and may take effect).
    pub sent: bool,
}

/// Idle connections kept per controller for [`ControllerClient`].
const IDLE_CONNECTIONS_PER_PEER: usize = 4;

/// The calling side of controller calls: a few pooled connections per controller address,
/// each carrying one call at a time.
#[derive(Debug, Default)]
pub struct ControllerClient {
    idle: Mutex<HashMap<String, Vec<TcpStream>>>,
    identity: Arc<Identity>,
}

impl ControllerClient {
    pub fn new(identity: Arc<Identity>) -> Self {
        ControllerClient { idle: Mutex::default(), identity }
    }

    /// Sends `request` to the controller at `addr` and reads its answer, within `timeout`. A
    /// pooled connection the peer has closed meanwhile (it restarted) is retried once on a new
    /// one: the peer never read the request.
    pub async fn call(
        &self,
        addr: &str,
        request: serde_json::Value,
        timeout: Duration,
    ) -> Result<Result<serde_json::Value, CallError>, CallFailure> {
        match self.exchange(addr, Request::Controller(request), timeout).await? {
            Reply::Controller(reply) => Ok(reply),
            _ => Err(CallFailure { addr: addr.to_string(), detail: "answered another request".into(), sent: true }),
        }
    }

    /// Asks the controller at `addr` to add this node as an observer of the metadata log.
    pub async fn add_observer(
        &self,
        addr: &str,
        node_id: RaftNodeId,
        own_addr: &str,
        timeout: Duration,
    ) -> Result<Result<(), CallError>, CallFailure> {
        let request = Request::AddObserver { node_id, addr: own_addr.to_string() };
        match self.exchange(addr, request, timeout).await? {
            Reply::AddObserver(reply) => Ok(reply),
            _ => Err(CallFailure { addr: addr.to_string(), detail: "answered another request".into(), sent: true }),
        }
    }

    /// Sends `request` on a pooled (or new) connection and reads the reply.
    async fn exchange(&self, addr: &str, request: Request, timeout: Duration) -> Result<Reply, CallFailure> {
        let failure = |detail: String, sent: bool| CallFailure { addr: addr.to_string(), detail, sent };
        let envelope = Envelope { cluster_id: self.identity.cluster_id(), request };
        let frame = encode_frame(&envelope).map_err(|e| failure(e.to_string(), false))?;
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let pooled = self.idle.lock().unwrap_or_else(|p| p.into_inner()).get_mut(addr).and_then(Vec::pop);
            let reused = pooled.is_some();
            let mut stream = match pooled {
                Some(stream) => stream,
                None => {
                    let connect = tokio::time::timeout_at(deadline, TcpStream::connect(addr));
                    match connect.await {
                        Ok(Ok(stream)) => {
                            let _ = stream.set_nodelay(true);
                            stream
                        }
                        Ok(Err(e)) => return Err(failure(e.to_string(), false)),
                        Err(_) => return Err(failure(format!("connect timed out after {timeout:?}"), false)),
                    }
                }
            };
            let exchange = async {
                stream.write_all(&frame).await?;
                read_frame::<Reply>(&mut stream).await
            };
            match tokio::time::timeout_at(deadline, exchange).await {
                Ok(Ok(Reply::WrongCluster(theirs))) => {
                    self.identity.record_conflict(addr, theirs.clone());
                    return Err(failure(format!("belongs to another cluster ({theirs:?})"), false));
                }
                Ok(Ok(reply)) => {
                    let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
                    let streams = idle.entry(addr.to_string()).or_default();
                    if streams.len() < IDLE_CONNECTIONS_PER_PEER {
                        streams.push(stream);
                    }
                    return Ok(reply);
                }
                Ok(Err(FrameError::Io(e))) if reused && is_closed_by_peer(&e) => continue,
                Ok(Err(e)) => return Err(failure(e.to_string(), true)),
                Err(_) => return Err(failure(format!("no answer within {timeout:?}"), true)),
            }
        }
    }
}

/// Adds `node_id` at `addr` as a learner (an observer of the metadata log) when this node
/// leads; a no-op for one already in the membership.
async fn add_observer(raft: &Raft, node_id: RaftNodeId, addr: String) -> Result<(), CallError> {
    let metrics = raft.metrics().borrow().clone();
    let membership = metrics.membership_config.membership();
    if membership.voter_ids().any(|id| id == node_id) {
        return Err(CallError::Failed(format!("node {node_id} is a voter, not an observer")));
    }
    if membership.get_node(&node_id).is_some_and(|node| node.addr == addr) {
        return Ok(());
    }
    match raft.add_learner(node_id, BasicNode { addr }, false).await {
        Ok(_) => Ok(()),
        Err(RaftError::APIError(openraft::error::ClientWriteError::ForwardToLeader(_))) => Err(CallError::NotLeader),
        Err(error) => Err(CallError::Failed(error.to_string())),
    }
}

/// An error that says the peer had closed the connection before it was used.
fn is_closed_by_peer(error: &io::Error) -> bool {
    matches!(error.kind(), io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe)
}

/// Makes connections to the other controllers, at the addresses of their `BasicNode`s.
#[derive(Debug, Clone, Default)]
pub struct NetworkFactory {
    pub identity: Arc<Identity>,
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = Connection;

    async fn new_client(&mut self, target: RaftNodeId, node: &BasicNode) -> Self::Network {
        Connection { target, addr: node.addr.clone(), stream: None, identity: self.identity.clone() }
    }
}

/// The sender's end of a connection to one controller.
#[derive(Debug)]
pub struct Connection {
    target: RaftNodeId,
    addr: String,
    stream: Option<TcpStream>,
    identity: Arc<Identity>,
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
        let frame = match encode_frame(&Envelope { cluster_id: self.identity.cluster_id(), request }) {
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
            Ok(Ok(Reply::WrongCluster(theirs))) => {
                self.identity.record_conflict(&self.addr, theirs.clone());
                Err(RPCError::Unreachable(Unreachable::new(
                    &self.error(format!("belongs to another cluster ({theirs:?})")),
                )))
            }
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
pub async fn serve(listener: TcpListener, raft: Raft, service: ServiceSlot, identity: Arc<Identity>) {
    let mut connections = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    connections.spawn(serve_connection(stream, peer, raft.clone(), service.clone(), identity.clone()));
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

async fn serve_connection(
    mut stream: TcpStream,
    peer: SocketAddr,
    raft: Raft,
    service: ServiceSlot,
    identity: Arc<Identity>,
) {
    loop {
        let envelope = match read_frame::<Envelope<Request>>(&mut stream).await {
            Ok(envelope) => envelope,
            Err(FrameError::Io(e)) if e.kind() == io::ErrorKind::UnexpectedEof => return,
            Err(error) => {
                tracing::warn!(%peer, %error, "closing a controller connection that sent an invalid frame");
                return;
            }
        };
        let reply = match envelope.request {
            _ if !identity.admits(&envelope.cluster_id) => {
                tracing::warn!(%peer, theirs = ?envelope.cluster_id, "refused a controller request from another cluster");
                identity.record_conflict(&peer.to_string(), envelope.cluster_id.clone());
                Reply::WrongCluster(identity.cluster_id())
            }
            Request::AppendEntries(rpc) => Reply::AppendEntries(raft.append_entries(rpc).await),
            Request::Vote(rpc) => Reply::Vote(raft.vote(rpc).await),
            Request::InstallSnapshot(rpc) => Reply::InstallSnapshot(raft.install_snapshot(rpc).await),
            Request::Controller(call) => Reply::Controller(match service.get() {
                Some(service) => service.call(call).await,
                None => Err(CallError::NotReady),
            }),
            Request::AddObserver { node_id, addr } => Reply::AddObserver(add_observer(&raft, node_id, addr).await),
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
