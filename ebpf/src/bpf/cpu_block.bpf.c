// SPDX-License-Identifier: GPL-2.0
/*
 * Off-CPU (blocked) time (podtrace_cpu_block_seconds_*): from the moment a thread of a tracked
 * cgroup switches out in a sleeping state until it is woken up (made runnable again).
 *
 * One program, on sched_switch, and only for the thread going off CPU (`prev`, which is also
 * `current`, so its cgroup is its own). A block is opened at a switch-out in a sleeping state
 * and closed at the thread's *next* switch-out, whatever it is (a block, a preemption, its
 * exit), from the scheduler's own accounting of that thread (CONFIG_SCHED_INFO, which
 * TASK_DELAY_ACCT and SCHEDSTATS select):
 *
 *   switch-out (blocks)        wakeup: enqueued          switch-in            next switch-out
 *   start = rq->clock          last_queued = rq clock    run_delay += wait    close:
 *   delay0 = run_delay                                    pcount++             woken = last_arrival
 *   pcount0 = pcount                                      last_arrival = now        - (run_delay - delay0)
 *                                                                              block = woken - start
 *
 * The time queued since the block started (run_delay - delay0) is the wait between being made
 * runnable and getting a CPU; taken from the arrival, it leaves the moment the thread was made
 * runnable, in the same clock (the run queue's) as the start. A thread moved to another CPU
 * while it waited is counted from its first enqueue (its first queue's wait is in run_delay
 * too). Preemption (still runnable) is not blocking and run-queue wait is not counted: that is
 * scheduling latency. pcount (arrivals on a CPU) must have moved by exactly one: otherwise a
 * switch-out of the thread was not seen, the block's end is not known, and it is dropped and
 * counted (PT_ERR_UNCLOSED), never guessed.
 *
 * Why not close at sched_wakeup or at the switch-in: it needed a second program (sched_wakeup,
 * ~1.2 runs per request of a loopback server) and a lookup of the other task's entry on every
 * switch, and it lost about one block in 600 of a thread sleeping 0.5 ms on this 6.18 VM:
 * ftrace showed those wakeups coming from the hard interrupt of a higher-priority task (no
 * preemption requested) and then no sched_switch event *into* the thread at all, in ftrace's
 * own buffer as in the BPF programs, before its next switch-out. The thread's own switch-outs
 * and its sched_info see every run (pcount counts it), so closing there loses none.
 *
 * A block's sample is recorded when the thread next goes off CPU: one time slice after its
 * wakeup at most, and at its exit for its last block.
 */
#define PT_TASK_CACHE
/* On tp_btf the block in flight lives in the thread's task storage, beside the tracked check:
 * the switch-out finds both with one lookup and no hashing. Same fields as pt_block_start. */
#define PT_TASK_CACHE_EXTRA                                                                 \
	__u64 block_start; /* rq clock at the switch-out that opened the block, 0: none */    \
	__u64 block_delay; /* sched_info.run_delay then */                                  \
	__u64 block_pcount; /* sched_info.pcount then */                                    \
	__u64 block_cg;                                                                     \
	char block_comm[PT_COMM_LEN];
#include "podtrace_common.h"

#define TASK_DEAD 0x80

/* The raw and classic tracepoints' blocks in flight (tp_btf keeps them in task storage). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32); /* thread id */
	__type(value, struct pt_block_start);
} block_start SEC(".maps");

/* What closing and opening a block reads of the thread going off CPU. `btf`: `t` is a BTF
 * pointer (tp_btf: plain loads); otherwise CO-RE reads. A constant after inlining. */
struct pt_sched {
	__u64 clock;   /* its run queue's clock: now, at this switch-out */
	__u64 delay;   /* sched_info.run_delay */
	__u64 pcount;  /* sched_info.pcount */
	__u64 arrival; /* sched_info.last_arrival */
};

static __always_inline void pt_read_sched(struct task_struct *t, struct pt_sched *s, bool btf)
{
	if (btf) {
		s->clock = t->se.cfs_rq->rq->clock;
		s->delay = t->sched_info.run_delay;
		s->pcount = t->sched_info.pcount;
		s->arrival = t->sched_info.last_arrival;
	} else {
		s->clock = BPF_CORE_READ(t, se.cfs_rq, rq, clock);
		s->delay = BPF_CORE_READ(t, sched_info.run_delay);
		s->pcount = BPF_CORE_READ(t, sched_info.pcount);
		s->arrival = BPF_CORE_READ(t, sched_info.last_arrival);
	}
}

/* Closes the block opened at `b` (its start, run_delay and pcount then) with what the thread's
 * sched_info says now, at its next switch-out. */
