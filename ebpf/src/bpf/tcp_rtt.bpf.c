// SPDX-License-Identifier: GPL-2.0
/*
 * TCP round-trip time (podtrace_rtt_seconds, podtrace_rtt_latest_seconds): the socket's
 * smoothed RTT (tcp_sock.srtt_us >> 3) sampled on each TCP send and receive.
 *
 * Hooked on sock_send_length/sock_recv_length (process context, so the current cgroup and comm
 * are the socket user's) rather than tcp:tcp_probe, which runs in softirq on whatever task
 * happens to be on the CPU. Rungs: fentry on tcp_sendmsg/tcp_recvmsg, tp_btf, raw_tracepoint,
 * tracepoint; one body.
 */
#define PT_TASK_CACHE
#include "podtrace_common.h"

#define IPPROTO_TCP 6

/* `btf`: sk is a BTF pointer (fentry, tp_btf): the per-task cache replaces the tracked lookup
 * and bpf_get_current_comm, bpf_skc_to_tcp_sock checks that it is a full TCP socket and the
 * field is a plain load; otherwise the tracked lookup and bpf_probe_read_kernel. A constant
 * after inlining. The tracked check comes first: most sockets of a node are not tracked. */
static __always_inline void pt_rtt(struct sock *sk, bool btf)
{
	__u64 cg = pt_current_cgroup();
	char comm[PT_COMM_LEN];
	__u32 srtt_us;
	if (btf) {
		struct pt_task_cache *c = pt_current(cg);
		if (c) {
			if (!(c->probes & (1U << PT_PROBE_TCP_RTT)))
				return;
			__builtin_memcpy(comm, c->comm, PT_COMM_LEN);
		} else {
			if (!pt_tracked(cg, PT_PROBE_TCP_RTT))
				return;
			bpf_get_current_comm(comm, sizeof(comm));
		}
		struct tcp_sock *tp = bpf_skc_to_tcp_sock(sk);
		if (!tp)
			return;
		srtt_us = tp->srtt_us >> 3;
	} else {
		if (!pt_tracked(cg, PT_PROBE_TCP_RTT) || !sk)
			return;
		if (BPF_CORE_READ(sk, sk_protocol) != IPPROTO_TCP)
			return;
		srtt_us = BPF_CORE_READ((struct tcp_sock *)sk, srtt_us) >> 3;
		bpf_get_current_comm(comm, sizeof(comm));
	}
	if (!srtt_us)
		return; /* no RTT measured yet */
	/* jiffies order the CPUs' latest values: cheaper than a clock read, and a tie within a
	 * tick is between two equally recent samples. */
	pt_hist_add(cg, comm, PT_PROBE_TCP_RTT, PT_OP_NONE, (__u64)srtt_us * 1000, bpf_jiffies64());
}

PT_TASK_RENAME_PROG(pt_rtt_rename_btf)

SEC("fentry/tcp_sendmsg")
int BPF_PROG(pt_rtt_send_fentry, struct sock *sk)
{
	pt_rtt(sk, true);
	return 0;
}

SEC("fentry/tcp_recvmsg")
int BPF_PROG(pt_rtt_recv_fentry, struct sock *sk)
{
	pt_rtt(sk, true);
	return 0;
}

SEC("tp_btf/sock_send_length")
int BPF_PROG(pt_rtt_send_btf, struct sock *sk, int ret, int flags)
{
	if (ret > 0)
		pt_rtt(sk, true);
	return 0;
}

SEC("tp_btf/sock_recv_length")
int BPF_PROG(pt_rtt_recv_btf, struct sock *sk, int ret, int flags)
{
	if (ret > 0)
		pt_rtt(sk, true);
	return 0;
}

SEC("raw_tracepoint/sock_send_length")
int pt_rtt_send_raw(struct bpf_raw_tracepoint_args *ctx)
{
	if ((int)ctx->args[1] > 0)
		pt_rtt((struct sock *)ctx->args[0], false);
	return 0;
}

SEC("raw_tracepoint/sock_recv_length")
int pt_rtt_recv_raw(struct bpf_raw_tracepoint_args *ctx)
{
	if ((int)ctx->args[1] > 0)
		pt_rtt((struct sock *)ctx->args[0], false);
	return 0;
}

SEC("tracepoint/sock/sock_send_length")
int pt_rtt_send_tp(struct trace_event_raw_sock_msg_length *ctx)
{
	if (ctx->ret > 0)
		pt_rtt(ctx->sk, false);
	return 0;
}

SEC("tracepoint/sock/sock_recv_length")
int pt_rtt_recv_tp(struct trace_event_raw_sock_msg_length *ctx)
{
	if (ctx->ret > 0)
		pt_rtt(ctx->sk, false);
	return 0;
}
