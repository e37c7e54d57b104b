//! Root tests against the running kernel: each workload runs in a fresh cgroup v2 child that
//! the probes track, a control workload runs outside it, and the kernel's numbers are compared
//! with what the workloads (or the test's own servers) know happened.
//!
//! All tests share one loaded `Probes` (loading every family takes a moment); each only reads
//! the series of its own cgroup, so they can run in parallel.

mod common;

use anyhow::Result;
use common::{TestCgroup, bpftool, field, python, root_or_skip};
use parking_lot::Mutex;
use podtrace_ebpf::{
    OTHER_PROCESS, Op, Probe, ProbeConfig, ProbeState, Probes, Snapshot, bucket_index,
};
use std::io::Read;
use std::net::{TcpListener, UdpSocket};
use std::sync::OnceLock;
use std::time::Duration;

/// The DNS port of the shared instance: a private port so the test server needs no :53.
const DNS_PORT: u16 = 35353;

/// Held by the tests that listen on TCP `DNS_PORT`.
static DNS_TCP_PORT: Mutex<()> = Mutex::new(());

fn probes() -> &'static Mutex<Probes> {
    static PROBES: OnceLock<Mutex<Probes>> = OnceLock::new();
    PROBES.get_or_init(|| {
        let config = ProbeConfig { dns_port: DNS_PORT, ..ProbeConfig::default() };
        let (probes, statuses) = Probes::load(&config).expect("loading the probes");
        for s in &statuses {
            assert_eq!(s.state, ProbeState::Attached, "{s:?}");
        }
        Mutex::new(probes)
    })
}

fn track(cg: &TestCgroup, probes_: &[Probe]) -> Result<()> {
    assert_eq!(probes().lock().track(&cg.path, probes_.iter().copied())?, cg.id);
    Ok(())
}

fn snapshot() -> Result<Snapshot> {
    Ok(probes().lock().snapshot()?)
}

fn untrack(cg: &TestCgroup) -> Result<()> {
    assert!(probes().lock().untrack(cg.id)?);
    let snap = snapshot()?;
    assert!(
        !snap.histograms.iter().any(|h| h.series.cgroup_id == cg.id)
            && !snap.counters.iter().any(|c| c.series.cgroup_id == cg.id),
        "series of an untracked cgroup remain"
    );
    Ok(())
}

/// A loopback server that reads every connection to EOF; returns the bytes it received.
fn sink(connections: usize) -> Result<(u16, std::thread::JoinHandle<u64>)> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    let handle = std::thread::spawn(move || {
        let mut total = 0u64;
        let mut buf = vec![0u8; 1 << 16];
        for _ in 0..connections {
            let (mut s, _) = listener.accept().expect("accept");
            while let Ok(n) = s.read(&mut buf) {
                if n == 0 {
                    break;
                }
                total += n as u64;
            }
        }
        total
    });
    Ok((port, handle))
}

const SEND: &str = "
port, n = int(sys.argv[1]), int(sys.argv[2])
s = socket.create_connection(('127.0.0.1', port))
s.sendall(b'x' * n)
s.close()
";

#[test]
fn loopback_tcp_send_bytes_are_counted_for_the_tracked_cgroup_only() -> Result<()> {
    if !root_or_skip("loopback_tcp_send_bytes") {
        return Ok(());
    }
    let cg = TestCgroup::new("net")?;
    track(&cg, &[Probe::NetworkBytes])?;
    let (inside, outside) = (1_000_000u64, 4_000_000u64);
    let (port, server) = sink(2)?;
    python(Some(&cg), SEND, &[port.to_string(), inside.to_string()])?;
    python(None, SEND, &[port.to_string(), outside.to_string()])?;
    assert_eq!(server.join().unwrap(), inside + outside, "the server's ground truth");

    let snap = snapshot()?;
    let sent = snap.bytes(cg.id, Probe::NetworkBytes, Op::Send);
    let received = snap.bytes(cg.id, Probe::NetworkBytes, Op::Recv);
    eprintln!("sent {sent} for {inside} payload bytes; received {received} (ACKs)");
    // Every packet carries an IPv4 header (20 bytes) and a TCP header (20..60 bytes) on top
    // of the payload. A large send is one GSO skb at the hook but its length on loopback was
    // measured at ~52 bytes per 3.3 KB of payload (1.6 % for 1 MB), so the upper bound allows
    // 80 bytes per packet plus per KB. The control's 4 MB would break it either way.
    let packets: u64 = snap
        .counters_of(cg.id, Probe::NetworkBytes)
        .filter(|c| c.series.op == Op::Send)
        .map(|c| c.events)
        .sum();
    eprintln!("{packets} packets sent");
    assert!(sent >= inside + 40 * packets, "sent {sent} for {inside} in {packets} packets");
    // Upper bound: headers as above, plus room for TCP retransmissions, which are real sends
    // of the socket (seen once: 1 161 763 bytes for 1 MB in 20 packets on this 2-core VM).
    // Counting the control's 4 MB, or counting a packet twice, would still be far above it.
    assert!(
        sent <= inside * 5 / 4 + 80 * (packets + inside / 1000),
        "sent {sent} for {inside} in {packets} packets"
    );
    assert!(received > 0 && received < inside / 100, "received {received}");
    untrack(&cg)
}

