//! Broker and topic configuration, by Kafka's names.
//!
//! Every config Keel knows is described once in [`BROKER_CONFIGS`] or [`TOPIC_CONFIGS`] with its
//! type, default, and (for topic configs) the broker configs that supply its default, in Kafka's
//! order of precedence. Values resolve through layers like Kafka's: a topic's own config, then
//! dynamic per-broker, dynamic cluster-default and static broker configs, then the default.
//! DescribeConfigs reports exactly these layers as `source` and `synonyms`.

use std::collections::BTreeMap;
use std::path::Path;

use keel_cluster::{MetadataImage, NodeId};

/// Kafka's config types as DescribeConfigs v3+ reports them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigType {
    Boolean = 1,
    String = 2,
    Int = 3,
    Short = 4,
    Long = 5,
    Double = 6,
    List = 7,
    Password = 9,
}

/// Kafka's `ConfigSource` codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigSource {
    TopicConfig = 1,
    DynamicBrokerConfig = 2,
    DynamicDefaultBrokerConfig = 3,
    StaticBrokerConfig = 4,
    DefaultConfig = 5,
}

pub struct BrokerConfigDef {
    pub name: &'static str,
    pub kind: ConfigType,
    /// `None`: no default (Kafka reports a null value).
    pub default: Option<&'static str>,
    /// Can be changed at run time through AlterConfigs.
    pub dynamic: bool,
    pub doc: &'static str,
}

pub struct TopicConfigDef {
    pub name: &'static str,
    pub kind: ConfigType,
    pub default: &'static str,
    /// Broker configs that set this topic config's default, highest precedence first, with a
    /// conversion from the broker value to the topic value's unit.
    pub synonyms: &'static [(&'static str, Unit)],
    pub doc: &'static str,
}

/// How a broker synonym's value converts to the topic config's unit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    Same,
    MinutesToMs,
    HoursToMs,
}

impl Unit {
    fn convert(self, value: &str) -> String {
        let factor = match self {
            Unit::Same => return value.to_string(),
            Unit::MinutesToMs => 60_000,
            Unit::HoursToMs => 3_600_000,
        };
        match value.trim().parse::<i64>() {
            Ok(v) if v < 0 => v.to_string(),
            Ok(v) => v.saturating_mul(factor).to_string(),
            Err(_) => value.to_string(),
        }
    }
}

const LONG_MAX: &str = "9223372036854775807";

macro_rules! broker {
    ($name:expr, $kind:ident, $default:expr, $dynamic:expr, $doc:expr) => {
        BrokerConfigDef { name: $name, kind: ConfigType::$kind, default: $default, dynamic: $dynamic, doc: $doc }
    };
}

