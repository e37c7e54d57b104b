//! Starting and stopping the agent: the wiring of the pieces, and nothing else.
//!
//! ```text
//!  configuration source ──watch channel──► engine thread ──EngineStatus (watch)──┬─► status writer (cluster)
//!   NodeTrace watch | file reload            │ Store, PushBatch                  └─► health, /readyz
//!                                            ▼
//!                    /metrics (Servers) · exporters · admin channel
//! ```

use prometheus_client::registry::Registry;
use std::{path::PathBuf, sync::Arc, time::Duration};
use tokio::{net::TcpListener, sync::watch};

use crate::{
    Error, Result,
    admin_channel::{AdminChannel, LogControl},
    cgroup::CgroupLayout,
    channel::changed,
    cli::{AgentArgs, EbpfArgs, read_token},
    cluster,
    collectors::ebpf::EbpfSource,
    engine::{self, Engine, EngineStatus},
    exporters::{ExporterArgs, Exporters},
    gaps,
    health::SERVICES,
    metrics::{Sources, Store, agent::AgentMetrics},
    serve::{self, Auth},
    standalone,
    targets::{Pending, Target},
};
use podtrace_runtime::{
    admin::{self, RateLimit, Readiness},
    health::Health,
    identity,
    servers::{Endpoints, Servers},
    shutdown::Stop,
};

/// Where the targets come from.
pub enum Mode {
    /// `NodeTrace/<node>` through the API server; with TokenReview auth of /metrics when set.
    Cluster {
        /// Authenticate /metrics through the API server.
        kube_auth: bool,
        /// Size of the eBPF tracked-cgroup map.
        max_tracked_cgroups: usize,
        /// The kubelet's cgroupRoot.
        kubelet_cgroup_root: String,
    },
    /// A local config file.
    Standalone {
        /// The file.
        path: PathBuf,
        /// Whether a file without any document is accepted (it traces nothing).
        allow_empty: bool,
        /// How long a change must stay unchanged before it is applied.
        settle: Duration,
    },
}

