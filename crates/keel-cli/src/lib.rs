//! The `keel` admin and data commands (`topic`, `produce`, `consume`, `group`, `cluster`,
//! `completion`): their arguments, a small Kafka protocol client, and text/JSON output. They
//! speak only the Kafka protocol, so they work against any Kafka-compatible cluster.

pub mod client;
mod cluster;
mod config;
mod consume;
pub mod error;
pub mod format;
mod group;
mod http;
mod member;
mod offsets;
mod output;
mod produce;
mod topic;
mod transaction;

use std::io::Write;

use clap::{Args, Subcommand, ValueEnum};

pub use error::{exit, CliError};
use format::OffsetSpec;

/// Options every client command takes.
#[derive(Args, Debug, Clone)]
pub struct Common {
    /// Brokers to bootstrap from, comma-separated host:port [default: the profile's, else 127.0.0.1:9092]
    #[arg(long, short = 'b', env = "KEEL_BROKERS", global = true, value_name = "HOST:PORT,...")]
    pub brokers: Option<String>,
    /// A profile of the config file ($KEEL_CONFIG, else ~/.config/keel/config.toml)
    #[arg(long, env = "KEEL_PROFILE", global = true, value_name = "NAME")]
    pub profile: Option<String>,
    /// Output format
    #[arg(long, value_enum, default_value_t = Format::Text, global = true)]
    pub format: Format,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
}

#[derive(Args, Debug)]
pub struct TopicArgs {
    #[command(flatten)]
    pub common: Common,
    #[command(subcommand)]
    pub command: TopicCommand,
}

