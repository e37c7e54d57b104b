//! The real-cluster test harness: one etcd + kube-apiserver per test run (started through
//! `e2e/scripts/control-plane.sh`, binaries built from the Go module proxy and cached), and a
//! fresh namespace per test.
//!
//! Cleanup does not depend on this process exiting cleanly: the control plane is started with
//! `--owner-pid`, and a watchdog stops it as soon as the test process is gone (success, panic,
//! Ctrl-C or SIGKILL alike).

pub mod node;
pub mod prometheus;
pub mod promql;

use anyhow::{Context, Result, bail};
use k8s_openapi::api::core::v1::Namespace;
use kube::{
    Api, Client, Config,
    api::{DeleteParams, PostParams},
    config::{KubeConfigOptions, Kubeconfig},
};
use std::{
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    sync::{
        OnceLock,
        atomic::{AtomicU32, Ordering},
    },
};

/// The repository root (the parent of `e2e/`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("e2e/ has a parent").to_path_buf()
}

/// A binary of the workspace (`podtrace-agent`, `podtrace-operator`), built by
/// `cargo build -p <package>` next to the test binary (`make e2e` builds them first).
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let dir = exe.parent().and_then(Path::parent).expect("target/<profile>/deps/<test>");
    let bin = dir.join(name);
    assert!(
        bin.exists(),
        "{} not found: run `cargo build -p {name}` first (`make e2e` does)",
        bin.display()
    );
    bin
}

/// An example of the workspace (`probe_status`), built by `cargo build --example <name>` next to
/// the test binary (`make e2e` builds it first).
pub fn example(name: &str) -> PathBuf {
    let bin = binary("podtrace-agent").with_file_name("examples").join(name);
    assert!(
        bin.exists(),
        "{} not found: run `cargo build -p podtrace-ebpf --example {name}` first (`make e2e` does)",
        bin.display()
    );
    bin
}

/// A free TCP port on 127.0.0.1 (free when asked; bind it soon).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("binding 127.0.0.1:0")
}

/// A running etcd + kube-apiserver on 127.0.0.1.
pub struct ControlPlane {
    /// Folder with certificates, logs and the kubeconfig.
    pub dir: PathBuf,
    /// The admin kubeconfig.
    pub kubeconfig: PathBuf,
    /// Folder of kube-apiserver, etcd and the matching kubectl.
    pub bin: PathBuf,
}

static CONTROL_PLANE: OnceLock<ControlPlane> = OnceLock::new();
static CRDS: OnceLock<()> = OnceLock::new();
static NAMESPACES: AtomicU32 = AtomicU32::new(0);

/// The control plane of this test run, started on first use.
pub fn control_plane() -> &'static ControlPlane {
    CONTROL_PLANE.get_or_init(|| ControlPlane::start().expect("starting etcd and kube-apiserver"))
}

/// The control plane with podtrace's CRDs installed (`kubectl apply --server-side -f crds/`).
pub fn with_crds() -> &'static ControlPlane {
    let cp = control_plane();
    CRDS.get_or_init(|| cp.install_crds().expect("installing crds/"));
    cp
}

/// A control plane of its own, for a test that needs an empty cluster (a first install);
/// stopped when dropped (and by the watchdog if the test process dies first).
pub struct FreshControlPlane(ControlPlane);

impl std::ops::Deref for FreshControlPlane {
    type Target = ControlPlane;
    fn deref(&self) -> &ControlPlane {
        &self.0
    }
}

impl Drop for FreshControlPlane {
    fn drop(&mut self) {
        let script = repo_root().join("e2e/scripts/control-plane.sh");
        let _ = Command::new("bash").arg(script).arg("down").arg(&self.0.dir).status();
    }
}

impl FreshControlPlane {
    /// Starts another etcd + kube-apiserver, independent of the shared one.
    pub fn start(name: &str) -> Result<Self> {
        let n = NAMESPACES.fetch_add(1, Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("podtrace-e2e-{}-{name}-{n}", std::process::id()));
        Ok(Self(ControlPlane::start_in(dir)?))
    }
}

/// The path of a tool built by `e2e/scripts/build-tools.sh` (`helm`, `prometheus-operator`),
/// building it first if needed.
pub fn tool(name: &str) -> Result<PathBuf> {
    podtrace_test_support::tool(name).map_err(anyhow::Error::msg)
}

impl ControlPlane {
    fn start() -> Result<Self> {
        Self::start_in(std::env::temp_dir().join(format!("podtrace-e2e-{}", std::process::id())))
    }

    fn start_in(dir: PathBuf) -> Result<Self> {
        let script = repo_root().join("e2e/scripts/control-plane.sh");
        let pid = std::process::id().to_string();
        let status = Command::new("bash")
            .arg(&script)
            .args(["up", dir.to_str().context("temp dir is not UTF-8")?, "--owner-pid", &pid])
            .stdout(Stdio::inherit())
            .stderr(Stdio::inherit())
            .status()
            .context("running e2e/scripts/control-plane.sh")?;
        if !status.success() {
            bail!("control-plane.sh up failed ({status}); logs in {}", dir.display());
        }
        let bin = Command::new("bash").arg(&script).arg("bin").output()?;
        let bin = PathBuf::from(String::from_utf8(bin.stdout)?.trim());
        Ok(Self { kubeconfig: dir.join("kubeconfig"), dir, bin })
    }

