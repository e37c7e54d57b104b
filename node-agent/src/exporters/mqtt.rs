//! The MQTT exporter (`rumqttc`): one message per target and interval, in the reference's JSON,
//! on the `--mqtt-topic` template, QoS 1, not retained.
//!
//! Two tasks: a driver polls rumqttc's event loop (which connects, reconnects and exchanges
//! packets; it must be polled without interruption) and reports connection changes and PUBACKs
//! over a channel; the publisher takes items from the queue while connected, keeps at most
//! [`WINDOW`] of them unacknowledged, and gives the unacknowledged ones back when the connection
//! drops (a clean session forgets them; they are republished on the next connection).

use super::{
    BACKOFF_MIN, ExportError, ExporterArgs, Item,
    backoff::Backoff,
    message::MqttMessage,
    queue::Queue,
    stats::Stats,
    topic::{Fixed, Template},
};
use rumqttc::{
    AsyncClient, ConnectReturnCode, ConnectionError, Event, EventLoop, MqttOptions, Packet, QoS,
    Transport,
};
use std::{collections::VecDeque, path::PathBuf, sync::Arc, time::Duration};
use tokio::{sync::mpsc, task::JoinHandle};

/// Messages published but not yet acknowledged (below rumqttc's default in-flight limit of 100,
/// so that `try_publish` never finds its channel full).
pub const WINDOW: usize = 64;

/// A validated MQTT configuration.
#[derive(Clone, Debug)]
pub struct Config {
    options: MqttOptions,
    url: String,
    credentials_file: Option<PathBuf>,
    template: Template,
    fixed: Fixed,
    backoff_max: Duration,
}

impl Config {
    /// Validates `--mqtt-url`, the topic template and the credentials file.
    pub fn new(url: &str, args: &ExporterArgs) -> Result<Self, ExportError> {
        let invalid = |reason: String| ExportError::InvalidUrl {
            flag: "--mqtt-url (PODTRACE_MQTT_URL)",
            url: url.into(),
            reason,
            expected: "mqtt://host:1883 or mqtts://host:8883",
        };
        let parsed = url::Url::parse(url).map_err(|e| invalid(e.to_string()))?;
        let (tls, default_port) = match parsed.scheme() {
            "mqtt" | "tcp" => (false, 1883),
            "mqtts" | "ssl" => (true, 8883),
            other => return Err(invalid(format!("unsupported scheme {other:?}"))),
        };
        let host =
            parsed.host_str().filter(|h| !h.is_empty()).ok_or_else(|| invalid("no host".into()))?;
        let host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
        let port = parsed.port().unwrap_or(default_port);
        let client_id = args.mqtt_client_id.clone().unwrap_or_else(|| {
            if args.node_name.is_empty() {
                format!("podtrace-agent-{}", std::process::id())
            } else {
                format!("podtrace-agent-{}", args.node_name)
            }
        });
        let mut options = MqttOptions::new(client_id, host, port);
        options
            .set_keep_alive(Duration::from_secs(30))
            .set_clean_session(true)
            .set_max_packet_size(1 << 20, 1 << 20);
        if tls {
            options.set_transport(Transport::tls_with_default_config());
        }
        if let Some(path) = &args.mqtt_credentials_file {
            let (user, password) = read_credentials(path)?;
            options.set_credentials(user, password);
        }
        Ok(Config {
            options,
            url: url.to_owned(),
            credentials_file: args.mqtt_credentials_file.clone(),
            template: Template::parse(&args.mqtt_topic)?,
            fixed: Fixed { domain: args.mqtt_domain.clone(), channel: args.mqtt_channel.clone() },
            backoff_max: args.export_backoff_max,
        })
    }

    /// The topic and JSON payload of a target item (`None` for the kernel item, which MQTT does
    /// not carry).
    pub fn encode(&self, item: &Item) -> Result<Option<(String, Vec<u8>)>, ExportError> {
        let Some(t) = item.target() else { return Ok(None) };
        let topic = self.template.render(&self.fixed, t);
        Ok(Some((topic, serde_json::to_vec(&MqttMessage::from(t))?)))
    }
}

