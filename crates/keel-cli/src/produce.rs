//! `keel produce TOPIC`: one record per line of stdin, batched per partition and sent to each
//! partition's leader, one request at a time.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use indexmap::IndexMap;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::ProduceRequest;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType};
use kafka_protocol::ResponseError;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

use crate::client::{name, str_bytes, Client};
use crate::error::{exit, CliError};
use crate::format::partition_for_key;
use crate::offsets::{self, TopicInfo};
use crate::output::emit;
use crate::{connect, CompressionArg, ProduceArgs};

/// The longest input line accepted (one record).
const LINE_BYTES_MAX: u64 = 16 << 20;
/// What a record costs in a batch beyond its key, value and headers (varint lengths, deltas).
const RECORD_OVERHEAD_BYTES: usize = 40;
/// And per header (two varint lengths).
const HEADER_OVERHEAD_BYTES: usize = 10;
const PRODUCE_TIMEOUT_MS: i32 = 30_000;
const RETRIES_MAX: u32 = 5;
/// How long records wait for more input before they are sent.
const LINGER: Duration = Duration::from_millis(100);

/// A record waiting for its batch.
struct Pending {
    key: Option<Bytes>,
    value: Bytes,
    timestamp: i64,
}

/// Per partition: first and last offset written, and how many records.
#[derive(Default)]
struct Written {
    first_offset: Option<i64>,
    last_offset: Option<i64>,
    records: u64,
}

pub async fn run(args: ProduceArgs) -> Result<u8, CliError> {
    let mut headers: IndexMap<StrBytes, Option<Bytes>> = IndexMap::new();
    for pair in &args.headers {
        let (key, value) = pair
            .split_once('=')
            .filter(|(key, _)| !key.is_empty())
            .ok_or_else(|| CliError::Usage(format!("-H {pair:?} must be KEY=VALUE, e.g. -H source=cli")))?;
        headers.insert(str_bytes(key), Some(Bytes::copy_from_slice(value.as_bytes())));
    }
    let delimiter = args.key_delimiter.as_deref().map(unescape);
    if delimiter.as_deref() == Some("") {
        return Err(CliError::Usage("--key-delimiter must not be empty".to_string()));
    }
    let compression = match args.compression {
        CompressionArg::None => Compression::None,
        CompressionArg::Gzip => Compression::Gzip,
        CompressionArg::Snappy => Compression::Snappy,
        CompressionArg::Lz4 => Compression::Lz4,
        CompressionArg::Zstd => Compression::Zstd,
    };
    let mut client = connect(&args.common).await?;
    // Producers may create the topic on first use, as Kafka's do (auto.create.topics.enable).
    let mut info = offsets::topic(&mut client, &args.topic, true, "cannot produce to topic").await?;
    if info.partitions.is_empty() {
        return Err(CliError::Protocol(format!("the cluster lists topic {:?} with no partitions", args.topic)));
    }
    if let Some(partition) = args.partition {
        if !info.partitions.iter().any(|p| p.partition == partition) {
            return Err(CliError::Usage(format!(
                "topic {:?} has no partition {partition} (it has {})",
                args.topic,
                info.partitions.len()
            )));
        }
    }
    let mut producer = Producer {
        topic: args.topic.clone(),
        acks: args.acks,
        compression,
        headers,
        pending: BTreeMap::new(),
        pending_records: 0,
        pending_bytes: 0,
        written: BTreeMap::new(),
        sticky: (SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().subsec_nanos() as usize)
            % info.partitions.len().max(1),
        progress: Progress::new(),
    };

    let delimiter = delimiter.as_deref().map(str::as_bytes);
    let mut stdin = BufReader::with_capacity(1 << 16, tokio::io::stdin());
    let mut line = Vec::new();
    loop {
        let mut limited = (&mut stdin).take(LINE_BYTES_MAX + 1 - line.len() as u64);
        let reading = limited.read_until(b'\n', &mut line);
        // Records wait for a full batch only while input keeps coming: when stdin pauses
        // (someone typing, a slow pipe) what is pending goes out after LINGER. A read cut
        // short keeps what it read in `line` and the next one goes on from there.
        let read = if producer.pending_records > 0 {
            match tokio::time::timeout(LINGER, reading).await {
                Ok(read) => read,
                Err(_) => {
                    producer.flush(&mut client, &mut info).await?;
                    continue;
                }
            }
        } else {
            reading.await
        };
        let read = read.map_err(|e| CliError::other(format!("cannot read stdin: {e}")))?;
        if line.last() == Some(&b'\n') {
            line.pop();
        } else if line.len() as u64 > LINE_BYTES_MAX {
            return Err(CliError::other(format!("a line of stdin is longer than {LINE_BYTES_MAX} bytes")));
        } else if read == 0 && line.is_empty() {
            break; // end of input
        }
        // Otherwise: a last line without a newline.
        let (key, value) = match delimiter.and_then(|d| find(&line, d).map(|at| (at, d.len()))) {
            Some((at, length)) => {
                (Some(Bytes::copy_from_slice(&line[..at])), Bytes::copy_from_slice(&line[at + length..]))
            }
            None => (None, Bytes::copy_from_slice(&line)),
        };
        // A batch stays within --batch-bytes (the broker refuses batches above
        // max.message.bytes): flush before the record that would overflow it.
        let size = producer.record_bytes(key.as_ref(), &value);
        if producer.pending_records > 0 && producer.pending_bytes + size > args.batch_bytes as usize {
            producer.flush(&mut client, &mut info).await?;
        }
        let partition = match (args.partition, &key) {
            (Some(partition), _) => partition,
            (None, Some(key)) => partition_for_key(key, info.partitions.len() as i32),
            (None, None) => info.partitions[producer.sticky % info.partitions.len()].partition,
        };
        producer.add(partition, key, value, size);
        line.clear();
        if producer.pending_records >= args.batch_records as usize {
            producer.flush(&mut client, &mut info).await?;
        }
    }
    producer.flush(&mut client, &mut info).await?;
    producer.progress.finish();

    let total: u64 = producer.written.values().map(|w| w.records).sum();
    let mut text = format!("produced {} to topic {:?}\n", records(total), args.topic);
    for (partition, written) in &producer.written {
        match (written.first_offset, written.last_offset) {
            (Some(first), Some(last)) => text
                .push_str(&format!("  partition {partition}: {}, offsets {first}..{last}\n", records(written.records))),
            _ => text.push_str(&format!(
                "  partition {partition}: {} (acks=0: offsets unknown)\n",
                records(written.records)
            )),
        }
    }
    let json = json!({
        "topic": args.topic,
        "records": total,
        "partitions": producer.written.iter().map(|(partition, w)| json!({
            "partition": partition,
            "records": w.records,
            "first_offset": w.first_offset,
            "last_offset": w.last_offset,
        })).collect::<Vec<_>>(),
    });
    emit(args.common.format, &text, &json)?;
    Ok(exit::OK)
}