#[test]
fn each_tcp_connect_gives_exactly_one_latency_sample() -> Result<()> {
    if !root_or_skip("tcp_connect") {
        return Ok(());
    }
    let cg = TestCgroup::new("connect")?;
    track(&cg, &[Probe::TcpConnect])?;
    // The kernel completes handshakes into the backlog without accept().
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port().to_string();
    let body = "
port, k = int(sys.argv[1]), int(sys.argv[2])
socks = [socket.create_connection(('127.0.0.1', port)) for _ in range(k)]
print('comm=' + open('/proc/self/comm').read().strip())
";
    let k = 20u64;
    let out = python(Some(&cg), body, &[port.clone(), k.to_string()])?;
    python(None, body, &[port, "10".into()])?;

    let snap = snapshot()?;
    let h = snap.merged_histogram(cg.id, Probe::TcpConnect, Op::None);
    assert_eq!(h.count, k, "{h:?}");
    assert_eq!(h.buckets.iter().sum::<u64>(), k);
    assert!(h.latest_ns > 0 && h.latest_ns < 1_000_000_000, "{h:?}");
    let comm = field(&out, "comm")?;
    assert!(
        snap.histograms_of(cg.id, Probe::TcpConnect).all(|s| s.series.process_name == comm),
        "process_name should be {comm}"
    );
    untrack(&cg)
}

#[test]
fn tcp_rtt_samples_follow_the_sockets_smoothed_rtt() -> Result<()> {
    if !root_or_skip("tcp_rtt") {
        return Ok(());
    }
    let cg = TestCgroup::new("rtt")?;
    track(&cg, &[Probe::TcpRtt])?;
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    let echo = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().expect("accept");
        let mut buf = [0u8; 100];
        while let Ok(()) = s.read_exact(&mut buf) {
            std::io::Write::write_all(&mut s, &buf).expect("echo");
        }
    });
    let body = "
s = socket.create_connection(('127.0.0.1', int(sys.argv[1])))
for _ in range(50):
    s.sendall(b'p' * 100)
    got = b''
    while len(got) < 100:
        got += s.recv(100 - len(got))
info = s.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
print('rtt_us=%d' % struct.unpack_from('I', info, 68)[0])
s.close()
";
    let out = python(Some(&cg), body, &[port.to_string()])?;
    echo.join().unwrap();
    let ss_rtt_us: u64 = field(&out, "rtt_us")?.parse()?;

    let snap = snapshot()?;
    let h = snap.merged_histogram(cg.id, Probe::TcpRtt, Op::None);
    let latest_us = h.latest_ns / 1000;
    eprintln!("rtt samples {}, latest {latest_us} us, tcp_info {ss_rtt_us} us", h.count);
    // One sample per TCP segment the client's socket received: at least the 50 echoes.
    assert!(h.count >= 50, "{h:?}");
    // The same kernel variable, sampled a few packets apart: same order of magnitude.
    assert!(
        latest_us <= 4 * ss_rtt_us + 200 && ss_rtt_us <= 4 * latest_us + 200,
        "{latest_us} vs {ss_rtt_us}"
    );
    // Sampled by the packet program on ingress, in softirq: the socket user's name is not
    // known there (see packet.bpf.c), so the pod's RTT is one series.
    assert!(
        snap.histograms_of(cg.id, Probe::TcpRtt).all(|s| s.series.process_name == OTHER_PROCESS),
        "RTT series carry process_name=other on cgroup_skb"
    );
    untrack(&cg)
}