pub static BROKER_CONFIGS: &[BrokerConfigDef] = &[
    broker!("node.id", Int, Some("1"), false, "The node id of this server."),
    broker!("broker.id", Int, Some("1"), false, "The broker id of this server (same as node.id)."),
    broker!("broker.rack", String, None, false, "The rack of this broker, for rack-aware replica placement."),
    broker!("process.roles", List, Some("broker,controller"), false, "The roles this node plays."),
    broker!("broker.session.timeout.ms", Int, Some("9000"), false, "A broker that sends no heartbeat to the active controller for this long is fenced."),
    broker!("broker.heartbeat.interval.ms", Int, Some("2000"), false, "How often a broker sends a heartbeat to the active controller."),
    broker!("controller.quorum.voters", List, None, false, "The controller quorum: id@host:port of every voter (empty: a single node)."),
    broker!("listeners", List, Some("PLAINTEXT://127.0.0.1:9092"), false, "Listener addresses."),
    broker!("advertised.listeners", List, None, false, "Addresses given to clients."),
    broker!("log.dirs", String, Some("./keel-data"), false, "The directory holding the log data."),
    broker!("num.partitions", Int, Some("1"), true, "Default number of partitions for new topics."),
    broker!("default.replication.factor", Int, Some("1"), true, "Default replication factor for automatically created topics."),
    broker!("auto.create.topics.enable", Boolean, Some("true"), false, "Create topics automatically on Metadata and Produce requests."),
    broker!("delete.topic.enable", Boolean, Some("true"), false, "Allow DeleteTopics."),
    broker!("message.max.bytes", Int, Some("1048588"), true, "Largest record batch size allowed."),
    broker!("socket.request.max.bytes", Int, Some("104857600"), false, "Largest request frame accepted."),
    broker!("connections.max.idle.ms", Long, Some("600000"), false, "Close connections that send nothing for this long."),
    broker!("fetch.max.bytes", Int, Some("57671680"), true, "Largest Fetch response (record bytes) the broker returns."),
    broker!("min.insync.replicas", Int, Some("1"), true, "Minimum in-sync replicas for acks=all."),
    broker!("compression.type", String, Some("producer"), true, "Final compression type for a topic."),
    broker!("log.cleanup.policy", List, Some("delete"), true, "Default cleanup policy."),
    broker!("log.segment.bytes", Int, Some("1073741824"), true, "Maximum size of a single log segment."),
    broker!("log.roll.ms", Long, None, true, "Maximum time before a new segment is rolled out (ms)."),
    broker!("log.roll.hours", Int, Some("168"), true, "Maximum time before a new segment is rolled out (hours)."),
    broker!("log.roll.jitter.ms", Long, None, true, "Maximum jitter subtracted from segment roll time (ms)."),
    broker!("log.roll.jitter.hours", Int, Some("0"), true, "Maximum jitter subtracted from segment roll time (hours)."),
    broker!("log.retention.ms", Long, None, true, "How long to keep a log segment before deleting it (ms)."),
    broker!("log.retention.minutes", Int, None, true, "How long to keep a log segment before deleting it (minutes)."),
    broker!("log.retention.hours", Int, Some("168"), true, "How long to keep a log segment before deleting it (hours)."),
    broker!("log.retention.bytes", Long, Some("-1"), true, "Maximum size of a partition log before deleting old segments."),
    broker!("log.retention.check.interval.ms", Long, Some("300000"), false, "How often retention is checked."),
    broker!("log.index.interval.bytes", Int, Some("4096"), true, "Bytes of log between offset index entries."),
    broker!("log.index.size.max.bytes", Int, Some("10485760"), true, "Maximum size of an offset index."),
    broker!("log.flush.interval.messages", Long, Some(LONG_MAX), true, "Records accumulated before a flush."),
    broker!("log.flush.interval.ms", Long, None, true, "Maximum time a record stays unflushed (ms)."),
    broker!("log.flush.offset.checkpoint.interval.ms", Int, Some("60000"), false, "How often the recovery point is checkpointed."),
    broker!("log.segment.delete.delay.ms", Long, Some("60000"), true, "Delay before a deleted segment file is removed."),
    broker!("log.message.timestamp.type", String, Some("CreateTime"), true, "CreateTime or LogAppendTime."),
    broker!("log.message.timestamp.before.max.ms", Long, Some(LONG_MAX), true, "Maximum age of a record timestamp."),
    broker!("log.message.timestamp.after.max.ms", Long, Some("3600000"), true, "Maximum future skew of a record timestamp."),
    broker!("log.cleaner.enable", Boolean, Some("true"), false, "Run the log cleaner, which compacts topics with cleanup.policy=compact."),
    broker!("log.cleaner.threads", Int, Some("1"), false, "Threads of the log cleaner."),
    broker!("log.cleaner.dedupe.buffer.size", Long, Some("134217728"), false, "Memory of the cleaners' offset maps, shared by all cleaner threads."),
    broker!("log.cleaner.io.buffer.size", Int, Some("524288"), false, "I/O buffer memory of the cleaner threads."),
    broker!("log.cleaner.backoff.ms", Long, Some("15000"), false, "How long a cleaner thread sleeps when no log needs cleaning."),
    broker!("log.cleaner.delete.retention.ms", Long, Some("86400000"), true, "How long tombstones are kept on compacted topics."),
    broker!("log.cleaner.min.compaction.lag.ms", Long, Some("0"), true, "Minimum time a record stays uncompacted."),
    broker!("log.cleaner.max.compaction.lag.ms", Long, Some(LONG_MAX), true, "Maximum time a record stays uncompacted."),
    broker!("log.cleaner.min.cleanable.ratio", Double, Some("0.5"), true, "Minimum dirty ratio for a log to be cleaned."),
    broker!("log.preallocate", Boolean, Some("false"), true, "Preallocate segment files."),
    broker!("unclean.leader.election.enable", Boolean, Some("false"), true, "Allow an out-of-sync replica to become leader."),
    broker!("offsets.topic.num.partitions", Int, Some("50"), false, "Partitions of __consumer_offsets."),
    broker!("offsets.topic.replication.factor", Short, Some("1"), false, "Replication factor of __consumer_offsets."),
    broker!("offsets.topic.segment.bytes", Int, Some("104857600"), false, "Segment size of __consumer_offsets, set when it is created."),
    broker!("producer.id.expiration.ms", Int, Some("86400000"), true, "How long a producer's state is kept after its last write."),
    broker!("producer.id.expiration.check.interval.ms", Int, Some("600000"), false, "How often expired producer state is removed."),
    broker!("transaction.max.timeout.ms", Int, Some("900000"), false, "Largest transaction timeout a producer may ask for."),
    broker!("transaction.abort.timed.out.transaction.cleanup.interval.ms", Int, Some("10000"), false, "How often open transactions past their timeout are aborted."),
    broker!("transaction.state.log.num.partitions", Int, Some("50"), false, "Partitions of __transaction_state."),
    broker!("transaction.state.log.replication.factor", Short, Some("1"), false, "Replication factor of __transaction_state."),
    broker!("transaction.state.log.segment.bytes", Int, Some("104857600"), false, "Segment size of __transaction_state, set when it is created."),
    broker!("keel.fetch.sendfile.enable", Boolean, Some("true"), false, "Keel: send fetched records with sendfile(2) (no copy through user space); false reads them into a buffer first."),
    broker!("group.initial.rebalance.delay.ms", Int, Some("3000"), false, "Delay of the first rebalance of a new group."),
    broker!("group.min.session.timeout.ms", Int, Some("6000"), false, "Smallest session timeout a group member may ask for."),
    broker!("group.max.session.timeout.ms", Int, Some("1800000"), false, "Largest session timeout a group member may ask for."),
    broker!("offsets.retention.minutes", Int, Some("10080"), false, "How long the committed offsets of an empty group are kept."),
    broker!("group.consumer.heartbeat.interval.ms", Int, Some("5000"), false, "Heartbeat interval of consumer-protocol (KIP-848) group members."),
    broker!("group.consumer.session.timeout.ms", Int, Some("45000"), false, "Session timeout of consumer-protocol (KIP-848) group members."),
];

