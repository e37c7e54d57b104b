//! The command line, shaped like kubectl's own: `--kubeconfig`, `--context`, `-n`, `-A`, `-l`,
//! `-o`; every flag also read from a `PODTRACE_*` (or kubectl's `KUBECONFIG`) variable.

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::{path::PathBuf, time::Duration};

/// kubectl podtrace: the state of podtrace in a cluster, through the API server and with your
/// own credentials (RBAC decides what you see).
#[derive(Parser, Debug)]
#[command(name = "kubectl-podtrace", bin_name = "kubectl podtrace", version)]
pub struct Cli {
    /// Which cluster and namespaces.
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Where to connect and where podtrace runs.
#[derive(Args, Debug, Clone)]
pub struct ClusterArgs {
    /// Path of the kubeconfig file (default: the files of $KUBECONFIG, ~/.kube/config, or the
    /// in-cluster service account, as kubectl looks).
    #[arg(long, global = true)]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use (default: its current context).
    #[arg(long, global = true, env = "PODTRACE_CONTEXT")]
    pub context: Option<String>,
    /// Namespace (default: the context's namespace, else "default").
    #[arg(short, long, global = true, env = "PODTRACE_NAMESPACE")]
    pub namespace: Option<String>,
    /// Every namespace.
    #[arg(short = 'A', long, global = true, conflicts_with = "namespace")]
    pub all_namespaces: bool,
    /// The namespace podtrace is installed in (its agents, operator and leader Lease).
    #[arg(
        long,
        global = true,
        env = "PODTRACE_SYSTEM_NAMESPACE",
        default_value = "podtrace-system"
    )]
    pub system_namespace: String,
    /// Label selector of the agent pods (the Helm chart's labels).
    #[arg(
        long,
        global = true,
        env = "PODTRACE_AGENT_SELECTOR",
        default_value = "app.kubernetes.io/name=podtrace,app.kubernetes.io/component=agent"
    )]
    pub agent_selector: String,
    /// Label selector of the operator pods (the Helm chart's labels).
    #[arg(
        long,
        global = true,
        env = "PODTRACE_OPERATOR_SELECTOR",
        default_value = "app.kubernetes.io/name=podtrace,app.kubernetes.io/component=operator"
    )]
    pub operator_selector: String,
}

/// The subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Every PodTrace with its matched pods, nodes ready/total, how each probe attached per
    /// node, series and drops, and the reasons of what failed.
    Status {
        /// Only this PodTrace.
        name: Option<String>,
        /// Output format.
        #[arg(short, long, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// The live per-pod table of `podtrace-agent top` for the whole cluster: every agent's
    /// /metrics read through the API server's pod proxy, with the eBPF latencies.
    Top {
        /// Only pods matching this label selector (in the namespace of -n, or of -A).
        #[arg(short = 'l', long)]
        selector: Option<String>,
        /// Refresh period.
        #[arg(long, default_value = "2s", value_parser = podtrace_api::duration::parse, env = "PODTRACE_TOP_EVERY")]
        every: Duration,
        /// Print the table once and exit (for scripts).
        #[arg(long)]
        once: bool,
    },
    /// The health level of every agent and of the operator (exit code 0 for Optimal or
    /// Healthy, 1 when something is Degraded, 3 when something is Unhealthy).
    Health {
        /// Name of the operator's leader Lease (in the system namespace).
        #[arg(long, env = "PODTRACE_LEASE_NAME", default_value = "podtrace-operator")]
        lease_name: String,
        /// Output format.
        #[arg(short, long, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// Prints a shell completion script for `kubectl-podtrace` (`source <(kubectl-podtrace
    /// completion bash)`); `kubectl podtrace <TAB>` completes through the link
    /// kubectl_complete-podtrace instead.
    Completion {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

/// How a report is printed.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    /// A table for people.
    Table,
    /// JSON, for scripts.
    Json,
    /// YAML.
    Yaml,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_read_like_kubectls() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
        let cli = Cli::try_parse_from([
            "kubectl-podtrace",
            "status",
            "-n",
            "shop",
            "web",
            "-o",
            "json",
            "--context",
            "prod",
        ])
        .unwrap();
        assert_eq!(cli.cluster.namespace.as_deref(), Some("shop"));
        assert_eq!(cli.cluster.context.as_deref(), Some("prod"));
        assert!(
            matches!(cli.command, Command::Status { name: Some(ref n), output: Output::Json } if n == "web")
        );
        let cli = Cli::try_parse_from(["kubectl-podtrace", "top", "-A", "-l", "app=web", "--once"])
            .unwrap();
        assert!(cli.cluster.all_namespaces);
        assert!(matches!(cli.command, Command::Top { once: true, selector: Some(_), .. }));
        let err = Cli::try_parse_from(["kubectl-podtrace", "status", "-A", "-n", "x"]).unwrap_err();
        assert!(err.to_string().contains("cannot be used with"), "{err}");
        let err = Cli::try_parse_from(["kubectl-podtrace", "status", "-o", "wide"]).unwrap_err();
        assert!(err.to_string().contains("table, json, yaml"), "{err}");
    }

    #[test]
    fn completions_know_every_subcommand_and_flag() {
        use clap::CommandFactory;
        for shell in
            [clap_complete::Shell::Bash, clap_complete::Shell::Zsh, clap_complete::Shell::Fish]
        {
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "kubectl-podtrace", &mut script);
            let script = String::from_utf8(script).unwrap();
            for word in ["status", "top", "health", "all-namespaces", "system-namespace"] {
                assert!(script.contains(word), "{shell}: {word} missing");
            }
        }
    }
}
