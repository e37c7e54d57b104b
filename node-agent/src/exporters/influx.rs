//! The Influx exporter: line protocol ([`super::line_protocol`]) every interval to a TCP or UDP
//! listener (Telegraf's `socket_listener`, InfluxDB's UDP service) or to InfluxDB's HTTP
//! `/write`.
//!
//! | transport | a chunk counts as sent when | on failure |
//! |---|---|---|
//! | `tcp://` | it is written to the socket | reconnect with backoff, chunk back to the queue |
//! | `udp://` | every datagram is sent (UDP has no acknowledgement) | chunk back to the queue |
//! | `http://…/write` | InfluxDB answers 2xx | 4xx other than auth: dropped and counted (the data is malformed and would be refused again); anything else: back to the queue |

use super::{
    BACKOFF_MIN, ExportError, ExporterArgs, Item,
    backoff::Backoff,
    delivery::{Failure, settle},
    line_protocol,
    queue::Queue,
    stats::Stats,
};
use std::{sync::Arc, time::Duration};
use tokio::{
    io::AsyncWriteExt,
    net::{TcpStream, UdpSocket},
};

/// Items (targets) encoded into one write.
const CHUNK: usize = 1000;
/// Largest UDP datagram: one Ethernet MTU, so that no datagram is fragmented (a lost fragment
/// loses the whole datagram); longer lines go alone.
pub const UDP_PAYLOAD: usize = 1400;
/// Time allowed for connecting and for one write.
const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the lines go.
#[derive(Clone, Debug)]
pub enum Endpoint {
    /// `host:port` of a TCP line-protocol listener.
    Tcp(String),
    /// `host:port` of a UDP line-protocol listener.
    Udp(String),
    /// InfluxDB's `/write` URL, with its query (db, rp, u, p, precision).
    Http(url::Url),
}

/// A validated Influx configuration.
#[derive(Clone, Debug)]
pub struct Config {
    endpoint: Endpoint,
    shown: String,
    node: String,
    instance_id: String,
    backoff_max: Duration,
}

impl Config {
    /// Validates `--influx-url`.
    pub fn new(url: &str, args: &ExporterArgs) -> Result<Self, ExportError> {
        let invalid = |reason: String| ExportError::InvalidUrl {
            flag: "--influx-url (PODTRACE_INFLUX_URL)",
            url: url.into(),
            reason,
            expected: "tcp://host:port, udp://host:port or http://host:8086/write?db=NAME",
        };
        let parsed = url::Url::parse(url).map_err(|e| invalid(e.to_string()))?;
        let host =
            parsed.host_str().filter(|h| !h.is_empty()).ok_or_else(|| invalid("no host".into()));
        let socket = |host: &str| match parsed.port() {
            Some(port) => Ok(format!("{host}:{port}")),
            None => Err(invalid("no port".into())),
        };
        let endpoint = match parsed.scheme() {
            "tcp" => Endpoint::Tcp(socket(host?)?),
            "udp" => Endpoint::Udp(socket(host?)?),
            "http" => {
                host?;
                if parsed.path().ends_with("/write")
                    && !parsed.query_pairs().any(|(k, _)| k == "db")
                {
                    return Err(invalid("InfluxDB 1.x's /write needs ?db=NAME".into()));
                }
                if parsed.query_pairs().any(|(k, v)| k == "precision" && v != "ns") {
                    return Err(invalid(
                        "the lines carry nanosecond timestamps: drop precision= or set it to ns"
                            .into(),
                    ));
                }
                if parsed.path() == "/" {
                    return Err(invalid("no path: InfluxDB writes to /write?db=NAME".into()));
                }
                Endpoint::Http(parsed.clone())
            }
            "https" => {
                return Err(invalid(
                    "https is not built in; use http to a local Telegraf or InfluxDB".into(),
                ));
            }
            other => return Err(invalid(format!("unsupported scheme {other:?}"))),
        };
        let mut shown = parsed.clone();
        shown.set_query(None);
        let _ = shown.set_password(None);
        Ok(Config {
            endpoint,
            shown: shown.to_string(),
            node: args.node_name.clone(),
            instance_id: args.instance_id.clone(),
            backoff_max: args.export_backoff_max,
        })
    }

