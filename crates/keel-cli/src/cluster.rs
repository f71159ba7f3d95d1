//! `keel cluster info|health`, from Metadata: a partition is under-replicated when its ISR is
//! smaller than its replica set, offline when it has no leader.

use std::io::Write;
use std::time::{Duration, Instant};

use kafka_protocol::messages::MetadataResponse;
use serde_json::json;

use crate::error::{exit, CliError};
use crate::offsets;
use crate::output::{emit, table};
use crate::{connect, ClusterArgs, ClusterCommand, Common, Format};

pub async fn run(args: ClusterArgs) -> Result<u8, CliError> {
    match args.command {
        ClusterCommand::Info => info(&args.common).await,
        // The `keel` binary runs it (it starts servers, not a client).
        ClusterCommand::Up { .. } => Err(CliError::Usage("`keel cluster up` is run by the keel binary".to_string())),
        ClusterCommand::Health { watch: false, http, .. } => {
            let health = check(&args.common, http.as_deref()).await?;
            emit(args.common.format, &health.text(), &health.json())?;
            Ok(if health.healthy() { exit::OK } else { exit::UNHEALTHY })
        }
        ClusterCommand::Health { watch: true, exit_when_healthy, interval, timeout, http } => {
            watch(&args.common, http.as_deref(), exit_when_healthy, interval, timeout).await
        }
    }
}

/// One health check: from Metadata over the Kafka protocol, or from a Keel node's `/health`.
async fn check(common: &Common, http: Option<&str>) -> Result<Health, CliError> {
    match http {
        Some(addr) => Health::from_summary(&crate::http::get_json(addr, "/health").await?),
        None => {
            let mut client = connect(common).await?;
            let (_, metadata) = client.metadata(None, false).await?;
            let mut health = Health::of(&metadata);
            let listed = described_brokers(&mut client).await?;
            health.fenced = listed.into_iter().flatten().filter(|n| n.state == "fenced").map(|n| n.id).collect();
            Ok(health)
        }
    }
}

struct Health {
    nodes: usize,
    partitions: usize,
    under_replicated: Vec<String>,
    offline: Vec<String>,
    /// Brokers that are registered but fenced (down, or shut down).
    fenced: Vec<i32>,
    /// Whether the node serves requests; only a node's health summary tells.
    ready: Option<bool>,
    /// Whether the metadata quorum has a leader; only a node's health summary tells.
    quorum_leader: Option<bool>,
}

impl Health {
    /// Reads a node's health summary (`/health`), whose fields are those of [`Health::json`].
    fn from_summary(summary: &serde_json::Value) -> Result<Health, CliError> {
        let bad = || CliError::Protocol(format!("the health summary is not what a Keel node sends: {summary}"));
        let names = |field: &str| -> Option<Vec<String>> {
            summary.get(field)?.as_array()?.iter().map(|v| v.as_str().map(str::to_string)).collect()
        };
        Ok(Health {
            nodes: summary.get("nodes").and_then(|v| v.as_u64()).unwrap_or(0) as usize,
            partitions: summary.get("partitions").and_then(|v| v.as_u64()).unwrap_or(0) as usize,
            under_replicated: names("under_replicated_partitions").unwrap_or_default(),
            offline: names("offline_partitions").unwrap_or_default(),
            fenced: summary
                .get("fenced_brokers")
                .and_then(|v| v.as_array())
                .map(|ids| ids.iter().filter_map(|id| id.as_i64()).map(|id| id as i32).collect())
                .unwrap_or_default(),
            ready: Some(summary.get("ready").and_then(|v| v.as_bool()).ok_or_else(bad)?),
            quorum_leader: summary.get("metadata_quorum").and_then(|q| q.get("leader")).map(|l| !l.is_null()),
        })
    }