    /// Installs `crds/` with server-side apply and waits until `kubectl explain` serves them.
    pub fn install_crds(&self) -> Result<()> {
        let crds = repo_root().join("crds");
        self.kubectl_ok(&["apply", "--server-side", "-f", crds.to_str().unwrap()])?;
        self.wait_established(&[
            "crd/monitoringprofiles.podtrace.dev",
            "crd/podtraces.podtrace.dev",
            "crd/nodetraces.podtrace.dev",
            "crd/podtraceprofiles.podtrace.dev",
        ])?;
        // Established comes before the API server publishes the new OpenAPI schema that
        // `kubectl explain` reads; wait for that too, so tests see what a user sees a moment later.
        for _ in 0..120 {
            if self.kubectl(&["explain", "nodetrace.status"], None).status.success() {
                return Ok(());
            }
            std::thread::sleep(std::time::Duration::from_millis(500));
        }
        bail!("kubectl explain nodetrace.status still fails 60s after the CRDs were established")
    }

    /// Waits until the CRDs (`crd/<name>`) are Established. `kubectl wait` fails at once on a
    /// CRD the API server has not given a status yet, so it is retried for up to a minute.
    pub fn wait_established(&self, crds: &[&str]) -> Result<()> {
        let mut args = vec!["wait", "--for=condition=Established", "--timeout=5s"];
        args.extend_from_slice(crds);
        let mut last = String::new();
        for _ in 0..12 {
            match self.kubectl_ok(&args) {
                Ok(_) => return Ok(()),
                Err(e) => last = e.to_string(),
            }
            std::thread::sleep(std::time::Duration::from_millis(500));
        }
        bail!("CRDs not established: {last}")
    }

    /// Runs this control plane's kubectl with `args`, feeding `stdin` if given.
    pub fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> Output {
        use std::io::Write;
        let mut child = Command::new(self.bin.join("kubectl"))
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("running kubectl");
        let mut pipe = child.stdin.take().unwrap();
        if let Some(input) = stdin {
            pipe.write_all(input.as_bytes()).expect("writing kubectl's stdin");
        }
        drop(pipe);
        child.wait_with_output().expect("waiting for kubectl")
    }

    /// Like [`kubectl`](Self::kubectl) without stdin, failing with kubectl's stderr on error.
    pub fn kubectl_ok(&self, args: &[&str]) -> Result<String> {
        let out = self.kubectl(args, None);
        if !out.status.success() {
            bail!("kubectl {} failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
        }
        Ok(String::from_utf8(out.stdout)?)
    }

    /// A kube client for the admin user. Create one per test: a client belongs to the tokio
    /// runtime it was made in, and every `#[tokio::test]` has its own.
    pub async fn client(&self) -> Result<Client> {
        let kubeconfig = Kubeconfig::read_from(&self.kubeconfig)?;
        let config =
            Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
        Ok(Client::try_from(config)?)
    }

    /// Creates a namespace of its own for one test, named after it.
    pub async fn namespace(&self, client: &Client, test: &str) -> Result<TestNamespace> {
        let n = NAMESPACES.fetch_add(1, Ordering::Relaxed);
        let mut name: String = test
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' })
            .take(40)
            .collect();
        name = format!("{}-{}-{n}", name.trim_matches('-'), std::process::id());
        let ns: Namespace = serde_json::from_value(serde_json::json!({
            "metadata": { "name": name, "labels": { "podtrace.dev/e2e": "true" } }
        }))?;
        Api::<Namespace>::all(client.clone()).create(&PostParams::default(), &ns).await?;
        Ok(TestNamespace { name, client: client.clone() })
    }
}

/// A namespace owned by one test. Deleted when the test calls [`TestNamespace::delete`]; the
/// whole control plane goes away at the end of the run in any case.
pub struct TestNamespace {
    /// The namespace's name.
    pub name: String,
    client: Client,
}

impl TestNamespace {
    /// Deletes the namespace (without kube-controller-manager it stays Terminating, which is
    /// harmless: nothing else uses it).
    pub async fn delete(self) -> Result<()> {
        Api::<Namespace>::all(self.client).delete(&self.name, &DeleteParams::default()).await?;
        Ok(())
    }
}

/// Whether every field of `expected` is present in `actual` with the same value (objects are
/// compared key by key, arrays and scalars exactly). Returns the first differing path.
pub fn json_subset(
    expected: &serde_json::Value,
    actual: &serde_json::Value,
    path: &str,
) -> Result<()> {
    use serde_json::Value;
    match (expected, actual) {
        (Value::Object(e), Value::Object(a)) => {
            for (k, v) in e {
                let child = format!("{path}.{k}");
                let got = a.get(k).with_context(|| format!("{child} is missing"))?;
                json_subset(v, got, &child)?;
            }
            Ok(())
        }
        (e, a) if e == a => Ok(()),
        (e, a) => bail!("{path}: expected {e}, got {a}"),
    }
}

/// Every YAML document of the files in `dir` whose name starts with `prefix`, with its file name.
pub fn yaml_documents(dir: &Path, prefix: &str) -> Result<Vec<(String, serde_json::Value)>> {
    use serde::Deserialize;
    let mut out = Vec::new();
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let file = entry.file_name().to_string_lossy().into_owned();
        if !file.starts_with(prefix) || !file.ends_with(".yaml") {
            continue;
        }
        let text = std::fs::read_to_string(entry.path())?;
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let value = serde_json::Value::deserialize(doc).with_context(|| file.clone())?;
            if !value.is_null() {
                out.push((file.clone(), value));
            }
        }
    }
    Ok(out)
}
