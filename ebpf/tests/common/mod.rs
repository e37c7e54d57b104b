//! Helpers of the root tests: fresh cgroup v2 directories, Python workloads moved into them
//! before they start, and a skip when not root.

#![allow(dead_code, reason = "each test binary uses a different subset of the helpers")]

use anyhow::{Context, Result, bail};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

/// True when the tests can touch the kernel; prints SKIPPED (fails under CI) otherwise.
pub fn root_or_skip(test: &str) -> bool {
    podtrace_test_support::require_root(test, "loads eBPF programs and creates cgroups")
}

/// A fresh child of the cgroup v2 root, removed on drop.
pub struct TestCgroup {
    pub path: PathBuf,
    pub id: u64,
}

impl TestCgroup {
    /// The tgids in the cgroup, from its `cgroup.procs` (what the agent reads).
    pub fn procs(&self) -> Result<std::collections::BTreeSet<u32>> {
        let text = std::fs::read_to_string(self.path.join("cgroup.procs"))?;
        Ok(text.lines().filter_map(|l| l.trim().parse().ok()).collect())
    }

    pub fn new(name: &str) -> Result<TestCgroup> {
        static N: AtomicU32 = AtomicU32::new(0);
        let root = podtrace_ebpf::default_cgroup2_root();
        let path = root.join(format!(
            "podtrace-test-{name}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir(&path).with_context(|| format!("mkdir {}", path.display()))?;
        let id = podtrace_ebpf::cgroup_id(&path)?;
        Ok(TestCgroup { path, id })
    }

    /// A child cgroup `name` of this one (remove it before its parent: drop it first).
    pub fn child(&self, name: &str) -> Result<TestCgroup> {
        let path = self.path.join(name);
        std::fs::create_dir(&path).with_context(|| format!("mkdir {}", path.display()))?;
        let id = podtrace_ebpf::cgroup_id(&path)?;
        Ok(TestCgroup { path, id })
    }

    fn add(&self, pid: u32) -> Result<()> {
        std::fs::write(self.path.join("cgroup.procs"), pid.to_string())
            .with_context(|| format!("moving {pid} into {}", self.path.display()))
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        for _ in 0..50 {
            if std::fs::remove_dir(&self.path).is_ok() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        eprintln!("warning: could not remove {}", self.path.display());
    }
}

/// A plain directory standing for a target that is not a cgroup v2: with the process filter,
/// a target is tracked under the inode of any of its directories (the agent uses the v1 one on
/// a node without cgroup v2). Removed on drop.
pub struct KeyDir(pub PathBuf);

impl KeyDir {
    pub fn new(name: &str) -> Result<KeyDir> {
        static N: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "podtrace-key-{name}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir(&path).with_context(|| format!("mkdir {}", path.display()))?;
        Ok(KeyDir(path))
    }
}

impl Drop for KeyDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.0);
    }
}

const PYTHON: &str = "/usr/bin/python3";

/// Runs a Python workload to completion. With a cgroup, the process is moved into it
/// *before* the script's body runs (the script first waits for a line on stdin). Returns
/// its stdout (the workload's own ground truth, when it prints any).
pub fn python(cgroup: Option<&TestCgroup>, body: &str, args: &[String]) -> Result<String> {
    python_then(cgroup, body, args, || Ok(()))
}

/// [`python`], calling `moved` once the process is in its cgroup and before its body runs
/// (where a process-filter test lists the cgroup's processes, as the agent does every interval).
pub fn python_then(
    cgroup: Option<&TestCgroup>,
    body: &str,
    args: &[String],
    moved: impl FnOnce() -> Result<()>,
) -> Result<String> {
    let script = format!(
        "import os, socket, struct, sys, threading, time\nprint('ready', flush=True)\nsys.stdin.readline()\n{body}\n"
    );
    let mut child = Command::new(PYTHON)
        .arg("-c")
        .arg(script)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("python3 (apt-get install python3)")?;
    // Move it only once the interpreter has started (imports read files), so that the
    // cgroup sees the body's work and nothing else.
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let mut ready = String::new();
    stdout.read_line(&mut ready)?;
    if ready.trim() != "ready" {
        let out = child.wait_with_output()?;
        bail!("workload did not start: {}", String::from_utf8_lossy(&out.stderr));
    }
    if let Some(cg) = cgroup {
        cg.add(child.id())?;
    }
    moved()?;
    child.stdin.take().expect("stdin").write_all(b"go\n")?;
    let mut output = String::new();
    stdout.read_to_string(&mut output)?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!("workload failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(output)
}

/// The value of `key=value` in a workload's output.
pub fn field(output: &str, key: &str) -> Result<String> {
    output
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .map(str::to_string)
        .with_context(|| format!("{key} missing from workload output {output:?}"))
}

/// `bpftool -j <args>` parsed.
pub fn bpftool(args: &[&str]) -> Result<serde_json::Value> {
    let out = Command::new("bpftool").arg("-j").args(args).output().context("bpftool")?;
    if !out.status.success() {
        bail!("bpftool {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(serde_json::from_slice(&out.stdout)?)
}

/// A loopback TCP server for `connections` clients: it reads each client's payload to the length
/// announced in its first 8 bytes (big-endian) and answers 4321 bytes. Returns its port.
pub fn payload_server(connections: usize) -> Result<(String, std::thread::JoinHandle<()>)> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port().to_string();
    let handle = std::thread::spawn(move || {
        for _ in 0..connections {
            let (mut conn, _) = listener.accept().expect("accept");
            let mut len = [0u8; 8];
            conn.read_exact(&mut len).expect("length");
            let mut payload = vec![0u8; u64::from_be_bytes(len) as usize];
            conn.read_exact(&mut payload).expect("payload");
            conn.write_all(&[b'a'; 4321]).expect("answer");
        }
    });
    Ok((port, handle))
}
