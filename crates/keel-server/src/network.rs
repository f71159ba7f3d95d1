//! Connections: reading request frames, dispatching them, writing responses in order.
//!
//! Requests of one connection are handled one after another, in the order they arrived, so
//! that appends to a partition keep the producer's order (Kafka processes one request per
//! connection at a time). A handler may finish its work later (a produce waiting for fsync, a
//! fetch long-polling): it then returns a pending reply and the next request is handled at once,
//! while a writer task sends every response in request order. In-flight requests per
//! connection are bounded.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use kafka_protocol::messages::{ApiKey, ApiVersionsResponse, ResponseKind};
use keel_log::ReadSlice;
use keel_protocol::fetch_encoding::{encode_fetch_response, RecordsSource};
use keel_protocol::{decode_request, encode_response, frame_length, DecodeError, FRAME_LENGTH_BYTES};
use tokio::io::Interest;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::broker::{stopped, Broker};
use crate::handlers;
use crate::handlers::fetch::FetchOutput;
use crate::metrics::{fetch_errors, response_errors, ConnectionGuard, RequestTiming};

/// Requests a connection may have in flight (handled, response not yet written).
const IN_FLIGHT_MAX: usize = 128;
/// The largest record buffer a connection keeps between fetches.
const SCRATCH_MAX_BYTES: usize = 16 << 20;
/// Bytes read from the socket at a time while no frame is pending.
const READ_CHUNK_BYTES: usize = 64 * 1024;

/// A response body: an ordinary message, or a Fetch response whose records are file ranges.
pub enum Response {
    Kind(ResponseKind),
    Fetch(FetchOutput),
}

/// What a handler gives back.
pub enum Reply {
    /// The response, or `None` when none is sent (Produce with acks=0).
    Ready(Option<Response>),
    /// Work that finishes later.
    Pending(JoinHandle<Option<Response>>),
    /// Close the connection without a response (Kafka's answer to acks=0 errors).
    Close,
}

struct InFlight {
    api_key: ApiKey,
    version: i16,
    correlation_id: i32,
    outcome: Outcome,
    /// When the request was decoded, and when its handler returned.
    received: Instant,
    handled: Instant,
}

/// A [`Reply`] as the writer sees it: pending work also reports when it finished, so that
/// the time a response waits behind earlier ones is told apart from the time it worked.
enum Outcome {
    Ready(Option<Response>),
    Pending(JoinHandle<(Result<Option<Response>, tokio::task::JoinError>, Instant)>),
    Close,
}

impl From<Reply> for Outcome {
    fn from(reply: Reply) -> Outcome {
        match reply {
            Reply::Ready(response) => Outcome::Ready(response),
            Reply::Pending(handle) => Outcome::Pending(tokio::spawn(async move {
                let response = handle.await;
                (response, Instant::now())
            })),
            Reply::Close => Outcome::Close,
        }
    }
}

pub async fn serve(broker: Arc<Broker>, stream: TcpStream, mut shutdown: watch::Receiver<bool>) {
    let _ = stream.set_nodelay(true);
    let peer = stream.peer_addr().ok();
    let (reader, writer) = stream.into_split();
    let (tx, rx) = mpsc::channel(IN_FLIGHT_MAX);
    let _counted = ConnectionGuard::new(broker.clone());
    let writer = tokio::spawn(write_loop(broker.clone(), writer, rx, broker.fetch_sendfile()));
    let client_host = peer.map_or_else(String::new, |addr| format!("/{}", addr.ip()));
    if let Err(reason) = read_loop(&broker, reader, tx, &mut shutdown, &client_host).await {
        tracing::debug!(?peer, %reason, "closing connection");
    }
    // The sender is gone: the writer finishes the in-flight responses and stops.
    let _ = writer.await;
}

