//! A cgroup of the bench's own in every cgroup hierarchy of the machine (v2 and each v1
//! controller), as the kubelet makes one per container, so that the agent's resource and process
//! collectors and its eBPF filter all find it. Removed on drop, its processes killed first.

use anyhow::{Context, Result};
use std::path::PathBuf;
use std::process::{Child, Stdio};

/// One cgroup, at the same relative path in every hierarchy.
pub struct BenchCgroup {
    /// Path relative to the hierarchy roots (what a standalone selector matches).
    pub relative: String,
    /// Its directory in each hierarchy.
    pub dirs: Vec<PathBuf>,
    sleepers: Vec<Child>,
}

impl BenchCgroup {
    /// Creates `/podtrace-bench-<name>-<pid>` in every mounted hierarchy.
    pub fn new(name: &str) -> Result<BenchCgroup> {
        let relative = format!("/podtrace-bench-{name}-{}", std::process::id());
        let mounts = std::fs::read_to_string("/proc/self/mounts")?;
        let mut roots: Vec<PathBuf> = mounts
            .lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f.len() > 2 && (f[2] == "cgroup2" || f[2] == "cgroup"))
                    .then(|| PathBuf::from(f[1]))
            })
            .collect();
        roots.sort();
        roots.dedup();
        let mut dirs = Vec::new();
        for root in roots {
            let dir = root.join(relative.trim_start_matches('/'));
            std::fs::create_dir(&dir).with_context(|| format!("mkdir {}", dir.display()))?;
            // A new v1 cpuset has no CPUs or memory nodes, and a process cannot join it until
            // it has: give it the parent's.
            for file in ["cpuset.cpus", "cpuset.mems"] {
                if let Ok(parent) = std::fs::read_to_string(root.join(file)) {
                    std::fs::write(dir.join(file), parent.trim())
                        .with_context(|| format!("{}/{file}", dir.display()))?;
                }
            }
            dirs.push(dir);
        }
        Ok(BenchCgroup { relative, dirs, sleepers: Vec::new() })
    }

    /// Starts a process that sleeps in the cgroup (an idle service the agent traces).
    pub fn add_sleeper(&mut self) -> Result<()> {
        let child = podtrace_test_support::command_in_cgroups(&self.dirs, "sleep")
            .arg("1d")
            .stdout(Stdio::null())
            .spawn()?;
        self.sleepers.push(child);
        Ok(())
    }
}

impl Drop for BenchCgroup {
    fn drop(&mut self) {
        for c in &mut self.sleepers {
            let _ = c.kill();
            let _ = c.wait();
        }
        for d in &self.dirs {
            for _ in 0..50 {
                if std::fs::remove_dir(d).is_ok() || !d.exists() {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        }
    }
}
