// SPDX-License-Identifier: GPL-2.0
/*
 * Off-CPU (blocked) time (podtrace_cpu_block_seconds_*): from the moment a thread of a tracked
 * cgroup switches out in a sleeping state until it is woken up.
 *
 * sched_switch runs in the context of the thread going off CPU, so the current cgroup is its
 * own: the tracked check and the start happen there. sched_wakeup only looks the thread up.
 * Preemption (still runnable) is not blocking and is skipped; run-queue wait after the wakeup
 * is not counted (that is scheduling latency, not blocking).
 *
 * The switch *in* of a thread also closes a block still open (then the sample includes the
 * run-queue wait). On this kernel (6.18, a busy 2-vCPU VM) about one block in 400 of a thread
 * sleeping 10 ms is closed by neither: debug prints at the entry of both programs showed no run
 * at all for that thread between its two switch-outs 10.4 ms apart (and no recursion miss
 * counted), so the kernel ran neither program for that wakeup and switch-in; why is not known.
 * Such a block is found when the thread blocks again with its start still set: it is dropped
 * (a length is not known) and counted as PT_ERR_UNCLOSED, never silent.
 *
 * Hot path: a thread's block entry (its task storage on tp_btf, see PT_TASK_CACHE_EXTRA; its
 * entry of `block_start` on the raw and classic tracepoints) is created at its first block and
 * then reused in place: a block writes its fields and its start time last; the wakeup (or the
 * switch-in, whichever comes first, possibly on two CPUs at once) takes the start time with an
 * atomic exchange against 0, so exactly one of them records the block and nothing is deleted or
 * inserted per block (no bucket lock, no allocation). Task storage is freed with the thread; a
 * `block_start` entry is deleted at the thread's last switch-out (exit), and by the loader at
 * untrack (a block on tp_btf of a cgroup untracked meanwhile closes into nothing: its series
 * are gone and pt_series finds the cgroup no longer tracked). A full map or a task storage that
 * cannot be had is counted (PT_ERR_INFLIGHT_FULL), never an eviction: an LRU map would evict the
 * entries of the threads blocked the longest.
 */
#define PT_TASK_CACHE
/* On tp_btf the block in flight lives in the thread's task storage, beside the tracked check:
 * the switch-out writes it into the entry it already has, and the closers find it from the task
 * pointer without hashing (the untracked switch-in and wakeup, the common case, cost one task
 * storage lookup instead of a hash lookup). Same fields and protocol as pt_block_start. */
#define PT_TASK_CACHE_EXTRA                                                                 \
	__u64 block_ts; /* start of the block in flight, 0: none */                         \
	__u64 block_cg;                                                                     \
	char block_comm[PT_COMM_LEN];
#include "podtrace_common.h"

#define TASK_DEAD 0x80

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32); /* thread id */
	__type(value, struct pt_block_start);
} block_start SEC(".maps");

/* `dead`: the thread's last switch-out (it exits); `blocked`: it switched out not runnable.
 * `btf`: tp_btf, where the block goes into the task's storage (a constant after inlining). */
static __always_inline void pt_switch_out(__u32 tid, bool dead, bool blocked, bool btf)
{
	if (dead) {
		bpf_map_delete_elem(&block_start, &tid); /* once per exiting thread */
		return;
	}
	if (!blocked)
		return; /* preempted while runnable: not a block */
	__u64 cg = pt_current_cgroup();
	if (btf) {
		struct pt_task_cache *c = pt_current(cg);
		if (!c) {
			/* No task storage (allocation failed, or busy on this CPU): the block cannot
			 * be recorded; counted if the thread is tracked. */
			if (pt_tracked(cg, PT_PROBE_CPU_BLOCK))
				pt_count_error(PT_ERR_INFLIGHT_FULL);
			return;
		}
		if (!(c->probes & (1U << PT_PROBE_CPU_BLOCK)))
			return;
		if (c->block_ts)
			pt_count_error(PT_ERR_UNCLOSED); /* the previous block was never closed */
		c->block_cg = cg;
		__builtin_memcpy(c->block_comm, c->comm, PT_COMM_LEN);
		__u64 now = bpf_ktime_get_ns(); /* the start time last, as below */
		asm volatile("" ::: "memory");
		*(volatile __u64 *)&c->block_ts = now;
		return;
	}
	/* The hash map path (raw and classic tracepoints). */
	if (!pt_tracked(cg, PT_PROBE_CPU_BLOCK))
		return;
	struct pt_block_start *s = bpf_map_lookup_elem(&block_start, &tid);
	if (s) {
		if (s->ts)
			pt_count_error(PT_ERR_UNCLOSED); /* the previous block was never closed */
		s->cgroup_id = cg;
		bpf_get_current_comm(s->comm, sizeof(s->comm));
		/* The start time last: a closer that sees it sees the fields above (x86 keeps stores
		 * in order; the barrier keeps the compiler from reordering them). */
		__u64 now = bpf_ktime_get_ns();
		asm volatile("" ::: "memory");
		*(volatile __u64 *)&s->ts = now;
		return;
	}
	struct pt_block_start n = { .ts = bpf_ktime_get_ns(), .cgroup_id = cg };
	bpf_get_current_comm(n.comm, sizeof(n.comm));
	if (bpf_map_update_elem(&block_start, &tid, &n, BPF_ANY))
		pt_count_error(PT_ERR_INFLIGHT_FULL);
}