/// Runs the agent until SIGINT/SIGTERM.
pub async fn run(
    mode: Mode,
    args: AgentArgs,
    exporter_args: ExporterArgs,
    log: Box<dyn LogControl>,
    log_filter: &str,
) -> Result<()> {
    let metrics_addr = args.metrics_listen();
    let AgentArgs {
        metrics_addr: _,
        prometheus_port: _,
        metrics_token_file,
        tls,
        health_addr,
        admin_addr,
        admin_token_file,
        proc_root,
        cgroup_root,
        interval,
        max_processes,
        ebpf,
    } = args;
    let stop = Stop::on_signal();
    let soft = match crate::open_files::raise() {
        Ok(files) => {
            tracing::info!(
                before = ?files.before,
                now = ?files.now,
                containers = ?files.containers(),
                "open-file limit (the agent keeps ~13 files open per traced container)"
            );
            files.now
        }
        Err(e) => {
            tracing::warn!(error = %e, "raising the open-file limit to its hard limit failed");
            crate::open_files::soft_limit()
        }
    };
    crate::procfs::set_kept_budget(crate::open_files::kept_budget(soft));
    let layout = CgroupLayout::detect()
        .map_err(|source| Error::Read { path: "/proc/self/mountinfo".into(), source })?
        .rebased(&cgroup_root);
    tracing::info!(mode = layout.mode.name(), v2 = ?layout.v2, "cgroup layout");
    let mut registry = Registry::default();
    let metrics = AgentMetrics::register(&mut registry);
    let exporters = Arc::new(Exporters::start(&exporter_args, &mut registry)?);
    let ebpf = ebpf.enabled.then(|| load_ebpf(&ebpf, &layout, &mode, &mut registry));
    let registry = Arc::new(registry);
    let store = Arc::new(Store::default());
    let sources = Arc::new(Sources::default());

    let client = match &mode {
        Mode::Cluster { .. } => Some(kube::Client::try_default().await?),
        Mode::Standalone { .. } => None,
    };
    let auth = match (&metrics_token_file, &mode, &client) {
        (Some(f), _, _) => Auth::Token(Arc::new(read_token(f)?)),
        (None, Mode::Cluster { kube_auth: true, .. }, Some(c)) => Auth::kubernetes(c.clone()),
        _ => Auth::None,
    };
    let encoder = serve::encoder(
        store.clone(),
        sources.clone(),
        registry.clone(),
        metrics.scrape_seconds.clone(),
    );
    let endpoints =
        Endpoints { metrics: metrics_addr, tls: &tls, health: health_addr, services: &SERVICES };
    let limit = Some(RateLimit::default());
    let router = |ready| admin::guarded_router(encoder, ready, limit, auth.guard());
    let servers = Servers::start(endpoints, router, &stop).await?;
    let admin_token = admin_token_file.as_deref().map(read_token).transpose()?;
    let admin =
        Arc::new(AdminChannel::new(sources.clone(), store.clone(), log_filter, log, admin_token));
    let admin_listener = TcpListener::bind(admin_addr).await.map_err(|source| Error::Serve {
        what: "admin channel",
        addr: admin_addr.to_string(),
        source,
    })?;
    tracing::info!(addr = %admin_addr, "admin channel listening");
    tokio::spawn(admin.serve(admin_listener));

    let node = identity::node_name(&exporter_args.node_name);
    let mut engine = Engine::new(proc_root.clone(), store, sources, metrics.clone(), interval);
    engine.set_max_processes(usize::from(max_processes));
    if let Some(gap) = gaps::pid_namespace(&proc_root) {
        tracing::error!(proc_root = %proc_root.display(), "{}", gap.advice());
        engine.add_gap(gap);
    }
    let bpf_stats =
        ebpf.as_ref().map_or_else(podtrace_ebpf::bpf_stats_sysctl, |(_, e)| e.bpf_stats_active());
    let filter = ebpf.as_ref().map(|(f, _)| *f);
    if let Some((_, ebpf)) = ebpf {
        engine.set_ebpf(ebpf);
    }
    engine.set_pusher(exporters.clone(), node.clone());
    let engine_status = engine.subscribe();
    let (config_ok, config_ok_rx) = watch::channel(false);
    // Whether the last NodeTrace status write succeeded (no writer in standalone mode: true).
    let (status_ok, status_ok_rx) = watch::channel(true);
    match mode {
        Mode::Standalone { path, allow_empty, settle } => {
            // A file that is there but invalid does not stop the agent: it serves its own
            // metrics and health (Degraded) and picks the file up once it is fixed, the same as
            // a bad reload. A missing file is fatal: that is a wrong path, not a bad edit.
            let content = std::fs::read(&path)
                .map_err(|e| Error::Config { path: path.clone(), message: e.to_string() })?;
            let config = match standalone::parse_content(&path, &content, allow_empty) {
                Ok(config) => {
                    tracing::info!(path = %path.display(), traces = config.traces.len(), "standalone config loaded");
                    config_ok.send_replace(true);
                    config
                }
                Err(e) => {
                    tracing::error!(error = %e, "standalone config rejected; tracing nothing until the file is fixed");
                    metrics.error("config", e.reason());
                    standalone::Config::default()
                }
            };
            let (config_tx, config_rx) = watch::channel(config);
            let reload = standalone::reload::Reload {
                path,
                applied: Some(content),
                settle,
                poll: standalone::reload::CONFIG_POLL,
                allow_empty,
            };
            tokio::spawn(standalone::reload::reload(reload, config_tx, config_ok, metrics));
            let resolve = move |c: &standalone::Config| standalone::resolve(c, &layout, &proc_root);
            spawn_engine(engine, config_rx, resolve, &stop)?;
        }
        Mode::Cluster { max_tracked_cgroups, kubelet_cgroup_root, .. } => {
            if exporter_args.node_name.is_empty() {
                return Err(Error::Config { path: "NODE_NAME".into(), message: "cluster mode needs the node name: set NODE_NAME (the chart sets it from spec.nodeName)".into() });
            }
            let client = client.expect("cluster mode has a client");
            let (desired_tx, desired) = watch::channel(cluster::Desired::default());
            tokio::spawn(cluster::watch(client.clone(), node.clone(), desired_tx, config_ok));
            let writer = cluster::StatusWriter {
                client,
                node: node.clone(),
                desired: desired.clone(),
                engine: engine_status.clone(),
                exports: exporters.subscribe(),
                kernel: cluster::kernel_features(&layout, filter, bpf_stats),
                max_tracked: max_tracked_cgroups,
            };
            let ex = exporters.clone();
            let dropped = move || ex.health().exporters.iter().map(|e| e.dropped).sum();
            let m = metrics.clone();
            tokio::spawn(cluster::write_status(writer, dropped, move |result| {
                if result.is_err() {
                    m.error("status", "kubernetes");
                }
                status_ok.send_if_modified(|ok| std::mem::replace(ok, result.is_ok()) != *ok);
            }));
            let resolve = move |d: &cluster::Desired| match &d.spec {
                Some(spec) => cluster::resolve(spec, &d.shared, &layout, &kubelet_cgroup_root),
                None => (Vec::new(), Vec::new()),
            };
            spawn_engine(engine, desired, resolve, &stop)?;
        }
    }
    let health = (servers.health.clone(), servers.readiness.clone());
    let kubernetes = (config_ok_rx, status_ok_rx);
    tokio::spawn(report_health(health, engine_status, kubernetes, exporters.clone()));
    tracing::info!(node, "agent running");
    stop.stopped().await;
    exporters.flush(Duration::from_secs(2)).await;
    servers.finish(Duration::from_secs(2)).await;
    tracing::info!("stopped");
    Ok(())
}

