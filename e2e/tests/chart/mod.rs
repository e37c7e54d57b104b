//! The Helm chart and the generated manifests against the real API server, Helm, the
//! Prometheus Operator and promtool.

mod helm;
mod prometheus_operator;
mod promtool;

use podtrace_e2e::{repo_root, tool};
use std::process::Command;

/// The chart's folder.
fn chart() -> String {
    repo_root().join("charts/podtrace").display().to_string()
}

/// Runs Helm with `args` (and `--kubeconfig` when given), returning stdout or failing with stderr.
fn helm(args: &[&str], kubeconfig: Option<&std::path::Path>) -> String {
    let mut cmd = Command::new(tool("helm").unwrap());
    if let Some(k) = kubeconfig {
        cmd.arg("--kubeconfig").arg(k);
    }
    let out = cmd.args(args).output().expect("running helm");
    assert!(
        out.status.success(),
        "helm {} failed:\n{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The values files CI renders the chart with.
fn ci_values() -> Vec<String> {
    let mut files: Vec<String> = std::fs::read_dir(repo_root().join("charts/podtrace/ci"))
        .unwrap()
        .map(|e| e.unwrap().path().display().to_string())
        .filter(|p| p.ends_with(".yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 3, "{files:?}");
    files
}
