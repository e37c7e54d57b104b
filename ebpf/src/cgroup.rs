//! cgroup v2 ids.

use crate::error::{Error, Result};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// The cgroup v2 id of a cgroup directory: its inode number, which is what
/// `bpf_get_current_cgroup_id()` and `bpf_skb_cgroup_id()` return in the kernel.
pub fn cgroup_id(path: impl AsRef<Path>) -> Result<u64> {
    let path = path.as_ref();
    std::fs::metadata(path)
        .map(|m| m.ino())
        .map_err(|source| Error::Cgroup { path: path.to_path_buf(), source })
}
