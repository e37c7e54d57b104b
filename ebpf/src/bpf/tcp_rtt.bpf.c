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
#include "podtrace_common.h"

#define IPPROTO_TCP 6

static __always_inline void pt_rtt(struct sock *sk)
{
	__u64 cg = bpf_get_current_cgroup_id();
	struct pt_target *t = pt_tracked(cg, PT_PROBE_TCP_RTT);
	if (!t || !sk)
		return;
	if (BPF_CORE_READ(sk, sk_protocol) != IPPROTO_TCP)
		return;
	__u32 srtt_us = BPF_CORE_READ((struct tcp_sock *)sk, srtt_us) >> 3;
	if (!srtt_us)
		return; /* no RTT measured yet */
	char comm[PT_COMM_LEN];
	bpf_get_current_comm(comm, sizeof(comm));
	pt_hist_add(t, cg, comm, PT_PROBE_TCP_RTT, PT_OP_NONE, (__u64)srtt_us * 1000);
}

SEC("fentry/tcp_sendmsg")
int BPF_PROG(pt_rtt_send_fentry, struct sock *sk)
{
	pt_rtt(sk);
	return 0;
}

SEC("fentry/tcp_recvmsg")
int BPF_PROG(pt_rtt_recv_fentry, struct sock *sk)
{
	pt_rtt(sk);
	return 0;
}

SEC("tp_btf/sock_send_length")
int BPF_PROG(pt_rtt_send_btf, struct sock *sk, int ret, int flags)
{
	if (ret > 0)
		pt_rtt(sk);
	return 0;
}

SEC("tp_btf/sock_recv_length")
int BPF_PROG(pt_rtt_recv_btf, struct sock *sk, int ret, int flags)
{
	if (ret > 0)
		pt_rtt(sk);
	return 0;
}

SEC("raw_tracepoint/sock_send_length")
int pt_rtt_send_raw(struct bpf_raw_tracepoint_args *ctx)
{
	if ((int)ctx->args[1] > 0)
		pt_rtt((struct sock *)ctx->args[0]);
	return 0;
}

SEC("raw_tracepoint/sock_recv_length")
int pt_rtt_recv_raw(struct bpf_raw_tracepoint_args *ctx)
{
	if ((int)ctx->args[1] > 0)
		pt_rtt((struct sock *)ctx->args[0]);
	return 0;
}

SEC("tracepoint/sock/sock_send_length")
int pt_rtt_send_tp(struct trace_event_raw_sock_msg_length *ctx)
{
	if (ctx->ret > 0)
		pt_rtt(ctx->sk);
	return 0;
}

SEC("tracepoint/sock/sock_recv_length")
int pt_rtt_recv_tp(struct trace_event_raw_sock_msg_length *ctx)
{
	if (ctx->ret > 0)
		pt_rtt(ctx->sk);
	return 0;
}
