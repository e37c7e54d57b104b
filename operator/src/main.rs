//! `podtrace-operator`: reconciles PodTrace and MonitoringProfile into one NodeTrace per node.

use clap::Parser;
use podtrace_operator::cli::OperatorArgs;
use podtrace_runtime::logging::LogArgs;

/// jemalloc returns freed memory to the system, where glibc's malloc kept the peaks of list pages
/// and NodeTrace bodies spread over its per-thread arenas.
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read at its first allocation (before `main`): a background thread purges
/// freed pages after 1 s instead of the default 10 s on the next allocations, so the operator's
/// RSS falls back soon after a burst of NodeTrace writes. `MALLOC_CONF`-style string, NUL-ended;
/// `_RJEM_MALLOC_CONF` in the environment overrides it.
#[cfg(feature = "jemalloc")]
#[allow(unsafe_code, reason = "jemalloc reads its compile-time options from this exported symbol")]
#[allow(non_upper_case_globals, reason = "the C symbol's name")]
#[unsafe(export_name = "_rjem_malloc_conf")]
pub static malloc_conf: &[u8; 43] = b"background_thread:true,dirty_decay_ms:1000\0";

/// podtrace operator: turns PodTraces and MonitoringProfiles into per-node agent configuration
/// (NodeTrace objects) and rolls the agents' results up into each PodTrace's status.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    #[command(flatten)]
    log: LogArgs,
    #[command(flatten)]
    operator: OperatorArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let Cli { log, operator } = Cli::parse();
    log.init()?;
    operator.run().await
}
