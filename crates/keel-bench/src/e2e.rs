//! `keel-bench e2e`: end-to-end latency at a fixed rate, in the manner of Kafka's
//! EndToEndLatency. One producer stamps each record with its send time (nanoseconds on the
//! monotonic clock since a start instant both sides share, since they run in one process); one
//! assigned consumer subtracts it from the time it receives the record.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};

use crate::client::{ensure_topic, watermarks, CommonArgs};
use crate::consume::consumer_config;
use crate::cpu::CpuMeter;
use crate::produce::{producer_config, DeliveryStats, LatencyContext, ProducerArgs};
use crate::report::{latency_histogram, letters_payload, record_latency_us, Latency, Report};

/// Measurement window when --duration-secs is not given.
pub const DURATION_SECS_DEFAULT: u64 = 30;
/// Pause between assigning the consumer and the first send, so connection setup is not measured.
const SETTLE: Duration = Duration::from_millis(500);
/// How long the consumer keeps reading after the last send for records still in flight.
const DRAIN_GRACE: Duration = Duration::from_secs(5);
const FLUSH_TIMEOUT: Duration = Duration::from_secs(30);
/// Bytes of the send timestamp at the front of each payload.
const STAMP_BYTES: usize = 8;

#[derive(clap::Args, Clone, Debug)]
pub struct E2eArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Records per second.
    #[arg(long, default_value_t = 5000)]
    pub rate: u64,
    /// Acknowledgements: 0, 1 or all.
    #[arg(long, default_value = "1", value_parser = ["0", "1", "all", "-1"])]
    pub acks: String,
    /// librdkafka linger.ms of the producer.
    #[arg(long, default_value_t = 0)]
    pub linger_ms: u64,
    /// fetch.wait.max.ms of the consumer; the broker answers sooner as soon as a record arrives.
    #[arg(long, default_value_t = 100)]
    pub fetch_wait_max_ms: u64,
    /// Broker process id: when given, the broker's CPU use is reported too.
    #[arg(long)]
    pub broker_pid: Option<u32>,
}

/// What the consumer thread saw.
struct Received {
    measured: AtomicU64,
    errors: AtomicU64,
}

