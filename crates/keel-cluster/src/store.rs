//! [`MetadataStore`]: the cluster-metadata log as the broker sees it. Proposals of
//! [`MetadataRecord`]s go through openraft (a quorum of one node, or of the voters of
//! `controller.quorum.voters`, with observers), are made durable in the log under the metadata
//! directory of every voter, and are applied to the [`MetadataImage`] that readers get from
//! [`MetadataStore::image`] or [`MetadataStore::subscribe`]. Only the leader accepts proposals;
//! the other nodes reach it with [`MetadataStore::call_controller`].
//!
//! A full disk stalls the log's writes instead of failing them (see [`crate::raft::disk_full`]):
//! proposals then wait until space frees, reads of the image go on, and nothing needs a restart.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{ClientWriteError, Fatal, InitializeError, RaftError};
use openraft::{BasicNode, Config, SnapshotPolicy};
use tokio::sync::watch;

use crate::metadata::{MetadataImage, MetadataRecord, NodeId};
use crate::raft::disk_full::StopSignal;
use crate::raft::file::{FileError, FRAME_BYTES_MAX};
use crate::raft::log_store::LogStore;
use crate::raft::network::{
    serve, CallError, ControllerClient, ControllerService, Identity, NetworkFactory, ServiceSlot,
};
use crate::raft::state_machine::StateMachine;
use crate::raft::{MetadataBatch, Raft, RaftNodeId};

/// Largest serialized batch [`MetadataStore::propose`] accepts. Well below the frame limit so an
/// entry's log id and envelope always fit: an entry the log cannot store would stop raft.
pub const PROPOSAL_BYTES_MAX: usize = FRAME_BYTES_MAX / 2;

/// How long [`MetadataStore::open`] waits for this node to lead and catch up.
const OPEN_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    #[error("metadata log i/o error on {path}: {source}; check the disk and the permissions of the data directory")]
    Io { path: PathBuf, source: io::Error },

    #[error("metadata log file {path} is corrupt: {detail}; restore the metadata directory from a replica or backup")]
    Corrupt { path: PathBuf, detail: String },

    #[error("node id {node_id} is invalid for the metadata log: set node.id to a non-negative integer")]
    InvalidNodeId { node_id: NodeId },

    #[error("node {node_id} is not a voter of the metadata log in this directory (voters: {voters:?}); start it with the node.id the data directory was created with")]
    NotVoter { node_id: NodeId, voters: Vec<u64> },

    #[error("node id {node_id} is among the controller.quorum.voters: a node that is only a broker must have an id of its own")]
    IsVoter { node_id: NodeId },

    #[error("the metadata log in this directory has the voters {found:?}, but controller.quorum.voters names {configured:?}; start every node with the voter list (ids and addresses) the cluster was formed with, or give this node an empty data directory")]
    VotersChanged { found: Vec<String>, configured: Vec<String> },

    #[error("this node is not the metadata leader (leader: {leader:?}); send the request to the leader")]
    NotLeader { leader: Option<NodeId> },

    #[error(
        "metadata proposal of {bytes} bytes exceeds the limit of {max_bytes} bytes; split it into smaller proposals"
    )]
    ProposalTooLarge { bytes: usize, max_bytes: usize },

    #[error("the metadata log refused the change: {0}")]
    Refused(String),

    #[error("timed out after {waited:?} waiting for {what}")]
    Timeout { what: &'static str, waited: Duration },

    #[error("the active controller did not answer ({0}); a change it was asked for may still take effect")]
    Unanswered(String),

    #[error("the metadata store is shut down; reopen it")]
    ShutDown,

    #[error("metadata raft failed: {0}")]
    Raft(String),
}

impl From<FileError> for MetadataError {
    fn from(e: FileError) -> Self {
        match e {
            FileError::Io { path, source } => MetadataError::Io { path, source },
            FileError::Corrupt { path, detail } => MetadataError::Corrupt { path, detail },
        }
    }
}

impl From<Fatal<RaftNodeId>> for MetadataError {
    fn from(e: Fatal<RaftNodeId>) -> Self {
        match e {
            Fatal::Stopped => MetadataError::ShutDown,
            other => MetadataError::Raft(other.to_string()),
        }
    }
}