#[test]
fn dns_queries_answered_after_a_known_delay_land_in_its_bucket() -> Result<()> {
    if !root_or_skip("dns") {
        return Ok(());
    }
    let cg = TestCgroup::new("dns")?;
    track(&cg, &[Probe::Dns])?;
    // 14 ms sits 1.2 ms above the bucket's lower bound (12.8 ms) and 11.6 ms below its upper one
    // (25.6 ms): room for the server thread's wake-up delay on a loaded machine.
    let (k, control, delay) = (10u64, 5u64, Duration::from_millis(14));
    let server = UdpSocket::bind(("127.0.0.1", DNS_PORT))?;
    let answering = std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        for _ in 0..k + control {
            let (n, from) = server.recv_from(&mut buf).expect("recv");
            std::thread::sleep(delay);
            buf[2] |= 0x80; // QR: response
            server.send_to(&buf[..n], from).expect("send");
        }
    });
    let body = "
port, k = int(sys.argv[1]), int(sys.argv[2])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
q = b'\\x07example\\x03com\\x00\\x00\\x01\\x00\\x01'
for i in range(k):
    s.sendto(struct.pack('>HHHHHH', 4242 + i, 0x0100, 1, 0, 0, 0) + q, ('127.0.0.1', port))
    s.recvfrom(512)
print('comm=' + open('/proc/self/comm').read().strip())
";
    let out = python(Some(&cg), body, &[DNS_PORT.to_string(), k.to_string()])?;
    python(None, body, &[DNS_PORT.to_string(), control.to_string()])?;
    answering.join().unwrap();

    assert_dns_samples(&cg, k, control, delay, &out)
}

#[test]
fn dns_over_tcp_queries_answered_after_a_known_delay_land_in_its_bucket() -> Result<()> {
    if !root_or_skip("dns_tcp") {
        return Ok(());
    }
    let _port = DNS_TCP_PORT.lock();
    let cg = TestCgroup::new("dnstcp")?;
    track(&cg, &[Probe::Dns])?;
    // The same delay as over UDP (see above). One connection per client, K queries each, every
    // message framed by its 2-byte length (RFC 1035 4.2.2); the answer is written in one write.
    let (k, control, delay) = (10u64, 5u64, Duration::from_millis(14));
    let listener = TcpListener::bind(("127.0.0.1", DNS_PORT))?;
    let answering = std::thread::spawn(move || {
        for _ in 0..2 {
            let (mut conn, _) = listener.accept().expect("accept");
            let mut len = [0u8; 2];
            while conn.read_exact(&mut len).is_ok() {
                let mut msg = vec![0u8; usize::from(u16::from_be_bytes(len))];
                conn.read_exact(&mut msg).expect("query");
                std::thread::sleep(delay);
                msg[2] |= 0x80; // QR: response
                let mut answer = len.to_vec();
                answer.extend_from_slice(&msg);
                std::io::Write::write_all(&mut conn, &answer).expect("answer");
            }
        }
    });
    let body = "
port, k = int(sys.argv[1]), int(sys.argv[2])
s = socket.create_connection(('127.0.0.1', port))
q = b'\\x07example\\x03com\\x00\\x00\\x01\\x00\\x01'
def read(n):
    got = b''
    while len(got) < n:
        got += s.recv(n - len(got))
    return got
for i in range(k):
    msg = struct.pack('>HHHHHH', 4242 + i, 0x0100, 1, 0, 0, 0) + q
    s.sendall(struct.pack('>H', len(msg)) + msg)
    n = struct.unpack('>H', read(2))[0]
    assert struct.unpack('>H', read(n)[:2])[0] == 4242 + i
s.close()
print('comm=' + open('/proc/self/comm').read().strip())
";
    let out = python(Some(&cg), body, &[DNS_PORT.to_string(), k.to_string()])?;
    python(None, body, &[DNS_PORT.to_string(), control.to_string()])?;
    answering.join().unwrap();

    assert_dns_samples(&cg, k, control, delay, &out)
}

