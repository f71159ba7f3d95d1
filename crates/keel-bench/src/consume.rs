//! `keel-bench consume`: reads a topic from the start of every partition through manual
//! assignment, in the manner of Kafka's kafka-consumer-perf-test.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};

use crate::client::{assign_only_consumer, ensure_topic, watermarks, CommonArgs};
use crate::cpu::CpuMeter;
use crate::report::Report;

/// Longest run when --duration-secs is not given.
const DURATION_SECS_MAX: u64 = 300;

#[derive(clap::Args, Clone, Debug)]
pub struct ConsumeArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// fetch.wait.max.ms: how long the broker may hold a fetch that has too little data.
    #[arg(long, default_value_t = 10)]
    pub fetch_wait_max_ms: u64,
    /// Consumer instances, each on its own thread and connection with a share of the partitions.
    #[arg(long, default_value_t = 1)]
    pub consumers: usize,
    /// Broker process id: when given, the broker's CPU use is reported too.
    #[arg(long)]
    pub broker_pid: Option<u32>,
}

pub fn consumer_config(brokers: &str, fetch_wait_max_ms: u64) -> rdkafka::ClientConfig {
    let mut config = assign_only_consumer(brokers);
    config
        .set("fetch.max.bytes", (50 * 1024 * 1024).to_string())
        .set("max.partition.fetch.bytes", (10 * 1024 * 1024).to_string())
        .set("receive.message.max.bytes", (64 * 1024 * 1024).to_string())
        .set("fetch.wait.max.ms", fetch_wait_max_ms.to_string())
        .set("fetch.min.bytes", "1")
        // Keep prefetching: librdkafka pauses a partition's fetches for fetch.queue.backoff.ms
        // (default 1 s) once its local queue passes these thresholds.
        .set("queued.min.messages", "1000000")
        .set("queued.max.messages.kbytes", (512 * 1024).to_string())
        .set("fetch.queue.backoff.ms", "1")
        .set("check.crcs", "false");
    config
}

pub fn run(args: &ConsumeArgs) -> anyhow::Result<Report> {
    let common = &args.common;
    if args.consumers == 0 {
        bail!("--consumers must be at least 1");
    }
    let partitions = ensure_topic(common)?;
    let probe: BaseConsumer =
        consumer_config(&common.brokers, args.fetch_wait_max_ms).create().context("cannot create the consumer")?;
    let marks = watermarks(&probe, &common.topic, partitions)?;
    drop(probe);
    let available: u64 = marks.iter().map(|(low, high)| (high - low).max(0) as u64).sum();
    if available == 0 {
        bail!("topic {} is empty: run `keel-bench produce --topic {}` first", common.topic, common.topic);
    }
    let wanted = common.records.map_or(available, |r| r.min(available));
    let plan = Arc::new(ReadPlan {
        wanted,
        seen: AtomicU64::new(0),
        start: Instant::now(),
        warmup: common.warmup(),
        duration: Duration::from_secs(common.duration_secs.unwrap_or(DURATION_SECS_MAX)),
    });

    let cpu = CpuMeter::start(args.broker_pid);
    // Consumer i reads partitions i, i + consumers, ...; each has its own connection, so
    // several consumers keep several fetches in flight.
    let threads: Vec<_> = (0..args.consumers)
        .map(|index| {
            let mut assignment = TopicPartitionList::new();
            let mut own_available = 0;
            for (partition, (low, high)) in marks.iter().enumerate().skip(index).step_by(args.consumers) {
                assignment.add_partition_offset(&common.topic, partition as i32, Offset::Offset(*low))?;
                own_available += (high - low).max(0) as u64;
            }
            let config = consumer_config(&common.brokers, args.fetch_wait_max_ms);
            let plan = Arc::clone(&plan);
            std::thread::Builder::new()
                .name(format!("consumer-{index}"))
                .spawn(move || -> anyhow::Result<ReadOutcome> {
                    let consumer: BaseConsumer = config.create().context("cannot create the consumer")?;
                    consumer.assign(&assignment).context("cannot assign the partitions")?;
                    read_assigned(&consumer, &plan, own_available)
                })
                .context("cannot start a consumer thread")
        })
        .collect::<anyhow::Result<_>>()?;
    let mut total = ReadOutcome::default();
    for thread in threads {
        let outcome = thread.join().map_err(|_| anyhow::anyhow!("a consumer thread panicked"))??;
        total.seen += outcome.seen;
        total.measured += outcome.measured;
        total.bytes += outcome.bytes;
        total.first_record = match (total.first_record, outcome.first_record) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        total.window_start = match (total.window_start, outcome.window_start) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        total.last_record = total.last_record.max(outcome.last_record);
    }
    let elapsed_secs = total.window_start.map_or(0.0, |w| total.last_record.saturating_sub(w).as_secs_f64());
    let mut extra = vec![(
        "first record ms",
        serde_json::json!(total.first_record.map_or(-1.0, |d| (d.as_secs_f64() * 1e5).round() / 100.0)),
    )];
    extra.push(("partitions", serde_json::json!(partitions)));
    extra.push(("consumers", serde_json::json!(args.consumers)));
    extra.extend(cpu.finish());
    Ok(Report {
        name: "consume".into(),
        records: total.measured,
        payload_bytes: total.bytes,
        elapsed_secs,
        latency: None,
        latency_kind: "",
        // Records that were there to read but did not arrive before the time limit.
        errors: wanted.saturating_sub(total.seen),
        extra,
    })
}

/// What all consumer threads of one run share.
struct ReadPlan {
    /// Records to read over all consumers, warm-up included.
    wanted: u64,
    /// Records read so far over all consumers, updated every `SEEN_PUBLISH_EVERY` records.
    seen: AtomicU64,
    start: Instant,
    warmup: Duration,
    duration: Duration,
}

/// How often a consumer adds its count to the shared total (a shared counter per record
/// would bounce its cache line between the cores).
const SEEN_PUBLISH_EVERY: u64 = 1024;

/// What one consumer read; times are offsets from `ReadPlan::start`.
#[derive(Default)]
struct ReadOutcome {
    seen: u64,
    measured: u64,
    bytes: u64,
    first_record: Option<Duration>,
    window_start: Option<Duration>,
    last_record: Duration,
}

fn read_assigned(consumer: &BaseConsumer, plan: &ReadPlan, own_available: u64) -> anyhow::Result<ReadOutcome> {
    let mut out = ReadOutcome::default();
    let mut unpublished = 0;
    let deadline = plan.warmup + plan.duration;
    while out.seen < own_available
        && plan.seen.load(Ordering::Relaxed) + unpublished < plan.wanted
        && plan.start.elapsed() < deadline
    {
        let Some(result) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let message = result.context("fetch failed")?;
        let now = plan.start.elapsed();
        out.first_record.get_or_insert(now);
        out.seen += 1;
        out.last_record = now;
        unpublished += 1;
        if unpublished == SEEN_PUBLISH_EVERY {
            plan.seen.fetch_add(unpublished, Ordering::Relaxed);
            unpublished = 0;
        }
        if now < plan.warmup {
            continue;
        }
        // The window opens at the first record after the warm-up (at assign without one).
        out.window_start.get_or_insert(if plan.warmup.is_zero() { Duration::ZERO } else { now });
        out.measured += 1;
        out.bytes += message.payload_len() as u64;
    }
    plan.seen.fetch_add(unpublished, Ordering::Relaxed);
    Ok(out)
}
