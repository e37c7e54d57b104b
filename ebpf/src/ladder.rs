//! The probe families and their attach ladders: for each family, the rungs to try, best
//! first, each naming the programs of the embedded object it needs, where they attach and which
//! of the family's probes it serves.
//!
//! ```text
//! family       probes                       rungs (best first)
//! packet       networkBytes, dns, tcpRtt    cgroup_skb (egress + ingress, at each tracked cgroup)
//!                                           > tp_btf > raw_tp > tracepoint (sock_send_length +
//!                                             sock_recv_length: networkBytes and tcpRtt, no dns)
//! tcp_connect  tcpConnect                   tp_btf > raw_tp > tracepoint   (inet_sock_set_state)
//! fs           fsLatency, fsBytes           tracepoint syscalls/* > tp_btf > raw_tp (sys_enter/exit)
//! cpu_block    cpuBlock                     tp_btf > raw_tp > tracepoint   (sched_switch)
//! follow       (process filter only)        tp_btf > raw_tp (sched_process_fork + sched_process_exit)
//!                                           > tracepoint (task_newtask + sched_process_exit)
//! ```
//!
//! A rung is taken only if *all* its programs load and attach; otherwise what it loaded is
//! unloaded and the next rung is tried. The reason of each failed rung is kept for the
//! `Unavailable` status. A probe the rung taken does not serve is `Unavailable` with those
//! reasons. kprobes are not offered: every family has a tracepoint.

use aya::programs::{
    BtfTracePoint, CgroupAttachMode, CgroupSkb, CgroupSkbAttachType, Program, ProgramError,
    RawTracePoint, TracePoint,
};
use aya::{Btf, Ebpf};
use std::fs::File;
use std::path::Path;

use crate::probe::{AttachMethod, Probe};

/// The family of the packet probes (`packet.bpf.c`), whose cgroup_skb programs are attached per
/// tracked cgroup and whose `pkt_targets` map holds the probes and byte counters of each.
pub(crate) const PACKET: &str = "packet";

/// Where one program attaches.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Hook {
    /// BTF tracepoint.
    TpBtf(&'static str),
    /// Raw tracepoint.
    Raw(&'static str),
    /// Classic tracepoint (category, name); needs tracefs.
    Tracepoint(&'static str, &'static str),
    /// cgroup_skb at the configured cgroup v2 root.
    CgroupSkb(CgroupSkbAttachType),
}

/// One rung: an attach method, its programs and the probes it serves.
#[derive(Debug)]
pub(crate) struct Rung {
    pub method: AttachMethod,
    pub programs: &'static [(&'static str, Hook)],
    /// The family's probes this rung measures; `None`: all of them.
    pub serves: Option<&'static [Probe]>,
}

impl Rung {
    /// A rung that serves every probe of its family.
    const fn all(method: AttachMethod, programs: &'static [(&'static str, Hook)]) -> Rung {
        Rung { method, programs, serves: None }
    }

    /// Whether the rung measures `probe` (of its family).
    pub(crate) fn serves(&self, probe: Probe) -> bool {
        self.serves.is_none_or(|s| s.contains(&probe))
    }
}

/// One probe family: an embedded object, the probes it serves and its ladder.
#[derive(Debug)]
pub(crate) struct Family {
    pub name: &'static str,
    pub object: &'static [u8],
    /// The same programs filtering by process (`PT_FILTER_TGID`), for `Filter::Process`.
    pub object_by_tgid: &'static [u8],
    pub probes: &'static [Probe],
    pub rungs: &'static [Rung],
}

macro_rules! object {
    ($name:literal) => {
        aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/", $name, ".bpf.o"))
    };
}

use AttachMethod as M;
use Hook::*;

macro_rules! fs_tracepoints {
    ($($sc:literal),*) => {
        &[$(
            (concat!("pt_fs_enter_", $sc), Tracepoint("syscalls", concat!("sys_enter_", $sc))),
            (concat!("pt_fs_exit_", $sc), Tracepoint("syscalls", concat!("sys_exit_", $sc))),
        )*]
    };
}

