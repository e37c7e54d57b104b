//! Parsers of the `/proc` files the process and kernel collectors read (pure functions), and
//! the small readers around them.

use crate::cgroup::files::IoBytes;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// `USER_HZ`: the unit of the tick counts in `/proc/<pid>/stat`. It is 100 on every Linux
/// architecture the agent runs on (x86_64, arm64); the kernel keeps it fixed for user space
/// regardless of `CONFIG_HZ` (include/asm-generic/param.h).
pub const USER_HZ: f64 = 100.0;

/// The fields of `/proc/<pid>/stat` the agent uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PidStat {
    /// The command name (comm), without the parentheses.
    pub comm: String,
    /// User plus system CPU time, in ticks of [`USER_HZ`].
    pub cpu_ticks: u64,
    /// Number of threads.
    pub threads: u64,
    /// Start time after boot, in ticks.
    pub start_ticks: u64,
}

/// Parses `/proc/<pid>/stat`. The comm may contain spaces and parentheses, so fields are counted
/// from the last `)`.
pub fn parse_pid_stat(text: &str) -> Option<PidStat> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text.get(open + 1..close)?.to_owned();
    // Field 3 (state) is index 0 after the comm; see proc_pid_stat(5).
    let rest: Vec<&str> = text.get(close + 1..)?.split_whitespace().collect();
    let field = |n: usize| -> Option<u64> { rest.get(n - 3)?.parse().ok() };
    Some(PidStat {
        comm,
        cpu_ticks: field(14)? + field(15)?,
        threads: field(20)?,
        start_ticks: field(22)?,
    })
}

/// The resident set of `/proc/<pid>/statm` (its second field, in pages), in bytes: the same
/// number as `VmRSS` of `/proc/<pid>/status`, from a file that is far cheaper to generate.
pub fn parse_statm_rss(text: &str, page_size: u64) -> Option<u64> {
    Some(text.split_whitespace().nth(1)?.parse::<u64>().ok()? * page_size)
}

/// The page size of `/proc/<pid>/statm`, from the kernel's auxiliary vector.
pub fn page_size() -> u64 {
    // AT_PAGESZ of /proc/self/auxv (pairs of native-endian u64: type, value); reading it keeps
    // the agent free of unsafe code. 4 KiB when unreadable: every x86_64 kernel and most arm64.
    const AT_PAGESZ: u64 = 6;
    std::fs::read("/proc/self/auxv")
        .ok()
        .and_then(|a| {
            a.chunks_exact(16).find_map(|pair| {
                let key = u64::from_ne_bytes(pair[..8].try_into().ok()?);
                (key == AT_PAGESZ).then(|| u64::from_ne_bytes(pair[8..].try_into().unwrap()))
            })
        })
        .unwrap_or(4096)
}

/// `read_bytes` and `write_bytes` of `/proc/<pid>/io`: bytes the process made the storage layer
/// fetch or send (page-cache hits are not counted).
pub fn parse_pid_io(text: &str) -> IoBytes {
    let get = |key: &str| {
        text.lines().find_map(|l| l.strip_prefix(key)?.trim().parse().ok()).unwrap_or(0)
    };
    IoBytes { read: get("read_bytes:"), write: get("write_bytes:") }
}

/// Received and transmitted bytes of `/proc/<pid>/net/dev`, summed over every interface but `lo`.
pub fn parse_net_dev(text: &str) -> (u64, u64) {
    let mut rx = 0;
    let mut tx = 0;
    for line in text.lines().skip(2) {
        let Some((iface, counters)) = line.split_once(':') else { continue };
        if iface.trim() == "lo" {
            continue;
        }
        let c: Vec<u64> = counters.split_whitespace().filter_map(|v| v.parse().ok()).collect();
        if c.len() >= 16 {
            rx += c[0];
            tx += c[8];
        }
    }
    (rx, tx)
}

/// Seconds since boot from `/proc/uptime`.
pub fn parse_uptime(text: &str) -> Option<f64> {
    text.split_whitespace().next()?.parse().ok()
}

/// `MemTotal` of `/proc/meminfo`, in bytes.
pub fn parse_mem_total(text: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        Some(l.strip_prefix("MemTotal:")?.split_whitespace().next()?.parse::<u64>().ok()? * 1024)
    })
}

/// The `ctxt` line of `/proc/stat`: context switches since boot, all CPUs.
pub fn parse_context_switches(text: &str) -> Option<u64> {
    text.lines().find_map(|l| l.strip_prefix("ctxt ")?.trim().parse().ok())
}

