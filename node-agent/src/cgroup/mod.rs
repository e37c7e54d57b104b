//! cgroups: which hierarchies the node mounts ([`CgroupLayout`]), where a kubelet puts a pod's
//! containers ([`kubelet`]), the parsers of the cgroup files the resource collector reads
//! ([`files`]), and the resolved directories of one target ([`Cgroup`]).
//!
//! ```text
//!  /proc/self/mountinfo ─► CgroupLayout { mode, v2 root, v1 controller roots }
//!  pod uid + qos + runtime id ─► kubelet::candidates ─► relative paths, best guess first
//!  CgroupLayout::resolve(relative path) ─► Cgroup { v2 dir + id (inode), memory, cpu, cpuacct, blkio }
//! ```
//!
//! A relative path (`/kubepods.slice/…/cri-containerd-<id>.scope`) names the same group in every
//! hierarchy: on a hybrid node the memory, cpu and blkio files come from the v1 controllers and the
//! cgroup id (for the eBPF filter map) from the v2 hierarchy.

pub mod files;
pub mod kubelet;

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

/// How the node mounts cgroups.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CgroupMode {
    /// cgroup v2 only.
    Unified,
    /// v1 controllers plus a v2 hierarchy (usually at /sys/fs/cgroup/unified).
    Hybrid,
    /// v1 only.
    Legacy,
}

impl CgroupMode {
    /// The name used in NodeTrace.status.kernel.cgroupMode.
    pub fn name(self) -> &'static str {
        match self {
            CgroupMode::Unified => "unified",
            CgroupMode::Hybrid => "hybrid",
            CgroupMode::Legacy => "legacy",
        }
    }
}

/// The cgroup hierarchies of the node: the v2 mount and the mount of each v1 controller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CgroupLayout {
    /// Unified, hybrid or legacy.
    pub mode: CgroupMode,
    /// Mount point of the v2 hierarchy, if any.
    pub v2: Option<PathBuf>,
    /// Mount point per v1 controller (`memory`, `cpu`, `cpuacct`, `blkio`, …).
    pub v1: BTreeMap<String, PathBuf>,
}

impl CgroupLayout {
    /// Reads `/proc/self/mountinfo`.
    pub fn detect() -> std::io::Result<Self> {
        Ok(Self::from_mountinfo(&std::fs::read_to_string("/proc/self/mountinfo")?))
    }

    /// The layout described by a `/proc/self/mountinfo` text.
    pub fn from_mountinfo(text: &str) -> Self {
        let mut v2 = None;
        let mut v1 = BTreeMap::new();
        for line in text.lines() {
            let Some((left, right)) = line.split_once(" - ") else { continue };
            let Some(mount_point) = left.split_whitespace().nth(4) else { continue };
            let mut right = right.split_whitespace();
            let (Some(fstype), _, Some(options)) = (right.next(), right.next(), right.next())
            else {
                continue;
            };
            match fstype {
                "cgroup2" => v2 = Some(PathBuf::from(mount_point)),
                "cgroup" => {
                    for option in options.split(',') {
                        if CONTROLLERS.contains(&option) {
                            v1.insert(option.to_owned(), PathBuf::from(mount_point));
                        }
                    }
                }
                _ => {}
            }
        }
        let mode = match (v2.is_some(), v1.is_empty()) {
            (true, true) => CgroupMode::Unified,
            (true, false) => CgroupMode::Hybrid,
            (false, _) => CgroupMode::Legacy,
        };
        Self { mode, v2, v1 }
    }

    /// The layout with every mount point under `/sys/fs/cgroup` moved to `root` (the host's
    /// cgroup tree mounted into the agent's container, e.g. `/host/sys/fs/cgroup`).
    pub fn rebased(mut self, root: &Path) -> Self {
        let base = Path::new("/sys/fs/cgroup");
        let move_path = |p: &mut PathBuf| {
            if let Ok(rest) = p.strip_prefix(base) {
                *p = root.join(rest);
            }
        };
        self.v2.iter_mut().for_each(move_path);
        self.v1.values_mut().for_each(move_path);
        self
    }

    /// A layout for tests: v2 and v1 controllers under `root` the way a hybrid node mounts them.
    pub fn hybrid_under(root: &Path) -> Self {
        let v1 = CONTROLLERS.iter().map(|c| (c.to_string(), root.join(c))).collect();
        Self { mode: CgroupMode::Hybrid, v2: Some(root.join("unified")), v1 }
    }