/// The DNS checks shared by UDP and TCP: exactly `k` samples in `cg` (none of the `control`
/// queries from outside it), the p50 in the bucket of the server's `delay`, at least `delay` each,
/// and every series named after the querying process (`comm=` in the client's output `out`).
/// Untracks `cg`.
fn assert_dns_samples(
    cg: &TestCgroup,
    k: u64,
    control: u64,
    delay: Duration,
    out: &str,
) -> Result<()> {
    let snap = snapshot()?;
    let h = snap.merged_histogram(cg.id, Probe::Dns, Op::None);
    eprintln!("dns {h:?}");
    assert_eq!(h.count, k, "one sample per query, none for the control's {control}");
    let expected = bucket_index(delay.as_nanos() as u64);
    assert_eq!(h.quantile_bucket(0.5), Some(expected), "p50 bucket for {delay:?}");
    assert!(h.sum_ns >= k * delay.as_nanos() as u64);
    let comm = field(out, "comm")?;
    assert!(
        snap.histograms_of(cg.id, Probe::Dns).all(|s| s.series.process_name == comm),
        "DNS series should carry the querying process {comm}"
    );
    untrack(cg)
}

#[test]
fn pipelined_dns_queries_in_one_tcp_segment_are_each_timed_up_to_eight() -> Result<()> {
    if !root_or_skip("dns_tcp_pipelined") {
        return Ok(());
    }
    let _port = DNS_TCP_PORT.lock();
    let cg = TestCgroup::new("dnspipe")?;
    track(&cg, &[Probe::Dns])?;
    // Each write of the client holds `per` length-prefixed queries (one segment on loopback);
    // the server reads them all and answers them all in one write, after `delay`. A write of 9
    // is beyond PT_DNS_MAX_MSGS (8): its ninth query and answer are not seen.
    let writes = [2u64, 8, 9];
    let expected: u64 = writes.iter().map(|w| (*w).min(8)).sum();
    let delay = Duration::from_millis(14);
    let listener = TcpListener::bind(("127.0.0.1", DNS_PORT))?;
    let answering = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().expect("accept");
        for per in writes {
            let mut answers = Vec::new();
            for _ in 0..per {
                let mut len = [0u8; 2];
                conn.read_exact(&mut len).expect("length");
                let mut msg = vec![0u8; usize::from(u16::from_be_bytes(len))];
                conn.read_exact(&mut msg).expect("query");
                msg[2] |= 0x80; // QR: response
                answers.extend_from_slice(&len);
                answers.extend_from_slice(&msg);
            }
            std::thread::sleep(delay);
            std::io::Write::write_all(&mut conn, &answers).expect("answers");
        }
    });
    let body = "
port = int(sys.argv[1])
s = socket.create_connection(('127.0.0.1', port))
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
q = b'\\x07example\\x03com\\x00\\x00\\x01\\x00\\x01'
def read(n):
    got = b''
    while len(got) < n:
        got += s.recv(n - len(got))
    return got
qid = 5000
for per in map(int, sys.argv[2].split(',')):
    ids = list(range(qid, qid + per)); qid += per
    msgs = [struct.pack('>HHHHHH', i, 0x0100, 1, 0, 0, 0) + q for i in ids]
    s.sendall(b''.join(struct.pack('>H', len(m)) + m for m in msgs))
    for i in ids:
        n = struct.unpack('>H', read(2))[0]
        assert struct.unpack('>H', read(n)[:2])[0] == i
s.close()
";
    let per = writes.map(|w| w.to_string()).join(",");
    python(Some(&cg), body, &[DNS_PORT.to_string(), per])?;
    answering.join().unwrap();

    let snap = snapshot()?;
    let h = snap.merged_histogram(cg.id, Probe::Dns, Op::None);
    eprintln!("pipelined dns over tcp {h:?}");
    assert_eq!(h.count, expected, "one sample per query, at most 8 per segment");
    let bucket = bucket_index(delay.as_nanos() as u64);
    assert_eq!(h.quantile_bucket(0.5), Some(bucket), "p50 bucket for {delay:?}");
    untrack(&cg)
}

