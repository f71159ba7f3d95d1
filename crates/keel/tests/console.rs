//! The web console's JSON API on the HTTP port against a real node: topics created, browsed,
//! configured and deleted; a group's lag; and hostile parameters answered with 4xx JSON errors.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use common::Keel;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::{json, Value};

/// One HTTP/1.0 exchange: (status, body).
fn http(addr: SocketAddr, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect to the HTTP port");
    stream.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
    let body = body.unwrap_or("");
    let request = format!(
        "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).expect("send");
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).expect("read the answer");
    let reply = String::from_utf8(reply).expect("utf-8 answer");
    let (head, body) = reply.split_once("\r\n\r\n").expect("a header block");
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).expect("a status line");
    (status, body.to_string())
}

fn api(keel: &Keel, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let body = body.map(|b| b.to_string());
    let (status, text) = http(keel.http, method, path, body.as_deref());
    let value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{method} {path}: not JSON ({e}): {text}"));
    (status, value)
}

/// A 4xx answer with a Kafka-style error name and a message.
fn assert_error(answer: (u16, Value), status: u16, error: &str) {
    assert_eq!(answer.0, status, "{answer:?}");
    assert_eq!(answer.1["error"], error, "{answer:?}");
    assert!(answer.1["message"].as_str().is_some_and(|m| !m.is_empty()), "{answer:?}");
}

#[test]
fn page_and_assets_are_served_from_the_binary() {
    let keel = Keel::start(&[]);
    let (status, index) = http(keel.http, "GET", "/", None);
    assert_eq!(status, 200);
    assert!(index.contains("/console/app.js") && index.contains("/console/style.css"), "{index}");
    for path in ["/", "/console/app.js", "/console/style.css"] {
        let (status, text) = http(keel.http, "GET", path, None);
        assert_eq!(status, 200, "{path}");
        // Nothing is loaded from elsewhere: no CDN, no web fonts.
        assert!(!text.contains("http://") && !text.contains("https://"), "{path} refers to another site");
    }
    // Health endpoints are unchanged.
    assert_eq!(http(keel.http, "GET", "/livez", None), (200, "ok\n".to_string()));
    assert_eq!(http(keel.http, "GET", "/readyz", None), (200, "ready\n".to_string()));
    assert_error(api(&keel, "GET", "/api/no-such-endpoint", None), 404, "NOT_FOUND");
}