    /// The directories of the group at `relative` (e.g. `/kubepods.slice/…`) in each hierarchy
    /// where it exists, or `None` when it exists in none.
    pub fn resolve(&self, relative: &str) -> Option<Cgroup> {
        let rel = relative.trim_start_matches('/');
        let existing = |root: &PathBuf| {
            let dir = if rel.is_empty() { root.clone() } else { root.join(rel) };
            dir.is_dir().then_some(dir)
        };
        let controller = |name: &str| self.v1.get(name).and_then(existing);
        let v2 = self.v2.as_ref().and_then(existing);
        let cgroup = Cgroup {
            relative: format!("/{rel}"),
            v2_id: v2.as_deref().and_then(cgroup_id),
            v2,
            memory: controller("memory"),
            cpu: controller("cpu"),
            cpuacct: controller("cpuacct"),
            blkio: controller("blkio"),
        };
        cgroup.exists().then_some(cgroup)
    }

    /// The first of `candidates` that exists, with the candidates tried (for status messages).
    pub fn resolve_first(&self, candidates: &[String]) -> Option<Cgroup> {
        candidates.iter().find_map(|c| self.resolve(c))
    }

    /// Every group below `relative` in the hierarchy used to list groups (v2, else v1 memory),
    /// as relative paths, depth first. Used by standalone globs.
    pub fn walk(&self) -> Vec<String> {
        let Some(root) = self.v2.clone().or_else(|| self.v1.get("memory").cloned()) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        let mut stack = vec![root.clone()];
        while let Some(dir) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else { continue };
            for entry in entries.flatten() {
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    let path = entry.path();
                    if let Ok(rel) = path.strip_prefix(&root) {
                        out.push(format!("/{}", rel.display()));
                    }
                    stack.push(path);
                }
            }
        }
        out.sort();
        out
    }
}

/// The v1 controllers the agent reads.
const CONTROLLERS: [&str; 5] = ["memory", "cpu", "cpuacct", "blkio", "pids"];

/// One group's directories in every hierarchy where it exists.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Cgroup {
    /// The path relative to the hierarchy roots, starting with `/`.
    pub relative: String,
    /// The v2 directory.
    pub v2: Option<PathBuf>,
    /// The v2 cgroup id (the directory's inode), the key of the eBPF tracked-cgroup map.
    pub v2_id: Option<u64>,
    /// The v1 memory controller directory.
    pub memory: Option<PathBuf>,
    /// The v1 cpu controller directory.
    pub cpu: Option<PathBuf>,
    /// The v1 cpuacct controller directory.
    pub cpuacct: Option<PathBuf>,
    /// The v1 blkio controller directory.
    pub blkio: Option<PathBuf>,
}

impl Cgroup {
    /// Whether the group exists in any hierarchy.
    pub fn exists(&self) -> bool {
        self.v2.is_some()
            || self.memory.is_some()
            || self.cpu.is_some()
            || self.cpuacct.is_some()
            || self.blkio.is_some()
    }

    /// The directory whose `cgroup.procs` lists the group's processes: v2, else a v1 controller.
    pub fn procs_dir(&self) -> Option<&PathBuf> {
        [&self.v2, &self.memory, &self.cpu, &self.cpuacct, &self.blkio].into_iter().flatten().next()
    }

    /// The key of the group in the eBPF maps with the process filter: the v2 id, else the
    /// inode of the v1 directory its processes are listed from (unique among the node's
    /// groups, which all list from the same first controller, memory on every real node).
    pub fn process_key(&self) -> Option<u64> {
        self.v2_id.or_else(|| self.procs_dir().and_then(|d| cgroup_id(d)))
    }

    /// The pids of the group's processes (`cgroup.procs` of v2, else of a v1 controller).
    pub fn pids(&self) -> std::io::Result<Vec<u32>> {
        let dir =
            self.procs_dir().ok_or_else(|| std::io::Error::from(std::io::ErrorKind::NotFound))?;
        let text = std::fs::read_to_string(dir.join("cgroup.procs"))?;
        Ok(text.lines().filter_map(|l| l.trim().parse().ok()).collect())
    }
}