#[test]
fn file_writes_and_fsyncs_count_exactly_and_pipes_do_not() -> Result<()> {
    if !root_or_skip("fs") {
        return Ok(());
    }
    let cg = TestCgroup::new("fs")?;
    track(&cg, &[Probe::FsLatency, Probe::FsBytes])?;
    let dir = std::env::temp_dir().join(format!("podtrace-fs-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let body = "
path = sys.argv[1]
fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
written, writes, syncs = 0, 0, 0
for i in range(30):
    written += os.write(fd, b'w' * (4096 + i))
    writes += 1
    if i % 6 == 0:
        (os.fsync if i % 12 == 0 else os.fdatasync)(fd)
        syncs += 1
os.close(fd)
r, w = os.pipe()
for _ in range(20):
    os.write(w, b'p' * 1000)
    os.read(r, 1000)
a, b = socket.socketpair()
a.send(b's' * 5000); b.recv(5000)
fd = os.open(path, os.O_RDONLY)
got = len(os.read(fd, 50000))
os.close(fd)
print('written=%d' % written); print('writes=%d' % writes)
print('syncs=%d' % syncs); print('read=%d' % got)
";
    let out = python(Some(&cg), body, &[dir.join("data").display().to_string()])?;
    python(None, body, &[dir.join("control").display().to_string()])?;
    std::fs::remove_dir_all(&dir)?;
    let written: u64 = field(&out, "written")?.parse()?;
    let writes: u64 = field(&out, "writes")?.parse()?;
    let syncs: u64 = field(&out, "syncs")?.parse()?;
    let read: u64 = field(&out, "read")?.parse()?;

    let snap = snapshot()?;
    assert_eq!(
        snap.bytes(cg.id, Probe::FsBytes, Op::Write),
        written,
        "pipe/socket writes must not count"
    );
    assert_eq!(snap.bytes(cg.id, Probe::FsBytes, Op::Read), read);
    assert_eq!(snap.merged_histogram(cg.id, Probe::FsLatency, Op::Fsync).count, syncs);
    assert_eq!(snap.merged_histogram(cg.id, Probe::FsLatency, Op::Write).count, writes);
    let types: Vec<&str> =
        snap.histograms_of(cg.id, Probe::FsLatency).map(|h| h.series.type_label()).collect();
    assert!(types.contains(&"write") && types.contains(&"fsync"), "{types:?}");
    untrack(&cg)
}

#[test]
fn a_thread_sleeping_10ms_a_hundred_times_is_off_cpu_in_the_10ms_bucket() -> Result<()> {
    if !root_or_skip("cpu_block") {
        return Ok(());
    }
    let cg = TestCgroup::new("cpu")?;
    // First tracked for another probe only: the sleeper blocks a few times under its first
    // name, so the kernel's per-task cache holds (not cpuBlock, "python3") when cpuBlock is
    // turned on and when the thread renames itself. A cache that missed either change would
    // put the blocks under the wrong name or nowhere.
    track(&cg, &[Probe::NetworkBytes])?;
    let dir = std::env::temp_dir().join(format!("podtrace-cpu-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let (started, go) = (dir.join("started"), dir.join("go"));
    // The sleeper names itself and reports, for every sleep, its own context switches and how
    // long it took: the ground truth of each sample. A sleep during which the thread was
    // preempted (runnable, not blocked: a loaded 2-core machine does that) is rightly not a
    // block and shows up as a non-voluntary switch; a sleep whose timer expired before the
    // thread reached schedule() (a long interrupt or a stalled vCPU after the timer was armed)
    // never blocks at all: no switch, and no sample.
    let body = "
def switches():
    st = open('/proc/thread-self/status').read().split('\\n')
    get = lambda k: int([l for l in st if l.startswith(k)][0].split()[1])
    return get('voluntary_ctxt_switches'), get('nonvoluntary_ctxt_switches')
def sleeper():
    for _ in range(3):
        time.sleep(0.002)
    open(sys.argv[1], 'w').close()
    while not os.path.exists(sys.argv[2]):
        time.sleep(0.005)
    for _ in range(3):
        time.sleep(0.002)
    with open('/proc/thread-self/comm', 'w') as f:
        f.write('pt-sleeper')
    clean, late, other, unblocked = 0, 0, 0, 0
    v0, n0 = switches()
    for _ in range(100):
        a, b = switches()
        t0 = time.monotonic()
        time.sleep(0.01)
        took = time.monotonic() - t0
        c, d = switches()
        if (c - a, d - b) == (1, 0):
            if took < 0.0128:
                clean += 1
            else:
                late += 1
        elif (c - a, d - b) == (0, 0):
            unblocked += 1
        else:
            other += 1
    v1, n1 = switches()
    # Blocks from here on (the prints, the thread's exit) go to another series.
    with open('/proc/thread-self/comm', 'w') as f:
        f.write('pt-done')
    print('voluntary=%d' % (v1 - v0)); print('preempted=%d' % (n1 - n0))
    print('clean=%d' % clean); print('late=%d' % late)
    print('other=%d' % other); print('unblocked=%d' % unblocked)
t = threading.Thread(target=sleeper)
t.start(); t.join()
";
    let misses = |snap: &Snapshot| -> u64 {
        snap.programs.iter().filter(|p| p.family == "cpu_block").map(|p| p.recursion_misses).sum()
    };
    let before = snapshot()?;
    let (missed_before, unclosed_before) = (misses(&before), before.drops.unclosed_blocks);
    let args = [started.display().to_string(), go.display().to_string()];
    let run = {
        let cg_path = cg.path.clone();
        let cg_id = cg.id;
        std::thread::spawn(move || {
            let cg = TestCgroup { path: cg_path, id: cg_id };
            let out = python(Some(&cg), body, &args);
            std::mem::forget(cg); // the test's own handle removes the directory
            out
        })
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !started.exists() {
        assert!(
            std::time::Instant::now() < deadline && !run.is_finished(),
            "sleeper did not start"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    track(&cg, &[Probe::CpuBlock])?;
    std::fs::write(&go, b"")?;
    let out = run.join().expect("workload thread")?;
    std::fs::remove_dir_all(&dir)?;
    let n = |k: &str| -> Result<u64> { Ok(field(&out, k)?.parse()?) };
    let (voluntary, preempted) = (n("voluntary")?, n("preempted")?);
    let (clean, late, other, unblocked) = (n("clean")?, n("late")?, n("other")?, n("unblocked")?);
    let snap = snapshot()?;
    let h = snap
        .histograms_of(cg.id, Probe::CpuBlock)
        .find(|h| h.series.process_name == "pt-sleeper")
        .map(|h| h.histogram.clone())
        .unwrap_or_default();
    for s in snap.histograms_of(cg.id, Probe::CpuBlock) {
        eprintln!(
            "series {} {:?} count {} sum {}",
            s.series.process_name, s.histogram.buckets, s.histogram.count, s.histogram.sum_ns
        );
    }
    let bucket = bucket_index(10_000_000);
    // The three 2 ms sleeps after cpuBlock was turned on, under the thread's first name: the
    // per-task cache saw the new tracked generation (and then the rename, above).
    let before_rename = snap
        .histograms_of(cg.id, Probe::CpuBlock)
        .find(|h| h.series.process_name == "python3")
        .map(|h| h.histogram.buckets[bucket_index(2_000_000)])
        .unwrap_or_default();
    assert!(before_rename >= 1, "no 2 ms block under the first name");
    // A program run the kernel skipped (recursion) would be counted; sched_switch runs with
    // interrupts off, so none is expected.
    let missed = misses(&snap) - missed_before;
    eprintln!(
        "off-cpu buckets {:?}; {voluntary} voluntary switches, {preempted} preempted, {missed} missed; \
         sleeps: {clean} clean, {late} late, {other} other, {unblocked} without a switch; drops {:?}",
        h.buckets, snap.drops
    );
    assert_eq!(clean + late + other + unblocked, 100);
    let d = snap.drops;
    assert_eq!(d.histograms_full + d.counters_full + d.inflight_full, 0, "{d:?}");
    // Every voluntary switch of the thread is one block, recorded: none lost (the counter is
    // shared with the tests running in parallel; none of them may lose one either).
    assert_eq!((missed, d.unclosed_blocks - unclosed_before), (0, 0), "{d:?}");
    assert_eq!(h.count, voluntary, "one block per voluntary switch: {h:?}");
    // A clean sleep (one voluntary switch, no preemption, back within 12.8 ms) is a block of
    // 10 ms (+ the timer slack) minus the µs between arming the timer and switching out: in
    // the bucket le=0.0128, every one. A late one (running again after 12.8 ms: its block ends
    // at its wakeup, maybe earlier) or one that also saw a preemption may or may not be;
    // nothing else may land there.
    assert!(
        h.buckets[bucket] >= clean && h.buckets[bucket] <= clean + late + other,
        "{} samples in the 10 ms bucket for {clean} clean sleeps ({late} late, {other} other)",
        h.buckets[bucket]
    );
    assert!(h.sum_ns >= (clean + late) * 9_500_000, "{h:?}");
    // Every thread of the workload has exited: their start entries are gone with them.
    let left = block_start_entries_of(cg.id)?;
    assert_eq!(left, 0, "block_start entries of exited threads");
    untrack(&cg)
}

/// Entries of `block_start` (the cpu_block family's start per thread) whose cgroup is `cgroup_id`,
/// read with bpftool (this test binary loads one instance of the map).
fn block_start_entries_of(cgroup_id: u64) -> Result<usize> {
    let dump = bpftool(&["map", "dump", "name", "block_start"])?;
    let entries = dump.as_array().cloned().unwrap_or_default();
    let cgroup = |e: &serde_json::Value| -> Option<u64> {
        if let Some(v) = e.pointer("/formatted/value/cgroup_id") {
            return v.as_u64();
        }
        // Raw dump: the value's bytes as "0x.." strings; the cgroup id is bytes 8..16 (LE).
        let bytes: Vec<u8> = e["value"]
            .as_array()?
            .iter()
            .filter_map(|b| u8::from_str_radix(b.as_str()?.trim_start_matches("0x"), 16).ok())
            .collect();
        Some(u64::from_le_bytes(bytes.get(8..16)?.try_into().ok()?))
    };
    Ok(entries.iter().filter(|e| cgroup(e) == Some(cgroup_id)).count())
}

/// The goal of issue 15: no block lost in 10,000. A thread sleeps 0.5 ms 10,000 times (about
/// 7 s); every voluntary switch it made is one recorded block, none is counted unclosed, and
/// each is at least the sleep. Closing at the wakeup lost about one in 600 here (see
/// cpu_block.bpf.c).
#[test]
fn ten_thousand_short_sleeps_are_each_one_block() -> Result<()> {
    if !root_or_skip("cpu_block_many") {
        return Ok(());
    }
    let cg = TestCgroup::new("cpumany")?;
    track(&cg, &[Probe::CpuBlock])?;
    let body = "
def switches():
    st = open('/proc/thread-self/status').read().split('\\n')
    return int([l for l in st if l.startswith('voluntary_ctxt_switches')][0].split()[1])
def sleeper():
    with open('/proc/thread-self/comm', 'w') as f:
        f.write('pt-many')
    v0 = switches()
    for _ in range(int(sys.argv[1])):
        time.sleep(0.0005)
    v1 = switches()
    with open('/proc/thread-self/comm', 'w') as f:
        f.write('pt-done')
    print('voluntary=%d' % (v1 - v0))
t = threading.Thread(target=sleeper)
t.start(); t.join()
";
    let before = snapshot()?.drops.unclosed_blocks;
    let sleeps = 10_000u64;
    let out = python(Some(&cg), body, &[sleeps.to_string()])?;
    let voluntary: u64 = field(&out, "voluntary")?.parse()?;
    let snap = snapshot()?;
    let h = snap
        .histograms_of(cg.id, Probe::CpuBlock)
        .find(|h| h.series.process_name == "pt-many")
        .map(|h| h.histogram.clone())
        .unwrap_or_default();
    let unclosed = snap.drops.unclosed_blocks - before;
    eprintln!("{voluntary} voluntary switches, {h:?}, {unclosed} unclosed");
    assert!(voluntary >= sleeps * 99 / 100, "the thread blocked in almost every sleep");
    // None lost: every voluntary switch of the loop is a block. The comm is set just before
    // the first reading of the switch count, and a switch in between (opening the status file
    // can block) makes one block more than the loop's count: at most that one.
    assert_eq!(unclosed, 0, "{h:?}");
    assert!((voluntary..=voluntary + 1).contains(&h.count), "{voluntary} switches: {h:?}");
    assert!(h.sum_ns >= sleeps * 450_000, "every sleep is a block of about 0.5 ms: {h:?}");
    untrack(&cg)
}
