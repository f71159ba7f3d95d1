//! A real `keel` process for integration tests, and a raw Kafka protocol client to poke it.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, Request, StrBytes};

pub struct Keel {
    child: Option<Child>,
    pub data_dir: PathBuf,
    pub kafka: SocketAddr,
    pub http: SocketAddr,
    /// `--node-id`.
    pub node_id: i32,
    /// `--controllers` (controller.quorum.voters) of a node of a cluster; `None` for one node.
    pub controllers: Option<String>,
    /// `--controller-listen`: a broker that is not a voter follows the metadata log there.
    pub controller_listen: Option<SocketAddr>,
    sets: Vec<String>,
    /// `--advertise`: what metadata tells clients to connect to (e.g. a test proxy).
    pub advertise: Option<String>,
    _tmp: Option<tempfile::TempDir>,
}

/// The tiny-segment switch: with `KEEL_TEST_SEGMENT_BYTES` set (say 20000), every node the
/// tests start rolls its segments at that size (`log.segment.bytes` and the internal topics'
/// sizes), so that reads, recovery and compaction cross segment boundaries. A test that sets
/// one of these itself keeps its value.
fn tiny_segment_sets(sets: &[String]) -> Vec<String> {
    let Ok(bytes) = std::env::var("KEEL_TEST_SEGMENT_BYTES") else {
        return Vec::new();
    };
    ["log.segment.bytes", "offsets.topic.segment.bytes", "transaction.state.log.segment.bytes"]
        .into_iter()
        .filter(|name| !sets.iter().any(|set| set.starts_with(&format!("{name}="))))
        .map(|name| format!("{name}={bytes}"))
        .collect()
}

fn free_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local addr")
}

impl Keel {
    /// Starts a node on fresh ports and a fresh data dir, with extra `--set key=value` configs.
    pub fn start(sets: &[&str]) -> Keel {
        Keel::start_advertising(sets, None)
    }

    /// Like `start`, advertising `advertise` to clients instead of the listen address.
    pub fn start_advertising(sets: &[&str], advertise: Option<String>) -> Keel {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut keel = Keel {
            child: None,
            data_dir: tmp.path().join("data"),
            kafka: free_port(),
            http: free_port(),
            sets: sets.iter().map(|s| s.to_string()).collect(),
            advertise,
            node_id: 1,
            controllers: None,
            controller_listen: None,
            _tmp: Some(tmp),
        };
        keel.spawn();
        keel
    }

    /// A node that is not started: `--node-id node_id` with its data in `data_dir`.
    pub fn unstarted(
        node_id: i32,
        data_dir: PathBuf,
        kafka: SocketAddr,
        http: SocketAddr,
        controllers: Option<String>,
    ) -> Keel {
        Keel {
            child: None,
            data_dir,
            kafka,
            http,
            node_id,
            controllers,
            controller_listen: None,
            sets: Vec::new(),
            advertise: None,
            _tmp: None,
        }
    }

    /// The command line of this node.
    pub fn command(&self) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_keel"));
        command
            .arg("server")
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--listen")
            .arg(self.kafka.to_string())
            .arg("--http")
            .arg(self.http.to_string())
            .arg("--node-id")
            .arg(self.node_id.to_string())
            .env("KEEL_LOG", "warn,openraft=off");
        if let Some(controllers) = &self.controllers {
            command.arg("--controllers").arg(controllers);
        }
        if let Some(listen) = &self.controller_listen {
            command.arg("--controller-listen").arg(listen.to_string());
        }
        for set in self.sets.iter().chain(&tiny_segment_sets(&self.sets)) {
            command.arg("--set").arg(set);
        }
        if let Some(advertise) = &self.advertise {
            command.arg("--advertise").arg(advertise);
        }
        command
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    /// Stops the node with SIGTERM (a controlled shutdown) and waits until it has exited.
    pub fn terminate(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
            let _ = child.wait();
        }
    }

    pub fn bootstrap(&self) -> String {
        self.kafka.to_string()
    }

    fn spawn(&mut self) {
        self.launch();
        self.wait_ready();
    }

    /// Starts the process without waiting for it (nodes of a cluster wait for each other).
    pub fn launch(&mut self) {
        let mut command = self.command();
        command.stdout(Stdio::null()).stderr(Stdio::inherit());
        self.child = Some(command.spawn().expect("spawn keel"));
    }

    /// Waits until /readyz answers 200; panics when the process exits or 30 s pass.
    pub fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if self.ready() {
                return;
            }
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!("keel node {} exited during startup: {status}", self.node_id);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("keel node {} was not ready within 30 s", self.node_id);
    }

    /// GET /readyz answered 200.
    pub fn ready(&self) -> bool {
        let Ok(mut stream) = TcpStream::connect_timeout(&self.http, Duration::from_millis(200)) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
        if stream.write_all(b"GET /readyz HTTP/1.0\r\nHost: x\r\n\r\n").is_err() {
            return false;
        }
        let mut reply = String::new();
        let _ = stream.read_to_string(&mut reply);
        reply.starts_with("HTTP/1.0 200") || reply.starts_with("HTTP/1.1 200")
    }

    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    /// Starts a stopped node again without waiting for it to be ready.
    pub fn relaunch(&mut self) {
        self.kill9();
        self.launch();
    }

    /// The process's peak resident memory (`VmHWM`), in bytes.
    pub fn peak_rss_bytes(&self) -> Option<u64> {
        let pid = self.child.as_ref()?.id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    pub fn connect(&self) -> Raw {
        Raw::connect(self.kafka)
    }
}