macro_rules! topic {
    ($name:expr, $kind:ident, $default:expr, [$($syn:expr => $unit:ident),*], $doc:expr) => {
        TopicConfigDef {
            name: $name,
            kind: ConfigType::$kind,
            default: $default,
            synonyms: &[$(($syn, Unit::$unit)),*],
            doc: $doc,
        }
    };
}

pub static TOPIC_CONFIGS: &[TopicConfigDef] = &[
    topic!("cleanup.policy", List, "delete", ["log.cleanup.policy" => Same], "delete and/or compact."),
    topic!("compression.type", String, "producer", ["compression.type" => Same], "Final compression type."),
    topic!("delete.retention.ms", Long, "86400000", ["log.cleaner.delete.retention.ms" => Same], "Tombstone retention on compacted topics."),
    topic!("file.delete.delay.ms", Long, "60000", ["log.segment.delete.delay.ms" => Same], "Delay before deleting a file."),
    topic!("flush.messages", Long, LONG_MAX, ["log.flush.interval.messages" => Same], "Records between forced fsyncs."),
    topic!("flush.ms", Long, LONG_MAX, ["log.flush.interval.ms" => Same], "Time between forced fsyncs."),
    topic!("index.interval.bytes", Int, "4096", ["log.index.interval.bytes" => Same], "Bytes between offset index entries."),
    topic!("max.compaction.lag.ms", Long, LONG_MAX, ["log.cleaner.max.compaction.lag.ms" => Same], "Maximum time a record stays uncompacted."),
    topic!("max.message.bytes", Int, "1048588", ["message.max.bytes" => Same], "Largest record batch size allowed."),
    topic!("message.timestamp.after.max.ms", Long, "3600000", ["log.message.timestamp.after.max.ms" => Same], "Maximum future skew of a record timestamp."),
    topic!("message.timestamp.before.max.ms", Long, LONG_MAX, ["log.message.timestamp.before.max.ms" => Same], "Maximum age of a record timestamp."),
    topic!("message.timestamp.type", String, "CreateTime", ["log.message.timestamp.type" => Same], "CreateTime or LogAppendTime."),
    topic!("min.cleanable.dirty.ratio", Double, "0.5", ["log.cleaner.min.cleanable.ratio" => Same], "Minimum dirty ratio for cleaning."),
    topic!("min.compaction.lag.ms", Long, "0", ["log.cleaner.min.compaction.lag.ms" => Same], "Minimum time a record stays uncompacted."),
    topic!("min.insync.replicas", Int, "1", ["min.insync.replicas" => Same], "Minimum in-sync replicas for acks=all."),
    topic!("preallocate", Boolean, "false", ["log.preallocate" => Same], "Preallocate segment files."),
    topic!("retention.bytes", Long, "-1", ["log.retention.bytes" => Same], "Maximum partition size before old segments are deleted."),
    topic!("retention.ms", Long, "604800000", ["log.retention.ms" => Same, "log.retention.minutes" => MinutesToMs, "log.retention.hours" => HoursToMs], "How long records are kept."),
    topic!("segment.bytes", Int, "1073741824", ["log.segment.bytes" => Same], "Segment file size."),
    topic!("segment.index.bytes", Int, "10485760", ["log.index.size.max.bytes" => Same], "Offset index size."),
    topic!("segment.jitter.ms", Long, "0", ["log.roll.jitter.ms" => Same, "log.roll.jitter.hours" => HoursToMs], "Jitter of segment roll time."),
    topic!("segment.ms", Long, "604800000", ["log.roll.ms" => Same, "log.roll.hours" => HoursToMs], "Time after which a segment is rolled."),
    topic!("unclean.leader.election.enable", Boolean, "false", ["unclean.leader.election.enable" => Same], "Allow unclean leader election."),
];

