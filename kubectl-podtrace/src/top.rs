//! `kubectl podtrace top`: the table of `podtrace-agent top` ([`podtrace_api::top`]) over every
//! agent of the cluster, each agent's `/metrics` read through the API server's pod proxy with
//! the user's credentials, restricted to the pods of `-n`/`-A` and `-l`.

use crate::cluster::Cluster;
use crate::error::{Error, Result, api, describe};
use crate::output;
use k8s_openapi::api::core::v1::Pod;
use kube::{Api, ResourceExt, api::ListParams};
use podtrace_api::top::{Key, Row, render, rows};
use std::{
    collections::{BTreeMap, BTreeSet},
    time::{Duration, Instant},
};

/// Where the agents run and which pods to show.
pub struct Scope<'a> {
    /// The agents' namespace.
    pub system_namespace: &'a str,
    /// The agents' label selector.
    pub agent_selector: &'a str,
    /// `-l`: only pods with these labels.
    pub selector: Option<&'a str>,
}

/// One reading of every agent: the rows of the pods in scope, and the agents that could not
/// be read (and why).
pub struct Reading {
    /// Rows by (namespace, pod, container).
    pub rows: BTreeMap<Key, Row>,
    /// Agent pods read.
    pub agents: usize,
    /// One sentence per agent that could not be read.
    pub problems: Vec<String>,
}

/// Reads every agent once.
pub async fn read(cluster: &Cluster, scope: &Scope<'_>) -> Result<Reading> {
    let agents = cluster.pods(scope.system_namespace, scope.agent_selector).await?;
    if agents.is_empty() {
        return Err(Error::NoAgents {
            namespace: scope.system_namespace.to_owned(),
            selector: scope.agent_selector.to_owned(),
        });
    }
    let wanted = match scope.selector {
        Some(selector) => Some(selected_pods(cluster, selector).await?),
        None => None,
    };
    let reads = agents
        .iter()
        .map(|pod| async move { (pod, cluster.pod_get(pod, "metrics", "/metrics").await) });
    let mut reading = Reading { rows: BTreeMap::new(), agents: agents.len(), problems: Vec::new() };
    for (pod, result) in futures::future::join_all(reads).await {
        match result {
            Ok(text) => {
                reading.rows.extend(rows(&text).into_iter().filter(|(key, _)| {
                    in_scope(key, cluster.namespace.as_deref(), wanted.as_ref())
                }))
            }
            Err(e) => reading.problems.push(problem(pod, &e)),
        }
    }
    Ok(reading)
}

/// Whether the row of `key` is one to show: in the namespace of `-n` (any with `-A`), and of a
/// pod `-l` selected (when given).
fn in_scope(
    key: &Key,
    namespace: Option<&str>,
    wanted: Option<&BTreeSet<(String, String)>>,
) -> bool {
    let (ns, pod, _) = key;
    namespace.is_none_or(|n| n == ns)
        && wanted.is_none_or(|w| w.contains(&(ns.clone(), pod.clone())))
}

/// The pods `-l selector` selects in the scope of `-n`/`-A`, as (namespace, name).
async fn selected_pods(cluster: &Cluster, selector: &str) -> Result<BTreeSet<(String, String)>> {
    let (pods, scope): (Api<Pod>, _) = match &cluster.namespace {
        Some(ns) => (Api::namespaced(cluster.client.clone(), ns), ns.as_str()),
        None => (Api::all(cluster.client.clone()), "every namespace"),
    };
    let list = pods
        .list(&ListParams::default().labels(selector))
        .await
        .map_err(api(format!("list pods -l {selector} in {scope}")))?;
    Ok(list.items.iter().map(|p| (p.namespace().unwrap_or_default(), p.name_any())).collect())
}

/// Why an agent could not be read, with what to do about it.
fn problem(pod: &Pod, e: &Error) -> String {
    let node = pod.spec.as_ref().and_then(|s| s.node_name.as_deref()).unwrap_or("no node");
    let hint = match e {
        Error::Api { source: kube::Error::Api(s), .. } if s.code == 401 => {
            ": its /metrics asks for a bearer token (metricsAuth), which the API server's proxy does not pass on; read it with `kubectl exec` and `podtrace-agent top --token-file`"
        }
        Error::Api { source: kube::Error::Api(s), .. } if s.code == 403 => {
            ": you may not `get pods/proxy` in the agents' namespace (see \"RBAC for kubectl podtrace\" in docs/guide.md)"
        }
        _ => "",
    };
    let what = match e {
        Error::Api { source, .. } => describe(source),
        other => other.to_string(),
    };
    format!("agent {} on {node}: {what}{hint}", pod.name_any())
}

/// Runs the live view until Ctrl-C, or prints one table with `once`.
pub async fn run(cluster: &Cluster, scope: &Scope<'_>, every: Duration, once: bool) -> Result<()> {
    let mut previous: Option<(BTreeMap<Key, Row>, Instant)> = None;
    loop {
        let reading = read(cluster, scope).await?;
        let prev = previous.as_ref().map(|(r, at)| (r, at.elapsed().as_secs_f64()));
        let mut table = render(&reading.rows, prev);
        for p in &reading.problems {
            table += &format!("warning: {p}\n");
        }
        if once {
            return output::write(table.as_bytes());
        }
        let screen = format!(
            "\x1b[2J\x1b[H kubectl podtrace top — {} agents — every {every:?} — Ctrl-C to quit\n\n{table}",
            reading.agents
        );
        output::write(screen.as_bytes())?;
        previous = Some((reading.rows, Instant::now()));
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_kept_by_namespace_and_by_the_pods_of_the_selector() {
        let key = |ns: &str, pod: &str| (ns.to_owned(), pod.to_owned(), "app".to_owned());
        let wanted: BTreeSet<_> = [("shop".to_owned(), "web-1".to_owned())].into();
        assert!(in_scope(&key("shop", "web-2"), Some("shop"), None));
        assert!(!in_scope(&key("other", "web-2"), Some("shop"), None));
        assert!(in_scope(&key("other", "x"), None, None), "-A");
        assert!(in_scope(&key("shop", "web-1"), None, Some(&wanted)));
        assert!(!in_scope(&key("shop", "web-2"), Some("shop"), Some(&wanted)));
        assert!(!in_scope(&key("other", "web-1"), None, Some(&wanted)));
    }
}
