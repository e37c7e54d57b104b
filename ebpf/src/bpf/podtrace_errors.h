/* SPDX-License-Identifier: (GPL-2.0 OR Apache-2.0) */
/*
 * The per-CPU error counters (full maps, lost blocks: PT_ERR_* of podtrace_abi.h) that every
 * object has and the agent sums into podtrace_agent_bpf_drops_total, and the one way to count.
 */
#ifndef __PODTRACE_ERRORS_H__
#define __PODTRACE_ERRORS_H__

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, PT_ERR_COUNT);
	__type(key, __u32);
	__type(value, __u64);
} errors SEC(".maps");

static __always_inline void pt_count_error(__u32 reason)
{
	__u64 *v = bpf_map_lookup_elem(&errors, &reason);
	if (v)
		*v += 1; /* per-CPU: no atomic needed */
}

#endif /* __PODTRACE_ERRORS_H__ */