/// The cluster-metadata log and its latest applied image. Cloning is cheap and shares the log.
#[derive(Clone)]
pub struct MetadataStore {
    inner: Arc<Inner>,
}

struct Inner {
    raft: Raft,
    /// Times this node has seen the quorum get a new leader (its own elections included).
    leader_changes: Arc<std::sync::atomic::AtomicU64>,
    /// The controller listener's task, in a quorum of more than one.
    listener: Option<tokio::task::JoinHandle<()>>,
    node_id: NodeId,
    dir: PathBuf,
    image_rx: watch::Receiver<Arc<MetadataImage>>,
    /// Ends writes stalled on a full disk, so shutdown (and the runtime's exit) never waits for
    /// space.
    stop: StopSignal,
    /// The server's decisions, served to the other nodes when this one is the active controller.
    service: ServiceSlot,
    /// Connections to the other controllers for calls to the active one.
    client: ControllerClient,
    /// The cluster id the transport sends and checks.
    identity: Arc<Identity>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.stop.stop();
        if let Some(listener) = &self.listener {
            listener.abort();
        }
    }
}

/// When the metadata log is snapshotted and cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreOptions {
    /// A snapshot of the image is written once this many entries were applied since the last.
    pub snapshot_after_entries: u64,
    /// Entries kept in the log behind a snapshot (for followers that lag a little); the ones
    /// before are purged, and the file is rewritten without them once they are half of it.
    pub entries_kept_after_snapshot: u64,
}

impl Default for StoreOptions {
    fn default() -> StoreOptions {
        StoreOptions { snapshot_after_entries: 1_000, entries_kept_after_snapshot: 100 }
    }
}

/// The controllers of a cluster: node id → `host:port` of its controller listener (Kafka's
/// `controller.quorum.voters`).
pub type Voters = BTreeMap<NodeId, String>;

/// Parses Kafka's `controller.quorum.voters`: `id@host:port` entries separated by commas, ids
/// distinct and non-negative, ports 1..=65535 (an IPv6 host in brackets). The error says what is
/// wrong with which entry.
pub fn parse_voters(text: &str) -> Result<Voters, String> {
    let mut voters = Voters::new();
    for entry in text.split(',').map(str::trim) {
        let bad = |why: &str| format!("controller.quorum.voters entry {entry:?} {why}; expected id@host:port");
        if entry.is_empty() {
            return Err(format!("controller.quorum.voters {text:?} has an empty entry; expected id@host:port,..."));
        }
        let (id, address) = entry.split_once('@').ok_or_else(|| bad("has no '@'"))?;
        let id: NodeId = id.trim().parse().ok().filter(|id| *id >= 0).ok_or_else(|| bad("has a bad node id"))?;
        let (host, port) = address.rsplit_once(':').ok_or_else(|| bad("has no port"))?;
        let host_ok = !host.is_empty()
            && (host.starts_with('[') == host.ends_with(']'))
            && !host.trim_matches(['[', ']']).is_empty();
        if !host_ok {
            return Err(bad("has a bad host"));
        }
        port.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(|| bad("has a bad port"))?;
        if voters.insert(id, address.to_string()).is_some() {
            return Err(bad("repeats a node id"));
        }
    }
    Ok(voters)
}

/// Who leads the metadata quorum and how far each voter has come (DescribeQuorum).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct QuorumState {
    pub leader: Option<NodeId>,
    /// The raft term: Kafka's leader epoch of the metadata partition.
    pub term: u64,
    /// The last entry applied here, everything committed up to it (Kafka's high watermark).
    pub applied_index: Option<u64>,
    /// The last entry in this node's log.
    pub last_log_index: Option<u64>,
    /// Each voter with the last entry the leader knows it holds (`None` when unknown, or when
    /// this node does not lead).
    pub voters: Vec<(NodeId, Option<u64>)>,
    /// The observers (brokers that follow the log without voting), with the same progress.
    #[serde(default)]
    pub observers: Vec<(NodeId, Option<u64>)>,
}

