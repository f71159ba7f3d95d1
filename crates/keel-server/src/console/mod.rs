//! The web console on the HTTP port: a page built into the binary (`assets/`) and the JSON API
//! it reads (`api.rs`), with throughput and consumer-lag history kept by `sampler.rs`.
//!
//! The API reads the broker in process. Actions that have a Kafka API go through the same
//! handler the Kafka port uses (CreateTopics, DeleteTopics, DescribeConfigs,
//! IncrementalAlterConfigs, ListOffsets, Fetch, ListGroups, DescribeGroups,
//! ConsumerGroupDescribe, OffsetFetch), so validation and error codes are Kafka's; a Kafka error
//! becomes a JSON error with the error's name and a sentence for the user. Nothing is fetched
//! from elsewhere at run time: no CDN, no web fonts.

mod api;
mod browse;
mod sampler;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::Router;
use kafka_protocol::error::ResponseError;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::broker::Broker;

pub use sampler::History;

/// The console's state: the broker once it is built, and the sampled history.
#[derive(Default)]
pub struct Console {
    broker: OnceLock<Arc<Broker>>,
    history: Mutex<History>,
}

impl Console {
    /// Hands the console the broker (the HTTP port is up before it exists) and starts the
    /// sampler, which runs until `stop` turns true.
    pub fn attach(self: &Arc<Self>, broker: Arc<Broker>, stop: watch::Receiver<bool>) -> JoinHandle<()> {
        let _ = self.broker.set(broker.clone());
        tokio::spawn(sampler::run(self.clone(), broker, stop))
    }

    fn broker(&self) -> Result<Arc<Broker>, ApiError> {
        match self.broker.get() {
            Some(broker) if broker.is_ready() => Ok(broker.clone()),
            _ => Err(ApiError {
                status: StatusCode::SERVICE_UNAVAILABLE,
                error: "NOT_READY".into(),
                message:
                    "The broker is not ready: it is starting (recovering its logs) or stopping. Try again in a few \
                          seconds."
                        .into(),
            }),
        }
    }

    fn history(&self) -> std::sync::MutexGuard<'_, History> {
        self.history.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

const INDEX_HTML: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const STYLE_CSS: &str = include_str!("assets/style.css");

/// The console's routes: the page at `/`, its assets under `/console/`, the API under `/api/`.
pub fn router(console: Arc<Console>) -> Router {
    Router::new()
        .route("/", get(|| async { asset("text/html; charset=utf-8", INDEX_HTML) }))
        .route("/console/app.js", get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }))
        .route("/console/style.css", get(|| async { asset("text/css; charset=utf-8", STYLE_CSS) }))
        .route("/api/overview", get(api::overview))
        .route("/api/topics", get(api::topics).post(api::create_topic))
        .route("/api/topics/{name}", get(api::topic).delete(api::delete_topic))
        .route("/api/topics/{name}/configs", post(api::alter_configs))
        .route("/api/topics/{name}/messages", get(browse::messages))
        .route("/api/groups", get(api::groups))
        .route("/api/groups/{id}", get(api::group))
        .route("/api/{*rest}", any(api::not_found))
        .with_state(console)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "no-cache")], body).into_response()
}

/// A JSON error: `{"error": "KAFKA_ERROR_NAME", "message": "what happened and what to do"}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    error: String,
    message: String,
}

impl ApiError {
    fn bad_request(message: impl Into<String>) -> Self {
        ApiError { status: StatusCode::BAD_REQUEST, error: "INVALID_REQUEST".into(), message: message.into() }
    }