impl Drop for Keel {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A cluster of real `keel` processes on loopback ports, nodes 1..=n, each a broker and a
/// controller (the Python tests' `keel_helpers.Cluster` starts the same command lines).
pub struct Cluster {
    pub nodes: Vec<Keel>,
    /// The controller listener of each node, by index (node id - 1).
    pub controller_addrs: Vec<SocketAddr>,
}

impl Cluster {
    /// Starts `n` nodes at once with extra `--set key=value` configs and waits until every one
    /// is ready (registered and unfenced).
    pub fn start(n: usize, sets: &[&str]) -> Cluster {
        Cluster::start_at((0..n).map(|_| free_port()).collect(), sets)
    }

    /// [`Cluster::start`] with each node's `process.roles` (`broker,controller` or
    /// `controller`; every node is a voter).
    pub fn start_roles(roles: &[&str]) -> Cluster {
        let addrs = roles.iter().map(|_| free_port()).collect();
        Cluster::start_configured(addrs, &[], roles)
    }

    /// [`Cluster::start`] with the controllers on `controller_addrs` (one node each).
    pub fn start_at(controller_addrs: Vec<SocketAddr>, sets: &[&str]) -> Cluster {
        let roles = vec!["broker,controller"; controller_addrs.len()];
        Cluster::start_configured(controller_addrs, sets, &roles)
    }

    fn start_configured(controller_addrs: Vec<SocketAddr>, sets: &[&str], roles: &[&str]) -> Cluster {
        let n = controller_addrs.len();
        let voters: Vec<String> = controller_addrs.iter().enumerate().map(|(i, a)| format!("{}@{a}", i + 1)).collect();
        let voters = voters.join(",");
        let mut nodes: Vec<Keel> = (1..=n as i32)
            .map(|node_id| {
                let tmp = tempfile::tempdir().expect("tempdir");
                Keel {
                    child: None,
                    data_dir: tmp.path().join("data"),
                    kafka: free_port(),
                    http: free_port(),
                    node_id,
                    controllers: Some(voters.clone()),
                    controller_listen: None,
                    sets: sets
                        .iter()
                        .map(|s| s.to_string())
                        .chain(Some(format!("process.roles={}", roles[(node_id - 1) as usize])))
                        .collect(),
                    advertise: None,
                    _tmp: Some(tmp),
                }
            })
            .collect();
        // In reverse order: the quorum forms whatever order its nodes start in.
        for node in nodes.iter_mut().rev() {
            node.launch();
        }
        for node in &mut nodes {
            node.wait_ready();
        }
        Cluster { nodes, controller_addrs }
    }

    /// Starts one more node, a broker only (`process.roles=broker`): it follows the metadata log
    /// as an observer and takes replicas, without voting. Waits until it is ready.
    pub fn add_broker(&mut self, sets: &[&str]) -> &mut Keel {
        let tmp = tempfile::tempdir().expect("tempdir");
        let node_id = self.nodes.len() as i32 + 1;
        let mut sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
        sets.push("process.roles=broker".to_string());
        let mut node = Keel {
            child: None,
            data_dir: tmp.path().join("data"),
            kafka: free_port(),
            http: free_port(),
            node_id,
            controllers: self.nodes[0].controllers.clone(),
            controller_listen: Some(free_port()),
            sets,
            advertise: None,
            _tmp: Some(tmp),
        };
        node.launch();
        node.wait_ready();
        self.nodes.push(node);
        self.nodes.last_mut().expect("just pushed")
    }

