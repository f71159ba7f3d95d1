//! Starting and stopping a node: data directory, log recovery, metadata log, broker
//! registration, the Kafka listener, the HTTP port, background checkpoints and clean shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use keel_cluster::{MetadataStore, NodeId};
use keel_log::{LogConfig, LogManager};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::broker::{now_ms, stopped, Broker, Endpoint};
use crate::config::StaticConfig;
use crate::network;

pub struct ServerOptions {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    /// `host:port` given to clients; defaults to the listen address.
    pub advertise: Option<String>,
    pub http: SocketAddr,
    pub node_id: NodeId,
    pub statics: StaticConfig,
    /// `controller.quorum.voters` given on the command line (`--controllers`); wins over the
    /// config. With neither, the node is a single-node cluster of its own.
    pub controllers: Option<String>,
    /// Address of the controller listener (`--controller-listen`); defaults to this node's
    /// entry in the voters.
    pub controller_listen: Option<SocketAddr>,
}

/// How this node takes part in the controller quorum.
struct Quorum {
    voters: keel_cluster::Voters,
    listen: SocketAddr,
    /// A broker that is not a voter: it follows the metadata log as an observer.
    observer: bool,
    /// Whether this node is a broker too (serves clients, takes replicas).
    broker: bool,
}

impl Quorum {
    /// The quorum the options and configs describe; `None` for a single node.
    async fn resolve(options: &ServerOptions) -> anyhow::Result<Option<Quorum>> {
        let roles = options.statics.get("process.roles").unwrap_or("broker,controller");
        let mut parsed: Vec<&str> = roles.split(',').map(str::trim).filter(|r| !r.is_empty()).collect();
        parsed.sort_unstable();
        parsed.dedup();
        let (observer, broker) = match parsed.as_slice() {
            ["broker", "controller"] => (false, true),
            ["broker"] => (true, true),
            ["controller"] => (false, false),
            _ => anyhow::bail!(
                "process.roles={roles:?} is not valid: use broker,controller (the default), broker or controller"
            ),
        };
        let text =
            options.controllers.clone().or_else(|| options.statics.get("controller.quorum.voters").map(str::to_string));
        let Some(text) = text.filter(|t| !t.trim().is_empty()) else {
            if observer {
                anyhow::bail!(
                    "process.roles=broker needs the controllers: give --controllers (controller.quorum.voters)"
                );
            }
            if let Some(listen) = options.controller_listen {
                anyhow::bail!("--controller-listen {listen} needs --controllers (controller.quorum.voters)");
            }
            return Ok(None);
        };
        let voters = keel_cluster::parse_voters(&text).map_err(|why| anyhow::anyhow!("{why}"))?;
        if observer {
            if voters.contains_key(&options.node_id) {
                anyhow::bail!(
                    "node.id {} is among the controller.quorum.voters {text:?}, but process.roles=broker: a broker \
                     that is not a controller needs an id of its own",
                    options.node_id
                );
            }
            let Some(listen) = options.controller_listen else {
                anyhow::bail!(
                    "process.roles=broker follows the metadata log on a listener of its own: give --controller-listen \
                     HOST:PORT, an address the controllers can reach"
                );
            };
            return Ok(Some(Quorum { voters, listen, observer, broker }));
        }
        let Some(own) = voters.get(&options.node_id) else {
            anyhow::bail!(
                "node.id {} is not among the controller.quorum.voters {text:?}: give each node its own id from that list \
                 (or set process.roles=broker for a broker that is not a controller)",
                options.node_id
            );
        };
        let listen = match options.controller_listen {
            Some(listen) => listen,
            None => tokio::net::lookup_host(own.as_str())
                .await
                .with_context(|| format!("cannot resolve this node's controller address {own}"))?
                .next()
                .with_context(|| format!("this node's controller address {own} resolves to nothing"))?,
        };
        Ok(Some(Quorum { voters, listen, observer, broker }))
    }
}

/// How long a starting node waits for the controller quorum between two progress messages.
const QUORUM_WAIT_REPORT: Duration = Duration::from_secs(10);