    fn of(metadata: &MetadataResponse) -> Health {
        let topics = offsets::topics(metadata);
        let mut health = Health {
            nodes: metadata.brokers.len(),
            partitions: 0,
            under_replicated: Vec::new(),
            offline: Vec::new(),
            fenced: Vec::new(),
            ready: None,
            quorum_leader: None,
        };
        for topic in &topics {
            for p in &topic.partitions {
                health.partitions += 1;
                if p.leader < 0 {
                    health.offline.push(format!("{}-{}", topic.name, p.partition));
                }
                if p.isr.len() < p.replicas.len() {
                    health.under_replicated.push(format!("{}-{}", topic.name, p.partition));
                }
            }
        }
        health
    }

    fn healthy(&self) -> bool {
        self.ready != Some(false)
            && self.quorum_leader != Some(false)
            && self.nodes > 0
            && self.under_replicated.is_empty()
            && self.offline.is_empty()
            && self.fenced.is_empty()
    }

    fn text(&self) -> String {
        let mut text = format!(
            "{}: {} node(s), {} partition(s), {} under-replicated, {} offline\n",
            match (self.healthy(), self.ready) {
                (_, Some(false)) => "not ready",
                (true, _) => "healthy",
                (false, _) => "unhealthy",
            },
            self.nodes,
            self.partitions,
            self.under_replicated.len(),
            self.offline.len()
        );
        if !self.under_replicated.is_empty() {
            text.push_str(&format!("under-replicated: {}\n", self.under_replicated.join(" ")));
        }
        if !self.offline.is_empty() {
            text.push_str(&format!("offline: {}\n", self.offline.join(" ")));
        }
        if !self.fenced.is_empty() {
            let ids: Vec<String> = self.fenced.iter().map(i32::to_string).collect();
            text.push_str(&format!(
                "fenced brokers: {} (no heartbeat to the controller, or shut down)\n",
                ids.join(" ")
            ));
        }
        if self.quorum_leader == Some(false) {
            text.push_str("metadata quorum: no leader (metadata changes wait until a majority of controllers is up)\n");
        }
        text
    }

    fn json(&self) -> serde_json::Value {
        let mut json = json!({
            "healthy": self.healthy(),
            "nodes": self.nodes,
            "partitions": self.partitions,
            "under_replicated_partitions": self.under_replicated,
            "offline_partitions": self.offline,
            "fenced_brokers": self.fenced,
        });
        if let Some(ready) = self.ready {
            json["ready"] = json!(ready);
        }
        if let Some(leader) = self.quorum_leader {
            json["metadata_quorum_has_leader"] = json!(leader);
        }
        json
    }
}

/// One broker of `keel cluster info`.
struct Node {
    id: i32,
    host: String,
    port: i32,
    rack: Option<String>,
    state: &'static str,
}

/// The metadata quorum as DescribeQuorum reports it.
struct Quorum {
    leader_id: i32,
    leader_epoch: i32,
    high_watermark: i64,
    /// (node id, log end offset, lag behind the leader's log end) of each voter; -1 and `None`
    /// when its log end is unknown.
    voters: Vec<(i32, i64, Option<i64>)>,
    /// The same for each observer (a broker that follows the log without voting).
    observers: Vec<(i32, i64, Option<i64>)>,
}

/// The brokers with whether each is fenced, from DescribeCluster v2 (KIP-1073: fenced brokers
/// included); `None` when the cluster does not list fenced brokers (older Kafka).
async fn described_brokers(client: &mut crate::client::Client) -> Result<Option<Vec<Node>>, CliError> {
    use kafka_protocol::messages::DescribeClusterRequest;
    let answer = client
        .any()
        .request(2..=2, |_| {
            let mut request = DescribeClusterRequest::default();
            request.include_fenced_brokers = true;
            request.endpoint_type = 1;
            request
        })
        .await;
    match answer {
        Ok((_, response)) if response.error_code == 0 => Ok(Some(
            response
                .brokers
                .iter()
                .map(|b| Node {
                    id: b.broker_id.0,
                    host: b.host.to_string(),
                    port: b.port,
                    rack: b.rack.as_ref().map(|r| r.to_string()),
                    state: if b.is_fenced { "fenced" } else { "unfenced" },
                })
                .collect(),
        )),
        Ok(_) | Err(CliError::Unsupported { .. }) => Ok(None),
        Err(error) => Err(error),
    }
}

