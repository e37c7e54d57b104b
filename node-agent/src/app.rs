//! Starting and stopping the agent: servers, configuration source, engine thread, health.

use parking_lot::RwLock;
use prometheus_client::registry::Registry;
use std::{
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};
use tokio::net::TcpListener;

use crate::{
    Error, Result,
    admin_channel::{AdminChannel, LogControl},
    cgroup::CgroupLayout,
    cli::{AgentArgs, read_token},
    cluster,
    collectors::ebpf::EbpfSource,
    engine::{self, Engine, Resolver},
    exporters::{ExporterArgs, Exporters},
    health::SERVICES,
    metrics::{Sources, Store, agent::AgentMetrics},
    push::ToExporters,
    serve::{self, Auth},
    standalone,
};
use podtrace_runtime::{
    admin::{RateLimit, Readiness},
    tls::ReloadingTls,
};

/// Where the targets come from.
pub enum Mode {
    /// NodeTrace/<node> through the API server; with TokenReview auth of /metrics when set.
    Cluster {
        /// Authenticate /metrics through the API server.
        kube_auth: bool,
        /// Size of the eBPF tracked-cgroup map.
        max_tracked_cgroups: usize,
    },
    /// A local config file.
    Standalone(PathBuf),
}

fn bind_err(what: &'static str, addr: impl ToString) -> impl FnOnce(std::io::Error) -> Error {
    move |source| Error::Serve { what, addr: addr.to_string(), source }
}

/// How often the file is checked for changes.
const CONFIG_POLL: Duration = Duration::from_secs(1);

