//! A three-node cluster of real `keel` processes: the quorum forms in any start order, replicas
//! are placed across brokers, any broker takes admin requests, the quorum survives the loss of
//! its leader (kill -9) and refuses changes without a majority, a killed broker is fenced and a
//! restarted one unfenced, and a node with another cluster's data directory, a changed node id
//! or malformed voters refuses to start.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::net::TcpStream;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{Cluster, Keel};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::{
    describe_quorum_request, CreateTopicsRequest, DescribeClusterRequest, DescribeQuorumRequest, MetadataRequest,
    MetadataResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};

fn name(topic: &str) -> TopicName {
    TopicName(StrBytes::from_string(topic.to_string()))
}

/// CreateTopics through `node`: the error code of the one topic.
fn create(node: &Keel, topic: &str, partitions: i32, replication_factor: i16, timeout_ms: i32) -> i16 {
    let mut wanted = CreatableTopic::default();
    wanted.name = name(topic);
    wanted.num_partitions = partitions;
    wanted.replication_factor = replication_factor;
    let mut request = CreateTopicsRequest::default();
    request.topics = vec![wanted];
    request.timeout_ms = timeout_ms;
    node.connect().call(7, &request).topics[0].error_code
}

fn metadata(node: &Keel) -> MetadataResponse {
    let mut request = MetadataRequest::default();
    request.topics = None;
    node.connect().call(12, &request)
}

/// The quorum as DescribeQuorum reports it through `node`: (leader, [(voter, log end offset)]).
fn quorum(node: &Keel) -> (i32, i64, Vec<(i32, i64)>) {
    let mut partition = describe_quorum_request::PartitionData::default();
    partition.partition_index = 0;
    let mut topic = describe_quorum_request::TopicData::default();
    topic.topic_name = name("__cluster_metadata");
    topic.partitions = vec![partition];
    let mut request = DescribeQuorumRequest::default();
    request.topics = vec![topic];
    let response = node.connect().call(2, &request);
    let partition = &response.topics[0].partitions[0];
    assert_eq!(partition.error_code, 0, "DescribeQuorum through node {}: {:?}", node.node_id, partition.error_message);
    let voters = partition.current_voters.iter().map(|v| (v.replica_id.0, v.log_end_offset)).collect();
    (partition.leader_id.0, partition.high_watermark, voters)
}

/// (broker id, fenced) of every registered broker, from DescribeCluster v2 through `node`.
fn brokers(node: &Keel) -> Vec<(i32, bool)> {
    let mut request = DescribeClusterRequest::default();
    request.include_fenced_brokers = true;
    request.endpoint_type = 1;
    let response = node.connect().call(2, &request);
    response.brokers.iter().map(|b| (b.broker_id.0, b.is_fenced)).collect()
}

