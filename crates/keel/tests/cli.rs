//! The `keel` client commands against a real Keel process: output shapes pinned with insta
//! snapshots (topic ids, timestamps, ports and cluster ids redacted), exit codes, and interop
//! with librdkafka (rdkafka) and kcat.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::Keel;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs `keel ARGS` with stdin, against `brokers`, with no config file in reach.
fn keel_at(brokers: &str, args: &[&str], stdin: &[u8]) -> Run {
    let home = tempfile::tempdir().expect("tempdir");
    let mut child = Command::new(env!("CARGO_BIN_EXE_keel"))
        .args(args)
        .env("KEEL_BROKERS", brokers)
        .env_remove("KEEL_CONFIG")
        .env_remove("KEEL_PROFILE")
        .env("HOME", home.path())
        .env("XDG_CONFIG_HOME", home.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn keel");
    child.stdin.take().expect("stdin").write_all(stdin).expect("write stdin");
    let output = child.wait_with_output().expect("keel output");
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

fn keel(node: &Keel, args: &[&str]) -> Run {
    keel_at(&node.bootstrap(), args, b"")
}

/// Runs a command that must succeed and returns its stdout.
fn ok(node: &Keel, args: &[&str]) -> String {
    ok_with_stdin(node, args, b"")
}

fn ok_with_stdin(node: &Keel, args: &[&str], stdin: &[u8]) -> String {
    let run = keel_at(&node.bootstrap(), args, stdin);
    assert_eq!(run.code, 0, "keel {args:?} failed: {}{}", run.stdout, run.stderr);
    run.stdout
}

/// Redactions for what differs from run to run.
fn settings() -> insta::Settings {
    let mut settings = insta::Settings::clone_current();
    settings.set_prepend_module_to_snapshot(false);
    settings.add_filter(r"127\.0\.0\.1:\d{2,5}", "127.0.0.1:[port]");
    settings.add_filter(r"(127\.0\.0\.1\s+)\d{5}", "$1[port]");
    settings.add_filter(r#""port": \d+"#, r#""port": "[port]""#);
    settings.add_filter(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", "[uuid]");
    settings.add_filter(r"\b1\d{12}\b", "[timestamp]");
    settings.add_filter(r"(Cluster id:\s+)\S+", "$1[cluster-id]");
    settings.add_filter(r#""cluster_id": "[^"]+""#, r#""cluster_id": "[cluster-id]""#);
    settings
}

macro_rules! snapshot {
    ($name:expr, $value:expr) => {
        settings().bind(|| insta::assert_snapshot!($name, $value))
    };
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_millis() as i64
}

#[test]
fn topic_commands_create_list_describe_alter_add_partitions_and_trim() {
    let node = Keel::start(&[]);
    snapshot!("topic_create", ok(&node, &["topic", "create", "orders", "-p", "3", "-c", "retention.ms=86400000"]));
    snapshot!("topic_create_json", ok(&node, &["topic", "create", "events", "-p", "1", "--format", "json"]));
    snapshot!("topic_create_if_not_exists", ok(&node, &["topic", "create", "orders", "--if-not-exists"]));
    let exists = keel(&node, &["topic", "create", "orders"]);
    assert_eq!(exists.code, 1);
    snapshot!("topic_create_exists_error", exists.stderr);

    snapshot!("topic_list", ok(&node, &["topic", "list"]));
    snapshot!("topic_list_json", ok(&node, &["topic", "list", "--format", "json"]));
    snapshot!("topic_describe", ok(&node, &["topic", "describe", "orders"]));
    snapshot!("topic_describe_json", ok(&node, &["topic", "describe", "orders", "--format", "json"]));
    let all = ok(&node, &["topic", "describe", "orders", "--all-configs"]);
    assert!(all.contains("segment.bytes") && all.contains("(DEFAULT_CONFIG)"), "{all}");

    snapshot!(
        "topic_alter_config",
        ok(&node, &["topic", "alter-config", "orders", "--set", "cleanup.policy=compact", "--delete", "retention.ms"])
    );
    snapshot!("topic_describe_after_alter", ok(&node, &["topic", "describe", "orders"]));
    let nothing = keel(&node, &["topic", "alter-config", "orders"]);
    assert_eq!(nothing.code, 2, "{}", nothing.stderr);

    snapshot!("topic_add_partitions", ok(&node, &["topic", "add-partitions", "orders", "-p", "4"]));
    let fewer = keel(&node, &["topic", "add-partitions", "orders", "-p", "2"]);
    assert_eq!(fewer.code, 1);
    assert!(fewer.stderr.contains("INVALID_PARTITIONS"), "{}", fewer.stderr);

    let lines: String = (0..5).map(|i| format!("record-{i}\n")).collect();
    ok_with_stdin(&node, &["produce", "events", "--partition", "0"], lines.as_bytes());
    snapshot!("topic_trim", ok(&node, &["topic", "trim", "events", "--before", "3"]));
    snapshot!("topic_trim_keep_last_json", ok(&node, &["topic", "trim", "events", "--before=-1", "--format", "json"]));
    snapshot!("topic_describe_after_trim", ok(&node, &["topic", "describe", "events"]));
    let read = ok(&node, &["consume", "events", "-e", "-f", "%o %v\\n"]);
    assert_eq!(read, "4 record-4\n");

    snapshot!("topic_delete", ok(&node, &["topic", "delete", "events"]));
    snapshot!("topic_delete_if_exists", ok(&node, &["topic", "delete", "events", "--if-exists"]));
    let gone = keel(&node, &["topic", "delete", "events"]);
    assert_eq!(gone.code, 1);
    assert!(gone.stderr.contains("UNKNOWN_TOPIC_OR_PARTITION"), "{}", gone.stderr);
}

#[test]
fn produce_from_stdin_then_consume_with_format_strings_and_json() {
    let node = Keel::start(&[]);
    ok(&node, &["topic", "create", "greetings", "-p", "3"]);
    let input = b"alice:hello\nbob:world\ncarol:how are you\ndave:\n";
    // Keyed records land where Java's murmur2 partitioner puts them.
    snapshot!(
        "produce_keys_headers",
        ok_with_stdin(&node, &["produce", "greetings", "-K", ":", "-H", "source=cli", "-H", "lang=en"], input)
    );
    ok_with_stdin(&node, &["produce", "greetings", "-K", ":", "-p", "0"], b"no key here\n");
    snapshot!(
        "consume_format_string",
        ok(&node, &["consume", "greetings", "-e", "-f", "%t/%p/%o key=%k value=%v headers=%h lengths=%K,%S\\n"])
    );
    snapshot!("consume_json", ok(&node, &["consume", "greetings", "-e", "--format", "json"]));
    snapshot!(
        "consume_last_one_per_partition",
        ok(&node, &["consume", "greetings", "-o", "-1", "-n", "10", "-f", "%p [%k]\\n"])
    );
    assert_eq!(ok(&node, &["consume", "greetings", "-n", "1", "-p", "2", "-f", "%v"]).lines().count(), 1);

    // @timestamp: only what was produced at or after the time.
    ok(&node, &["topic", "create", "timed", "-p", "1"]);
    ok_with_stdin(&node, &["produce", "timed"], b"early-1\nearly-2\n");
    std::thread::sleep(Duration::from_millis(50));
    let cut = now_ms();
    std::thread::sleep(Duration::from_millis(50));
    ok_with_stdin(&node, &["produce", "timed", "--acks", "1"], b"late-1\nlate-2\n");
    assert_eq!(ok(&node, &["consume", "timed", "-o", &format!("@{cut}"), "-e"]), "late-1\nlate-2\n");
    assert_eq!(ok(&node, &["consume", "timed", "-o", "@2001-01-01T00:00:00Z", "-n", "1"]), "early-1\n");
    assert_eq!(ok(&node, &["consume", "timed", "-o", "end", "-e"]), "");
    assert_eq!(ok(&node, &["consume", "timed", "-o", "2", "-n", "1"]), "late-1\n");

    // Every codec round-trips, and acks=0 is fire-and-forget.
    for codec in ["gzip", "snappy", "lz4", "zstd"] {
        let topic = format!("codec-{codec}");
        let lines: String = (0..500).map(|i| format!("k{i}\t{codec} value {i}\n")).collect();
        ok_with_stdin(&node, &["produce", &topic, "-K", "\\t", "--compression", codec], lines.as_bytes());
        ok_with_stdin(&node, &["produce", &topic, "-K", "\t", "--compression", codec], lines.as_bytes());
        let read = ok(&node, &["consume", &topic, "-e", "-f", "%k=%v\\n"]);
        assert_eq!(read.lines().count(), 1000, "{codec}");
        assert_eq!(read.matches(&format!("k499={codec} value 499\n")).count(), 2, "{codec}");
    }
    // Large records: batches stay under the broker's max.message.bytes (1 MiB).
    let big: String = (0..25).map(|i| format!("{i}:{}\n", "x".repeat(100_000))).collect();
    let produced = ok_with_stdin(&node, &["produce", "big", "-K", ":", "-H", "kind=big", "-p", "0"], big.as_bytes());
    assert!(produced.contains("25 records, offsets 0..24"), "{produced}");
    assert_eq!(ok(&node, &["consume", "big", "-e", "-f", "%k %S\n"]).lines().count(), 25);

    ok_with_stdin(&node, &["produce", "fire", "--acks", "0"], b"a\nb\n");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let read = ok(&node, &["consume", "fire", "-e"]);
        if read == "a\nb\n" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "acks=0 records never arrived: {read:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn produce_sends_each_line_when_input_pauses() {
    let node = Keel::start(&[]);
    ok(&node, &["topic", "create", "typed", "-p", "1"]);
    let mut producer = Command::new(env!("CARGO_BIN_EXE_keel"))
        .args(["produce", "typed", "--brokers", &node.bootstrap()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn keel produce");
    let mut stdin = producer.stdin.take().expect("stdin");
    for (i, line) in ["first", "second"].iter().enumerate() {
        stdin.write_all(format!("{line}\n").as_bytes()).expect("write");
        stdin.flush().expect("flush");
        // Readable while stdin is still open.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while ok(&node, &["consume", "typed", "-e"]).lines().count() < i + 1 {
            assert!(std::time::Instant::now() < deadline, "{line:?} was not sent while stdin stayed open");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    drop(stdin);
    let output = producer.wait_with_output().expect("produce output");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "produced 2 records to topic \"typed\"\n  partition 0: 2 records, offsets 0..1\n"
    );
    assert_eq!(ok(&node, &["consume", "typed", "-e"]), "first\nsecond\n");
}

#[test]
fn group_describe_seek_and_delete() {
    let node = Keel::start(&["group.initial.rebalance.delay.ms=0"]);
    ok(&node, &["topic", "create", "billing", "-p", "2"]);
    let six: String = (0..6).map(|i| format!("p0-{i}\n")).collect();
    let four: String = (0..4).map(|i| format!("p1-{i}\n")).collect();
    ok_with_stdin(&node, &["produce", "billing", "-p", "0"], six.as_bytes());
    ok_with_stdin(&node, &["produce", "billing", "-p", "1"], four.as_bytes());

    // Four records from partition 0, committed: lag 2 there, 4 on partition 1.
    assert_eq!(ok(&node, &["consume", "billing", "-g", "app", "-n", "4"]), "p0-0\np0-1\np0-2\np0-3\n");
    snapshot!("group_list", ok(&node, &["group", "list"]));
    snapshot!("group_describe_lag", ok(&node, &["group", "describe", "app"]));
    // The next run resumes at the committed offsets.
    assert_eq!(ok(&node, &["consume", "billing", "-g", "app", "-n", "3"]), "p0-4\np0-5\np1-0\n");

    snapshot!("group_seek_start", ok(&node, &["group", "seek", "app", "--to", "start"]));
    snapshot!("group_describe_after_seek_start", ok(&node, &["group", "describe", "app", "--format", "json"]));
    snapshot!(
        "group_seek_offset",
        ok(&node, &["group", "seek", "app", "--to", "5", "--topic", "billing", "--partition", "0"])
    );
    snapshot!("group_seek_end_json", ok(&node, &["group", "seek", "app", "--to", "end", "--format", "json"]));
    snapshot!("group_describe_after_seek_end", ok(&node, &["group", "describe", "app"]));
    // By time: everything is after the epoch, nothing after the year 2200.
    let offsets_after = |time: &str| -> Vec<i64> {
        let moved = ok(&node, &["group", "seek", "app", "--to", time, "--format", "json"]);
        let moved: serde_json::Value = serde_json::from_str(&moved).expect("json");
        moved["partitions"].as_array().expect("partitions").iter().map(|p| p["offset"].as_i64().unwrap()).collect()
    };
    assert_eq!(offsets_after("@0"), vec![0, 0]);
    assert_eq!(offsets_after("@2200-01-01T00:00:00Z"), vec![6, 4]);
    assert_eq!(ok(&node, &["consume", "billing", "-g", "app", "-e"]), "");

    // An active member (librdkafka, classic protocol) blocks seek and delete.
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", node.bootstrap())
        .set("group.id", "live")
        .set("client.id", "billing-worker")
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    subscribe_until_assigned(&consumer, "billing", 2);
    let mut offsets = TopicPartitionList::new();
    offsets.add_partition_offset("billing", 1, Offset::Offset(3)).expect("offset");
    consumer.commit(&offsets, rdkafka::consumer::CommitMode::Sync).expect("commit");
    snapshot!("group_describe_active_member", ok(&node, &["group", "describe", "live"]));
    let refused = keel(&node, &["group", "seek", "live", "--to", "start"]);
    assert_eq!(refused.code, 1);
    snapshot!("group_seek_active_error", refused.stderr);
    let refused = keel(&node, &["group", "delete", "live"]);
    assert_eq!(refused.code, 1);
    assert!(refused.stderr.contains("NON_EMPTY_GROUP"), "{}", refused.stderr);
    drop(consumer);

    // A KIP-848 consumer group is described through ConsumerGroupDescribe.
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", node.bootstrap())
        .set("group.id", "modern")
        .set("group.protocol", "consumer")
        .set("client.id", "billing-848")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    subscribe_until_assigned(&consumer, "billing", 2);
    let described = ok(&node, &["group", "describe", "modern", "--format", "json"]);
    let described: serde_json::Value = serde_json::from_str(&described).expect("json");
    assert_eq!(described["protocol_type"], "consumer");
    assert_eq!(described["members"].as_array().map(Vec::len), Some(1), "{described}");
    assert_eq!(described["members"][0]["client_id"], "billing-848");
    assert_eq!(described["members"][0]["assignment"].as_array().map(Vec::len), Some(2), "{described}");
    let refused = keel(&node, &["group", "seek", "modern", "--to", "start", "--topic", "billing"]);
    assert_eq!(refused.code, 1, "{}", refused.stderr);
    assert!(refused.stderr.contains("has 1 active member"), "{}", refused.stderr);
    drop(consumer);

    snapshot!("group_delete", ok(&node, &["group", "delete", "app"]));
    let missing = keel(&node, &["group", "describe", "app"]);
    assert_eq!(missing.code, 1);
    snapshot!("group_describe_missing_error", missing.stderr);
}

/// `keel consume --group` joins the group: two of them split a topic's partitions (range
/// assignor), each reads its own from the committed offsets, and together they read every
/// record once.
#[test]
fn consume_group_members_share_the_partitions() {
    let node = Keel::start(&["group.initial.rebalance.delay.ms=0"]);
    ok(&node, &["topic", "create", "shared", "-p", "4"]);
    let spawn = || {
        Command::new(env!("CARGO_BIN_EXE_keel"))
            .args(["consume", "shared", "-g", "sharers", "-f", "%p %v\\n", "--brokers", &node.bootstrap()])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn keel consume")
    };
    let stable_members = |count: usize| {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let run = keel(&node, &["group", "describe", "sharers", "--format", "json"]);
            if run.code == 0 {
                let described: serde_json::Value = serde_json::from_str(&run.stdout).expect("json");
                let members = described["members"].as_array().map_or(0, Vec::len);
                let assigned = described["members"]
                    .as_array()
                    .is_some_and(|m| m.iter().all(|m| m["assignment"].as_array().is_some_and(|a| !a.is_empty())));
                if described["state"] == "Stable" && members == count && assigned {
                    return;
                }
            }
            assert!(std::time::Instant::now() < deadline, "the group never had {count} stable members: {}", run.stdout);
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let first = spawn();
    stable_members(1);
    let second = spawn();
    stable_members(2);
    for partition in 0..4 {
        let lines: String = (0..100).map(|i| format!("p{partition}-{i}\n")).collect();
        ok_with_stdin(&node, &["produce", "shared", "-p", &partition.to_string()], lines.as_bytes());
    }
    // Both commit as they read: the group's lag drops to 0 once everything is read.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let described = ok(&node, &["group", "describe", "sharers", "--format", "json"]);
        let described: serde_json::Value = serde_json::from_str(&described).expect("json");
        if described["total_lag"] == 0 && described["partitions"].as_array().map_or(0, Vec::len) == 4 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the group did not read everything in 60 s: {described}");
        std::thread::sleep(Duration::from_millis(100));
    }
    // Ctrl-C: each commits, leaves the group and exits 0.
    let finish = |mut child: std::process::Child| -> Vec<(String, String)> {
        let interrupted = Command::new("kill").args(["-INT", &child.id().to_string()]).status().expect("kill -INT");
        assert!(interrupted.success());
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while child.try_wait().expect("try_wait").is_none() {
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                panic!("keel consume --group did not stop within 20 s of Ctrl-C");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let output = child.wait_with_output().expect("output");
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .map(|l| l.split_once(' ').map(|(p, v)| (p.to_string(), v.to_string())).expect("partition value"))
            .collect()
    };
    let (a, b) = (finish(first), finish(second));
    let partitions = |read: &[(String, String)]| -> std::collections::BTreeSet<String> {
        read.iter().map(|(p, _)| p.clone()).collect()
    };
    assert_eq!(a.len(), 200);
    assert_eq!(b.len(), 200);
    assert_eq!(partitions(&a).len(), 2, "{:?}", partitions(&a));
    assert!(partitions(&a).is_disjoint(&partitions(&b)), "{:?} and {:?}", partitions(&a), partitions(&b));
    for (partition, value) in a.iter().chain(&b) {
        assert!(value.starts_with(&format!("p{partition}-")), "{partition} {value}");
    }
    // Each read its partitions in order.
    for read in [&a, &b] {
        for partition in partitions(read) {
            let values: Vec<&str> = read.iter().filter(|(p, _)| *p == partition).map(|(_, v)| v.as_str()).collect();
            let expected: Vec<String> = (0..100).map(|i| format!("p{partition}-{i}")).collect();
            assert_eq!(values, expected);
        }
    }
    // Both left and committed everything: no lag.
    let described = ok(&node, &["group", "describe", "sharers", "--format", "json"]);
    let described: serde_json::Value = serde_json::from_str(&described).expect("json");
    assert_eq!(described["state"], "Empty", "{described}");
    assert_eq!(described["total_lag"], 0, "{described}");
}

/// `keel consume` shows committed records only (read_committed), stops at the last stable
/// offset with `-e` while a transaction is open, and shows everything with --read-uncommitted.
#[test]
fn consume_reads_committed_transactions_only() {
    let node = Keel::start(&[]);
    ok(&node, &["topic", "create", "ledger", "-p", "1"]);
    let producer = common::write_transactions(&node.bootstrap(), "ledger-writer", "ledger");
    let timeout = Duration::from_secs(30);

    assert_eq!(ok(&node, &["consume", "ledger", "-e"]), "kept-1\nkept-2\nkept-3\n");
    assert_eq!(
        ok(&node, &["consume", "ledger", "-e", "--read-uncommitted"]),
        "kept-1\nkept-2\ndropped-1\ndropped-2\nkept-3\npending\n"
    );

    // The open transaction as the transaction commands show it.
    let listed = ok(&node, &["transaction", "list", "--format", "json"]);
    let listed: serde_json::Value = serde_json::from_str(&listed).expect("json");
    assert_eq!(listed[0]["transactional_id"], "ledger-writer", "{listed}");
    assert_eq!(listed[0]["state"], "Ongoing", "{listed}");
    assert_eq!(ok(&node, &["transaction", "list", "--state", "CompleteCommit"]).lines().count(), 1, "header only");
    snapshot!("transaction_describe", ok(&node, &["transaction", "describe", "ledger-writer"]));
    snapshot!("transaction_producers", ok(&node, &["transaction", "producers", "ledger"]));
    let missing = keel(&node, &["transaction", "describe", "nobody"]);
    assert_eq!(missing.code, 1);
    snapshot!("transaction_describe_missing_error", missing.stderr);
    let bad_state = keel(&node, &["transaction", "list", "--state", "Sleeping"]);
    assert_eq!(bad_state.code, 2, "{}", bad_state.stderr);

    producer.commit_transaction(timeout).expect("commit");
    assert_eq!(ok(&node, &["consume", "ledger", "-e"]), "kept-1\nkept-2\nkept-3\npending\n");
    let producers = ok(&node, &["transaction", "producers", "ledger", "--format", "json"]);
    let producers: serde_json::Value = serde_json::from_str(&producers).expect("json");
    assert_eq!(producers[0]["open_transaction_start_offset"], serde_json::Value::Null, "{producers}");
}

#[test]
fn cluster_info_and_health() {
    let node = Keel::start(&[]);
    ok(&node, &["topic", "create", "a", "-p", "2"]);
    snapshot!("cluster_info", ok(&node, &["cluster", "info"]));
    snapshot!("cluster_info_json", ok(&node, &["cluster", "info", "--format", "json"]));
    snapshot!("cluster_health", ok(&node, &["cluster", "health"]));
    snapshot!("cluster_health_json", ok(&node, &["cluster", "health", "--format", "json"]));
    let watched = ok(&node, &["cluster", "health", "--watch", "--exit-when-healthy", "--interval", "0.1"]);
    assert!(watched.starts_with("healthy: 1 node(s)"), "{watched}");

    // The same check from the node's health summary on its HTTP port, which also says ready.
    let http = node.http.to_string();
    let kafka: serde_json::Value =
        serde_json::from_str(&ok(&node, &["cluster", "health", "--format", "json"])).expect("json");
    let summary: serde_json::Value =
        serde_json::from_str(&ok(&node, &["cluster", "health", "--http", &http, "--format", "json"])).expect("json");
    assert_eq!(summary["healthy"], true, "{summary}");
    assert_eq!(summary["ready"], true, "{summary}");
    assert_eq!(summary["nodes"], kafka["nodes"], "{summary} vs {kafka}");
    assert_eq!(summary["partitions"], kafka["partitions"], "{summary} vs {kafka}");
    let text = ok(&node, &["cluster", "health", "--http", &http]);
    assert!(text.starts_with("healthy: 1 node(s)"), "{text}");
    let http_unreachable = keel(&node, &["cluster", "health", "--http", &unused_address()]);
    assert_eq!(http_unreachable.code, 3, "{}", http_unreachable.stderr);
    assert!(http_unreachable.stderr.contains("(the HTTP port, --http)"), "{}", http_unreachable.stderr);

    // Nobody listens: --watch reports it and gives up at the timeout with exit code 4.
    let unreachable = unused_address();
    let run = keel_at(
        &unreachable,
        &["cluster", "health", "--watch", "--exit-when-healthy", "--interval", "0.2", "--timeout", "0.5"],
        b"",
    );
    assert_eq!(run.code, 4, "{}{}", run.stdout, run.stderr);
    assert!(run.stdout.starts_with("unreachable: cannot reach 127.0.0.1:"), "{}", run.stdout);
    assert!(run.stderr.contains("not healthy within 0.5 s"), "{}", run.stderr);
}

/// Subscribes `consumer` to `topic` and polls until it is assigned `partitions` partitions.
fn subscribe_until_assigned(consumer: &BaseConsumer, topic: &str, partitions: usize) {
    consumer.subscribe(&[topic]).expect("subscribe");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while consumer.assignment().map(|a| a.count()).unwrap_or(0) < partitions {
        assert!(std::time::Instant::now() < deadline, "no assignment");
        let _ = consumer.poll(Duration::from_millis(100));
    }
}

/// A loopback address where nothing listens.
fn unused_address() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = listener.local_addr().expect("addr").to_string();
    drop(listener);
    address
}

#[test]
fn errors_name_the_problem_and_exit_codes_tell_them_apart() {
    let node = Keel::start(&[]);
    // Cannot connect: exit 3 with what to try.
    let unreachable = unused_address();
    let run = keel_at(&unreachable, &["topic", "list"], b"");
    assert_eq!(run.code, 3);
    assert_eq!(
        run.stderr,
        format!("error: cannot reach {unreachable}: connection refused; is the broker running? set --brokers or KEEL_BROKERS\n")
    );
    let run = keel_at("localhost", &["topic", "list"], b"");
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("is not host:port"), "{}", run.stderr);

    // The broker says no: exit 1.
    let run = keel(&node, &["topic", "describe", "missing"]);
    assert_eq!(run.code, 1);
    snapshot!("error_unknown_topic_describe", run.stderr);
    let run = keel(&node, &["consume", "missing", "-e"]);
    assert_eq!(run.code, 1);
    snapshot!("error_unknown_topic_consume", run.stderr);

    // Usage: exit 2, from clap or from our own checks.
    let run = keel(&node, &["topic", "list", "--bogus"]);
    assert_eq!(run.code, 2);
    snapshot!("error_bad_flag", run.stderr);
    let run = keel(&node, &["consume", "x", "--offset", "yesterday"]);
    assert_eq!(run.code, 2);
    snapshot!("error_bad_offset", run.stderr);
    let run = keel(&node, &["produce", "x", "-H", "novalue"]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("must be KEY=VALUE"), "{}", run.stderr);
}

#[test]
fn brokers_come_from_the_flag_the_environment_or_a_profile() {
    let node = Keel::start(&[]);
    ok(&node, &["topic", "create", "profiled", "-p", "1"]);
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "default_profile = \"local\"\n[profiles.local]\nbrokers = \"{}\"\n[profiles.nowhere]\nbrokers = \"{}\"\n",
            node.bootstrap(),
            unused_address()
        ),
    )
    .expect("write config");
    let run_with = |args: &[&str], env_brokers: Option<&str>| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_keel"));
        command.args(args).env("KEEL_CONFIG", &config).env_remove("KEEL_BROKERS").env_remove("KEEL_PROFILE");
        if let Some(brokers) = env_brokers {
            command.env("KEEL_BROKERS", brokers);
        }
        let output = command.output().expect("run keel");
        (output.status.code().unwrap_or(-1), String::from_utf8_lossy(&output.stdout).into_owned())
    };
    // The default profile.
    let (code, out) = run_with(&["topic", "list"], None);
    assert_eq!(code, 0);
    assert!(out.contains("profiled"), "{out}");
    // --profile picks another one; KEEL_BROKERS wins over it, --brokers over both.
    assert_eq!(run_with(&["topic", "list", "--profile", "nowhere"], None).0, 3);
    assert_eq!(run_with(&["topic", "list", "--profile", "nowhere"], Some(&node.bootstrap())).0, 0);
    assert_eq!(run_with(&["topic", "list", "--brokers", &node.bootstrap()], Some(&unused_address())).0, 0);
    assert_eq!(run_with(&["topic", "list", "--profile", "absent"], None).0, 2);
}

#[test]
fn completion_scripts_for_bash_zsh_and_fish() {
    for shell in ["bash", "zsh", "fish"] {
        let output = Command::new(env!("CARGO_BIN_EXE_keel")).args(["completion", shell]).output().expect("run keel");
        assert!(output.status.success(), "{shell}");
        let script = String::from_utf8_lossy(&output.stdout);
        for word in ["keel", "consume", "add-partitions", "exit-when-healthy"] {
            assert!(script.contains(word), "{shell} completion lacks {word}");
        }
    }
}

#[test]
fn records_produced_by_keel_read_by_librdkafka_and_back() {
    let node = Keel::start(&[]);
    ok(&node, &["topic", "create", "interop", "-p", "4"]);
    let keys: Vec<String> = (0..40).map(|i| format!("customer-{i}")).collect();
    let input: String = keys.iter().map(|k| format!("{k}|order of {k}\n")).collect();
    ok_with_stdin(
        &node,
        &["produce", "interop", "-K", "|", "-H", "origin=keel", "--compression", "zstd"],
        input.as_bytes(),
    );

    // librdkafka reads every record with its key, value and header.
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", node.bootstrap())
        .set("group.id", "interop-reader")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut assignment = TopicPartitionList::new();
    for p in 0..4 {
        assignment.add_partition_offset("interop", p, Offset::Beginning).expect("assign");
    }
    consumer.assign(&assignment).expect("assign");
    let mut seen = std::collections::HashMap::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while seen.len() < keys.len() {
        assert!(std::time::Instant::now() < deadline, "read {} of {}", seen.len(), keys.len());
        let Some(message) = consumer.poll(Duration::from_millis(200)) else { continue };
        let message = message.expect("message");
        let key = String::from_utf8(message.key().expect("key").to_vec()).expect("utf8");
        assert_eq!(message.payload(), Some(format!("order of {key}").as_bytes()));
        let header = message.headers().expect("headers").get(0);
        assert_eq!((header.key, header.value), ("origin", Some(b"keel".as_slice())));
        seen.insert(key, message.partition());
    }

    // librdkafka's murmur2_random partitioner (Java's) puts each key where keel did.
    ok(&node, &["topic", "create", "interop-back", "-p", "4"]);
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", node.bootstrap())
        .set("partitioner", "murmur2_random")
        .create()
        .expect("producer");
    for key in &keys {
        let headers = OwnedHeaders::new().insert(Header { key: "origin", value: Some("rdkafka") });
        producer
            .send(BaseRecord::to("interop-back").key(key).payload(&format!("order of {key}")).headers(headers))
            .map_err(|(error, _)| error)
            .expect("send");
    }
    producer.flush(Duration::from_secs(30)).expect("flush");
    let read = ok(&node, &["consume", "interop-back", "-e", "-f", "%p %k %v %h\\n"]);
    assert_eq!(read.lines().count(), keys.len());
    for line in read.lines() {
        let mut fields = line.splitn(3, ' ');
        let partition: i32 = fields.next().unwrap().parse().unwrap();
        let key = fields.next().unwrap();
        assert_eq!(seen[key], partition, "{key}");
        assert_eq!(fields.next().unwrap(), format!("order of {key} origin=rdkafka"));
    }
}

#[test]
fn log_append_time_topics_show_the_brokers_timestamp() {
    let node = Keel::start(&[]);
    ok(&node, &["topic", "create", "appended", "-p", "1", "-c", "message.timestamp.type=LogAppendTime"]);
    let producer: ThreadedProducer<DefaultProducerContext> =
        ClientConfig::new().set("bootstrap.servers", node.bootstrap()).create().expect("producer");
    let before = now_ms();
    producer
        .send(BaseRecord::<str, str>::to("appended").payload("old").timestamp(1_000_000_000_000))
        .map_err(|(error, _)| error)
        .expect("send");
    producer.flush(Duration::from_secs(30)).expect("flush");
    let timestamp: i64 = ok(&node, &["consume", "appended", "-e", "-f", "%T"]).parse().expect("a timestamp");
    assert!(timestamp >= before && timestamp <= now_ms(), "{timestamp} is not the append time");
}

#[test]
fn records_produced_by_keel_read_by_kcat() {
    let kcat = ["/usr/bin/kcat", "kcat"].into_iter().find(|k| Command::new(k).arg("-V").output().is_ok());
    let kcat = kcat.expect("kcat is installed (scripts/test.sh installs it)");
    let node = Keel::start(&[]);
    ok(&node, &["topic", "create", "kcat", "-p", "2"]);
    ok_with_stdin(&node, &["produce", "kcat", "-K", "=", "--compression", "lz4"], b"a=1\nb=2\nc=3\nd=4\n");
    let output = Command::new(kcat)
        .args(["-b", &node.bootstrap(), "-t", "kcat", "-C", "-e", "-q", "-f", "%p %k=%s\n"])
        .output()
        .expect("run kcat");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let mut from_kcat: Vec<String> = String::from_utf8_lossy(&output.stdout).lines().map(str::to_string).collect();
    from_kcat.sort();
    let mut from_keel: Vec<String> =
        ok(&node, &["consume", "kcat", "-e", "-f", "%p %k=%v\\n"]).lines().map(str::to_string).collect();
    from_keel.sort();
    assert_eq!(from_kcat.len(), 4);
    assert_eq!(from_kcat, from_keel);
}