pub fn broker_def(name: &str) -> Option<&'static BrokerConfigDef> {
    BROKER_CONFIGS.iter().find(|def| def.name == name)
}

pub fn topic_def(name: &str) -> Option<&'static TopicConfigDef> {
    TOPIC_CONFIGS.iter().find(|def| def.name == name)
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("unknown config {name}: see `keel server --help` for the configs Keel knows")]
    Unknown { name: String },
    #[error("invalid value {value:?} for {name}: {reason}")]
    Invalid { name: String, value: String, reason: String },
    #[error("config {name} cannot be changed while the broker runs; set it in the config file or with --set")]
    ReadOnly { name: String },
    #[error("cannot read config file {path}: {reason}")]
    File { path: String, reason: String },
}

/// Checks that `value` parses as the config's type (and the few ranges Kafka enforces).
pub fn validate_value(name: &str, kind: ConfigType, value: &str) -> Result<(), ConfigError> {
    let invalid = |reason: &str| ConfigError::Invalid {
        name: name.to_string(),
        value: value.to_string(),
        reason: reason.to_string(),
    };
    let v = value.trim();
    match kind {
        ConfigType::Boolean => {
            if !v.eq_ignore_ascii_case("true") && !v.eq_ignore_ascii_case("false") {
                return Err(invalid("expected true or false"));
            }
        }
        ConfigType::Int => {
            v.parse::<i32>().map_err(|_| invalid("expected a 32-bit integer"))?;
        }
        ConfigType::Short => {
            v.parse::<i16>().map_err(|_| invalid("expected a 16-bit integer"))?;
        }
        ConfigType::Long => {
            v.parse::<i64>().map_err(|_| invalid("expected a 64-bit integer"))?;
        }
        ConfigType::Double => {
            v.parse::<f64>().map_err(|_| invalid("expected a number"))?;
        }
        ConfigType::String | ConfigType::List | ConfigType::Password => {}
    }
    let below = |min: i64| v.parse::<i64>().map_or(true, |n| n < min);
    // Each arm's guard is the violation; a value that passes falls through to the last arm.
    match name {
        "cleanup.policy" | "log.cleanup.policy"
            if v.split(',').map(str::trim).any(|p| p != "delete" && p != "compact") =>
        {
            return Err(invalid("expected delete, compact or both"));
        }
        "compression.type" if !["producer", "uncompressed", "gzip", "snappy", "lz4", "zstd"].contains(&v) => {
            return Err(invalid("expected producer, uncompressed, gzip, snappy, lz4 or zstd"));
        }
        "message.timestamp.type" | "log.message.timestamp.type" if v != "CreateTime" && v != "LogAppendTime" => {
            return Err(invalid("expected CreateTime or LogAppendTime"));
        }
        "segment.bytes"
        | "log.segment.bytes"
        | "offsets.topic.segment.bytes"
        | "transaction.state.log.segment.bytes"
            if below(14) =>
        {
            return Err(invalid("must be at least 14"))
        }
        "min.cleanable.dirty.ratio" | "log.cleaner.min.cleanable.ratio"
            if v.parse::<f64>().map_or(true, |r| !(0.0..=1.0).contains(&r)) =>
        {
            return Err(invalid("must be between 0 and 1"));
        }
        "max.compaction.lag.ms" | "log.cleaner.max.compaction.lag.ms" if below(1) => {
            return Err(invalid("must be at least 1"));
        }
        "retention.ms" if below(-1) => return Err(invalid("must be at least -1 (unlimited)")),
        "file.delete.delay.ms"
        | "log.segment.delete.delay.ms"
        | "delete.retention.ms"
        | "log.cleaner.delete.retention.ms"
        | "min.compaction.lag.ms"
        | "log.cleaner.min.compaction.lag.ms"
        | "log.cleaner.threads"
        | "log.cleaner.io.buffer.size"
        | "log.cleaner.backoff.ms"
        | "message.timestamp.before.max.ms"
        | "message.timestamp.after.max.ms"
        | "log.message.timestamp.before.max.ms"
        | "log.message.timestamp.after.max.ms"
            if below(0) =>
        {
            return Err(invalid("must be at least 0"));
        }
        "log.retention.check.interval.ms"
        | "num.partitions"
        | "min.insync.replicas"
        | "max.message.bytes"
        | "message.max.bytes"
        | "socket.request.max.bytes"
            if below(1) =>
        {
            return Err(invalid("must be at least 1"));
        }
        _ => {}
    }
    Ok(())
}

