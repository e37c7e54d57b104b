//! Root tests of the process filter (`Filter::Process`, for nodes with no cgroup v2 hierarchy),
//! forced here on a node that has one: the programs count the tgids the test lists from the
//! workload cgroup's `cgroup.procs` (as the agent does every interval), under the target's key,
//! and nothing of a control workload outside it or of an unlisted process inside it; the
//! children a listed process forks are counted from their fork (the kernel follows forks).

mod common;

use anyhow::Result;
use common::{KeyDir, TestCgroup, field, payload_server, python, python_then, root_or_skip};
use parking_lot::Mutex;
use podtrace_ebpf::{AttachMethod, Filter, Op, Probe, ProbeConfig, ProbeState, Probes};
use std::collections::BTreeSet;

fn load(probes: &[Probe]) -> Result<(Probes, Vec<podtrace_ebpf::ProbeStatus>)> {
    let config = ProbeConfig {
        probes: probes.iter().copied().collect(),
        filter: Filter::Process,
        ..ProbeConfig::default()
    };
    Ok(Probes::load(&config)?)
}

/// Sends n bytes (after an 8-byte length) and reads the 4321-byte answer; then writes m bytes
/// to a regular file, half from a second thread (same tgid), and writes to a pipe.
const WORKLOAD: &str = "
port, n, m, path = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
s = socket.create_connection(('127.0.0.1', port))
s.sendall(struct.pack('>Q', n) + b'x' * n)
got = 0
while got < 4321:
    got += len(s.recv(65536))
