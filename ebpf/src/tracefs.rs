//! tracefs, which the classic tracepoint rungs need (aya reads a tracepoint's id from
//! `<tracefs>/events/<category>/<name>/id`).
//!
//! Why it matters: without tracefs the fs probes fall back to `sys_enter`/`sys_exit`, which run a
//! program for *every* syscall of the node (and put every task on the syscall-tracing slow
//! path); the per-syscall tracepoints (`syscalls/sys_enter_write`, …) run one only for the
//! eight file syscalls. Many nodes mount tracefs at boot (systemd does), some do not, so the
//! agent mounts it when it is missing, in a mount namespace of its own so that the node's
//! mounts are untouched:
//!
//! ```text
//!  tracefs_path()             /sys/kernel/tracing or /sys/kernel/debug/tracing, as aya looks
//!  private_mount_namespace()  unshare(CLONE_NEWNS) + "/" recursively a slave: the node's mounts
//!                             still propagate in, nothing propagates out (before any thread)
//!  mount_tracefs()            mount -t tracefs tracefs /sys/kernel/tracing
//! ```
//! Both need CAP_SYS_ADMIN. aya remembers the first answer to "where is tracefs" for the life of
//! the process, so this must happen before the first probe is loaded.

use std::ffi::CString;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Where tracefs is mounted by default, and where [`mount_tracefs`] mounts it.
pub const TRACEFS: &str = "/sys/kernel/tracing";

/// Where tracefs is mounted, looked up as aya does (a non-empty `/sys/kernel/tracing`, else
/// `/sys/kernel/debug/tracing`); `None` when it is not.
pub fn tracefs_path() -> Option<PathBuf> {
    [Path::new(TRACEFS), Path::new("/sys/kernel/debug/tracing")]
        .into_iter()
        .find(|p| p.read_dir().is_ok_and(|mut entries| entries.next().is_some()))
        .map(Path::to_path_buf)
}

/// Moves this process into a mount namespace of its own, in which mounts can be made without
/// touching the node's: `/` becomes a recursive slave, so mounts the node makes later still
/// appear here and none made here appear there.
///
/// `unshare(CLONE_NEWNS)` moves only the calling thread (kernel/fork.c, `ksys_unshare`; threads
/// it starts afterwards inherit its namespace): call it from the main thread before the others
/// start. A thread already running keeps the node's view; in the agent that is only jemalloc's
/// background purger, which reads no file.
#[allow(unsafe_code, reason = "unshare(2) and mount(2) have no safe wrapper in std or aya")]
pub fn private_mount_namespace() -> Result<()> {
    // SAFETY: plain syscalls with valid (null or NUL-terminated) arguments.
    if unsafe { libc::unshare(libc::CLONE_NEWNS) } != 0 {
        return Err(Error::Tracefs { step: "unshare(CLONE_NEWNS)", source: last_error() });
    }
    let root = CString::new("/").expect("no NUL");
    let flags = libc::MS_REC | libc::MS_SLAVE;
    // SAFETY: as above; a propagation change takes no source, type or data.
    let rc = unsafe {
        libc::mount(std::ptr::null(), root.as_ptr(), std::ptr::null(), flags, std::ptr::null())
    };
    if rc != 0 {
        return Err(Error::Tracefs { step: "mount --make-rslave /", source: last_error() });
    }
    Ok(())
}

/// Mounts tracefs at [`TRACEFS`] in this process's mount namespace and returns the path.
#[allow(unsafe_code, reason = "mount(2) has no safe wrapper in std or aya")]
pub fn mount_tracefs() -> Result<PathBuf> {
    let c = |s: &str| CString::new(s).expect("no NUL");
    let (source, target, fstype) = (c("tracefs"), c(TRACEFS), c("tracefs"));
    let flags = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
    // SAFETY: NUL-terminated strings that outlive the call; tracefs takes no data.
    let rc = unsafe {
        libc::mount(source.as_ptr(), target.as_ptr(), fstype.as_ptr(), flags, std::ptr::null())
    };
    if rc != 0 {
        return Err(Error::Tracefs { step: "mount -t tracefs", source: last_error() });
    }
    Ok(PathBuf::from(TRACEFS))
}

fn last_error() -> std::io::Error {
    std::io::Error::last_os_error()
}
