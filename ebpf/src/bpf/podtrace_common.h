/* SPDX-License-Identifier: (GPL-2.0 OR Apache-2.0) */
/*
 * Maps and helpers every probe family shares: the tracked-cgroup filter, the in-kernel
 * histograms and counters, the per-cgroup process-name budget and the drop counters.
 *
 * Each family's object gets its own copy of these maps (aya loads objects independently and
 * cannot share a map between them without pinning); the loader writes `tracked` of every
 * loaded family on track/untrack. The one exception is the process filter's `tracked_tgids`
 * (podtrace_tgids.h), a single instance the loader substitutes into every object.
 *
 *   event -> tracked[cgroup id]? --no--> return (one hash lookup: the cost of untracked work)
 *                 | yes
 *                 v
 *   hists/counters[{cgroup, comm, probe, op}] (this CPU's value) += sample
 *                 | new key? -> still tracked? comms[{cgroup, comm}] or budget left? else "other"
 */
#ifndef __PODTRACE_COMMON_H__
#define __PODTRACE_COMMON_H__

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_endian.h>
#include "podtrace_abi.h"

char LICENSE[] SEC("license") = "GPL";

/* Process names per cgroup that get their own series; the loader overrides it. */
const volatile __u32 pt_max_comms = 16;

#ifdef PT_FILTER_TGID
/* The process filter, for nodes with no cgroup v2 hierarchy: build.rs compiles every family a
 * second time with PT_FILTER_TGID, and the loader picks that object when asked. Separate objects
 * rather than a flag in .rodata: the verifier prunes a constant branch but keeps the load of
 * the flag, and the cgroup filter's programs are meant to stay exactly what they were.
 *
 * tgid -> the target key: see podtrace_tgids.h. */
#include "podtrace_tgids.h"

/* The key of the current task's target: the key of its tgid, 0 (never tracked) if none. */
static __always_inline __u64 pt_current_cgroup(void)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	__u64 *key = bpf_map_lookup_elem(&tracked_tgids, &tgid);
	return key ? *key : 0;
}
#else
/* The key of the current task's target: its cgroup v2 id. */
static __always_inline __u64 pt_current_cgroup(void)
{
	return bpf_get_current_cgroup_id();
}
#endif

/* Sizes are defaults; the loader sets them from ProbeConfig before loading. The series maps
 * are not preallocated: a family that never sees a tracked event (or has no counters) then
 * costs no memory, and a large max_entries is only a ceiling. New series pay one allocation. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u64);
	__type(value, struct pt_target);
} tracked SEC(".maps");

/* The series maps are per CPU: both CPUs of a busy series never write the same cache line and
 * need no atomic instruction (measured: the contended atomics were most of the cost of a
 * tracked event); user space sums the CPUs at snapshot. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 4096);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct pt_key);
	__type(value, struct pt_hist);
} hists SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 4096);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct pt_key);
	__type(value, struct pt_counter);
} counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct pt_comm_key);
	__type(value, __u8);
} comms SEC(".maps");

#include "podtrace_errors.h"

/* The tracked target of a cgroup if `probe` is enabled for it, else NULL. */
static __always_inline struct pt_target *pt_tracked(__u64 cgroup_id, __u32 probe)
{
	struct pt_target *t = bpf_map_lookup_elem(&tracked, &cgroup_id);
	if (!t || !(t->probes & (1U << probe)))
		return NULL;
	return t;
}

/* Fills key->comm for a key that has no series yet: the name keeps its own series while the
 * cgroup's budget (pt_max_comms) lasts, then it is folded into "other" (all zero). Returns
 * false when the cgroup is no longer tracked (an operation that started before `untrack`):
 * then no series is created. */
static __always_inline bool pt_resolve_comm(struct pt_key *key)
{
	struct pt_target *t = bpf_map_lookup_elem(&tracked, &key->cgroup_id);
	if (!t)
		return false;
	if (!key->comm[0])
		return true; /* already "other" */
	struct pt_comm_key ck = { .cgroup_id = key->cgroup_id };
	__builtin_memcpy(ck.comm, key->comm, PT_COMM_LEN);
	if (bpf_map_lookup_elem(&comms, &ck))
		return true;
	if (t->comms < pt_max_comms && __sync_fetch_and_add(&t->comms, 1) < pt_max_comms) {
		__u8 one = 1;
		if (bpf_map_update_elem(&comms, &ck, &one, BPF_NOEXIST) == 0)
			return true;
		pt_count_error(PT_ERR_COMM_FULL);
	}
	__builtin_memset(key->comm, 0, PT_COMM_LEN);
	return true;
}

/* This CPU's value of a series, created on first use. The common case is one lookup of an
 * existing key: the tracked check and the name budget run only for a new series. */
