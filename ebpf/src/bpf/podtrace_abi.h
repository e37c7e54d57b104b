/* SPDX-License-Identifier: (GPL-2.0 OR Apache-2.0) */
/*
 * The map keys, values and constants shared by the kernel programs and the Rust loader.
 *
 * This header is plain C with fixed-width types only: build.rs also compiles it for the host to
 * print sizes and offsets, and the Rust mirrors in src/abi.rs are tested against those numbers.
 * Change a struct here and the layout test tells you which Rust field to change.
 */
#ifndef __PODTRACE_ABI_H__
#define __PODTRACE_ABI_H__

#include <linux/types.h>

/* Probes, by bit: podtrace_ebpf::Probe::bit (src/probe.rs; a test compares the two). A target's
 * `probes` field is a bit mask of (1 << PT_PROBE_*), and a key's `probe` field is one of them. */
#define PT_PROBE_TCP_RTT 0
#define PT_PROBE_TCP_CONNECT 1
#define PT_PROBE_DNS 2
#define PT_PROBE_FS_LATENCY 3
#define PT_PROBE_FS_BYTES 4
#define PT_PROBE_CPU_BLOCK 5
#define PT_PROBE_NETWORK_BYTES 6

/* The `op` of a key: the reference's `type`, `direction` or `operation` label. */
#define PT_OP_NONE 0
#define PT_OP_READ 1
#define PT_OP_WRITE 2
#define PT_OP_FSYNC 3
#define PT_OP_SEND 4
#define PT_OP_RECV 5

/* Histogram buckets: bucket k (0..19) counts values <= 100us * 2^k (0.0001 s .. 52.4288 s,
 * the reference's exponential buckets); bucket 20 counts the rest (+Inf). Not cumulative. */
#define PT_BUCKET_BASE_NS 100000ULL
#define PT_FINITE_BUCKETS 20
#define PT_BUCKETS (PT_FINITE_BUCKETS + 1)

#define PT_COMM_LEN 16

/* Bucket of a latency: smallest k with ns <= 100us * 2^k, or PT_FINITE_BUCKETS (+Inf). Without a
 * division: L = bit length of ns - 1, so 2^(L-1) < ns <= 2^L; as 2^16 < 100000 < 2^17, the
 * answer is L - 17 or L - 16, told apart by one compare. Here (not in podtrace_common.h) so
 * that build.rs runs it on the host and a Rust test compares it with histogram::bucket_index. */
static inline __u32 pt_bucket(__u64 ns)
{
	if (ns <= PT_BUCKET_BASE_NS)
		return 0;
	__u64 x = ns - 1; /* >= 100000 */
	__u32 log = 0, shift;
	shift = (x > 0xFFFFFFFFULL) << 5; x >>= shift; log |= shift;
	shift = (x > 0xFFFF) << 4; x >>= shift; log |= shift;
	shift = (x > 0xFF) << 3; x >>= shift; log |= shift;
	shift = (x > 0xF) << 2; x >>= shift; log |= shift;
	shift = (x > 0x3) << 1; x >>= shift; log |= shift;
	log |= (x >> 1);
	__u32 k = log + 1 - 17; /* bit length - 17, >= 0 */
	if (k >= PT_FINITE_BUCKETS)
		return PT_FINITE_BUCKETS;
	return ns <= (PT_BUCKET_BASE_NS << k) ? k : k + 1;
}

/* Indexes of the per-CPU `errors` array: every dropped sample is counted under its reason. */
#define PT_ERR_HIST_FULL 0     /* `hists` had no room for a new key */
#define PT_ERR_COUNTER_FULL 1  /* `counters` had no room for a new key */
#define PT_ERR_COMM_FULL 2     /* `comms` had no room; the sample went to "other" */
#define PT_ERR_INFLIGHT_FULL 3 /* a start-time map had no room; the sample was lost */
#define PT_ERR_UNCLOSED 4      /* a block whose end is not known: a run of its thread between the
				* block and the thread's next switch-out was not seen */
#define PT_ERR_PROCS_FULL 5    /* process filter: a forked child of a tracked process could not
				* be added to `tracked_tgids` (full): it is seen from the agent's
				* next listing only */
#define PT_ERR_COUNT 6

/* Value of `tracked` (key: cgroup v2 id). Written by user space; `comms` is incremented by the
 * kernel each time a new process name of this cgroup gets its own series. */
struct pt_target {
	__u32 probes; /* bit mask of PT_PROBE_* enabled for this cgroup */
	__u32 comms;  /* process names handed out so far */
};

/* Key of `hists` and `counters`. comm is all zero for "other". */
struct pt_key {
	__u64 cgroup_id;
	char comm[PT_COMM_LEN];
	__u8 probe; /* PT_PROBE_* */
	__u8 op;    /* PT_OP_* */
	__u16 _pad1;
	__u32 _pad2;
};

/* Value of `hists`, one per CPU (user space sums them): a latency histogram in nanoseconds.
 * `latest_at` orders the CPUs' latest values (a clock that only increases, per series: the
 * sample's end time in ns, or jiffies for RTT); user space keeps the latest_ns of the largest. */
struct pt_hist {
	__u64 buckets[PT_BUCKETS];
	__u64 count;
	__u64 sum_ns;
	__u64 latest_ns;
	__u64 latest_at;
};

/* Value of `counters`, one per CPU. */
struct pt_counter {
	__u64 bytes;
	__u64 events;
};

/* Value of the packet family's `pkt_targets` (key: cgroup v2 id), one per CPU: the probes of
 * that family enabled for the cgroup (the loader writes every CPU's copy) and its network byte
 * counters (the kernel adds to this CPU's). */
#define PT_NET_SEND 0
#define PT_NET_RECV 1
struct pt_pkt_target {
	__u32 probes; /* bit mask of PT_PROBE_* */
	__u32 _pad;
	struct pt_counter dir[2]; /* PT_NET_SEND, PT_NET_RECV */
};

/* Value of the cpu_block family's `block_start` (key: thread id): the block in flight of a
 * thread (see cpu_block.bpf.c). The loader deletes the entries of an untracked cgroup. */
struct pt_block_start {
	__u64 ts; /* its run queue's clock when the block started, 0: none */
	__u64 cgroup_id;
	char comm[PT_COMM_LEN];
	__u64 delay;  /* the thread's sched_info.run_delay then */
	__u64 pcount; /* the thread's sched_info.pcount then */
};

/* Key of `comms`: the process names of a cgroup that have their own series. */
struct pt_comm_key {
	__u64 cgroup_id;
	char comm[PT_COMM_LEN];
};

#endif /* __PODTRACE_ABI_H__ */
