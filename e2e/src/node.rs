//! A real single-node cluster for the tests that run podtrace the way users do: the control
//! plane plus kube-controller-manager, kube-scheduler, a kubelet and kube-proxy on containerd,
//! runc and the CNI bridge, inside network and mount namespaces of its own
//! (`e2e/scripts/node.sh`). Images come from `scripts/images.sh` (`make images`).
//!
//! One node serves the whole test run; [`node`] hands it out to one test at a time, because two
//! podtrace releases on one node would fight over its NodeTrace. Like the control plane, it is
//! started with `--owner-pid`, so a watchdog stops it when the test process is gone.

use crate::{ControlPlane, repo_root};
use anyhow::{Context, Result, bail};
use std::{
    collections::BTreeMap,
    path::PathBuf,
    process::{Command, Output, Stdio},
    sync::{Mutex, MutexGuard, OnceLock},
    time::{Duration, Instant},
};

/// The node cluster.
pub struct Node {
    /// Its control plane (kubeconfig, kubectl, folder with logs).
    pub cp: ControlPlane,
    /// The node's name.
    pub name: String,
    /// The node's address (inside its network namespace).
    pub ip: String,
    /// The kubelet's cgroupRoot: every pod of this run is under `<root>/kubepods`.
    pub kubelet_cgroup_root: String,
    holder: u32,
}

impl std::ops::Deref for Node {
    type Target = ControlPlane;
    fn deref(&self) -> &ControlPlane {
        &self.cp
    }
}

static NODE: OnceLock<Node> = OnceLock::new();
static TURN: Mutex<()> = Mutex::new(());

/// The node of this test run (started on first use) and the turn to use it: hold the guard for
/// the whole test. `None` (SKIPPED printed) when not root; under CI (`CI` set) a missing root
/// fails the test instead, so that a CI that lost root cannot pass.
pub fn node(test: &str) -> Option<(MutexGuard<'static, ()>, &'static Node)> {
    if !podtrace_test_support::require_root(test, "namespaces, cgroups and eBPF of a real node") {
        return None;
    }
    // A test that failed while holding the turn poisons it; the next one may still run.
    let turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    let node = NODE
        .get_or_init(|| Node::start().expect("starting the node cluster (e2e/scripts/node.sh)"));
    Some((turn, node))
}

/// The images `make images` builds, which the node imports at start.
pub const PRODUCT_IMAGES: [&str; 2] = ["operator", "agent"];

impl Node {
    fn start() -> Result<Self> {
        let images = repo_root().join("target/images");
        for image in PRODUCT_IMAGES {
            let tar = images.join(format!("{image}.tar"));
            if !tar.exists() {
                bail!("{} is missing: run `make images` first (`make e2e` does)", tar.display());
            }
        }
        let dir = std::env::temp_dir().join(format!("podtrace-e2e-{}-node", std::process::id()));
        let script = repo_root().join("e2e/scripts/node.sh");
        let started = Instant::now();
        let status = Command::new("bash")
            .arg(&script)
            .arg("up")
            .arg(&dir)
            .args(["--owner-pid", &std::process::id().to_string()])
            .stdout(Stdio::inherit())
            .stderr(Stdio::inherit())
            .status()
            .context("running e2e/scripts/node.sh")?;
        if !status.success() {
            bail!("node.sh up failed ({status}); logs in {}", dir.display());
        }
        eprintln!("node cluster up in {:.1}s", started.elapsed().as_secs_f64());
        let env: BTreeMap<String, String> = std::fs::read_to_string(dir.join("node.env"))?
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        let get = |k: &str| env.get(k).cloned().with_context(|| format!("node.env has no {k}"));
        let bin = Command::new("bash")
            .arg(repo_root().join("e2e/scripts/control-plane.sh"))
            .arg("bin")
            .output()?;
        Ok(Self {
            cp: ControlPlane {
                kubeconfig: dir.join("kubeconfig"),
                dir: dir.clone(),
                bin: PathBuf::from(String::from_utf8(bin.stdout)?.trim()),
            },
            name: get("NODE_NAME")?,
            ip: get("NODE_IP")?,
            kubelet_cgroup_root: get("KUBELET_CGROUP_ROOT")?,
            holder: get("HOLDER_PID")?.parse()?,
        })
    }

    /// Runs `program args…` in the node's network and mount namespaces (where pod IPs answer).
    pub fn run_in_node(&self, program: &str, args: &[&str]) -> Output {
        Command::new("nsenter")
            .args(["-t", &self.holder.to_string(), "-n", "-m", "--", program])
            .args(args)
            .output()
            .expect("running nsenter")
    }

    /// `helm args…` against this cluster, failing with helm's output on error.
    pub fn helm(&self, args: &[&str]) -> Result<String> {
        let out = Command::new(crate::tool("helm")?)
            .args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("HELM_CACHE_HOME", self.dir.join("helm/cache"))
            .env("HELM_CONFIG_HOME", self.dir.join("helm/config"))
            .env("HELM_DATA_HOME", self.dir.join("helm/data"))
            .output()?;
        if !out.status.success() {
            bail!(
                "helm {} failed: {}{}",
                args.join(" "),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8(out.stdout)?)
    }

    /// The GET of `path` on port `port` of pod `namespace/pod`, through the API server's pod
    /// proxy (the way `kubectl podtrace top` and users without a port-forward reach an agent).
    pub fn pod_get(&self, namespace: &str, pod: &str, port: u16, path: &str) -> Result<String> {
        let path = path.trim_start_matches('/');
        self.kubectl_ok(&[
            "get",
            "--raw",
            &format!("/api/v1/namespaces/{namespace}/pods/{pod}:{port}/proxy/{path}"),
        ])
    }

    /// Evaluates the instant PromQL query `promql` on the Prometheus behind `service`
    /// (`name:port`) of `namespace`, through the API server's service proxy.
    pub fn prometheus_query(
        &self,
        namespace: &str,
        service: &str,
        promql: &str,
    ) -> Result<Vec<crate::prometheus::Sample>> {
        let url = reqwest::Url::parse_with_params("http://x/api/v1/query", &[("query", promql)])?;
        let path = format!(
            "/api/v1/namespaces/{namespace}/services/{service}/proxy/api/v1/query?{}",
            url.query().unwrap_or_default()
        );
        crate::prometheus::parse_query(promql, &self.kubectl_ok(&["get", "--raw", &path])?)
    }

    /// The directory of the cgroup `relative` (under the kubelet's root) in `hierarchy`
    /// (`memory`, `cpu`, `unified`, …) of the host's cgroup tree.
    pub fn cgroup_dir(&self, hierarchy: &str, relative: &str) -> PathBuf {
        PathBuf::from("/sys/fs/cgroup")
            .join(hierarchy)
            .join(self.kubelet_cgroup_root.trim_start_matches('/'))
            .join(relative.trim_start_matches('/'))
    }
}

/// Waits until `check` returns `Ok`, retrying every 500 ms for up to `timeout`; the error says
/// what was awaited and the last failure.
pub fn wait_until<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Result<T>) -> T {
    let start = Instant::now();
    loop {
        match check() {
            Ok(v) => return v,
            Err(e) if start.elapsed() > timeout => {
                panic!("{what}: not reached after {timeout:?}: {e:#}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(500)),
        }
    }
}