/// Reads `username:password` (one line; the password may contain ':').
fn read_credentials(path: &PathBuf) -> Result<(String, String), ExportError> {
    let err = |reason: String| ExportError::Credentials { path: path.clone(), reason };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    let line = text.lines().next().unwrap_or("").trim_end_matches('\r');
    let (user, password) = line.split_once(':').ok_or_else(|| err("no ':' found".into()))?;
    if user.is_empty() {
        return Err(err("the username is empty".into()));
    }
    Ok((user.to_owned(), password.to_owned()))
}

/// What the driver tells the publisher.
#[derive(Debug)]
enum Signal {
    Up,
    Acked,
    Down(String),
}

/// Starts the driver and the publisher.
pub fn spawn(config: Config, queue: Arc<Queue<Item>>, stats: Stats) -> Vec<JoinHandle<()>> {
    let (client, eventloop) = AsyncClient::new(config.options.clone(), WINDOW);
    let (tx, rx) = mpsc::unbounded_channel();
    stats.set_connecting(format!("connecting to MQTT at {}", config.url));
    let driver = tokio::spawn(drive(eventloop, tx, config.clone()));
    let publisher = tokio::spawn(publish(client, rx, config, queue, stats));
    vec![driver, publisher]
}

async fn drive(mut eventloop: EventLoop, tx: mpsc::UnboundedSender<Signal>, config: Config) {
    let mut backoff = Backoff::new(BACKOFF_MIN, config.backoff_max);
    loop {
        let signal = match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                backoff.reset();
                Signal::Up
            }
            Ok(Event::Incoming(Packet::PubAck(_))) => Signal::Acked,
            Ok(_) => continue,
            Err(e) => Signal::Down(describe(&e, &config)),
        };
        let down = matches!(signal, Signal::Down(_));
        if tx.send(signal).is_err() {
            return;
        }
        if down {
            tokio::time::sleep(backoff.next_delay()).await;
        }
    }
}

fn describe(e: &ConnectionError, config: &Config) -> String {
    let url = &config.url;
    match e {
        ConnectionError::ConnectionRefused(
            code @ (ConnectReturnCode::BadUserNamePassword | ConnectReturnCode::NotAuthorized),
        ) => match &config.credentials_file {
            Some(file) => format!(
                "MQTT at {url} refused the credentials in {} ({code:?}); fix the file",
                file.display()
            ),
            None => format!(
                "MQTT at {url} requires credentials ({code:?}); set --mqtt-credentials-file"
            ),
        },
        e => format!("MQTT at {url}: {e}; reconnecting"),
    }
}

async fn publish(
    client: AsyncClient,
    mut rx: mpsc::UnboundedReceiver<Signal>,
    config: Config,
    queue: Arc<Queue<Item>>,
    stats: Stats,
) {
    let mut inflight: VecDeque<Item> = VecDeque::with_capacity(WINDOW);
    let mut up = false;
    loop {
        tokio::select! {
            signal = rx.recv() => match signal {
                None => return,
                Some(Signal::Up) => {
                    up = true;
                    stats.set_connected();
                }
                Some(Signal::Acked) => {
                    if inflight.pop_front().is_some() {
                        stats.sent.inc();
                        queue.settle(1);
                    }
                }
                Some(Signal::Down(reason)) => {
                    up = false;
                    queue.give_back(inflight.drain(..).collect());
                    stats.set_disconnected(reason);
                }
            },
            () = queue.ready(), if up && inflight.len() < WINDOW => {
                let mut chunk = queue.take(WINDOW - inflight.len()).into_iter();
                while let Some(item) = chunk.next() {
                    let (topic, payload) = match config.encode(&item) {
                        Ok(Some(x)) => x,
                        Ok(None) => {
                            queue.settle(1);
                            continue;
                        }
                        Err(e) => {
                            tracing::error!(exporter = "mqtt", error = %e, "dropping a message");
                            stats.rejected(1);
                            queue.settle(1);
                            continue;
                        }
                    };
                    if let Err(e) = client.try_publish(topic, QoS::AtLeastOnce, false, payload) {
                        tracing::debug!(exporter = "mqtt", error = %e, "publish refused; retrying");
                        let mut rest = vec![item];
                        rest.extend(chunk);
                        queue.give_back(rest);
                        break;
                    }
                    inflight.push_back(item);
                }
            }
        }
    }
}