impl QuorumState {
    /// Kafka's leader epoch of the metadata partition (the raft term, as an `i32`).
    pub fn epoch(&self) -> i32 {
        i32::try_from(self.term).unwrap_or(i32::MAX)
    }

    /// Kafka's high watermark of the metadata log: one past the last entry applied here.
    pub fn high_watermark(&self) -> i64 {
        self.applied_index.map_or(0, |index| index as i64 + 1)
    }

    /// Kafka's log end offset of this node's metadata log: one past its last entry.
    pub fn log_end_offset(&self) -> i64 {
        self.last_log_index.map_or(0, |index| index as i64 + 1)
    }

    pub fn voter_ids(&self) -> Vec<NodeId> {
        self.voters.iter().map(|(id, _)| *id).collect()
    }
}

impl std::fmt::Debug for MetadataStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetadataStore")
            .field("node_id", &self.inner.node_id)
            .field("dir", &self.inner.dir)
            .field("applied_index", &self.inner.image_rx.borrow().applied_index)
            .finish()
    }
}

impl MetadataStore {
    /// Opens (or creates) the metadata log in `dir`, starts a single-node openraft instance with
    /// node id `node_id`, initializes membership `{node_id}` when the log is fresh, and returns
    /// once this node is leader and every committed entry is applied to the image.
    pub async fn open(dir: &Path, node_id: NodeId) -> Result<MetadataStore, MetadataError> {
        MetadataStore::open_with(dir, node_id, StoreOptions::default()).await
    }

    /// [`MetadataStore::open`] with snapshot settings other than the defaults.
    pub async fn open_with(dir: &Path, node_id: NodeId, options: StoreOptions) -> Result<MetadataStore, MetadataError> {
        let store = MetadataStore::open_raft(dir, node_id, None, options, None).await?;
        let raft_id = RaftNodeId::try_from(node_id).map_err(|_| MetadataError::InvalidNodeId { node_id })?;
        let started = store.start(raft_id).await;
        store.or_shut_down(started).await
    }

    /// `self` if `result` is, else the error, with raft stopped: a failed open leaves no raft
    /// running behind it.
    async fn or_shut_down(self, result: Result<(), MetadataError>) -> Result<MetadataStore, MetadataError> {
        match result {
            Ok(()) => Ok(self),
            Err(e) => {
                let _ = self.shutdown().await;
                Err(e)
            }
        }
    }

    /// Opens (or creates) the metadata log in `dir` as the voter `node_id` of the quorum
    /// `voters`, serving the other controllers on `listener`. A fresh log is initialized with
    /// every voter (each node does the same, which openraft allows: no format step); an
    /// existing one must have been formed with the same voters. `cluster_id` is the cluster this
    /// node's data directory belongs to, when it knows: controllers of another cluster are
    /// refused from the first message on (see [`MetadataStore::cluster_conflict`]). Returns
    /// without waiting for a leader: see [`MetadataStore::wait_for_leader`].
    pub async fn open_quorum(
        dir: &Path,
        node_id: NodeId,
        voters: &Voters,
        listener: tokio::net::TcpListener,
        options: StoreOptions,
        cluster_id: Option<&str>,
    ) -> Result<MetadataStore, MetadataError> {
        let raft_id = RaftNodeId::try_from(node_id).map_err(|_| MetadataError::InvalidNodeId { node_id })?;
        let mut members = BTreeMap::new();
        for (&id, addr) in voters {
            let id = RaftNodeId::try_from(id).map_err(|_| MetadataError::InvalidNodeId { node_id: id })?;
            members.insert(id, BasicNode { addr: addr.clone() });
        }
        if !members.contains_key(&raft_id) {
            return Err(MetadataError::NotVoter { node_id, voters: members.keys().copied().collect() });
        }
        let store = MetadataStore::open_raft(dir, node_id, Some(listener), options, cluster_id).await?;
        let listed = |members: &BTreeMap<RaftNodeId, BasicNode>| -> Vec<String> {
            members.iter().map(|(id, node)| format!("{id}@{}", node.addr)).collect()
        };
        let configured = listed(&members);
        let checked = match store.initialize_and_load_voters(members).await {
            Ok(_) => {
                // Addresses too: the log's membership is where this node sends its messages.
                let metrics = store.inner.raft.metrics().borrow().clone();
                let membership = metrics.membership_config.membership();
                let found: BTreeMap<RaftNodeId, BasicNode> =
                    membership.voter_ids().filter_map(|id| membership.get_node(&id).map(|n| (id, n.clone()))).collect();
                let found = listed(&found);
                if found == configured {
                    Ok(())
                } else {
                    Err(MetadataError::VotersChanged { found, configured })
                }
            }
            Err(e) => Err(e),
        };
        store.or_shut_down(checked).await
    }

