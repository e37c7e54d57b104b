//! A real Prometheus (Debian's `prometheus` package) for tests: scrapes the given targets every
//! second on a free 127.0.0.1 port and answers PromQL through its HTTP API. Killed on drop.

use anyhow::{Context, Result, bail};
use serde_json::Value;
use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::Duration,
};

/// A running Prometheus.
pub struct Prometheus {
    child: Child,
    /// Its base URL (`http://127.0.0.1:PORT`).
    pub url: String,
    dir: PathBuf,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One sample of an instant-query result.
#[derive(Debug, Clone)]
pub struct Sample {
    /// The series' labels.
    pub labels: serde_json::Map<String, Value>,
    /// The value (may be NaN or ±Inf, as Prometheus returns it).
    pub value: f64,
}

impl Prometheus {
    /// Starts Prometheus scraping `targets` (`host:port`, path /metrics) as job `job`.
    pub fn start(job: &str, targets: &[String]) -> Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let dir =
            std::env::temp_dir().join(format!("podtrace-prometheus-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let config = format!(
            "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\nscrape_configs:\n  - job_name: {job}\n    static_configs:\n      - targets: {targets:?}\n"
        );
        std::fs::write(dir.join("prometheus.yml"), config)?;
        let log = std::fs::File::create(dir.join("prometheus.log"))?;
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", dir.join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting prometheus (Debian package `prometheus`)")?;
        let prometheus = Self { child, url: format!("http://127.0.0.1:{port}"), dir };
        for _ in 0..100 {
            if prometheus.get("/-/ready", &[]).is_ok() {
                return Ok(prometheus);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        bail!(
            "prometheus not ready after 20s; see {}",
            prometheus.dir.join("prometheus.log").display()
        )
    }

    fn get(&self, path: &str, query: &[(&str, &str)]) -> Result<String> {
        let resp = reqwest::blocking::Client::new()
            .get(format!("{}{path}", self.url))
            .query(query)
            .send()?;
        let status = resp.status();
        let body = resp.text()?;
        if !status.is_success() {
            bail!("GET {path}: {status}: {body}");
        }
        Ok(body)
    }

    /// Evaluates an instant PromQL query.
    pub fn query(&self, promql: &str) -> Result<Vec<Sample>> {
        parse_query(promql, &self.get("/api/v1/query", &[("query", promql)])?)
    }
}

/// The samples of Prometheus' answer `body` to the instant query `promql` (`/api/v1/query`).
pub fn parse_query(promql: &str, body: &str) -> Result<Vec<Sample>> {
    let json: Value = serde_json::from_str(body)?;
    if json["status"] != "success" {
        bail!("query {promql:?} failed: {body}");
    }
    let result = &json["data"]["result"];
    let samples = match json["data"]["resultType"].as_str() {
        Some("vector") => result.as_array().cloned().unwrap_or_default(),
        Some("scalar") => vec![serde_json::json!({"metric": {}, "value": result})],
        other => bail!("query {promql:?}: unexpected result type {other:?}"),
    };
    samples
        .iter()
        .map(|s| {
            let value = s["value"][1].as_str().context("sample value")?;
            Ok(Sample {
                labels: s["metric"].as_object().cloned().unwrap_or_default(),
                value: value.parse().unwrap_or(f64::NAN),
            })
        })
        .collect()
}
