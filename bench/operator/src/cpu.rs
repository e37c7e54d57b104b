//! CPU time of the processes an edit goes through, to show where its cost lands.

use anyhow::{Context, Result};
use std::sync::LazyLock;
use std::time::Instant;

use crate::operator::Operator;

/// CPU time (user + system, ms) of the API server, etcd, the operator and this process (the
/// stand-in agents and the bench's own NodeTrace watch).
pub struct Cpu {
    /// kube-apiserver.
    pub apiserver: f64,
    /// etcd.
    pub etcd: f64,
    /// The operator under benchmark.
    pub operator: f64,
    /// This process.
    pub bench: f64,
    /// Wall-clock time (ms): since the first sample for a sample, elapsed for a difference.
    pub wall: f64,
}

/// The instant wall-clock times are counted from.
static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);

impl Cpu {
    /// The CPU time so far.
    pub fn sample(cp: &podtrace_e2e::ControlPlane, op: &Operator) -> Result<Self> {
        let of_pid_file = |name: &str| -> Result<f64> {
            let pid = std::fs::read_to_string(cp.dir.join(format!("{name}.pid")))?;
            cpu_ms(pid.trim().parse()?)
        };
        Ok(Self {
            apiserver: of_pid_file("apiserver")?,
            etcd: of_pid_file("etcd")?,
            operator: cpu_ms(op.child.as_ref().context("stopped")?.id())?,
            bench: cpu_ms(std::process::id())?,
            wall: EPOCH.elapsed().as_secs_f64() * 1000.0,
        })
    }

    /// What each process spends in `window` while nothing is asked of it (watch bookmarks,
    /// lease renewals, the API server's own loops), measured in the same run so that it can
    /// be taken out of an edit's figure with [`Cpu::beyond`].
    pub async fn idle(
        cp: &podtrace_e2e::ControlPlane,
        op: &Operator,
        window: std::time::Duration,
    ) -> Result<Self> {
        let before = Self::sample(cp, op)?;
        tokio::time::sleep(window).await;
        Ok(Self::sample(cp, op)?.since(&before))
    }

    /// This difference less what `idle` (a difference too) spends in as much wall-clock time.
    pub fn beyond(&self, idle: &Self) -> Self {
        let share = self.wall / idle.wall;
        Self {
            apiserver: self.apiserver - idle.apiserver * share,
            etcd: self.etcd - idle.etcd * share,
            operator: self.operator - idle.operator * share,
            bench: self.bench - idle.bench * share,
            wall: self.wall,
        }
    }

    /// The CPU time spent since `before`.
    pub fn since(&self, before: &Self) -> Self {
        Self {
            apiserver: self.apiserver - before.apiserver,
            etcd: self.etcd - before.etcd,
            operator: self.operator - before.operator,
            bench: self.bench - before.bench,
            wall: self.wall - before.wall,
        }
    }
}

/// utime + stime of `pid` from /proc/<pid>/stat, in milliseconds.
fn cpu_ms(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces) start at state, field 3.
    let rest = stat.rsplit_once(')').context("malformed stat")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>()? + fields[12].parse::<f64>()?;
    // /proc counts in USER_HZ, which the kernel's ABI fixes at 100 on every architecture it
    // reports through /proc (sysconf(_SC_CLK_TCK) answers the same).
    Ok(ticks * 10.0)
}