/// Reads and handles requests until the peer closes, an error, or shutdown. Shutdown stops
/// only the waiting for the next frame: a request being handled always completes, so that
/// nothing appended goes unanswered.
async fn read_loop(
    broker: &Arc<Broker>,
    mut reader: OwnedReadHalf,
    tx: mpsc::Sender<InFlight>,
    shutdown: &mut watch::Receiver<bool>,
    client_host: &str,
) -> Result<(), String> {
    let mut buffer = BytesMut::with_capacity(READ_CHUNK_BYTES);
    let idle = broker.connections_max_idle();
    loop {
        let max_bytes = broker.request_max_bytes();
        let length = loop {
            match frame_length(&buffer, max_bytes).map_err(|e| e.to_string())? {
                Some(length) if buffer.len() >= FRAME_LENGTH_BYTES + length => break length,
                Some(length) => buffer.reserve(FRAME_LENGTH_BYTES + length - buffer.len()),
                None => buffer.reserve(READ_CHUNK_BYTES),
            }
            let read = tokio::select! {
                read = reader.read_buf(&mut buffer) => read.map_err(|e| e.to_string())?,
                _ = stopped(shutdown) => return Ok(()),
                // Kafka closes connections that stay silent for connections.max.idle.ms.
                _ = tokio::time::sleep(idle) => return Err("idle for connections.max.idle.ms".into()),
            };
            if read == 0 {
                return if buffer.is_empty() { Ok(()) } else { Err("connection closed mid-frame".into()) };
            }
        };
        buffer.advance(FRAME_LENGTH_BYTES);
        let frame = buffer.split_to(length).freeze();
        let in_flight = match decode_request(frame) {
            Ok(request) => {
                let (api_key, version, correlation_id) = (request.api_key, request.version(), request.correlation_id());
                let received = Instant::now();
                let outcome = handlers::handle(broker, request, client_host).await.into();
                InFlight { api_key, version, correlation_id, outcome, received, handled: Instant::now() }
            }
            // KIP-511: an ApiVersions request of a version we do not know gets a v0 response
            // with UNSUPPORTED_VERSION and our ranges, so the client can retry with one we do.
            Err(DecodeError::UnsupportedVersion { api_key: ApiKey::ApiVersions, correlation_id, .. }) => {
                let mut response: ApiVersionsResponse = handlers::api_versions::supported();
                response.error_code = kafka_protocol::error::ResponseError::UnsupportedVersion.code();
                let now = Instant::now();
                InFlight {
                    api_key: ApiKey::ApiVersions,
                    version: 0,
                    correlation_id,
                    outcome: Outcome::Ready(Some(Response::Kind(ResponseKind::ApiVersions(response)))),
                    received: now,
                    handled: now,
                }
            }
            Err(error) => return Err(error.to_string()),
        };
        if tx.send(in_flight).await.is_err() {
            return Err("writer stopped".into());
        }
    }
}

async fn write_loop(broker: Arc<Broker>, mut writer: OwnedWriteHalf, mut rx: mpsc::Receiver<InFlight>, sendfile: bool) {
    let mut out = BytesMut::with_capacity(READ_CHUNK_BYTES);
    let mut scratch = Vec::new();
    while let Some(in_flight) = rx.recv().await {
        let (response, done) = match in_flight.outcome {
            Outcome::Ready(response) => (response, in_flight.handled),
            Outcome::Pending(handle) => match handle.await {
                Ok((Ok(response), done)) => (response, done),
                Ok((Err(error), _)) => {
                    tracing::error!(%error, "request task failed; closing connection");
                    return;
                }
                Err(error) => {
                    tracing::error!(%error, "request task failed; closing connection");
                    return;
                }
            },
            Outcome::Close => return,
        };
        let picked = Instant::now();
        let mut timing = RequestTiming {
            local: in_flight.handled - in_flight.received,
            wait: done.saturating_duration_since(in_flight.handled),
            response_queue: picked.saturating_duration_since(done),
            send: Duration::ZERO,
        };
        let Some(response) = response else {
            broker.metrics.request_done(in_flight.api_key, &[], timing);
            continue;
        };
        out.clear();
        let errors = match &response {
            Response::Kind(body) => response_errors(body),
            Response::Fetch(output) => fetch_errors(&output.response),
        };
        let written = match response {
            Response::Kind(body) => {
                if let Err(error) =
                    encode_response(&mut out, in_flight.api_key, in_flight.version, in_flight.correlation_id, &body)
                {
                    // A response that does not encode is a broker bug, not a client problem.
                    tracing::error!(%error, api_key = ?in_flight.api_key, version = in_flight.version, "cannot encode a response; closing connection");
                    return;
                }
                writer.write_all(&out).await.map_err(anyhow::Error::from)
            }
            Response::Fetch(output) => {
                let (version, correlation_id) = (in_flight.version, in_flight.correlation_id);
                write_fetch(&mut writer, &mut out, &mut scratch, version, correlation_id, output, sendfile).await
            }
        };
        if let Err(error) = written {
            tracing::debug!(%error, api_key = ?in_flight.api_key, "cannot write a response; closing connection");
            return;
        }
        timing.send = picked.elapsed();
        broker.metrics.request_done(in_flight.api_key, &errors, timing);
        // A large response should not pin its buffer for the connection's life; the record
        // buffer may stay as large as one partition's fetch (max.partition.fetch.bytes).
        if out.capacity() > 16 * READ_CHUNK_BYTES {
            out = BytesMut::with_capacity(READ_CHUNK_BYTES);
        }
        if scratch.len() > SCRATCH_MAX_BYTES {
            scratch = Vec::new();
        }
    }
    let _ = writer.shutdown().await;
}