/// The socket-call programs of the packet family's lower rungs (networkBytes and tcpRtt).
const SOCKET_CALL_PROBES: &[Probe] = &[Probe::NetworkBytes, Probe::TcpRtt];

/// Every family, in a stable order.
pub(crate) static FAMILIES: &[Family] = &[
    Family {
        name: PACKET,
        object: object!("packet"),
        object_by_tgid: object!("packet.tgid"),
        probes: &[Probe::NetworkBytes, Probe::Dns, Probe::TcpRtt],
        rungs: &[
            // Attached at each tracked cgroup by `Probes::track` (see packet_links.rs); loading
            // the rung checks that cgroup_skb can attach at all, at the cgroup v2 root.
            Rung::all(
                M::CgroupSkb,
                &[
                    ("pt_pkt_egress", CgroupSkb(CgroupSkbAttachType::Egress)),
                    ("pt_pkt_ingress", CgroupSkb(CgroupSkbAttachType::Ingress)),
                ],
            ),
            // Without cgroup_skb (no CAP_NET_ADMIN, no cgroup v2, the process filter): the
            // socket calls, in the caller's context: payload bytes, RTT per call, no dns.
            Rung {
                method: M::TpBtf,
                programs: &[
                    ("pt_sock_send_btf", TpBtf("sock_send_length")),
                    ("pt_sock_recv_btf", TpBtf("sock_recv_length")),
                ],
                serves: Some(SOCKET_CALL_PROBES),
            },
            Rung {
                method: M::RawTracepoint,
                programs: &[
                    ("pt_sock_send_raw", Raw("sock_send_length")),
                    ("pt_sock_recv_raw", Raw("sock_recv_length")),
                ],
                serves: Some(SOCKET_CALL_PROBES),
            },
            Rung {
                method: M::Tracepoint,
                programs: &[
                    ("pt_sock_send_tp", Tracepoint("sock", "sock_send_length")),
                    ("pt_sock_recv_tp", Tracepoint("sock", "sock_recv_length")),
                ],
                serves: Some(SOCKET_CALL_PROBES),
            },
        ],
    },
    Family {
        name: "tcp_connect",
        object: object!("tcp_connect"),
        object_by_tgid: object!("tcp_connect.tgid"),
        probes: &[Probe::TcpConnect],
        rungs: &[
            Rung::all(M::TpBtf, &[("pt_connect_btf", TpBtf("inet_sock_set_state"))]),
            Rung::all(M::RawTracepoint, &[("pt_connect_raw", Raw("inet_sock_set_state"))]),
            Rung::all(
                M::Tracepoint,
                &[("pt_connect_tp", Tracepoint("sock", "inet_sock_set_state"))],
            ),
        ],
    },
    Family {
        name: "fs",
        object: object!("fs"),
        object_by_tgid: object!("fs.tgid"),
        probes: &[Probe::FsLatency, Probe::FsBytes],
        rungs: &[
            Rung::all(
                M::Tracepoint,
                fs_tracepoints!(
                    "read",
                    "write",
                    "pread64",
                    "pwrite64",
                    "readv",
                    "writev",
                    "fsync",
                    "fdatasync"
                ),
            ),
            Rung::all(
                M::TpBtf,
                &[("pt_fs_enter_btf", TpBtf("sys_enter")), ("pt_fs_exit_btf", TpBtf("sys_exit"))],
            ),
            Rung::all(
                M::RawTracepoint,
                &[("pt_fs_enter_raw", Raw("sys_enter")), ("pt_fs_exit_raw", Raw("sys_exit"))],
            ),
        ],
    },
    Family {
        name: "cpu_block",
        object: object!("cpu_block"),
        object_by_tgid: object!("cpu_block.tgid"),
        probes: &[Probe::CpuBlock],
        rungs: &[
            Rung::all(
                M::TpBtf,
                &[
                    ("pt_switch_btf", TpBtf("sched_switch")),
                    ("pt_block_rename_btf", TpBtf("task_rename")),
                ],
            ),
            Rung::all(M::RawTracepoint, &[("pt_switch_raw", Raw("sched_switch"))]),
            Rung::all(M::Tracepoint, &[("pt_switch_tp", Tracepoint("sched", "sched_switch"))]),
        ],
    },
];

