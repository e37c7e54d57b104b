//! The operator under benchmark: the release binary as a process against the harness's API
//! server, its `/metrics`, RSS and idleness.

use anyhow::{Context, Result, bail};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The release operator binary next to this one.
fn operator_binary() -> Result<PathBuf> {
    let bin = std::env::current_exe()?.with_file_name("podtrace-operator");
    anyhow::ensure!(
        bin.exists(),
        "{} missing: cargo build --release -p podtrace-operator",
        bin.display()
    );
    Ok(bin)
}

pub(crate) struct Operator {
    pub(crate) child: Option<Child>,
    admin: String,
}

impl Operator {
    pub(crate) fn start(
        cp: &podtrace_e2e::ControlPlane,
        ns: &str,
        scope: &str,
        label: &str,
    ) -> Result<Self> {
        let port = |()| -> Result<u16> {
            Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
        };
        let admin = format!("127.0.0.1:{}", port(())?);
        let health = format!("127.0.0.1:{}", port(())?);
        let log = std::fs::File::create(cp.dir.join(format!("operator-bench-{label}.log")))?;
        let child = Command::new(operator_binary()?)
            .env("KUBECONFIG", &cp.kubeconfig)
            .env("NO_COLOR", "1")
            .args(["--namespace", ns, "--node-selector", scope, "--lease-namespace", ns])
            .args(["--metrics-addr", &admin, "--health-addr", &health])
            // One replica at a time; a killed baseline must not hold a Lease the next one waits for.
            .args(["--leader-elect", "false"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?;
        Ok(Self { child: Some(child), admin })
    }

    pub(crate) async fn get(&self, path: &str) -> Result<(u16, String)> {
        use std::io::{Read, Write};
        let (admin, path) = (self.admin.clone(), path.to_owned());
        tokio::task::spawn_blocking(move || {
            let mut stream = std::net::TcpStream::connect(&admin)?;
            stream.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())?;
            let mut response = String::new();
            stream.read_to_string(&mut response)?;
            let code = response.split_whitespace().nth(1).context("no status line")?.parse()?;
            let body =
                response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
            Ok((code, body))
        })
        .await?
    }

    pub(crate) async fn wait_ready(&self, timeout: Duration) -> Result<()> {
        let start = Instant::now();
        loop {
            if let Ok((200, _)) = self.get("/readyz").await {
                return Ok(());
            }
            if start.elapsed() > timeout {
                bail!("operator not ready after {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits until the operator is idle: no NodeTrace or status write and no reconcile for 3 s
    /// (at most 60 s), so that memory is sampled in the steady state, not during the status
    /// writes that follow a start.
    pub(crate) async fn settle(&self) -> Result<()> {
        self.quiet(Duration::from_secs(3)).await?;
        // jemalloc's background thread returns freed pages after 1 s.
        tokio::time::sleep(Duration::from_secs(2)).await;
        Ok(())
    }

    /// Waits until the operator has written and reconciled nothing for `quiet` (at most 60 s).
    pub(crate) async fn quiet(&self, quiet: Duration) -> Result<()> {
        let activity = async || -> Result<f64> {
            Ok(self.metric("podtrace_operator_nodetrace_writes_total").await?
                + self.metric("podtrace_operator_status_writes_total").await?
                + self.metric("podtrace_operator_reconciles_total").await?)
        };
        let poll = quiet / 6;
        let (start, mut last, mut since) = (Instant::now(), activity().await?, Instant::now());
        while since.elapsed() < quiet && start.elapsed() < Duration::from_secs(60) {
            tokio::time::sleep(poll).await;
            let now = activity().await?;
            if now != last {
                since = Instant::now();
            }
            last = now;
        }
        Ok(())
    }

    pub(crate) async fn metric(&self, name: &str) -> Result<f64> {
        let (_, body) = self.get("/metrics").await?;
        Ok(podtrace_test_support::metric_sum(&body, name))
    }

    pub(crate) fn rss_kib(&self) -> Result<u64> {
        let pid = self.child.as_ref().context("stopped")?.id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).context("no VmRSS")?;
        Ok(line.split_whitespace().nth(1).context("VmRSS value")?.parse()?)
    }

    pub(crate) fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.stop();
    }
}