    /// Appends the lines of `item` to `out`.
    pub fn encode(&self, out: &mut String, item: &Item) {
        match item {
            Item::Target(t) => line_protocol::encode_target(out, t),
            Item::Kernel(k) => line_protocol::encode_kernel(out, k, &self.node, &self.instance_id),
        }
    }
}

/// An open connection (or client) to the endpoint.
enum Conn {
    Tcp(Option<TcpStream>),
    Udp(Option<UdpSocket>),
    Http(reqwest::Client),
}

/// Runs the exporter until the task is aborted.
pub async fn run(config: Config, queue: Arc<Queue<Item>>, stats: Stats) {
    let mut conn = match &config.endpoint {
        Endpoint::Tcp(_) => Conn::Tcp(None),
        Endpoint::Udp(_) => Conn::Udp(None),
        Endpoint::Http(_) => match reqwest::Client::builder().timeout(IO_TIMEOUT).build() {
            Ok(c) => Conn::Http(c),
            Err(e) => {
                stats.set_disconnected(ExportError::HttpClient(e).to_string());
                return;
            }
        },
    };
    let mut backoff = Backoff::new(BACKOFF_MIN, config.backoff_max);
    // Check the endpoint once at start so that health is right before the first interval.
    stats.set_connecting(format!("connecting to Influx at {}", config.shown));
    while let Err(reason) = probe(&mut conn, &config).await {
        stats.set_disconnected(reason);
        tokio::time::sleep(backoff.next_delay()).await;
    }
    stats.set_connected();
    backoff.reset();
    let mut payload = String::new();
    loop {
        queue.ready().await;
        let chunk = queue.take(CHUNK);
        payload.clear();
        for item in &chunk {
            config.encode(&mut payload, item);
        }
        let outcome = write(&mut conn, &config, &payload).await;
        settle(outcome, "influx", chunk, &queue, &stats, &mut backoff).await;
    }
}

/// Connects (TCP, UDP) or pings (HTTP).
async fn probe(conn: &mut Conn, config: &Config) -> Result<(), String> {
    match (conn, &config.endpoint) {
        (Conn::Tcp(stream), Endpoint::Tcp(addr)) => {
            *stream = Some(connect_tcp(addr, &config.shown).await?);
            Ok(())
        }
        (Conn::Udp(socket), Endpoint::Udp(addr)) => {
            *socket = Some(connect_udp(addr, &config.shown).await?);
            Ok(())
        }
        (Conn::Http(client), Endpoint::Http(url)) => {
            let mut ping = url.clone();
            ping.set_path("/ping");
            ping.set_query(None);
            let r = client.get(ping).send().await;
            r.map(|_| ()).map_err(|e| format!("Influx at {} is not reachable: {e}", config.shown))
        }
        _ => unreachable!("the connection matches the endpoint"),
    }
}

async fn connect_tcp(addr: &str, shown: &str) -> Result<TcpStream, String> {
    match tokio::time::timeout(IO_TIMEOUT, TcpStream::connect(addr)).await {
        Ok(Ok(s)) => {
            let _ = s.set_nodelay(true);
            Ok(s)
        }
        Ok(Err(e)) => Err(format!("cannot connect to Influx at {shown}: {e}; retrying")),
        Err(_) => Err(format!("connecting to Influx at {shown} timed out; retrying")),
    }
}

async fn connect_udp(addr: &str, shown: &str) -> Result<UdpSocket, String> {
    let any = if addr.starts_with('[') { "[::]:0" } else { "0.0.0.0:0" };
    let socket = UdpSocket::bind(any).await.map_err(|e| format!("UDP socket: {e}"))?;
    socket.connect(addr).await.map_err(|e| format!("cannot resolve Influx at {shown}: {e}"))?;
    Ok(socket)
}

