// SPDX-License-Identifier: GPL-2.0
/*
 * Empty programs on every hook the probes use, for the overhead benchmark only (never loaded by
 * the agent): with bpf_stats on, the kernel's own clock reads around each run are part of every
 * program's run time. An empty program on the same hook measures that floor, so that the
 * benchmark can report each probe's cost net of it.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

char LICENSE[] SEC("license") = "GPL";

#define PT_FLOOR_BTF(name, hook)      \
	SEC("tp_btf/" #hook)          \
	int BPF_PROG(name)            \
	{                             \
		return 0;             \
	}

PT_FLOOR_BTF(pt_floor_sys_enter, sys_enter)
PT_FLOOR_BTF(pt_floor_sys_exit, sys_exit)
PT_FLOOR_BTF(pt_floor_sched_switch, sched_switch)
PT_FLOOR_BTF(pt_floor_sched_wakeup, sched_wakeup)
PT_FLOOR_BTF(pt_floor_sock_send_length, sock_send_length)
PT_FLOOR_BTF(pt_floor_sock_recv_length, sock_recv_length)
PT_FLOOR_BTF(pt_floor_inet_sock_set_state, inet_sock_set_state)

SEC("cgroup_skb/egress")
int pt_floor_skb_egress(struct __sk_buff *skb)
{
	return 1;
}

SEC("cgroup_skb/ingress")
int pt_floor_skb_ingress(struct __sk_buff *skb)
{
	return 1;
}
