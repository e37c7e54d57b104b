//! The cgroups every exporter measures, and the cgroups that meter the exporters themselves.
//!
//! A fleet is `n` cgroups `/podtrace-peers-<pid>/b<batch>-c<index>` at the same relative path in
//! every mounted hierarchy (cgroup v2 and each v1 controller, as the kubelet makes them), each
//! with one process: `sleep`, or in the busy variant this binary's `busy-child` (a little CPU
//! and memory churn every 100 ms). The bench writes each process's pid into the cgroups right
//! after starting it, which is much faster than a shell per process at 10,000 cgroups.
//! Everything is removed on drop, also when the bench fails or panics, and when it gets SIGINT,
//! SIGTERM or SIGHUP; cgroups left by a bench that was killed outright (whose pid is gone) are
//! removed when the next one starts.

use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Prefix of the fleets' top cgroup (`/podtrace-peers-<pid>`).
const FLEET: &str = "podtrace-peers-";
/// Prefix of the meters' top cgroup (`/podtrace-meter-<pid>`): not under the fleet's prefix, so
/// that cAdvisor's whitelist and the agent's selectors leave it out.
const METER: &str = "podtrace-meter-";
/// Cgroups per batch: one PodTrace each (a pod is limited to 100,000 series).
pub const BATCH: usize = 1000;

/// The roots of every mounted cgroup hierarchy (v2 and each v1 controller).
pub fn roots() -> Result<Vec<PathBuf>> {
    let mounts = std::fs::read_to_string("/proc/self/mounts")?;
    let mut roots: Vec<PathBuf> = mounts
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() > 2 && (f[2] == "cgroup2" || f[2] == "cgroup")).then(|| PathBuf::from(f[1]))
        })
        .collect();
    roots.sort();
    roots.dedup();
    if roots.is_empty() {
        bail!("no cgroup hierarchy is mounted");
    }
    Ok(roots)
}

/// Creates `relative` in every hierarchy (with its parents); a new v1 cpuset gets its parent's
/// CPUs and memory nodes, without which no process can join it.
fn create(roots: &[PathBuf], relative: &str) -> Result<Vec<PathBuf>> {
    let mut dirs = Vec::with_capacity(roots.len());
    for root in roots {
        let dir = root.join(relative.trim_start_matches('/'));
        std::fs::create_dir_all(&dir).with_context(|| format!("mkdir {}", dir.display()))?;
        let parent = dir.parent().unwrap_or(root);
        for file in ["cpuset.cpus", "cpuset.mems"] {
            if let Ok(value) = std::fs::read_to_string(parent.join(file)) {
                std::fs::write(dir.join(file), value.trim())
                    .with_context(|| format!("{}/{file}", dir.display()))?;
            }
        }
        dirs.push(dir);
    }
    Ok(dirs)
}

/// Moves process `pid` (every thread) into `dirs`.
fn join(dirs: &[PathBuf], pid: u32) -> Result<()> {
    for d in dirs {
        std::fs::write(d.join("cgroup.procs"), pid.to_string())
            .with_context(|| format!("moving {pid} into {}", d.display()))?;
    }
    Ok(())
}

/// Removes `dirs` (deepest first), retrying while a cgroup is still busy with a process being
/// reaped; names what could not be removed.
fn remove(dirs: &[PathBuf]) {
    for d in dirs.iter().rev() {
        for _ in 0..150 {
            if std::fs::remove_dir(d).is_ok() || !d.exists() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if d.exists() {
            eprintln!("warning: could not remove the bench cgroup {}", d.display());
        }
    }
}

/// Removes the cgroups of benches that are no longer running (killed before their cleanup), or
/// with `mine` this bench's own (when it is interrupted), killing what is left in them first.
pub fn remove_left(mine: bool) -> Result<()> {
    let me = std::process::id().to_string();
    for root in roots()? {
        let Ok(entries) = std::fs::read_dir(&root) else { continue };
        for top in entries.flatten() {
            let name = top.file_name().to_string_lossy().into_owned();
            let Some(pid) = name.strip_prefix(FLEET).or_else(|| name.strip_prefix(METER)) else {
                continue;
            };
            let left = if mine {
                pid == me
            } else {
                pid.parse::<u32>().is_ok() && !Path::new("/proc").join(pid).exists()
            };
            if !left {
                continue;
            }
            let mut dirs = vec![top.path()];
            for child in std::fs::read_dir(top.path())?.flatten() {
                if child.path().is_dir() {
                    dirs.push(child.path());
                }
            }
            for d in &dirs {
                let procs = std::fs::read_to_string(d.join("cgroup.procs")).unwrap_or_default();
                for p in procs.lines().filter_map(|p| p.parse::<i32>().ok()) {
                    #[allow(unsafe_code, reason = "kill(2) of a process a bench left")]
                    // SAFETY: a plain syscall with a pid read from the bench's own cgroup.
                    unsafe {
                        libc::kill(p, libc::SIGKILL);
                    }
                }
            }
            remove(&dirs);
        }
    }
    Ok(())
}

/// Removes this bench's cgroups and what runs in them when it gets SIGINT, SIGTERM or SIGHUP,
/// then exits: the signals are blocked in every thread (call this before starting any) and
/// awaited by one of its own. The processes the bench starts get an empty signal mask back
/// (the standard library resets it when spawning).
pub fn clean_up_on_signals() -> Result<()> {
    #[allow(unsafe_code, reason = "sigprocmask(2) and sigwait(3) have no safe wrapper here")]
    // SAFETY: the set is initialised by sigemptyset before use and outlives the calls.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            libc::sigaddset(&mut set, signal);
        }
        if libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) != 0 {
            bail!("blocking SIGINT/SIGTERM/SIGHUP: {}", std::io::Error::last_os_error());
        }
        std::thread::spawn(move || {
            let mut signal = 0;
            libc::sigwait(&set, &mut signal);
            eprintln!("signal {signal}: removing the bench's cgroups and their processes");
            if let Err(e) = remove_left(true) {
                eprintln!("cleanup: {e:#}");
            }
            std::process::exit(128 + signal);
        });
    }
    Ok(())
}