/// Runs the agent until SIGINT/SIGTERM.
pub async fn run(
    mode: Mode,
    args: AgentArgs,
    exporter_args: ExporterArgs,
    log: Box<dyn LogControl>,
    log_filter: &str,
) -> Result<()> {
    let AgentArgs {
        metrics_addr,
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
    let layout = CgroupLayout::detect()
        .map_err(|source| Error::Read { path: "/proc/self/mountinfo".into(), source })?
        .rebased(&cgroup_root);
    tracing::info!(mode = layout.mode.name(), v2 = ?layout.v2, "cgroup layout");
    let mut registry = Registry::default();
    let metrics = AgentMetrics::register(&mut registry);
    let exporters = Arc::new(Exporters::start(&exporter_args, &mut registry)?);
    let filter = ebpf.enabled.then(|| ebpf.ebpf_filter.resolve(layout.v2.as_deref()));
    let ebpf = filter.map(|filter| {
        tracing::info!(
            filter = filter.name(),
            requested = ?ebpf.ebpf_filter,
            cgroup_v2 = layout.v2.is_some(),
            "eBPF filter"
        );
        let mut config = podtrace_ebpf::ProbeConfig {
            max_process_names: ebpf.max_process_names,
            dns_port: ebpf.dns_port,
            bpf_stats: ebpf.bpf_stats,
            filter,
            ..Default::default()
        };
        config.map_sizes.processes = ebpf.ebpf_max_tracked_processes;
        if let Mode::Cluster { max_tracked_cgroups, .. } = &mode {
            config.map_sizes.tracked = u32::try_from(*max_tracked_cgroups).unwrap_or(u32::MAX);
        }
        if let Some(v2) = &layout.v2 {
            config.cgroup_skb_root = v2.clone();
        }
        EbpfSource::load(config, &mut registry)
    });
    let registry = Arc::new(registry);
    let store = Arc::new(Store::default());
    let sources = Arc::new(Sources::agent());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };

    let client = match &mode {
        Mode::Cluster { .. } => Some(kube::Client::try_default().await?),
        Mode::Standalone(_) => None,
    };
    let auth = match (&metrics_token_file, &mode, &client) {
        (Some(f), _, _) => Auth::Token(Arc::new(read_token(f)?)),
        (None, Mode::Cluster { kube_auth: true, .. }, Some(c)) => Auth::kubernetes(c.clone()),
        _ => Auth::None,
    };
    let readiness = Readiness::default();
    let encoder = serve::encoder(
        store.clone(),
        sources.clone(),
        registry.clone(),
        metrics.scrape_seconds.clone(),
    );
    let router = serve::protect(
        podtrace_runtime::admin::router(encoder, readiness.clone(), Some(RateLimit::default())),
        auth,
    );
    let tls = tls.files().map(ReloadingTls::load).transpose()?;
    let listener =
        TcpListener::bind(metrics_addr).await.map_err(bind_err("metrics", metrics_addr))?;
    tracing::info!(addr = %listener.local_addr().map_err(bind_err("metrics", metrics_addr))?, tls = tls.is_some(), "serving /metrics, /livez, /readyz");
    let metrics_task =
        tokio::spawn(podtrace_runtime::admin::serve_maybe_tls(listener, router, tls, stopped()));
    let (health, _health_task) = podtrace_runtime::health::serve(health_addr, &SERVICES, stopped())
        .await
        .map_err(bind_err("grpc health", health_addr))?;
    let admin_token = admin_token_file.as_deref().map(read_token).transpose()?;
    let admin =
        Arc::new(AdminChannel::new(sources.clone(), store.clone(), log_filter, log, admin_token));
    let admin_listener =
        TcpListener::bind(admin_addr).await.map_err(bind_err("admin channel", admin_addr))?;
    tracing::info!(addr = %admin_addr, "admin channel listening");
    let admin_task = tokio::spawn(admin.serve(admin_listener));

    let changed = Arc::new(AtomicBool::new(true));
    let config_ok = Arc::new(AtomicBool::new(false));
    let mut engine =
        Engine::new(proc_root.clone(), store.clone(), sources.clone(), metrics.clone(), interval);
    engine.set_max_processes(usize::from(max_processes));
    let bpf_stats =
        ebpf.as_ref().map_or_else(podtrace_ebpf::bpf_stats_sysctl, EbpfSource::bpf_stats_active);
    if let Some(ebpf) = ebpf {
        engine.set_ebpf(ebpf);
    }
    let node = if exporter_args.node_name.is_empty() {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_else(|_| "localhost".into())
    } else {
        exporter_args.node_name.clone()
    };
    engine.set_pusher(Box::new(ToExporters::new(exporters.clone(), node.clone())));
    let engine_status = engine.status.clone();
    let mut side_tasks = Vec::new();
    let resolver: Resolver = match mode {
        Mode::Standalone(path) => {
            // A file that is there but invalid does not stop the agent: it serves its own
            // metrics and health (Degraded) and picks the file up once it is fixed, the same as
            // a bad reload. A missing file is fatal: that is a wrong path, not a bad edit.
            let config = match standalone::load(&path) {
                Ok(config) => {
                    tracing::info!(path = %path.display(), traces = config.traces.len(), "standalone config loaded");
                    config_ok.store(true, Ordering::Relaxed);
                    config
                }
                Err(e) if !path.is_file() => return Err(e),
                Err(e) => {
                    tracing::error!(error = %e, "standalone config rejected; tracing nothing until the file is fixed");
                    metrics.error("config", e.reason());
                    standalone::Config::default()
                }
            };
            let slot = Arc::new(RwLock::new(config));
            side_tasks.push(tokio::spawn(watch_file(
                path,
                slot.clone(),
                changed.clone(),
                config_ok.clone(),
                metrics.clone(),
            )));
            let layout = layout.clone();
            Box::new(move || {
                let config = slot.read().clone();
                standalone::resolve(&config, &layout, &proc_root)
            })
        }
        Mode::Cluster { max_tracked_cgroups, .. } => {
            if node.is_empty() || exporter_args.node_name.is_empty() {
                return Err(Error::Config { path: "NODE_NAME".into(), message: "cluster mode needs the node name: set NODE_NAME (the chart sets it from spec.nodeName)".into() });
            }
            let client = client.clone().expect("cluster mode has a client");
            let desired = Arc::new(RwLock::new(cluster::Desired::default()));
            side_tasks.push(tokio::spawn(cluster::watch(
                client.clone(),
                node.clone(),
                desired.clone(),
                changed.clone(),
                config_ok.clone(),
            )));
            let m = metrics.clone();
            let ex = exporters.clone();
            side_tasks.push(tokio::spawn(cluster::write_status(
                cluster::StatusWriter {
                    client,
                    node: node.clone(),
                    desired: desired.clone(),
                    engine: engine_status.clone(),
                    kernel: cluster::kernel_features(&layout, filter, bpf_stats),
                    max_tracked: max_tracked_cgroups,
                },
                move || ex.health().exporters.iter().map(|e| e.dropped).sum(),
                move |_| m.error("status", "kubernetes"),
            )));
            let layout = layout.clone();
            Box::new(move || {
                let d = desired.read().clone();
                match d.spec {
                    Some(spec) => cluster::resolve(&spec, &layout),
                    None => (Vec::new(), Vec::new()),
                }
            })
        }
    };
    let stop = Arc::new(AtomicBool::new(false));
    let engine_thread = {
        let (changed, stop) = (changed.clone(), stop.clone());
        std::thread::Builder::new()
            .name("collector".into())
            .spawn(move || engine::run(engine, resolver, changed, stop))
            .map_err(|source| Error::Serve {
                what: "collector thread",
                addr: String::new(),
                source,
            })?
    };

    let health_task = {
        let (health, exporters, engine_status, readiness) =
            (health.clone(), exporters.clone(), engine_status.clone(), readiness.clone());
        let config_ok = config_ok.clone();
        let engine_alive = Arc::new(engine_thread);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                let resolved = engine_status.read().resolved;
                let running = resolved && !engine_alive.is_finished();
                readiness.set(running);
                health.set("", running).await;
                health.set("podtrace.kubernetes", config_ok.load(Ordering::Relaxed)).await;
                let probes_ok = engine_status.read().probes_ok;
                health.set("podtrace.probes", probes_ok).await;
                health.set("podtrace.exporters", exporters.health().serving()).await;
            }
        })
    };
    tracing::info!(node, "agent running");
    podtrace_runtime::shutdown::signal().await;
    stop.store(true, Ordering::Relaxed);
    let _ = stop_tx.send(true);
    health_task.abort();
    admin_task.abort();
    side_tasks.iter().for_each(|t| t.abort());
    exporters.flush(Duration::from_secs(2)).await;
    let _ = tokio::time::timeout(Duration::from_secs(2), metrics_task).await;
    tracing::info!("stopped");
    Ok(())
}

/// Reloads the standalone file when its content changes; a bad file is reported (log, error
/// counter, `podtrace.kubernetes` NOT_SERVING) and the previous configuration keeps running.
async fn watch_file(
    path: PathBuf,
    slot: Arc<RwLock<standalone::Config>>,
    changed: Arc<AtomicBool>,
    ok: Arc<AtomicBool>,
    metrics: AgentMetrics,
) {
    let mut last = std::fs::read(&path).ok();
    let mut tick = tokio::time::interval(CONFIG_POLL);
    loop {
        tick.tick().await;
        let now = std::fs::read(&path).ok();
        if now == last {
            continue;
        }
        last = now;
        match standalone::load(&path) {
            Ok(config) => {
                tracing::info!(path = %path.display(), traces = config.traces.len(), "standalone config reloaded");
                *slot.write() = config;
                changed.store(true, Ordering::Relaxed);
                ok.store(true, Ordering::Relaxed);
                metrics.config_reloads.inc();
            }
            Err(e) => {
                tracing::error!(error = %e, "standalone config rejected; the previous configuration keeps running");
                ok.store(false, Ordering::Relaxed);
                metrics.error("config", e.reason());
            }
        }
    }
}
