//! The admin channel: a line-based TCP service (default `127.0.0.1:2323`) that changes log
//! levels and switches metric sources at run time, as reference/runtime-admin-channel.md
//! describes. One command per line, one answer line per command: `ok`, a report such as
//! `*:enable,kernel:disable`, or `error: …`. With a shared token, the first line of a connection
//! must be `T<token>`.
//!
//! Malformed input never stops the agent: bad commands get an error line, lines over 4 KiB,
//! invalid UTF-8 and idle connections (60 s) are closed.

pub mod command;

use std::{collections::BTreeMap, sync::Arc, time::Duration};
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::{TcpListener, TcpStream},
};

use crate::metrics::{
    Sources, Store,
    sources::{Source, SourcesUpdate, UnknownSource},
};
use command::{Command, Query};
use parking_lot::Mutex;

/// Longest accepted line.
const MAX_LINE: u64 = 4096;
/// Idle connections are closed after this.
const IDLE: Duration = Duration::from_secs(60);
/// Most log targets with a level of their own. Every target is a directive of the tracing
/// filter, checked on every log event and listed by `l*`: unbounded, a client could slow the
/// agent's logging and the channel itself down (2,000 targets took a command from 0.5 to 12 ms
/// and `l*` to 168 KB).
pub const MAX_LOG_TARGETS: usize = 64;

/// Applies a log filter (the tracing reload handle in the binary, a recorder in tests).
pub trait LogControl: Send + Sync {
    /// Installs `filter` (EnvFilter syntax).
    fn set(&self, filter: &str) -> Result<(), String>;
}

impl LogControl for podtrace_runtime::logging::LogReloadHandle {
    fn set(&self, filter: &str) -> Result<(), String> {
        let f = podtrace_runtime::logging::parse_filter(filter).map_err(|e| e.to_string())?;
        self.reload(f).map_err(|e| e.to_string())
    }
}

/// The log levels as the channel knows them: a default and per-target levels.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogLevels {
    /// The level of every target not listed.
    pub default: String,
    /// Per target.
    pub targets: BTreeMap<String, String>,
}

impl LogLevels {
    /// From an EnvFilter directive such as `info,podtrace_agent=debug` (complex directives with
    /// spans or fields are kept as targets verbatim).
    pub fn from_filter(filter: &str) -> Self {
        let mut out = Self { default: "info".into(), targets: BTreeMap::new() };
        for d in filter.split(',').map(str::trim).filter(|d| !d.is_empty()) {
            match d.rsplit_once('=') {
                Some((t, l)) => {
                    out.targets.insert(t.to_owned(), l.to_owned());
                }
                None => out.default = d.to_owned(),
            }
        }
        out
    }

    /// The EnvFilter directive.
    pub fn filter(&self) -> String {
        let mut s = self.default.clone();
        for (t, l) in &self.targets {
            s.push_str(&format!(",{t}={l}"));
        }
        s
    }
}

/// The state the channel changes.
pub struct AdminChannel {
    sources: Arc<Sources>,
    store: Arc<Store>,
    log: Mutex<LogLevels>,
    control: Box<dyn LogControl>,
    token: Option<String>,
}

impl AdminChannel {
    /// A channel over the agent's sources, store and log filter.
    pub fn new(
        sources: Arc<Sources>,
        store: Arc<Store>,
        initial_filter: &str,
        control: Box<dyn LogControl>,
        token: Option<String>,
    ) -> Self {
        Self {
            sources,
            store,
            log: Mutex::new(LogLevels::from_filter(initial_filter)),
            control,
            token,
        }
    }

    /// Executes one line and returns the answer (without newline).
    pub fn execute(&self, line: &str) -> String {
        match command::parse(line) {
            Err(e) => format!("error: {e}"),
            Ok(cmd) => self.run(cmd).unwrap_or_else(|e| format!("error: {e}")),
        }
    }