/// Record data left in the files: the response buffer holds everything else, and each
/// withheld range is written between its pieces.
struct Withheld<'a> {
    slices: &'a [Option<ReadSlice>],
    /// (buffer position, slice index) for every withheld slice.
    splits: Vec<(usize, usize)>,
}

impl RecordsSource for Withheld<'_> {
    fn len(&self, index: usize) -> Option<usize> {
        self.slices.get(index)?.as_ref().map(|slice| slice.len)
    }

    fn fill(&mut self, out: &mut BytesMut, index: usize) -> anyhow::Result<usize> {
        self.splits.push((out.len(), index));
        Ok(0)
    }
}

/// Writes a Fetch response: its fields from `out`, its records straight from the segment
/// files, either with `sendfile(2)` (no copy through user space) or with a positional read
/// into `scratch`, a buffer reused for the connection's life (one copy).
async fn write_fetch(
    writer: &mut OwnedWriteHalf,
    out: &mut BytesMut,
    scratch: &mut Vec<u8>,
    version: i16,
    correlation_id: i32,
    output: FetchOutput,
    sendfile: bool,
) -> anyhow::Result<()> {
    let mut records = Withheld { slices: &output.slices, splits: Vec::new() };
    encode_fetch_response(out, version, correlation_id, &output.response, &mut records)?;
    let mut written = 0;
    for (split, index) in records.splits {
        writer.write_all(&out[written..split]).await?;
        written = split;
        let Some(Some(slice)) = output.slices.get(index) else { continue };
        let Some(file) = &slice.file else { continue };
        // Storage that is not the operating system's file system has nothing to sendfile.
        if let (true, Some(os_file)) = (sendfile, file.os_file()) {
            send_file(writer, os_file, slice.position, slice.len).await?;
        } else {
            if scratch.len() < slice.len {
                scratch.resize(slice.len, 0);
            }
            file.read_exact_at(&mut scratch[..slice.len], slice.position)?;
            writer.write_all(&scratch[..slice.len]).await?;
        }
    }
    writer.write_all(&out[written..]).await?;
    Ok(())
}

/// Sends `len` bytes of `file` from `position` to the socket with `sendfile(2)`.
async fn send_file(
    writer: &mut OwnedWriteHalf,
    file: &std::fs::File,
    mut position: u64,
    len: usize,
) -> anyhow::Result<()> {
    let stream = writer.as_ref();
    let mut remaining = len;
    while remaining > 0 {
        stream.writable().await?;
        let sent = stream.try_io(Interest::WRITABLE, || {
            rustix::fs::sendfile(stream, file, Some(&mut position), remaining).map_err(std::io::Error::from)
        });
        match sent {
            Ok(0) => anyhow::bail!("the segment file ended before the fetched range"),
            Ok(n) => remaining -= n,
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(error) => return Err(error.into()),
        }
    }
    Ok(())
}