/// The process filter's fork and exit programs (`follow.bpf.c`): not a probe family (no probe,
/// no series), loaded once with [`crate::Filter::Process`] so that a child of a tracked process
/// is tracked from its fork instead of from the agent's next listing. Both objects are the same
/// (it exists by tgid only). Every rung needs both programs: a fork hook without the exit hook
/// would leave the entries of exited children behind.
pub(crate) static FOLLOW: Family = Family {
    name: "follow",
    object: object!("follow"),
    object_by_tgid: object!("follow"),
    probes: &[],
    rungs: &[
        Rung::all(
            M::TpBtf,
            &[
                ("pt_follow_fork_btf", TpBtf("sched_process_fork")),
                ("pt_follow_exit_btf", TpBtf("sched_process_exit")),
            ],
        ),
        Rung::all(
            M::RawTracepoint,
            &[
                ("pt_follow_fork_raw", Raw("sched_process_fork")),
                ("pt_follow_exit_raw", Raw("sched_process_exit")),
            ],
        ),
        Rung::all(
            M::Tracepoint,
            &[
                ("pt_follow_fork_tp", Tracepoint("task", "task_newtask")),
                ("pt_follow_exit_tp", Tracepoint("sched", "sched_process_exit")),
            ],
        ),
    ],
};

/// The family that serves a probe.
pub(crate) fn family_of(probe: Probe) -> &'static Family {
    FAMILIES.iter().find(|f| f.probes.contains(&probe)).expect("every Probe has a family")
}

/// What the kernel needs to attach: BTF for tp_btf, the cgroup for cgroup_skb.
pub(crate) struct AttachEnv<'a> {
    pub btf: Option<&'a Btf>,
    /// The cgroup v2 root, where a cgroup_skb rung checks that its programs can attach (then
    /// detaches them: they are attached at each tracked cgroup, packet_links.rs).
    pub cgroup_root: &'a Path,
}

/// Loads and attaches every program of `rung`; on the first failure unloads what it loaded
/// and returns the reason (errno name and message).
pub(crate) fn try_rung(ebpf: &mut Ebpf, rung: &Rung, env: &AttachEnv<'_>) -> Result<(), String> {
    for (i, (name, hook)) in rung.programs.iter().enumerate() {
        if let Err(e) = load_and_attach(ebpf, name, *hook, env) {
            for (done, _) in &rung.programs[..=i] {
                unload(ebpf, done);
            }
            return Err(format!("{name}: {e}"));
        }
    }
    Ok(())
}

fn load_and_attach(
    ebpf: &mut Ebpf,
    name: &str,
    hook: Hook,
    env: &AttachEnv<'_>,
) -> Result<(), String> {
    let program =
        ebpf.program_mut(name).ok_or_else(|| format!("program {name} missing from the object"))?;
    let need_btf = || env.btf.ok_or_else(|| "no kernel BTF (/sys/kernel/btf/vmlinux)".to_string());
    match hook {
        TpBtf(tp) => {
            let p: &mut BtfTracePoint = program.try_into().map_err(describe)?;
            p.load(tp, need_btf()?).map_err(describe)?;
            p.attach().map_err(describe)?;
        }
        Raw(tp) => {
            let p: &mut RawTracePoint = program.try_into().map_err(describe)?;
            p.load().map_err(describe)?;
            p.attach(tp).map_err(describe)?;
        }
        Tracepoint(category, tp) => {
            let p: &mut TracePoint = program.try_into().map_err(describe)?;
            p.load().map_err(describe)?;
            p.attach(category, tp).map_err(describe)?;
        }
        CgroupSkb(direction) => {
            let p: &mut CgroupSkb = program.try_into().map_err(describe)?;
            p.load().map_err(describe)?;
            let cgroup = File::open(env.cgroup_root)
                .map_err(|e| format!("{}: {}", env.cgroup_root.display(), errno_text(&e)))?;
            // aya uses bpf_link_create on kernels >= 5.7, and the kernel rejects any flag on a
            // cgroup link (EINVAL): links always coexist with other programs as if
            // BPF_F_ALLOW_MULTI were set (kernel/bpf/cgroup.c, cgroup_bpf_link_attach).
            let link = p.attach(cgroup, direction, CgroupAttachMode::Single).map_err(describe)?;
            p.detach(link).map_err(describe)?;
        }
    }
    Ok(())
}