#[test]
fn topics_are_created_browsed_configured_and_deleted() {
    let keel = Keel::start(&[]);
    let created = api(&keel, "POST", "/api/topics", Some(json!({ "name": "orders", "partitions": 2 })));
    assert_eq!(created.0, 200, "{created:?}");
    assert_eq!(created.1["partitions"], 2);
    assert_error(
        api(&keel, "POST", "/api/topics", Some(json!({ "name": "orders", "partitions": 2 }))),
        409,
        "TOPIC_ALREADY_EXISTS",
    );

    let producer: ThreadedProducer<DefaultProducerContext> =
        ClientConfig::new().set("bootstrap.servers", keel.bootstrap()).set("acks", "all").create().expect("producer");
    for i in 0..10 {
        let value = if i == 0 { r#"{"id":0,"total":12.5}"#.to_string() } else { format!("plain-{i}") };
        let key = format!("key-{i}");
        let headers = OwnedHeaders::new().insert(Header { key: "source", value: Some("test") });
        producer
            .send(BaseRecord::to("orders").partition(0).key(&key).payload(&value).headers(headers))
            .map_err(|(e, _)| e)
            .expect("send");
    }
    producer
        .send(BaseRecord::<(), [u8]>::to("orders").partition(1).payload(&[0xff, 0x00][..]))
        .map_err(|(e, _)| e)
        .expect("send");
    producer.flush(Duration::from_secs(30)).expect("flush");

    let (status, page) = api(&keel, "GET", "/api/topics/orders/messages?partition=0&from=beginning&limit=3", None);
    assert_eq!(status, 200, "{page}");
    let records = page["records"].as_array().expect("records");
    assert_eq!(records.len(), 3, "limit is kept");
    assert_eq!(records[0]["offset"], 0);
    assert_eq!(records[0]["key"]["text"], "key-0");
    assert_eq!(records[0]["value"]["text"], r#"{"id":0,"total":12.5}"#);
    assert_eq!(
        records[0]["headers"][0],
        json!({ "key": "source", "value": { "encoding": "utf8", "text": "test", "size": 4, "truncated": false } })
    );
    assert_eq!(page["partitions"][0]["next_offset"], 3);
    assert_eq!(page["partitions"][0]["high_watermark"], 10);

    // The newest records, across partitions; binary values come back as hex.
    let (_, page) = api(&keel, "GET", "/api/topics/orders/messages?from=end&limit=500", None);
    assert_eq!(page["records"].as_array().expect("records").len(), 11);
    let binary =
        page["records"].as_array().expect("records").iter().find(|r| r["partition"] == 1).expect("partition 1");
    assert_eq!(binary["value"]["encoding"], "hex");
    assert_eq!(binary["value"]["text"], "ff00");
    assert_eq!(binary["key"], Value::Null);

    // From an offset, and a text filter.
    let (_, page) = api(&keel, "GET", "/api/topics/orders/messages?partition=0&from=offset&offset=8", None);
    let offsets: Vec<i64> =
        page["records"].as_array().expect("records").iter().map(|r| r["offset"].as_i64().expect("offset")).collect();
    assert_eq!(offsets, [8, 9]);
    let (_, page) = api(&keel, "GET", "/api/topics/orders/messages?from=beginning&filter=PLAIN-7", None);
    let found: Vec<&Value> = page["records"].as_array().expect("records").iter().collect();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0]["key"]["text"], "key-7");
    // From a time: everything was written after 2020.
    let (_, page) =
        api(&keel, "GET", "/api/topics/orders/messages?partition=0&from=timestamp&timestamp=1577836800000", None);
    assert_eq!(page["records"].as_array().expect("records").len(), 10);

    // Partitions with their offsets.
    let (status, topic) = api(&keel, "GET", "/api/topics/orders", None);
    assert_eq!(status, 200);
    assert_eq!(topic["partitions"][0]["log_start_offset"], 0);
    assert_eq!(topic["partitions"][0]["high_watermark"], 10);
    assert_eq!(topic["partitions"][0]["last_stable_offset"], 10);
    assert_eq!(topic["records"], 11);

    // Configs: set, refused with Kafka's error, deleted back to the default.
    let (status, _) =
        api(&keel, "POST", "/api/topics/orders/configs", Some(json!({ "set": { "retention.ms": "3600000" } })));
    assert_eq!(status, 200);
    let config = |keel: &Keel| {
        let (_, topic) = api(keel, "GET", "/api/topics/orders", None);
        topic["configs"]
            .as_array()
            .expect("configs")
            .iter()
            .find(|c| c["name"] == "retention.ms")
            .cloned()
            .expect("retention.ms")
    };
    assert_eq!(config(&keel)["value"], "3600000");
    assert_eq!(config(&keel)["source"], "topic");
    assert_error(
        api(&keel, "POST", "/api/topics/orders/configs", Some(json!({ "set": { "retention.ms": "soon" } }))),
        400,
        "INVALID_CONFIG",
    );
    let (status, _) = api(&keel, "POST", "/api/topics/orders/configs", Some(json!({ "delete": ["retention.ms"] })));
    assert_eq!(status, 200);
    assert_eq!(config(&keel)["value"], "604800000");

    let (_, list) = api(&keel, "GET", "/api/topics", None);
    assert!(list["topics"].as_array().expect("topics").iter().any(|t| t["name"] == "orders" && t["partitions"] == 2));
    let (status, _) = api(&keel, "DELETE", "/api/topics/orders", None);
    assert_eq!(status, 200);
    assert_error(api(&keel, "GET", "/api/topics/orders", None), 404, "UNKNOWN_TOPIC_OR_PARTITION");
    assert_error(api(&keel, "DELETE", "/api/topics/orders", None), 404, "UNKNOWN_TOPIC_OR_PARTITION");
}

