//! Flags (each with a `PODTRACE_…` environment fallback) and the wiring of a running operator.

use clap::Args;
use futures::FutureExt;
use kube::Client;
use kube::runtime::reflector;
use podtrace_runtime::{
    admin, identity,
    servers::{Endpoints, Servers},
    shutdown::Stop,
};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::context::{Context, Scope};
use crate::leader::{Election, LeaseConfig};
use crate::metrics::Metrics;
use crate::reach::ClusterTracing;
use crate::{Error, podtrace, presets, watch as watches, writer};

/// The operator's flags.
#[derive(Args, Debug, Clone)]
pub struct OperatorArgs {
    /// Only handle PodTraces and Pods of this namespace (default: every namespace).
    #[arg(long, env = "PODTRACE_WATCH_NAMESPACE")]
    pub namespace: Option<String>,
    /// Only write NodeTraces for Nodes with these labels, as `key=value,key2=value2` (default:
    /// every node). The labels are copied onto the NodeTraces, so operators with disjoint
    /// selectors can share a cluster.
    #[arg(long, env = "PODTRACE_NODE_SELECTOR", default_value = "")]
    pub node_selector: String,
    /// The namespace this operator runs in (the chart sets it from the pod's own): its PodTraces
    /// may use spec.namespaceSelector to trace pods of other namespaces that consent.
    #[arg(long, env = "PODTRACE_OPERATOR_NAMESPACE")]
    pub operator_namespace: Option<String>,
    /// More namespaces whose PodTraces may use spec.namespaceSelector, comma-separated (for
    /// example a platform team's). Grant this like cluster-wide read access to pods: a PodTrace
    /// there traces every consenting namespace.
    #[arg(long, env = "PODTRACE_CLUSTER_TRACE_NAMESPACES", value_delimiter = ',')]
    pub cluster_trace_namespaces: Vec<String>,
    /// Create the six preset MonitoringProfiles when missing (never overwrites an edit).
    #[arg(long, env = "PODTRACE_INSTALL_PRESETS", default_value_t = true, action = clap::ArgAction::Set)]
    pub install_presets: bool,
    /// Elect a leader with a Lease, so that only one replica writes.
    #[arg(long, env = "PODTRACE_LEADER_ELECT", default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_elect: bool,
    /// Namespace of the leader Lease.
    #[arg(long, env = "PODTRACE_LEASE_NAMESPACE", default_value = "podtrace-system")]
    pub lease_namespace: String,
    /// Name of the leader Lease.
    #[arg(long, env = "PODTRACE_LEASE_NAME", default_value = "podtrace-operator")]
    pub lease_name: String,
    /// Seconds a leader's Lease lasts without renewal: a standby takes over at most this long
    /// after the leader died.
    #[arg(long, env = "PODTRACE_LEASE_DURATION", default_value_t = 15, value_parser = clap::value_parser!(u64).range(2..=300))]
    pub lease_duration: u64,
    /// This replica's identity in the Lease and in Events (default: the pod name from POD_NAME,
    /// or the host name and process id).
    #[arg(long, env = "PODTRACE_IDENTITY")]
    pub identity: Option<String>,
    /// Address of /metrics, /livez and /readyz.
    #[arg(long, env = "PODTRACE_METRICS_ADDR", default_value = "0.0.0.0:8080")]
    pub metrics_addr: SocketAddr,
    /// TLS of /metrics, /livez and /readyz.
    #[command(flatten)]
    pub tls: podtrace_runtime::tls::TlsArgs,
    /// Address of grpc.health.v1.
    #[arg(long, env = "PODTRACE_HEALTH_ADDR", default_value = "0.0.0.0:50100")]
    pub health_addr: SocketAddr,
}

/// Parses `key=value,…` (equality only: the labels are copied onto NodeTraces).
pub fn parse_node_selector(text: &str) -> Result<BTreeMap<String, String>, Error> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|pair| match pair.split_once('=') {
            Some((k, v)) if !k.is_empty() && !k.ends_with('!') => {
                Ok((k.trim().to_owned(), v.trim().to_owned()))
            }
            _ => Err(Error::InvalidFlag {
                flag: "node-selector",
                value: text.to_owned(),
                reason: "write key=value pairs separated by commas, e.g. pool=general,zone=a",
            }),
        })
        .collect()
}