static __always_inline void pt_close_block(struct pt_block_start *b, const struct pt_sched *now)
{
	if (now->pcount != b->pcount + 1) {
		pt_count_error(PT_ERR_UNCLOSED); /* a run of the thread was not seen */
		return;
	}
	__u64 woken = now->arrival - (now->delay - b->delay);
	/* Two CPUs' run-queue clocks may differ by a few ns: never a negative block. */
	__u64 ns = woken > b->ts ? woken - b->ts : 0;
	pt_hist_add(b->cgroup_id, b->comm, PT_PROBE_CPU_BLOCK, PT_OP_NONE, ns, now->arrival);
}

/* tp_btf: the thread's task storage holds the tracked check and its block in flight. */
static __always_inline void pt_switch_btf_body(struct task_struct *prev, bool blocked)
{
	__u64 cg = pt_current_cgroup();
	struct pt_task_cache *c = pt_current(cg);
	if (!c) {
		/* No task storage (allocation failed, or busy on this CPU): the block cannot be
		 * recorded; counted if the thread is tracked. */
		if (blocked && pt_tracked(cg, PT_PROBE_CPU_BLOCK))
			pt_count_error(PT_ERR_INFLIGHT_FULL);
		return;
	}
	bool open = c->block_start;
	bool start = blocked && (c->probes & (1U << PT_PROBE_CPU_BLOCK));
	if (!open && !start)
		return; /* the common case: an untracked thread, or a tracked one with nothing to do */
	struct pt_sched now;
	pt_read_sched(prev, &now, true);
	if (open) {
		struct pt_block_start b = {
			.ts = c->block_start, .cgroup_id = c->block_cg,
			.delay = c->block_delay, .pcount = c->block_pcount,
		};
		__builtin_memcpy(b.comm, c->block_comm, PT_COMM_LEN);
		c->block_start = 0;
		pt_close_block(&b, &now);
	}
	if (start) {
		c->block_start = now.clock ? now.clock : 1;
		c->block_delay = now.delay;
		c->block_pcount = now.pcount;
		c->block_cg = cg;
		__builtin_memcpy(c->block_comm, c->comm, PT_COMM_LEN);
	}
}

/* Raw and classic tracepoints: the block in flight is the thread's entry of `block_start`. */
static __always_inline void pt_switch_map(struct task_struct *prev, __u32 tid, bool dead,
					  bool blocked)
{
	struct pt_block_start *b = bpf_map_lookup_elem(&block_start, &tid);
	bool open = b && b->ts;
	__u64 cg = 0;
	bool start = false;
	if (blocked && !dead) {
		cg = pt_current_cgroup();
		start = pt_tracked(cg, PT_PROBE_CPU_BLOCK);
	}
	if (!open && !start) {
		if (b && dead)
			bpf_map_delete_elem(&block_start, &tid); /* once per exiting thread */
		return;
	}
	struct pt_sched now;
	pt_read_sched(prev, &now, false);
	if (open) {
		pt_close_block(b, &now);
		b->ts = 0;
	}
	if (dead) {
		bpf_map_delete_elem(&block_start, &tid);
		return;
	}
	if (!start)
		return;
	struct pt_block_start n = {
		.ts = now.clock ? now.clock : 1, .cgroup_id = cg, .delay = now.delay, .pcount = now.pcount,
	};
	bpf_get_current_comm(n.comm, sizeof(n.comm));
	if (b) {
		*b = n; /* the thread's own entry: only its own switch-outs write it */
		return;
	}
	if (bpf_map_update_elem(&block_start, &tid, &n, BPF_ANY))
		pt_count_error(PT_ERR_INFLIGHT_FULL);
}

SEC("tp_btf/sched_switch")
int BPF_PROG(pt_switch_btf, bool preempt, struct task_struct *prev, struct task_struct *next,
	     unsigned int prev_state)
{
	/* An exiting thread's last switch-out closes its last block; its task storage goes with
	 * it. */
	pt_switch_btf_body(prev, !preempt && prev_state && !(prev_state & TASK_DEAD));
	return 0;
}

PT_TASK_RENAME_PROG(pt_block_rename_btf)

SEC("raw_tracepoint/sched_switch")
int pt_switch_raw(struct bpf_raw_tracepoint_args *ctx)
{
	bool preempt = ctx->args[0];
	struct task_struct *prev = (struct task_struct *)ctx->args[1];
	unsigned int state = (unsigned int)ctx->args[3];
	pt_switch_map(prev, BPF_CORE_READ(prev, pid), state & TASK_DEAD, !preempt && state != 0);
	return 0;
}

SEC("tracepoint/sched/sched_switch")
int pt_switch_tp(struct trace_event_raw_sched_switch *ctx)
{
	/* The classic tracepoint reports a task_state_index() bit, with 0x100 (TASK_REPORT_MAX)
	 * for preemption and 0x10/0x20 (EXIT_DEAD/EXIT_ZOMBIE) for an exiting task. The thread
	 * going off CPU is the current task. */
	long state = ctx->prev_state;
	struct task_struct *prev = (struct task_struct *)bpf_get_current_task();
	pt_switch_map(prev, ctx->prev_pid, state & (0x10 | 0x20), !(state & 0x100) && state != 0);
	return 0;
}
