//! Root tests of the probes' life cycle: no leftover links, programs or maps after disabling
//! a probe, untracking a cgroup or dropping the probes (checked with bpftool), the lower rungs
//! of the ladders measuring the same ground truth, and the process-name budget.

mod common;

use anyhow::Result;
use common::{TestCgroup, bpftool, field, payload_server, python, root_or_skip};
use podtrace_ebpf::{
    AttachMethod, OTHER_PROCESS, Op, Probe, ProbeConfig, ProbeState, Probes, Snapshot, tracefs,
};
use std::collections::BTreeSet;
use std::net::TcpListener;

/// Program ids of the loaded probes.
fn program_ids(probes: &mut Probes) -> Result<BTreeSet<u64>> {
    Ok(probes.snapshot()?.programs.iter().map(|p| u64::from(p.id)).collect())
}

/// Ids of `bpftool link` entries whose program is one of `programs`.
fn links_of(programs: &BTreeSet<u64>) -> Result<BTreeSet<u64>> {
    let links = bpftool(&["link", "show"])?;
    Ok(links
        .as_array()
        .into_iter()
        .flatten()
        .filter(|l| l["prog_id"].as_u64().is_some_and(|p| programs.contains(&p)))
        .filter_map(|l| l["id"].as_u64())
        .collect())
}

