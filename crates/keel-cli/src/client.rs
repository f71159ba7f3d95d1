//! A small async Kafka protocol client: one connection per broker, API versions negotiated with
//! ApiVersions, requests framed as a 4-byte size, a request header and the body.

use std::collections::HashMap;
use std::ops::RangeInclusive;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, FindCoordinatorRequest, MetadataRequest, MetadataResponse,
    RequestHeader, ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, Request, StrBytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

use crate::error::{check, CliError};

/// The largest response frame accepted; anything larger is a broken or hostile peer.
pub const RESPONSE_BYTES_MAX: usize = 256 << 20;
/// How long a TCP connect may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a broker may take to answer, beyond what the request itself asks to wait.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);
const CLIENT_ID: &str = "keel-cli";

pub fn name(topic: &str) -> TopicName {
    TopicName(StrBytes::from_string(topic.to_string()))
}

pub fn str_bytes(value: &str) -> StrBytes {
    StrBytes::from_string(value.to_string())
}

/// One connection to one broker.
pub struct Connection {
    addr: String,
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    correlation_id: i32,
    /// api key -> (min, max) the broker serves.
    versions: HashMap<i16, (i16, i16)>,
}

fn reason(error: &std::io::Error) -> String {
    match error.kind() {
        std::io::ErrorKind::ConnectionRefused => "connection refused".to_string(),
        std::io::ErrorKind::ConnectionReset => "connection reset".to_string(),
        std::io::ErrorKind::TimedOut => "timed out".to_string(),
        std::io::ErrorKind::UnexpectedEof => "the broker closed the connection".to_string(),
        _ => error.to_string(),
    }
}

impl Connection {
    /// Connects and learns the broker's API versions.
    pub async fn open(addr: &str) -> Result<Connection, CliError> {
        let connect_error = |reason: String| CliError::Connect { addr: addr.to_string(), reason };
        let stream = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
            Err(_) => return Err(connect_error(format!("no answer within {} s", CONNECT_TIMEOUT.as_secs()))),
            Ok(Err(error)) => return Err(connect_error(reason(&error))),
            Ok(Ok(stream)) => stream,
        };
        let _ = stream.set_nodelay(true);
        let (reader, writer) = stream.into_split();
        let mut connection = Connection {
            addr: addr.to_string(),
            reader: BufReader::new(reader),
            writer,
            correlation_id: 0,
            versions: HashMap::new(),
        };
        connection.negotiate().await?;
        Ok(connection)
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// ApiVersions v3; a broker that does not know v3 answers with a v0-shaped body (KIP-511)
    /// that still lists its APIs.
    async fn negotiate(&mut self) -> Result<(), CliError> {
        let version = 3;
        let mut request = ApiVersionsRequest::default();
        request.client_software_name = str_bytes(CLIENT_ID);
        request.client_software_version = str_bytes(env!("CARGO_PKG_VERSION"));
        let correlation_id = self.send(version, &request).await?;
        let mut frame = self.read_frame(RESPONSE_TIMEOUT).await?;
        // The ApiVersions response header is always v0.
        let header = ResponseHeader::decode(&mut frame, 0).map_err(|e| self.malformed("ApiVersions", e))?;
        self.check_correlation(header.correlation_id, correlation_id)?;
        let response = match ApiVersionsResponse::decode(&mut frame.clone(), version) {
            Ok(response) if response.error_code == 0 => response,
            _ => ApiVersionsResponse::decode(&mut frame, 0).map_err(|e| self.malformed("ApiVersions", e))?,
        };
        if response.api_keys.is_empty() {
            check(|| format!("ApiVersions at {}", self.addr), response.error_code, None)?;
        }
        self.versions = response.api_keys.iter().map(|k| (k.api_key, (k.min_version, k.max_version))).collect();
        Ok(())
    }