s.close()
fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
written = [0]
def half():
    written[0] += os.write(fd, b't' * (m // 2))
t = threading.Thread(target=half); t.start(); t.join()
written[0] += os.write(fd, b'w' * (m - m // 2))
os.close(fd)
r, w = os.pipe()
os.write(w, b'p' * 1000); os.read(r, 1000)
print('written=%d' % written[0])
";

#[test]
fn process_filter_counts_the_listed_processes_bytes_exactly_and_nothing_outside() -> Result<()> {
    if !root_or_skip("process_filter_bytes") {
        return Ok(());
    }
    let (probes, statuses) = load(&Probe::ALL)?;
    assert_eq!(probes.filter(), Filter::Process);
    for s in &statuses {
        match s.probe {
            // cgroup_skb sees the socket's cgroup v2 id only: no rung left for DNS.
            Probe::Dns => {
                assert_eq!(s.state, ProbeState::Unavailable, "{s:?}");
                let reason = s.reason.as_deref().unwrap_or("");
                assert!(reason.contains("not used with the process filter"), "{s:?}");
            }
            Probe::NetworkBytes => assert_eq!(s.method, Some(AttachMethod::TpBtf), "{s:?}"),
            _ => assert_eq!(s.state, ProbeState::Attached, "{s:?}"),
        }
    }
    let probes = Mutex::new(probes);
    let cg = TestCgroup::new("procfilter")?;
    // Any directory of the target is its key (the agent uses the v1 directory where there is
    // no v2); not the v2 cgroup here, so that a cgroup filter would find nothing under it.
    let key_dir = KeyDir::new("procfilter")?;
    let wanted = [Probe::NetworkBytes, Probe::FsBytes, Probe::FsLatency];
    let key = probes.lock().track(&key_dir.0, wanted)?;
    let dir = std::env::temp_dir().join(format!("podtrace-pf-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let (port, server) = payload_server(2)?;
    let (n, m) = (700_000u64, 123_457u64);
    let args = |n: u64, m: u64, f: &str| {
        vec![port.clone(), n.to_string(), m.to_string(), dir.join(f).display().to_string()]
    };
    let listed = Mutex::new(BTreeSet::new());
    let out = python_then(Some(&cg), WORKLOAD, &args(n, m, "inside"), || {
        let procs = cg.procs()?;
        assert_eq!(procs.len(), 1, "{procs:?}");
        probes.lock().set_processes(key, &procs)?;
        *listed.lock() = procs;
        Ok(())
    })?;
    // The control: larger amounts, outside the cgroup, never listed.
    python(None, WORKLOAD, &args(3 * n, 3 * m, "outside"))?;
    server.join().unwrap();
    std::fs::remove_dir_all(&dir)?;
    assert_eq!(field(&out, "written")?.parse::<u64>()?, m);

    let mut probes = probes.into_inner();
    let listed = listed.into_inner();
    assert_eq!(probes.processes(key).collect::<BTreeSet<_>>(), listed);
    let snap = probes.snapshot()?;
    // Payload bytes of the socket calls: n and its 8-byte length, the 4321-byte answer.
    assert_eq!(snap.bytes(key, Probe::NetworkBytes, Op::Send), n + 8);
    assert_eq!(snap.bytes(key, Probe::NetworkBytes, Op::Recv), 4321);
    // Both threads' file writes, not the pipe's.
    assert_eq!(snap.bytes(key, Probe::FsBytes, Op::Write), m);
    assert_eq!(snap.merged_histogram(key, Probe::FsLatency, Op::Write).count, 2);
    // Every series is under the target's key and index, none under another key.
    assert!(snap.counters.iter().all(|c| c.series.cgroup_id == key));
    assert!(snap.histograms.iter().all(|h| h.series.cgroup_id == key));

    // The process exited: the next listing removes it; untracking leaves no tgid behind.
    probes.set_processes(key, &cg.procs()?)?;
    assert_eq!(probes.processes(key).count(), 0);
    assert!(probes.untrack(key)?);
    Ok(())
}

#[test]
fn an_unlisted_process_inside_the_cgroup_is_not_counted_until_listed() -> Result<()> {
    if !root_or_skip("process_filter_unlisted") {
        return Ok(());
    }
    let (mut probes, _) = load(&[Probe::FsBytes])?;
    let cg = TestCgroup::new("procfilter-unlisted")?;
    probes.track(&cg.path, [Probe::FsBytes])?;
    let path = std::env::temp_dir().join(format!("podtrace-pf-unlisted-{}", std::process::id()));
    let body = "
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
print('written=%d' % os.write(fd, b'u' * int(sys.argv[2])))
os.close(fd)
";
    // In the cgroup but started after the last listing: the process filter does not see it
    // (the cgroup filter would). This is the documented cost of the process filter.
    python(Some(&cg), body, &[path.display().to_string(), "5000".into()])?;
    let snap = probes.snapshot()?;
    assert_eq!(snap.bytes(cg.id, Probe::FsBytes, Op::Write), 0);
    // Listed, it is counted.
    let probes = Mutex::new(probes);
    let out = python_then(Some(&cg), body, &[path.display().to_string(), "6000".into()], || {
        let procs = cg.procs()?;
        probes.lock().set_processes(cg.id, &procs)?;
        Ok(())
    })?;
    std::fs::remove_file(&path)?;
    assert_eq!(field(&out, "written")?, "6000");
    let mut probes = probes.into_inner();
    assert_eq!(probes.snapshot()?.bytes(cg.id, Probe::FsBytes, Op::Write), 6000);
    Ok(())
}

/// Run by a listed parent (and by an unlisted control): `kids` children, each a new process
/// that writes m bytes to a regular file and sends n bytes (after an 8-byte length) over
/// loopback TCP, reads the 4321-byte answer and exits; the first child does the same again in
/// a grandchild first. The parent itself only waits. Every process reports what it did on
/// stdout (a pipe: not a regular file); a failed child fails its parent.
const FORKER: &str = "
port, n, m, path, kids = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], int(sys.argv[5])
sys.stdout.flush()
def work(tag):
    fd = os.open('%s-%d' % (path, os.getpid()), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    written = os.write(fd, b'c' * m)
    os.close(fd)
    s = socket.create_connection(('127.0.0.1', port))
    s.sendall(struct.pack('>Q', n) + b'x' * n)
    got = 0
    while got < 4321:
        got += len(s.recv(65536))
    s.close()
    os.write(1, ('%s=%d written=%d recvd=%d\\n' % (tag, os.getpid(), written, got)).encode())
def spawn(tag, then):
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            then()
            work(tag)
            code = 0
        finally:
            os._exit(code)
    return pid
def reap(pid):
    if os.waitpid(pid, 0)[1] != 0:
        sys.exit('%d failed' % pid)
def grandchild():
    reap(spawn('grandchild', lambda: None))
for i in range(kids):
    reap(spawn('child', grandchild if i == 0 else (lambda: None)))
os.write(1, b'parent_done=1\\n')
";

/// The pids a FORKER run reported as `tag=<pid>`, with its per-process `written=`/`recvd=`.
fn reported(out: &str) -> Vec<(u32, u64, u64)> {
    out.lines()
        .filter(|l| l.starts_with("child=") || l.starts_with("grandchild="))
        .map(|l| {
            let v: Vec<u64> = l
                .split_whitespace()
                .map(|w| w.split_once('=').unwrap().1.parse().unwrap())
                .collect();
            (v[0] as u32, v[1], v[2])
        })
        .collect()
}

#[test]
fn children_forked_by_a_listed_process_are_counted_from_their_fork_and_leave_no_entry() -> Result<()>
{
    if !root_or_skip("process_filter_forks") {
        return Ok(());
    }
    forks_are_followed(&[Probe::FsBytes, Probe::NetworkBytes], BTreeSet::new())
}

#[test]
fn forks_are_followed_on_the_raw_tracepoint_rung_too() -> Result<()> {
    if !root_or_skip("process_filter_forks_raw") {
        return Ok(());
    }
    // Without tp_btf networkBytes has no rung left with the process filter: files only.
    forks_are_followed(&[Probe::FsBytes], BTreeSet::from([AttachMethod::TpBtf]))
}

/// A listed parent forks children (and a grandchild) that write, send and exit before any
/// further listing: their bytes are counted exactly, a control's are not, and no entry is
/// left for them.
fn forks_are_followed(wanted: &[Probe], skip_methods: BTreeSet<AttachMethod>) -> Result<()> {
    let config = ProbeConfig {
        probes: wanted.iter().copied().collect(),
        filter: Filter::Process,
        skip_methods: skip_methods.clone(),
        ..ProbeConfig::default()
    };
    let (probes, _) = Probes::load(&config)?;
    // Without the follower this test fails on the byte counts below (the children are never
    // listed), whatever the reason the follower is missing.
    let method =
        if skip_methods.is_empty() { AttachMethod::TpBtf } else { AttachMethod::RawTracepoint };
    assert_eq!(probes.fork_following(), Some(Ok(method)));
    let networked = wanted.contains(&Probe::NetworkBytes);
    let probes = Mutex::new(probes);
    let cg = TestCgroup::new("procfilter-forks")?;
    let key_dir = KeyDir::new("forks")?;
    let key = probes.lock().track(&key_dir.0, wanted.iter().copied())?;
    // One directory per test: the two variants run in parallel.
    let dir = std::env::temp_dir().join(format!(
        "podtrace-pf-forks-{}-{}",
        std::process::id(),
        skip_methods.len()
    ));
    std::fs::create_dir_all(&dir)?;
    let kids = 3;
    // kids + 1 grandchild connect inside, as many outside.
    let (port, server) = payload_server(2 * (kids + 1))?;
    let (n, m) = (300_000u64, 54_321u64);
    let args = |n: u64, m: u64, f: &str| {
        let path = dir.join(f).display().to_string();
        vec![port.clone(), n.to_string(), m.to_string(), path, kids.to_string()]
    };
    let listed = Mutex::new(BTreeSet::new());
    // The parent is listed once, before it forks; no listing after that.
    let out = python_then(Some(&cg), FORKER, &args(n, m, "inside"), || {
        let procs = cg.procs()?;
        assert_eq!(procs.len(), 1, "{procs:?}");
        probes.lock().set_processes(key, &procs)?;
        *listed.lock() = procs;
        Ok(())
    })?;
    // The control: a process never listed, outside the cgroup, forking the same way with
    // larger amounts.
    let control = python(None, FORKER, &args(3 * n, 3 * m, "outside"))?;
    std::fs::remove_dir_all(&dir)?;
    // Before joining the server: a process that did not connect fails here, not hangs there.
    let inside = reported(&out);
    assert_eq!(inside.len(), kids + 1, "{out}");
    assert_eq!(reported(&control).len(), kids + 1, "{control}");
    server.join().unwrap();
    assert_eq!(field(&out, "parent_done")?, "1");
    let written: u64 = inside.iter().map(|(_, w, _)| w).sum();
    let recvd: u64 = inside.iter().map(|(_, _, r)| r).sum();
    assert_eq!(written, 4 * m);
    assert_eq!(recvd, 4 * 4321);

    let mut probes = probes.into_inner();
    let snap = probes.snapshot()?;
    // Exactly the children's and the grandchild's bytes: none of the control's, and nothing
    // of the parent (it only waited and wrote to its stdout pipe).
    assert_eq!(snap.bytes(key, Probe::FsBytes, Op::Write), written);
    if networked {
        assert_eq!(snap.bytes(key, Probe::NetworkBytes, Op::Send), 4 * (n + 8));
        assert_eq!(snap.bytes(key, Probe::NetworkBytes, Op::Recv), recvd);
    }
    assert!(snap.counters.iter().all(|c| c.series.cgroup_id == key));
    assert_eq!(snap.drops.processes_full, 0);
    let runs = |program: &str| {
        snap.programs.iter().find(|p| p.program == program).map(|p| (p.family, p.run_count))
    };
    let fork_program =
        if skip_methods.is_empty() { "pt_follow_fork_btf" } else { "pt_follow_fork_raw" };
    assert!(matches!(runs(fork_program), Some(("follow", _))), "{:?}", snap.programs);

    // Every process of the run exited: the exit program removed the children it added and the
    // listed parent; nothing of this target is left in the kernel maps. The agent's own view
    // still has the parent until its next listing.
    let left: Vec<_> = probes.kernel_processes()?.into_iter().filter(|(_, k)| *k == key).collect();
    assert_eq!(left, vec![]);
    let children: Vec<_> =
        probes.kernel_children()?.into_iter().filter(|(_, k)| *k == key).collect();
    assert_eq!(children, vec![]);
    for (pid, _, _) in &inside {
        assert!(!probes.kernel_processes()?.contains_key(pid), "{pid}");
    }
    assert_eq!(probes.processes(key).collect::<BTreeSet<_>>(), listed.into_inner());
    probes.set_processes(key, &cg.procs()?)?;
    assert_eq!(probes.processes(key).count(), 0);
    assert!(probes.untrack(key)?);
    Ok(())
}

/// A parent in a cgroup that forks on command: `fork` starts a child that sleeps until its
/// pipe is written (prints `child=<pid>`), `end <pid>` ends that child and reaps it (prints
/// `ended=<pid>`), end of input exits.
const COMMANDED: &str = "
import os, sys
print('ready', flush=True)
pipes = {}
for line in sys.stdin:
    cmd = line.split()
    if cmd[0] == 'fork':
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(w)  # EOF when the parent dies, even if the test failed before `end`
            os.read(r, 1)
            os._exit(0)
        os.close(r)
        pipes[pid] = w
        print('child=%d' % pid, flush=True)
    elif cmd[0] == 'end':
        pid = int(cmd[1])
        os.write(pipes.pop(pid), b'x')
        os.waitpid(pid, 0)
        print('ended=%d' % pid, flush=True)
";

struct Commanded {
    child: std::process::Child,
    stdin: std::process::ChildStdin,
    stdout: std::io::BufReader<std::process::ChildStdout>,
}

impl Commanded {
    fn start(cg: &TestCgroup) -> Result<Commanded> {
        use std::io::BufRead;
        use std::process::{Command, Stdio};
        let mut child = Command::new("/usr/bin/python3")
            .args(["-c", COMMANDED])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        let stdin = child.stdin.take().unwrap();
        let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line)?;
        assert_eq!(line.trim(), "ready");
        std::fs::write(cg.path.join("cgroup.procs"), child.id().to_string())?;
        Ok(Commanded { child, stdin, stdout })
    }

    fn ask(&mut self, command: &str) -> Result<u32> {
        use std::io::{BufRead, Write};
        writeln!(self.stdin, "{command}")?;
        let mut line = String::new();
        self.stdout.read_line(&mut line)?;
        let (_, pid) = line.trim().split_once('=').ok_or_else(|| anyhow::anyhow!("{line:?}"))?;
        Ok(pid.parse()?)
    }

    fn finish(self) -> Result<()> {
        let Commanded { mut child, stdin, .. } = self;
        drop(stdin);
        assert!(child.wait()?.success());
        Ok(())
    }
}

#[test]
fn the_listing_reconciles_kernel_added_children_and_untrack_removes_them() -> Result<()> {
    if !root_or_skip("process_filter_reconcile") {
        return Ok(());
    }
    let (mut probes, _) = load(&[Probe::FsBytes])?;
    let cg = TestCgroup::new("procfilter-reconcile")?;
    let key_dir = KeyDir::new("fsbytes")?;
    let key = probes.track(&key_dir.0, [Probe::FsBytes])?;
    let mut parent = Commanded::start(&cg)?;
    let p = parent.child.id();
    let entries = |probes: &Probes| -> Result<BTreeSet<u32>> {
        Ok(probes
            .kernel_processes()?
            .into_iter()
            .filter(|(_, k)| *k == key)
            .map(|(t, _)| t)
            .collect())
    };
    let followed = |probes: &Probes| -> Result<BTreeSet<u32>> {
        Ok(probes
            .kernel_children()?
            .into_iter()
            .filter(|(_, k)| *k == key)
            .map(|(t, _)| t)
            .collect())
    };
    probes.set_processes(key, &cg.procs()?)?;
    assert_eq!(entries(&probes)?, BTreeSet::from([p]));

    // A child forked after the listing: added by the kernel under the parent's key.
    let a = parent.ask("fork")?;
    assert_eq!(entries(&probes)?, BTreeSet::from([p, a]));
    assert_eq!(followed(&probes)?, BTreeSet::from([a]));
    // Listed (it is in the cgroup): the agent's from now on, no longer a kernel child.
    assert_eq!(cg.procs()?, BTreeSet::from([p, a]));
    probes.set_processes(key, &cg.procs()?)?;
    assert_eq!(entries(&probes)?, BTreeSet::from([p, a]));
    assert_eq!(followed(&probes)?, BTreeSet::new());
    // A listed process that exits is removed by the kernel at once (the agent still has it
    // until its next listing, which removes it from its own view).
    assert_eq!(parent.ask(&format!("end {a}"))?, a);
    assert_eq!(entries(&probes)?, BTreeSet::from([p]));
    probes.set_processes(key, &cg.procs()?)?;
    assert_eq!(probes.processes(key).collect::<BTreeSet<_>>(), BTreeSet::from([p]));

    // A kernel child that the next listing does not show (as if it had moved to another
    // cgroup) is removed by that listing.
    let b = parent.ask("fork")?;
    assert_eq!(entries(&probes)?, BTreeSet::from([p, b]));
    probes.set_processes(key, &BTreeSet::from([p]))?;
    assert_eq!(entries(&probes)?, BTreeSet::from([p]));
    assert_eq!(followed(&probes)?, BTreeSet::new());

    // Untracking removes the listed processes and the kernel's children alike.
    let c = parent.ask("fork")?;
    assert_eq!(entries(&probes)?, BTreeSet::from([p, c]));
    assert_eq!(followed(&probes)?, BTreeSet::from([c]));
    assert!(probes.untrack(key)?);
    assert_eq!(probes.kernel_processes()?.values().filter(|k| **k == key).count(), 0);
    assert_eq!(followed(&probes)?, BTreeSet::new());
    // A child forked after the untrack is not added: its parent is no longer tracked.
    let d = parent.ask("fork")?;
    assert!(!probes.kernel_processes()?.contains_key(&d));
    for pid in [b, c, d] {
        assert_eq!(parent.ask(&format!("end {pid}"))?, pid);
    }
    parent.finish()?;
    Ok(())
}

#[test]
fn a_child_that_does_not_fit_is_counted_as_a_drop() -> Result<()> {
    if !root_or_skip("process_filter_full") {
        return Ok(());
    }
    let mut config = ProbeConfig {
        probes: [Probe::FsBytes].into(),
        filter: Filter::Process,
        ..ProbeConfig::default()
    };
    config.map_sizes.processes = 1;
    let (mut probes, _) = Probes::load(&config)?;
    let cg = TestCgroup::new("procfilter-full")?;
    let key_dir = KeyDir::new("fsbytes")?;
    let key = probes.track(&key_dir.0, [Probe::FsBytes])?;
    let mut parent = Commanded::start(&cg)?;
    let p = parent.child.id();
    probes.set_processes(key, &BTreeSet::from([p]))?;
    assert_eq!(probes.snapshot()?.drops.processes_full, 0);
    let a = parent.ask("fork")?;
    assert_eq!(probes.kernel_processes()?, [(p, key)].into());
    assert_eq!(probes.kernel_children()?, [].into());
    assert_eq!(probes.snapshot()?.drops.processes_full, 1);
    assert_eq!(parent.ask(&format!("end {a}"))?, a);
    parent.finish()?;
    Ok(())
}
