//! The connection to the cluster: a client from the kubeconfig (or the in-cluster account) as
//! kubectl picks it, the namespaces of `-n`/`-A`, and GETs through the API server's pod proxy.

use crate::cli::ClusterArgs;
use crate::error::{Error, Result, api};
use k8s_openapi::api::core::v1::Pod;
use kube::{
    Api, Client, Config,
    api::ListParams,
    config::{KubeConfigOptions, Kubeconfig},
};

/// A client and the namespace scope of the command line.
pub struct Cluster {
    /// The client, with the user's own credentials.
    pub client: Client,
    /// `-n` (or the context's namespace); `None` with `-A`.
    pub namespace: Option<String>,
}

impl Cluster {
    /// Connects as `args` say: `--kubeconfig`/`--context` like kubectl, else `KUBECONFIG`,
    /// `~/.kube/config` or the in-cluster service account.
    pub async fn connect(args: &ClusterArgs) -> Result<Self> {
        let config_err = |e: Box<dyn std::error::Error + Send + Sync>| Error::Config { source: e };
        let options =
            KubeConfigOptions { context: args.context.clone(), ..KubeConfigOptions::default() };
        let config = match (&args.kubeconfig, &args.context) {
            (Some(path), _) => {
                let kubeconfig = Kubeconfig::read_from(path).map_err(|e| config_err(e.into()))?;
                Config::from_custom_kubeconfig(kubeconfig, &options)
                    .await
                    .map_err(|e| config_err(e.into()))?
            }
            (None, Some(_)) => {
                Config::from_kubeconfig(&options).await.map_err(|e| config_err(e.into()))?
            }
            (None, None) => Config::infer().await.map_err(|e| config_err(e.into()))?,
        };
        let namespace = if args.all_namespaces {
            None
        } else {
            Some(args.namespace.clone().unwrap_or_else(|| config.default_namespace.clone()))
        };
        let client = Client::try_from(config).map_err(|e| config_err(e.into()))?;
        Ok(Self { client, namespace })
    }

    /// The pods with labels `selector` in `namespace` (podtrace's agents or operator).
    pub async fn pods(&self, namespace: &str, selector: &str) -> Result<Vec<Pod>> {
        let pods = Api::<Pod>::namespaced(self.client.clone(), namespace)
            .list(&ListParams::default().labels(selector))
            .await
            .map_err(api(format!("list pods {selector} in {namespace}")))?;
        Ok(pods.items)
    }

    /// GETs `path` (such as `/metrics`) of `pod`'s container port named `port_name` through
    /// the API server's pod proxy (`pods/{scheme}:{name}:{port}/proxy/...`): https when the
    /// container serves it with TLS (the chart's metricsTLS sets
    /// `PODTRACE_METRICS_TLS_CERT_FILE`). Needs `get` on `pods/proxy` in the pod's namespace.
    pub async fn pod_get(&self, pod: &Pod, port_name: &str, path: &str) -> Result<String> {
        let name = pod.metadata.name.as_deref().unwrap_or_default();
        let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
        let what = format!("GET {path} of pod {ns}/{name} through the API server's pod proxy");
        let Some((scheme, port)) = endpoint(pod, port_name) else {
            return Err(Error::NoPort { what, port: port_name.to_owned() });
        };
        let uri = format!(
            "/api/v1/namespaces/{ns}/pods/{scheme}:{name}:{port}/proxy/{}",
            path.trim_start_matches('/')
        );
        let request = http::Request::get(uri)
            .body(Vec::new())
            .expect("a path of a pod's name, a port number and a fixed path is a valid URI");
        self.client.request_text(request).await.map_err(api(what))
    }
}

/// The scheme and number of `pod`'s container port named `port_name`.
pub fn endpoint(pod: &Pod, port_name: &str) -> Option<(&'static str, i32)> {
    let spec = pod.spec.as_ref()?;
    spec.containers.iter().find_map(|c| {
        let port = c.ports.iter().flatten().find(|p| p.name.as_deref() == Some(port_name))?;
        let tls = c.env.iter().flatten().any(|e| e.name == "PODTRACE_METRICS_TLS_CERT_FILE");
        Some((if tls { "https" } else { "http" }, port.container_port))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(env: serde_json::Value) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "podtrace-agent-x", "namespace": "podtrace-system"},
            "spec": {"containers": [{"name": "agent", "env": env,
                "ports": [{"name": "metrics", "containerPort": 3000}, {"name": "grpc-health", "containerPort": 50100}]}]}
        }))
        .unwrap()
    }

    #[test]
    fn the_metrics_port_is_found_by_name_and_tls_by_the_charts_variable() {
        assert_eq!(endpoint(&pod(serde_json::json!([])), "metrics"), Some(("http", 3000)));
        let tls = pod(
            serde_json::json!([{"name": "PODTRACE_METRICS_TLS_CERT_FILE", "value": "/etc/podtrace/tls/tls.crt"}]),
        );
        assert_eq!(endpoint(&tls, "metrics"), Some(("https", 3000)));
        assert_eq!(endpoint(&tls, "admin"), None);
    }
}