    fn malformed(&self, api: &str, error: impl std::fmt::Display) -> CliError {
        CliError::Protocol(format!("cannot decode the {api} response from {}: {error}", self.addr))
    }

    fn check_correlation(&self, got: i32, sent: i32) -> Result<(), CliError> {
        if got == sent {
            Ok(())
        } else {
            Err(CliError::Protocol(format!("{} answered correlation id {got} to request {sent}", self.addr)))
        }
    }

    fn lost(&self, reason: String) -> CliError {
        CliError::Disconnected { addr: self.addr.clone(), reason }
    }

    /// The version to use: the highest both sides speak.
    pub fn version(&self, key: ApiKey, ours: RangeInclusive<i16>) -> Result<i16, CliError> {
        let unsupported = || CliError::Unsupported {
            addr: self.addr.clone(),
            api: format!("{key:?}"),
            ours: format!("v{}-v{}", ours.start(), ours.end()),
        };
        let (min, max) = *self.versions.get(&(key as i16)).ok_or_else(unsupported)?;
        let version = max.min(*ours.end());
        if version < min || version < *ours.start() {
            return Err(unsupported());
        }
        Ok(version)
    }

    /// Negotiates the version, builds the request for it, sends it and decodes the answer.
    pub async fn request<R: Request>(
        &mut self,
        ours: RangeInclusive<i16>,
        build: impl FnOnce(i16) -> R,
    ) -> Result<(i16, R::Response), CliError> {
        let key = ApiKey::try_from(R::KEY).map_err(|_| CliError::Protocol(format!("unknown api key {}", R::KEY)))?;
        let version = self.version(key, ours)?;
        let request = build(version);
        let response = self.call(version, &request, Duration::ZERO).await?;
        Ok((version, response))
    }

    /// Sends a request and waits for its response (`extra_wait` for requests that park, such as Fetch).
    pub async fn call<R: Request>(
        &mut self,
        version: i16,
        request: &R,
        extra_wait: Duration,
    ) -> Result<R::Response, CliError> {
        let key = ApiKey::try_from(R::KEY).map_err(|_| CliError::Protocol(format!("unknown api key {}", R::KEY)))?;
        let correlation_id = self.send(version, request).await?;
        let mut frame = self.read_frame(RESPONSE_TIMEOUT + extra_wait).await?;
        let header = ResponseHeader::decode(&mut frame, key.response_header_version(version))
            .map_err(|e| self.malformed(&format!("{key:?}"), e))?;
        self.check_correlation(header.correlation_id, correlation_id)?;
        R::Response::decode(&mut frame, version).map_err(|e| self.malformed(&format!("{key:?}"), e))
    }

    /// Sends a request that gets no response (Produce with acks=0).
    pub async fn send<R: Request>(&mut self, version: i16, request: &R) -> Result<i32, CliError> {
        self.correlation_id = self.correlation_id.wrapping_add(1);
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(self.correlation_id)
            .with_client_id(Some(StrBytes::from_static_str(CLIENT_ID)));
        let mut body = BytesMut::new();
        header
            .encode(&mut body, R::header_version(version))
            .and_then(|_| request.encode(&mut body, version))
            .map_err(|e| CliError::Protocol(format!("cannot encode a request: {e}")))?;
        let mut frame = BytesMut::with_capacity(body.len() + 4);
        frame.put_i32(body.len() as i32);
        frame.extend_from_slice(&body);
        if let Err(error) = self.writer.write_all(&frame).await {
            return Err(self.lost(reason(&error)));
        }
        Ok(self.correlation_id)
    }

