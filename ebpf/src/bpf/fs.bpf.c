// SPDX-License-Identifier: GPL-2.0
/*
 * File-system latency and bytes (podtrace_fs_latency_seconds_*, podtrace_filesystem_bytes_total):
 * read/write/pread64/pwrite64/readv/writev/fsync/fdatasync on regular files only.
 *
 * At syscall entry the fd is resolved through task->files->fdt->fd[fd]->f_inode->i_mode and
 * only S_IFREG files are remembered (pipes, sockets, ttys never count). At exit the latency goes
 * to the histogram of its type (read, write, fsync; fdatasync counts as fsync) and ret > 0 bytes
 * to the counter of its operation.
 *
 * Rungs: the per-syscall tracepoints (they fire only for these eight syscalls; they need
 * tracefs mounted), then tp_btf and raw_tracepoint on sys_enter/sys_exit (every syscall, one
 * compare for the others).
 */
#include "podtrace_common.h"

#define S_IFMT 00170000
#define S_IFREG 0100000

/* x86-64 syscall numbers (arch/x86/entry/syscalls/syscall_64.tbl). */
#define NR_read 0
#define NR_write 1
#define NR_pread64 17
#define NR_pwrite64 18
#define NR_readv 19
#define NR_writev 20
#define NR_fsync 74
#define NR_fdatasync 75

struct pt_fs_start {
	__u64 ts;
	__u64 cgroup_id;
	__u8 op;
	__u8 probes; /* the cgroup's PT_PROBE_* bits at entry: the exit needs no second lookup */
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 8192);
	__type(key, __u32); /* thread id */
	__type(value, struct pt_fs_start);
} fs_start SEC(".maps");

#define PT_FS_PROBES ((1U << PT_PROBE_FS_LATENCY) | (1U << PT_PROBE_FS_BYTES))

/* Whether fd is a regular file of the current task. `btf`: the program may dereference kernel
 * pointers directly (tp_btf; each hop is a plain load) instead of bpf_probe_read_kernel (raw and
 * classic tracepoints). It is a constant after inlining: one of the two paths is compiled. */
static __always_inline bool pt_is_regular(unsigned long fd, bool btf)
{
	struct fdtable *fdt;
	struct file **fds;
	if (btf) {
		struct task_struct *task = bpf_get_current_task_btf();
		fdt = task->files->fdt;
		if (!fdt || fd >= fdt->max_fds)
			return false;
		fds = fdt->fd;
	} else {
		struct task_struct *task = (struct task_struct *)bpf_get_current_task();
		fdt = BPF_CORE_READ(task, files, fdt);
		if (!fdt || fd >= BPF_CORE_READ(fdt, max_fds))
			return false;
		fds = BPF_CORE_READ(fdt, fd);
	}
	struct file *f = NULL;
	if (bpf_probe_read_kernel(&f, sizeof(f), &fds[fd]) || !f)
		return false;
	umode_t mode = BPF_CORE_READ(f, f_inode, i_mode);
	return (mode & S_IFMT) == S_IFREG;
}

static __always_inline void pt_fs_enter(unsigned long fd, __u8 op, bool btf)
{
	__u64 cg = pt_current_cgroup();
	struct pt_target *t = bpf_map_lookup_elem(&tracked, &cg);
	if (!t || !(t->probes & PT_FS_PROBES))
		return;
	if (!pt_is_regular(fd, btf))
		return;
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct pt_fs_start s = {
		.ts = bpf_ktime_get_ns(), .cgroup_id = cg, .op = op, .probes = t->probes,
	};
	if (bpf_map_update_elem(&fs_start, &tid, &s, BPF_ANY))
		pt_count_error(PT_ERR_INFLIGHT_FULL);
}

static __always_inline void pt_fs_exit(long ret)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct pt_fs_start *s = bpf_map_lookup_elem(&fs_start, &tid);
	if (!s)
		return;
	__u64 now = bpf_ktime_get_ns();
	__u64 ns = now - s->ts;
	__u64 cg = s->cgroup_id;
	__u8 op = s->op, probes = s->probes;
	bpf_map_delete_elem(&fs_start, &tid);
	if (ret < 0)
		return;
	char comm[PT_COMM_LEN];
	bpf_get_current_comm(comm, sizeof(comm));
	if (probes & (1U << PT_PROBE_FS_LATENCY))
		pt_hist_add(cg, comm, PT_PROBE_FS_LATENCY, op, ns, now);
	if ((probes & (1U << PT_PROBE_FS_BYTES)) && op != PT_OP_FSYNC && ret > 0)
		pt_counter_add(cg, comm, PT_PROBE_FS_BYTES, op, (__u64)ret);
}

static __always_inline int pt_fs_op(long nr)
{
	switch (nr) {
	case NR_read: case NR_pread64: case NR_readv:
		return PT_OP_READ;
	case NR_write: case NR_pwrite64: case NR_writev:
		return PT_OP_WRITE;
	case NR_fsync: case NR_fdatasync:
		return PT_OP_FSYNC;
	}
	return -1;
}

/* --- per-syscall tracepoints --- */
#define PT_FS_TP(name, op)                                      \
	SEC("tracepoint/syscalls/sys_enter_" #name)             \
	int pt_fs_enter_##name(struct pt_syscall_enter *ctx)    \
	{                                                       \
		pt_fs_enter(ctx->args[0], op, false);                  \
		return 0;                                       \
	}                                                       \
	SEC("tracepoint/syscalls/sys_exit_" #name)              \
	int pt_fs_exit_##name(struct pt_syscall_exit *ctx)      \
	{                                                       \
		pt_fs_exit(ctx->ret);                           \
		return 0;                                       \
	}

PT_FS_TP(read, PT_OP_READ)
PT_FS_TP(write, PT_OP_WRITE)
PT_FS_TP(pread64, PT_OP_READ)
PT_FS_TP(pwrite64, PT_OP_WRITE)
PT_FS_TP(readv, PT_OP_READ)
PT_FS_TP(writev, PT_OP_WRITE)
PT_FS_TP(fsync, PT_OP_FSYNC)
PT_FS_TP(fdatasync, PT_OP_FSYNC)

/* --- generic sys_enter/sys_exit: (struct pt_regs *regs, long id) and (regs, long ret). They run
 * for every syscall of the machine: the syscall number is checked before anything else. --- */
SEC("tp_btf/sys_enter")
int BPF_PROG(pt_fs_enter_btf, struct pt_regs *regs, long id)
{
	int op = pt_fs_op(id);
	if (op >= 0)
		pt_fs_enter(regs->di, (__u8)op, true);
	return 0;
}

SEC("tp_btf/sys_exit")
int BPF_PROG(pt_fs_exit_btf, struct pt_regs *regs, long ret)
{
	if (pt_fs_op(regs->orig_ax) >= 0) /* a plain load: regs is a BTF pointer */
		pt_fs_exit(ret);
	return 0;
}

SEC("raw_tracepoint/sys_enter")
int pt_fs_enter_raw(struct bpf_raw_tracepoint_args *ctx)
{
	int op = pt_fs_op((long)ctx->args[1]);
	if (op >= 0)
		pt_fs_enter(BPF_CORE_READ((struct pt_regs *)ctx->args[0], di), (__u8)op, false);
	return 0;
}

SEC("raw_tracepoint/sys_exit")
int pt_fs_exit_raw(struct bpf_raw_tracepoint_args *ctx)
{
	if (pt_fs_op(BPF_CORE_READ((struct pt_regs *)ctx->args[0], orig_ax)) >= 0)
		pt_fs_exit((long)ctx->args[1]);
	return 0;
}
