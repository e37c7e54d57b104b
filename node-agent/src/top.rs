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
            show(&table)?;
            return Ok(());
        }
        let screen = format!(
            "\x1b[2J\x1b[H podtrace-agent top — {endpoint} — every {every:?} — Ctrl-C to quit\n\n{table}"
        );
        if !show(&screen)? {
            return Ok(());
        }
        previous = Some((now, Instant::now()));
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}

/// Writes `text` to stdout; `false` when its reader went away (`top --once | head`), which ends
/// the view quietly where `print!` would panic.
fn show(text: &str) -> crate::Result<bool> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(crate::Error::Output(e)),
    }
}