/// Unloads a program (detaching its links); a program that was never loaded is left alone.
pub(crate) fn unload(ebpf: &mut Ebpf, name: &str) {
    let Some(program) = ebpf.program_mut(name) else { return };
    let result = match program {
        Program::BtfTracePoint(p) => p.unload(),
        Program::RawTracePoint(p) => p.unload(),
        Program::TracePoint(p) => p.unload(),
        Program::CgroupSkb(p) => p.unload(),
        _ => Ok(()),
    };
    if let Err(e) = result {
        tracing::debug!(program = name, error = %e, "unload");
    }
}

/// The kernel's reason in a short form: "EPERM (Operation not permitted)", plus the last line
/// of the verifier log when there is one.
pub(crate) fn describe(e: ProgramError) -> String {
    let mut reason = None;
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
    while let Some(err) = source {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            reason = Some(errno_text(io));
            break;
        }
        source = err.source();
    }
    if let ProgramError::LoadError { io_error, verifier_log } = &e {
        let log = verifier_log.to_string();
        let last = log.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("");
        tracing::debug!(verifier_log = %log, "program rejected");
        return match last.trim() {
            "" => errno_text(io_error),
            last => format!("{} (verifier: {last})", errno_text(io_error)),
        };
    }
    reason.unwrap_or_else(|| e.to_string())
}

/// "EPERM (Operation not permitted)" for an OS error, the message otherwise.
pub(crate) fn errno_text(e: &std::io::Error) -> String {
    let Some(code) = e.raw_os_error() else { return e.to_string() };
    let name = match code {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::ESRCH => "ESRCH",
        libc::EBADF => "EBADF",
        libc::ENOMEM => "ENOMEM",
        libc::EACCES => "EACCES",
        libc::EFAULT => "EFAULT",
        libc::EBUSY => "EBUSY",
        libc::EEXIST => "EEXIST",
        libc::ENODEV => "ENODEV",
        libc::EINVAL => "EINVAL",
        libc::E2BIG => "E2BIG",
        libc::ENOSPC => "ENOSPC",
        libc::ENOSYS => "ENOSYS",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        524 => "ENOTSUPP",
        _ => return e.to_string(),
    };
    let msg = e.to_string();
    let msg = msg.split(" (os error").next().unwrap_or(&msg);
    format!("{name} ({msg})")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_probe_has_exactly_one_family_with_a_ladder() {
        for probe in Probe::ALL {
            let n = FAMILIES.iter().filter(|f| f.probes.contains(&probe)).count();
            assert_eq!(n, 1, "{probe:?}");
            assert!(!family_of(probe).rungs.is_empty());
        }
    }

    #[test]
    fn every_program_of_every_rung_is_in_its_object() {
        // Program names are ELF symbols of the object: a rung naming a program that the C file
        // does not define (a typo, a renamed function) fails here rather than on a node.
        for family in FAMILIES.iter().chain([&FOLLOW]) {
            for rung in family.rungs {
                for (name, _) in rung.programs {
                    let symbol = format!("\0{name}\0");
                    for object in [family.object, family.object_by_tgid] {
                        let found = object.windows(symbol.len()).any(|w| w == symbol.as_bytes());
                        assert!(found, "{}: {name} not in the object", family.name);
                    }
                }
            }
        }
    }

    #[test]
    fn errno_text_names_the_error() {
        let e = std::io::Error::from_raw_os_error(libc::EPERM);
        assert!(errno_text(&e).starts_with("EPERM ("), "{}", errno_text(&e));
        let other = std::io::Error::other("tracefs not found");
        assert_eq!(errno_text(&other), "tracefs not found");
    }
}