fn wait_until(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while started.elapsed() < timeout {
        if check() {
            return started.elapsed();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{what}: not within {timeout:?}");
}

/// Leader and replicas of each partition of `topic`, from Metadata through `node`.
fn placement(node: &Keel, topic: &str) -> BTreeMap<i32, (i32, Vec<i32>)> {
    let response = metadata(node);
    let topic = response
        .topics
        .iter()
        .find(|t| t.name.as_ref().map(|n| n.0.as_str()) == Some(topic))
        .expect("topic in metadata");
    topic
        .partitions
        .iter()
        .map(|p| (p.partition_index, (p.leader_id.0, p.replica_nodes.iter().map(|r| r.0).collect())))
        .collect()
}

fn produce_and_consume(bootstrap: &str, topic: &str, partitions: i32, records: usize) {
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .create()
        .expect("producer");
    for i in 0..records {
        let value = format!("value-{i}");
        let record = BaseRecord::<(), _>::to(topic).payload(&value).partition(i as i32 % partitions);
        producer.send(record).map_err(|(e, _)| e).expect("queue a record");
    }
    producer.flush(Duration::from_secs(30)).expect("every record acknowledged");
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "cluster-test")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut assignment = TopicPartitionList::new();
    for partition in 0..partitions {
        assignment.add_partition_offset(topic, partition, Offset::Beginning).expect("assign");
    }
    consumer.assign(&assignment).expect("assign");
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while seen.len() < records && Instant::now() < deadline {
        if let Some(message) = consumer.poll(Duration::from_millis(200)) {
            let message = message.expect("a record");
            seen.push(String::from_utf8(message.payload().expect("payload").to_vec()).expect("utf-8"));
        }
    }
    seen.sort();
    let mut expected: Vec<String> = (0..records).map(|i| format!("value-{i}")).collect();
    expected.sort();
    assert_eq!(seen, expected, "every record read back exactly once, from every leader");
}

#[test]
fn a_cluster_forms_places_replicas_and_keeps_deciding_without_its_controller() {
    let mut cluster = Cluster::start(3, &[]);

    // Any node shows all three brokers and the same controller.
    let mut controllers = Vec::new();
    for node in &cluster.nodes {
        let response = metadata(node);
        let mut ids: Vec<i32> = response.brokers.iter().map(|b| b.node_id.0).collect();
        ids.sort_unstable();
        assert_eq!(ids, vec![1, 2, 3], "brokers seen through node {}", node.node_id);
        controllers.push(response.controller_id.0);
    }
    controllers.dedup();
    assert_eq!(controllers.len(), 1, "one controller, seen alike by every node: {controllers:?}");
    let (leader, _, voters) = quorum(&cluster.nodes[2]);
    assert_eq!(leader, controllers[0], "DescribeQuorum through a follower names the same leader");
    assert_eq!(voters.iter().map(|v| v.0).collect::<Vec<_>>(), vec![1, 2, 3]);

    // A topic with RF 3 created through a broker that is not the controller: every partition
    // on three brokers, leaders balanced.
    let follower = (1..=3).find(|id| *id != leader).expect("a follower");
    assert_eq!(create(cluster.node(follower), "spread", 6, 3, 10_000), 0);
    let placed = placement(&cluster.nodes[0], "spread");
    let mut led = BTreeMap::<i32, usize>::new();
    for (partition, (leader, replicas)) in &placed {
        let mut distinct = replicas.clone();
        distinct.sort_unstable();
        assert_eq!(distinct, vec![1, 2, 3], "partition {partition} is on every broker");
        assert_eq!(replicas[0], *leader, "the first replica leads");
        *led.entry(*leader).or_default() += 1;
    }
    assert_eq!(led.values().copied().collect::<Vec<_>>(), vec![2, 2, 2], "leaders balanced: {led:?}");
    assert_eq!(
        create(cluster.node(follower), "too-wide", 1, 4, 10_000),
        ResponseError::InvalidReplicationFactor.code()
    );
    produce_and_consume(&cluster.bootstrap(), "spread", 6, 600);

    // A fourth node that is only a broker joins as an observer: it takes replicas and leads,
    // and does not vote.
    cluster.add_broker(&[]);
    let (_, _, voters) = quorum(&cluster.nodes[3]);
    assert_eq!(voters.iter().map(|v| v.0).collect::<Vec<_>>(), vec![1, 2, 3], "the broker does not vote");
    assert_eq!(create(&cluster.nodes[3], "four", 4, 4, 10_000), 0);
    let placed = placement(&cluster.nodes[0], "four");
    assert!(placed.values().all(|(_, replicas)| replicas.contains(&4)), "on the fourth broker: {placed:?}");
    assert_eq!(placed.values().filter(|(leader, _)| *leader == 4).count(), 1, "which leads one partition");
    produce_and_consume(&cluster.bootstrap(), "four", 4, 100);

    // Garbage on a controller port closes that connection and harms nothing.
    let mut garbage = TcpStream::connect(cluster.controller_addrs[0]).expect("controller port");
    garbage.write_all(&[0, 0, 0, 5, b'h', b'e', b'l', b'l', b'o']).expect("write");
    drop(garbage);

    // Kill -9 the controller: another is elected and creates topics through any broker.
    cluster.node(leader).kill9();
    let survivor = (1..=3).find(|id| *id != leader).expect("a survivor");
    let started = Instant::now();
    wait_until("a topic created after the controller was killed", Duration::from_secs(20), || {
        create(cluster.node(survivor), "after-failover", 3, 2, 5_000) == 0
    });
    eprintln!("controller failover after kill -9: CreateTopics succeeded after {:?}", started.elapsed());
    let (new_leader, _, _) = quorum(cluster.node(survivor));
    assert_ne!(new_leader, leader);

    // The killed node restarts and catches up with the quorum.
    cluster.node(leader).restart();
    wait_until("the restarted node catches up", Duration::from_secs(20), || {
        let (_, high_watermark, voters) = quorum(&cluster.nodes[(leader - 1) as usize]);
        voters.iter().all(|&(_, end)| end == high_watermark)
    });
    assert!(metadata(cluster.node(leader))
        .topics
        .iter()
        .any(|t| t.name.as_ref().map(|n| n.0.as_str()) == Some("after-failover")));

    // Two of three controllers down: changes time out cleanly, and go through once one is back.
    let (down, up): (Vec<i32>, Vec<i32>) = (1..=3).partition(|id| *id != survivor);
    for id in &down {
        cluster.node(*id).kill9();
    }
    let started = Instant::now();
    assert_eq!(create(cluster.node(survivor), "no-majority", 1, 1, 2_000), ResponseError::RequestTimedOut.code());
    assert!(started.elapsed() < Duration::from_secs(8), "answered at the request's timeout: {:?}", started.elapsed());
    assert_eq!(up, vec![survivor]);
    cluster.node(down[0]).relaunch();
    wait_until("a change once a majority is back", Duration::from_secs(30), || {
        matches!(create(cluster.node(survivor), "majority-back", 1, 1, 2_000), 0 | 36)
    });
}

#[test]
fn a_killed_broker_is_fenced_and_a_restarted_one_unfenced() {
    let mut cluster = Cluster::start(3, &["broker.session.timeout.ms=3000", "broker.heartbeat.interval.ms=500"]);
    assert_eq!(create(&cluster.nodes[0], "fencing", 3, 1, 10_000), 0);
    let (controller, _, _) = quorum(&cluster.nodes[0]);
    let victim = (1..=3).rev().find(|id| *id != controller).expect("a broker that is not the controller");
    let observer = (1..=3).find(|id| *id != victim).expect("another node");
    let led_by_victim: Vec<i32> = placement(cluster.node(observer), "fencing")
        .into_iter()
        .filter(|(_, (l, _))| *l == victim)
        .map(|(p, _)| p)
        .collect();
    assert_eq!(led_by_victim.len(), 1, "each broker leads one partition");

    cluster.node(victim).kill9();
    let fenced_after = wait_until("the killed broker is fenced", Duration::from_secs(15), || {
        brokers(&cluster.nodes[(observer - 1) as usize]).contains(&(victim, true))
    });
    eprintln!("broker {victim} fenced {fenced_after:?} after kill -9 (session timeout 3 s)");
    let response = metadata(cluster.node(observer));
    assert!(response.brokers.iter().all(|b| b.node_id.0 != victim), "Metadata lists no fenced broker");
    let topic =
        response.topics.iter().find(|t| t.name.as_ref().map(|n| n.0.as_str()) == Some("fencing")).expect("topic");
    let partition = &topic.partitions[led_by_victim[0] as usize];
    assert_eq!(partition.leader_id.0, -1, "its only in-sync replica is fenced: offline, nothing elected");
    assert_eq!(partition.error_code, ResponseError::LeaderNotAvailable.code());
    assert_eq!(partition.offline_replicas.iter().map(|r| r.0).collect::<Vec<_>>(), vec![victim]);
    let (status, health) = http_get(cluster.node(observer), "/health");
    assert!(status.contains("503"), "{status}");
    let health: serde_json::Value = serde_json::from_str(&health).expect("health json");
    assert_eq!(health["fenced_brokers"], serde_json::json!([victim]));
    let (_, metrics) = http_get(cluster.node(observer), "/metrics");
    assert!(metrics.lines().any(|l| l == "keel_fenced_brokers 1"), "{metrics}");
    assert!(metrics.lines().any(|l| l == "keel_active_brokers 2"), "{metrics}");

    cluster.node(victim).restart();
    assert!(brokers(cluster.node(observer)).contains(&(victim, false)), "unfenced once ready");
    assert_eq!(placement(cluster.node(observer), "fencing")[&led_by_victim[0]].0, victim, "it leads again");
}

/// GET `path` from `node`'s HTTP port: (status line, body).
fn http_get(node: &Keel, path: &str) -> (String, String) {
    let mut stream = TcpStream::connect(node.http).expect("http port");
    stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    write!(stream, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").expect("write");
    let mut reply = String::new();
    std::io::Read::read_to_string(&mut stream, &mut reply).expect("read");
    let (head, body) = reply.split_once("\r\n\r\n").unwrap_or((&reply, ""));
    (head.lines().next().unwrap_or_default().to_string(), body.to_string())
}

#[test]
fn a_controller_only_node_decides_and_serves_no_clients() {
    let mut cluster = Cluster::start_roles(&["broker,controller", "broker,controller", "controller"]);
    // Its Kafka port is not open; it is no broker, takes no replica, and still votes.
    assert!(TcpStream::connect(cluster.nodes[2].kafka).is_err(), "a controller only has no client listener");
    let response = metadata(&cluster.nodes[0]);
    let mut ids: Vec<i32> = response.brokers.iter().map(|b| b.node_id.0).collect();
    ids.sort_unstable();
    assert_eq!(ids, vec![1, 2]);
    assert!(ids.contains(&response.controller_id.0), "the controller named to clients is one they can reach");
    assert_eq!(create(&cluster.nodes[0], "two", 2, 3, 10_000), ResponseError::InvalidReplicationFactor.code());
    assert_eq!(create(&cluster.nodes[1], "two", 2, 2, 10_000), 0);
    let (_, _, voters) = quorum(&cluster.nodes[0]);
    assert_eq!(voters.iter().map(|v| v.0).collect::<Vec<_>>(), vec![1, 2, 3]);

    // With a broker down, the other broker and the controller still form a majority.
    cluster.node(1).kill9();
    wait_until("a change without node 1", Duration::from_secs(20), || {
        matches!(create(&cluster.nodes[1], "without-one", 1, 1, 3_000), 0 | 36)
    });
}

/// Runs `keel server` for `node` and returns its exit status and stderr; panics if it keeps
/// running for 30 s.
fn refused_start(node: &Keel) -> String {
    let mut command = node.command();
    command.stdout(Stdio::null()).stderr(Stdio::piped()).env("RUST_BACKTRACE", "0");
    let mut child = command.spawn().expect("spawn keel");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            assert!(!status.success(), "keel node {} started", node.node_id);
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let mut stderr = String::new();
            let _ = std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut stderr);
            panic!("keel node {} did not refuse to start within 30 s: {stderr}", node.node_id);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut stderr).expect("read stderr");
    stderr
}

