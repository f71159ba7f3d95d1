//! The HTTP port: `/livez`, `/readyz`, the JSON health summary at `/health` and Prometheus
//! metrics at `/metrics`. It comes up before the logs are recovered, so that `/livez` answers
//! during a long recovery; until the broker exists, `/health` says "starting" and `/metrics`
//! answers 503.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::broker::Broker;

/// What the HTTP handlers see of the node.
#[derive(Clone)]
pub struct HttpState {
    /// True from the end of startup to the start of shutdown.
    pub ready: watch::Receiver<bool>,
    /// The broker, once the logs and metadata are open.
    pub broker: watch::Receiver<Option<Arc<Broker>>>,
    pub started: Instant,
}

impl HttpState {
    pub fn broker(&self) -> Option<Arc<Broker>> {
        self.broker.borrow().clone()
    }
}

pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/livez", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .with_state(state)
}

pub async fn serve(listener: TcpListener, app: Router) {
    if let Err(error) = axum::serve(listener, app).await {
        tracing::error!(%error, "http server stopped");
    }
}

async fn readyz(State(state): State<HttpState>) -> Response {
    if *state.ready.borrow() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response()
    }
}

async fn metrics(State(state): State<HttpState>) -> Response {
    let Some(broker) = state.broker() else {
        return (StatusCode::SERVICE_UNAVAILABLE, "starting: the logs are being recovered\n").into_response();
    };
    let body = broker.metrics.scrape(&broker).await;
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], body).into_response()
}

/// The health summary: 200 when healthy, 503 otherwise, with the same fields as
/// `keel cluster health --format json` (which reads it with `--http`).
async fn health(State(state): State<HttpState>) -> Response {
    let ready = *state.ready.borrow();
    let uptime_seconds = state.started.elapsed().as_secs();
    let Some(broker) = state.broker() else {
        let body = json!({
            "status": "starting",
            "healthy": false,
            "ready": false,
            "uptime_seconds": uptime_seconds,
        });
        return json_response(StatusCode::SERVICE_UNAVAILABLE, &body);
    };
    let summary = health_summary(&broker, ready, uptime_seconds);
    let status = if summary["healthy"] == true { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    json_response(status, &summary)
}

fn json_response(status: StatusCode, body: &serde_json::Value) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], format!("{body}\n")).into_response()
}

/// The node's view of the cluster: a partition is under-replicated when its ISR is smaller
/// than its replica set, offline when it has no leader (as `keel cluster health` computes
/// from Metadata); the metadata quorum must have a leader and no broker may be fenced.
pub fn health_summary(broker: &Broker, ready: bool, uptime_seconds: u64) -> serde_json::Value {
    let image = broker.image();
    let mut partitions = 0;
    let mut under_replicated = Vec::new();
    let mut offline = Vec::new();
    for topic in image.topics.values() {
        for (index, state) in &topic.partitions {
            partitions += 1;
            if state.leader < 0 {
                offline.push(format!("{}-{index}", topic.name));
            }
            if state.isr.len() < state.replicas.len() {
                under_replicated.push(format!("{}-{index}", topic.name));
            }
        }
    }
    let nodes = image.brokers.len();
    let fenced: Vec<_> = image.brokers.values().filter(|b| b.fenced).map(|b| b.node_id).collect();
    // A metadata quorum without a leader takes no metadata change, and a fenced broker (this
    // one or another) serves nothing: the node reports the cluster unhealthy.
    let quorum = broker.metadata.quorum();
    let healthy = ready
        && nodes > 0
        && under_replicated.is_empty()
        && offline.is_empty()
        && quorum.leader.is_some()
        && fenced.is_empty();
    let status = match (ready, healthy) {
        (false, _) => "not ready",
        (true, true) => "healthy",
        (true, false) => "unhealthy",
    };
    json!({
        "status": status,
        "healthy": healthy,
        "ready": ready,
        "node_id": broker.node_id,
        "cluster_id": broker.cluster_id,
        "nodes": nodes,
        "fenced_brokers": fenced,
        "topics": image.topics.len(),
        "partitions": partitions,
        "under_replicated_partitions": under_replicated,
        "offline_partitions": offline,
        "metadata_quorum": {
            "leader": quorum.leader,
            "epoch": quorum.epoch(),
            "voters": quorum.voter_ids(),
        },
        "uptime_seconds": uptime_seconds,
    })
}
