//! `kubectl podtrace` (the `kubectl-podtrace` binary) against the real API server: the real
//! operator rolls up NodeTrace statuses written as the agents write them (their field manager,
//! their status lines; no fake agent runs, so nothing else writes them), and the plugin's
//! `status` and `health` output, as JSON, is compared with what was written. `top` reads agents
//! through the pod proxy, which needs a kubelet and a real agent: `node::plugin`.

mod health;
mod path;
mod rbac;
mod status;

use anyhow::{Context, Result, bail};
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use podtrace_api::NodeTrace;
use podtrace_e2e::ControlPlane;
use std::{path::Path, process::Command};

/// What a `kubectl-podtrace` run printed.
pub struct Run {
    /// Exit code.
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

/// Runs `kubectl-podtrace` with `args` and the control plane's (admin) kubeconfig.
pub fn plugin(cp: &ControlPlane, args: &[&str]) -> Result<Run> {
    plugin_as(&cp.kubeconfig, args)
}

/// Runs `kubectl-podtrace` with `args` and `kubeconfig`.
pub fn plugin_as(kubeconfig: &Path, args: &[&str]) -> Result<Run> {
    let out = Command::new(podtrace_e2e::binary("kubectl-podtrace"))
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .env_remove("KUBECONFIG")
        .output()
        .context("running kubectl-podtrace")?;
    Ok(Run {
        code: out.status.code().context("kubectl-podtrace killed by a signal")?,
        stdout: String::from_utf8(out.stdout)?,
        stderr: String::from_utf8(out.stderr)?,
    })
}

/// Runs `kubectl-podtrace` and returns its output, failing unless it exits with 0.
pub fn plugin_ok(cp: &ControlPlane, args: &[&str]) -> Result<String> {
    let run = plugin(cp, args)?;
    if run.code != 0 {
        bail!("kubectl-podtrace {} exited with {}: {}", args.join(" "), run.code, run.stderr);
    }
    Ok(run.stdout)
}

/// Writes `status` on NodeTrace `node` as its agent does: server-side apply under the field
/// manager `podtrace-agent`.
pub async fn agent_writes(client: &Client, node: &str, status: serde_json::Value) {
    let body = serde_json::json!({"apiVersion": "podtrace.dev/v1alpha1", "kind": "NodeTrace",
        "status": status});
    Api::<NodeTrace>::all(client.clone())
        .patch_status(node, &PatchParams::apply("podtrace-agent").force(), &Patch::Apply(&body))
        .await
        .unwrap_or_else(|e| panic!("writing NodeTrace {node} status: {e}"));
}