/// Loads the eBPF probes with the filter this node needs (none attached until a target asks).
fn load_ebpf(
    args: &EbpfArgs,
    layout: &CgroupLayout,
    mode: &Mode,
    registry: &mut Registry,
) -> (podtrace_ebpf::Filter, EbpfSource) {
    let filter = args.ebpf_filter.resolve(layout.v2.as_deref());
    tracing::info!(
        filter = filter.name(),
        requested = ?args.ebpf_filter,
        cgroup_v2 = layout.v2.is_some(),
        "eBPF filter"
    );
    let mut config = podtrace_ebpf::ProbeConfig {
        max_process_names: args.max_process_names,
        dns_port: args.dns_port,
        bpf_stats: args.bpf_stats,
        filter,
        ..Default::default()
    };
    config.map_sizes.processes = args.ebpf_max_tracked_processes;
    if let Mode::Cluster { max_tracked_cgroups, .. } = mode {
        config.map_sizes.tracked = u32::try_from(*max_tracked_cgroups).unwrap_or(u32::MAX);
    }
    if let Some(v2) = &layout.v2 {
        config.cgroup_skb_root = v2.clone();
    }
    match crate::memlock::raise_for_bpf() {
        crate::memlock::Memlock::NotNeeded(release) => {
            tracing::debug!(
                release,
                "eBPF maps are charged to the memory cgroup: RLIMIT_MEMLOCK left alone"
            )
        }
        crate::memlock::Memlock::Raised => {
            tracing::info!("RLIMIT_MEMLOCK raised for the eBPF maps")
        }
        crate::memlock::Memlock::Failed(why) => tracing::warn!("{why}"),
    }
    (filter, EbpfSource::load(config, registry))
}

/// Starts the engine on a thread of its own (its collectors do blocking file I/O), resolving
/// its targets from `config` with `resolve`, until `stop`.
fn spawn_engine<C: Clone + Send + Sync + 'static>(
    engine: Engine,
    config: watch::Receiver<C>,
    resolve: impl FnMut(&C) -> (Vec<Target>, Vec<Pending>) + Send + 'static,
    stop: &Stop,
) -> Result<()> {
    let stopped = stop.stopped();
    let spawned = std::thread::Builder::new().name("collector".into()).spawn(move || {
        if let Err(e) = engine::run(engine, config, resolve, stopped) {
            tracing::error!(error = %e, "the collection engine did not start");
        }
    });
    spawned.map(drop).map_err(|source| Error::Serve {
        what: "collector thread",
        addr: String::new(),
        source,
    })
}

/// Keeps the health services and `/readyz` current: it wakes when the engine's status, the
/// configuration source's health, the status writes' success or an exporter's link changes.
async fn report_health(
    (health, readiness): (Health, Readiness),
    mut engine: watch::Receiver<EngineStatus>,
    (mut config_ok, mut status_ok): (watch::Receiver<bool>, watch::Receiver<bool>),
    exporters: Arc<Exporters>,
) {
    let mut links = exporters.subscribe();
    // The engine's channel closes when its thread ends (it never should): not running then.
    let (mut engine_alive, mut config_open, mut links_open) = (true, true, true);
    let mut status_open = true;
    loop {
        let status = engine.borrow_and_update().clone();
        let running = engine_alive && status.resolved;
        readiness.set(running);
        health.set("", running).await;
        let kubernetes = *config_ok.borrow_and_update() && *status_ok.borrow_and_update();
        health.set("podtrace.kubernetes", kubernetes).await;
        health.set("podtrace.probes", status.probes_ok).await;
        health.set("podtrace.exporters", exporters.health().serving()).await;
        health.set("podtrace.collectors", status.gaps.is_empty()).await;
        tokio::select! {
            () = changed(&mut engine, &mut engine_alive) => {}
            () = changed(&mut config_ok, &mut config_open) => {}
            () = changed(&mut status_ok, &mut status_open) => {}
            () = changed(&mut links, &mut links_open) => {}
        }
    }
}