#[test]
fn a_node_refuses_another_clusters_directory_a_changed_id_and_bad_voters() {
    let mut first = Cluster::start(3, &[]);
    for node in &mut first.nodes {
        node.kill9();
    }
    // Another cluster on the same controller addresses; its node 3 is replaced by a node with
    // the first cluster's node 3 directory. The others refuse it, and it stops.
    let mut second = Cluster::start_at(first.controller_addrs.clone(), &[]);
    second.node(3).kill9();
    let intruder = clone_of(&second.nodes[2], first.nodes[2].data_dir.clone());
    let stderr = refused_start(&intruder);
    assert!(stderr.contains("belongs to another cluster"), "{stderr}");
    // The second cluster went on deciding.
    assert_eq!(create(&second.nodes[0], "still-here", 1, 1, 10_000), 0);

    // Voters at other addresses than the cluster was formed with.
    let mut moved = clone_of(&first.nodes[0], first.nodes[0].data_dir.clone());
    moved.controllers = Some("1@127.0.0.1:1,2@127.0.0.1:2,3@127.0.0.1:3".into());
    let stderr = refused_start(&moved);
    assert!(stderr.contains("the voter list (ids and addresses) the cluster was formed with"), "{stderr}");

    // A changed node id.
    let mut renamed = clone_of(&first.nodes[0], first.nodes[0].data_dir.clone());
    renamed.node_id = 2;
    let stderr = refused_start(&renamed);
    assert!(stderr.contains("belongs to node 1, not 2"), "{stderr}");

    // Malformed voters.
    let mut malformed = clone_of(&first.nodes[0], first.nodes[0].data_dir.clone());
    malformed.controllers = Some("1@127.0.0.1,2@127.0.0.1:9".into());
    let stderr = refused_start(&malformed);
    assert!(stderr.contains("controller.quorum.voters entry \"1@127.0.0.1\" has no port"), "{stderr}");
}

