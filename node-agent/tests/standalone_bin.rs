//! The `podtrace-agent` binary in standalone mode, as a user starts it, without root: a config
//! file that is broken at start, and /metrics over TLS read by `podtrace-agent top`.

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

const AGENT: &str = env!("CARGO_BIN_EXE_podtrace-agent");

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn tempdir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("podtrace-bin-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The agent process, killed on drop.
struct Agent {
    child: Child,
    metrics: u16,
    health: u16,
}

impl Agent {
    fn start(config: &Path, extra: &[&str]) -> Self {
        let (metrics, health, admin) = (free_port(), free_port(), free_port());
        let child = Command::new(AGENT)
            .args(["standalone", "--config", config.to_str().unwrap(), "--ebpf=false"])
            .args(["--metrics-addr", &format!("127.0.0.1:{metrics}")])
            .args(["--health-addr", &format!("127.0.0.1:{health}")])
            .args(["--admin-addr", &format!("127.0.0.1:{admin}")])
            .args(extra)
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let agent = Self { child, metrics, health };
        wait_for("the metrics port", || {
            std::net::TcpStream::connect(("127.0.0.1", metrics)).is_ok()
        });
        agent
    }

    fn health(&self) -> Output {
        Command::new(AGENT)
            .args(["health", "live", "--endpoint", &format!("127.0.0.1:{}", self.health)])
            .output()
            .unwrap()
    }

    fn top(&self, scheme: &str, extra: &[&str]) -> Output {
        Command::new(AGENT)
            .args(["top", "--once", "--endpoint"])
            .arg(format!("{scheme}://localhost:{}", self.metrics))
            .args(extra)
            .output()
            .unwrap()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn get(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// A PodTrace of this machine selecting the test process itself by pid.
fn trace_of_self() -> String {
    format!(
        "apiVersion: podtrace.dev/v1alpha1\nkind: PodTrace\nmetadata: {{name: me, namespace: t}}\nspec:\n  selector: {{matchLabels: {{podtrace.dev/pid: \"{}\"}}}}\n  profile: {{interval: 1s, probes: {{enabled: false}}}}\n",
        std::process::id()
    )
}

#[test]
fn a_config_broken_at_start_is_reported_and_its_fix_is_picked_up_without_restart() {
    let dir = tempdir("badstart");
    let config = dir.join("agent.yaml");
    std::fs::write(&config, "kind: PodTrace\nspec: [not, a, map\n").unwrap();
    let agent = Agent::start(&config, &[]);
    // /metrics is served before the file is read: wait for the count, do not race it.
    let counted = "podtrace_agent_errors_total{source=\"config\",reason=\"config\"} 1";
    wait_for("the rejected file counted", || get(agent.metrics, "/metrics").contains(counted));
    let body = get(agent.metrics, "/metrics");
    // The binary's allocator is jemalloc (default feature), and /metrics shows its heap.
    let heap = |name: &str| -> f64 {
        let line = body.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("{name}"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };
    let allocated = heap("podtrace_agent_heap_allocated_bytes ");
    let resident = heap("podtrace_agent_heap_resident_bytes ");
    assert!(allocated > 1e5 && resident >= allocated, "heap {allocated}, resident {resident}");
    // Degraded, not Unhealthy, once the engine runs (it starts after the eBPF probes have loaded,
    // which on a busy machine can take longer than serving the first /metrics).
    wait_for("health Degraded", || agent.health().status.code() == Some(1));
    assert!(String::from_utf8_lossy(&agent.health().stdout).starts_with("Degraded"));

    std::fs::write(&config, trace_of_self()).unwrap();
    let series = "podtrace_process_threads{namespace=\"t\",pod=\"me\"";
    wait_for("the fixed file's target", || get(agent.metrics, "/metrics").contains(series));
    wait_for("health to recover", || agent.health().status.code() == Some(0));
    let _ = std::fs::remove_dir_all(dir);
}

/// The agent on `config` started under `prlimit --nofile=<nofile>` (soft:hard), which execs
/// it in place (the child's pid is the agent's); and its metrics port.
fn under_file_limit(nofile: &str, config: &Path) -> (Child, u16) {
    let (metrics, health, admin) = (free_port(), free_port(), free_port());
    let child = Command::new("prlimit")
        .arg(format!("--nofile={nofile}"))
        .args(["--", AGENT, "standalone", "--ebpf=false", "--config"])
        .arg(config)
        .args(["--metrics-addr", &format!("127.0.0.1:{metrics}")])
        .args(["--health-addr", &format!("127.0.0.1:{health}")])
        .args(["--admin-addr", &format!("127.0.0.1:{admin}")])
        .stderr(Stdio::null())
        .spawn()
        .expect("prlimit (util-linux)");
    (child, metrics)
}

/// Started with the soft open-file limit of many container runtimes (1,024; here 256) the agent
/// raises it to its hard limit, as it keeps ~13 files open per traced container.
#[test]
fn the_agent_raises_its_soft_open_file_limit_to_the_hard_one() {
    let dir = tempdir("nofile");
    let config = dir.join("agent.yaml");
    std::fs::write(&config, trace_of_self()).unwrap();
    let (mut child, metrics) = under_file_limit("256:", &config);
    let limits = || std::fs::read_to_string(format!("/proc/{}/limits", child.id())).unwrap();
    wait_for("the agent's metrics port", || {
        std::net::TcpStream::connect(("127.0.0.1", metrics)).is_ok()
    });
    let text = limits();
    let line = text.lines().find(|l| l.starts_with("Max open files")).expect("Max open files");
    let fields: Vec<&str> = line.split_whitespace().collect();
    let (soft, hard) = (fields[3], fields[4]);
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(dir);
    assert_ne!(soft, "256", "{line}");
    if hard == "unlimited" {
        let nr_open = std::fs::read_to_string("/proc/sys/fs/nr_open").unwrap();
        assert_eq!(soft, nr_open.trim(), "{line}");
    } else {
        assert_eq!(soft, hard, "{line}");
    }
}

/// With more targets than its open-file limit lets it keep files open for (hard limit 256: 56
/// kept files, ~5 per process), the agent opens the rest per read: every target is measured
/// and no read fails.
#[test]
fn past_its_open_file_limit_the_agent_still_reads_every_target() {
    const TARGETS: usize = 40;
    let dir = tempdir("fewfiles");
    let config = dir.join("agent.yaml");
    let mut sleepers: Vec<Child> =
        (0..TARGETS).map(|_| Command::new("sleep").arg("120").spawn().unwrap()).collect();
    let docs: Vec<String> = sleepers
        .iter()
        .enumerate()
        .map(|(i, c)| {
            format!(
                "apiVersion: podtrace.dev/v1alpha1\nkind: PodTrace\nmetadata: {{name: p{i}, namespace: t}}\nspec:\n  selector: {{matchLabels: {{podtrace.dev/pid: \"{}\"}}}}\n  profile: {{interval: 1s, probes: {{enabled: false}}}}\n",
                c.id()
            )
        })
        .collect();
    std::fs::write(&config, docs.join("---\n")).unwrap();
    let (mut agent, metrics) = under_file_limit("256:256", &config);
    let measured = |body: &str| {
        (0..TARGETS)
            .filter(|i| {
                body.contains(&format!("podtrace_process_threads{{namespace=\"t\",pod=\"p{i}\""))
            })
            .count()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut body = String::new();
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", metrics)).is_ok() {
            body = get(metrics, "/metrics");
            if measured(&body) == TARGETS {
                // Two more collections, so that files past the budget were read again.
                std::thread::sleep(Duration::from_millis(2500));
                body = get(metrics, "/metrics");
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let _ = agent.kill();
    let _ = agent.wait();
    sleepers.iter_mut().for_each(|c| drop((c.kill(), c.wait())));
    let _ = std::fs::remove_dir_all(dir);
    assert_eq!(measured(&body), TARGETS, "every target measured");
    let io_errors: Vec<&str> = body
        .lines()
        .filter(|l| l.starts_with("podtrace_agent_errors_total") && l.contains("reason=\"io\""))
        .collect();
    assert!(io_errors.is_empty(), "{io_errors:?}");
}

#[test]
fn a_missing_config_file_stops_the_agent_with_its_path() {
    let out = Command::new(AGENT)
        .args(["standalone", "--config", "/nonexistent/podtrace.yaml", "--ebpf=false"])
        .args(["--metrics-addr", &format!("127.0.0.1:{}", free_port())])
        .args(["--health-addr", &format!("127.0.0.1:{}", free_port())])
        .args(["--admin-addr", &format!("127.0.0.1:{}", free_port())])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/podtrace.yaml"));
}

#[test]
fn metrics_over_tls_are_read_by_top_with_the_ca_and_refused_without_it() {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let dir = tempdir("tls");
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert =
        CertificateParams::new(vec!["localhost".to_owned()]).unwrap().signed_by(&key, &ca).unwrap();
    let write = |name: &str, text: String| {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p.to_str().unwrap().to_owned()
    };
    let (crt, tls_key, ca_file) = (
        write("tls.crt", cert.pem()),
        write("tls.key", key.serialize_pem()),
        write("ca.crt", ca.pem()),
    );
    let config = dir.join("agent.yaml");
    std::fs::write(&config, trace_of_self()).unwrap();

    // A key that is not a key stops the agent with a message naming the file.
    let bad = Command::new(AGENT)
        .args(["standalone", "--config", config.to_str().unwrap(), "--ebpf=false"])
        .args(["--metrics-tls-cert-file", &crt, "--metrics-tls-key-file", &crt])
        .args(["--metrics-addr", &format!("127.0.0.1:{}", free_port())])
        .args(["--health-addr", &format!("127.0.0.1:{}", free_port())])
        .args(["--admin-addr", &format!("127.0.0.1:{}", free_port())])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(stderr.contains("metrics TLS: private key") && stderr.contains("tls.crt"), "{stderr}");

    let agent = Agent::start(
        &config,
        &["--metrics-tls-cert-file", &crt, "--metrics-tls-key-file", &tls_key],
    );
    wait_for("the pod row in top", || {
        let out = agent.top("https", &["--ca-file", &ca_file]);
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains(" me ")
    });
    // A reader that goes away (`top --once | head -0`) ends it quietly, without a panic.
    let mut closed = Command::new(AGENT)
        .args(["top", "--once", "--ca-file", &ca_file, "--endpoint"])
        .arg(format!("https://localhost:{}", agent.metrics))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(closed.stdout.take());
    let out = closed.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && !stderr.contains("panicked"), "{:?}: {stderr}", out.status);
    // Without the CA the certificate is not trusted; plain HTTP gets no metrics.
    let untrusted = agent.top("https", &[]);
    assert!(!untrusted.status.success());
    assert!(String::from_utf8_lossy(&untrusted.stderr).contains("/metrics"));
    assert!(!agent.top("http", &[]).status.success());
    let _ = std::fs::remove_dir_all(dir);
}

/// What users of the reference systems type: `PROMETHEUS_PORT` (the kernel-metrics reference)
/// moves /metrics, and `health --format json live` (the health-check reference's order) works.
/// With the NATS broker away the agent is Healthy (its data is partial), not Degraded, which is
/// kept for a stale configuration.
#[test]
fn reference_names_work_and_a_broker_outage_leaves_the_agent_healthy() {
    let dir = tempdir("reference");
    let config = dir.join("agent.yaml");
    std::fs::write(&config, trace_of_self()).unwrap();
    let (port, health, admin, nats) = (free_port(), free_port(), free_port(), free_port());
    let child = Command::new(AGENT)
        .args(["standalone", "--config", config.to_str().unwrap(), "--ebpf=false"])
        .args(["--metrics-addr", "127.0.0.1:3000"])
        .args(["--health-addr", &format!("127.0.0.1:{health}")])
        .args(["--admin-addr", &format!("127.0.0.1:{admin}")])
        .args(["--nats-url", &format!("nats://127.0.0.1:{nats}")])
        .env("PROMETHEUS_PORT", port.to_string())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let agent = Agent { child, metrics: port, health };
    let series = "podtrace_process_threads{namespace=\"t\",pod=\"me\"";
    wait_for("/metrics on PROMETHEUS_PORT", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
            && get(agent.metrics, "/metrics").contains(series)
    });
    let json = || {
        Command::new(AGENT)
            .args(["health", "--format", "json", "live", "--endpoint"])
            .arg(format!("127.0.0.1:{health}"))
            .output()
            .unwrap()
    };
    wait_for("health Healthy", || {
        let out = json();
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        report["level"] == "Healthy" && out.status.code() == Some(0)
    });
    let report: serde_json::Value = serde_json::from_slice(&json().stdout).unwrap();
    let reasons = report["reasons"].to_string();
    assert!(reasons.contains("podtrace.exporters"), "{report:#}");
    let _ = std::fs::remove_dir_all(dir);
}
