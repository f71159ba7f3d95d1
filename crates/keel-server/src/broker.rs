//! The broker's shared state: metadata, hosted partitions, configs, and the wake-up signal
//! that long-polling fetches wait on.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use keel_cluster::{MetadataImage, MetadataStore, NodeId};
use keel_log::LogManager;
use tokio::sync::{watch, Mutex};

use crate::config::{ConfigView, StaticConfig};
use crate::partition::{Partition, Partitions};

/// Where clients reach this broker.
#[derive(Clone, Debug)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
}

pub struct Broker {
    pub node_id: NodeId,
    pub cluster_id: String,
    pub data_dir: PathBuf,
    pub advertised: Endpoint,
    pub statics: StaticConfig,
    pub metadata: MetadataStore,
    pub logs: LogManager,
    pub partitions: Partitions,
    /// The group coordinators running here, one per `__consumer_offsets` partition.
    pub groups: crate::groups::Groups,
    /// The transaction coordinators running here, one per `__transaction_state` partition.
    pub transactions: crate::transactions::Transactions,
    /// Serializes controller decisions: each is validated against the image it is proposed on.
    /// Shared so that a proposal outliving its request's deadline keeps it until it commits.
    pub controller: Arc<Mutex<()>>,
    pub producer_ids: crate::producer_ids::ProducerIds,
    /// This process's registration incarnation (a new one each start).
    pub incarnation: uuid::Uuid,
    /// On the active controller: when each broker last sent a heartbeat.
    pub heartbeats: crate::lifecycle::Heartbeats,
    /// The image the hosted partitions were last reconciled with.
    reconciled: std::sync::Mutex<Option<Arc<MetadataImage>>>,
    pub metrics: crate::metrics::Metrics,
    /// Bumped after every append; long-polling fetches wait for it to change.
    appends: watch::Sender<u64>,
    ready: AtomicBool,
}

impl Broker {
    pub fn new(
        node_id: NodeId,
        cluster_id: String,
        data_dir: PathBuf,
        advertised: Endpoint,
        statics: StaticConfig,
        metadata: MetadataStore,
        logs: LogManager,
    ) -> Self {
        Broker {
            node_id,
            cluster_id,
            data_dir,
            advertised,
            statics,
            metadata,
            logs,
            partitions: Partitions::default(),
            groups: Default::default(),
            transactions: Default::default(),
            controller: Arc::new(Mutex::new(())),
            producer_ids: Default::default(),
            incarnation: uuid::Uuid::new_v4(),
            heartbeats: Default::default(),
            reconciled: std::sync::Mutex::new(None),
            metrics: crate::metrics::Metrics::new(),
            appends: watch::channel(0).0,
            ready: AtomicBool::new(false),
        }
    }

    pub fn image(&self) -> Arc<MetadataImage> {
        self.metadata.image()
    }

    pub fn config<'a>(&'a self, image: &'a MetadataImage) -> ConfigView<'a> {
        ConfigView { node_id: self.node_id, statics: &self.statics, image }
    }

    /// The controller as clients are told it (Metadata, DescribeCluster): the quorum's leader
    /// when clients can reach it (an unfenced broker), else the lowest unfenced broker, else
    /// this one. Any broker forwards what only the active controller decides, so a client that
    /// sends admin requests to the broker named here is served either way.
    pub fn controller_id(&self) -> NodeId {
        let image = self.image();
        let leader = self.metadata.leader().filter(|id| image.is_broker_alive(*id));
        leader.or_else(|| image.usable_brokers().map(|b| b.node_id).next()).unwrap_or(self.node_id)
    }

    /// The partition, when this broker leads it: the one clients produce to and fetch from.
    pub fn partition(&self, topic: &str, index: i32) -> Option<Arc<Partition>> {
        self.partitions.get(topic, index).filter(|p| p.is_leader())
    }

