//! `keel-bench produce`: throughput and send-to-ack latency of librdkafka producers, in the
//! manner of Kafka's kafka-producer-perf-test.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use hdrhistogram::Histogram;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::ClientContext;

use crate::client::{base_config, ensure_topic, CommonArgs};
use crate::cpu::CpuMeter;
use crate::report::{latency_histogram, letters_payload, record_latency_us, Latency, Report};

/// Records measured when neither --records nor --duration-secs is given.
pub const RECORDS_DEFAULT: u64 = 1_000_000;
/// Longest measurement window when only --records bounds the run.
pub const DURATION_SECS_MAX: u64 = 600;
/// How long the final flush may take before undelivered records count as errors.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(60);
/// Pause before retrying a send the full local queue refused.
const QUEUE_FULL_BACKOFF: Duration = Duration::from_micros(50);

#[derive(clap::Args, Clone, Debug)]
pub struct ProduceArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    #[command(flatten)]
    pub producer: ProducerArgs,
    /// Broker process id: when given, the broker's CPU use is reported too.
    #[arg(long)]
    pub broker_pid: Option<u32>,
}

#[derive(clap::Args, Clone, Debug)]
pub struct ProducerArgs {
    /// Acknowledgements: 0, 1 or all (all waits for the fsync on a single node).
    #[arg(long, default_value = "1", value_parser = ["0", "1", "all", "-1"])]
    pub acks: String,
    /// librdkafka linger.ms: how long a batch may wait to fill.
    #[arg(long, default_value_t = 5)]
    pub linger_ms: u64,
    /// librdkafka batch.size in bytes.
    #[arg(long, default_value_t = 1024 * 1024)]
    pub batch_size: u64,
    /// compression.type: none, gzip, snappy, lz4 or zstd.
    #[arg(long, default_value = "none", value_parser = ["none", "gzip", "snappy", "lz4", "zstd"])]
    pub compression: String,
    /// Producer instances, each on its own thread and connection.
    #[arg(long, default_value_t = 1)]
    pub producers: usize,
    /// Records per second over all producers; 0 means as fast as possible.
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// Local send queue per producer, in MiB (queue.buffering.max.kbytes). At full speed the
    /// latency is about this queue divided by the throughput.
    #[arg(long, default_value_t = 64)]
    pub buffer_mb: u64,
    /// enable.idempotence=true (implies acks=all): the broker checks every batch's sequence.
    #[arg(long)]
    pub idempotence: bool,
}

impl ProducerArgs {
    pub fn acks_label(&self) -> &str {
        if self.acks == "-1" {
            "all"
        } else {
            &self.acks
        }
    }
}

/// Delivery counters shared by one producer's callback and the reporting thread.
pub(crate) struct DeliveryStats {
    histogram: Mutex<Histogram<u64>>,
    delivered: AtomicU64,
    errors: AtomicU64,
    first_error: Mutex<Option<String>>,
    last_delivery_ns: AtomicU64,
}

impl DeliveryStats {
    pub(crate) fn new() -> Arc<DeliveryStats> {
        Arc::new(DeliveryStats {
            histogram: Mutex::new(latency_histogram()),
            delivered: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            first_error: Mutex::new(None),
            last_delivery_ns: AtomicU64::new(0),
        })
    }

    /// Records acknowledged after the warm-up.
    pub(crate) fn delivered(&self) -> u64 {
        self.delivered.load(Ordering::Relaxed)
    }

    pub(crate) fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    pub(crate) fn first_error(&self) -> Option<String> {
        self.first_error.lock().expect("error lock poisoned").clone()
    }

    pub(crate) fn latency(&self) -> Option<Latency> {
        Latency::from_histogram(&self.histogram.lock().expect("histogram lock poisoned"))
    }
}

/// Records each measured delivery; the opaque is the send time in nanoseconds since `start`.
pub(crate) struct LatencyContext {
    start: Instant,
    warmup_ns: u64,
    stats: Arc<DeliveryStats>,
}

