/* SPDX-License-Identifier: (GPL-2.0 OR Apache-2.0) */
/*
 * A hand-written, trimmed vmlinux.h: only the kernel types the podtrace programs read.
 *
 * Why not `bpftool btf dump ... format c`: the full header is ~150k lines tied to one kernel.
 * Every struct below is declared under `preserve_access_index`, so clang emits CO-RE relocations
 * for each field access and libbpf/aya rewrite the offsets against the running kernel's BTF at
 * load time. Field order and the absence of other fields therefore do not matter; the names and
 * types must match the kernel's.
 *
 * UAPI types (`struct __sk_buff`, `struct bpf_*`) keep their real layout and come from
 * <linux/bpf.h>: the verifier rewrites context accesses by UAPI offset, not by BTF.
 */
#ifndef __VMLINUX_H__
#define __VMLINUX_H__

#include <linux/types.h>
#include <linux/bpf.h>

typedef __u8 u8;
typedef __u16 u16;
typedef __u32 u32;
typedef __u64 u64;
typedef __s64 s64;
typedef _Bool bool;
#define true 1
#define false 0
typedef unsigned short umode_t;

#pragma clang attribute push (__attribute__((preserve_access_index)), apply_to = record)

/* x86-64 syscall registers (arch/x86/include/asm/ptrace.h). */
struct pt_regs {
	unsigned long di;
	unsigned long si;
	unsigned long dx;
	unsigned long r10;
	unsigned long orig_ax;
};

struct kernfs_node {
	u64 id;
};

struct cgroup {
	struct kernfs_node *kn;
};

struct sock_cgroup_data {
	struct cgroup *cgroup;
};

struct sock_common {
	unsigned short skc_family;
};

struct sock {
	struct sock_common __sk_common;
	struct sock_cgroup_data sk_cgrp_data;
	u16 sk_protocol;
};

struct tcp_sock {
	u32 srtt_us;
};

struct inode {
	umode_t i_mode;
};

struct file {
	struct inode *f_inode;
};

struct fdtable {
	unsigned int max_fds;
	struct file **fd;
};

struct files_struct {
	struct fdtable *fdt;
};

typedef struct {
	int counter;
} atomic_t;

struct signal_struct {
	atomic_t live; /* threads of the group not yet exited */
};

/* The scheduler's accounting of a task (CONFIG_SCHED_INFO), in its run queue's clock. */
struct sched_info {
	unsigned long pcount;           /* times it was switched in */
	unsigned long long run_delay;   /* time spent runnable, waiting for a CPU */
	unsigned long long last_arrival; /* when it was last switched in */
};

struct rq {
	u64 clock;
};

struct cfs_rq {
	struct rq *rq;
};

struct sched_entity {
	struct cfs_rq *cfs_rq;
};

struct task_struct {
	struct sched_entity se;
	struct sched_info sched_info;
	int pid;
	int tgid;
	char comm[16];
	struct files_struct *files;
	struct signal_struct *signal;
};

/* Classic tracepoint contexts (include/trace/events/), relocated like any other struct. */
struct trace_entry {
	unsigned short type;
	unsigned char flags;
	unsigned char preempt_count;
	int pid;
};

struct trace_event_raw_sched_switch {
	struct trace_entry ent;
	char prev_comm[16];
	int prev_pid;
	int prev_prio;
	long prev_state;
	char next_comm[16];
	int next_pid;
	int next_prio;
};

struct trace_event_raw_inet_sock_set_state {
	struct trace_entry ent;
	const void *skaddr;
	int oldstate;
	int newstate;
	__u16 sport;
	__u16 dport;
	__u16 family;
	__u16 protocol;
};

struct trace_event_raw_sock_msg_length {
	struct trace_entry ent;
	void *sk;
	__u16 family;
	__u16 protocol;
	int ret;
	int flags;
};

struct trace_event_raw_task_newtask {
	struct trace_entry ent;
	int pid;
	char comm[16];
	unsigned long clone_flags;
	short oom_score_adj;
};

#pragma clang attribute pop

/* Context of syscalls/sys_enter_* and sys_exit_* (kernel/trace/trace_syscalls.c): a fixed
 * layout generated per syscall, so no CO-RE here. */
struct pt_syscall_enter {
	__u64 ent;
	int nr;
	int _pad;
	unsigned long args[6];
};

struct pt_syscall_exit {
	__u64 ent;
	int nr;
	int _pad;
	long ret;
};

#endif /* __VMLINUX_H__ */
