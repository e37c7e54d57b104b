//! podtrace next to a Prometheus Operator, as users run it beside kube-prometheus-stack: the
//! operator runs as a pod on the real node (image built here from its Go module) and manages a
//! Prometheus (Debian's binary in an image built here, with the operator's config reloader),
//! which finds the agents and the operator through the chart's ServiceMonitors, scrapes them,
//! answers the reference's PromQL and the dashboard's queries, and fires the chart's alerts.

use super::{
    How, Installed, RELEASE_NAMESPACE, get_json, helm_install, namespace, pod_name, set_agent_env,
    workload::{self, fill_memory, memory_dir},
};
use anyhow::{Context, Result, ensure};
use podtrace_e2e::{
    node::{Node, node, wait_until},
    prometheus::Sample,
    promql::{dashboard_queries, plausible, reference_queries},
    repo_root, tool,
};
use std::{collections::BTreeSet, process::Command, time::Duration};

const MONITORING: &str = "monitoring";
const APPS: &str = "metrics";

/// The Prometheus Operator (its own ServiceAccount and the ClusterRole its documentation
/// lists), a ServiceAccount for Prometheus that may discover targets, read /metrics and pass the
/// agent's metricsAuth, and a `Prometheus` that selects every ServiceMonitor and rule.
fn monitoring_stack(operator_version: &str, prometheus_version: &str) -> String {
    format!(
        r#"
apiVersion: v1
kind: ServiceAccount
metadata: {{name: prometheus-operator, namespace: {MONITORING}}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {{name: e2e-prometheus-operator}}
rules:
  - apiGroups: [monitoring.coreos.com]
    resources: ["*"]
    verbs: ["*"]
  - apiGroups: [apps]
    resources: [statefulsets]
    verbs: ["*"]
  - apiGroups: [""]
    resources: [configmaps, secrets]
    verbs: ["*"]
  - apiGroups: [""]
    resources: [pods]
    verbs: [list, delete]
  - apiGroups: [""]
    resources: [services, services/finalizers, endpoints]
    verbs: [get, create, update, delete]
  - apiGroups: [""]
    resources: [nodes]
    verbs: [list, watch]
  - apiGroups: [""]
    resources: [namespaces]
    verbs: [get, list, watch]
  - apiGroups: ["", events.k8s.io]
    resources: [events]
    verbs: [create, patch]
  - apiGroups: [discovery.k8s.io]
    resources: [endpointslices]
    verbs: [get, list, watch, create, update, delete]
  - apiGroups: [networking.k8s.io]
    resources: [ingresses]
    verbs: [get, list, watch]
  - apiGroups: [storage.k8s.io]
    resources: [storageclasses]
    verbs: [get]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {{name: e2e-prometheus-operator}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: e2e-prometheus-operator}}
subjects: [{{kind: ServiceAccount, name: prometheus-operator, namespace: {MONITORING}}}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: prometheus-operator, namespace: {MONITORING}}}
spec:
  selector: {{matchLabels: {{app: prometheus-operator}}}}
  template:
    metadata: {{labels: {{app: prometheus-operator}}}}
    spec:
      serviceAccountName: prometheus-operator
      terminationGracePeriodSeconds: 1
      securityContext: {{runAsNonRoot: true, runAsUser: 65534}}
      containers:
        - name: operator
          image: podtrace.test/prometheus-operator:{operator_version}
          imagePullPolicy: Never
          args:
            - --prometheus-config-reloader=podtrace.test/prometheus-config-reloader:{operator_version}
            - --log-format=logfmt
---
apiVersion: v1
kind: ServiceAccount
metadata: {{name: prometheus, namespace: {MONITORING}}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {{name: e2e-prometheus}}
rules:
  - apiGroups: [""]
    resources: [nodes, nodes/metrics, services, endpoints, pods]
    verbs: [get, list, watch]
  - apiGroups: [discovery.k8s.io]
    resources: [endpointslices]
    verbs: [get, list, watch]
  - apiGroups: [""]
    resources: [configmaps]
    verbs: [get]
  - nonResourceURLs: [/metrics]
    verbs: [get]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {{name: e2e-prometheus}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: e2e-prometheus}}
subjects: [{{kind: ServiceAccount, name: prometheus, namespace: {MONITORING}}}]
---
apiVersion: monitoring.coreos.com/v1
kind: Prometheus
metadata: {{name: e2e, namespace: {MONITORING}}}
spec:
  image: podtrace.test/prometheus:{prometheus_version}
  version: {prometheus_version}
  replicas: 1
  serviceAccountName: prometheus
  serviceMonitorSelector: {{}}
  serviceMonitorNamespaceSelector: {{}}
  ruleSelector: {{}}
  ruleNamespaceSelector: {{}}
  scrapeInterval: 5s
  evaluationInterval: 5s
  securityContext: {{runAsNonRoot: true, runAsUser: 65534, fsGroup: 65534}}
"#
    )
}