impl LatencyContext {
    pub(crate) fn new(start: Instant, warmup: Duration, stats: Arc<DeliveryStats>) -> LatencyContext {
        LatencyContext { start, warmup_ns: warmup.as_nanos() as u64, stats }
    }
}

impl ClientContext for LatencyContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        if (level as i32) <= RDKafkaLogLevel::Warning as i32 {
            eprintln!("librdkafka {fac}: {message}");
        }
    }
}

impl ProducerContext for LatencyContext {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, sent_ns: usize) {
        let now_ns = self.start.elapsed().as_nanos() as u64;
        let sent_ns = sent_ns as u64;
        match result {
            Ok(_) if sent_ns >= self.warmup_ns => {
                self.stats.delivered.fetch_add(1, Ordering::Relaxed);
                self.stats.last_delivery_ns.fetch_max(now_ns, Ordering::Relaxed);
                let mut histogram = self.stats.histogram.lock().expect("histogram lock poisoned");
                record_latency_us(&mut histogram, now_ns.saturating_sub(sent_ns) / 1000);
            }
            Ok(_) => {}
            Err((error, _)) => {
                self.stats.errors.fetch_add(1, Ordering::Relaxed);
                let mut first = self.stats.first_error.lock().expect("error lock poisoned");
                first.get_or_insert_with(|| error.to_string());
            }
        }
    }
}

pub fn run(args: &ProduceArgs) -> anyhow::Result<Report> {
    let common = &args.common;
    let p = &args.producer;
    if p.producers == 0 {
        bail!("--producers must be at least 1");
    }
    ensure_topic(common)?;
    let records = match (common.records, common.duration_secs) {
        (None, None) => RECORDS_DEFAULT,
        (records, _) => records.unwrap_or(u64::MAX),
    };
    let duration = Duration::from_secs(common.duration_secs.unwrap_or(DURATION_SECS_MAX));
    let warmup = common.warmup();
    let start = Instant::now();
    let cpu = CpuMeter::start(args.broker_pid);

    let stats: Vec<Arc<DeliveryStats>> = (0..p.producers).map(|_| DeliveryStats::new()).collect();
    let threads: Vec<_> = stats
        .iter()
        .enumerate()
        .map(|(index, stats)| {
            let plan = SendPlan {
                topic: common.topic.clone(),
                record_size: common.record_size,
                // Spread the quota so the producers together send exactly `records`.
                records: share(records, p.producers, index),
                rate: if p.rate == 0 { 0.0 } else { p.rate as f64 / p.producers as f64 },
                start,
                warmup,
                duration,
            };
            let context = LatencyContext::new(start, warmup, Arc::clone(stats));
            let config = producer_config(&common.brokers, p);
            std::thread::Builder::new()
                .name(format!("producer-{index}"))
                .spawn(move || -> anyhow::Result<()> {
                    let producer: ThreadedProducer<LatencyContext> =
                        config.create_with_context(context).context("cannot create the producer")?;
                    send_all(&producer, &plan)
                })
                .context("cannot start a producer thread")
        })
        .collect::<anyhow::Result<_>>()?;
    for thread in threads {
        thread.join().map_err(|_| anyhow::anyhow!("a producer thread panicked"))??;
    }

    let mut histogram = latency_histogram();
    let (mut delivered, mut errors, mut last_ns, mut first_error) = (0, 0, 0, None);
    for s in &stats {
        histogram.add(&*s.histogram.lock().expect("histogram lock poisoned"))?;
        delivered += s.delivered();
        errors += s.errors();
        last_ns = last_ns.max(s.last_delivery_ns.load(Ordering::Relaxed));
        if first_error.is_none() {
            first_error = s.first_error();
        }
    }
    let elapsed_secs = (Duration::from_nanos(last_ns).saturating_sub(warmup)).as_secs_f64();
    let mut extra =
        vec![("partitions", serde_json::json!(common.partitions)), ("producers", serde_json::json!(p.producers))];
    extra.extend(cpu.finish());
    if let Some(error) = first_error {
        extra.push(("first error", serde_json::json!(error)));
    }
    Ok(Report {
        name: if p.idempotence {
            "produce idempotent acks=all".to_string()
        } else {
            format!("produce acks={}", p.acks_label())
        },
        records: delivered,
        payload_bytes: delivered * common.record_size as u64,
        elapsed_secs,
        latency: Latency::from_histogram(&histogram),
        latency_kind: "send to ack",
        errors,
        extra,
    })
}