/// The static broker configuration: what the config file and `--set` gave.
#[derive(Clone, Debug, Default)]
pub struct StaticConfig {
    values: BTreeMap<String, String>,
}

impl StaticConfig {
    /// Sets one config, checking its name and value.
    pub fn set(&mut self, name: &str, value: &str) -> Result<(), ConfigError> {
        let name = name.trim();
        let def = broker_def(name).ok_or_else(|| ConfigError::Unknown { name: name.into() })?;
        validate_value(name, def.kind, value)?;
        self.values.insert(name.to_string(), value.trim().to_string());
        Ok(())
    }

    /// Loads a Kafka `server.properties` file, or a TOML file of `key = value` pairs when the
    /// name ends in `.toml`.
    pub fn load_file(&mut self, path: &Path) -> Result<(), ConfigError> {
        let file_error = |reason: String| ConfigError::File { path: path.display().to_string(), reason };
        let text = std::fs::read_to_string(path).map_err(|e| file_error(e.to_string()))?;
        if path.extension().is_some_and(|ext| ext == "toml") {
            let table: toml::Table = text.parse().map_err(|e: toml::de::Error| file_error(e.to_string()))?;
            for (key, value) in flatten_toml("", &table) {
                self.set(&key, &value)?;
            }
            return Ok(());
        }
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') || line.starts_with('!') {
                continue;
            }
            let Some((key, value)) = line.split_once(['=', ':']) else {
                return Err(file_error(format!("line {line:?} is not key=value")));
            };
            self.set(key, value)?;
        }
        Ok(())
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }
}

fn flatten_toml(prefix: &str, table: &toml::Table) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (key, value) in table {
        let name = if prefix.is_empty() { key.clone() } else { format!("{prefix}.{key}") };
        match value {
            toml::Value::Table(inner) => out.extend(flatten_toml(&name, inner)),
            toml::Value::String(s) => out.push((name, s.clone())),
            other => out.push((name, other.to_string())),
        }
    }
    out
}

/// One resolved value with where it came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolved {
    pub name: String,
    pub value: Option<String>,
    pub source: ConfigSource,
}

/// Resolves broker and topic configs through Kafka's layers.
pub struct ConfigView<'a> {
    pub node_id: NodeId,
    pub statics: &'a StaticConfig,
    pub image: &'a MetadataImage,
}

