//! The `keel` binary: `keel server` runs a node; `topic`, `produce`, `consume`, `group`,
//! `cluster` and `completion` are the client commands of the `keel-cli` crate.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{CommandFactory, Parser, Subcommand};
use keel_server::{ServerOptions, StaticConfig};

#[derive(Parser)]
#[command(
    name = "keel",
    version,
    about = "Keel: a Kafka-compatible event streaming platform",
    after_help = "Exit codes of the client commands: 0 done, 1 the broker refused or failed the operation, \
                  2 usage, 3 no broker reachable (or the connection broke), 4 cluster not healthy."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a Keel node (broker and controller) with its data in a local directory.
    Server(ServerArgs),
    /// Create, delete, list, describe and configure topics.
    Topic(keel_cli::TopicArgs),
    /// Produce records read from stdin, one per line.
    Produce(keel_cli::ProduceArgs),
    /// Print the records of a topic.
    Consume(keel_cli::ConsumeArgs),
    /// List, describe, seek and delete consumer groups.
    Group(keel_cli::GroupArgs),
    /// Cluster nodes and health.
    Cluster(keel_cli::ClusterArgs),
    /// List and describe transactions, and the producers holding a partition's last stable offset.
    Transaction(keel_cli::TransactionArgs),
    /// Print a shell completion script, e.g. `keel completion bash > /etc/bash_completion.d/keel`.
    Completion {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(clap::Args)]
struct ServerArgs {
    /// Directory for the logs and the cluster metadata.
    #[arg(long, default_value = "./keel-data", env = "KEEL_DATA_DIR")]
    data_dir: PathBuf,
    /// Address of the Kafka listener.
    #[arg(long, default_value = "127.0.0.1:9092")]
    listen: SocketAddr,
    /// host:port given to clients in metadata (default: the listen address).
    #[arg(long)]
    advertise: Option<String>,
    /// Address of the HTTP port (/livez, /readyz, /health, /metrics).
    #[arg(long, default_value = "127.0.0.1:9644")]
    http: SocketAddr,
    /// This node's id (Kafka's node.id).
    #[arg(long, default_value_t = 1)]
    node_id: i32,
    /// The controller quorum, id@host:port of every node (Kafka's controller.quorum.voters),
    /// e.g. 1@127.0.0.1:9093,2@127.0.0.1:9193,3@127.0.0.1:9293. Start every node with the same list.
    #[arg(long, value_name = "VOTERS")]
    controllers: Option<String>,
    /// Address of this node's controller listener (default: its entry in --controllers).
    #[arg(long)]
    controller_listen: Option<SocketAddr>,
    /// A Kafka server.properties file (or a .toml file) of broker configs.
    #[arg(long)]
    config: Option<PathBuf>,
    /// A broker config by its Kafka name, e.g. --set num.partitions=3 (repeatable; wins over --config).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let client = match cli.command {
        Command::Server(args) => return server_main(args),
        Command::Topic(args) => keel_cli::Invocation::Topic(args),
        Command::Produce(args) => keel_cli::Invocation::Produce(args),
        Command::Consume(args) => keel_cli::Invocation::Consume(args),
        Command::Group(args) => keel_cli::Invocation::Group(args),
        Command::Cluster(keel_cli::ClusterArgs {
            command: keel_cli::ClusterCommand::Up { nodes, data_dir, base_port, set },
            ..
        }) => return cluster_up(nodes, data_dir, base_port, set),
        Command::Cluster(args) => keel_cli::Invocation::Cluster(args),
        Command::Transaction(args) => keel_cli::Invocation::Transaction(args),
        Command::Completion { shell } => {
            keel_cli::completion(shell, &mut Cli::command());
            return Ok(());
        }
    };
    std::process::exit(keel_cli::run(client).into())
}

fn server_main(args: ServerArgs) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("KEEL_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,openraft=off")),
        )
        .with_writer(std::io::stderr)
        .init();
    server(args)
}