/// This producer's part of `total` when `parts` producers share it.
fn share(total: u64, parts: usize, index: usize) -> u64 {
    if total == u64::MAX {
        return u64::MAX;
    }
    let parts = parts as u64;
    total / parts + u64::from((index as u64) < total % parts)
}

pub fn producer_config(brokers: &str, p: &ProducerArgs) -> rdkafka::ClientConfig {
    let mut config = base_config(brokers);
    config
        .set("enable.idempotence", if p.idempotence { "true" } else { "false" })
        .set("acks", if p.idempotence { "all" } else { p.acks_label() })
        .set("linger.ms", p.linger_ms.to_string())
        .set("batch.size", p.batch_size.to_string())
        // batch.size is capped by message.max.bytes; leave room for the request framing.
        .set("message.max.bytes", (p.batch_size + 64 * 1024).max(1_000_000).to_string())
        .set("compression.type", &p.compression)
        .set("queue.buffering.max.messages", "2000000")
        .set("queue.buffering.max.kbytes", (p.buffer_mb * 1024).to_string());
    config
}

/// What one producer thread sends.
struct SendPlan {
    topic: String,
    record_size: usize,
    /// Measured records to send (warm-up records are extra).
    records: u64,
    /// Records per second for this producer; 0 means unthrottled.
    rate: f64,
    start: Instant,
    warmup: Duration,
    duration: Duration,
}

fn send_all(producer: &ThreadedProducer<LatencyContext>, plan: &SendPlan) -> anyhow::Result<()> {
    let payload = letters_payload(plan.record_size);
    let warmup_ns = plan.warmup.as_nanos() as u64;
    let deadline = plan.warmup + plan.duration;
    let (mut sent, mut measured) = (0u64, 0u64);
    loop {
        // One clock read per record: at full speed the clock is a visible share of the client's CPU.
        let mut now = plan.start.elapsed();
        if now >= deadline || (now >= plan.warmup && measured >= plan.records) {
            break;
        }
        if plan.rate > 0.0 {
            let due = Duration::from_secs_f64(sent as f64 / plan.rate);
            if due > now {
                std::thread::sleep(due - now);
                now = plan.start.elapsed();
            }
        }
        let sent_ns = now.as_nanos() as u64;
        let mut record =
            BaseRecord::<(), [u8], usize>::with_opaque_to(&plan.topic, sent_ns as usize).payload(&payload[..]);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), returned)) => {
                    record = returned;
                    std::thread::sleep(QUEUE_FULL_BACKOFF);
                }
                Err((error, _)) => bail!("send failed: {error}"),
            }
        }
        sent += 1;
        if sent_ns >= warmup_ns {
            measured += 1;
        }
    }
    producer.flush(FLUSH_TIMEOUT).with_context(|| format!("records still unacknowledged after {FLUSH_TIMEOUT:?}"))
}

#[cfg(test)]
mod tests {
    use super::share;

    #[test]
    fn shares_add_up_to_the_total() {
        let parts: Vec<u64> = (0..3).map(|i| share(10, 3, i)).collect();
        assert_eq!(parts, vec![4, 3, 3]);
        assert_eq!(share(u64::MAX, 3, 1), u64::MAX);
    }
}