#[derive(Subcommand, Debug)]
pub enum TopicCommand {
    /// Create a topic.
    Create {
        topic: String,
        /// Number of partitions [default: the broker's num.partitions]
        #[arg(long, short = 'p')]
        partitions: Option<i32>,
        /// Replication factor [default: the broker's default.replication.factor]
        #[arg(long, short = 'r')]
        replication_factor: Option<i16>,
        /// A topic config, e.g. --config retention.ms=86400000 (repeatable)
        #[arg(long = "config", short = 'c', value_name = "KEY=VALUE")]
        configs: Vec<String>,
        /// Succeed when the topic already exists
        #[arg(long)]
        if_not_exists: bool,
    },
    /// Delete topics.
    Delete {
        #[arg(required = true)]
        topics: Vec<String>,
        /// Succeed when a topic does not exist
        #[arg(long)]
        if_exists: bool,
    },
    /// List topics with their partition count and replication factor.
    List {
        /// Include internal topics such as __consumer_offsets
        #[arg(long)]
        internal: bool,
    },
    /// Show a topic: summary, configs with their source, and every partition's leader, replicas,
    /// ISR, log start offset, high watermark and last stable offset.
    Describe {
        topic: String,
        /// Also list the configs that have their default value
        #[arg(long)]
        all_configs: bool,
    },
    /// Set or remove topic configs (IncrementalAlterConfigs).
    AlterConfig {
        topic: String,
        /// Set a config, e.g. --set retention.ms=3600000 (repeatable)
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// Remove a config so that the default applies again (repeatable)
        #[arg(long = "delete", value_name = "KEY")]
        delete: Vec<String>,
    },
    /// Raise the number of partitions of a topic.
    AddPartitions {
        topic: String,
        /// The new total number of partitions
        #[arg(long, short = 'p')]
        partitions: i32,
    },
    /// Delete the records before an offset (DeleteRecords): the log start offset moves up.
    Trim {
        topic: String,
        /// Only this partition [default: every partition]
        #[arg(long)]
        partition: Option<i32>,
        /// Delete the records before this offset: end, an offset, -N (keep the last N) or @TIMESTAMP
        #[arg(long, allow_hyphen_values = true)]
        before: OffsetSpec,
    },
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompressionArg {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

#[derive(Args, Debug)]
pub struct ProduceArgs {
    #[command(flatten)]
    pub common: Common,
    /// The topic (created on first use when the broker allows it)
    pub topic: String,
    /// Split each line at the first DELIM (\t for a tab) into key and value; a line without it has a null key
    #[arg(long, short = 'K', value_name = "DELIM")]
    pub key_delimiter: Option<String>,
    /// A header on every record, key=value (repeatable)
    #[arg(long = "header", short = 'H', value_name = "KEY=VALUE")]
    pub headers: Vec<String>,
    /// Send every record to this partition [default: murmur2 of the key, as Java's partitioner; sticky per batch without a key]
    #[arg(long, short = 'p')]
    pub partition: Option<i32>,
    /// Compression codec of the record batches
    #[arg(long, value_enum, default_value_t = CompressionArg::None)]
    pub compression: CompressionArg,
    /// Acknowledgements to wait for: all (-1), 1 or 0
    #[arg(long, default_value = "all", value_parser = parse_acks, allow_hyphen_values = true)]
    pub acks: i16,
    /// Most records in one request (one batch per partition)
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub batch_records: u32,
    /// Most bytes in one request (before compression); the broker refuses batches above its
    /// max.message.bytes (1 MiB by default)
    #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u32).range(1..=(64 << 20)))]
    pub batch_bytes: u32,
}

fn parse_acks(acks: &str) -> Result<i16, String> {
    match acks {
        "all" | "-1" => Ok(-1),
        "1" => Ok(1),
        "0" => Ok(0),
        _ => Err("acks must be all (-1), 1 or 0".to_string()),
    }
}

#[derive(Args, Debug)]
pub struct ConsumeArgs {
    #[command(flatten)]
    pub common: Common,
    pub topic: String,
    /// Where to start: start, end, -N (N before the end), @TIMESTAMP (ms or RFC 3339) or an offset
    /// [default: the group's committed offsets with --group, else start]
    #[arg(long, short = 'o', allow_hyphen_values = true)]
    pub offset: Option<OffsetSpec>,
    /// Only this partition [default: every partition]
    #[arg(long, short = 'p', conflicts_with = "group")]
    pub partition: Option<i32>,
    /// Join this consumer group: read the partitions it assigns from its committed offsets,
    /// and commit progress
    #[arg(long, short = 'g')]
    pub group: Option<String>,
    /// Stop after this many records (also stops at the end of the partitions)
    #[arg(long, short = 'n')]
    pub count: Option<u64>,
    /// Stop at the end of the partitions instead of waiting for new records
    #[arg(long, short = 'e')]
    pub exit: bool,
    /// Also show records of open and aborted transactions (isolation.level=read_uncommitted);
    /// by default only committed records are shown, up to the last stable offset
    #[arg(long)]
    pub read_uncommitted: bool,
    /// Record format: %k key, %v value, %p partition, %o offset, %T timestamp, %t topic,
    /// %h headers, %K/%S key/value length, \n \t escapes [default: %v\n]
    #[arg(long, short = 'f', value_name = "FORMAT")]
    pub format_string: Option<String>,
}

#[derive(Args, Debug)]
pub struct GroupArgs {
    #[command(flatten)]
    pub common: Common,
    #[command(subcommand)]
    pub command: GroupCommand,
}

#[derive(Subcommand, Debug)]
pub enum GroupCommand {
    /// List the consumer groups of every broker.
    List,
    /// Show a group: state, coordinator, members, lag per partition.
    Describe { group: String },
    /// Move a group's committed offsets (only while the group has no active members).
    Seek {
        group: String,
        /// start, end, -N (N before the end), @TIMESTAMP (ms or RFC 3339) or an offset
        #[arg(long, allow_hyphen_values = true)]
        to: OffsetSpec,
        /// Only this topic [default: every topic the group has offsets for]
        #[arg(long, short = 't')]
        topic: Option<String>,
        /// Only this partition (needs --topic)
        #[arg(long, short = 'p', requires = "topic")]
        partition: Option<i32>,
    },
    /// Delete groups and their committed offsets (only groups without members).
    Delete {
        #[arg(required = true)]
        groups: Vec<String>,
    },
}

#[derive(Args, Debug)]
pub struct TransactionArgs {
    #[command(flatten)]
    pub common: Common,
    #[command(subcommand)]
    pub command: TransactionCommand,
}

#[derive(Subcommand, Debug)]
pub enum TransactionCommand {
    /// List the transactional ids the coordinators know, with their producer id and state.
    List {
        /// Only these states (Empty, Ongoing, PrepareCommit, PrepareAbort, CompleteCommit,
        /// CompleteAbort, ...); repeatable
        #[arg(long = "state", value_name = "STATE")]
        states: Vec<String>,
    },
    /// A transactional id's state, producer, timeout, start time and partitions.
    Describe {
        #[arg(required = true)]
        transactional_ids: Vec<String>,
    },
    /// The producers writing to a topic's partitions: epoch, last sequence and timestamp, and
    /// the first offset of their open transaction (what holds the last stable offset back).
    Producers {
        topic: String,
        /// Only this partition [default: every partition]
        #[arg(long, short = 'p')]
        partition: Option<i32>,
    },
}

#[derive(Args, Debug)]
pub struct ClusterArgs {
    #[command(flatten)]
    pub common: Common,
    #[command(subcommand)]
    pub command: ClusterCommand,
}

#[derive(Subcommand, Debug)]
pub enum ClusterCommand {
    /// Cluster id, controller, nodes, topic and partition counts.
    Info,
    /// Start a local cluster: NODES `keel server` processes on 127.0.0.1, each a broker and a
    /// controller, their data under DATA_DIR/node-N; prints the ports; Ctrl-C stops them all.
    /// Node N listens on BASE_PORT+10(N-1) (Kafka), +1 (controllers) and +2 (HTTP).
    Up {
        /// How many nodes (1 to 9)
        #[arg(long, default_value_t = 3)]
        nodes: u16,
        /// Where the nodes keep their data (one directory per node)
        #[arg(long, default_value = "./keel-cluster")]
        data_dir: std::path::PathBuf,
        /// The first node's Kafka port
        #[arg(long, default_value_t = 9092)]
        base_port: u16,
        /// A broker config for every node, e.g. --set num.partitions=3 (repeatable)
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
    },
    /// Under-replicated and offline partitions; exits 4 when the cluster is not healthy.
    Health {
        /// Check again every --interval seconds, printing each result
        #[arg(long)]
        watch: bool,
        /// With --watch: exit 0 as soon as the cluster is healthy (and reachable)
        #[arg(long, requires = "watch")]
        exit_when_healthy: bool,
        /// Seconds between checks
        #[arg(long, default_value_t = 2.0)]
        interval: f64,
        /// With --watch: give up (exit 4) after this many seconds
        #[arg(long)]
        timeout: Option<f64>,
        /// Read a Keel node's health summary from its HTTP port (host:port, `/health`)
        /// instead of asking Metadata over the Kafka protocol; it also tells whether the
        /// node is ready
        #[arg(long, env = "KEEL_HTTP", value_name = "HOST:PORT")]
        http: Option<String>,
    },
}

/// A client command to run.
pub enum Invocation {
    Topic(TopicArgs),
    Produce(ProduceArgs),
    Consume(ConsumeArgs),
    Group(GroupArgs),
    Cluster(ClusterArgs),
    Transaction(TransactionArgs),
}

/// Runs a command and returns the process exit code; errors are printed to stderr.
pub fn run(invocation: Invocation) -> u8 {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return exit::FAILED;
        }
    };
    let result = runtime.block_on(async {
        match invocation {
            Invocation::Topic(args) => topic::run(args).await,
            Invocation::Produce(args) => produce::run(args).await,
            Invocation::Consume(args) => consume::run(args).await,
            Invocation::Group(args) => group::run(args).await,
            Invocation::Cluster(args) => cluster::run(args).await,
            Invocation::Transaction(args) => transaction::run(args).await,
        }
    });
    let _ = std::io::stdout().flush();
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error}");
            error.exit_code()
        }
    }
}

/// Writes the completion script for `shell` of the command tree `command` to stdout.
pub fn completion(shell: clap_complete::Shell, command: &mut clap::Command) {
    let name = command.get_name().to_string();
    clap_complete::generate(shell, command, name, &mut std::io::stdout());
}

/// Connects to the brokers the options (or the environment, or the config file) name.
async fn connect(common: &Common) -> Result<client::Client, CliError> {
    let brokers = config::brokers(common)?;
    client::Client::connect(&brokers).await
}