static __always_inline void *pt_series(void *map, struct pt_key *key, const void *zero,
				       __u32 full_error)
{
	void *v = bpf_map_lookup_elem(map, key);
	if (v)
		return v;
	if (!pt_resolve_comm(key))
		return NULL;
	v = bpf_map_lookup_elem(map, key); /* the name may have been folded into "other" */
	if (v)
		return v;
	long err = bpf_map_update_elem(map, key, zero, BPF_NOEXIST);
	if (err && err != -17 /* EEXIST: another CPU won the race */) {
		pt_count_error(full_error);
		return NULL;
	}
	return bpf_map_lookup_elem(map, key);
}

/* Adds a latency sample. `at` orders the latest values of the CPUs (see struct pt_hist). */
static __always_inline void pt_hist_add(__u64 cgroup_id, const char *comm, __u8 probe, __u8 op,
					__u64 ns, __u64 at)
{
	struct pt_key key = { .cgroup_id = cgroup_id, .probe = probe, .op = op };
	__builtin_memcpy(key.comm, comm, PT_COMM_LEN);
	static const struct pt_hist zero;
	struct pt_hist *h = pt_series(&hists, &key, &zero, PT_ERR_HIST_FULL);
	if (!h)
		return;
	__u32 b = pt_bucket(ns);
	if (b < PT_BUCKETS)
		h->buckets[b] += 1; /* per-CPU value: no atomic needed */
	h->count += 1;
	h->sum_ns += ns;
	h->latest_ns = ns;
	h->latest_at = at;
}

static __always_inline void pt_counter_add(__u64 cgroup_id, const char *comm, __u8 probe, __u8 op,
					   __u64 bytes)
{
	struct pt_key key = { .cgroup_id = cgroup_id, .probe = probe, .op = op };
	__builtin_memcpy(key.comm, comm, PT_COMM_LEN);
	static const struct pt_counter zero;
	struct pt_counter *c = pt_series(&counters, &key, &zero, PT_ERR_COUNTER_FULL);
	if (!c)
		return;
	c->bytes += bytes;
	c->events += 1;
}

#ifdef PT_TASK_CACHE
/* Per-task cache of the tracked check and the process name, for the programs that run in the
 * task's own context with a BTF task pointer (tp_btf). One task-storage lookup (no hashing)
 * replaces the `tracked` lookup and bpf_get_current_comm on every event. It is valid while the
 * task's cgroup is the same and `tracked_gen` (bumped by the loader after every change of the
 * tracked cgroups) has not moved; a rename (task_rename fires for prctl, /proc comm writes and
 * exec) invalidates it. */
struct pt_task_cache {
	__u64 cgroup_id;
	__u32 gen;    /* tracked_gen when filled, 0: invalid */
	__u32 probes; /* the cgroup's PT_PROBE_* bits then, 0: not tracked */
	char comm[PT_COMM_LEN];
#ifdef PT_TASK_CACHE_EXTRA
	PT_TASK_CACHE_EXTRA /* a family's own per-task fields (cpu_block: the block in flight) */
#endif
};

struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct pt_task_cache);
} task_cache SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} tracked_gen SEC(".maps");

#define PT_STORAGE_CREATE 1 /* BPF_LOCAL_STORAGE_GET_F_CREATE */

/* The current task's cache entry, filled if stale; NULL when it cannot be had (then the caller
 * does the uncached check). */
static __always_inline struct pt_task_cache *pt_current(__u64 cg)
{
	__u32 zero = 0;
	__u32 *gen = bpf_map_lookup_elem(&tracked_gen, &zero);
	if (!gen || !*gen)
		return NULL;
	struct pt_task_cache *c =
		bpf_task_storage_get(&task_cache, bpf_get_current_task_btf(), 0, PT_STORAGE_CREATE);
	if (!c)
		return NULL;
	if (c->gen != *gen || c->cgroup_id != cg) {
		struct pt_target *t = bpf_map_lookup_elem(&tracked, &cg);
		c->probes = t ? t->probes : 0;
		if (t)
			bpf_get_current_comm(c->comm, sizeof(c->comm));
		c->cgroup_id = cg;
		c->gen = *gen;
	}
	return c;
}

/* task_rename: the cached name of that task is stale. */
#define PT_TASK_RENAME_PROG(name)                                                           \
	SEC("tp_btf/task_rename")                                                           \
	int BPF_PROG(name, struct task_struct *task)                                        \
	{                                                                                   \
		struct pt_task_cache *c = bpf_task_storage_get(&task_cache, task, 0, 0);    \
		if (c)                                                                      \
			c->gen = 0;                                                         \
		return 0;                                                                   \
	}
#endif /* PT_TASK_CACHE */

/* The cgroup v2 id of a socket's owner (the cgroup it was created in), read with CO-RE. */
static __always_inline __u64 pt_sock_cgroup_id(const struct sock *sk)
{
	return BPF_CORE_READ(sk, sk_cgrp_data.cgroup, kn, id);
}

#endif /* __PODTRACE_COMMON_H__ */