fn server(args: ServerArgs) -> anyhow::Result<()> {
    let mut statics = StaticConfig::default();
    if let Some(path) = &args.config {
        statics.load_file(path)?;
    }
    for pair in &args.set {
        let (key, value) = pair
            .split_once('=')
            .with_context(|| format!("--set {pair:?} must be key=value, e.g. --set num.partitions=3"))?;
        statics.set(key, value)?;
    }
    let options = ServerOptions {
        data_dir: args.data_dir,
        listen: args.listen,
        advertise: args.advertise,
        http: args.http,
        node_id: args.node_id,
        statics,
        controllers: args.controllers,
        controller_listen: args.controller_listen,
    };
    let runtime =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().context("cannot start the async runtime")?;
    runtime.block_on(keel_server::run(options, shutdown_signal()))
}

/// `keel cluster up`: starts `nodes` local nodes forming one cluster and stops them all on
/// Ctrl-C (or SIGTERM), each with a controlled shutdown.
fn cluster_up(nodes: u16, data_dir: PathBuf, base_port: u16, sets: Vec<String>) -> anyhow::Result<()> {
    if !(1..=9).contains(&nodes) {
        anyhow::bail!("--nodes must be 1 to 9");
    }
    let port = |node: u16, offset: u16| -> anyhow::Result<u16> {
        base_port
            .checked_add(10 * (node - 1) + offset)
            .with_context(|| format!("--base-port {base_port} leaves no room for {nodes} nodes below port 65536"))
    };
    let mut voters = Vec::new();
    for node in 1..=nodes {
        voters.push(format!("{node}@127.0.0.1:{}", port(node, 1)?));
    }
    let voters = voters.join(",");
    let exe = std::env::current_exe().context("cannot find the keel binary")?;
    let mut children = Vec::new();
    let mut bootstrap = Vec::new();
    println!("NODE  KAFKA            CONTROLLER       HTTP             DATA");
    for node in 1..=nodes {
        let dir = data_dir.join(format!("node-{node}"));
        std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let kafka = format!("127.0.0.1:{}", port(node, 0)?);
        let http = format!("127.0.0.1:{}", port(node, 2)?);
        let log = std::fs::File::create(dir.join("keel.log")).context("cannot create the node's log file")?;
        let mut command = std::process::Command::new(&exe);
        command
            .args(["server", "--node-id", &node.to_string(), "--listen", &kafka, "--http", &http])
            .arg("--data-dir")
            .arg(&dir)
            .args(["--controllers", &voters])
            .stdout(log.try_clone()?)
            .stderr(log)
            .stdin(std::process::Stdio::null());
        for set in &sets {
            command.args(["--set", set]);
        }
        let child = command.spawn().context("cannot start a node")?;
        println!("{node:<4}  {kafka:<15}  127.0.0.1:{:<6}  {http:<15}  {}", port(node, 1)?, dir.display());
        bootstrap.push(kafka);
        children.push((node, child));
    }
    println!("\nbootstrap servers: {}", bootstrap.join(","));
    println!("logs: {}/node-N/keel.log; Ctrl-C stops every node", data_dir.display());
    let runtime =
        tokio::runtime::Builder::new_current_thread().enable_all().build().context("cannot start the async runtime")?;
    runtime.block_on(async {
        let signal = shutdown_signal();
        tokio::pin!(signal);
        loop {
            tokio::select! {
                _ = &mut signal => break,
                _ = tokio::time::sleep(std::time::Duration::from_millis(200)) => {}
            }
            for (node, child) in &mut children {
                if let Ok(Some(status)) = child.try_wait() {
                    eprintln!("node {node} exited ({status}); see its keel.log");
                }
            }
            children.retain_mut(|(_, child)| matches!(child.try_wait(), Ok(None)));
            if children.is_empty() {
                break;
            }
        }
    });
    println!("stopping {} node(s)", children.len());
    for (_, child) in &children {
        if let Some(pid) = rustix::process::Pid::from_raw(child.id() as i32) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
    }
    for (node, mut child) in children {
        match child.wait() {
            Ok(status) if status.success() => println!("node {node} stopped"),
            Ok(status) => eprintln!("node {node} exited with {status}"),
            Err(error) => eprintln!("node {node}: {error}"),
        }
    }
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(signal) => signal,
            Err(_) => {
                let _ = interrupt.await;
                return;
            }
        };
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
}