/// Installs the Prometheus Operator's CRDs, the operator and a Prometheus, and removes them all
/// when dropped.
struct MonitoringStack<'a> {
    node: &'a Node,
}

impl<'a> MonitoringStack<'a> {
    fn start(node: &'a Node) -> Self {
        let stack = Self { node };
        let crds = Command::new(tool("prometheus-operator").unwrap()).arg("crds").output().unwrap();
        assert!(crds.status.success());
        // Server-side: the client-side last-applied annotation would exceed 256 KiB.
        let out = node.kubectl(
            &["apply", "--server-side", "-f", "-"],
            Some(&String::from_utf8_lossy(&crds.stdout)),
        );
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        node.wait_established(&[
            "crd/servicemonitors.monitoring.coreos.com",
            "crd/prometheusrules.monitoring.coreos.com",
            "crd/prometheuses.monitoring.coreos.com",
        ])
        .unwrap();
        namespace(node, MONITORING);
        let operator_version = bash_tool(&["bin", "version"]);
        let prometheus_version = image_tag("prometheus");
        let out = node.kubectl(
            &["apply", "-f", "-"],
            Some(&monitoring_stack(&operator_version, &prometheus_version)),
        );
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        wait_until("the Prometheus pod of the operator ready", Duration::from_secs(180), || {
            let out = node.kubectl_ok(&[
                "rollout",
                "status",
                "statefulset/prometheus-e2e",
                "-n",
                MONITORING,
                "--timeout=2s",
            ]);
            out.map_err(|e| e.context(super::diagnostics(node)))
        });
        stack
    }

    /// Evaluates `promql` on the Prometheus (through the API server's service proxy).
    fn query(&self, promql: &str) -> Result<Vec<Sample>> {
        self.node.prometheus_query(MONITORING, "prometheus-operated:web", promql)
    }

    /// Waits until `promql` returns exactly `want` (each series' value, any order).
    fn wait_values(&self, what: &str, promql: &str, want: &[f64]) -> Vec<Sample> {
        wait_until(what, Duration::from_secs(120), || {
            let samples = self.query(promql)?;
            let mut got: Vec<f64> = samples.iter().map(|s| s.value).collect();
            got.sort_by(f64::total_cmp);
            ensure!(got == want, "{promql} = {samples:?}");
            Ok(samples)
        })
    }
}

impl Drop for MonitoringStack<'_> {
    fn drop(&mut self) {
        let node = self.node;
        let _ = node.kubectl(
            &["delete", "prometheus", "e2e", "-n", MONITORING, "--ignore-not-found"],
            None,
        );
        let _ = node.kubectl(
            &["delete", "namespace", MONITORING, "--ignore-not-found", "--timeout=60s"],
            None,
        );
        for kind in ["clusterrole", "clusterrolebinding"] {
            let _ = node.kubectl(
                &[
                    "delete",
                    kind,
                    "e2e-prometheus-operator",
                    "e2e-prometheus",
                    "--ignore-not-found",
                ],
                None,
            );
        }
        let crds = node.kubectl(&["get", "crd", "-o", "name"], None);
        for crd in String::from_utf8_lossy(&crds.stdout)
            .lines()
            .filter(|c| c.ends_with(".monitoring.coreos.com"))
        {
            let _ = node.kubectl(&["delete", crd], None);
        }
    }
}