    /// The partition's replica hosted here, whether this broker leads it or not.
    pub fn replica(&self, topic: &str, index: i32) -> Option<Arc<Partition>> {
        self.partitions.get(topic, index)
    }

    /// The error for a partition [`Broker::partition`] did not give: NOT_LEADER_OR_FOLLOWER
    /// when it exists (another broker leads it), UNKNOWN_TOPIC_OR_PARTITION when it does not.
    pub fn not_led(&self, topic: &str, index: i32) -> crate::error::ApiError {
        use kafka_protocol::error::ResponseError;
        let image = self.image();
        match image.topic(topic).and_then(|t| t.partitions.get(&index)) {
            Some(state) => crate::error::ApiError::with(
                ResponseError::NotLeaderOrFollower,
                format!("broker {} leads {topic}-{index}, not this broker ({})", state.leader, self.node_id),
            ),
            None => crate::error::ApiError::new(ResponseError::UnknownTopicOrPartition),
        }
    }

    /// Opens and drops partition logs so that they match the current image. Only the topics
    /// that changed since the last image reconciled here are visited (the image shares the
    /// others), unless a broker config changed; a failed pass is redone in full next time.
    pub fn reconcile(&self) -> Result<(), keel_log::LogError> {
        let mut last = self.reconciled.lock().unwrap_or_else(|p| p.into_inner());
        let image = self.image();
        let view = self.config(&image);
        let result = self.partitions.reconcile(self.node_id, &image, last.as_deref(), &self.logs, &view);
        *last = result.is_ok().then_some(image);
        result
    }

    pub fn notify_append(&self) {
        self.appends.send_modify(|count| *count = count.wrapping_add(1));
    }

    pub fn subscribe_appends(&self) -> watch::Receiver<u64> {
        self.appends.subscribe()
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }
}

/// Wall-clock milliseconds since the epoch, as Kafka timestamps are.
pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

impl Broker {
    /// `keel.fetch.sendfile.enable`: send fetched records with sendfile(2) instead of reading
    /// them into a buffer first (see docs/benchmarks.md for the measurements behind the default).
    pub fn fetch_sendfile(&self) -> bool {
        self.static_or_default("keel.fetch.sendfile.enable").is_some_and(|v| v.eq_ignore_ascii_case("true"))
    }

    /// This broker's registration for this process: fenced until the controller unfences it.
    pub fn registration(&self) -> keel_cluster::BrokerRegistration {
        keel_cluster::BrokerRegistration {
            node_id: self.node_id,
            host: self.advertised.host.clone(),
            port: self.advertised.port,
            rack: self.rack(),
            incarnation: self.incarnation,
            epoch: 0,
            fenced: true,
            in_controlled_shutdown: false,
        }
    }

    /// `broker.rack`, registered with the broker (placement spreads replicas across racks).
    pub fn rack(&self) -> Option<String> {
        self.statics.get("broker.rack").map(str::trim).filter(|rack| !rack.is_empty()).map(str::to_string)
    }

    /// A static broker config, or its default.
    fn static_or_default(&self, name: &str) -> Option<&str> {
        self.statics.get(name).or_else(|| crate::config::broker_def(name).and_then(|def| def.default))
    }

    /// `connections.max.idle.ms`: a connection that sends nothing for this long is closed.
    pub fn connections_max_idle(&self) -> std::time::Duration {
        let ms =
            self.static_or_default("connections.max.idle.ms").and_then(|v| v.parse::<u64>().ok()).unwrap_or(600_000);
        std::time::Duration::from_millis(ms.max(1))
    }

    /// `socket.request.max.bytes`: the largest frame accepted.
    pub fn request_max_bytes(&self) -> usize {
        self.static_or_default("socket.request.max.bytes").and_then(|v| v.parse::<usize>().ok()).unwrap_or(104_857_600)
    }
}

/// Resolves once a shutdown flag turns true (or its sender is gone).
pub async fn stopped(flag: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = flag.wait_for(|stop| *stop).await;
}
