// SPDX-License-Identifier: GPL-2.0
/*
 * The process filter follows forks (loaded with Filter::Process only, not a probe family).
 *
 * The agent lists each target's processes once per interval; a process started and exited
 * between two listings would never be measured. Here the kernel does it at the moment it
 * happens, in the shared `tracked_tgids` (podtrace_tgids.h):
 *
 *   fork (in the parent's context, before the child first runs):
 *       new process (not a thread) of a tracked tgid? -> tracked_tgids[child] = parent's key
 *                                                        followed[child] = parent's key
 *   exit of a thread whose thread group is now dead:
 *       tracked tgid? -> delete tracked_tgids[tgid] and followed[tgid]
 *
 * `followed` holds the children the kernel added and the agent has not listed yet: it is what
 * the agent reads at each listing to drop the ones no longer in their target (moved away) and
 * at untrack to drop a target's children, without walking all of `tracked_tgids`.
 *
 * The parent is the task that called fork/clone (current), which is also the one whose cgroup
 * the child inherits; with CLONE_PARENT the child's real parent differs, the cgroup does not.
 * An entry that already exists for the child's tgid (the agent listed a process that had died
 * with that pid) is left as it is (BPF_NOEXIST): the agent's next listing corrects it. A child
 * that does not fit is counted as PT_ERR_PROCS_FULL, never silent.
 *
 * Rungs: tp_btf and raw_tracepoint on sched_process_fork(parent, child) and
 * sched_process_exit(task, ...); the classic tracepoints task_newtask (its clone_flags tell a
 * thread from a process; sched_process_fork's format has the child's pid but not its tgid) and
 * sched_process_exit, which both run in the forking/exiting task's context.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>
#include "podtrace_abi.h"
#include "podtrace_tgids.h"
#include "podtrace_errors.h"

char LICENSE[] SEC("license") = "GPL";

#define PT_EEXIST 17
#define PT_CLONE_THREAD 0x00010000

/* The children added here that the agent has not listed yet (tgid -> key); sized by the
 * loader like tracked_tgids. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 32768);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u32);
	__type(value, __u64);
} followed SEC(".maps");


/* A new process `child` (its tgid) of the current task. */
static __always_inline void pt_follow_fork(__u32 child)
{
	__u32 parent = bpf_get_current_pid_tgid() >> 32;
	__u64 *key = bpf_map_lookup_elem(&tracked_tgids, &parent);
	if (!key)
		return;
	__u64 k = *key;
	long err = bpf_map_update_elem(&tracked_tgids, &child, &k, BPF_NOEXIST);
	if (err == -PT_EEXIST)
		return;
	if (err) {
		pt_count_error(PT_ERR_PROCS_FULL);
		return;
	}
	/* After tracked_tgids: whatever the agent finds in `followed` is in tracked_tgids too, so
	 * that its cleanup can never miss an entry. A child that cannot be recorded here is taken
	 * back out (the agent could never remove it). */
	if (bpf_map_update_elem(&followed, &child, &k, BPF_ANY)) {
		bpf_map_delete_elem(&tracked_tgids, &child);
		pt_count_error(PT_ERR_PROCS_FULL);
	}
}

/* The exit of a thread of `tgid`; `live`: the threads of its group still running (the exiting
 * one has been subtracted before the tracepoint). */
static __always_inline void pt_follow_exit(__u32 tgid, int live)
{
	if (live != 0)
		return;
	if (!bpf_map_lookup_elem(&tracked_tgids, &tgid))
		return; /* the common case on a node: one lookup */
	bpf_map_delete_elem(&tracked_tgids, &tgid);
	bpf_map_delete_elem(&followed, &tgid);
}

SEC("tp_btf/sched_process_fork")
int BPF_PROG(pt_follow_fork_btf, struct task_struct *parent, struct task_struct *child)
{
	if (child->pid == child->tgid) /* threads share the tgid: already covered */
		pt_follow_fork(child->tgid);
	return 0;
}

SEC("tp_btf/sched_process_exit")
int BPF_PROG(pt_follow_exit_btf, struct task_struct *task)
{
	pt_follow_exit(task->tgid, task->signal->live.counter);
	return 0;
}

SEC("raw_tracepoint/sched_process_fork")
int pt_follow_fork_raw(struct bpf_raw_tracepoint_args *ctx)
{
	struct task_struct *child = (struct task_struct *)ctx->args[1];
	__u32 pid = BPF_CORE_READ(child, pid), tgid = BPF_CORE_READ(child, tgid);
	if (pid == tgid)
		pt_follow_fork(tgid);
	return 0;
}

SEC("raw_tracepoint/sched_process_exit")
int pt_follow_exit_raw(struct bpf_raw_tracepoint_args *ctx)
{
	struct task_struct *task = (struct task_struct *)ctx->args[0];
	pt_follow_exit(BPF_CORE_READ(task, tgid), BPF_CORE_READ(task, signal, live.counter));
	return 0;
}

/* task_newtask runs in copy_process, in the parent's context, before the child can run. */
SEC("tracepoint/task/task_newtask")
int pt_follow_fork_tp(struct trace_event_raw_task_newtask *ctx)
{
	if (!(ctx->clone_flags & PT_CLONE_THREAD))
		pt_follow_fork(ctx->pid);
	return 0;
}

/* sched_process_exit runs in the exiting task's context. */
SEC("tracepoint/sched/sched_process_exit")
int pt_follow_exit_tp(void *ctx)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	pt_follow_exit(bpf_get_current_pid_tgid() >> 32, BPF_CORE_READ(task, signal, live.counter));
	return 0;
}