/// The number of sockets in a `/proc/net/{tcp,tcp6,udp,udp6}` table (one line per socket after
/// the header, in every state including LISTEN and TIME_WAIT).
pub fn count_socket_lines(text: &str) -> u64 {
    text.lines().skip(1).filter(|l| !l.trim().is_empty()).count() as u64
}

/// Reads a `/proc` file to a string.
pub fn read(path: impl AsRef<std::path::Path>) -> crate::Result<String> {
    let path = path.as_ref();
    std::fs::read_to_string(path)
        .map_err(|source| crate::Error::Read { path: path.to_owned(), source })
}

/// A `/proc` or cgroup file kept open and re-read from offset 0 with `pread`.
///
/// Both are `seq_file`s that the kernel regenerates when read from offset 0, so two `pread`s
/// (the content, then the end) replace open + fstat + lseek + read + read + close: the collectors read about ten such files per
/// container every interval, and the syscalls, not the parsing, were most of their cost. An fd
/// of `/proc/<pid>/…` stays bound to that process, so a reused pid cannot be misread: reading
/// it fails (ESRCH) once the process is gone. Closed and reopened after any error.
///
/// At most [`set_kept_budget`] files are kept open at once (the open-file limit, less a
/// reserve): past it a file is opened for each read and closed, so a node with more containers
/// than the limit allows is still read completely, at the cost of the syscalls saved above.
#[derive(Debug)]
pub struct KeptFile {
    path: std::path::PathBuf,
    file: Option<Held>,
    one_record: bool,
}

/// Files kept open by every [`KeptFile`] of the process, and how many may be.
static KEPT: AtomicUsize = AtomicUsize::new(0);
static BUDGET: AtomicUsize = AtomicUsize::new(usize::MAX);
static BUDGET_REACHED: AtomicBool = AtomicBool::new(false);

/// Keeps at most `files` [`KeptFile`]s open at once (see [`crate::open_files`]).
pub fn set_kept_budget(files: usize) {
    BUDGET.store(files, Ordering::Relaxed);
}

/// A kept file, counted in [`KEPT`] while it is open.
#[derive(Debug)]
struct Held(std::fs::File);

impl Held {
    /// Keeps `file` when the budget allows, else gives it back to be closed after one read.
    fn keep(file: std::fs::File) -> Result<Held, std::fs::File> {
        if KEPT.fetch_add(1, Ordering::Relaxed) < BUDGET.load(Ordering::Relaxed) {
            return Ok(Held(file));
        }
        KEPT.fetch_sub(1, Ordering::Relaxed);
        if !BUDGET_REACHED.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                kept = BUDGET.load(Ordering::Relaxed),
                "open-file budget reached: further cgroup and /proc files are opened for each \
                 read (complete, but more CPU); raise the agent's open-file limit"
            );
        }
        Err(file)
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        KEPT.fetch_sub(1, Ordering::Relaxed);
    }
}

impl KeptFile {
    /// A file to read at `path` (opened on the first read).
    pub fn new(path: impl Into<std::path::PathBuf>) -> Self {
        Self { path: path.into(), file: None, one_record: false }
    }

    /// A file whose content the kernel produces as one `seq_file` record: every cgroup file but
    /// `cgroup.procs`/`tasks` (kernfs without `seq_start`) and the `single_open` files of
    /// `/proc/<pid>` (`stat`, `statm`, `io`). The kernel never splits one record over two reads,
    /// so a read shorter than the buffer is the whole file and the read of 0 is saved.
    pub fn one_record(path: impl Into<std::path::PathBuf>) -> Self {
        Self { path: path.into(), file: None, one_record: true }
    }

    /// The file's path.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// Reads the whole file and hands its text to `parse`. The bytes go through one scratch
    /// buffer per thread, so a thousand targets do not each keep a page-sized buffer.
    pub fn parse<T>(&mut self, parse: impl FnOnce(&str) -> T) -> std::io::Result<T> {
        thread_local! {
            static SCRATCH: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(Vec::with_capacity(4096));
        }
        SCRATCH.with_borrow_mut(|buf| {
            self.read_into(buf)?;
            let text = std::str::from_utf8(buf)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
            Ok(parse(text))
        })
    }

    /// [`KeptFile::parse`] with the agent's error (naming the path).
    pub fn parse_text<T>(&mut self, parse: impl FnOnce(&str) -> T) -> crate::Result<T> {
        self.parse(parse).map_err(|source| crate::Error::Read { path: self.path.clone(), source })
    }