    pub fn node(&mut self, id: i32) -> &mut Keel {
        &mut self.nodes[(id - 1) as usize]
    }

    /// Every node's Kafka address, comma-separated.
    pub fn bootstrap(&self) -> String {
        self.nodes.iter().map(|n| n.bootstrap()).collect::<Vec<_>>().join(",")
    }
}

/// A blocking Kafka protocol connection that sends whatever it is given.
pub struct Raw {
    pub stream: TcpStream,
    correlation_id: i32,
}

impl Raw {
    pub fn connect(addr: SocketAddr) -> Raw {
        let stream = TcpStream::connect(addr).expect("connect");
        stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
        Raw { stream, correlation_id: 0 }
    }

    pub fn send_bytes(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write");
    }

    /// Sends a request frame and returns the correlation id used.
    pub fn send<R: Request>(&mut self, version: i16, request: &R) -> i32 {
        self.correlation_id += 1;
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(self.correlation_id)
            .with_client_id(Some(StrBytes::from_static_str("keel-test")));
        let mut body = BytesMut::new();
        header.encode(&mut body, R::header_version(version)).expect("encode header");
        request.encode(&mut body, version).expect("encode request");
        let mut frame = BytesMut::new();
        frame.put_i32(body.len() as i32);
        frame.extend_from_slice(&body);
        self.send_bytes(&frame);
        self.correlation_id
    }

    /// Reads one response frame body; `None` when the broker closed the connection.
    pub fn read_frame(&mut self) -> Option<Bytes> {
        let mut length = [0u8; 4];
        self.stream.read_exact(&mut length).ok()?;
        let mut body = vec![0u8; i32::from_be_bytes(length) as usize];
        self.stream.read_exact(&mut body).ok()?;
        Some(Bytes::from(body))
    }

    /// Sends a request and decodes its response.
    pub fn call<R: Request>(&mut self, version: i16, request: &R) -> R::Response {
        let correlation_id = self.send(version, request);
        let mut frame = self.read_frame().expect("the broker closed the connection");
        let api_key = ApiKey::try_from(R::KEY).expect("api key");
        let header = ResponseHeader::decode(&mut frame, api_key.response_header_version(version)).expect("header");
        assert_eq!(header.correlation_id, correlation_id);
        R::Response::decode(&mut frame, version).expect("decode response")
    }

    /// True when the broker closes the connection (reads EOF) within the read timeout.
    pub fn closed(&mut self) -> bool {
        let mut byte = [0u8; 1];
        loop {
            match self.stream.read(&mut byte) {
                Ok(0) => return true,
                Ok(_) => continue,
                Err(error) if error.kind() == std::io::ErrorKind::ConnectionReset => return true,
                Err(_) => return false,
            }
        }
    }
}

/// Decodes a response frame read with `Raw::read_frame`.
pub fn decode_response<T: Decodable>(mut frame: Bytes, api_key: ApiKey, version: i16) -> T {
    ResponseHeader::decode(&mut frame, api_key.response_header_version(version)).expect("response header");
    T::decode(&mut frame, version).expect("response body")
}

/// Reads a big-endian i16 at `at`.
pub fn i16_at(bytes: &Bytes, at: usize) -> i16 {
    (&bytes[at..at + 2]).get_i16()
}

/// Writes to `topic` through a transactional librdkafka producer: "kept-1" and "kept-2"
/// committed, "dropped-1" and "dropped-2" aborted, "kept-3" committed, and "pending" left in an
/// open transaction. Returns the producer, to commit or abort it.
pub fn write_transactions(bootstrap: &str, transactional_id: &str, topic: &str) -> rdkafka::producer::BaseProducer {
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    let producer: BaseProducer = rdkafka::config::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("transactional.id", transactional_id)
        .create()
        .expect("transactional producer");
    let timeout = Duration::from_secs(30);
    producer.init_transactions(timeout).expect("init_transactions");
    let send = |values: &[&str]| {
        for value in values {
            producer.send(BaseRecord::<(), str>::to(topic).payload(*value)).expect("send");
        }
        producer.flush(timeout).expect("flush");
    };
    producer.begin_transaction().expect("begin");
    send(&["kept-1", "kept-2"]);
    producer.commit_transaction(timeout).expect("commit");
    producer.begin_transaction().expect("begin");
    send(&["dropped-1", "dropped-2"]);
    producer.abort_transaction(timeout).expect("abort");
    producer.begin_transaction().expect("begin");
    send(&["kept-3"]);
    producer.commit_transaction(timeout).expect("commit");
    producer.begin_transaction().expect("begin");
    send(&["pending"]);
    producer
}
