//! The services the agent is measured against: an HTTP/1.1 keep-alive server on loopback (a
//! thread per connection) and two clients, in a process of its own that runs inside the bench's
//! cgroup from its first instruction. Two kinds:
//!
//! - `loopback`: the server answers at once (about 5.5 µs of CPU per request on the development
//!   VM, nearly all of it in the kernel: the worst case for a per-event cost);
//! - `cpu50`: the server spins about 50 µs of CPU before answering, a service doing some work.
//!
//! The process prints `ready`, waits for a line, runs for the given time and prints
//! `requests=N cpu_ns=M`: the requests answered and the CPU time the whole process (both sides,
//! kernel included, so the eBPF programs run in its context too) used meanwhile.

use anyhow::{Context, Result, bail};
use std::hint::black_box;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, ChildStdout, Stdio};
use std::time::{Duration, Instant};

const REQUEST: &[u8] = b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: pt-bench\r\n\r\n";
const RESPONSE: &[u8] =
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 12\r\n\r\nhello world\n";

/// A workload to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// Answer at once.
    Loopback,
    /// Spin this many iterations (about 50 µs) per request before answering.
    Cpu50(u64),
}

impl Kind {
    /// The name in the tables.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Loopback => "loopback",
            Kind::Cpu50(_) => "cpu50",
        }
    }
}

/// What one run of the workload did.
#[derive(Clone, Copy, Debug)]
pub struct Outcome {
    /// Requests answered.
    pub requests: u64,
    /// CPU time of the workload's process while it ran (user + system), in ns.
    pub cpu_ns: u64,
}

/// A started workload waiting for `go`.
pub struct Started {
    child: Child,
    out: BufReader<ChildStdout>,
}

/// Starts this binary as the workload `kind` for `seconds`, inside the cgroup directories `dirs`
/// (one per hierarchy), and waits until it listens.
pub fn start(kind: Kind, seconds: f64, dirs: &[PathBuf]) -> Result<Started> {
    let exe = std::env::current_exe()?;
    let spin = match kind {
        Kind::Cpu50(n) => n,
        Kind::Loopback => 0,
    };
    let mut child = podtrace_test_support::command_in_cgroups(dirs, &exe.display().to_string())
        .args(["--workload", &seconds.to_string(), &spin.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let mut out = BufReader::new(child.stdout.take().context("stdout")?);
    let mut line = String::new();
    out.read_line(&mut line)?;
    if line.trim() != "ready" {
        bail!("workload did not start: {line:?}");
    }
    Ok(Started { child, out })
}

impl Started {
    /// Runs it and returns what it did.
    pub fn run(mut self) -> Result<Outcome> {
        self.child.stdin.take().context("stdin")?.write_all(b"go\n")?;
        let mut line = String::new();
        self.out.read_line(&mut line)?;
        self.child.wait()?;
        let field = |key: &str| -> Result<u64> {
            let v = line.split_whitespace().find_map(|w| w.strip_prefix(key));
            Ok(v.with_context(|| format!("{key} in {line:?}"))?.parse()?)
        };
        Ok(Outcome { requests: field("requests=")?, cpu_ns: field("cpu_ns=")? })
    }
}

/// The workload's process: `--workload SECONDS SPIN`.
pub fn child(seconds: f64, spin: u64) -> Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    println!("ready");
    std::io::stdout().flush()?;
    let mut go = String::new();
    std::io::stdin().read_line(&mut go)?;
    let cpu_before = process_cpu_ns();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            std::thread::spawn(move || {
                let mut req = vec![0u8; REQUEST.len()];
                while conn.read_exact(&mut req).is_ok() {
                    black_box(work(spin));
                    if conn.write_all(RESPONSE).is_err() {
                        return;
                    }
                }
            });
        }
    });
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let clients: Vec<_> = (0..2)
        .map(|_| {
            std::thread::spawn(move || -> u64 {
                let mut s = TcpStream::connect(addr).expect("connect");
                s.set_nodelay(true).expect("nodelay");
                let mut resp = vec![0u8; RESPONSE.len()];
                let mut n = 0;
                while Instant::now() < deadline {
                    s.write_all(REQUEST).expect("request");
                    s.read_exact(&mut resp).expect("response");
                    n += 1;
                }
                n
            })
        })
        .collect();
    let total: u64 = clients.into_iter().map(|c| c.join().unwrap_or(0)).sum();
    let cpu = process_cpu_ns() - cpu_before;
    println!("requests={total} cpu_ns={cpu}");
    Ok(())
}

/// `n` iterations of a multiply-add chain: CPU work no compiler can skip.
fn work(n: u64) -> u64 {
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    for i in 0..n {
        x = black_box(x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(i));
    }
    x
}

/// Iterations of [`work`] that take about `target` of CPU on this machine (the median of a few
/// timings of a million iterations on this thread).
pub fn calibrate(target: Duration) -> u64 {
    let mut per_iter: Vec<f64> = (0..5)
        .map(|_| {
            let start = thread_cpu_ns();
            black_box(work(1_000_000));
            (thread_cpu_ns() - start) as f64 / 1e6
        })
        .collect();
    per_iter.sort_by(f64::total_cmp);
    (target.as_nanos() as f64 / per_iter[2]).round() as u64
}

#[allow(unsafe_code, reason = "getrusage/clock_gettime have no std wrapper")]
fn process_cpu_ns() -> u64 {
    // SAFETY: getrusage writes into the zeroed struct it is given.
    let mut r: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut r) };
    let us = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
    (us(r.ru_utime) + us(r.ru_stime)) * 1000
}

#[allow(unsafe_code, reason = "getrusage/clock_gettime have no std wrapper")]
fn thread_cpu_ns() -> u64 {
    // SAFETY: clock_gettime writes into the zeroed struct it is given.
    let mut t: libc::timespec = unsafe { std::mem::zeroed() };
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}