#[test]
fn hostile_parameters_get_4xx_json_errors() {
    let keel = Keel::start(&[]);
    assert_eq!(api(&keel, "POST", "/api/topics", Some(json!({ "name": "t", "partitions": 1 }))).0, 200);
    for (path, error) in [
        ("/api/topics/t/messages?limit=1000000000000", "INVALID_REQUEST"),
        ("/api/topics/t/messages?limit=-1", "INVALID_REQUEST"),
        ("/api/topics/t/messages?partition=-1", "INVALID_REQUEST"),
        ("/api/topics/t/messages?partition=abc", "INVALID_REQUEST"),
        ("/api/topics/t/messages?from=offset&offset=-9223372036854775808", "INVALID_REQUEST"),
        ("/api/topics/t/messages?from=offset", "INVALID_REQUEST"),
        ("/api/topics/t/messages?from=timestamp&timestamp=yesterday", "INVALID_REQUEST"),
        ("/api/topics/t/messages?from=nowhere", "INVALID_REQUEST"),
    ] {
        assert_error(api(&keel, "GET", path, None), 400, error);
    }
    assert_error(
        api(&keel, "GET", "/api/topics/t/messages?partition=2147483647", None),
        404,
        "UNKNOWN_TOPIC_OR_PARTITION",
    );
    assert_error(api(&keel, "GET", "/api/topics/missing/messages", None), 404, "UNKNOWN_TOPIC_OR_PARTITION");
    // An offset past the end reads nothing rather than failing.
    let (status, page) = api(&keel, "GET", "/api/topics/t/messages?from=offset&offset=9223372036854775807", None);
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["records"], json!([]));

    for body in
        ["{", "[]", r#"{"name": 5}"#, r#"{"name":"x","partitions":99999999999}"#, r#"{"name":"x","surprise":1}"#]
    {
        let (status, text) = http(keel.http, "POST", "/api/topics", Some(body));
        assert_eq!(status, 400, "{body}: {text}");
        let value: Value = serde_json::from_str(&text).expect("a JSON error");
        assert_eq!(value["error"], "INVALID_REQUEST", "{body}");
    }
    assert_error(
        api(&keel, "POST", "/api/topics", Some(json!({ "name": "neg", "partitions": -3 }))),
        400,
        "INVALID_PARTITIONS",
    );
    assert_error(api(&keel, "POST", "/api/topics", Some(json!({ "name": "b@d" }))), 400, "INVALID_TOPIC_EXCEPTION");
    assert_error(
        api(&keel, "POST", "/api/topics", Some(json!({ "name": "rf", "replication_factor": 3 }))),
        400,
        "INVALID_REPLICATION_FACTOR",
    );
    assert_error(api(&keel, "POST", "/api/topics/t/configs", Some(json!({}))), 400, "INVALID_REQUEST");
    assert_error(
        api(&keel, "POST", "/api/topics/t/configs", Some(json!({ "set": { "no.such.config": "1" } }))),
        400,
        "INVALID_CONFIG",
    );
    assert_error(api(&keel, "GET", "/api/groups/nobody", None), 404, "GROUP_ID_NOT_FOUND");
    // Large values are cut for display, with their full size given.
    let producer: ThreadedProducer<DefaultProducerContext> =
        ClientConfig::new().set("bootstrap.servers", keel.bootstrap()).create().expect("producer");
    let big = "v".repeat(300_000);
    for _ in 0..3 {
        producer.send(BaseRecord::<(), str>::to("t").payload(&big)).map_err(|(e, _)| e).expect("send");
    }
    producer.flush(Duration::from_secs(30)).expect("flush");
    let (status, page) = api(&keel, "GET", "/api/topics/t/messages?from=beginning&limit=500", None);
    assert_eq!(status, 200);
    let records = page["records"].as_array().expect("records");
    assert_eq!(records.len(), 3);
    for record in records {
        assert_eq!(record["value"]["size"], 300_000);
        assert_eq!(record["value"]["truncated"], true);
        assert_eq!(record["value"]["text"].as_str().expect("text").len(), 64 << 10);
    }
    // A body above the limit (2 MiB) is refused once the limit is read, not buffered whole.
    let mut stream = TcpStream::connect_timeout(&keel.http, Duration::from_secs(5)).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
    let body = format!(r#"{{"name":"{}"}}"#, "x".repeat(3 << 20));
    let request = format!(
        "POST /api/topics HTTP/1.0\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut writer = stream.try_clone().expect("clone");
    // The server may answer and close before all is sent: write on another thread.
    let sending = std::thread::spawn(move || {
        let _ = writer.write_all(request.as_bytes());
    });
    let mut reply = Vec::new();
    let _ = stream.read_to_end(&mut reply);
    let _ = sending.join();
    let reply = String::from_utf8_lossy(&reply);
    assert!(reply.starts_with("HTTP/1.0 413"), "{reply}");
    assert!(reply.contains("PAYLOAD_TOO_LARGE"), "{reply}");
    // Still serving.
    assert_eq!(api(&keel, "GET", "/api/overview", None).0, 200);
}

#[test]
fn a_group_shows_its_lag_per_partition() {
    let keel = Keel::start(&[]);
    assert_eq!(api(&keel, "POST", "/api/topics", Some(json!({ "name": "events", "partitions": 2 }))).0, 200);
    let producer: ThreadedProducer<DefaultProducerContext> =
        ClientConfig::new().set("bootstrap.servers", keel.bootstrap()).create().expect("producer");
    for i in 0..20 {
        producer
            .send(BaseRecord::<(), str>::to("events").partition(i % 2).payload("x"))
            .map_err(|(e, _)| e)
            .expect("send");
    }
    producer.flush(Duration::from_secs(30)).expect("flush");
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", keel.bootstrap())
        .set("group.id", "billing")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut offsets = TopicPartitionList::new();
    offsets.add_partition_offset("events", 0, Offset::Offset(4)).expect("offset");
    offsets.add_partition_offset("events", 1, Offset::Offset(10)).expect("offset");
    consumer.commit(&offsets, CommitMode::Sync).expect("commit");

    let (status, group) = api(&keel, "GET", "/api/groups/billing", None);
    assert_eq!(status, 200, "{group}");
    assert_eq!(
        group["offsets"],
        json!([
            { "topic": "events", "partition": 0, "committed_offset": 4, "high_watermark": 10, "lag": 6 },
            { "topic": "events", "partition": 1, "committed_offset": 10, "high_watermark": 10, "lag": 0 },
        ])
    );
    let (_, groups) = api(&keel, "GET", "/api/groups", None);
    let listed = groups["groups"].as_array().expect("groups").iter().find(|g| g["group_id"] == "billing").cloned();
    assert_eq!(listed.expect("billing listed")["lag"], 6);
    let (_, overview) = api(&keel, "GET", "/api/overview", None);
    assert_eq!(overview["groups"], 1);
    assert_eq!(overview["records"], 20);
    // The one-node metadata quorum: this node leads it.
    assert_eq!(overview["quorum"]["leader"], 1);
    assert_eq!(overview["quorum"]["voters"], serde_json::json!([1]));
    assert!(overview["quorum"]["high_watermark"].as_u64().is_some_and(|hw| hw >= 3), "{overview}");
}

/// The message browser shows what a read_committed consumer sees: committed transactions'
/// records, not aborted ones, and nothing of an open transaction.
#[test]
fn the_browser_shows_committed_transactions_only() {
    let keel = Keel::start(&[]);
    let (status, created) =
        api(&keel, "POST", "/api/topics", Some(json!({ "name": "ledger", "partitions": 1, "replication_factor": 1 })));
    assert_eq!(status, 200, "{created}");
    let producer = common::write_transactions(&keel.bootstrap(), "console-ledger", "ledger");
    let values = |keel: &Keel| -> Vec<String> {
        let (status, page) = api(keel, "GET", "/api/topics/ledger/messages?partition=0&from=beginning", None);
        assert_eq!(status, 200, "{page}");
        page["records"].as_array().expect("records").iter().map(|r| r["value"]["text"].to_string()).collect()
    };
    assert_eq!(values(&keel), [r#""kept-1""#, r#""kept-2""#, r#""kept-3""#]);
    producer.commit_transaction(Duration::from_secs(30)).expect("commit");
    assert_eq!(values(&keel), [r#""kept-1""#, r#""kept-2""#, r#""kept-3""#, r#""pending""#]);
}
