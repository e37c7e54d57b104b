//! One run of the agent binary in standalone mode, tracing one cgroup with one preset, and what
//! the bench reads of it: when it is ready, its CPU time and RSS, and the runs of its programs.

use anyhow::{Context, Result, bail};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// An agent binary to measure, with the environment it runs with (`name=path[@VAR=value…]`).
#[derive(Clone, Debug)]
pub struct AgentSpec {
    /// Its name in the tables.
    pub name: String,
    /// The binary.
    pub path: PathBuf,
    /// Extra environment (for example `PODTRACE_MOUNT_TRACEFS=false`).
    pub env: Vec<(String, String)>,
}

impl AgentSpec {
    /// Parses `name=path[@VAR=value@VAR=value]`.
    pub fn parse(text: &str) -> Result<AgentSpec> {
        let (name, rest) = text.split_once('=').context("expected name=path")?;
        let mut parts = rest.split('@');
        let path = PathBuf::from(parts.next().context("path")?);
        let env = parts
            .map(|p| p.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())))
            .collect::<Option<Vec<_>>>()
            .context("expected VAR=value after @")?;
        if !path.exists() {
            bail!(
                "{}: no such agent binary (build it: cargo build --release -p podtrace-agent)",
                path.display()
            );
        }
        Ok(AgentSpec { name: name.to_string(), path, env })
    }
}

/// A running agent; stopped (SIGTERM, then SIGKILL) on drop.
pub struct Agent {
    child: Child,
    metrics: u16,
    log: PathBuf,
    names: std::cell::RefCell<BTreeMap<u64, String>>,
}

/// Runs of one program and the time they took (bpf_stats).
#[derive(Clone, Copy, Debug, Default)]
pub struct Runs {
    /// Runs.
    pub count: u64,
    /// Total run time, ns.
    pub ns: u64,
}