/// Asks for the metadata quorum; `Ok(None)` when the cluster does not serve DescribeQuorum (a
/// cluster without KRaft, or one that keeps it to its controllers).
async fn quorum(client: &mut crate::client::Client) -> Result<Option<Result<Quorum, String>>, CliError> {
    use kafka_protocol::messages::{describe_quorum_request, describe_quorum_response, DescribeQuorumRequest};
    let answer = client
        .any()
        .request(0..=2, |_| {
            let mut partition = describe_quorum_request::PartitionData::default();
            partition.partition_index = 0;
            let mut topic = describe_quorum_request::TopicData::default();
            topic.topic_name = crate::client::name("__cluster_metadata");
            topic.partitions = vec![partition];
            let mut request = DescribeQuorumRequest::default();
            request.topics = vec![topic];
            request
        })
        .await;
    let response = match answer {
        Ok((_, response)) => response,
        Err(CliError::Unsupported { .. }) => return Ok(None),
        Err(error) => return Err(error),
    };
    let Some(partition) = response.topics.first().and_then(|t| t.partitions.first()) else {
        return Ok(Some(Err(crate::error::error_name(response.error_code))));
    };
    let error = if response.error_code != 0 { response.error_code } else { partition.error_code };
    if error != 0 {
        return Ok(Some(Err(crate::error::error_name(error))));
    }
    // Lag counts from the leader's log end, as Kafka's metadata-quorum tool does.
    let leader_id = partition.leader_id.0;
    let voters = &partition.current_voters;
    let leader_end =
        voters.iter().find(|v| v.replica_id.0 == leader_id).map_or(partition.high_watermark, |v| v.log_end_offset);
    let progress = |v: &describe_quorum_response::ReplicaState| {
        let end = v.log_end_offset;
        (v.replica_id.0, end, (end >= 0).then(|| (leader_end - end).max(0)))
    };
    Ok(Some(Ok(Quorum {
        leader_id,
        leader_epoch: partition.leader_epoch,
        high_watermark: partition.high_watermark,
        voters: voters.iter().map(progress).collect(),
        observers: partition.observers.iter().map(progress).collect(),
    })))
}