    fn run(&self, cmd: Command) -> Result<String, String> {
        match cmd {
            Command::SetLog { default, targets } => {
                let mut log = self.log.lock();
                let mut next = log.clone();
                if let Some(d) = default {
                    next.default = d.name().into();
                    // `*` resets every target, as in the reference ("all log sources are enabled
                    // on the debug level").
                    next.targets.clear();
                }
                for (t, l) in targets {
                    next.targets.insert(t, l.name().into());
                }
                if next.targets.len() > MAX_LOG_TARGETS {
                    return Err(format!(
                        "at most {MAX_LOG_TARGETS} log targets can have a level of their own \
                         ({} asked); set fewer, or reset them all with L*:LEVEL",
                        next.targets.len()
                    ));
                }
                self.control.set(&next.filter())?;
                *log = next;
                Ok("ok".into())
            }
            Command::GetLog(q) => {
                let log = self.log.lock();
                let mut parts = Vec::new();
                match q {
                    Query::Changed | Query::All => {
                        parts.push(format!("*:{}", log.default));
                        for (t, l) in &log.targets {
                            if matches!(q, Query::All) || *l != log.default {
                                parts.push(format!("{t}:{l}"));
                            }
                        }
                    }
                    Query::Named(names) => {
                        for n in names {
                            parts.push(format!(
                                "{n}:{}",
                                log.targets.get(&n).unwrap_or(&log.default)
                            ));
                        }
                    }
                }
                Ok(parts.join(","))
            }
            Command::SetMetrics(switches) => {
                let sources = switches
                    .sources
                    .iter()
                    .map(|(name, on)| Ok((name.parse::<Source>()?, *on)))
                    .collect::<Result<_, UnknownSource>>()
                    .map_err(|e| e.to_string())?;
                let update = SourcesUpdate { all: switches.all, tags: switches.tags, sources };
                self.sources.apply(&update);
                for (source, on) in self.sources.state().sources {
                    if !on {
                        self.store.clear_source(source);
                    }
                }
                Ok("ok".into())
            }
            Command::GetMetrics(q) => {
                let s = self.sources.state();
                let word = |on: bool| if on { "enable" } else { "disable" };
                let mut parts = Vec::new();
                match q {
                    Query::Changed | Query::All => {
                        parts.push(format!("*:{}", word(s.default)));
                        if matches!(q, Query::All) {
                            parts.extend(s.enabled_tags.iter().map(|t| format!("tag:{t}:enable")));
                        }
                        for (n, on) in &s.sources {
                            if matches!(q, Query::All) || *on != s.default {
                                parts.push(format!("{n}:{}", word(*on)));
                            }
                        }
                    }
                    Query::Named(names) => {
                        for n in names {
                            let source = n.parse::<Source>().map_err(|e| e.to_string())?;
                            parts.push(format!("{n}:{}", word(s.sources[&source])));
                        }
                    }
                }
                Ok(parts.join(","))
            }
        }
    }