/// `\t`, `\n`, `\r` and `\\` in a delimiter given on the command line.
fn unescape(text: &str) -> String {
    text.replace("\\t", "\t").replace("\\n", "\n").replace("\\r", "\r").replace("\\\\", "\\")
}

fn records(count: u64) -> String {
    if count == 1 {
        "1 record".to_string()
    } else {
        format!("{count} records")
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|window| window == needle)
}

struct Producer {
    topic: String,
    acks: i16,
    compression: Compression,
    headers: IndexMap<StrBytes, Option<Bytes>>,
    pending: BTreeMap<i32, Vec<Pending>>,
    pending_records: usize,
    pending_bytes: usize,
    written: BTreeMap<i32, Written>,
    /// Records without a key go to one partition per batch, the next one for the next batch.
    sticky: usize,
    progress: Progress,
}

impl Producer {
    /// What a record adds to a batch, at most (its varint overheads estimated high).
    fn record_bytes(&self, key: Option<&Bytes>, value: &Bytes) -> usize {
        let header_bytes: usize =
            self.headers.iter().map(|(k, v)| k.len() + v.as_ref().map_or(0, Bytes::len) + HEADER_OVERHEAD_BYTES).sum();
        key.map_or(0, Bytes::len) + value.len() + header_bytes + RECORD_OVERHEAD_BYTES
    }

    fn add(&mut self, partition: i32, key: Option<Bytes>, value: Bytes, size: usize) {
        self.pending_bytes += size;
        self.pending_records += 1;
        let timestamp = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
        self.pending.entry(partition).or_default().push(Pending { key, value, timestamp });
    }

