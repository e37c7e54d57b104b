//! The NodeTrace watch: only `NodeTrace/<node>` (a field selector on the name), its spec sent
//! on a watch channel whenever it changes.

use futures::StreamExt;
use kube::{
    Api, Client,
    runtime::{WatchStreamExt, watcher},
};
use podtrace_api::NodeTrace;
use tokio::sync::watch;

use super::Desired;

/// Watches `NodeTrace/<node>` and sends every change to `desired`; `healthy` is true while the
/// watch works (the `podtrace.kubernetes` health service).
pub async fn watch(
    client: Client,
    node: String,
    desired: watch::Sender<Desired>,
    healthy: watch::Sender<bool>,
) {
    let api: Api<NodeTrace> = Api::all(client);
    let config = watcher::Config::default().fields(&format!("metadata.name={node}"));
    let mut stream = watcher(api, config).default_backoff().boxed();
    while let Some(event) = stream.next().await {
        match event {
            Ok(watcher::Event::Apply(nt) | watcher::Event::InitApply(nt)) => {
                let generation = nt.metadata.generation;
                desired.send_replace(Desired { spec: Some(nt.spec), generation });
                healthy.send_replace(true);
                tracing::info!(node, ?generation, "NodeTrace changed");
            }
            Ok(watcher::Event::Delete(_)) => {
                desired.send_replace(Desired::default());
                tracing::info!(node, "NodeTrace deleted: tracing nothing");
            }
            Ok(watcher::Event::Init) => {}
            Ok(watcher::Event::InitDone) => {
                healthy.send_replace(true);
            }
            Err(e) => {
                healthy.send_replace(false);
                tracing::warn!(error = %e, "NodeTrace watch failed; retrying with backoff");
            }
        }
    }
}
