use super::{chart, ci_values, helm};
use podtrace_e2e::{FreshControlPlane, repo_root, tool, with_crds};

/// Installs the Prometheus Operator's CRDs (its binary prints them) into a control plane.
pub(super) fn install_prometheus_operator_crds(cp: &podtrace_e2e::ControlPlane) {
    let crds = std::process::Command::new(tool("prometheus-operator").unwrap())
        .arg("crds")
        .output()
        .unwrap();
    assert!(crds.status.success());
    // Server-side: the client-side last-applied annotation would exceed 256 KiB.
    let out = cp.kubectl(
        &["apply", "--server-side", "-f", "-"],
        Some(&String::from_utf8(crds.stdout).unwrap()),
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    cp.wait_established(&[
        "crd/servicemonitors.monitoring.coreos.com",
        "crd/prometheusrules.monitoring.coreos.com",
        "crd/prometheuses.monitoring.coreos.com",
    ])
    .unwrap();
}

#[test]
fn helm_lint_is_clean_with_every_ci_values_file() {
    let out = helm(&["lint", "--strict", &chart()], None);
    assert!(out.contains("0 chart(s) failed"), "{out}");
    for values in ci_values() {
        let out = helm(&["lint", "--strict", &chart(), "-f", &values], None);
        assert!(out.contains("0 chart(s) failed"), "{values}: {out}");
    }
}

#[test]
fn values_schema_rejects_wrong_types() {
    let out = std::process::Command::new(tool("helm").unwrap())
        .args([
            "template",
            "x",
            &chart(),
            "--set",
            "agent.metricsPort=http",
            "--set",
            "operator.replicas=0",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("/agent/metricsPort") && err.contains("want integer"), "{err}");
    assert!(err.contains("/operator/replicas"), "{err}");
}

#[test]
fn every_ci_values_rendering_is_accepted_by_the_api_server() {
    let cp = with_crds();
    install_prometheus_operator_crds(cp);
    let _ = cp.kubectl(&["create", "namespace", "podtrace-dryrun"], None);
    for values in ci_values() {
        let rendered = helm(
            &[
                "template",
                "podtrace",
                &chart(),
                "-n",
                "podtrace-dryrun",
                "-f",
                &values,
                "--api-versions",
                "monitoring.coreos.com/v1/ServiceMonitor",
                "--api-versions",
                "monitoring.coreos.com/v1/PrometheusRule",
            ],
            None,
        );
        let out = cp.kubectl(
            &["apply", "--server-side", "--dry-run=server", "--force-conflicts", "-f", "-"],
            Some(&rendered),
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{values}: {}", String::from_utf8_lossy(&out.stderr));
        let kinds = rendered.matches("\nkind: ").count();
        assert_eq!(
            stdout.lines().count(),
            kinds,
            "{values}: not every object was applied:\n{stdout}"
        );
        if values.ends_with("everything-on-values.yaml") {
            for kind in ["servicemonitor", "prometheusrule", "poddisruptionbudget", "networkpolicy"]
            {
                assert!(stdout.contains(&format!("{kind}.")), "{values}: no {kind} in\n{stdout}");
            }
        }
    }
}

#[test]
fn helm_install_and_upgrade_succeed_on_a_fresh_cluster() {
    let cp = FreshControlPlane::start("helm").unwrap();
    let kc = cp.kubeconfig.clone();
    helm(
        &["install", "podtrace", &chart(), "-n", "podtrace-system", "--create-namespace"],
        Some(&kc),
    );
    let deploy =
        cp.kubectl_ok(&["get", "deploy,ds,svc,sa", "-n", "podtrace-system", "-o", "name"]).unwrap();
    for want in [
        "deployment.apps/podtrace-operator",
        "daemonset.apps/podtrace-agent",
        "service/podtrace-agent",
        "service/podtrace-operator-metrics",
        "serviceaccount/podtrace-agent",
    ] {
        assert!(deploy.contains(want), "{want} missing after install:\n{deploy}");
    }
    let crds = cp.kubectl_ok(&["get", "crd", "-o", "name"]).unwrap();
    // Every CRD the chart ships (crds/ holds one file per CRD).
    let shipped = std::fs::read_dir(format!("{}/files/crds", chart())).unwrap().count();
    assert_eq!(shipped, 4, "MonitoringProfile, PodTrace, PodTraceProfile, NodeTrace");
    assert_eq!(crds.matches("podtrace.dev").count(), shipped, "{crds}");

    // An upgrade changes a value and keeps the release working.
    helm(
        &[
            "upgrade",
            "podtrace",
            &chart(),
            "-n",
            "podtrace-system",
            "--set",
            "operator.replicas=2",
            "--set",
            "logging.level=debug",
        ],
        Some(&kc),
    );
    let replicas = cp
        .kubectl_ok(&[
            "get",
            "deploy",
            "podtrace-operator",
            "-n",
            "podtrace-system",
            "-o",
            "jsonpath={.spec.replicas}",
        ])
        .unwrap();
    assert_eq!(replicas, "2");
    let pdb = cp.kubectl_ok(&["get", "pdb", "-n", "podtrace-system", "-o", "name"]).unwrap();
    assert!(pdb.contains("podtrace-operator"), "two replicas get a PodDisruptionBudget: {pdb}");
    let status = helm(&["status", "podtrace", "-n", "podtrace-system", "-o", "json"], Some(&kc));
    assert!(
        status.contains(r#""status":"deployed""#) && status.contains(r#""version":2"#),
        "{status}"
    );
}

#[test]
fn kubectl_apply_of_the_generated_manifests_works_on_a_fresh_cluster() {
    let cp = FreshControlPlane::start("manifests").unwrap();
    let path = repo_root().join("manifests/podtrace.yaml");
    let out = cp.kubectl_ok(&["apply", "--server-side", "-f", path.to_str().unwrap()]).unwrap();
    let manifest = std::fs::read_to_string(&path).unwrap();
    assert_eq!(out.lines().count(), manifest.matches("\nkind: ").count(), "{out}");
    let names =
        cp.kubectl_ok(&["get", "deploy,ds", "-n", "podtrace-system", "-o", "name"]).unwrap();
    assert!(
        names.contains("deployment.apps/podtrace-operator")
            && names.contains("daemonset.apps/podtrace-agent"),
        "{names}"
    );
}

/// The environment variables a container of `kind` sets in the rendered chart.
fn container_env(rendered: &str, kind: &str) -> Vec<String> {
    use serde::Deserialize;
    let mut names = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(rendered) {
        let v = serde_json::Value::deserialize(doc).unwrap();
        if v["kind"] != kind {
            continue;
        }
        for c in v["spec"]["template"]["spec"]["containers"].as_array().unwrap() {
            for e in c["env"].as_array().unwrap() {
                names.push(e["name"].as_str().unwrap().to_owned());
            }
        }
    }
    assert!(!names.is_empty(), "no {kind} env in the rendering");
    names
}

#[test]
fn every_environment_variable_the_chart_sets_is_read_by_the_binary() {
    let everything =
        ci_values().into_iter().find(|f| f.ends_with("everything-on-values.yaml")).unwrap();
    let rendered = helm(&["template", "podtrace", &chart(), "-f", &everything], None);
    for (kind, bin, args) in [
        ("Deployment", "podtrace-operator", vec!["--help"]),
        ("DaemonSet", "podtrace-agent", vec!["run", "--help"]),
    ] {
        let help =
            std::process::Command::new(podtrace_e2e::binary(bin)).args(&args).output().unwrap();
        let help = String::from_utf8(help.stdout).unwrap();
        for name in container_env(&rendered, kind) {
            // POD_IP only feeds $(POD_IP) in PODTRACE_METRICS_ADDR.
            if name == "POD_IP" {
                continue;
            }
            assert!(
                help.contains(&format!("[env: {name}=")),
                "{bin} reads no {name}, which the chart's {kind} sets"
            );
        }
    }
}

/// Every file the chart points a binary at (`…_FILE` variables, with every option on) lies in a
/// volume mounted into that container, and, for a Secret volume, is one of the keys it projects:
/// a path and a mount that drifted apart would only show on a real node, as a missing file.
#[test]
fn every_file_the_chart_names_in_an_environment_variable_is_mounted() {
    use serde::Deserialize;
    use serde_json::Value;
    let everything =
        ci_values().into_iter().find(|f| f.ends_with("everything-on-values.yaml")).unwrap();
    let rendered = helm(&["template", "podtrace", &chart(), "-f", &everything], None);
    let mut checked = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(&rendered) {
        let v = Value::deserialize(doc).unwrap();
        let pod = &v["spec"]["template"]["spec"];
        let Some(containers) = pod["containers"].as_array() else { continue };
        let volumes = pod["volumes"].as_array().cloned().unwrap_or_default();
        for c in containers {
            let mounts = c["volumeMounts"].as_array().cloned().unwrap_or_default();
            let files = c["env"].as_array().into_iter().flatten().filter(|e| {
                e["name"].as_str().unwrap().ends_with("_FILE") && e["value"].is_string()
            });
            for e in files {
                let (name, path) = (e["name"].as_str().unwrap(), e["value"].as_str().unwrap());
                let mount = mounts
                    .iter()
                    .find(|m| path.starts_with(&format!("{}/", m["mountPath"].as_str().unwrap())));
                let Some(mount) = mount else {
                    panic!("{} {name}={path}: no volume is mounted there", v["kind"])
                };
                let file = &path[mount["mountPath"].as_str().unwrap().len() + 1..];
                let volume = volumes.iter().find(|vol| vol["name"] == mount["name"]).unwrap();
                if let Some(items) = volume["secret"]["items"].as_array() {
                    assert!(
                        items.iter().any(|i| i["path"] == file),
                        "{} {name}={path}: Secret volume {} projects only {items:?}",
                        v["kind"],
                        mount["name"]
                    );
                }
                checked.push(name.to_owned());
            }
        }
    }
    for name in
        ["PODTRACE_OTLP_CA_FILE", "PODTRACE_OTLP_CLIENT_KEY_FILE", "PODTRACE_MQTT_CREDENTIALS_FILE"]
    {
        assert!(checked.iter().any(|c| c == name), "{name} not rendered: {checked:?}");
    }
}