async fn write(conn: &mut Conn, config: &Config, payload: &str) -> Result<(), Failure> {
    if payload.is_empty() {
        return Ok(());
    }
    match (conn, &config.endpoint) {
        (Conn::Tcp(slot), Endpoint::Tcp(addr)) => {
            // A listener that went away shows as a readable EOF; writing into it would succeed
            // into the socket buffer and lose the lines.
            if let Some(s) = slot.as_ref() {
                let mut probe = [0u8; 1];
                if matches!(s.try_read(&mut probe), Ok(0)) {
                    *slot = None;
                }
            }
            let stream = match slot {
                Some(s) => s,
                None => {
                    slot.insert(connect_tcp(addr, &config.shown).await.map_err(Failure::Retry)?)
                }
            };
            let sent = tokio::time::timeout(IO_TIMEOUT, stream.write_all(payload.as_bytes())).await;
            match sent {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => {
                    *slot = None;
                    Err(Failure::Retry(format!("writing to Influx at {}: {e}", config.shown)))
                }
                Err(_) => {
                    *slot = None;
                    Err(Failure::Retry(format!("writing to Influx at {} timed out", config.shown)))
                }
            }
        }
        (Conn::Udp(slot), Endpoint::Udp(addr)) => {
            let socket = match slot {
                Some(s) => s,
                None => {
                    slot.insert(connect_udp(addr, &config.shown).await.map_err(Failure::Retry)?)
                }
            };
            for datagram in datagrams(payload, UDP_PAYLOAD) {
                if let Err(e) = socket.send(datagram.as_bytes()).await {
                    *slot = None;
                    return Err(Failure::Retry(format!(
                        "sending to Influx at {}: {e}",
                        config.shown
                    )));
                }
            }
            Ok(())
        }
        (Conn::Http(client), Endpoint::Http(url)) => {
            let response = client
                .post(url.clone())
                .header("content-type", "text/plain; charset=utf-8")
                .body(payload.to_owned())
                .send()
                .await
                .map_err(|e| Failure::Retry(format!("Influx at {}: {e}", config.shown)))?;
            let status = response.status();
            if status.is_success() {
                return Ok(());
            }
            let body = response.text().await.unwrap_or_default();
            let body = body.trim();
            let shown = &config.shown;
            Err(match status.as_u16() {
                401 | 403 => Failure::Retry(format!(
                    "Influx at {shown} refused the credentials ({status}: {body}); fix u= and p= in --influx-url"
                )),
                404 => Failure::Retry(format!(
                    "Influx at {shown}: {body} ({status}); create the database or fix db= in --influx-url"
                )),
                400..=499 => Failure::Rejected(format!("Influx at {shown}: {status}: {body}")),
                _ => Failure::Retry(format!("Influx at {shown}: {status}: {body}")),
            })
        }
        _ => unreachable!("the connection matches the endpoint"),
    }
}

/// Splits `payload` at line ends into pieces of at most `max` bytes (a longer line goes alone).
pub fn datagrams(payload: &str, max: usize) -> impl Iterator<Item = &str> {
    let mut rest = payload;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut end = 0;
        for (i, _) in rest.match_indices('\n') {
            if i + 1 > max && end > 0 {
                break;
            }
            end = i + 1;
            if end >= max {
                break;
            }
        }
        if end == 0 {
            end = rest.len();
        }
        let (piece, tail) = rest.split_at(end);
        rest = tail;
        Some(piece)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datagrams_split_at_line_ends_within_the_limit() {
        let payload = "aaaa\nbbbb\ncccccccccc\nd\n";
        let pieces: Vec<_> = datagrams(payload, 10).collect();
        assert_eq!(pieces, ["aaaa\nbbbb\n", "cccccccccc\n", "d\n"]);
        assert_eq!(datagrams(payload, 10).collect::<String>(), payload);
        assert_eq!(datagrams("no newline", 4).collect::<Vec<_>>(), ["no newline"]);
    }

    #[test]
    fn bad_urls_are_refused_with_advice() {
        let args = ExporterArgs::disabled();
        for (url, reason) in [
            ("http://influx:8086/write", "needs ?db=NAME"),
            ("https://influx:8086/write?db=x", "https is not built in"),
            ("tcp://influx", "no port"),
            ("http://influx:8086/write?db=x&precision=s", "nanosecond timestamps"),
            ("ftp://x:1", "unsupported scheme"),
            ("influx:8086", "unsupported scheme"),
        ] {
            let e = Config::new(url, &args).unwrap_err().to_string();
            assert!(e.contains(reason) && e.contains("--influx-url"), "{url}: {e}");
        }
        assert!(Config::new("udp://127.0.0.1:8089", &args).is_ok());
        assert!(Config::new("http://127.0.0.1:8086/write?db=x&u=a&p=b", &args).is_ok());
    }
}