/// How long a stopping broker waits for the controller to move its leaderships off.
const CONTROLLED_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// How long shutdown waits for in-flight requests before closing connections anyway.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Runs a node until `shutdown` completes, then stops it cleanly.
pub async fn run(options: ServerOptions, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    std::fs::create_dir_all(&options.data_dir)
        .with_context(|| format!("cannot create data directory {}", options.data_dir.display()))?;
    let _lock = lock_data_dir(&options.data_dir)?;
    let stored_cluster_id = read_meta_properties(&options.data_dir, options.node_id)?;
    let quorum = Quorum::resolve(&options).await?;

    // The HTTP port comes up first so that /livez answers during recovery.
    let (ready_tx, ready_rx) = watch::channel(false);
    let (broker_tx, broker_rx) = watch::channel(None);
    let http_listener =
        TcpListener::bind(options.http).await.with_context(|| format!("cannot listen for HTTP on {}", options.http))?;
    let http_addr = http_listener.local_addr()?;
    let http_state = crate::http::HttpState { ready: ready_rx, broker: broker_rx, started };
    // The web console: its API answers 503 until the broker is built.
    let console = Arc::new(crate::console::Console::default());
    let app = crate::http::router(http_state).merge(crate::console::router(console.clone()));
    let http = tokio::spawn(crate::http::serve(http_listener, app));

    let logs = tokio::task::block_in_place(|| LogManager::open(&options.data_dir, LogConfig::default(), now_ms()))
        .with_context(|| format!("cannot open the logs in {}", options.data_dir.display()))?;
    let report = logs.recovery_report();
    if !report.clean_shutdown && !report.partitions.is_empty() {
        tracing::warn!(partitions = report.partitions.len(), "recovered after an unclean shutdown");
    }
    for (dir, error) in &report.errors {
        tracing::warn!(%dir, %error, "skipped");
    }
    for recovered in &report.partitions {
        let partition = &recovered.report;
        if partition.truncated_bytes > 0 || partition.reopened_after_corruption {
            tracing::warn!(
                topic = %recovered.topic,
                partition = recovered.partition,
                truncated_bytes = partition.truncated_bytes,
                corrupt_below_recovery_point = partition.reopened_after_corruption,
                "recovery cut the log at its first invalid batch"
            );
        }
    }
    let metadata_dir = options.data_dir.join("__cluster_metadata");
    let metadata = match &quorum {
        None => {
            MetadataStore::open(&metadata_dir, options.node_id).await.context("cannot open the cluster metadata log")?
        }
        Some(quorum) => {
            let listener = TcpListener::bind(quorum.listen)
                .await
                .with_context(|| format!("cannot listen for controllers on {}", quorum.listen))?;
            let opened = if quorum.observer {
                MetadataStore::open_observer(
                    &metadata_dir,
                    options.node_id,
                    &quorum.voters,
                    listener,
                    quorum.listen.to_string(),
                    keel_cluster::StoreOptions::default(),
                    stored_cluster_id.as_deref(),
                )
                .await
            } else {
                MetadataStore::open_quorum(
                    &metadata_dir,
                    options.node_id,
                    &quorum.voters,
                    listener,
                    keel_cluster::StoreOptions::default(),
                    stored_cluster_id.as_deref(),
                )
                .await
            };
            opened.context("cannot open the cluster metadata log")?
        }
    };
    let cluster_id =
        join_cluster(&metadata, &options.data_dir, options.node_id, stored_cluster_id, quorum.as_ref()).await?;

    // A node that is only a controller serves no clients: no Kafka listener, no registration.
    let serves_clients = quorum.as_ref().is_none_or(|q| q.broker);
    let listener = match serves_clients {
        true => Some(
            TcpListener::bind(options.listen).await.with_context(|| format!("cannot listen on {}", options.listen))?,
        ),
        false => None,
    };
    let local = match &listener {
        Some(listener) => listener.local_addr()?,
        None => options.listen,
    };
    let advertised = match &options.advertise {
        Some(address) => parse_endpoint(address)?,
        None => Endpoint { host: local.ip().to_string(), port: local.port() },
    };
    let broker = Arc::new(Broker::new(
        options.node_id,
        cluster_id,
        options.data_dir.clone(),
        advertised.clone(),
        options.statics,
        metadata,
        logs,
    ));
    broker.metadata.set_controller_service(Arc::new(crate::controller::Decider(Arc::downgrade(&broker))));
    let _ = broker_tx.send(Some(broker.clone()));
    if serves_clients {
        register(&broker).await?;
        tokio::task::block_in_place(|| broker.reconcile()).context("cannot open partition logs")?;
        broker.start_coordinators();
        broker.start_transaction_coordinators();
    }

    let (stop_tx, stop_rx) = watch::channel(false);
    let mut connections = JoinSet::new();
    let background = tokio::spawn(background_tasks(broker.clone(), stop_rx.clone()));
    let follow = tokio::spawn(follow_metadata(broker.clone(), stop_rx.clone()));
    let heartbeats =
        serves_clients.then(|| tokio::spawn(crate::lifecycle::heartbeat_loop(broker.clone(), stop_rx.clone())));
    let fencing = tokio::spawn(crate::lifecycle::fence_expired_brokers(broker.clone(), stop_rx.clone()));
    let sampler = console.attach(broker.clone(), stop_rx.clone());
    let cleaners =
        crate::cleaner::Cleaners::start(crate::cleaner::CleanerConfig::from_statics(&broker.statics), &broker)
            .context("cannot start the log cleaner")?;
    broker.set_ready(true);
    let _ = ready_tx.send(true);
    let controllers = match &quorum {
        None => String::new(),
        Some(quorum) if !quorum.broker => {
            format!(", a controller only (no client listener) on {} (quorum of {})", quorum.listen, quorum.voters.len())
        }
        Some(quorum) if quorum.observer => {
            format!(", observing the metadata log on {} (quorum of {})", quorum.listen, quorum.voters.len())
        }
        Some(quorum) => format!(", controllers on {} (quorum of {})", quorum.listen, quorum.voters.len()),
    };
    println!(
        "keel node {} listening on {} (advertised {}:{}), http on {}{controllers}, data in {}; ready in {} ms",
        broker.node_id,
        local,
        advertised.host,
        advertised.port,
        http_addr,
        options.data_dir.display(),
        started.elapsed().as_millis()
    );

    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = accept(listener.as_ref()) => match accepted {
                Ok((stream, _)) => {
                    connections.spawn(network::serve(broker.clone(), stream, stop_rx.clone()));
                }
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }

    tracing::info!("shutting down");
    // Leadership moves off this broker before it stops serving (its clients follow it).
    if serves_clients {
        broker.controlled_shutdown(CONTROLLED_SHUTDOWN_TIMEOUT).await;
    }
    broker.set_ready(false);
    let _ = ready_tx.send(false);
    drop(listener);
    let _ = stop_tx.send(true);
    let drained =
        tokio::time::timeout(SHUTDOWN_GRACE, async { while connections.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tracing::warn!("connections still busy after the grace period; closing them");
        connections.abort_all();
        // Aborted tasks may be inside an append on another thread: wait until they are gone,
        // so nothing is written after the logs are flushed and marked clean.
        while connections.join_next().await.is_some() {}
    }
    let _ = background.await;
    let _ = follow.await;
    if let Some(heartbeats) = heartbeats {
        let _ = heartbeats.await;
    }
    let _ = fencing.await;
    let _ = sampler.await;
    // The cleaners finish their pass before the logs close.
    tokio::task::block_in_place(|| cleaners.stop());
    // Transaction coordinators first: finishing a transaction may tell a group coordinator.
    broker.transactions.stop().await;
    broker.groups.stop().await;
    let flushed = tokio::task::block_in_place(|| broker.logs.shutdown());
    // Stopped even when the flush failed: it also ends a metadata write waiting for disk space,
    // which would otherwise keep the process from exiting.
    let stopped = broker.metadata.shutdown().await;
    flushed.context("cannot flush the logs")?;
    stopped.context("cannot stop the metadata log")?;
    http.abort();
    println!("keel node {} stopped cleanly", broker.node_id);
    Ok(())
}

/// The next connection on the Kafka listener; never, for a node without one.
async fn accept(listener: Option<&TcpListener>) -> std::io::Result<(tokio::net::TcpStream, SocketAddr)> {
    match listener {
        Some(listener) => listener.accept().await,
        None => std::future::pending().await,
    }
}

fn parse_endpoint(address: &str) -> anyhow::Result<Endpoint> {
    let (host, port) =
        address.rsplit_once(':').with_context(|| format!("--advertise {address:?} must be host:port"))?;
    let port = port.parse().with_context(|| format!("--advertise {address:?} has a bad port"))?;
    Ok(Endpoint { host: host.trim_matches(['[', ']']).to_string(), port })
}

/// Registers this broker with the active controller (a new incarnation each start) and waits
/// until it is unfenced: its image has caught up with the metadata log. Prints progress while
/// the quorum has no leader.
async fn register(broker: &Arc<Broker>) -> anyhow::Result<()> {
    let registered = async {
        loop {
            let deadline = tokio::time::Instant::now() + QUORUM_WAIT_REPORT;
            match broker.register(broker.registration(), deadline).await {
                Ok(()) => break,
                Err(error) if error.code == kafka_protocol::error::ResponseError::RequestTimedOut => println!(
                    "keel node {} waiting for the controller quorum to register: {}",
                    broker.node_id,
                    error.message.unwrap_or_default()
                ),
                Err(error) => anyhow::bail!("cannot register the broker: {}", error.message.unwrap_or_default()),
            }
        }
        broker
            .wait_unfenced(QUORUM_WAIT_REPORT)
            .await
            .map_err(|error| anyhow::anyhow!("cannot join the cluster: {}", error.message.unwrap_or_default()))
    };
    unless_another_cluster(&broker.metadata, &broker.data_dir, Some(&broker.cluster_id), registered).await
}

/// Runs `work`, a step of a node's start, unless a controller of another cluster shows up
/// meanwhile (or has already): then this node's data directory (of cluster `ours`) is not one
/// of this cluster's, and the start stops with an error that says so.
async fn unless_another_cluster<T>(
    metadata: &MetadataStore,
    data_dir: &Path,
    ours: Option<&str>,
    work: impl Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    let conflict = async {
        loop {
            if let Some(conflict) = metadata.cluster_conflict() {
                return conflict;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let (peer, theirs) = tokio::select! {
        done = work => match metadata.cluster_conflict() {
            Some(conflict) => conflict,
            None => return done,
        },
        conflict = conflict => conflict,
    };
    Err(anyhow::anyhow!(
        "{} belongs to another cluster than the controllers this node was started with: the controller at \
         {peer} belongs to cluster {theirs:?}, this directory to {:?}; give this node its own data directory \
         (or an empty one to join that cluster)",
        data_dir.display(),
        ours.unwrap_or("?")
    ))
}

/// Takes `<data-dir>/.lock` for the life of the process, so two nodes never share a data
/// directory (Kafka does the same with its `.lock` file).
fn lock_data_dir(data_dir: &Path) -> anyhow::Result<std::fs::File> {
    let path = data_dir.join(".lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => anyhow::bail!(
            "{} is in use by another keel process; stop it or choose another --data-dir",
            data_dir.display()
        ),
        Err(std::fs::TryLockError::Error(error)) => {
            Err(error).with_context(|| format!("cannot lock {}", path.display()))
        }
    }
}

/// Reads `meta.properties` (Kafka's file naming the cluster and node a data directory belongs
/// to), refusing a directory of another node. Returns the cluster id it records, if any.
fn read_meta_properties(data_dir: &Path, node_id: NodeId) -> anyhow::Result<Option<String>> {
    let path = data_dir.join("meta.properties");
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(error).with_context(|| format!("cannot read {}", path.display())),
    };
    let value = |key: &str| {
        text.lines()
            .filter_map(|line| line.split_once('='))
            .find(|(k, _)| k.trim() == key)
            .map(|(_, v)| v.trim().to_string())
    };
    let stored: Option<NodeId> = value("node.id").and_then(|v| v.parse().ok());
    if stored != Some(node_id) {
        let stored = stored.map_or("?".into(), |id| id.to_string());
        anyhow::bail!(
            "{} belongs to node {stored}, not {node_id}: start with --node-id {stored} or use another --data-dir",
            data_dir.display(),
        );
    }
    value("cluster.id").map(Some).with_context(|| format!("{} has no cluster.id", path.display()))
}

/// Writes `meta.properties` for a directory that has none (atomically: temporary file, fsync,
/// rename, directory fsync).
fn write_meta_properties(data_dir: &Path, cluster_id: &str, node_id: NodeId) -> anyhow::Result<()> {
    let path = data_dir.join("meta.properties");
    let text = format!("version=1\ncluster.id={cluster_id}\nnode.id={node_id}\n");
    let tmp = data_dir.join("meta.properties.tmp");
    std::fs::write(&tmp, text)?;
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, &path)?;
    std::fs::File::open(data_dir)?.sync_all()?;
    Ok(())
}

/// Learns the cluster id from the metadata log (the first active controller records it: the id
/// of its data directory, or a new one), waiting as long as the quorum has no leader, and makes
/// sure this data directory belongs to that cluster. No format step: a new directory records
/// the id; one of another cluster is refused.
async fn join_cluster(
    metadata: &MetadataStore,
    data_dir: &Path,
    node_id: NodeId,
    stored: Option<String>,
    quorum: Option<&Quorum>,
) -> anyhow::Result<String> {
    let candidate = stored.clone().unwrap_or_else(|| cluster_id_from(uuid::Uuid::new_v4()));
    let voters = quorum.map_or("this node".into(), |q| {
        q.voters.iter().map(|(id, addr)| format!("{id}@{addr}")).collect::<Vec<_>>().join(",")
    });
    let joined = async {
        let cluster_id = loop {
            match metadata.agree_cluster_id(&candidate, QUORUM_WAIT_REPORT).await {
                Ok(id) => break id,
                Err(keel_cluster::MetadataError::Timeout { .. }) => println!(
                    "keel node {node_id} waiting for the controller quorum ({voters}): start the other nodes \
                     with the same --controllers"
                ),
                Err(error) => return Err(error).context("cannot learn the cluster id from the metadata log"),
            }
        };
        // A directory that knows its cluster id agrees at once from its own log: it belongs here
        // only if the quorum's controllers accept it, which a leader shows.
        loop {
            match metadata.wait_for_leader(QUORUM_WAIT_REPORT).await {
                Ok(_) => return Ok(cluster_id),
                Err(keel_cluster::MetadataError::Timeout { .. }) => {
                    println!("keel node {node_id} waiting for the controller quorum to elect a leader")
                }
                Err(error) => return Err(error).context("cannot join the controller quorum"),
            }
        }
    };
    let joined = unless_another_cluster(metadata, data_dir, stored.as_deref(), joined).await;
    let cluster_id = match joined {
        Ok(cluster_id) => cluster_id,
        Err(error) => {
            let _ = metadata.shutdown().await;
            return Err(error);
        }
    };
    match stored {
        Some(stored) if stored != cluster_id => {
            let _ = metadata.shutdown().await;
            anyhow::bail!(
                "{} belongs to cluster {stored}, but the controller quorum is cluster {cluster_id}: \
                 give this node its own data directory (or an empty one to join cluster {cluster_id})",
                data_dir.display()
            )
        }
        Some(_) => {}
        None => write_meta_properties(data_dir, &cluster_id, node_id)
            .with_context(|| format!("cannot write {}", data_dir.join("meta.properties").display()))?,
    }
    metadata.set_cluster_id(&cluster_id);
    Ok(cluster_id)
}

/// Kafka's cluster id format: a UUID as 22 characters of URL-safe base64 without padding.
fn cluster_id_from(id: uuid::Uuid) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let bytes = id.as_bytes();
    let mut out = String::with_capacity(22);
    for chunk in bytes.chunks(3) {
        let mut group = [0u8; 3];
        group[..chunk.len()].copy_from_slice(chunk);
        let n = u32::from_be_bytes([0, group[0], group[1], group[2]]);
        for i in 0..=chunk.len() {
            out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

/// Applies every change of the metadata image to this broker (partitions opened, dropped and
/// reconfigured, coordinators told of new topics), whoever made the change.
async fn follow_metadata(broker: Arc<Broker>, mut stop: watch::Receiver<bool>) {
    let mut images = broker.metadata.subscribe();
    loop {
        tokio::select! {
            _ = stopped(&mut stop) => return,
            changed = images.changed() => {
                if changed.is_err() {
                    return;
                }
                images.mark_unchanged();
                if let Err(error) = broker.apply_image().await {
                    tracing::warn!(error = %error.message.unwrap_or_default(), "cannot apply a metadata change to the partitions here");
                }
            }
        }
    }
}

/// How often the `.deleted` files of deleted segments are checked against `file.delete.delay.ms`.
const DELETED_FILES_SWEEP: Duration = Duration::from_secs(1);

/// Periodic work: recovery-point checkpoints, time-based flushes, retention and the removal of
/// deleted segments' files.
async fn background_tasks(broker: Arc<Broker>, mut stop: watch::Receiver<bool>) {
    let checkpoint_every = Duration::from_millis(
        broker.statics.get("log.flush.offset.checkpoint.interval.ms").and_then(|v| v.parse().ok()).unwrap_or(60_000),
    );
    let retention_every = Duration::from_millis(
        broker
            .statics
            .get("log.retention.check.interval.ms")
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(300_000)
            .max(1),
    );
    let mut checkpoint = tokio::time::interval(checkpoint_every);
    let mut flush = tokio::time::interval(Duration::from_millis(100));
    let expire_every = broker.statics.get("producer.id.expiration.check.interval.ms").and_then(|v| v.parse().ok());
    let mut expire_producers = tokio::time::interval(Duration::from_millis(expire_every.unwrap_or(600_000).max(1)));
    let mut retention = tokio::time::interval_at(tokio::time::Instant::now() + retention_every, retention_every);
    retention.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut sweep = tokio::time::interval(DELETED_FILES_SWEEP);
    loop {
        tokio::select! {
            _ = stopped(&mut stop) => return,
            _ = retention.tick() => {
                let broker = broker.clone();
                let _ = tokio::task::spawn_blocking(move || enforce_retention(&broker)).await;
            }
            _ = sweep.tick() => {
                let broker = broker.clone();
                let _ = tokio::task::spawn_blocking(move || {
                    let now = now_ms();
                    for partition in broker.partitions.all() {
                        if let Err(error) = partition.log.remove_deleted_files(now) {
                            tracing::warn!(topic = %partition.topic, partition = partition.index, %error, "cannot remove deleted segment files");
                        }
                    }
                })
                .await;
            }
            _ = checkpoint.tick() => {
                let broker = broker.clone();
                let result = tokio::task::spawn_blocking(move || broker.logs.checkpoint()).await;
                if let Ok(Err(error)) = result {
                    tracing::warn!(%error, "recovery checkpoint failed");
                }
            }
            _ = flush.tick() => {
                let broker = broker.clone();
                let _ = tokio::task::spawn_blocking(move || {
                    let now = now_ms();
                    for partition in broker.partitions.all() {
                        if let Err(error) = partition.log.maybe_flush(now) {
                            tracing::warn!(topic = %partition.topic, partition = partition.index, %error, "flush failed");
                        }
                    }
                })
                .await;
            }
            _ = expire_producers.tick() => {
                let broker = broker.clone();
                let _ = tokio::task::spawn_blocking(move || {
                    let image = broker.image();
                    let view = broker.config(&image);
                    let expiration_ms = view.broker_i64("producer.id.expiration.ms").unwrap_or(86_400_000);
                    let now = now_ms();
                    for partition in broker.partitions.all() {
                        partition.log.remove_expired_producers(now, expiration_ms);
                    }
                })
                .await;
            }
        }
    }
}

/// One retention pass over every hosted partition (Kafka's `cleanupLogs`); the log start
/// offsets it raised are checkpointed at once.
fn enforce_retention(broker: &Broker) {
    let now = now_ms();
    let mut deleted_any = false;
    for partition in broker.partitions.all() {
        match partition.log.delete_old_segments(now) {
            Ok((0, _)) => {}
            Ok((segments, reason)) => {
                deleted_any = true;
                tracing::info!(
                    topic = %partition.topic,
                    partition = partition.index,
                    segments,
                    ?reason,
                    log_start_offset = partition.log.log_start_offset(),
                    "deleted old segments"
                );
            }
            Err(error) => {
                tracing::warn!(topic = %partition.topic, partition = partition.index, %error, "retention failed");
            }
        }
    }
    if deleted_any {
        if let Err(error) = broker.logs.checkpoint() {
            tracing::warn!(%error, "log start offset checkpoint failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_ids_look_like_kafkas() {
        let id = cluster_id_from(uuid::Uuid::nil());
        assert_eq!(id, "AAAAAAAAAAAAAAAAAAAAAA");
        assert_eq!(cluster_id_from(uuid::Uuid::new_v4()).len(), 22);
    }
}
