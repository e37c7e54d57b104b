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
    for ns in ["monitoring-e2e", "podtrace-sm", "podtrace-tls"] {
        let _ = cp.kubectl(&["create", "namespace", ns], None);
    }
    // The chart's ServiceMonitors (forced on, as if the API were detected): plain, and with the
    // mutual-TLS settings of ci/everything-on-values.yaml, whose Secrets must exist for the
    // Prometheus Operator to copy them into the Prometheus' TLS assets.
    let chart = chart();
    let everything_on = format!("{chart}/ci/everything-on-values.yaml");
    for (ns, values) in [("podtrace-sm", None), ("podtrace-tls", Some(everything_on.as_str()))] {
        let mut args = vec!["template", "podtrace", &chart, "-n", ns];
        args.extend(["--set", "serviceMonitor.enabled=true"]);
        args.extend(["--show-only", "templates/servicemonitors.yaml"]);
        if let Some(values) = values {
            args.extend(["-f", values]);
        }
        let monitors = helm(&args, None);
        assert_eq!(monitors.matches("kind: ServiceMonitor").count(), 2);
        let out = cp.kubectl(&["apply", "--server-side", "-f", "-"], Some(&monitors));
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let tls_dir = cp.dir.join("metrics-tls");
    std::fs::create_dir_all(&tls_dir).unwrap();
    let openssl = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"])
        .args(["-subj", "/CN=podtrace-agent.podtrace.svc", "-days", "1"])
        .arg("-keyout")
        .arg(tls_dir.join("tls.key"))
        .arg("-out")
        .arg(tls_dir.join("tls.crt"))
        .output()
        .unwrap();
    assert!(openssl.status.success(), "{}", String::from_utf8_lossy(&openssl.stderr));
    let from =
        |key: &str, file: &str| format!("--from-file={key}={}", tls_dir.join(file).display());
    for (secret, files) in [
        ("podtrace-metrics-tls", [from("ca.crt", "tls.crt"), from("tls.key", "tls.key")]),
        ("prometheus-client-tls", [from("tls.crt", "tls.crt"), from("tls.key", "tls.key")]),
    ] {
        let mut args = vec!["create", "secret", "generic", secret, "-n", "podtrace-tls"];
        args.extend(files.iter().map(String::as_str));
        let out = cp.kubectl(&args, None);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
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
            if config.contains("podtrace-sm/podtrace-agent")
                && config.contains("podtrace-tls/podtrace-agent")
            {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    for job in [
        "serviceMonitor/podtrace-sm/podtrace-agent/0",
        "serviceMonitor/podtrace-sm/podtrace-operator/0",
        "serviceMonitor/podtrace-tls/podtrace-agent/0",
        "serviceMonitor/podtrace-tls/podtrace-operator/0",
    ] {
        assert!(
            config.contains(&format!("job_name: {job}")),
            "no scrape job {job} in the generated configuration:\n{config}"
        );
    }
    // The TLS jobs scrape https with the certificate name and the client certificate.
    let tls_job = config
        .split("- job_name: ")
        .find(|j| j.starts_with("serviceMonitor/podtrace-tls/podtrace-agent/0"))
        .unwrap();
    for expected in
        ["scheme: https", "server_name: podtrace-agent.podtrace.svc", "cert_file: ", "key_file: "]
    {
        assert!(tls_job.contains(expected), "{expected} missing in the TLS job:\n{tls_job}");
    }
    let plain_job = config
        .split("- job_name: ")
        .find(|j| j.starts_with("serviceMonitor/podtrace-sm/podtrace-agent/0"))
        .unwrap();
    assert!(!plain_job.contains("scheme: https"), "{plain_job}");
}