/* Closes a block whose start is *start (taken atomically: the wakeup and the switch-in may
 * race on two CPUs, and only one of them counts it). */
static __always_inline void pt_close_block(__u64 *start, __u64 cgroup_id, const char *comm)
{
	__u64 ts = __sync_lock_test_and_set(start, 0);
	if (!ts)
		return; /* the other CPU closed it */
	__u64 now = bpf_ktime_get_ns();
	pt_hist_add(cgroup_id, comm, PT_PROBE_CPU_BLOCK, PT_OP_NONE, now - ts, now);
}

static __always_inline void pt_wakeup(__u32 tid)
{
	struct pt_block_start *s = bpf_map_lookup_elem(&block_start, &tid);
	if (s && s->ts)
		pt_close_block(&s->ts, s->cgroup_id, s->comm);
}

/* The closer on tp_btf: the block in the task's storage (see PT_TASK_CACHE_EXTRA). */
static __always_inline void pt_wakeup_task(struct task_struct *p)
{
	struct pt_task_cache *c = bpf_task_storage_get(&task_cache, p, 0, 0);
	if (c && c->block_ts)
		pt_close_block(&c->block_ts, c->block_cg, c->block_comm);
}

SEC("tp_btf/sched_switch")
int BPF_PROG(pt_switch_btf, bool preempt, struct task_struct *prev, struct task_struct *next,
	     unsigned int prev_state)
{
	/* An exiting thread's task storage goes with it: nothing to delete. */
	if (!preempt && !(prev_state & TASK_DEAD))
		pt_switch_out(prev->pid, false, prev_state != 0, true);
	pt_wakeup_task(next);
	return 0;
}

PT_TASK_RENAME_PROG(pt_block_rename_btf)

SEC("tp_btf/sched_wakeup")
int BPF_PROG(pt_wakeup_btf, struct task_struct *p)
{
	pt_wakeup_task(p);
	return 0;
}

SEC("raw_tracepoint/sched_switch")
int pt_switch_raw(struct bpf_raw_tracepoint_args *ctx)
{
	if (!ctx->args[0]) {
		struct task_struct *prev = (struct task_struct *)ctx->args[1];
		unsigned int state = (unsigned int)ctx->args[3];
		pt_switch_out(BPF_CORE_READ(prev, pid), state & TASK_DEAD, state != 0, false);
	}
	struct task_struct *next = (struct task_struct *)ctx->args[2];
	pt_wakeup(BPF_CORE_READ(next, pid));
	return 0;
}

SEC("raw_tracepoint/sched_wakeup")
int pt_wakeup_raw(struct bpf_raw_tracepoint_args *ctx)
{
	struct task_struct *p = (struct task_struct *)ctx->args[0];
	pt_wakeup(BPF_CORE_READ(p, pid));
	return 0;
}

SEC("tracepoint/sched/sched_switch")
int pt_switch_tp(struct trace_event_raw_sched_switch *ctx)
{
	/* The classic tracepoint reports a task_state_index() bit, with 0x100 (TASK_REPORT_MAX)
	 * for preemption and 0x10/0x20 (EXIT_DEAD/EXIT_ZOMBIE) for an exiting task. */
	long state = ctx->prev_state;
	if (!(state & 0x100))
		pt_switch_out(ctx->prev_pid, state & (0x10 | 0x20), state != 0, false);
	pt_wakeup(ctx->next_pid);
	return 0;
}

SEC("tracepoint/sched/sched_wakeup")
int pt_wakeup_tp(struct trace_event_raw_sched_wakeup_template *ctx)
{
	pt_wakeup(ctx->pid);
	return 0;
}