    /// Runs `f` on the open file: the kept one, or one opened now (kept if the budget allows,
    /// else closed after `f`). An error closes a kept file, to be reopened at the next call.
    fn with_file<T>(
        &mut self,
        f: impl FnOnce(&std::fs::File) -> std::io::Result<T>,
    ) -> std::io::Result<T> {
        let once;
        let file = match &self.file {
            Some(held) => &held.0,
            None => match Held::keep(std::fs::File::open(&self.path)?) {
                Ok(held) => &self.file.insert(held).0,
                Err(file) => {
                    once = file;
                    &once
                }
            },
        };
        let out = f(file);
        if out.is_err() {
            self.file = None;
        }
        out
    }

    fn read_into(&mut self, buf: &mut Vec<u8>) -> std::io::Result<()> {
        use std::os::unix::fs::FileExt;
        let one_record = self.one_record;
        buf.clear();
        self.with_file(|file| {
            loop {
                let (len, cap) = (buf.len(), buf.capacity().max(4096));
                buf.resize(cap, 0);
                let n = match file.read_at(&mut buf[len..], len as u64) {
                    Ok(n) => n,
                    Err(e) => {
                        buf.truncate(len);
                        return Err(e);
                    }
                };
                buf.truncate(len + n);
                // Otherwise only a read of 0 is the end: a seq_file of many records returns at
                // most a page of them per read (smaps gives 3,912 bytes to an 8 KiB buffer).
                if n == 0 || (one_record && buf.len() < buf.capacity()) {
                    return Ok(());
                }
                if buf.len() == buf.capacity() {
                    buf.reserve(cap);
                }
            }
        })
    }
}

/// The open file descriptors of a process: the size `stat` reports for `/proc/<pid>/fd` (one
/// syscall; Linux ≥ 6.2), or the directory's entries on kernels that report 0. `fd_dir` is the
/// directory kept open (an `fstat` walks no path), reopened after an error.
pub fn count_fds(fd_dir: &mut KeptFile) -> crate::Result<u64> {
    let size = fd_dir
        .with_file(|file| Ok(file.metadata()?.len()))
        .map_err(|source| crate::Error::Read { path: fd_dir.path.clone(), source })?;
    if size > 0 { Ok(size) } else { count_dir(&fd_dir.path) }
}