    fn encode(&self, records: &[Pending]) -> Result<Bytes, CliError> {
        let records: Vec<Record> = records
            .iter()
            .enumerate()
            .map(|(i, pending)| Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: -1,
                producer_id: -1,
                producer_epoch: -1,
                timestamp_type: TimestampType::Creation,
                offset: i as i64,
                // offset - sequence must be the same for every record of one batch; this makes
                // the batch's baseSequence -1, as a producer without idempotence writes.
                sequence: i as i32 - 1,
                timestamp: pending.timestamp,
                key: pending.key.clone(),
                value: Some(pending.value.clone()),
                headers: self.headers.clone(),
            })
            .collect();
        let mut buf = BytesMut::new();
        RecordBatchEncoder::encode(
            &mut buf,
            records.iter(),
            &RecordEncodeOptions { version: 2, compression: self.compression },
        )
        .map_err(|e| CliError::other(format!("cannot encode a record batch: {e}")))?;
        Ok(buf.freeze())
    }

    async fn flush(&mut self, client: &mut Client, info: &mut TopicInfo) -> Result<(), CliError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let pending = std::mem::take(&mut self.pending);
        let records = self.pending_records;
        let bytes = self.pending_bytes;
        self.pending_records = 0;
        self.pending_bytes = 0;
        self.sticky = self.sticky.wrapping_add(1);
        let mut batches: BTreeMap<i32, (Bytes, u64)> = BTreeMap::new();
        for (partition, records) in &pending {
            batches.insert(*partition, (self.encode(records)?, records.len() as u64));
        }
        let mut attempt = 0;
        while !batches.is_empty() {
            attempt += 1;
            let retry = self.send(client, info, &mut batches, attempt).await?;
            if !retry {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100 * attempt as u64)).await;
            *info = offsets::topic(client, &self.topic, true, "cannot produce to topic").await?;
        }
        // The progress counts the bytes of keys, values and headers, not the batch overhead.
        self.progress.add(records as u64, bytes.saturating_sub(records * RECORD_OVERHEAD_BYTES) as u64);
        Ok(())
    }

    /// Sends every batch to its leader; removes the ones written. Returns true when some
    /// failed with a retriable error and should go again.
    async fn send(
        &mut self,
        client: &mut Client,
        info: &TopicInfo,
        batches: &mut BTreeMap<i32, (Bytes, u64)>,
        attempt: u32,
    ) -> Result<bool, CliError> {
        let mut by_leader: BTreeMap<i32, Vec<i32>> = BTreeMap::new();
        for partition in batches.keys() {
            let leader = info.partitions.iter().find(|p| p.partition == *partition).map_or(-1, |p| p.leader);
            by_leader.entry(leader).or_default().push(*partition);
        }
        let mut retry = false;
        for (leader, partitions) in by_leader {
            if leader < 0 {
                if attempt >= RETRIES_MAX {
                    return Err(CliError::broker(
                        format!("cannot produce to topic {:?}: partitions {partitions:?} have no leader", self.topic),
                        5,
                        None,
                    ));
                }
                retry = true;
                continue;
            }
            let connection = client.node(leader).await?;
            let version = connection.version(kafka_protocol::messages::ApiKey::Produce, 3..=9)?;
            let mut topic_data = TopicProduceData::default();
            topic_data.name = name(&self.topic);
            topic_data.partition_data = partitions
                .iter()
                .map(|p| {
                    let mut data = PartitionProduceData::default();
                    data.index = *p;
                    data.records = Some(batches[p].0.clone());
                    data
                })
                .collect();
            let mut request = ProduceRequest::default();
            request.acks = self.acks;
            request.timeout_ms = PRODUCE_TIMEOUT_MS;
            request.topic_data = vec![topic_data];
            if self.acks == 0 {
                // No response comes for acks=0.
                connection.send(version, &request).await?;
                for p in &partitions {
                    let (_, count) = batches.remove(p).expect("batch of this partition");
                    self.written.entry(*p).or_default().records += count;
                }
                continue;
            }
            let response = connection.call(version, &request, Duration::ZERO).await?;
            for result in response.responses.iter().flat_map(|t| t.partition_responses.iter()) {
                let Some((_, count)) = batches.get(&result.index).cloned() else {
                    continue;
                };
                if result.error_code == 0 {
                    batches.remove(&result.index);
                    let written = self.written.entry(result.index).or_default();
                    written.first_offset.get_or_insert(result.base_offset);
                    written.last_offset = Some(result.base_offset + count as i64 - 1);
                    written.records += count;
                    continue;
                }
                let retriable = ResponseError::try_from_code(result.error_code).is_some_and(|e| e.is_retriable());
                if retriable && attempt < RETRIES_MAX {
                    retry = true;
                    continue;
                }
                let mut message = result.error_message.as_ref().map(|m| m.to_string());
                if let Some(first) = result.record_errors.first() {
                    if let Some(text) = &first.batch_index_error_message {
                        message = Some(text.to_string());
                    }
                }
                return Err(CliError::broker(
                    format!("cannot produce to partition {} of topic {:?}", result.index, self.topic),
                    result.error_code,
                    message,
                ));
            }
        }
        Ok(retry)
    }
}

/// A one-line progress report on stderr, drawn only when stderr is a terminal and the input
/// takes more than a second.
struct Progress {
    enabled: bool,
    started: Instant,
    drawn: Option<Instant>,
    records: u64,
    bytes: u64,
}

impl Progress {
    fn new() -> Progress {
        Progress {
            enabled: std::io::stderr().is_terminal(),
            started: Instant::now(),
            drawn: None,
            records: 0,
            bytes: 0,
        }
    }

    fn add(&mut self, records: u64, bytes: u64) {
        self.records += records;
        self.bytes += bytes;
        if !self.enabled || self.started.elapsed() < Duration::from_secs(1) {
            return;
        }
        if self.drawn.is_some_and(|at| at.elapsed() < Duration::from_millis(200)) {
            return;
        }
        self.drawn = Some(Instant::now());
        let seconds = self.started.elapsed().as_secs_f64().max(0.001);
        let mut stderr = std::io::stderr().lock();
        let _ = write!(
            stderr,
            "\r\x1b[K{} records  {:.1} MB  {:.0} records/s  {:.1} MB/s",
            self.records,
            self.bytes as f64 / 1e6,
            self.records as f64 / seconds,
            self.bytes as f64 / 1e6 / seconds
        );
        let _ = stderr.flush();
    }

    fn finish(&self) {
        if self.drawn.is_some() {
            let mut stderr = std::io::stderr().lock();
            let _ = write!(stderr, "\r\x1b[K");
            let _ = stderr.flush();
        }
    }
}
