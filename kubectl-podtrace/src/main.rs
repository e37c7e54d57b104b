//! `kubectl-podtrace`, run as `kubectl podtrace …` once on the PATH: parses the command line,
//! connects with the user's kubeconfig and hands over to one module per subcommand.

mod cli;
mod cluster;
mod complete;
mod error;
mod health;
mod output;
mod status;
mod top;

use clap::{CommandFactory, Parser};
use cli::{Cli, Command};

fn main() -> std::process::ExitCode {
    // Run by kubectl as `kubectl_complete-podtrace <words>` (a link to this binary).
    let mut args = std::env::args();
    let program = args.next().unwrap_or_default();
    if std::path::Path::new(&program).file_name().is_some_and(|n| n == complete::PROGRAM) {
        let words: Vec<String> = args.collect();
        let _ = output::write(complete::reply(Cli::command(), &words).as_bytes());
        return std::process::ExitCode::SUCCESS;
    }
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build();
    match runtime
        .map_err(|e| e.to_string())
        .and_then(|r| r.block_on(run(cli)).map_err(|e| e.to_string()))
    {
        Ok(code) => std::process::ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Runs the subcommand; its exit code.
async fn run(cli: Cli) -> error::Result<u8> {
    let Cli { cluster: args, command } = cli;
    if let Command::Completion { shell } = command {
        let mut script = Vec::new();
        clap_complete::generate(shell, &mut Cli::command(), "kubectl-podtrace", &mut script);
        output::write(&script)?;
        return Ok(0);
    }
    let cluster = cluster::Cluster::connect(&args).await?;
    match command {
        Command::Status { name, output } => {
            let report = status::fetch(&cluster, name.as_deref()).await?;
            output::print(output, &report, || status::render(&report))?;
        }
        Command::Top { selector, every, once } => {
            let scope = top::Scope {
                system_namespace: &args.system_namespace,
                agent_selector: &args.agent_selector,
                selector: selector.as_deref(),
            };
            top::run(&cluster, &scope, every, once).await?;
        }
        Command::Health { lease_name, output } => {
            let observed = health::observe(
                &cluster,
                &args.system_namespace,
                &args.agent_selector,
                &args.operator_selector,
                &lease_name,
            )
            .await?;
            let report = health::report(&observed);
            output::print(output, &report, || health::render(&report))?;
            return Ok(report.level.exit_code() as u8);
        }
        Command::Completion { .. } => unreachable!("handled before connecting"),
    }
    Ok(0)
}
