//! Reloading the standalone file: its content is compared every [`CONFIG_POLL`] (a mounted
//! ConfigMap changes by a symlink swap, which inotify on the file does not see), and a new
//! version is applied once it has stayed the same for the settle time (`--config-settle`): an
//! editor or `cp` writing the file in pieces can leave a prefix that parses (the first of two
//! documents, or nothing at all), which must never be applied. What is applied is exactly the
//! content that was compared, not a later read.

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};
use tokio::sync::watch;

use super::{Config, parse_content};
use crate::metrics::agent::AgentMetrics;

/// How often the file is checked for changes.
pub const CONFIG_POLL: Duration = Duration::from_millis(250);
/// How long a changed file must stay unchanged before it is applied, unless
/// `--config-settle` says otherwise.
pub const CONFIG_SETTLE: Duration = Duration::from_secs(2);

/// How a file is reloaded.
#[derive(Clone, Debug)]
pub struct Reload {
    /// The file.
    pub path: PathBuf,
    /// What was applied last (the content read at start), to compare against.
    pub applied: Option<Vec<u8>>,
    /// How long a change must stay unchanged before it is applied.
    pub settle: Duration,
    /// How often the file is read.
    pub poll: Duration,
    /// Whether a file without any document (which traces nothing) is accepted.
    pub allow_empty: bool,
}

/// Sends the file's configuration to `config` whenever its content changed and then stayed the
/// same for the settle time; a bad file is reported (log, error counter, `ok` false:
/// `podtrace.kubernetes` NOT_SERVING) and the previous configuration keeps running.
pub async fn reload(
    options: Reload,
    config: watch::Sender<Config>,
    ok: watch::Sender<bool>,
    metrics: AgentMetrics,
) {
    let Reload { path, mut applied, settle, poll, allow_empty } = options;
    // A changed content and when it was first seen.
    let mut candidate: Option<(Option<Vec<u8>>, Instant)> = None;
    let mut tick = tokio::time::interval(poll);
    loop {
        tick.tick().await;
        let now = std::fs::read(&path).ok();
        if now == applied {
            candidate = None;
            continue;
        }
        match &candidate {
            Some((seen, since)) if *seen == now => {
                if since.elapsed() < settle {
                    continue;
                }
            }
            _ => {
                candidate = Some((now, Instant::now()));
                continue;
            }
        }
        candidate = None;
        let loaded = match &now {
            Some(bytes) => parse_content(&path, bytes, allow_empty),
            None => Err(crate::Error::Config {
                path: path.clone(),
                message: "the file cannot be read (removed?)".into(),
            }),
        };
        applied = now;
        match loaded {
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

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::registry::Registry;

    const PROFILE: &str = "apiVersion: podtrace.dev/v1alpha1\nkind: MonitoringProfile\nmetadata: {name: p}\nspec: {interval: 5s}\n";

    fn trace(name: &str) -> String {
        format!(
            "---\napiVersion: podtrace.dev/v1alpha1\nkind: PodTrace\nmetadata: {{name: {name}}}\nspec:\n  selector: {{matchLabels: {{podtrace.dev/pid: \"1\"}}}}\n  profileRef: {{name: p}}\n"
        )
    }

    struct Running {
        config: watch::Receiver<Config>,
        ok: watch::Receiver<bool>,
        metrics: AgentMetrics,
        task: tokio::task::JoinHandle<()>,
    }

    impl Drop for Running {
        fn drop(&mut self) {
            self.task.abort();
        }
    }

    fn start(path: &std::path::Path, settle: Duration, allow_empty: bool) -> Running {
        let applied = std::fs::read(path).ok();
        let initial = parse_content(path, applied.as_deref().unwrap(), allow_empty).unwrap();
        let (config_tx, config) = watch::channel(initial);
        let (ok_tx, ok) = watch::channel(true);
        let metrics = AgentMetrics::register(&mut Registry::default());
        let options = Reload {
            path: path.to_owned(),
            applied,
            settle,
            poll: Duration::from_millis(50),
            allow_empty,
        };
        let task = tokio::spawn(reload(options, config_tx, ok_tx, metrics.clone()));
        Running { config, ok, metrics, task }
    }

    fn file(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("podtrace-reload-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir.join("agent.yaml")
    }

    async fn wait(what: &str, mut f: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !f() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A file written in two steps shows, for a moment, a prefix that parses (the profile
    /// without the trace after it): only the finished file is applied.
    #[tokio::test]
    async fn a_file_caught_mid_write_is_not_applied() {
        let path = file("midwrite");
        std::fs::write(&path, format!("{PROFILE}{}", trace("a"))).unwrap();
        let mut r = start(&path, Duration::from_secs(5), false);
        std::fs::write(&path, PROFILE).unwrap();
        // Longer than the old one-second poll, far shorter than the settle time.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        std::fs::write(&path, format!("{PROFILE}{}{}", trace("b"), trace("c"))).unwrap();
        r.config.changed().await.unwrap();
        let names: Vec<String> = r.config.borrow().traces.iter().map(|t| t.name.clone()).collect();
        assert_eq!(names, ["b", "c"]);
        assert_eq!(r.metrics.config_reloads.get(), 1, "the prefix was never applied");
        assert!(*r.ok.borrow());
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    /// An empty file would trace nothing: an error (the previous configuration keeps running)
    /// unless `--allow-empty-config` is given.
    #[tokio::test]
    async fn an_empty_file_is_an_error_unless_allowed() {
        let path = file("empty");
        std::fs::write(&path, format!("{PROFILE}{}", trace("a"))).unwrap();
        let r = start(&path, Duration::from_millis(200), false);
        std::fs::write(&path, "").unwrap();
        wait("the empty file rejected", || !*r.ok.borrow()).await;
        assert_eq!(r.config.borrow().traces.len(), 1, "the previous configuration runs");
        assert_eq!(r.metrics.config_reloads.get(), 0);
        drop(r);

        std::fs::write(&path, format!("{PROFILE}{}", trace("a"))).unwrap();
        let r = start(&path, Duration::from_millis(200), true);
        std::fs::write(&path, "# nothing to trace\n").unwrap();
        wait("the empty file applied", || r.metrics.config_reloads.get() == 1).await;
        assert!(r.config.borrow().traces.is_empty());
        assert!(*r.ok.borrow());
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }
}