/// A node like `node` (same ports, id and voters) with its data in `data_dir`; not started.
fn clone_of(node: &Keel, data_dir: std::path::PathBuf) -> Keel {
    Keel::unstarted(node.node_id, data_dir, node.kafka, node.http, node.controllers.clone())
}

/// A base port whose next 23 ports are free now (node N of `keel cluster up` uses
/// base + 10(N-1) .. +2).
fn free_port_block() -> u16 {
    for _ in 0..100 {
        let base = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
        if base > 65_000 {
            continue;
        }
        let all_free = (0..23).all(|offset| std::net::TcpListener::bind(("127.0.0.1", base + offset)).is_ok());
        if all_free {
            return base;
        }
    }
    panic!("no block of 23 free ports");
}

#[test]
fn keel_cluster_up_starts_three_nodes_and_ctrl_c_stops_them() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let base = free_port_block();
    let mut up = std::process::Command::new(env!("CARGO_BIN_EXE_keel"))
        .args(["cluster", "up", "--nodes", "3", "--base-port", &base.to_string()])
        .arg("--data-dir")
        .arg(tmp.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("keel cluster up");
    let second = Keel::unstarted(
        2,
        tmp.path().join("node-2"),
        ([127, 0, 0, 1], base + 10).into(),
        ([127, 0, 0, 1], base + 12).into(),
        None,
    );
    wait_until("three unfenced brokers", Duration::from_secs(30), || {
        second.ready() && brokers(&second) == vec![(1, false), (2, false), (3, false)]
    });
    assert_eq!(create(&second, "up", 3, 3, 10_000), 0);

    let _ = std::process::Command::new("kill").args(["-INT", &up.id().to_string()]).status();
    let status = up.wait().expect("wait");
    assert!(status.success(), "keel cluster up exited with {status}");
    let mut out = String::new();
    std::io::Read::read_to_string(&mut up.stdout.take().expect("stdout"), &mut out).expect("read");
    for node in 1..=3 {
        assert!(out.contains(&format!("node {node} stopped")), "{out}");
        assert!(out.contains(&format!("127.0.0.1:{}", base + 10 * (node - 1))), "{out}");
    }
}