/// What each fleet process does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Load {
    /// `sleep`: an idle container.
    Idle,
    /// This binary's `busy-child`: a busy one.
    Busy,
}

/// `n` cgroups with a process each.
pub struct Fleet {
    /// The fleet's top cgroup, relative to the hierarchy roots (`/podtrace-peers-<pid>`).
    pub top: String,
    /// Relative paths of the cgroups, in order.
    pub relative: Vec<String>,
    dirs: Vec<PathBuf>,
    children: Vec<Child>,
}

impl Fleet {
    /// Creates `n` cgroups, each with a process doing `load`.
    pub fn new(n: usize, load: Load) -> Result<Fleet> {
        let roots = roots()?;
        let top = format!("/{FLEET}{}", std::process::id());
        let mut fleet = Fleet {
            dirs: create(&roots, &top)?,
            top: top.clone(),
            relative: Vec::with_capacity(n),
            children: Vec::with_capacity(n),
        };
        let me = std::env::current_exe()?;
        for i in 0..n {
            let rel = format!("{top}/b{:02}-c{i:05}", i / BATCH);
            let dirs = create(&roots, &rel)?;
            fleet.dirs.extend(dirs.iter().cloned());
            let mut command = match load {
                Load::Idle => {
                    let mut c = Command::new("sleep");
                    c.arg("1d");
                    c
                }
                Load::Busy => {
                    let mut c = Command::new(&me);
                    c.arg("busy-child");
                    c
                }
            };
            let child = command
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .spawn()
                .with_context(|| format!("starting process {i} of the fleet"))?;
            let pid = child.id();
            fleet.children.push(child);
            join(&dirs, pid)?;
            fleet.relative.push(rel);
        }
        Ok(fleet)
    }

    /// The batch names of the fleet (`b00`, `b01`, …): one PodTrace each.
    pub fn batches(&self) -> usize {
        self.relative.len().div_ceil(BATCH)
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
        }
        for c in &mut self.children {
            let _ = c.wait();
        }
        remove(&self.dirs);
    }
}

/// A cgroup of its own for each measured exporter, whose CPU time counts every thread it ever
/// had (v1 `cpuacct.usage`, ns; else v2 `cpu.stat` `usage_usec`).
pub struct Meter {
    dirs: Vec<PathBuf>,
    usage: PathBuf,
    v1: bool,
}

impl Meter {
    /// `/podtrace-meter-<pid>/<name>` in every hierarchy.
    pub fn new(name: &str) -> Result<Meter> {
        let roots = roots()?;
        let top = format!("/{METER}{}", std::process::id());
        let mut dirs = create(&roots, &top)?;
        let own = create(&roots, &format!("{top}/{name}"))?;
        let cpuacct = own.iter().find(|d| d.join("cpuacct.usage").exists()).cloned();
        let (usage, v1) = match cpuacct {
            Some(d) => (d.join("cpuacct.usage"), true),
            None => (
                own.iter()
                    .find(|d| d.join("cpu.stat").exists())
                    .context("no cgroup with cpuacct.usage or cpu.stat to meter CPU")?
                    .join("cpu.stat"),
                false,
            ),
        };
        dirs.extend(own);
        Ok(Meter { dirs, usage, v1 })
    }

    /// Moves process `pid` in.
    pub fn add(&self, pid: u32) -> Result<()> {
        join(&self.dirs[self.dirs.len() / 2..], pid)
    }

    /// CPU time of everything that ran in it, ns.
    pub fn cpu_ns(&self) -> Result<u64> {
        let text = std::fs::read_to_string(&self.usage)
            .with_context(|| format!("reading {}", self.usage.display()))?;
        let value = if self.v1 {
            text.trim().parse::<u64>().ok()
        } else {
            text.lines()
                .find_map(|l| l.strip_prefix("usage_usec "))
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(|us| us * 1000)
        };
        value.with_context(|| format!("{}: no CPU usage in {text:?}", self.usage.display()))
    }
}

impl Drop for Meter {
    fn drop(&mut self) {
        // The exporter was stopped (and reaped) before; the top cgroup goes with the last meter.
        let (top, own) = self.dirs.split_at(self.dirs.len() / 2);
        remove(own);
        for d in top {
            let _ = std::fs::remove_dir(d);
        }
    }
}

/// What `busy-child` does: about 0.3 ms of CPU and a 64 KiB allocation touched every 100 ms,
/// so that CPU, memory and the process's counters change between collections.
pub fn busy_child() -> ! {
    loop {
        let start = std::time::Instant::now();
        let mut buf = vec![0u8; 64 * 1024];
        let mut x = 0u64;
        while start.elapsed() < Duration::from_micros(300) {
            for b in buf.iter_mut().step_by(4096) {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                *b = x as u8;
            }
        }
        std::hint::black_box(&buf);
        drop(buf);
        std::thread::sleep(Duration::from_millis(100));
    }
}