fn bash_tool(args: &[&str]) -> String {
    let out = Command::new("bash")
        .arg(repo_root().join("e2e/scripts/build-tools.sh"))
        .args(args)
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// The tag of a test image built by scripts/images.sh (from its OCI layout's index).
fn image_tag(name: &str) -> String {
    let tar = repo_root().join(format!("target/images/{name}.tar"));
    let out = Command::new("tar").arg("-xOf").arg(&tar).arg("./index.json").output().unwrap();
    let index: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let reference =
        index["manifests"][0]["annotations"]["io.containerd.image.name"].as_str().unwrap();
    reference.rsplit(':').next().unwrap().to_owned()
}

/// `helm install` (or upgrade) of podtrace with the ServiceMonitors and PrometheusRule left on
/// `auto` (the Prometheus Operator's API is there), 5 s scrapes and 5 s alert `for:`.
fn install(node: &Node, extra: &[&str]) {
    let mut args =
        vec!["--set", "serviceMonitor.interval=5s", "--set", "prometheusRule.forOverride=5s"];
    args.extend_from_slice(extra);
    helm_install(node, &args);
}

/// Every agent and the operator are scraped (`up == 1`) through the chart's ServiceMonitors,
/// and the agent's series carry the `node` label of the ServiceMonitor's relabelling.
fn check_targets_up(stack: &MonitoringStack) {
    let agents = stack.wait_values("the agent scraped", r#"up{job="podtrace-agent"}"#, &[1.0]);
    let node_label = agents[0].labels.get("node").and_then(|v| v.as_str()).map(str::to_owned);
    assert_eq!(node_label.as_deref(), Some(stack.node.name.as_str()), "{agents:?}");
    stack.wait_values("the operator scraped", r#"up{job="podtrace-operator-metrics"}"#, &[1.0]);
}

#[test]
fn prometheus_operator_scrapes_podtrace_answers_the_reference_promql_and_fires_the_alerts() {
    let Some((_turn, node)) = node(
        "prometheus_operator_scrapes_podtrace_answers_the_reference_promql_and_fires_the_alerts",
    ) else {
        return;
    };
    let stack = MonitoringStack::start(node);
    // Declared after the stack, so dropped before it: the release's ServiceMonitors and
    // PrometheusRule go while their CRDs still exist (else helm uninstall fails half-way).
    let _installed = Installed { node, how: How::Helm };
    // A NATS broker that does not exist: the exporter series exist, disconnected.
    install(node, &["--set", "exporters.nats.url=nats://nats.invalid:4222"]);
    let monitors = get_json(node, &["servicemonitors", "-n", RELEASE_NAMESPACE]).unwrap();
    assert_eq!(monitors["items"].as_array().unwrap().len(), 2, "serviceMonitor.enabled=auto");
    namespace(node, APPS);
    workload::start(node, APPS, &["web", "other"]);
    let out =
        node.kubectl(&["apply", "-f", "-"], Some(&workload::podtrace(APPS, "web", "intensive")));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    check_targets_up(&stack);

    // Only the traced pod has podtrace series.
    let web = pod_name(node, APPS, "app=web").unwrap();
    let query = format!(r#"count by (pod) (podtrace_resource_usage_bytes{{namespace="{APPS}"}})"#);
    wait_until("series of the traced pod only", Duration::from_secs(120), || {
        let pods: BTreeSet<String> = stack
            .query(&query)?
            .iter()
            .filter_map(|s| s.labels.get("pod")?.as_str().map(str::to_owned))
            .collect();
        ensure!(pods == BTreeSet::from([web.clone()]), "pods with series: {pods:?}");
        Ok(())
    });

    check_alert_expressions_use_exported_series(node, &stack);
    stack.wait_values(
        "PodtraceExporterDisconnected firing",
        r#"ALERTS{alertname="PodtraceExporterDisconnected",alertstate="firing",exporter="nats"}"#,
        &[1.0],
    );

    // The memory alerts fire as the pod's usage passes 80, 90 and 95 % of its limit.
    let id = workload::container_id(node, APPS, &web).unwrap();
    let dir = memory_dir(node, APPS, &web, &id).unwrap();
    for (percent, alert) in [
        (85.0, "PodtraceResourceWarning"),
        (92.0, "PodtraceResourceCritical"),
        (97.0, "PodtraceResourceEmergency"),
    ] {
        fill_memory(node, APPS, &web, &dir, percent);
        let firing = format!(
            r#"ALERTS{{alertname="{alert}",alertstate="firing",pod="{web}",resource_type="memory"}}"#
        );
        stack.wait_values(&format!("{alert} firing at {percent} %"), &firing, &[1.0]);
    }
    // Every PromQL example of the reference and every dashboard panel query has data (the
    // alert-level examples too, with the pod at 97 % of its memory limit).
    let mut queries: Vec<(String, String)> =
        reference_queries().into_iter().map(|q| ("reference".to_owned(), q)).collect();
    queries.extend(dashboard_queries());
    wait_until(
        "data for every reference example and dashboard panel",
        Duration::from_secs(120),
        || {
            let mut failures = Vec::new();
            for (origin, q) in &queries {
                match stack.query(q) {
                    // Resources over their limit: only required to evaluate.
                    Ok(s) if s.is_empty() && q.ends_with("> 100") => {}
                    Ok(s) => {
                        if let Err(e) = plausible(q, &s) {
                            failures.push(format!("[{origin}] {q}: {e}"));
                        }
                    }
                    Err(e) => failures.push(format!("[{origin}] {q}: {e}")),
                }
            }
            ensure!(
                failures.is_empty(),
                "{} of {} failed:\n{}",
                failures.len(),
                queries.len(),
                failures.join("\n")
            );
            Ok(())
        },
    );

    node.kubectl_ok(&["exec", "-n", APPS, &web, "--", "rm", "/fill/data"]).unwrap();

    // An agent that cannot start (its metrics address is refused) makes PodtraceAgentDown fire.
    set_agent_env(node, "PODTRACE_METRICS_ADDR=256.0.0.1:3000");
    stack.wait_values(
        "PodtraceAgentDown firing",
        r#"ALERTS{alertname="PodtraceAgentDown",alertstate="firing"}"#,
        &[1.0],
    );
}

/// Each alert's expression names metrics and labels the agent really exports: every metric
/// has series in Prometheus (`up` with the chart's job), and every label the expression
/// matches or aggregates by is present on them.
fn check_alert_expressions_use_exported_series(node: &Node, stack: &MonitoringStack) {
    let rule = get_json(node, &["prometheusrule", "podtrace", "-n", RELEASE_NAMESPACE]).unwrap();
    let metric = regex_lite::Regex::new(r"\b(podtrace_[a-z_]+|up)\b(\{([^}]*)\})?").unwrap();
    let by = regex_lite::Regex::new(r"\bby \(([^)]*)\)").unwrap();
    let matcher = regex_lite::Regex::new(r"([a-z_]+)\s*(=~|!=|!~|=)").unwrap();
    let mut checked = 0;
    for group in rule["spec"]["groups"].as_array().unwrap() {
        for r in group["rules"].as_array().unwrap() {
            let expr = r["expr"].as_str().unwrap();
            let alert = r["alert"].as_str().unwrap_or("?");
            let mut labels: BTreeSet<String> = by
                .captures_iter(expr)
                .flat_map(|c| c[1].split(',').map(|l| l.trim().to_owned()).collect::<Vec<_>>())
                .collect();
            let mut metrics = Vec::new();
            for c in metric.captures_iter(expr) {
                let name = c[1].to_owned();
                let selector = c.get(3).map_or("", |m| m.as_str());
                labels.extend(matcher.captures_iter(selector).map(|m| m[1].to_owned()));
                // `up` is only checked with its job matcher: the job is what must match.
                metrics.push(if name == "up" { format!("up{{{selector}}}") } else { name });
            }
            assert!(!metrics.is_empty(), "{alert}: no metric found in {expr}");
            for m in &metrics {
                let n = stack.query(&format!("count({m})")).unwrap();
                assert!(!n.is_empty(), "{alert}: {m} has no series in Prometheus ({expr})");
            }
            for label in labels.iter().filter(|l| !l.is_empty() && *l != "le") {
                let any = metrics.iter().any(|m| {
                    let base = m.split('{').next().unwrap();
                    stack
                        .query(&format!(r#"count({base}{{{label}!=""}})"#))
                        .is_ok_and(|s| !s.is_empty())
                });
                assert!(any, "{alert}: no series of {metrics:?} has label {label} ({expr})");
            }
            checked += 1;
        }
    }
    assert!(checked >= 5, "{checked} alerts checked");
}

/// With metricsTLS (a certificate from a Secret) and with metricsAuth (Prometheus' token,
/// checked with TokenReview and SubjectAccessReview), Prometheus still scrapes every target,
/// and a token without the RBAC verb is refused.
#[test]
fn prometheus_scrapes_through_metrics_tls_and_metrics_auth() {
    let Some((_turn, node)) = node("prometheus_scrapes_through_metrics_tls_and_metrics_auth")
    else {
        return;
    };
    let stack = MonitoringStack::start(node);
    // Declared after the stack, so dropped before it: the release's ServiceMonitors and
    // PrometheusRule go while their CRDs still exist (else helm uninstall fails half-way).
    let _installed = Installed { node, how: How::Helm };
    // Forced on (as with `helm template`), where the first test leaves them on `auto`.
    install(
        node,
        &["--set", "serviceMonitor.enabled=true", "--set", "prometheusRule.enabled=true"],
    );
    namespace(node, APPS);
    workload::start(node, APPS, &["web"]);
    let out =
        node.kubectl(&["apply", "-f", "-"], Some(&workload::podtrace(APPS, "web", "minimal")));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    check_targets_up(&stack);

    // TLS: a certificate for the name the ServiceMonitors check (serverName), in a Secret.
    let server_name = format!("podtrace-agent.{RELEASE_NAMESPACE}.svc");
    let dir = node.dir.join("metrics-tls");
    std::fs::create_dir_all(&dir).unwrap();
    let openssl = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"])
        .args(["-subj", &format!("/CN={server_name}"), "-days", "1"])
        .args(["-addext", &format!("subjectAltName=DNS:{server_name}")])
        .arg("-keyout")
        .arg(dir.join("tls.key"))
        .arg("-out")
        .arg(dir.join("tls.crt"))
        .output()
        .unwrap();
    assert!(openssl.status.success(), "{}", String::from_utf8_lossy(&openssl.stderr));
    let file = |key: &str, f: &str| format!("--from-file={key}={}", dir.join(f).display());
    node.kubectl_ok(&[
        "create",
        "secret",
        "generic",
        "podtrace-metrics-tls",
        "-n",
        RELEASE_NAMESPACE,
        &file("tls.crt", "tls.crt"),
        &file("tls.key", "tls.key"),
        &file("ca.crt", "tls.crt"),
    ])
    .unwrap();
    let tls = [
        "--set",
        "metricsTLS.secretName=podtrace-metrics-tls",
        "--set",
        "metricsTLS.serviceMonitorTLSConfig.ca.secret.name=podtrace-metrics-tls",
        "--set",
        "metricsTLS.serviceMonitorTLSConfig.ca.secret.key=ca.crt",
    ];
    let server = format!("metricsTLS.serviceMonitorTLSConfig.serverName={server_name}");
    let mut args = tls.to_vec();
    args.extend(["--set", &server]);
    install(node, &args);
    let agent = pod_name(node, RELEASE_NAMESPACE, "app.kubernetes.io/component=agent").unwrap();
    let ip = get_json(node, &["pod", &agent, "-n", RELEASE_NAMESPACE]).unwrap()["status"]["podIP"]
        .as_str()
        .unwrap()
        .to_owned();
    let url = format!("https://{ip}:3000/metrics");
    let plain = node.run_in_node(
        "curl",
        &["-s", "-o", "/dev/null", "-w", "%{http_code}", &url.replace("https", "http")],
    );
    assert_ne!(String::from_utf8_lossy(&plain.stdout), "200", "plain HTTP still answered");
    wait_until("Prometheus scrapes over TLS", Duration::from_secs(120), || {
        let s = stack.query(r#"up{job=~"podtrace-agent|podtrace-operator-metrics"} == 1"#)?;
        ensure!(s.len() == 2, "{s:?}");
        let scheme = stack.query(r#"count(podtrace_agent_series{job="podtrace-agent"})"#)?;
        ensure!(!scheme.is_empty(), "no agent series");
        Ok(())
    });

    // Auth: Prometheus' ServiceAccount token passes (it may `get` /metrics), another is refused.
    node.kubectl_ok(&[
        "create",
        "clusterrolebinding",
        "e2e-prometheus-podtrace-metrics",
        "--clusterrole=podtrace-agent-metrics-reader",
        &format!("--serviceaccount={MONITORING}:prometheus"),
    ])
    .unwrap();
    install(node, &["--set", "metricsAuth.enabled=true", "--set", "metricsTLS.secretName="]);
    wait_until("Prometheus scrapes the agent with its token", Duration::from_secs(120), || {
        let s = stack.query(r#"up{job="podtrace-agent"} == 1"#)?;
        ensure!(s.len() == 1, "{s:?}");
        let fresh = stack
            .query(r#"time() - timestamp(podtrace_agent_series{job="podtrace-agent"}) < 15"#)?;
        ensure!(!fresh.is_empty(), "no fresh agent samples");
        Ok(())
    });
    node.kubectl_ok(&["create", "serviceaccount", "nobody", "-n", MONITORING]).unwrap();
    let agent = pod_name(node, RELEASE_NAMESPACE, "app.kubernetes.io/component=agent").unwrap();
    let ip = get_json(node, &["pod", &agent, "-n", RELEASE_NAMESPACE]).unwrap()["status"]["podIP"]
        .as_str()
        .unwrap()
        .to_owned();
    let status_with = |account: &str| -> Result<String> {
        let token = node.kubectl_ok(&["create", "token", account, "-n", MONITORING])?;
        let header = format!("Authorization: Bearer {}", token.trim());
        let out = node.run_in_node(
            "curl",
            &[
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "-H",
                &header,
                &format!("http://{ip}:3000/metrics"),
            ],
        );
        String::from_utf8(out.stdout).context("curl")
    };
    assert_eq!(status_with("prometheus").unwrap(), "200");
    assert_eq!(status_with("nobody").unwrap(), "403", "a token without get /metrics");
    let _ =
        node.kubectl(&["delete", "clusterrolebinding", "e2e-prometheus-podtrace-metrics"], None);
}