async fn info(common: &Common) -> Result<u8, CliError> {
    let mut client = connect(common).await?;
    let (_, metadata) = client.metadata(None, false).await?;
    let quorum = quorum(&mut client).await?;
    let fenced = described_brokers(&mut client).await?;
    let health = Health::of(&metadata);
    let topics = offsets::topics(&metadata);
    let cluster_id = metadata.cluster_id.as_ref().map(|c| c.to_string());
    let controller = metadata.controller_id.0;
    // Metadata lists the brokers clients may use; DescribeCluster adds the fenced ones.
    let mut nodes: Vec<Node> = metadata
        .brokers
        .iter()
        .map(|b| Node {
            id: b.node_id.0,
            host: b.host.to_string(),
            port: b.port,
            rack: b.rack.as_ref().map(|r| r.to_string()),
            state: "unfenced",
        })
        .collect();
    for listed in fenced.into_iter().flatten() {
        match nodes.iter_mut().find(|n| n.id == listed.id) {
            Some(node) => node.state = listed.state,
            None => nodes.push(listed),
        }
    }
    nodes.sort_by_key(|n| n.id);
    let rows: Vec<Vec<String>> = nodes
        .iter()
        .map(|n| {
            vec![
                n.id.to_string(),
                n.host.clone(),
                n.port.to_string(),
                n.rack.clone().unwrap_or_else(|| "-".to_string()),
                n.state.to_string(),
                if n.id == controller { "yes".to_string() } else { String::new() },
            ]
        })
        .collect();
    let mut text = format!(
        "Cluster id:        {}\nController:        {controller}\nTopics:            {}\nPartitions:        {}\nUnder-replicated:  {}\nOffline:           {}\n\n{}",
        cluster_id.as_deref().unwrap_or("-"),
        topics.len(),
        health.partitions,
        health.under_replicated.len(),
        health.offline.len(),
        table(&["NODE", "HOST", "PORT", "RACK", "STATE", "CONTROLLER"], &rows),
    );
    match &quorum {
        Some(Ok(q)) => {
            let row = |&(id, end, lag): &(i32, i64, Option<i64>), role: &str| {
                vec![format!("{id}{role}"), end.to_string(), lag.map_or("-".to_string(), |lag| lag.to_string())]
            };
            let rows: Vec<Vec<String>> =
                q.voters.iter().map(|v| row(v, "")).chain(q.observers.iter().map(|o| row(o, " (observer)"))).collect();
            text.push_str(&format!(
                "\nMetadata quorum:   leader {} (epoch {}), high watermark {}\n\n{}",
                q.leader_id,
                q.leader_epoch,
                q.high_watermark,
                table(&["VOTER", "LOG END", "LAG"], &rows)
            ));
        }
        Some(Err(error)) => text.push_str(&format!("\nMetadata quorum:   unavailable ({error})\n")),
        None => {}
    }
    let json = json!({
        "cluster_id": cluster_id,
        "controller_id": controller,
        "nodes": nodes.iter().map(|n| json!({
            "node_id": n.id,
            "host": n.host,
            "port": n.port,
            "rack": n.rack,
            "state": n.state,
        })).collect::<Vec<_>>(),
        "topics": topics.len(),
        "partitions": health.partitions,
        "under_replicated_partitions": health.under_replicated,
        "offline_partitions": health.offline,
        "quorum": match &quorum {
            Some(Ok(q)) => json!({
                "leader_id": q.leader_id,
                "leader_epoch": q.leader_epoch,
                "high_watermark": q.high_watermark,
                "voters": q.voters.iter().map(|&(id, end, lag)| json!({
                    "node_id": id,
                    "log_end_offset": end,
                    "lag": lag,
                })).collect::<Vec<_>>(),
                "observers": q.observers.iter().map(|&(id, end, lag)| json!({
                    "node_id": id,
                    "log_end_offset": end,
                    "lag": lag,
                })).collect::<Vec<_>>(),
            }),
            Some(Err(error)) => json!({ "error": error }),
            None => serde_json::Value::Null,
        },
    });
    emit(common.format, &text, &json)?;
    Ok(exit::OK)
}

/// Prints one line per check; with `exit_when_healthy`, exits 0 at the first healthy one.
async fn watch(
    common: &Common,
    http: Option<&str>,
    exit_when_healthy: bool,
    interval: f64,
    timeout: Option<f64>,
) -> Result<u8, CliError> {
    if !(interval.is_finite() && interval > 0.0) {
        return Err(CliError::Usage("--interval must be a positive number of seconds".to_string()));
    }
    let started = Instant::now();
    let deadline = match timeout {
        Some(t) if t.is_finite() && t >= 0.0 => Some(started + Duration::from_secs_f64(t)),
        Some(_) => return Err(CliError::Usage("--timeout must be a number of seconds".to_string())),
        None => None,
    };
    loop {
        let (healthy, text, json) = match check(common, http).await {
            Ok(health) => (health.healthy(), health.text(), health.json()),
            Err(error @ (CliError::Connect { .. } | CliError::Disconnected { .. })) => {
                (false, format!("unreachable: {error}\n"), json!({ "healthy": false, "error": error.to_string() }))
            }
            Err(error) => return Err(error),
        };
        let line = match common.format {
            Format::Text => text,
            Format::Json => format!("{json}\n"),
        };
        let mut stdout = std::io::stdout().lock();
        if stdout.write_all(line.as_bytes()).and_then(|_| stdout.flush()).is_err() {
            return Ok(exit::OK);
        }
        drop(stdout);
        if healthy && exit_when_healthy {
            return Ok(exit::OK);
        }
        let next = Instant::now() + Duration::from_secs_f64(interval);
        if let Some(deadline) = deadline {
            if next > deadline {
                if healthy {
                    return Ok(exit::OK);
                }
                return Err(CliError::Unhealthy(format!(
                    "the cluster was not healthy within {} s",
                    timeout.unwrap_or_default()
                )));
            }
        }
        tokio::time::sleep_until(next.into()).await;
    }
}
