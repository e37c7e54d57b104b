/* SPDX-License-Identifier: (GPL-2.0 OR Apache-2.0) */
/*
 * The process filter's map, declared once for the families' PT_FILTER_TGID objects and for
 * follow.bpf.c: tgid -> the key of the target the process belongs to (what `tracked` and the
 * series are keyed by in place of a cgroup id).
 *
 * Unlike the other maps it is ONE instance for the whole agent: the loader creates it and puts
 * it in place of each object's own copy before any program of the object is loaded (see
 * `share_map` in probes.rs), so that a child the fork program adds is seen by every family at
 * once. The definition must therefore be the same everywhere (the verifier checks the programs
 * against the map they get). Written by the agent from each target's cgroup.procs every
 * interval, and by follow.bpf.c at fork and exit; sized by the loader.
 */
#ifndef __PODTRACE_TGIDS_H__
#define __PODTRACE_TGIDS_H__

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 32768);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u32);
	__type(value, __u64);
} tracked_tgids SEC(".maps");

#endif /* __PODTRACE_TGIDS_H__ */
