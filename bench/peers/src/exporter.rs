//! One running exporter (the podtrace agent, cAdvisor or node_exporter) in a metering cgroup of
//! its own, and what the bench reads of it: CPU time, RSS and `/metrics` scrapes.

use crate::cgroups::Meter;
use anyhow::{Context, Result, bail};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A free loopback port.
pub fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A running exporter; stopped (SIGTERM, then SIGKILL) on drop, before its meter goes.
pub struct Exporter {
    /// Its name in the tables.
    pub name: &'static str,
    child: Child,
    port: u16,
    log: std::path::PathBuf,
    meter: Meter,
}

/// One `/metrics` response.
#[derive(Clone, Debug, Default)]
pub struct Scrape {
    /// Wall time from connecting to the last byte.
    pub time: Duration,
    /// The body's bytes (uncompressed: the request asks for no encoding).
    pub bytes: usize,
    /// The body.
    pub body: String,
}

impl Scrape {
    /// Series: lines that are not comments.
    pub fn series(&self) -> usize {
        self.body.lines().filter(|l| !l.is_empty() && !l.starts_with('#')).count()
    }

    /// The sum of the values of the series of `name` (every label set).
    pub fn sum(&self, name: &str) -> f64 {
        self.body
            .lines()
            .filter(|l| l.strip_prefix(name).is_some_and(|r| r.starts_with(['{', ' '])))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// Series whose line contains `needle`.
    pub fn series_with(&self, needle: &str) -> usize {
        self.body.lines().filter(|l| !l.starts_with('#') && l.contains(needle)).count()
    }
}

impl Exporter {
    /// Starts `command` (listening on `port`) and moves it into a meter cgroup of its own; its
    /// stderr goes to a log file in the temporary directory.
    pub fn start(name: &'static str, mut command: Command, port: u16) -> Result<Exporter> {
        let meter = Meter::new(name)?;
        let log =
            std::env::temp_dir().join(format!("peers-bench-{}-{name}.log", std::process::id()));
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .with_context(|| format!("starting {name}: {command:?}"))?;
        meter.add(child.id())?;
        Ok(Exporter { name, child, port, log, meter })
    }

    /// Its CPU time so far, every thread, ns.
    pub fn cpu_ns(&self) -> Result<u64> {
        self.meter.cpu_ns()
    }

    /// Its resident memory, bytes: all of it (`VmRSS`) and the anonymous part (`RssAnon`: heap
    /// and stacks, without the pages of its binary and libraries, which are shared and
    /// reclaimable page cache).
    pub fn rss_bytes(&self) -> Result<(u64, u64)> {
        let path = format!("/proc/{}/status", self.child.id());
        let status = std::fs::read_to_string(&path).with_context(|| path.clone())?;
        let kib = |key: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                .map(|k| k * 1024)
                .with_context(|| format!("{path}: no {key}"))
        };
        Ok((kib("VmRSS:")?, kib("RssAnon:")?))
    }

    /// Its open file descriptors.
    pub fn open_files(&self) -> Result<usize> {
        let dir = format!("/proc/{}/fd", self.child.id());
        Ok(std::fs::read_dir(&dir).with_context(|| dir.clone())?.count())
    }

    /// `GET /metrics` over HTTP/1.0 (so that neither server chunks the body), timed.
    pub fn scrape(&mut self) -> Result<Scrape> {
        self.check_alive()?;
        let start = Instant::now();
        let mut s = TcpStream::connect(("127.0.0.1", self.port))?;
        s.set_read_timeout(Some(Duration::from_secs(120)))?;
        write!(s, "GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw)?;
        let time = start.elapsed();
        let text = String::from_utf8(raw).context("a /metrics response that is not UTF-8")?;
        let (head, body) = text.split_once("\r\n\r\n").context("a response without headers")?;
        let status = head.split_whitespace().nth(1);
        if !head.starts_with("HTTP/1.") || status != Some("200") {
            bail!("{}: /metrics answered {:?}", self.name, head.lines().next());
        }
        Ok(Scrape { time, bytes: body.len(), body: body.to_owned() })
    }

    /// Scrapes until `ready` accepts the body, or fails after `timeout`.
    pub fn wait_until(
        &mut self,
        timeout: Duration,
        what: &str,
        ready: impl Fn(&Scrape) -> bool,
    ) -> Result<Scrape> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.scrape() {
                Ok(s) if ready(&s) => return Ok(s),
                Err(e) if self.check_alive().is_err() => return Err(e),
                _ => {}
            }
            if Instant::now() > deadline {
                bail!(
                    "{} did not get ready ({what}) in {timeout:?}; its log: {}",
                    self.name,
                    self.log.display()
                );
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    fn check_alive(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(5).collect();
            bail!("{} exited: {status}; its last log lines: {tail:?}", self.name);
        }
        Ok(())
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        #[allow(unsafe_code, reason = "kill(2) to ask the exporter to stop cleanly")]
        // SAFETY: signalling our own child by pid.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                let _ = std::fs::remove_file(&self.log);
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_sums_and_markers_are_read_from_the_exposition() {
        let body = "# HELP podtrace_agent_errors_total Errors.\n# TYPE podtrace_agent_errors_total counter\n\
            podtrace_agent_errors_total{source=\"resource\",reason=\"io\"} 3\n\
            podtrace_agent_errors_total{source=\"process\",reason=\"io\"} 4.5\n\
            podtrace_agent_errors_total_other 100\n\
            container_last_seen{id=\"/podtrace-peers-1/b00-c00000\"} 1.7e9\n\n";
        let s = Scrape { time: Duration::ZERO, bytes: body.len(), body: body.into() };
        assert_eq!(s.series(), 4);
        assert_eq!(s.sum("podtrace_agent_errors_total"), 7.5);
        assert_eq!(s.series_with("id=\"/podtrace-peers-1/"), 1);
        assert_eq!(s.sum("node_context_switches_total"), 0.0);
    }
}
