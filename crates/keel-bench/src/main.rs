//! `keel-bench`: throughput and latency harness for a running Keel (or any Kafka) broker, in
//! the manner of Kafka's producer/consumer perf tests and EndToEndLatency. See
//! docs/benchmarks.md for how to run it and the targets.

mod client;
mod consume;
mod cpu;
mod e2e;
mod produce;
mod report;

use clap::{Parser, Subcommand};

use client::CommonArgs;
use consume::ConsumeArgs;
use e2e::E2eArgs;
use produce::{ProduceArgs, ProducerArgs};
use report::Report;

#[derive(Parser)]
#[command(name = "keel-bench", version, about = "Throughput and latency benchmarks against a running broker")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Producer throughput and send-to-ack latency (like kafka-producer-perf-test).
    Produce(ProduceArgs),
    /// Consumer throughput from the start of every partition (like kafka-consumer-perf-test).
    Consume(ConsumeArgs),
    /// End-to-end latency at a fixed rate (like Kafka's EndToEndLatency).
    E2e(E2eArgs),
    /// The standard suite: produce acks=1 and acks=all, consume, e2e; then a summary table.
    All(AllArgs),
}

#[derive(clap::Args)]
struct AllArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// Seconds of the e2e run.
    #[arg(long, default_value_t = e2e::DURATION_SECS_DEFAULT)]
    e2e_secs: u64,
    /// Records per second of the e2e run.
    #[arg(long, default_value_t = 5000)]
    e2e_rate: u64,
    /// Broker process id: when given, the broker's CPU use is reported too.
    #[arg(long)]
    broker_pid: Option<u32>,
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Produce(args) => produce::run(&args)?.print(args.common.json),
        Command::Consume(args) => consume::run(&args)?.print(args.common.json),
        Command::E2e(args) => e2e::run(&args)?.print(args.common.json),
        Command::All(args) => all(&args)?,
    }
    Ok(())
}

/// A figure a run must reach, from docs/benchmarks.md.
enum Target {
    MbPerSecAtLeast(f64),
    P99MsBelow(f64),
}

impl Target {
    fn describe(&self) -> String {
        match self {
            Target::MbPerSecAtLeast(mb) => format!(">= {mb:.0} MB/s"),
            Target::P99MsBelow(ms) => format!("p99 < {ms} ms"),
        }
    }

    fn met(&self, report: &Report) -> bool {
        match self {
            Target::MbPerSecAtLeast(mb) => report.mib_per_sec() >= *mb,
            Target::P99MsBelow(ms) => report.latency.is_some_and(|l| l.p99_ms < *ms),
        }
    }
}

fn all(args: &AllArgs) -> anyhow::Result<()> {
    let json = args.common.json;
    let with_topic =
        |suffix: &str| CommonArgs { topic: format!("{}-{suffix}", args.common.topic), ..args.common.clone() };
    let producer = |acks: &str| ProducerArgs {
        acks: acks.into(),
        linger_ms: 5,
        batch_size: 1024 * 1024,
        compression: "none".into(),
        producers: 1,
        rate: 0,
        buffer_mb: 64,
        idempotence: false,
    };
    let mut runs: Vec<(Report, Target)> = Vec::new();
    let mut finish = |report: Report, target: Target| {
        report.print(json);
        runs.push((report, target));
    };

    let acks1 = ProduceArgs { common: with_topic("acks1"), producer: producer("1"), broker_pid: args.broker_pid };
    finish(produce::run(&acks1)?, Target::MbPerSecAtLeast(300.0));
    let acks_all =
        ProduceArgs { common: with_topic("acksall"), producer: producer("all"), broker_pid: args.broker_pid };
    finish(produce::run(&acks_all)?, Target::MbPerSecAtLeast(150.0));
    // Reads what the acks=1 run wrote, from the start of each partition.
    let consume =
        ConsumeArgs { common: with_topic("acks1"), fetch_wait_max_ms: 10, consumers: 1, broker_pid: args.broker_pid };
    finish(consume::run(&consume)?, Target::MbPerSecAtLeast(600.0));
    let e2e = E2eArgs {
        common: CommonArgs { duration_secs: Some(args.e2e_secs), records: None, ..with_topic("e2e") },
        rate: args.e2e_rate,
        acks: "1".into(),
        linger_ms: 0,
        fetch_wait_max_ms: 100,
        broker_pid: args.broker_pid,
    };
    finish(e2e::run(&e2e)?, Target::P99MsBelow(2.0));

    if !json {
        println!();
        println!(
            "{:<26} {:>10} {:>12} {:>9} {:>9} {:>9} {:>9}  {:<16} met",
            "run", "records", "records/s", "MB/s", "p50 ms", "p99 ms", "p99.9 ms", "target"
        );
        for (report, target) in &runs {
            let ms =
                |pick: fn(&report::Latency) -> f64| report.latency.map_or("-".into(), |l| format!("{:.2}", pick(&l)));
            println!(
                "{:<26} {:>10} {:>12.0} {:>9.1} {:>9} {:>9} {:>9}  {:<16} {}",
                report.name,
                report.records,
                report.records_per_sec(),
                report.mib_per_sec(),
                ms(|l| l.p50_ms),
                ms(|l| l.p99_ms),
                ms(|l| l.p999_ms),
                target.describe(),
                if target.met(report) { "yes" } else { "NO" }
            );
        }
    }
    Ok(())
}
