//! The NATS exporter (`async-nats`): one JSON message per target on `--nats-pod-subject` and the
//! node's kernel counters on `NATS_SUBJECT` (the kernel-metrics reference's subject), each
//! interval.
//!
//! async-nats reconnects by itself; we give it our backoff (with jitter) and follow its
//! connection events. Messages leave our queue only while connected, and a chunk counts as sent
//! once a `flush` (PING/PONG) proves the server has read it; otherwise it goes back to the queue.

use super::{
    BACKOFF_MIN, ExportError, ExporterArgs, Item, backoff,
    message::{KernelMessage, PodMessage},
    queue::Queue,
    stats::Stats,
};
use async_nats::{ConnectOptions, Event, ServerAddr};
use std::{sync::Arc, time::Duration};
use tokio::sync::watch;

/// Messages published between two flushes.
const CHUNK: usize = 512;
/// How long a flush may take before the chunk is considered lost.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// A validated NATS configuration.
#[derive(Clone, Debug)]
pub struct Config {
    addr: ServerAddr,
    /// User and password (or a token, as the user alone) from the URL: async-nats parses them
    /// but does not send them.
    auth: Option<(String, Option<String>)>,
    url: String,
    subject: String,
    pod_subject: String,
    node: String,
    instance_id: String,
    backoff_max: Duration,
}

impl Config {
    /// Validates `--nats-url` and the subjects.
    pub fn new(url: &str, args: &ExporterArgs) -> Result<Self, ExportError> {
        let invalid = |reason: String| ExportError::InvalidUrl {
            flag: "--nats-url (NATS_URL)",
            url: url.into(),
            reason,
            expected: "nats://[user:password@]host:4222 or tls://host:4222",
        };
        let addr: ServerAddr = url.parse().map_err(|e: std::io::Error| invalid(e.to_string()))?;
        for (flag, subject) in [
            ("--nats-subject (NATS_SUBJECT)", &args.nats_subject),
            ("--nats-pod-subject (PODTRACE_NATS_POD_SUBJECT)", &args.nats_pod_subject),
        ] {
            let bad = subject.is_empty()
                || subject.contains([' ', '\t', '\r', '\n', '*', '>'])
                || subject.split('.').any(str::is_empty);
            if bad {
                return Err(ExportError::InvalidUrl {
                    flag,
                    url: subject.clone(),
                    reason: "not a NATS subject one can publish to".into(),
                    expected: "dot-separated tokens without spaces or wildcards",
                });
            }
        }
        let auth = url::Url::parse(url).ok().filter(|u| !u.username().is_empty()).map(|u| {
            let decode =
                |s: &str| percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned();
            (decode(u.username()), u.password().map(decode))
        });
        Ok(Config {
            addr,
            auth,
            url: redact(url),
            subject: args.nats_subject.clone(),
            pod_subject: args.nats_pod_subject.clone(),
            node: args.node_name.clone(),
            instance_id: args.instance_id.clone(),
            backoff_max: args.export_backoff_max,
        })
    }

    /// The subject and JSON payload of `item`.
    pub fn encode(&self, item: &Item) -> Result<(String, Vec<u8>), ExportError> {
        Ok(match item {
            Item::Target(t) => {
                let msg = PodMessage::new(t, &self.instance_id);
                (self.pod_subject.clone(), serde_json::to_vec(&msg)?)
            }
            Item::Kernel(k) => {
                let msg = KernelMessage::new(k, &self.node, &self.instance_id);
                (self.subject.clone(), serde_json::to_vec(&msg)?)
            }
        })
    }
}

/// The URL without its password, for logs and health.
fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => url.to_owned(),
    }
}

/// Runs the exporter until the task is aborted.
pub async fn run(config: Config, queue: Arc<Queue<Item>>, stats: Stats) {
    let (connected_tx, mut connected) = watch::channel(false);
    let events = {
        let stats = stats.clone();
        let url = config.url.clone();
        move |event: Event| {
            let (stats, url, tx) = (stats.clone(), url.clone(), connected_tx.clone());
            async move {
                match event {
                    Event::Connected => {
                        stats.set_connected();
                        tx.send_replace(true);
                    }
                    Event::Disconnected => {
                        stats.set_disconnected(format!(
                            "disconnected from NATS at {url}; reconnecting"
                        ));
                        tx.send_replace(false);
                    }
                    Event::ClientError(e) => {
                        let e = e.to_string();
                        let advice = if e.to_lowercase().contains("authorization") {
                            "check the user and password in --nats-url"
                        } else {
                            "retrying"
                        };
                        stats.set_disconnected(format!(
                            "cannot connect to NATS at {url}: {e}; {advice}"
                        ));
                    }
                    Event::ServerError(e) => {
                        stats.set_disconnected(format!(
                            "NATS at {url} refused us: {e} (check the credentials in --nats-url)"
                        ));
                    }
                    other => tracing::debug!(exporter = "nats", event = %other, "event"),
                }
            }
        }
    };
    let max = config.backoff_max;
    let options = ConnectOptions::new()
        .name("podtrace-agent")
        .retry_on_initial_connect()
        .max_reconnects(None)
        .connection_timeout(Duration::from_secs(5))
        .reconnect_delay_callback(move |attempt| {
            backoff::delay(BACKOFF_MIN, max, u32::try_from(attempt).unwrap_or(u32::MAX))
        })
        .event_callback(events);
    let options = match config.auth.clone() {
        Some((user, Some(password))) => options.user_and_password(user, password),
        Some((token, None)) => options.token(token),
        None => options,
    };
    stats.set_connecting(format!("connecting to NATS at {}", config.url));
    let client = match options.connect(config.addr.clone()).await {
        Ok(client) => client,
        Err(e) => {
            // Only reachable for errors no retry can fix (e.g. a TLS setup error).
            stats.set_disconnected(format!("cannot use NATS at {}: {e}", config.url));
            return;
        }
    };
    loop {
        queue.ready().await;
        if connected.wait_for(|c| *c).await.is_err() {
            return;
        }
        let chunk = queue.take(CHUNK);
        match publish(&client, &config, &chunk, &stats).await {
            Ok(sent) => {
                stats.sent.inc_by(sent);
                queue.settle(chunk.len());
                stats.set_connected();
            }
            Err(reason) => {
                queue.give_back(chunk);
                stats.set_disconnected(reason);
                tokio::time::sleep(BACKOFF_MIN).await;
            }
        }
    }
}

/// Publishes `chunk` and waits for the server to confirm it; returns how many were published.
async fn publish(
    client: &async_nats::Client,
    config: &Config,
    chunk: &[Item],
    stats: &Stats,
) -> Result<u64, String> {
    let mut published = 0;
    for item in chunk {
        let (subject, payload) = match config.encode(item) {
            Ok(x) => x,
            Err(e) => {
                tracing::error!(exporter = "nats", error = %e, "dropping a message");
                stats.rejected(1);
                continue;
            }
        };
        published += 1;
        client
            .publish(subject, payload.into())
            .await
            .map_err(|e| format!("publishing to NATS at {}: {e}", config.url))?;
    }
    match tokio::time::timeout(FLUSH_TIMEOUT, client.flush()).await {
        Ok(Ok(())) => Ok(published),
        Ok(Err(e)) => Err(format!("flushing to NATS at {}: {e}", config.url)),
        Err(_) => Err(format!("NATS at {} did not confirm within {FLUSH_TIMEOUT:?}", config.url)),
    }
}