    /// A Kafka error code from a handler, with the handler's message when it gave one.
    fn kafka(code: i16, message: Option<&str>) -> Self {
        let error = ResponseError::try_from_code(code).unwrap_or(ResponseError::UnknownServerError);
        let status = match error {
            ResponseError::UnknownTopicOrPartition | ResponseError::GroupIdNotFound | ResponseError::UnknownTopicId => {
                StatusCode::NOT_FOUND
            }
            ResponseError::TopicAlreadyExists => StatusCode::CONFLICT,
            ResponseError::CoordinatorLoadInProgress
            | ResponseError::CoordinatorNotAvailable
            | ResponseError::NotController
            | ResponseError::RequestTimedOut => StatusCode::SERVICE_UNAVAILABLE,
            ResponseError::UnknownServerError | ResponseError::KafkaStorageError => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::BAD_REQUEST,
        };
        let detail = message.filter(|m| !m.is_empty()).map_or_else(|| error.to_string(), str::to_string);
        let message = match hint(error) {
            Some(hint) => format!("{} {hint}", sentence(&detail)),
            None => sentence(&detail),
        };
        ApiError { status, error: kafka_name(error), message }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": self.error, "message": self.message });
        (self.status, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
    }
}

/// A JSON answer.
fn json(value: serde_json::Value) -> Response {
    ([(header::CONTENT_TYPE, "application/json"), (header::CACHE_CONTROL, "no-store")], value.to_string())
        .into_response()
}

/// Kafka's name for an error (`UNKNOWN_TOPIC_OR_PARTITION`).
fn kafka_name(error: ResponseError) -> String {
    keel_protocol::error_name(error.code()).unwrap_or_else(|| format!("UNKNOWN_ERROR_CODE_{}", error.code()))
}

/// Starts with a capital and ends with a period, for display.
fn sentence(text: &str) -> String {
    let mut out: String = text.trim().to_string();
    if let Some(first) = out.get_mut(..1) {
        first.make_ascii_uppercase();
    }
    if !out.ends_with('.') {
        out.push('.');
    }
    out
}

/// What a user can do about the errors the console's actions run into.
fn hint(error: ResponseError) -> Option<&'static str> {
    Some(match error {
        ResponseError::TopicAlreadyExists => "Choose another name, or open the existing topic from the topics list.",
        ResponseError::InvalidTopicException => {
            "Topic names use letters, digits, '.', '_' and '-', at most 249 characters, and are not '.' or '..'."
        }
        ResponseError::InvalidPartitions => "Use at least 1 partition.",
        ResponseError::InvalidReplicationFactor => {
            "The replication factor cannot exceed the number of brokers in the cluster."
        }
        ResponseError::InvalidConfig => "Check the value against the config's description.",
        ResponseError::UnknownTopicOrPartition => "Check the name and the partition in the topics list.",
        ResponseError::GroupIdNotFound => "The group has no members and no committed offsets.",
        ResponseError::CoordinatorLoadInProgress | ResponseError::CoordinatorNotAvailable => {
            "The group coordinator is starting; try again in a few seconds."
        }
        _ => return None,
    })
}

/// The parameters of a query string, percent-decoded. Later duplicates win.
fn query_params(raw: Option<&str>) -> HashMap<String, String> {
    raw.unwrap_or("")
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(key), percent_decode(value))
        })
        .collect()
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |at: usize| bytes.get(at).and_then(|b| (*b as char).to_digit(16));
        match (bytes[i], hex(i + 1), hex(i + 2)) {
            (b'%', Some(high), Some(low)) => {
                out.push((high * 16 + low) as u8);
                i += 3;
            }
            (b'+', _, _) => {
                out.push(b' ');
                i += 1;
            }
            (byte, _, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kafka_names_match_kafkas() {
        assert_eq!(kafka_name(ResponseError::UnknownTopicOrPartition), "UNKNOWN_TOPIC_OR_PARTITION");
        assert_eq!(kafka_name(ResponseError::TopicAlreadyExists), "TOPIC_ALREADY_EXISTS");
        assert_eq!(kafka_name(ResponseError::InvalidTopicException), "INVALID_TOPIC_EXCEPTION");
        assert_eq!(kafka_name(ResponseError::Unknown(1000)), "UNKNOWN_ERROR_CODE_1000");
    }

    #[test]
    fn query_strings_are_decoded() {
        let params = query_params(Some("filter=a%20b+c&from=end&empty=&bad=%zz&tail=%4"));
        assert_eq!(params["filter"], "a b c");
        assert_eq!(params["from"], "end");
        assert_eq!(params["empty"], "");
        assert_eq!(params["bad"], "%zz");
        assert_eq!(params["tail"], "%4");
        assert!(query_params(None).is_empty());
    }
}