/// The number of entries of a directory (`/proc/<pid>/fd`, `/proc/<pid>/task`).
pub fn count_dir(path: impl AsRef<std::path::Path>) -> crate::Result<u64> {
    let path = path.as_ref();
    let entries = std::fs::read_dir(path)
        .map_err(|source| crate::Error::Read { path: path.to_owned(), source })?;
    Ok(entries.count() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Past the budget a file is opened per read and still read right; within it, kept. (The
    /// only test that sets the budget: others meanwhile read through unkept files, correctly.)
    #[test]
    fn past_the_kept_budget_files_are_read_and_closed_not_kept() {
        let path = std::env::temp_dir().join(format!("podtrace-budget-{}", std::process::id()));
        std::fs::write(&path, "1\n").unwrap();
        let mut file = KeptFile::new(&path);
        set_kept_budget(0);
        assert_eq!(file.parse(str::to_owned).unwrap(), "1\n");
        assert!(file.file.is_none(), "over the budget: closed after the read");
        std::fs::write(&path, "22\n").unwrap();
        assert_eq!(file.parse(str::to_owned).unwrap(), "22\n");
        set_kept_budget(usize::MAX);
        assert_eq!(file.parse(str::to_owned).unwrap(), "22\n");
        assert!(file.file.is_some(), "within the budget: kept");
        drop(file);
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn pid_stat_handles_comm_with_spaces_and_parens() {
        let text = "4242 (my (weird) proc) S 1 4242 4242 0 -1 4194560 1000 0 0 0 150 50 0 0 20 0 7 0 123456 10000000 500 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0\n";
        let s = parse_pid_stat(text).unwrap();
        assert_eq!(s.comm, "my (weird) proc");
        assert_eq!(s.cpu_ticks, 200);
        assert_eq!(s.threads, 7);
        assert_eq!(s.start_ticks, 123456);
        assert_eq!(parse_pid_stat("12 (x) S 1"), None);
    }

    #[test]
    fn statm_rss_is_the_second_field_in_pages() {
        assert_eq!(parse_statm_rss("2500 384 300 10 0 200 0\n", 4096), Some(384 * 4096));
        assert_eq!(parse_statm_rss("0 0 0 0 0 0 0\n", 4096), Some(0));
        assert_eq!(parse_statm_rss("", 4096), None);
    }

    #[test]
    fn statm_rss_matches_vm_rss_of_status_and_page_size_is_the_kernels() {
        assert_eq!(page_size() as usize, {
            // The page size the kernel reports in /proc/self/smaps ("KernelPageSize:   4 kB").
            let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
            let kb: usize = smaps
                .lines()
                .find_map(|l| l.strip_prefix("KernelPageSize:"))
                .unwrap()
                .trim()
                .trim_end_matches(" kB")
                .parse()
                .unwrap();
            kb * 1024
        });
        // VmRSS and statm's resident field describe the same pages; the process may touch a few
        // pages between the two reads.
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
        let vm_rss: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            * 1024;
        let rss = parse_statm_rss(&statm, page_size()).unwrap();
        assert!(rss.abs_diff(vm_rss) <= 64 * 4096, "statm {rss} vs VmRSS {vm_rss}");
    }

    #[test]
    fn fd_count_matches_the_entries_of_the_fd_directory() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let dir = std::path::PathBuf::from(format!("/proc/{}/fd", child.id()));
        let mut kept = KeptFile::new(&dir);
        let fds = count_fds(&mut kept).unwrap();
        assert_eq!(fds, count_dir(&dir).unwrap());
        assert!(fds >= 3, "stdin, stdout, stderr: {fds}");
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(count_fds(&mut kept).is_err(), "a gone process has no descriptors to count");
    }

    #[test]
    fn a_kept_file_is_regenerated_on_every_read_and_reports_its_process_gone() {
        let mut child = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        let mut stat = KeptFile::one_record(format!("/proc/{}/stat", child.id()));
        let first = stat.parse(parse_pid_stat).unwrap().unwrap();
        assert_eq!(first.comm, "sleep");
        // Our own counters move between reads of one open file.
        let mut mine = KeptFile::one_record("/proc/thread-self/stat");
        let before = mine.parse(parse_pid_stat).unwrap().unwrap().cpu_ticks;
        let spin = std::time::Instant::now();
        while spin.elapsed() < std::time::Duration::from_millis(60) {
            std::hint::black_box(spin.elapsed());
        }
        let after = mine.parse(parse_pid_stat).unwrap().unwrap().cpu_ticks;
        assert!(after > before, "the kept file was not regenerated ({before} → {after})");
        // Files larger than the first buffer are read whole.
        let big = std::env::temp_dir().join(format!("podtrace-kept-{}", std::process::id()));
        let content: String = (0..2000).map(|i| format!("line {i}\n")).collect();
        std::fs::write(&big, &content).unwrap();
        assert_eq!(KeptFile::new(&big).parse(str::to_owned).unwrap(), content);
        std::fs::remove_file(big).unwrap();
        let smaps = KeptFile::new("/proc/self/smaps").parse(str::to_owned).unwrap();
        assert!(smaps.len() > 8192 && smaps.ends_with('\n') && smaps.contains("[stack]"));
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(stat.parse(|_| ()).is_err(), "a gone process must not be read");
    }

    #[test]
    fn pid_io_reads_storage_bytes_not_rchar() {
        let text = "rchar: 999\nwchar: 888\nsyscr: 1\nsyscw: 1\nread_bytes: 4096\nwrite_bytes: 8192\ncancelled_write_bytes: 0\n";
        assert_eq!(parse_pid_io(text), IoBytes { read: 4096, write: 8192 });
    }

    #[test]
    fn net_dev_sums_interfaces_except_loopback() {
        let text = "Inter-|   Receive                                                |  Transmit\n face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    lo: 1000 10 0 0 0 0 0 0 1000 10 0 0 0 0 0 0\n  eth0: 2048 5 0 0 0 0 0 0 4096 6 0 0 0 0 0 0\n  eth1: 2 1 0 0 0 0 0 0 4 1 0 0 0 0 0 0\n";
        assert_eq!(parse_net_dev(text), (2050, 4100));
    }

    #[test]
    fn node_files_parse() {
        assert_eq!(parse_uptime("12345.67 23456.78\n"), Some(12345.67));
        assert_eq!(
            parse_mem_total("MemTotal:       24684000 kB\nMemFree: 1 kB\n"),
            Some(24684000 * 1024)
        );
        assert_eq!(
            parse_context_switches("cpu  1 2 3\nintr 5\nctxt 987654321\nbtime 1\n"),
            Some(987654321)
        );
        let tcp = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 0100007F:0BB8 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0\n   1: 0100007F:0BB8 0100007F:D2F0 01 00000000:00000000 00:00000000 00000000     0        0 2 1 0 20 4 30 10 -1\n";
        assert_eq!(count_socket_lines(tcp), 2);
    }
}
