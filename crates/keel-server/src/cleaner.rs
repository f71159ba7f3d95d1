//! The log cleaner threads (Kafka's `LogCleaner`): `log.cleaner.threads` std threads, each
//! with its share of `log.cleaner.dedupe.buffer.size` for its offset map, cleaning the dirtiest
//! compacted log in turn and sleeping `log.cleaner.backoff.ms` when none needs cleaning. They
//! run outside the async runtime; a pass takes a log's append lock only for its swaps.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use keel_log::batch::Compression;
use keel_log::{LogManager, OffsetMap, RecordsCodec};

use crate::broker::{now_ms, Broker};
use keel_protocol::kafka_protocol::records::Compression as WireCompression;
use keel_protocol::records::{batch_records, recompress_batch};

use crate::config::StaticConfig;

/// The largest records section the cleaner decompresses from one batch: what the produce path
/// lets a batch inflate to (`INFLATED_BATCH_MAX_BYTES` in `handlers/produce/validate.rs`); a
/// larger one is kept whole.
const MAX_DECOMPRESSED_BYTES: usize = 64 << 20;

/// Kafka's codecs, from `keel-protocol`, for batches the cleaner must look inside.
pub struct ProtocolCodec;

impl RecordsCodec for ProtocolCodec {
    fn decompress(&self, batch: &[u8]) -> Result<Vec<u8>, String> {
        batch_records(batch, MAX_DECOMPRESSED_BYTES).map(|b| b.to_vec()).map_err(|e| e.to_string())
    }

    fn compress(&self, batch: &[u8], compression: Compression) -> Result<Vec<u8>, String> {
        let target = match compression {
            Compression::Gzip => WireCompression::Gzip,
            Compression::Snappy => WireCompression::Snappy,
            Compression::Lz4 => WireCompression::Lz4,
            Compression::Zstd => WireCompression::Zstd,
            Compression::None => return Ok(batch.to_vec()),
            Compression::Unknown(id) => return Err(format!("unknown compression codec {id}")),
        };
        let section = batch.get(keel_log::batch::HEADER_BYTES..).unwrap_or_default();
        recompress_batch(batch, section, target).map_err(|e| e.to_string())
    }
}

/// The cleaner's broker configs (read at startup).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CleanerConfig {
    /// `log.cleaner.enable`.
    pub enable: bool,
    /// `log.cleaner.threads`.
    pub threads: usize,
    /// `log.cleaner.dedupe.buffer.size`, shared by the threads.
    pub dedupe_buffer_bytes: u64,
    /// `log.cleaner.backoff.ms`.
    pub backoff_ms: u64,
}

impl CleanerConfig {
    pub fn from_statics(statics: &StaticConfig) -> CleanerConfig {
        let get = |name: &str| {
            statics
                .get(name)
                .map(str::to_string)
                .or_else(|| crate::config::broker_def(name)?.default.map(str::to_string))
        };
        CleanerConfig {
            enable: get("log.cleaner.enable").is_none_or(|v| v.trim().eq_ignore_ascii_case("true")),
            threads: get("log.cleaner.threads").and_then(|v| v.trim().parse().ok()).unwrap_or(1),
            dedupe_buffer_bytes: get("log.cleaner.dedupe.buffer.size")
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(keel_log::cleaner::DEFAULT_DEDUPE_BUFFER_BYTES),
            backoff_ms: get("log.cleaner.backoff.ms").and_then(|v| v.trim().parse().ok()).unwrap_or(15_000),
        }
    }
}

/// The running cleaner threads; `stop` ends them after their current pass.
pub struct Cleaners {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Cleaners {
    /// Starts the threads (none when `log.cleaner.enable` is false or the thread count is 0).
    pub fn start(config: CleanerConfig, broker: &Arc<Broker>) -> std::io::Result<Cleaners> {
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        if config.enable {
            for id in 0..config.threads {
                let buffer_bytes = config.dedupe_buffer_bytes / config.threads as u64;
                let (stop, broker) = (Arc::clone(&stop), Arc::clone(broker));
                let thread = std::thread::Builder::new()
                    .name(format!("kafka-log-cleaner-thread-{id}"))
                    .spawn(move || run(&broker.logs, buffer_bytes, config.backoff_ms, &stop))?;
                threads.push(thread);
            }
        }
        Ok(Cleaners { stop, threads })
    }

    /// Stops the threads and waits for them (each finishes the pass it is in).
    pub fn stop(self) {
        self.stop.store(true, Ordering::Release);
        for thread in &self.threads {
            thread.thread().unpark();
        }
        for thread in self.threads {
            let _ = thread.join();
        }
    }
}

fn run(logs: &LogManager, buffer_bytes: u64, backoff_ms: u64, stop: &AtomicBool) {
    let mut map = OffsetMap::new(buffer_bytes);
    let codec = ProtocolCodec;
    while !stop.load(Ordering::Acquire) {
        let cleaned = match logs.clean_dirtiest(&mut map, Some(&codec), now_ms()) {
            Ok(Some(((topic, partition), report))) => {
                tracing::info!(
                    %topic,
                    partition,
                    segments = report.segments_cleaned,
                    bytes_before = report.bytes_before,
                    bytes_after = report.bytes_after,
                    records_removed = report.records_removed,
                    end_offset = report.end_offset,
                    "cleaned log"
                );
                true
            }
            Ok(None) => false,
            Err(((topic, partition), error)) => {
                tracing::warn!(%topic, partition, %error, "log cleaning failed; the log is skipped until restart");
                false
            }
        };
        // The map's memory is not held between passes.
        map.reset(0);
        if !cleaned {
            // Sleep `log.cleaner.backoff.ms`, waking early to stop.
            let until = Instant::now() + Duration::from_millis(backoff_ms);
            while !stop.load(Ordering::Acquire) {
                let left = until.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                std::thread::park_timeout(left);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleaner_configs_default_as_kafka_and_follow_the_static_config() {
        let defaults = CleanerConfig::from_statics(&StaticConfig::default());
        assert_eq!(
            defaults,
            CleanerConfig { enable: true, threads: 1, dedupe_buffer_bytes: 134_217_728, backoff_ms: 15_000 }
        );
        let mut statics = StaticConfig::default();
        statics.set("log.cleaner.enable", "false").expect("valid");
        statics.set("log.cleaner.threads", "2").expect("valid");
        statics.set("log.cleaner.backoff.ms", "200").expect("valid");
        let config = CleanerConfig::from_statics(&statics);
        assert_eq!((config.enable, config.threads, config.backoff_ms), (false, 2, 200));
    }

    #[test]
    fn the_codec_round_trips_a_compressed_batch() {
        let plain = keel_log::builder::build_batch([(Some(&b"k"[..]), Some(&b"value"[..]))], 5).expect("batch");
        let section = &plain[keel_log::batch::HEADER_BYTES..];
        let compressed = ProtocolCodec.compress(&plain, Compression::Gzip).expect("compress");
        assert_ne!(compressed, plain);
        assert_eq!(compressed[22] & 0x07, 1, "the gzip codec bits");
        assert_eq!(ProtocolCodec.decompress(&compressed).expect("decompress"), section);
        assert_eq!(ProtocolCodec.compress(&plain, Compression::None).expect("none"), plain);
    }
}
