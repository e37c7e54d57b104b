//! `podtrace-agent top`: a refreshing table per pod and container, read from the agent's own
//! `/metrics` (so it shows exactly what Prometheus sees). The table itself (rows, latency
//! quantiles, rendering) is [`podtrace_api::top`], which `kubectl podtrace top` shares; this
//! module fetches and refreshes.

use podtrace_api::top::{Key, Row, render, rows};
use std::{collections::BTreeMap, time::Instant};

/// Fetches `/metrics` from `endpoint` (e.g. `http://127.0.0.1:3000`).
pub async fn fetch(
    http: &reqwest::Client,
    endpoint: &str,
    token: Option<&str>,
) -> Result<String, reqwest::Error> {
    let mut req = http.get(format!("{}/metrics", endpoint.trim_end_matches('/')));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    req.send().await?.error_for_status()?.text().await
}

/// Runs the live view until Ctrl-C (or once, with `once`).
pub async fn run(
    endpoint: &str,
    token: Option<&str>,
    ca_file: Option<&std::path::Path>,
    every: std::time::Duration,
    once: bool,
) -> crate::Result<()> {
    let http_err = |source| crate::Error::Http { endpoint: endpoint.to_owned(), source };
    let mut http = reqwest::Client::builder();
    if let Some(path) = ca_file {
        let pem = std::fs::read(path)
            .map_err(|source| crate::Error::Read { path: path.to_owned(), source })?;
        for cert in reqwest::Certificate::from_pem_bundle(&pem).map_err(http_err)? {
            http = http.add_root_certificate(cert);
        }
    }
    let http = http.build().map_err(http_err)?;
    let mut previous: Option<(BTreeMap<Key, Row>, Instant)> = None;
    loop {
        let text = fetch(&http, endpoint, token).await.map_err(http_err)?;
        let now = rows(&text);
        let prev = previous.as_ref().map(|(r, at)| (r, at.elapsed().as_secs_f64()));
        let table = render(&now, prev);
        if once {
            print!("{table}");
            return Ok(());
        }
        print!(
            "\x1b[2J\x1b[H podtrace-agent top — {endpoint} — every {:?} — Ctrl-C to quit\n\n{table}",
            every
        );
        previous = Some((now, Instant::now()));
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}