    /// Opens (or creates) the metadata log in `dir` as an observer: a node that is not one of
    /// `voters` (a broker only) and follows the log as an openraft learner, served on `listener`
    /// and reached by the leader at `own_addr`. Until the leader has added it, a background task
    /// asks the voters in turn; a log from before must have been formed with `voters`.
    pub async fn open_observer(
        dir: &Path,
        node_id: NodeId,
        voters: &Voters,
        listener: tokio::net::TcpListener,
        own_addr: String,
        options: StoreOptions,
        cluster_id: Option<&str>,
    ) -> Result<MetadataStore, MetadataError> {
        let raft_id = RaftNodeId::try_from(node_id).map_err(|_| MetadataError::InvalidNodeId { node_id })?;
        if voters.contains_key(&node_id) {
            return Err(MetadataError::IsVoter { node_id });
        }
        let store = MetadataStore::open_raft(dir, node_id, Some(listener), options, cluster_id).await?;
        let raft = store.inner.raft.clone();
        let checked = async {
            if !raft.is_initialized().await? {
                return Ok(());
            }
            let metrics = raft.metrics().borrow().clone();
            let membership = metrics.membership_config.membership();
            let found: Vec<String> = membership
                .voter_ids()
                .filter_map(|id| membership.get_node(&id).map(|n| format!("{id}@{}", n.addr)))
                .collect();
            let configured: Vec<String> = voters.iter().map(|(id, addr)| format!("{id}@{addr}")).collect();
            if found.is_empty() || found == configured {
                Ok(())
            } else {
                Err(MetadataError::VotersChanged { found, configured })
            }
        }
        .await;
        let store = store.or_shut_down(checked).await?;
        let voters: Vec<String> = voters.values().cloned().collect();
        let client = ControllerClient::new(store.inner.identity.clone());
        tokio::spawn(async move {
            let mut metrics = raft.metrics();
            loop {
                if metrics.borrow_and_update().membership_config.membership().get_node(&raft_id).is_some() {
                    return;
                }
                for voter in &voters {
                    match client.add_observer(voter, raft_id, &own_addr, Duration::from_secs(5)).await {
                        Ok(Ok(())) => break,
                        Ok(Err(error)) => tracing::debug!(%voter, %error, "not added as an observer yet"),
                        Err(failure) => tracing::debug!(%failure, "cannot reach a controller to join"),
                    }
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                    changed = metrics.changed() => if changed.is_err() { return },
                }
            }
        });
        Ok(store)
    }

    /// Waits until the quorum has a leader this node knows of, and returns it.
    pub async fn wait_for_leader(&self, timeout: Duration) -> Result<NodeId, MetadataError> {
        let metrics = self
            .inner
            .raft
            .wait(Some(timeout))
            .metrics(|m| m.current_leader.is_some(), "a metadata leader")
            .await
            .map_err(|_| MetadataError::Timeout { what: "a metadata quorum leader", waited: timeout })?;
        metrics
            .current_leader
            .and_then(|id| NodeId::try_from(id).ok())
            .ok_or(MetadataError::Timeout { what: "a metadata quorum leader", waited: timeout })
    }

