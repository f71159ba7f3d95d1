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
            let (_, metadata) = connect(common).await?.metadata(None, false).await?;
            Ok(Health::of(&metadata))
        }
    }
}

struct Health {
    nodes: usize,
    partitions: usize,
    under_replicated: Vec<String>,
    offline: Vec<String>,
    /// Whether the node serves requests; only a node's health summary tells.
    ready: Option<bool>,
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
            ready: Some(summary.get("ready").and_then(|v| v.as_bool()).ok_or_else(bad)?),
        })
    }

    fn of(metadata: &MetadataResponse) -> Health {
        let topics = offsets::topics(metadata);
        let mut health = Health {
            nodes: metadata.brokers.len(),
            partitions: 0,
            under_replicated: Vec::new(),
            offline: Vec::new(),
            ready: None,
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
        self.ready != Some(false) && self.nodes > 0 && self.under_replicated.is_empty() && self.offline.is_empty()
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
        text
    }

    fn json(&self) -> serde_json::Value {
        let mut json = json!({
            "healthy": self.healthy(),
            "nodes": self.nodes,
            "partitions": self.partitions,
            "under_replicated_partitions": self.under_replicated,
            "offline_partitions": self.offline,
        });
        if let Some(ready) = self.ready {
            json["ready"] = json!(ready);
        }
        json
    }
}

async fn info(common: &Common) -> Result<u8, CliError> {
    let mut client = connect(common).await?;
    let (_, metadata) = client.metadata(None, false).await?;
    let health = Health::of(&metadata);
    let topics = offsets::topics(&metadata);
    let mut brokers: Vec<_> = metadata.brokers.iter().collect();
    brokers.sort_by_key(|b| b.node_id.0);
    let cluster_id = metadata.cluster_id.as_ref().map(|c| c.to_string());
    let controller = metadata.controller_id.0;
    let rows: Vec<Vec<String>> = brokers
        .iter()
        .map(|b| {
            vec![
                b.node_id.0.to_string(),
                b.host.to_string(),
                b.port.to_string(),
                b.rack.as_ref().map_or("-".to_string(), |r| r.to_string()),
                if b.node_id.0 == controller { "yes".to_string() } else { String::new() },
            ]
        })
        .collect();
    let text = format!(
        "Cluster id:        {}\nController:        {controller}\nTopics:            {}\nPartitions:        {}\nUnder-replicated:  {}\nOffline:           {}\n\n{}",
        cluster_id.as_deref().unwrap_or("-"),
        topics.len(),
        health.partitions,
        health.under_replicated.len(),
        health.offline.len(),
        table(&["NODE", "HOST", "PORT", "RACK", "CONTROLLER"], &rows),
    );
    let json = json!({
        "cluster_id": cluster_id,
        "controller_id": controller,
        "nodes": brokers.iter().map(|b| json!({
            "node_id": b.node_id.0,
            "host": b.host.as_str(),
            "port": b.port,
            "rack": b.rack.as_ref().map(|r| r.to_string()),
        })).collect::<Vec<_>>(),
        "topics": topics.len(),
        "partitions": health.partitions,
        "under_replicated_partitions": health.under_replicated,
        "offline_partitions": health.offline,
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
