//! `podtrace-agent`: the node agent that measures traced pods in the kernel.

use clap::Parser;
use podtrace_runtime::logging::LogArgs;

/// podtrace node agent: measures the traced pods of its node in the kernel (eBPF) and from their
/// cgroups and /proc, and exports the results to Prometheus, NATS, MQTT and Influx.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    #[command(flatten)]
    log: LogArgs,
}

fn main() -> anyhow::Result<()> {
    let Cli { log } = Cli::parse();
    log.init()?;
    anyhow::bail!("the agent pipeline is not built yet (issue #4); only --help and --version work")
}