    async fn read_frame(&mut self, timeout: Duration) -> Result<Bytes, CliError> {
        let read = async {
            let length = self.reader.read_i32().await?;
            if length < 0 || length as usize > RESPONSE_BYTES_MAX {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("response frame of {length} bytes (the limit is {RESPONSE_BYTES_MAX})"),
                ));
            }
            let mut body = vec![0u8; length as usize];
            self.reader.read_exact(&mut body).await?;
            Ok(Bytes::from(body))
        };
        match tokio::time::timeout(timeout, read).await {
            Err(_) => Err(self.lost(format!("no answer within {} s", timeout.as_secs()))),
            Ok(Err(error)) => Err(self.lost(reason(&error))),
            Ok(Ok(frame)) => Ok(frame),
        }
    }
}

/// Connections to the brokers of one cluster, found from a bootstrap list.
/// FindCoordinator key types.
const GROUP_KEY: i8 = 0;
const TRANSACTION_KEY: i8 = 1;

pub struct Client {
    bootstrap: String,
    connections: HashMap<String, Connection>,
    /// node id -> host:port, from the last Metadata answer.
    nodes: HashMap<i32, String>,
}

impl Client {
    /// Connects to the first broker of the list that answers.
    pub async fn connect(brokers: &[String]) -> Result<Client, CliError> {
        let mut failures = Vec::new();
        for addr in brokers {
            match Connection::open(addr).await {
                Ok(connection) => {
                    let mut connections = HashMap::new();
                    connections.insert(addr.clone(), connection);
                    return Ok(Client { bootstrap: addr.clone(), connections, nodes: HashMap::new() });
                }
                Err(CliError::Connect { addr, reason }) => failures.push((addr, reason)),
                Err(other) => return Err(other),
            }
        }
        match failures.len() {
            0 => Err(CliError::Usage("no broker given; set --brokers or KEEL_BROKERS".to_string())),
            1 => {
                let (addr, reason) = failures.remove(0);
                Err(CliError::Connect { addr, reason })
            }
            _ => Err(CliError::Connect {
                addr: failures.iter().map(|(a, _)| a.as_str()).collect::<Vec<_>>().join(", "),
                reason: failures.iter().map(|(a, r)| format!("{a}: {r}")).collect::<Vec<_>>().join(", "),
            }),
        }
    }

    /// The connection to the bootstrap broker.
    pub fn any(&mut self) -> &mut Connection {
        self.connections.get_mut(&self.bootstrap).expect("the bootstrap connection is kept")
    }

    /// The connection to `addr`, opened on first use.
    pub async fn at(&mut self, addr: &str) -> Result<&mut Connection, CliError> {
        match self.connections.entry(addr.to_string()) {
            std::collections::hash_map::Entry::Occupied(entry) => Ok(entry.into_mut()),
            std::collections::hash_map::Entry::Vacant(entry) => Ok(entry.insert(Connection::open(addr).await?)),
        }
    }

    /// The connection to node `id` (as named by the last Metadata answer).
    pub async fn node(&mut self, id: i32) -> Result<&mut Connection, CliError> {
        let addr = self
            .nodes
            .get(&id)
            .cloned()
            .ok_or_else(|| CliError::Protocol(format!("node {id} is not among the brokers the cluster lists")))?;
        self.at(&addr).await
    }

    /// Metadata for `topics` (all when `None`), remembering where every node is.
    pub async fn metadata(
        &mut self,
        topics: Option<&[String]>,
        allow_auto_topic_creation: bool,
    ) -> Result<(i16, MetadataResponse), CliError> {
        let (version, response) = self
            .any()
            .request(1..=12, |version| {
                let mut request = MetadataRequest::default();
                request.topics = topics.map(|topics| {
                    topics
                        .iter()
                        .map(|topic| {
                            let mut wanted = MetadataRequestTopic::default();
                            wanted.name = Some(name(topic));
                            wanted
                        })
                        .collect()
                });
                if version >= 4 {
                    request.allow_auto_topic_creation = allow_auto_topic_creation;
                }
                request
            })
            .await?;
        self.nodes =
            response.brokers.iter().map(|b| (b.node_id.0, format!("{}:{}", b.host.as_str(), b.port))).collect();
        Ok((version, response))
    }

