//! Options every subcommand shares, rdkafka client configurations, and topic setup.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::ClientConfig;

/// How long to wait for a new topic's partitions to get leaders.
const TOPIC_READY_TIMEOUT: Duration = Duration::from_secs(15);
/// Timeout of one metadata or watermark request.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(clap::Args, Clone, Debug)]
pub struct CommonArgs {
    /// Bootstrap broker address (loopback in the standard setup).
    #[arg(long, default_value = "127.0.0.1:9092")]
    pub brokers: String,
    /// Topic to use; created with --partitions when missing.
    #[arg(long, default_value = "keel-bench")]
    pub topic: String,
    /// Partitions of the topic when the harness creates it.
    #[arg(long, default_value_t = 8)]
    pub partitions: i32,
    /// Payload bytes per record (no key).
    #[arg(long, default_value_t = 1024)]
    pub record_size: usize,
    /// Records to measure (warm-up records come on top).
    #[arg(long)]
    pub records: Option<u64>,
    /// Longest measurement window in seconds; the run stops at --records or this, whichever comes first.
    #[arg(long)]
    pub duration_secs: Option<u64>,
    /// Seconds of load before measuring starts; records in this window are not counted.
    #[arg(long, default_value_t = 0)]
    pub warmup_secs: u64,
    /// Print one JSON object per run instead of a line.
    #[arg(long)]
    pub json: bool,
    /// A config of a topic the harness creates, as `name=value` (repeatable), e.g.
    /// `--topic-config flush.ms=1000`; an existing topic keeps its own.
    #[arg(long = "topic-config", value_name = "NAME=VALUE", value_parser = parse_topic_config)]
    pub topic_config: Vec<(String, String)>,
}

fn parse_topic_config(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((name, value)) if !name.is_empty() => Ok((name.to_string(), value.to_string())),
        _ => Err(format!("expected NAME=VALUE, got {text:?}")),
    }
}

impl CommonArgs {
    pub fn warmup(&self) -> Duration {
        Duration::from_secs(self.warmup_secs)
    }
}

/// Settings shared by every client the harness opens.
pub fn base_config(brokers: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers)
        .set("client.id", "keel-bench")
        .set("socket.nagle.disable", "true")
        .set("log_level", "4");
    config
}

/// A consumer that only uses manual assignment: Keel has no group coordinator yet, so nothing
/// may join a group or commit.
pub fn assign_only_consumer(brokers: &str) -> ClientConfig {
    let mut config = base_config(brokers);
    config
        .set("group.id", "keel-bench")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "false")
        .set("auto.offset.reset", "earliest");
    config
}

/// Creates the topic (with `--partitions` and the `--topic-config` settings) when it does not
/// exist and waits until all its partitions have leaders. Returns the partition count the
/// topic actually has (an existing topic keeps its own).
pub fn ensure_topic(common: &CommonArgs) -> anyhow::Result<i32> {
    let (brokers, topic, partitions) = (common.brokers.as_str(), common.topic.as_str(), common.partitions);
    if partitions < 1 {
        bail!("--partitions must be at least 1");
    }
    let probe: BaseConsumer = assign_only_consumer(brokers).create().context("cannot create a metadata client")?;
    if let Some(count) = partition_count(&probe, topic)? {
        return Ok(count);
    }
    let admin: AdminClient<DefaultClientContext> =
        base_config(brokers).create().context("cannot create the admin client")?;
    let new_topic = common
        .topic_config
        .iter()
        .fold(NewTopic::new(topic, partitions, TopicReplication::Fixed(1)), |t, (name, value)| t.set(name, value));
    let options = AdminOptions::new().operation_timeout(Some(REQUEST_TIMEOUT));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start a runtime for the admin client")?;
    let results = runtime
        .block_on(admin.create_topics([&new_topic], &options))
        .with_context(|| format!("cannot create topic {topic} on {brokers}: is the broker running?"))?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => bail!("cannot create topic {name}: {code}"),
        }
    }
    let deadline = Instant::now() + TOPIC_READY_TIMEOUT;
    loop {
        if let Some(count) = partition_count(&probe, topic)? {
            return Ok(count);
        }
        if Instant::now() > deadline {
            bail!("topic {topic} was created but its partitions have no leader after {TOPIC_READY_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The topic's partition count once every partition has a leader; `None` while it does not
/// exist or is still being set up.
fn partition_count(client: &BaseConsumer, topic: &str) -> anyhow::Result<Option<i32>> {
    let metadata = client
        .fetch_metadata(Some(topic), REQUEST_TIMEOUT)
        .with_context(|| format!("cannot fetch metadata for {topic}: is the broker running?"))?;
    let Some(found) = metadata.topics().iter().find(|t| t.name() == topic) else {
        return Ok(None);
    };
    if found.error().is_some() || found.partitions().is_empty() {
        return Ok(None);
    }
    if found.partitions().iter().any(|p| p.leader() < 0) {
        return Ok(None);
    }
    Ok(Some(found.partitions().len() as i32))
}

/// `(low, high)` watermarks of every partition, in partition order.
pub fn watermarks(client: &BaseConsumer, topic: &str, partitions: i32) -> anyhow::Result<Vec<(i64, i64)>> {
    (0..partitions)
        .map(|p| {
            client
                .fetch_watermarks(topic, p, REQUEST_TIMEOUT)
                .with_context(|| format!("cannot list offsets of {topic}-{p}"))
        })
        .collect()
}