impl Agent {
    /// Starts `spec` in standalone mode on `config` (with bpf_stats on when `stats`), its
    /// warnings and errors written to `log`.
    pub fn start(spec: &AgentSpec, config: &Path, stats: bool, log: &Path) -> Result<Agent> {
        let port = || -> Result<u16> { Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port()) };
        let (metrics, health, admin) = (port()?, port()?, port()?);
        let mut command = Command::new(&spec.path);
        command
            .args(["standalone", "--config", &config.display().to_string()])
            .args(["--metrics-addr", &format!("127.0.0.1:{metrics}")])
            .args(["--health-addr", &format!("127.0.0.1:{health}")])
            .args(["--admin-addr", &format!("127.0.0.1:{admin}")])
            .args(["--bpf-stats", if stats { "true" } else { "false" }])
            .env("PODTRACE_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log)?);
        for (k, v) in &spec.env {
            command.env(k, v);
        }
        Ok(Agent {
            child: command.spawn()?,
            metrics,
            log: log.to_path_buf(),
            names: Default::default(),
        })
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits until every probe of `probes` (CRD names) is attached, and the agent is ready.
    pub fn wait_ready(&mut self, probes: &[&str]) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait()? {
                let log = std::fs::read_to_string(&self.log).unwrap_or_default();
                bail!("the agent exited: {status}; its log: {:?}", error_lines(&log));
            }
            if let Ok(text) = self.get("/metrics") {
                let ready = self.get("/readyz").is_ok_and(|r| r.starts_with("HTTP/1.1 200"));
                let attached = probes.iter().all(|p| attached(&text, p));
                if ready && attached {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                let text = self.get("/metrics").unwrap_or_default();
                let info: Vec<&str> = text.lines().filter(|l| l.contains("probe_info{")).collect();
                bail!("the agent did not get ready with {probes:?} attached: {info:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Its CPU time so far (every thread), from the scheduler: ns.
    pub fn cpu_ns(&self) -> u64 {
        let dir = format!("/proc/{}/task", self.pid());
        let Ok(tasks) = std::fs::read_dir(dir) else { return 0 };
        tasks
            .flatten()
            .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
            .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
            .sum()
    }

    /// Its resident memory, bytes.
    pub fn rss_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()));
        status
            .ok()
            .and_then(|s| {
                let kib = s.lines().find_map(|l| l.strip_prefix("VmRSS:"))?;
                kib.trim().trim_end_matches("kB").trim().parse::<u64>().ok()
            })
            .map_or(0, |kib| kib * 1024)
    }

    /// The run counts and times of the eBPF programs this agent holds, by program name (needs
    /// bpf_stats on for non-zero values). The programs are those of its file descriptors, and
    /// their counts come from each descriptor's fdinfo (`prog_id`, `run_cnt`, `run_time_ns`), so
    /// that programs of other processes never count; names from `bpftool prog show id`.
    pub fn program_runs(&self) -> Result<BTreeMap<String, Runs>> {
        let dir = format!("/proc/{}/fdinfo", self.pid());
        let mut by_id: BTreeMap<u64, Runs> = BTreeMap::new();
        for entry in std::fs::read_dir(&dir).with_context(|| dir.clone())?.flatten() {
            let Ok(info) = std::fs::read_to_string(entry.path()) else { continue };
            let field = |key: &str| -> Option<u64> {
                info.lines().find_map(|l| l.strip_prefix(key))?.trim().parse().ok()
            };
            // Program descriptors only: a link's fdinfo names its program (`prog_id`) too, but
            // has no run counts; taking it would overwrite the program's counts with 0.
            if let (Some(id), Some(count)) = (field("prog_id:"), field("run_cnt:")) {
                let runs = Runs { count, ns: field("run_time_ns:").unwrap_or(0) };
                by_id.insert(id, runs); // one program may be held by several descriptors
            }
        }
        if by_id.is_empty() {
            bail!("no eBPF program among the descriptors of the agent (pid {})", self.pid());
        }
        let mut runs: BTreeMap<String, Runs> = BTreeMap::new();
        for (id, r) in by_id {
            let e = runs.entry(self.program_name(id)).or_default();
            e.count += r.count;
            e.ns += r.ns;
        }
        Ok(runs)
    }

    /// The name of program `id`, looked up once (bpftool), or `prog <id>`.
    fn program_name(&self, id: u64) -> String {
        if let Some(name) = self.names.borrow().get(&id) {
            return name.clone();
        }
        let out =
            Command::new("bpftool").args(["-j", "prog", "show", "id", &id.to_string()]).output();
        let name = out
            .ok()
            .and_then(|o| serde_json::from_slice::<serde_json::Value>(&o.stdout).ok())
            .and_then(|v| v["name"].as_str().map(str::to_string))
            .unwrap_or_else(|| format!("prog {id}"));
        self.names.borrow_mut().insert(id, name.clone());
        name
    }

    fn get(&self, path: &str) -> std::io::Result<String> {
        let mut s = TcpStream::connect(("127.0.0.1", self.metrics))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        write!(s, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")?;
        let mut body = String::new();
        s.read_to_string(&mut body)?;
        Ok(body)
    }
}

/// Whether the exposition says `probe` is attached (a method other than disabled/unavailable).
fn attached(text: &str, probe: &str) -> bool {
    let prefix = format!("podtrace_agent_probe_info{{probe=\"{probe}\",method=\"");
    text.lines().any(|l| {
        l.strip_prefix(&prefix)
            .and_then(|rest| rest.split('"').next())
            .is_some_and(|m| m != "disabled" && m != "unavailable")
    })
}

impl Drop for Agent {
    fn drop(&mut self) {
        let pid = self.child.id() as i32;
        #[allow(unsafe_code, reason = "kill(2) to ask the agent to stop cleanly")]
        // SAFETY: signalling our own child by pid.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The log lines that say what went wrong: the last five, without the frames of a backtrace
/// (an error printed with `RUST_BACKTRACE` set ends in dozens of them, which hid the error).
fn error_lines(log: &str) -> Vec<&str> {
    let mut lines: Vec<&str> = log
        .lines()
        .take_while(|l| !l.starts_with("Stack backtrace:"))
        .filter(|l| !l.trim().is_empty())
        .collect();
    lines.drain(..lines.len().saturating_sub(5));
    lines
}

#[cfg(test)]
mod tests {
    use super::error_lines;

    #[test]
    fn error_lines_drop_the_backtrace() {
        let log = "Error: metrics on 127.0.0.1:53039: Address already in use (os error 98)\n\n\
                   Caused by:\n    Address already in use (os error 98)\n\n\
                   Stack backtrace:\n   0: anyhow::error\n  12: _start\n";
        assert_eq!(
            error_lines(log),
            [
                "Error: metrics on 127.0.0.1:53039: Address already in use (os error 98)",
                "Caused by:",
                "    Address already in use (os error 98)",
            ]
        );
    }
}