    /// The coordinator of `group`: (node id, host:port). COORDINATOR_NOT_AVAILABLE and
    /// COORDINATOR_LOAD_IN_PROGRESS (a coordinator starting up) are asked again for a few seconds.
    pub async fn coordinator(&mut self, group: &str) -> Result<(i32, String), CliError> {
        self.coordinator_of(group, GROUP_KEY).await
    }

    /// The transaction coordinator of `transactional_id`: (node id, host:port).
    pub async fn transaction_coordinator(&mut self, transactional_id: &str) -> Result<(i32, String), CliError> {
        self.coordinator_of(transactional_id, TRANSACTION_KEY).await
    }

    async fn coordinator_of(&mut self, key: &str, key_type: i8) -> Result<(i32, String), CliError> {
        let mut attempts = 0;
        loop {
            attempts += 1;
            match self.find_coordinator(key, key_type).await {
                Err(CliError::Broker { code: 14 | 15, .. }) if attempts < 50 => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                other => return other,
            }
        }
    }

    async fn find_coordinator(&mut self, key: &str, key_type: i8) -> Result<(i32, String), CliError> {
        let (version, response) = self
            .any()
            .request(1..=4, |version| {
                let mut request = FindCoordinatorRequest::default();
                request.key_type = key_type;
                if version >= 4 {
                    request.coordinator_keys = vec![str_bytes(key)];
                } else {
                    request.key = str_bytes(key);
                }
                request
            })
            .await?;
        let what = if key_type == TRANSACTION_KEY { "transactional id" } else { "group" };
        let context = || format!("cannot find the coordinator of {what} {key:?}");
        let (node_id, host, port) = if version >= 4 {
            let coordinator = response
                .coordinators
                .first()
                .ok_or_else(|| CliError::Protocol("FindCoordinator answered no coordinator".to_string()))?;
            check(context, coordinator.error_code, coordinator.error_message.as_ref())?;
            (coordinator.node_id.0, coordinator.host.to_string(), coordinator.port)
        } else {
            check(context, response.error_code, response.error_message.as_ref())?;
            (response.node_id.0, response.host.to_string(), response.port)
        };
        let addr = format!("{host}:{port}");
        self.nodes.insert(node_id, addr.clone());
        Ok((node_id, addr))
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncWriteExt;

    use super::*;

    /// A peer that answers the first request with the given bytes.
    async fn peer(answer: Vec<u8>) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.expect("accept");
            let length = socket.read_i32().await.expect("length");
            let mut request = vec![0u8; length as usize];
            socket.read_exact(&mut request).await.expect("request");
            socket.write_all(&answer).await.expect("answer");
        });
        addr
    }

    #[tokio::test]
    async fn a_response_frame_above_the_limit_is_refused_before_reading_it() {
        let addr = peer((RESPONSE_BYTES_MAX as i32 + 1).to_be_bytes().to_vec()).await;
        let error = Connection::open(&addr).await.err().expect("refused");
        assert!(matches!(error, CliError::Disconnected { .. }), "{error}");
        assert!(error.to_string().contains("the limit is 268435456"), "{error}");
    }

    #[tokio::test]
    async fn a_peer_that_hangs_up_is_a_lost_connection() {
        let addr = peer(vec![0, 0]).await;
        let error = Connection::open(&addr).await.err().expect("refused");
        assert_eq!(error.exit_code(), crate::exit::CONNECT, "{error}");
    }

    #[tokio::test]
    async fn nobody_listening_is_a_connect_error_with_a_hint() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        drop(listener);
        let error = Client::connect(std::slice::from_ref(&addr)).await.err().expect("refused");
        assert_eq!(
            error.to_string(),
            format!("cannot reach {addr}: connection refused; is the broker running? set --brokers or KEEL_BROKERS")
        );
        assert_eq!(error.exit_code(), crate::exit::CONNECT);
    }
}