    /// Serves connections on `listener` until the task is dropped.
    pub async fn serve(self: Arc<Self>, listener: TcpListener) {
        loop {
            match listener.accept().await {
                Ok((stream, peer)) => {
                    let me = self.clone();
                    tokio::spawn(async move {
                        if let Err(e) = me.connection(stream).await {
                            tracing::debug!(%peer, error = %e, "admin channel connection closed");
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "admin channel accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    async fn connection(&self, stream: TcpStream) -> std::io::Result<()> {
        let (read, mut write) = stream.into_split();
        let mut reader = BufReader::new(read);
        let mut authenticated = self.token.is_none();
        loop {
            let mut line = String::new();
            let n =
                match tokio::time::timeout(IDLE, (&mut reader).take(MAX_LINE).read_line(&mut line))
                    .await
                {
                    Err(_) => return Ok(()),
                    Ok(Err(e)) => {
                        write.write_all(b"error: input is not UTF-8 text; closing\n").await?;
                        return Err(e);
                    }
                    Ok(Ok(n)) => n,
                };
            if n == 0 {
                return Ok(());
            }
            if !line.ends_with('\n') && n as u64 >= MAX_LINE {
                write.write_all(b"error: line longer than 4096 bytes; closing\n").await?;
                return Ok(());
            }
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            if !authenticated {
                let ok = line.strip_prefix('T').is_some_and(|t| Some(t) == self.token.as_deref());
                if !ok {
                    write.write_all(b"error: send T<token> first; closing\n").await?;
                    return Ok(());
                }
                authenticated = true;
                write.write_all(b"ok\n").await?;
                continue;
            }
            let mut answer = self.execute(line);
            answer.push('\n');
            write.write_all(answer.as_bytes()).await?;
        }
    }
}

/// A [`LogControl`] that only records (standalone tests, or a process without a reload handle).
#[derive(Default)]
pub struct RecordingLog(pub Mutex<Vec<String>>);

impl LogControl for RecordingLog {
    fn set(&self, filter: &str) -> Result<(), String> {
        podtrace_runtime::logging::parse_filter(filter).map_err(|e| e.to_string())?;
        self.0.lock().push(filter.to_owned());
        Ok(())
    }
}

impl LogControl for Arc<RecordingLog> {
    fn set(&self, filter: &str) -> Result<(), String> {
        self.as_ref().set(filter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn channel(token: Option<&str>) -> (Arc<AdminChannel>, Arc<RecordingLog>) {
        let log = Arc::new(RecordingLog::default());
        let ch = AdminChannel::new(
            Arc::new(Sources::default()),
            Arc::new(Store::default()),
            "info,h2=warn",
            Box::new(log.clone()),
            token.map(String::from),
        );
        (Arc::new(ch), log)
    }

    #[test]
    fn log_commands_reload_the_filter_and_report_levels() {
        let (ch, log) = channel(None);
        assert_eq!(ch.execute("l"), "*:info,h2:warn");
        assert_eq!(ch.execute("Lpodtrace_agent:debug"), "ok");
        assert_eq!(log.0.lock().last().unwrap(), "info,h2=warn,podtrace_agent=debug");
        assert_eq!(ch.execute("lpodtrace_agent,kube"), "podtrace_agent:debug,kube:info");
        assert_eq!(ch.execute("L*:warning"), "ok");
        assert_eq!(ch.execute("l*"), "*:warn");
        assert!(ch.execute("L*:loud").starts_with("error: "));
    }

    #[test]
    fn log_targets_are_bounded_with_a_clear_error() {
        let (ch, log) = channel(None);
        // h2 is the initial filter's target: 63 more fit.
        for i in 0..2000 {
            let answer = ch.execute(&format!("Ltarget{i}:info"));
            if i < MAX_LOG_TARGETS - 1 {
                assert_eq!(answer, "ok", "target {i}");
            } else {
                assert!(answer.starts_with("error: at most 64 log targets"), "{i}: {answer}");
            }
        }
        assert_eq!(ch.execute("l*").split(',').count(), 1 + MAX_LOG_TARGETS, "the default and 64");
        assert_eq!(ch.execute("Ltarget0:debug"), "ok", "a target already set can change");
        assert_eq!(log.0.lock().len(), MAX_LOG_TARGETS, "refused commands reload nothing");
        assert_eq!(ch.execute("L*:info"), "ok");
        assert_eq!(ch.execute("Lnew:debug"), "ok", "L* resets the targets");
    }

    #[test]
    fn metrics_commands_switch_sources_and_report_them() {
        let (ch, _) = channel(None);
        assert_eq!(ch.execute("m"), "*:enable");
        assert_eq!(ch.execute("M*:disable,resource:enable"), "ok");
        assert_eq!(ch.execute("m"), "*:disable,resource:enable");
        assert_eq!(ch.execute("Mtag:proc:enable"), "ok");
        assert_eq!(
            ch.execute("m*"),
            "*:disable,tag:proc:enable,agent:disable,cpu:disable,fs:disable,kernel:enable,net:disable,process:enable,resource:enable"
        );
        assert_eq!(ch.execute("mkernel,agent"), "kernel:enable,agent:disable");
        let unknown = "error: unknown metrics source \"nope\" (sources: agent, cpu, fs, kernel, net, process, resource)";
        assert_eq!(ch.execute("mnope"), unknown);
        assert_eq!(ch.execute("Mnope:enable"), unknown);
        assert_eq!(ch.execute("hello"), "error: unknown command 'h'; expected L, l, M or m");
    }

    #[test]
    fn each_probe_family_is_a_source_of_its_own() {
        use crate::metrics::{Sample, TargetKey, catalog};
        let store = Arc::new(Store::default());
        let ch = AdminChannel::new(
            Arc::new(Sources::default()),
            store.clone(),
            "info",
            Box::new(RecordingLog::default()),
            None,
        );
        let t = TargetKey::new("ns", "p", "c");
        let gauge = |family| Sample::new(family, t.labels(), 1.0);
        for (source, family) in [
            (Source::Net, catalog::RTT_LATEST),
            (Source::Fs, catalog::FS_LATEST),
            (Source::Cpu, catalog::CPU_BLOCK_LATEST),
        ] {
            store.replace(source, &t, vec![gauge(family)], None);
        }
        let served = |ch: &AdminChannel| {
            let mut text = String::new();
            store.encode(&mut text, |s| ch.sources.enabled(s)).unwrap();
            ["podtrace_rtt_", "podtrace_fs_", "podtrace_cpu_block_"].map(|p| text.contains(p))
        };
        assert_eq!(served(&ch), [true, true, true]);
        assert_eq!(ch.execute("Mnet:disable"), "ok");
        assert_eq!(served(&ch), [false, true, true]);
        assert_eq!(ch.execute("mnet,fs,cpu"), "net:disable,fs:enable,cpu:enable");
        assert_eq!(ch.execute("Mtag:ebpf:disable"), "ok");
        assert_eq!(served(&ch), [false, false, false]);
    }

    #[tokio::test]
    async fn tcp_clients_get_one_answer_per_line_and_bad_input_closes_only_that_connection() {
        let (ch, _) = channel(Some("s3cret"));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(ch.serve(listener));
        let talk = |input: Vec<u8>| async move {
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(&input).await.unwrap();
            s.shutdown().await.unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).await.unwrap();
            out
        };
        assert_eq!(talk(b"m\n".to_vec()).await, "error: send T<token> first; closing\n");
        assert_eq!(
            talk(b"Ts3cret\nm\nMkernel:disable\nmkernel\n".to_vec()).await,
            "ok\n*:enable\nok\nkernel:disable\n"
        );
        assert!(talk(b"Ts3cret\n\xff\xfe\n".to_vec()).await.contains("not UTF-8"));
        assert!(
            talk([b"Ts3cret\n".to_vec(), vec![b'm'; 10_000]].concat())
                .await
                .contains("longer than 4096")
        );
        // The server still answers.
        assert_eq!(talk(b"Ts3cret\nl\n".to_vec()).await, "ok\n*:info,h2:warn\n");
    }
}