impl ConfigView<'_> {
    /// Every layer that sets broker config `name`, highest precedence first, ending with its
    /// default (when it has one).
    pub fn broker_layers(&self, name: &str) -> Vec<Resolved> {
        let mut layers = Vec::new();
        let mut push = |value: Option<&str>, source| {
            if let Some(value) = value {
                layers.push(Resolved { name: name.into(), value: Some(value.into()), source });
            }
        };
        let dynamic =
            |node: Option<NodeId>| self.image.broker_configs.get(&node).and_then(|c| c.get(name)).map(String::as_str);
        push(dynamic(Some(self.node_id)), ConfigSource::DynamicBrokerConfig);
        push(dynamic(None), ConfigSource::DynamicDefaultBrokerConfig);
        push(self.statics.get(name), ConfigSource::StaticBrokerConfig);
        if let Some(def) = broker_def(name) {
            let default = match name {
                "node.id" | "broker.id" => Some(self.node_id.to_string()),
                _ => def.default.map(str::to_string),
            };
            if let Some(default) = default {
                layers.push(Resolved { name: name.into(), value: Some(default), source: ConfigSource::DefaultConfig });
            }
        }
        layers
    }

    /// The effective value of a broker config.
    pub fn broker(&self, name: &str) -> Option<String> {
        self.broker_layers(name).into_iter().next().and_then(|r| r.value)
    }

    pub fn broker_i64(&self, name: &str) -> Option<i64> {
        self.broker(name).and_then(|v| v.trim().parse().ok())
    }

    pub fn broker_bool(&self, name: &str) -> bool {
        self.broker(name).is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
    }

    /// Every layer of topic config `name` for `topic`: the topic's own value, then the broker
    /// synonyms' layers (converted to the topic config's unit), then the topic default.
    pub fn topic_layers(&self, topic: &str, name: &str) -> Vec<Resolved> {
        let Some(def) = topic_def(name) else { return Vec::new() };
        let mut layers = Vec::new();
        if let Some(value) = self.image.topic(topic).and_then(|t| t.configs.get(name)) {
            layers.push(Resolved { name: name.into(), value: Some(value.clone()), source: ConfigSource::TopicConfig });
        }
        for (synonym, unit) in def.synonyms {
            for layer in self.broker_layers(synonym) {
                if layer.source == ConfigSource::DefaultConfig {
                    continue;
                }
                layers.push(Resolved { value: layer.value.map(|v| unit.convert(&v)), ..layer });
            }
        }
        layers.push(Resolved {
            name: def.synonyms.first().map_or(name, |(s, _)| s).to_string(),
            value: Some(def.default.to_string()),
            source: ConfigSource::DefaultConfig,
        });
        layers
    }

    /// The effective value of a topic config.
    pub fn topic(&self, topic: &str, name: &str) -> Option<String> {
        self.topic_layers(topic, name).into_iter().next().and_then(|r| r.value)
    }

    pub fn topic_i64(&self, topic: &str, name: &str) -> Option<i64> {
        self.topic(topic, name).and_then(|v| v.trim().parse().ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keel_cluster::{ConfigResource, MetadataRecord};

    #[test]
    fn topic_config_falls_back_through_broker_synonyms() {
        let mut statics = StaticConfig::default();
        statics.set("log.retention.hours", "1").expect("valid");
        let mut image = MetadataImage::default();
        let view = ConfigView { node_id: 1, statics: &statics, image: &image };
        assert_eq!(view.topic("t", "retention.ms").as_deref(), Some("3600000"));
        let layers = view.topic_layers("t", "retention.ms");
        assert_eq!(layers[0].source, ConfigSource::StaticBrokerConfig);
        assert_eq!(layers[0].name, "log.retention.hours");

        image.apply(&MetadataRecord::Config {
            resource: ConfigResource::Broker(None),
            name: "log.retention.ms".into(),
            value: Some("5000".into()),
        });
        let view = ConfigView { node_id: 1, statics: &statics, image: &image };
        assert_eq!(view.topic("t", "retention.ms").as_deref(), Some("5000"));
        assert_eq!(view.topic_layers("t", "retention.ms")[0].source, ConfigSource::DynamicDefaultBrokerConfig);
        assert_eq!(view.topic("t", "segment.bytes").as_deref(), Some("1073741824"));
    }

    #[test]
    fn retention_ms_prefers_ms_then_minutes_then_hours() {
        let image = MetadataImage::default();
        let mut statics = StaticConfig::default();
        statics.set("log.retention.hours", "2").expect("valid");
        let resolve = |statics: &StaticConfig| {
            let view = ConfigView { node_id: 1, statics, image: &image };
            (view.topic("t", "retention.ms"), view.topic_layers("t", "retention.ms")[0].name.clone())
        };
        assert_eq!(resolve(&statics), (Some("7200000".into()), "log.retention.hours".into()));
        statics.set("log.retention.minutes", "30").expect("valid");
        assert_eq!(resolve(&statics), (Some("1800000".into()), "log.retention.minutes".into()));
        statics.set("log.retention.ms", "-1").expect("valid");
        assert_eq!(resolve(&statics), (Some("-1".into()), "log.retention.ms".into()));
        let defaults = StaticConfig::default();
        let view = ConfigView { node_id: 1, statics: &defaults, image: &image };
        assert_eq!(view.topic("t", "retention.ms").as_deref(), Some("604800000"));
        assert_eq!(view.topic("t", "retention.bytes").as_deref(), Some("-1"));
    }

    #[test]
    fn static_config_checks_names_and_values() {
        let mut statics = StaticConfig::default();
        assert!(matches!(statics.set("no.such.config", "1"), Err(ConfigError::Unknown { .. })));
        assert!(matches!(statics.set("num.partitions", "zero"), Err(ConfigError::Invalid { .. })));
        assert!(matches!(statics.set("auto.create.topics.enable", "yes"), Err(ConfigError::Invalid { .. })));
        // Kafka's ranges for the retention and timestamp configs.
        assert!(validate_value("retention.ms", ConfigType::Long, "-1").is_ok());
        assert!(validate_value("retention.ms", ConfigType::Long, "-2").is_err());
        assert!(validate_value("retention.bytes", ConfigType::Long, "-5").is_ok());
        assert!(validate_value("file.delete.delay.ms", ConfigType::Long, "-1").is_err());
        assert!(validate_value("message.timestamp.after.max.ms", ConfigType::Long, "-1").is_err());
        // ... and for compaction's.
        assert!(validate_value("min.cleanable.dirty.ratio", ConfigType::Double, "0.01").is_ok());
        assert!(validate_value("min.cleanable.dirty.ratio", ConfigType::Double, "1.5").is_err());
        assert!(validate_value("log.cleaner.min.cleanable.ratio", ConfigType::Double, "-0.1").is_err());
        assert!(validate_value("max.compaction.lag.ms", ConfigType::Long, "0").is_err());
        assert!(validate_value("min.compaction.lag.ms", ConfigType::Long, "-1").is_err());
        assert!(validate_value("delete.retention.ms", ConfigType::Long, "-1").is_err());
        assert!(matches!(statics.set("log.cleaner.threads", "-1"), Err(ConfigError::Invalid { .. })));
        statics.set("log.cleaner.backoff.ms", "200").expect("valid");
        assert!(matches!(statics.set("log.retention.check.interval.ms", "0"), Err(ConfigError::Invalid { .. })));
        statics.set("num.partitions", " 3 ").expect("valid");
        assert_eq!(statics.get("num.partitions"), Some("3"));
    }

    #[test]
    fn properties_and_toml_files_load() {
        let dir = tempfile::tempdir().expect("tempdir");
        let props = dir.path().join("server.properties");
        std::fs::write(&props, "# comment\nnum.partitions=4\nlog.segment.bytes: 1048576\n").expect("write");
        let mut statics = StaticConfig::default();
        statics.load_file(&props).expect("loads");
        assert_eq!(statics.get("num.partitions"), Some("4"));
        assert_eq!(statics.get("log.segment.bytes"), Some("1048576"));

        let toml = dir.path().join("keel.toml");
        std::fs::write(&toml, "\"auto.create.topics.enable\" = false\n[log.retention]\nhours = 2\n").expect("write");
        statics.load_file(&toml).expect("loads");
        assert_eq!(statics.get("log.retention.hours"), Some("2"));
        assert_eq!(statics.get("auto.create.topics.enable"), Some("false"));
    }
}