impl OperatorArgs {
    /// Runs the operator until SIGTERM/SIGINT (Ok) or until it loses the Lease (Err: the
    /// process exits and restarts as a standby, the usual and safe reaction).
    pub async fn run(self) -> anyhow::Result<()> {
        let Self {
            namespace,
            node_selector,
            operator_namespace,
            cluster_trace_namespaces,
            install_presets,
            leader_elect,
            lease_namespace,
            lease_name,
            lease_duration,
            identity,
            metrics_addr,
            tls,
            health_addr,
        } = self;
        let cluster_tracing = ClusterTracing::new(operator_namespace, cluster_trace_namespaces);
        let node_labels = parse_node_selector(&node_selector)?;
        let scope = Scope { namespace, node_labels, cluster_tracing };
        let identity = identity::replica(identity);
        let client = Client::try_default().await?;
        let stop = Stop::on_signal();

        let (metrics, registry) = Metrics::new();
        let (podtraces, pt_writer) = reflector::store();
        let (profiles, profile_writer) = reflector::store();
        let (triggers, trigger_rx) = futures::channel::mpsc::unbounded();
        let stores = (podtraces, profiles);
        let ctx =
            Arc::new(Context::new(client.clone(), scope, stores, triggers, metrics, &identity));
        let encoder = admin::registry_encoder(Arc::new(registry));
        let endpoints = Endpoints {
            metrics: metrics_addr,
            tls: &tls,
            health: health_addr,
            services: &["podtrace.kubernetes"],
        };
        let servers =
            Servers::start(endpoints, |ready| admin::router(encoder, ready, None), &stop).await?;
        let (readiness, health) = (servers.readiness.clone(), servers.health.clone());

        let watchers = [
            tokio::spawn(watches::pods(ctx.clone())),
            tokio::spawn(watches::nodes(ctx.clone())),
            tokio::spawn(watches::profiles(ctx.clone(), profile_writer)),
            tokio::spawn(watches::nodetraces(ctx.clone())),
            tokio::spawn(watches::podtraces(ctx.clone(), pt_writer)),
            tokio::spawn(watches::podtraceprofiles(ctx.clone())),
            tokio::spawn(watches::namespaces(ctx.clone())),
        ];
        {
            let (ctx, readiness, health) = (ctx.clone(), readiness.clone(), health.clone());
            tokio::spawn(async move {
                ctx.synced.wait().await;
                tracing::info!(pods = ctx.metrics.pods_indexed.get(), "caches synced; ready");
                readiness.set(true);
                health.set("", true).await;
                health.set("podtrace.kubernetes", true).await;
            });
        }

        let mut election = if leader_elect {
            let config = LeaseConfig {
                namespace: lease_namespace,
                name: lease_name,
                identity,
                duration_seconds: lease_duration,
            };
            Some(Election::start(client.clone(), config).await?)
        } else {
            None
        };
        let acquired = async {
            if let Some(e) = election.as_mut() {
                e.acquired().await?;
            }
            ctx.synced.wait().await;
            Ok::<_, Error>(())
        };
        let outcome = tokio::select! {
            r = acquired => r.map(|()| true),
            () = stop.stopped() => Ok(false),
        };
        let result = match outcome {
            Ok(true) => {
                lead(&ctx, election.as_mut(), install_presets, trigger_rx, stop.stopped()).await
            }
            Ok(false) => Ok(()),
            Err(e) => Err(e.into()),
        };
        ctx.leading.store(false, Ordering::SeqCst);
        ctx.metrics.leader.set(0);
        readiness.set(false);
        health.set("", false).await;
        if let Some(e) = election {
            e.release().await;
        }
        watchers.iter().for_each(|w| w.abort());
        result
    }
}

/// The leader's work: presets, the writer (PodTraceProfiles and NodeTraces) and the PodTrace
/// controller, until shutdown or until the Lease is lost.
async fn lead(
    ctx: &Arc<Context>,
    election: Option<&mut Election>,
    install_presets: bool,
    triggers: futures::channel::mpsc::UnboundedReceiver<
        kube::runtime::reflector::ObjectRef<podtrace_api::PodTrace>,
    >,
    stopped: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    tracing::info!("leading: writing PodTraceProfiles, NodeTraces and PodTrace statuses");
    ctx.leading.store(true, Ordering::SeqCst);
    ctx.metrics.leader.set(1);
    if install_presets {
        presets::install(ctx.client.clone()).await?;
    }
    let lost = async {
        match election {
            Some(e) => e.lost().await,
            None => std::future::pending().await,
        }
    };
    let writer = tokio::spawn(writer::run(ctx.clone()));
    let controller = tokio::spawn(podtrace::run(ctx.clone(), triggers));
    let result = tokio::select! {
        () = stopped => Ok(()),
        () = lost.fuse() => Err(anyhow::anyhow!("lost the leader Lease; exiting so that only one replica writes")),
    };
    writer.abort();
    controller.abort();
    let _ = writer.await;
    let _ = controller.await;
    result
}