    /// How many times this node has seen the quorum get a new leader (its own elections
    /// included); a steadily growing count means an unstable quorum.
    pub fn leader_changes(&self) -> u64 {
        self.inner.leader_changes.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The quorum as this node sees it.
    pub fn quorum(&self) -> QuorumState {
        let metrics = self.inner.raft.metrics().borrow().clone();
        let replication = metrics.replication.as_ref();
        let progress = |id: RaftNodeId| {
            let matched = replication.and_then(|r| r.get(&id)).and_then(|m| m.as_ref()).map(|log_id| log_id.index);
            NodeId::try_from(id).ok().map(|node| (node, matched))
        };
        let membership = metrics.membership_config.membership();
        let voters = membership.voter_ids().filter_map(progress).collect();
        let observers = membership.learner_ids().filter_map(progress).collect();
        QuorumState {
            leader: metrics.current_leader.and_then(|id| NodeId::try_from(id).ok()),
            term: metrics.current_term,
            applied_index: metrics.last_applied.map(|log_id| log_id.index),
            last_log_index: metrics.last_log_index,
            voters,
            observers,
        }
    }

    /// The raft instance over the log in `dir`, serving `listener` when given.
    async fn open_raft(
        dir: &Path,
        node_id: NodeId,
        listener: Option<tokio::net::TcpListener>,
        options: StoreOptions,
        cluster_id: Option<&str>,
    ) -> Result<MetadataStore, MetadataError> {
        let identity = Arc::new(Identity::default());
        if let Some(id) = cluster_id {
            identity.set_cluster_id(id);
        }
        let raft_id = RaftNodeId::try_from(node_id).map_err(|_| MetadataError::InvalidNodeId { node_id })?;
        let dir = dir.to_path_buf();
        let stop = StopSignal::default();
        let (log_store, state_machine, image_rx) = {
            let dir = dir.clone();
            let stop = stop.clone();
            tokio::task::spawn_blocking(move || -> Result<_, MetadataError> {
                let (log_store, recovery) = LogStore::open_with_stop(&dir, stop.clone())?;
                if recovery != Default::default() {
                    tracing::warn!(dir = %dir.display(), ?recovery, "recovered the metadata log after a crash");
                }
                let (state_machine, image_rx) = StateMachine::open_with_stop(&dir, stop)?;
                Ok((log_store, state_machine, image_rx))
            })
            .await
            .map_err(|e| MetadataError::Raft(format!("opening the metadata log panicked: {e}")))??
        };

        let config = Config {
            cluster_name: "keel-metadata".to_string(),
            // A snapshot of the image bounds the log and the replay at start: the node loads
            // the newest snapshot and applies only the entries after it.
            snapshot_policy: SnapshotPolicy::LogsSinceLast(options.snapshot_after_entries.max(1)),
            max_in_snapshot_log_to_keep: options.entries_kept_after_snapshot,
            ..Default::default()
        }
        .validate()
        .map_err(|e| MetadataError::Raft(e.to_string()))?;
        let network = NetworkFactory { identity: identity.clone() };
        let raft = Raft::new(raft_id, Arc::new(config), network, log_store, state_machine)
            .await
            .map_err(MetadataError::from)?;
        let service = ServiceSlot::default();
        let listener =
            listener.map(|listener| tokio::spawn(serve(listener, raft.clone(), service.clone(), identity.clone())));
        let leader_changes = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let mut metrics = raft.metrics();
        let counter = Arc::clone(&leader_changes);
        // Ends when raft stops and drops its side of the metrics channel.
        tokio::spawn(async move {
            let mut last = None;
            loop {
                let (leader, term) = {
                    let m = metrics.borrow_and_update();
                    (m.current_leader, m.current_term)
                };
                if let Some(id) = leader.filter(|_| leader != last) {
                    counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    tracing::info!(leader = id, term, "the metadata quorum has a new leader");
                }
                last = leader;
                if metrics.changed().await.is_err() {
                    return;
                }
            }
        });
        let client = ControllerClient::new(identity.clone());
        let inner = Inner { raft, leader_changes, listener, node_id, dir, image_rx, stop, service, client, identity };
        Ok(MetadataStore { inner: Arc::new(inner) })
    }

    /// Initializes a fresh log with `members` (a no-op for one that has a membership), and
    /// returns the voters of the membership the log holds.
    async fn initialize_and_load_voters(
        &self,
        members: BTreeMap<RaftNodeId, BasicNode>,
    ) -> Result<Vec<u64>, MetadataError> {
        let raft = &self.inner.raft;
        if !raft.is_initialized().await? {
            match raft.initialize(members).await {
                Ok(()) | Err(RaftError::APIError(InitializeError::NotAllowed(_))) => {}
                Err(RaftError::APIError(e)) => return Err(MetadataError::Raft(e.to_string())),
                Err(RaftError::Fatal(e)) => return Err(e.into()),
            }
        }
        // The metrics catch up with the membership asynchronously after initialize and startup.
        let metrics = raft
            .wait(Some(OPEN_TIMEOUT))
            .metrics(|m| m.membership_config.membership().voter_ids().next().is_some(), "load the membership")
            .await
            .map_err(|_| MetadataError::Timeout {
                what: "the metadata log to load its membership",
                waited: OPEN_TIMEOUT,
            })?;
        Ok(metrics.membership_config.membership().voter_ids().collect())
    }

    async fn start(&self, raft_id: RaftNodeId) -> Result<(), MetadataError> {
        let raft = &self.inner.raft;
        let voters = self.initialize_and_load_voters(BTreeMap::from([(raft_id, BasicNode::default())])).await?;
        if !voters.contains(&raft_id) {
            return Err(MetadataError::NotVoter { node_id: self.inner.node_id, voters });
        }
        raft.wait(Some(OPEN_TIMEOUT)).current_leader(raft_id, "open the metadata log").await.map_err(|_| {
            MetadataError::Timeout { what: "this node to become the metadata leader", waited: OPEN_TIMEOUT }
        })?;
        // Waits until everything committed before this call is applied to the image.
        tokio::time::timeout(OPEN_TIMEOUT, raft.ensure_linearizable())
            .await
            .map_err(|_| MetadataError::Timeout {
                what: "the metadata log to apply its committed entries",
                waited: OPEN_TIMEOUT,
            })?
            .map_err(|e| match e {
                RaftError::APIError(e) => MetadataError::Raft(e.to_string()),
                RaftError::Fatal(e) => e.into(),
            })?;
        Ok(())
    }

    /// Commits `records` as one log entry, applied atomically and in order, and returns its log
    /// index once it is committed, durable and applied to the image.
    ///
    /// While the disk is full this waits until space frees (or the store shuts down); a caller
    /// that must answer in time bounds the wait itself, knowing that a proposal it stopped
    /// waiting for can still commit later.
    pub async fn propose(&self, records: Vec<MetadataRecord>) -> Result<u64, MetadataError> {
        let batch = MetadataBatch { records };
        let bytes = serde_json::to_vec(&batch).map_err(|e| MetadataError::Raft(format!("encode proposal: {e}")))?.len();
        if bytes > PROPOSAL_BYTES_MAX {
            return Err(MetadataError::ProposalTooLarge { bytes, max_bytes: PROPOSAL_BYTES_MAX });
        }
        match self.inner.raft.client_write(batch).await {
            Ok(response) => match response.data {
                Ok(()) => Ok(response.log_id.index),
                Err(reason) => Err(MetadataError::Refused(reason)),
            },
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(forward))) => {
                Err(MetadataError::NotLeader { leader: forward.leader_id.and_then(|id| NodeId::try_from(id).ok()) })
            }
            Err(RaftError::APIError(e)) => Err(MetadataError::Raft(e.to_string())),
            Err(RaftError::Fatal(e)) => Err(e.into()),
        }
    }

    /// Installs the decisions this node makes while it is the active controller (once; later
    /// calls are ignored).
    pub fn set_controller_service(&self, service: Arc<dyn ControllerService>) {
        let _ = self.inner.service.set(service);
    }

    /// The active controller as this node knows it.
    pub fn leader(&self) -> Option<NodeId> {
        self.inner.raft.metrics().borrow().current_leader.and_then(|id| NodeId::try_from(id).ok())
    }

    /// Whether this node is the active controller.
    pub fn is_leader(&self) -> bool {
        self.leader() == Some(self.inner.node_id)
    }

    /// On the active controller: waits until every entry committed before this call, its own
    /// term's first entry included, is applied to the image, after confirming with a quorum
    /// that it still leads. A decision validated against the image after this sees every
    /// earlier decision. [`MetadataError::NotLeader`] on any other node.
    pub async fn catch_up(&self, timeout: Duration) -> Result<(), MetadataError> {
        match tokio::time::timeout(timeout, self.inner.raft.ensure_linearizable()).await {
            Err(_) => {
                Err(MetadataError::Timeout { what: "the metadata log to catch up with its term", waited: timeout })
            }
            Ok(Ok(_)) => Ok(()),
            Ok(Err(RaftError::APIError(openraft::error::CheckIsLeaderError::ForwardToLeader(forward)))) => {
                Err(MetadataError::NotLeader { leader: forward.leader_id.and_then(|id| NodeId::try_from(id).ok()) })
            }
            // A majority did not answer in time: this node may lead, but cannot decide now.
            Ok(Err(RaftError::APIError(openraft::error::CheckIsLeaderError::QuorumNotEnough(_)))) => {
                Err(MetadataError::Timeout { what: "a quorum to confirm this controller leads", waited: timeout })
            }

            Ok(Err(RaftError::Fatal(e))) => Err(e.into()),
        }
    }

    /// Waits until the image here includes the log entry `index` (read-your-writes after a
    /// change the active controller made elsewhere).
    pub async fn wait_applied(&self, index: u64, timeout: Duration) -> Result<(), MetadataError> {
        let mut images = self.inner.image_rx.clone();
        let applied = tokio::time::timeout(timeout, images.wait_for(|image| image.applied_index >= index)).await;
        match applied {
            Err(_) => Err(MetadataError::Timeout { what: "this node to apply the change", waited: timeout }),
            Ok(Err(_)) => Err(MetadataError::ShutDown),
            Ok(Ok(_)) => Ok(()),
        }
    }

    /// Has the active controller decide `request` (through the [`ControllerService`] it
    /// installed) and returns its answer: locally when this node leads, else over the
    /// controller listener. Waits for a leader and follows leader changes until `timeout`; a
    /// call that reached a controller and got no answer is not repeated
    /// ([`MetadataError::Unanswered`]).
    pub async fn call_controller(
        &self,
        request: serde_json::Value,
        timeout: Duration,
    ) -> Result<serde_json::Value, MetadataError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let timed_out = || MetadataError::Timeout { what: "an active controller to decide", waited: timeout };
        let mut metrics = self.inner.raft.metrics();
        loop {
            let (leader, addr) = {
                let m = metrics.borrow_and_update();
                let leader = m.current_leader;
                let addr = leader.and_then(|id| m.membership_config.membership().get_node(&id).map(|n| n.addr.clone()));
                (leader, addr)
            };
            let answer = match leader {
                Some(leader) if leader == self.inner.node_id as u64 => match self.inner.service.get() {
                    Some(service) => Some(service.call(request.clone()).await),
                    None => None,
                },
                Some(_) => match addr {
                    Some(addr) => {
                        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                        match self.inner.client.call(&addr, request.clone(), left).await {
                            Ok(answer) => Some(answer),
                            Err(failure) if failure.sent => return Err(MetadataError::Unanswered(failure.to_string())),
                            Err(failure) => {
                                tracing::debug!(%failure, "cannot reach the active controller; retrying");
                                None
                            }
                        }
                    }
                    None => None,
                },
                None => None,
            };
            match answer {
                Some(Ok(value)) => return Ok(value),
                Some(Err(CallError::Failed(detail))) => return Err(MetadataError::Raft(detail)),
                Some(Err(CallError::NotLeader | CallError::NotReady)) | None => {}
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(timed_out());
            }
            // A new leader, or a short pause before asking again.
            let pause = tokio::time::Instant::now() + Duration::from_millis(50);
            let _ = tokio::time::timeout_at(pause.min(deadline), metrics.changed()).await;
            tokio::time::sleep_until(pause.min(deadline)).await;
        }
    }

    /// The cluster id recorded in the metadata log. When there is none yet, the first node to
    /// find itself the active controller (caught up with its term) records `candidate`; the
    /// others wait until they see it. Returns the recorded id, which may be another node's.
    pub async fn agree_cluster_id(&self, candidate: &str, timeout: Duration) -> Result<String, MetadataError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut images = self.inner.image_rx.clone();
        loop {
            if let Some(id) = images.borrow_and_update().cluster_id.clone() {
                return Ok(id);
            }
            if self.is_leader() {
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                match self.catch_up(left).await {
                    Ok(()) if self.image().cluster_id.is_none() => {
                        match self.propose(vec![MetadataRecord::ClusterId { cluster_id: candidate.to_string() }]).await
                        {
                            // Another leader's record came first: the loop reads it.
                            Ok(_) | Err(MetadataError::Refused(_) | MetadataError::NotLeader { .. }) => {}
                            Err(e) => return Err(e),
                        }
                    }
                    Ok(()) | Err(MetadataError::NotLeader { .. } | MetadataError::Timeout { .. }) => {}
                    Err(e) => return Err(e),
                }
                if tokio::time::Instant::now() >= deadline {
                    return Err(MetadataError::Timeout { what: "the cluster id to be recorded", waited: timeout });
                }
                continue;
            }
            let pause = (tokio::time::Instant::now() + Duration::from_millis(100)).min(deadline);
            let _ = tokio::time::timeout_at(pause, images.changed()).await;
            if tokio::time::Instant::now() >= deadline {
                return Err(MetadataError::Timeout { what: "the cluster id to be recorded", waited: timeout });
            }
        }
    }

    /// Records the cluster id this node belongs to, once learned: from then on the transport
    /// sends it and refuses controllers of another cluster.
    pub fn set_cluster_id(&self, cluster_id: &str) {
        self.inner.identity.set_cluster_id(cluster_id);
    }

    /// A controller of another cluster that refused this node (its address and cluster id):
    /// this node's data directory does not belong to the cluster its voters form.
    pub fn cluster_conflict(&self) -> Option<(String, String)> {
        self.inner.identity.conflict()
    }

    /// The latest applied image.
    pub fn image(&self) -> Arc<MetadataImage> {
        self.inner.image_rx.borrow().clone()
    }

    /// A receiver that sees every newly applied image.
    pub fn subscribe(&self) -> watch::Receiver<Arc<MetadataImage>> {
        self.inner.image_rx.clone()
    }

    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        self.inner.node_id
    }

    /// Stops raft. Every acknowledged proposal is already fsynced, so nothing is lost; a write
    /// stalled on a full disk gives up (its proposal was never acknowledged). Later calls on any
    /// clone fail with [`MetadataError::ShutDown`]. Calling it twice is harmless.
    pub async fn shutdown(&self) -> Result<(), MetadataError> {
        self.inner.stop.stop();
        if let Some(listener) = &self.inner.listener {
            listener.abort();
        }
        self.inner.raft.shutdown().await.map_err(|e| MetadataError::Raft(format!("shutdown: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn voters_parse_as_kafka_writes_them() {
        let voters = parse_voters("1@127.0.0.1:9093, 2@localhost:9094,3@[::1]:9095").expect("valid");
        assert_eq!(
            voters.into_iter().collect::<Vec<_>>(),
            vec![(1, "127.0.0.1:9093".to_string()), (2, "localhost:9094".to_string()), (3, "[::1]:9095".to_string())]
        );
        for (bad, why) in [
            ("", "empty entry"),
            ("1@a:1,", "empty entry"),
            ("1:9093", "no '@'"),
            ("x@a:1", "bad node id"),
            ("-1@a:1", "bad node id"),
            ("1@a", "no port"),
            ("1@:9093", "bad host"),
            ("1@[::1:9093", "bad host"),
            ("1@a:0", "bad port"),
            ("1@a:70000", "bad port"),
            ("1@a:1,1@b:2", "repeats a node id"),
        ] {
            let error = parse_voters(bad).expect_err(bad);
            assert!(error.contains(why), "{bad:?}: {error}");
        }
    }
}
