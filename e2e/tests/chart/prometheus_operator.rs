use super::{chart, helm};
use base64::Engine;
use podtrace_e2e::{tool, with_crds};
use std::{io::Read, process::Command, time::Duration};

/// A Prometheus Operator process against the shared API server; killed on drop.
struct PrometheusOperator(std::process::Child);

impl Drop for PrometheusOperator {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_prometheus_operator_turns_the_charts_service_monitors_into_scrape_jobs() {
    let cp = with_crds();
    super::helm::install_prometheus_operator_crds(cp);
    for ns in ["monitoring-e2e", "podtrace-sm"] {
        let _ = cp.kubectl(&["create", "namespace", ns], None);
    }
    // The chart's ServiceMonitors (forced on, as if the API were detected).
    let monitors = helm(
        &[
            "template",
            "podtrace",
            &chart(),
            "-n",
            "podtrace-sm",
            "--set",
            "serviceMonitor.enabled=true",
            "--show-only",
            "templates/servicemonitors.yaml",
        ],
        None,
    );
    assert_eq!(monitors.matches("kind: ServiceMonitor").count(), 2);
    cp.kubectl(&["apply", "--server-side", "-f", "-"], Some(&monitors));
    let prometheus = "apiVersion: monitoring.coreos.com/v1\nkind: Prometheus\nmetadata: {name: e2e, namespace: monitoring-e2e}\nspec: {serviceMonitorSelector: {}, serviceMonitorNamespaceSelector: {}}\n";
    let out = cp.kubectl(&["apply", "--server-side", "-f", "-"], Some(prometheus));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let pki = cp.dir.join("pki");
    let server =
        cp.kubectl_ok(&["config", "view", "-o", "jsonpath={.clusters[0].cluster.server}"]).unwrap();
    let log = std::fs::File::create(cp.dir.join("prometheus-operator.log")).unwrap();
    let _operator = PrometheusOperator(
        Command::new(tool("prometheus-operator").unwrap())
            .arg(format!("--apiserver={server}"))
            .arg(format!("--ca-file={}", pki.join("ca.crt").display()))
            .arg(format!("--cert-file={}", pki.join("admin.crt").display()))
            .arg(format!("--key-file={}", pki.join("admin.key").display()))
            .args([
                "--web.listen-address=127.0.0.1:0",
                "--kubelet-endpoints=false",
                "--log-level=warn",
            ])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap(),
    );

    // The operator renders every matched ServiceMonitor into the Prometheus' configuration Secret.
    let mut config = String::new();
    for _ in 0..120 {
        let data = cp.kubectl(
            &[
                "get",
                "secret",
                "prometheus-e2e",
                "-n",
                "monitoring-e2e",
                "-o",
                "jsonpath={.data.prometheus\\.yaml\\.gz}",
            ],
            None,
        );
        if data.status.success() && !data.stdout.is_empty() {
            let gz = base64::engine::general_purpose::STANDARD.decode(&data.stdout).unwrap();
            config.clear();
            flate2::read::GzDecoder::new(&gz[..]).read_to_string(&mut config).unwrap();
            if config.contains("podtrace-sm/podtrace-agent") {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    for job in [
        "serviceMonitor/podtrace-sm/podtrace-agent/0",
        "serviceMonitor/podtrace-sm/podtrace-operator/0",
    ] {
        assert!(
            config.contains(&format!("job_name: {job}")),
            "no scrape job {job} in the generated configuration:\n{config}"
        );
    }
}
