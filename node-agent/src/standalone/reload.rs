//! Reloading the standalone file: its content is compared every [`CONFIG_POLL`] (a mounted
//! ConfigMap changes by a symlink swap, which inotify on the file does not see), and a valid
//! new version is sent on a watch channel.

use std::{path::PathBuf, time::Duration};
use tokio::sync::watch;

use super::{Config, load};
use crate::metrics::agent::AgentMetrics;

/// How often the file is checked for changes.
pub const CONFIG_POLL: Duration = Duration::from_secs(1);

/// Sends the file's configuration to `config` whenever its content changes; a bad file is
/// reported (log, error counter, `ok` false: `podtrace.kubernetes` NOT_SERVING) and the previous
/// configuration keeps running.
pub async fn reload(
    path: PathBuf,
    config: watch::Sender<Config>,
    ok: watch::Sender<bool>,
    metrics: AgentMetrics,
) {
    let mut last = std::fs::read(&path).ok();
    let mut tick = tokio::time::interval(CONFIG_POLL);
    loop {
        tick.tick().await;
        let now = std::fs::read(&path).ok();
        if now == last {
            continue;
        }
        last = now;
        match load(&path) {
            Ok(next) => {
                tracing::info!(path = %path.display(), traces = next.traces.len(), "standalone config reloaded");
                config.send_replace(next);
                ok.send_replace(true);
                metrics.config_reloads.inc();
            }
            Err(e) => {
                tracing::error!(error = %e, "standalone config rejected; the previous configuration keeps running");
                ok.send_replace(false);
                metrics.error("config", e.reason());
            }
        }
    }
}