/// The cgroup v2 id of a v2 directory: its inode number, which is what
/// `bpf_get_current_cgroup_id()` returns (see kernel/cgroup/cgroup.c, `cgroup_id()` = kernfs id).
pub fn cgroup_id(dir: &Path) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(dir).ok().map(|m| m.ino())
}

/// The relative cgroup path of a process in the v2 hierarchy, else the v1 memory hierarchy,
/// from the text of `/proc/<pid>/cgroup`.
pub fn parse_proc_cgroup(text: &str) -> Option<String> {
    let mut memory = None;
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_id), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if controllers.is_empty() {
            return Some(path.to_owned());
        }
        if controllers.split(',').any(|c| c == "memory") {
            memory = Some(path.to_owned());
        }
    }
    memory
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
25 31 0:23 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
26 25 0:24 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw,nsdelegate
27 25 0:25 / /sys/fs/cgroup/systemd rw,nosuid shared:11 - cgroup cgroup rw,xattr,name=systemd
30 25 0:28 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid shared:14 - cgroup cgroup rw,cpu,cpuacct
31 25 0:29 / /sys/fs/cgroup/memory rw,nosuid shared:15 - cgroup cgroup rw,memory
32 25 0:30 / /sys/fs/cgroup/blkio rw,nosuid shared:16 - cgroup cgroup rw,blkio
";

    #[test]
    fn hybrid_mountinfo_gives_v2_root_and_v1_controllers() {
        let l = CgroupLayout::from_mountinfo(HYBRID);
        assert_eq!(l.mode, CgroupMode::Hybrid);
        assert_eq!(l.v2.as_deref(), Some(Path::new("/sys/fs/cgroup/unified")));
        assert_eq!(l.v1["cpu"], Path::new("/sys/fs/cgroup/cpu,cpuacct"));
        assert_eq!(l.v1["cpuacct"], Path::new("/sys/fs/cgroup/cpu,cpuacct"));
        assert_eq!(l.v1["memory"], Path::new("/sys/fs/cgroup/memory"));
        assert!(!l.v1.contains_key("name=systemd"));
        let moved = l.rebased(Path::new("/host/sys/fs/cgroup"));
        assert_eq!(moved.v1["memory"], Path::new("/host/sys/fs/cgroup/memory"));
        assert_eq!(moved.v2.as_deref(), Some(Path::new("/host/sys/fs/cgroup/unified")));
    }

    #[test]
    fn unified_and_legacy_mountinfo_are_told_apart() {
        let unified = "30 24 0:26 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot\n";
        assert_eq!(CgroupLayout::from_mountinfo(unified).mode, CgroupMode::Unified);
        let legacy = "31 25 0:29 / /sys/fs/cgroup/memory rw shared:15 - cgroup cgroup rw,memory\n";
        let l = CgroupLayout::from_mountinfo(legacy);
        assert_eq!((l.mode, l.v2), (CgroupMode::Legacy, None));
    }

    #[test]
    fn proc_cgroup_prefers_v2_then_v1_memory() {
        let hybrid = "12:memory:/kubepods/pod1/abc\n1:name=systemd:/x\n0::/kubepods/pod1/abc\n";
        assert_eq!(parse_proc_cgroup(hybrid).as_deref(), Some("/kubepods/pod1/abc"));
        let legacy = "4:memory:/process_api/a2\n2:cpuacct:/\n";
        assert_eq!(parse_proc_cgroup(legacy).as_deref(), Some("/process_api/a2"));
        assert_eq!(parse_proc_cgroup("garbage"), None);
    }

    #[test]
    fn resolve_finds_a_group_in_each_hierarchy_and_its_v2_inode() {
        let root = std::env::temp_dir().join(format!("podtrace-layout-{}", std::process::id()));
        let layout = CgroupLayout::hybrid_under(&root);
        std::fs::create_dir_all(root.join("unified/a/b")).unwrap();
        std::fs::create_dir_all(root.join("memory/a/b")).unwrap();
        let g = layout.resolve("/a/b").unwrap();
        assert_eq!(g.memory, Some(root.join("memory/a/b")));
        assert_eq!(g.cpu, None);
        use std::os::unix::fs::MetadataExt;
        assert_eq!(g.v2_id, Some(std::fs::metadata(root.join("unified/a/b")).unwrap().ino()));
        assert!(layout.resolve("/a/missing").is_none());
        assert!(layout.walk().contains(&"/a/b".to_owned()));
        std::fs::remove_dir_all(root).unwrap();
    }
}