pub fn run(args: &E2eArgs) -> anyhow::Result<Report> {
    let common = &args.common;
    if args.rate == 0 {
        bail!("--rate must be at least 1 record/s: e2e measures latency at a fixed load");
    }
    if common.record_size < STAMP_BYTES {
        bail!("--record-size must be at least {STAMP_BYTES} bytes to hold the send timestamp");
    }
    let partitions = ensure_topic(common)?;
    let duration = Duration::from_secs(common.duration_secs.unwrap_or(DURATION_SECS_DEFAULT));
    let records = common.records.unwrap_or(u64::MAX);
    let warmup = common.warmup();

    // Start every partition at its current end, so only this run's records are read.
    let consumer: BaseConsumer =
        consumer_config(&common.brokers, args.fetch_wait_max_ms).create().context("cannot create the consumer")?;
    let mut assignment = TopicPartitionList::new();
    for (partition, (_, high)) in watermarks(&consumer, &common.topic, partitions)?.into_iter().enumerate() {
        assignment.add_partition_offset(&common.topic, partition as i32, Offset::Offset(high))?;
    }
    consumer.assign(&assignment).context("cannot assign the partitions")?;

    let producer_args = ProducerArgs {
        acks: args.acks.clone(),
        linger_ms: args.linger_ms,
        batch_size: 1024 * 1024,
        compression: "none".into(),
        producers: 1,
        rate: args.rate,
        buffer_mb: 64,
        idempotence: false,
    };
    let acks = DeliveryStats::new();
    let cpu = CpuMeter::start(args.broker_pid);
    // Time zero is after the settle pause: the warm-up and the window count from here.
    let start = Instant::now() + SETTLE;
    let producer: ThreadedProducer<LatencyContext> = producer_config(&common.brokers, &producer_args)
        .create_with_context(LatencyContext::new(start, warmup, Arc::clone(&acks)))
        .context("cannot create the producer")?;

    let sending_done = Arc::new(AtomicBool::new(false));
    let sent_measured = Arc::new(AtomicU64::new(0));
    let received = Arc::new(Received { measured: AtomicU64::new(0), errors: AtomicU64::new(0) });
    let reader = {
        let (sending_done, sent_measured, received) =
            (Arc::clone(&sending_done), Arc::clone(&sent_measured), Arc::clone(&received));
        let warmup_ns = warmup.as_nanos() as u64;
        std::thread::Builder::new()
            .name("e2e-consumer".into())
            .spawn(move || {
                let mut histogram = latency_histogram();
                let mut drain_deadline = None;
                loop {
                    if sending_done.load(Ordering::Acquire) {
                        let deadline = *drain_deadline.get_or_insert_with(|| Instant::now() + DRAIN_GRACE);
                        let all_in = received.measured.load(Ordering::Relaxed) >= sent_measured.load(Ordering::Relaxed);
                        if all_in || Instant::now() > deadline {
                            break;
                        }
                    }
                    match consumer.poll(Duration::from_millis(10)) {
                        None => {}
                        Some(Err(_)) => {
                            received.errors.fetch_add(1, Ordering::Relaxed);
                        }
                        Some(Ok(message)) => {
                            let now_ns = Instant::now().saturating_duration_since(start).as_nanos() as u64;
                            let Some(stamp) = message.payload().and_then(|p| p.get(..STAMP_BYTES)) else {
                                continue;
                            };
                            let sent_ns = u64::from_le_bytes(stamp.try_into().expect("slice of STAMP_BYTES"));
                            if sent_ns >= warmup_ns {
                                received.measured.fetch_add(1, Ordering::Relaxed);
                                record_latency_us(&mut histogram, now_ns.saturating_sub(sent_ns) / 1000);
                            }
                        }
                    }
                }
                histogram
            })
            .context("cannot start the consumer thread")?
    };

    std::thread::sleep(start.saturating_duration_since(Instant::now()));
    let mut payload = letters_payload(common.record_size);
    let interval_secs = 1.0 / args.rate as f64;
    let deadline = warmup + duration;
    let (mut sent, mut measured, mut window_start) = (0u64, 0u64, None);
    let mut send_error = None;
    loop {
        let now = start.elapsed();
        if now >= deadline || measured >= records {
            break;
        }
        let due = Duration::from_secs_f64(sent as f64 * interval_secs);
        if due > now {
            std::thread::sleep(due - now);
        }
        let sent_ns = start.elapsed().as_nanos() as u64;
        payload[..STAMP_BYTES].copy_from_slice(&sent_ns.to_le_bytes());
        let mut record =
            BaseRecord::<(), [u8], usize>::with_opaque_to(&common.topic, sent_ns as usize).payload(&payload[..]);
        let error = loop {
            match producer.send(record) {
                Ok(()) => break None,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), returned)) => {
                    record = returned;
                    std::thread::sleep(Duration::from_micros(50));
                }
                Err((error, _)) => break Some(error),
            }
        };
        if let Some(error) = error {
            send_error = Some(error);
            break;
        }
        sent += 1;
        if sent_ns >= warmup.as_nanos() as u64 {
            window_start.get_or_insert(sent_ns);
            measured += 1;
            sent_measured.store(measured, Ordering::Relaxed);
        }
    }
    let window_end_ns = start.elapsed().as_nanos() as u64;
    let flushed = producer.flush(FLUSH_TIMEOUT);
    sending_done.store(true, Ordering::Release);
    let histogram = reader.join().map_err(|_| anyhow::anyhow!("the consumer thread panicked"))?;
    if let Some(error) = send_error {
        bail!("send failed: {error}");
    }
    flushed.with_context(|| format!("records still unacknowledged after {FLUSH_TIMEOUT:?}"))?;

    let elapsed_secs = window_start.map_or(0.0, |w| (window_end_ns - w) as f64 / 1e9);
    let received_measured = received.measured.load(Ordering::Relaxed);
    let mut extra = vec![
        ("sent", serde_json::json!(measured)),
        ("target rate", serde_json::json!(args.rate)),
        ("achieved rate", serde_json::json!((measured as f64 / elapsed_secs.max(1e-9)).round())),
    ];
    if let Some(ack) = acks.latency() {
        extra.push(("ack p50 ms", serde_json::json!(ack.p50_ms)));
        extra.push(("ack p99 ms", serde_json::json!(ack.p99_ms)));
    }
    extra.push(("partitions", serde_json::json!(partitions)));
    extra.extend(cpu.finish());
    if let Some(error) = acks.first_error() {
        extra.push(("first error", serde_json::json!(error)));
    }
    Ok(Report {
        name: format!("e2e acks={} linger={}ms", producer_args.acks_label(), args.linger_ms),
        records: received_measured,
        payload_bytes: received_measured * common.record_size as u64,
        elapsed_secs,
        latency: Latency::from_histogram(&histogram),
        latency_kind: "send to receive",
        // Records sent in the window but never read, plus failed deliveries and fetch errors.
        errors: measured.saturating_sub(received_measured) + acks.errors() + received.errors.load(Ordering::Relaxed),
        extra,
    })
}