/// Polls `check` for up to 5 s.
fn eventually(check: impl Fn() -> Result<bool>) -> Result<bool> {
    for _ in 0..100 {
        if check()? {
            return Ok(true);
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    Ok(false)
}

fn loaded_programs() -> Result<BTreeSet<u64>> {
    let progs = bpftool(&["prog", "show"])?;
    Ok(progs.as_array().into_iter().flatten().filter_map(|p| p["id"].as_u64()).collect())
}

fn map_ids_of(programs: &BTreeSet<u64>) -> Result<BTreeSet<u64>> {
    let mut maps = BTreeSet::new();
    for id in programs {
        let p = bpftool(&["prog", "show", "id", &id.to_string()])?;
        maps.extend(p["map_ids"].as_array().into_iter().flatten().filter_map(|m| m.as_u64()));
    }
    Ok(maps)
}

fn loaded_maps() -> Result<BTreeSet<u64>> {
    let maps = bpftool(&["map", "show"])?;
    Ok(maps.as_array().into_iter().flatten().filter_map(|m| m["id"].as_u64()).collect())
}

#[test]
fn disabling_untracking_and_dropping_leave_no_links_programs_or_maps() -> Result<()> {
    if !root_or_skip("lifecycle") {
        return Ok(());
    }
    let (mut probes, statuses) = Probes::load(&ProbeConfig::default())?;
    let attached = statuses.iter().filter(|s| s.state == ProbeState::Attached).count();
    assert_eq!(attached, Probe::ALL.len(), "{statuses:?}");
    let programs = program_ids(&mut probes)?;
    let maps = map_ids_of(&programs)?;
    let packet_programs: BTreeSet<u64> = probes
        .snapshot()?
        .programs
        .iter()
        .filter(|p| p.family == "packet")
        .map(|p| u64::from(p.id))
        .collect();
    assert_eq!(packet_programs.len(), 2);
    // One link per attached program, but the packet programs: they wait for a tracked cgroup.
    assert_eq!(links_of(&programs)?.len(), programs.len() - 2, "one link per attached program");

    // A tracked cgroup gets the packet programs' two links.
    let cg = TestCgroup::new("life")?;
    probes.track(&cg.path, [Probe::TcpConnect, Probe::NetworkBytes])?;
    assert_eq!(links_of(&packet_programs)?.len(), 2);

    // Disabling DNS leaves the packet programs attached for the other packet probes; disabling
    // the last of them detaches and unloads the packet programs only, and enabling them again
    // attaches them to the tracked cgroup again.
    assert_eq!(probes.set_enabled(Probe::Dns, false).state, ProbeState::Disabled);
    assert_eq!(links_of(&packet_programs)?.len(), 2, "still serving networkBytes and tcpRtt");
    assert_eq!(probes.set_enabled(Probe::TcpRtt, false).state, ProbeState::Disabled);
    let st = probes.set_enabled(Probe::NetworkBytes, false);
    assert_eq!(st.state, ProbeState::Disabled);
    assert!(links_of(&packet_programs)?.is_empty(), "packet links left after disabling");
    assert!(
        eventually(|| Ok(loaded_programs()?.is_disjoint(&packet_programs)))?,
        "packet programs left"
    );
    for p in [Probe::Dns, Probe::TcpRtt, Probe::NetworkBytes] {
        assert_eq!(probes.set_enabled(p, true).state, ProbeState::Attached);
    }
    assert_eq!(probes.packet_cgroups(), 1, "attached at the tracked cgroup again");

    // Untracking deletes the cgroup's series from the kernel maps and its links.
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port().to_string();
    python(Some(&cg), "socket.create_connection(('127.0.0.1', int(sys.argv[1])))", &[port])?;
    let snap = probes.snapshot()?;
    let series: Vec<_> = snap.histograms_of(cg.id, Probe::TcpConnect).collect();
    assert_eq!(series.len(), 1);
    assert!(probes.untrack(cg.id)?);
    assert!(!probes.untrack(cg.id)?, "second untrack reports it was not tracked");
    assert_eq!(probes.tracked().count(), 0);
    assert_eq!(probes.packet_cgroups(), 0);
    let snap = probes.snapshot()?;
    assert!(snap.histograms.is_empty() && snap.counters.is_empty());
    let packet_programs: BTreeSet<u64> =
        snap.programs.iter().filter(|p| p.family == "packet").map(|p| u64::from(p.id)).collect();
    assert!(links_of(&packet_programs)?.is_empty(), "packet links left after untrack");

    // Dropping everything leaves nothing behind.
    let programs = program_ids(&mut probes)?;
    let maps: BTreeSet<u64> = maps.union(&map_ids_of(&programs)?).copied().collect();
    drop(probes);
    assert!(links_of(&programs)?.is_empty(), "links left after drop");
    // The kernel frees programs and maps after an RCU grace period / from a work queue, so
    // their ids may linger for a moment after the last fd is closed.
    assert!(
        eventually(|| Ok(loaded_programs()?.is_disjoint(&programs)))?,
        "programs left after drop: {:?}",
        loaded_programs()?.intersection(&programs).collect::<Vec<_>>()
    );
    assert!(
        eventually(|| Ok(loaded_maps()?.is_disjoint(&maps)))?,
        "maps left after drop: {:?}",
        loaded_maps()?.intersection(&maps).collect::<Vec<_>>()
    );
    Ok(())
}

#[test]
fn raw_tracepoint_rungs_measure_the_same_ground_truth() -> Result<()> {
    if !root_or_skip("raw_tracepoint_rungs") {
        return Ok(());
    }
    let skip = [AttachMethod::CgroupSkb, AttachMethod::TpBtf, AttachMethod::Tracepoint];
    rung_measures_ground_truth(&skip, AttachMethod::RawTracepoint)
}

/// Set in the child process that [`tracepoint_rungs_measure_the_same_ground_truth_with_tracefs`]
/// runs in a mount namespace of its own.
const TRACEFS_CHILD: &str = "PT_TEST_TRACEFS_CHILD";

/// The classic tracepoint rungs (fs on the per-syscall tracepoints, the others on theirs)
/// against the same ground truth, with tracefs mounted for real. This machine may not mount
/// tracefs, and the test must not mount it on the node: it runs itself again in a child process
/// moved into a mount namespace of its own (`tracefs::private_mount_namespace`, right after the
/// fork, while single-threaded), which unmounts any tracefs it inherited, mounts one with
/// `tracefs::mount_tracefs` (what the agent does at start) and measures. The node's mounts are
/// checked unchanged afterwards. Without tracefs (in this process, when the node has none) the
/// rungs are unavailable and say why.
#[test]
fn tracepoint_rungs_measure_the_same_ground_truth_with_tracefs() -> Result<()> {
    if !root_or_skip("tracepoint_rungs") {
        return Ok(());
    }
    let skip = [AttachMethod::CgroupSkb, AttachMethod::TpBtf, AttachMethod::RawTracepoint];
    if std::env::var_os(TRACEFS_CHILD).is_some() {
        for inherited in ["/sys/kernel/debug/tracing", tracefs::TRACEFS] {
            let path = std::ffi::CString::new(inherited)?;
            unmount(&path); // in this process's own mount namespace only
        }
        assert_eq!(tracefs::tracefs_path(), None, "tracefs still mounted in the child");
        assert_eq!(tracefs::mount_tracefs()?, std::path::Path::new(tracefs::TRACEFS));
        assert!(tracefs::tracefs_path().is_some());
        return rung_measures_ground_truth(&skip, AttachMethod::Tracepoint);
    }
    let node_tracefs = tracefs::tracefs_path();
    if node_tracefs.is_none() {
        let config = ProbeConfig {
            probes: [Probe::TcpConnect].into(),
            skip_methods: skip.into(),
            ..ProbeConfig::default()
        };
        let (_, statuses) = Probes::load(&config)?;
        let s = statuses.iter().find(|s| s.probe == Probe::TcpConnect).unwrap();
        assert_eq!(s.state, ProbeState::Unavailable, "{s:?}");
        assert!(s.reason.as_deref().unwrap_or("").contains("tracepoint: "), "{s:?}");
    }
    let mut child = std::process::Command::new(std::env::current_exe()?);
    child
        .args(["tracepoint_rungs_measure_the_same_ground_truth_with_tracefs", "--exact"])
        .args(["--nocapture", "--test-threads=1"])
        .env(TRACEFS_CHILD, "1");
    let status = in_own_mount_namespace(&mut child).status()?;
    assert!(status.success(), "the child measuring with tracefs failed: {status}");
    assert_eq!(tracefs::tracefs_path(), node_tracefs, "the node's mounts changed");
    Ok(())
}

#[allow(unsafe_code, reason = "pre_exec runs code between fork and exec (see the caller)")]
fn in_own_mount_namespace(command: &mut std::process::Command) -> &mut std::process::Command {
    use std::os::unix::process::CommandExt;
    // SAFETY: runs in the forked child before exec; glibc's fork handlers leave malloc usable
    // there, and the child has one thread: the whole process moves to the new namespace.
    unsafe {
        command.pre_exec(|| tracefs::private_mount_namespace().map_err(std::io::Error::other))
    }
}

#[allow(unsafe_code, reason = "umount2(2) has no safe wrapper")]
fn unmount(path: &std::ffi::CStr) {
    // SAFETY: a NUL-terminated path; failure (nothing mounted there) is fine.
    unsafe { libc::umount2(path.as_ptr(), libc::MNT_DETACH) };
}

/// Loads the tracepoint families with `skip`ped methods, checks they landed on `expected`,
/// and compares a workload's connects, file writes and sleep with what the kernel counted.
fn rung_measures_ground_truth(skip: &[AttachMethod], expected: AttachMethod) -> Result<()> {
    let config = ProbeConfig {
        probes: [Probe::TcpConnect, Probe::FsBytes, Probe::CpuBlock, Probe::TcpRtt].into(),
        skip_methods: skip.iter().copied().collect(),
        ..ProbeConfig::default()
    };
    let (mut probes, statuses) = Probes::load(&config)?;
    for s in statuses.iter().filter(|s| config.probes.contains(&s.probe)) {
        assert_eq!(s.method, Some(expected), "{s:?}");
    }
    let rtt = statuses.iter().find(|s| s.probe == Probe::TcpRtt).unwrap();
    assert!(
        rtt.reason.as_deref().unwrap_or("").contains("cgroup_skb: skipped by configuration"),
        "{rtt:?}"
    );
    let dns = statuses.iter().find(|s| s.probe == Probe::Dns).unwrap();
    assert_eq!(dns.state, ProbeState::Disabled);

    let cg = TestCgroup::new("rung")?;
    probes.track(&cg.path, config.probes.iter().copied())?;
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port().to_string();
    let dir =
        std::env::temp_dir().join(format!("podtrace-rung-{}-{expected:?}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let body = "
socks = [socket.create_connection(('127.0.0.1', int(sys.argv[1]))) for _ in range(7)]
socks[0].sendall(b'r')
fd = os.open(sys.argv[2], os.O_WRONLY | os.O_CREAT, 0o600)
print('written=%d' % sum(os.write(fd, b'z' * n) for n in (1, 10, 100, 1000)))
time.sleep(0.02)
";
    let out = python(Some(&cg), body, &[port, dir.join("f").display().to_string()])?;
    std::fs::remove_dir_all(&dir)?;
    let snap = probes.snapshot()?;
    assert_eq!(snap.merged_histogram(cg.id, Probe::TcpConnect, Op::None).count, 7);
    let written: u64 = field(&out, "written")?.parse()?;
    assert_eq!(snap.bytes(cg.id, Probe::FsBytes, Op::Write), written);
    assert!(
        snap.histograms_of(cg.id, Probe::FsLatency).next().is_none(),
        "fsLatency is not enabled"
    );
    assert!(snap.merged_histogram(cg.id, Probe::TcpRtt, Op::None).count >= 1);
    let slept = snap.merged_histogram(cg.id, Probe::CpuBlock, Op::None);
    assert!(slept.sum_ns >= 20_000_000, "{slept:?}");
    Ok(())
}

#[test]
fn process_names_beyond_the_budget_count_as_other() -> Result<()> {
    if !root_or_skip("process_names") {
        return Ok(());
    }
    let config = ProbeConfig {
        probes: [Probe::TcpConnect].into(),
        max_process_names: 2,
        ..ProbeConfig::default()
    };
    let (mut probes, _) = Probes::load(&config)?;
    let cg = TestCgroup::new("names")?;
    probes.track(&cg.path, [Probe::TcpConnect])?;
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port().to_string();
    let body = "
socks = []
for name in ['pt-a', 'pt-b', 'pt-c', 'pt-d', 'pt-a']:
    with open('/proc/thread-self/comm', 'w') as f:
        f.write(name)
    socks.append(socket.create_connection(('127.0.0.1', int(sys.argv[1]))))
";
    python(Some(&cg), body, &[port])?;
    let snap = probes.snapshot()?;
    let mut by_name: Vec<(String, u64)> = snap
        .histograms_of(cg.id, Probe::TcpConnect)
        .map(|h| (h.series.process_name.clone(), h.histogram.count))
        .collect();
    by_name.sort();
    assert_eq!(
        by_name,
        vec![("other".to_string(), 2), ("pt-a".to_string(), 2), ("pt-b".to_string(), 1)],
    );
    assert_eq!(OTHER_PROCESS, "other");
    Ok(())
}

#[test]
fn without_cgroup_skb_network_bytes_and_rtt_fall_back_to_the_socket_calls() -> Result<()> {
    if !root_or_skip("network_fallback") {
        return Ok(());
    }
    let config = ProbeConfig {
        probes: [Probe::NetworkBytes, Probe::TcpRtt, Probe::Dns].into(),
        skip_methods: [AttachMethod::CgroupSkb].into(),
        ..ProbeConfig::default()
    };
    let (mut probes, statuses) = Probes::load(&config)?;
    for p in [Probe::NetworkBytes, Probe::TcpRtt] {
        let s = statuses.iter().find(|s| s.probe == p).unwrap();
        assert_eq!(s.method, Some(AttachMethod::TpBtf), "{s:?}");
        assert!(s.reason.as_deref().unwrap_or("").contains("cgroup_skb: skipped"), "{s:?}");
    }
    // The socket calls carry no DNS: unavailable, saying why.
    let dns = statuses.iter().find(|s| s.probe == Probe::Dns).unwrap();
    assert_eq!(dns.state, ProbeState::Unavailable, "{dns:?}");
    let reason = dns.reason.as_deref().unwrap_or("");
    assert!(
        reason.contains("cgroup_skb: skipped") && reason.contains("tp_btf: does not measure dns"),
        "{dns:?}"
    );
    let cg = TestCgroup::new("netfb")?;
    probes.track(&cg.path, [Probe::NetworkBytes, Probe::TcpRtt])?;
    let (port, server) = payload_server(2)?;
    let body = "
n = int(sys.argv[2])
s = socket.create_connection(('127.0.0.1', int(sys.argv[1])))
s.sendall(struct.pack('>Q', n) + b'x' * n)
got = 0
while got < 4321:
    got += len(s.recv(65536))
s.close()
print('comm=' + open('/proc/self/comm').read().strip())
";
    let (inside, outside) = (1_000_000u64, 300_000u64);
    let out = python(Some(&cg), body, &[port.clone(), inside.to_string()])?;
    python(None, body, &[port, outside.to_string()])?;
    server.join().unwrap();
    let snap = probes.snapshot()?;
    // Exactly what the calls moved (the 8-byte length prefix included), nothing of the control.
    assert_eq!(snap.bytes(cg.id, Probe::NetworkBytes, Op::Send), inside + 8);
    assert_eq!(snap.bytes(cg.id, Probe::NetworkBytes, Op::Recv), 4321);
    // RTT per call, in the caller's context: its process name.
    let comm = field(&out, "comm")?;
    let rtt: Vec<_> = snap.histograms_of(cg.id, Probe::TcpRtt).collect();
    assert!(!rtt.is_empty() && rtt.iter().all(|h| h.series.process_name == comm), "{rtt:?}");
    Ok(())
}

/// Checks that cgroup `id` sent `payload` bytes after `before` (both payload bytes), counted
/// once: each packet adds 40..80 header bytes (IPv4 and TCP with options), retransmissions may
/// add some, and counting twice would at least double it.
fn assert_sent_once(snap: &Snapshot, id: u64, payload: u64, before: u64) {
    let sent = snap.bytes(id, Probe::NetworkBytes, Op::Send);
    let packets: u64 = snap
        .counters_of(id, Probe::NetworkBytes)
        .filter(|c| c.series.op == Op::Send)
        .map(|c| c.events)
        .sum();
    let total = payload + before;
    assert!(
        sent >= total + 40 * packets && sent <= total * 3 / 2 + 80 * packets,
        "sent {sent} in {packets} packets for {total} payload bytes"
    );
}

/// Run counts of the packet programs of `probes` (bpf_stats must be on).
fn packet_runs(probes: &mut Probes) -> Result<u64> {
    let snap = probes.snapshot()?;
    Ok(snap.programs.iter().filter(|p| p.family == "packet").map(|p| p.run_count).sum())
}

const SEND: &str = "
n = int(sys.argv[2])
s = socket.create_connection(('127.0.0.1', int(sys.argv[1])))
s.sendall(struct.pack('>Q', n) + b'x' * n)
got = 0
while got < 4321:
    got += len(s.recv(65536))
s.close()
";

/// The packet programs are attached at each tracked cgroup, not at the root: the packets of an
/// untracked cgroup run none of them (their run count does not move), a tracked cgroup's do,
/// and after untrack its links are gone (bpftool) and its packets run none either.
#[test]
fn untracked_packets_run_no_packet_program() -> Result<()> {
    if !root_or_skip("packet_links") {
        return Ok(());
    }
    let config = ProbeConfig {
        probes: [Probe::NetworkBytes].into(),
        bpf_stats: true,
        ..ProbeConfig::default()
    };
    let (mut probes, _) = Probes::load(&config)?;
    let (tracked, untracked) = (TestCgroup::new("pkt-in")?, TestCgroup::new("pkt-out")?);
    assert_eq!(probes.track(&tracked.path, [Probe::NetworkBytes])?, tracked.id);
    assert_eq!(probes.packet_cgroups(), 1);
    let programs = program_ids(&mut probes)?;
    assert_eq!(links_of(&programs)?.len(), 2, "an egress and an ingress link at the cgroup");
    let (port, server) = payload_server(3)?;

    let before = packet_runs(&mut probes)?;
    python(Some(&untracked), SEND, &[port.clone(), "300000".into()])?;
    assert_eq!(packet_runs(&mut probes)?, before, "an untracked cgroup's packets ran them");

    python(Some(&tracked), SEND, &[port.clone(), "300000".into()])?;
    let after = packet_runs(&mut probes)?;
    assert!(after > before, "the tracked cgroup's packets ran no packet program");
    assert_sent_once(&probes.snapshot()?, tracked.id, 300_008, 0);

    assert!(probes.untrack(tracked.id)?);
    assert_eq!(probes.packet_cgroups(), 0);
    assert!(links_of(&programs)?.is_empty(), "links left after untrack");
    python(Some(&tracked), SEND, &[port, "300000".into()])?;
    assert_eq!(packet_runs(&mut probes)?, after);
    server.join().unwrap();
    Ok(())
}

/// A tracked cgroup inside another tracked cgroup shares its ancestor's links (the programs
/// run for descendants too): its bytes are counted once, exactly as when it is tracked alone,
/// and untracking the ancestor gives it links of its own. A directory where cgroup_skb cannot
/// attach (a cgroup v1 directory) is still tracked for the other probes and says why.
#[test]
fn a_tracked_cgroup_inside_another_shares_its_links_and_counts_once() -> Result<()> {
    if !root_or_skip("packet_links_nested") {
        return Ok(());
    }
    let config = ProbeConfig {
        probes: [Probe::NetworkBytes, Probe::TcpConnect].into(),
        ..ProbeConfig::default()
    };
    let (mut probes, _) = Probes::load(&config)?;
    let parent = TestCgroup::new("pkt-parent")?;
    let child = parent.child("inner")?;
    probes.track(&parent.path, [Probe::NetworkBytes])?;
    probes.track(&child.path, [Probe::NetworkBytes])?;
    assert_eq!(probes.packet_cgroups(), 1, "the child is covered by its parent's links");
    let (port, server) = payload_server(2)?;
    python(Some(&child), SEND, &[port.clone(), "200000".into()])?;
    let snap = probes.snapshot()?;
    assert_sent_once(&snap, child.id, 200_008, 0);
    assert_eq!(snap.bytes(parent.id, Probe::NetworkBytes, Op::Send), 0);

    assert!(probes.untrack(parent.id)?);
    assert_eq!(probes.packet_cgroups(), 1, "the child got links of its own");
    python(Some(&child), SEND, &[port, "100000".into()])?;
    assert_sent_once(&probes.snapshot()?, child.id, 100_008, 200_008);
    server.join().unwrap();

    // Not a cgroup v2 directory: tracked (tcpConnect works there), the packet probes say why.
    let other = std::env::temp_dir().join(format!("podtrace-not-a-cgroup-{}", std::process::id()));
    std::fs::create_dir_all(&other)?;
    let id = probes.track(&other, [Probe::NetworkBytes, Probe::TcpConnect])?;
    let problems = probes.packet_problems();
    assert!(problems.get(&id).is_some_and(|why| why.contains("pt_pkt_egress")), "{problems:?}");
    assert!(probes.untrack(id)?);
    assert!(probes.packet_problems().is_empty());
    std::fs::remove_dir(&other)?;
    drop(child);
    Ok(())
}
