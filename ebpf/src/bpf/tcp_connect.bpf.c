// SPDX-License-Identifier: GPL-2.0
/*
 * TCP connect latency (podtrace_latency_seconds, podtrace_latency_latest_seconds): the time
 * from SYN_SENT to ESTABLISHED of an active open, from sock:inet_sock_set_state.
 *
 * CLOSE -> SYN_SENT runs in connect(), in the caller's context: the tracked check happens
 * there and the start is remembered with the caller's cgroup and comm. SYN_SENT -> ESTABLISHED
 * usually runs in softirq, where the current task is unrelated; it only looks the socket up.
 */
#include "podtrace_common.h"

#define TCP_ESTABLISHED 1
#define TCP_SYN_SENT 2
#define TCP_CLOSE 7
#define IPPROTO_TCP 6

struct pt_connect_start {
	__u64 ts;
	__u64 cgroup_id;
	char comm[PT_COMM_LEN];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 8192);
	__type(key, __u64); /* struct sock * */
	__type(value, struct pt_connect_start);
} connect_start SEC(".maps");

static __always_inline void pt_state(const void *sk, int oldstate, int newstate)
{
	__u64 key = (__u64)sk;
	if (newstate == TCP_SYN_SENT) {
		__u64 cg = pt_current_cgroup();
		if (!pt_tracked(cg, PT_PROBE_TCP_CONNECT))
			return;
		struct pt_connect_start s = { .ts = bpf_ktime_get_ns(), .cgroup_id = cg };
		bpf_get_current_comm(s.comm, sizeof(s.comm));
		if (bpf_map_update_elem(&connect_start, &key, &s, BPF_ANY))
			pt_count_error(PT_ERR_INFLIGHT_FULL);
		return;
	}
	if (oldstate != TCP_SYN_SENT)
		return;
	struct pt_connect_start *s = bpf_map_lookup_elem(&connect_start, &key);
	if (!s)
		return;
	if (newstate == TCP_ESTABLISHED) {
		__u64 now = bpf_ktime_get_ns();
		pt_hist_add(s->cgroup_id, s->comm, PT_PROBE_TCP_CONNECT, PT_OP_NONE, now - s->ts, now);
	}
	bpf_map_delete_elem(&connect_start, &key); /* established or failed */
}

SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(pt_connect_btf, const struct sock *sk, int oldstate, int newstate)
{
	if (BPF_CORE_READ(sk, sk_protocol) == IPPROTO_TCP)
		pt_state(sk, oldstate, newstate);
	return 0;
}

SEC("raw_tracepoint/inet_sock_set_state")
int pt_connect_raw(struct bpf_raw_tracepoint_args *ctx)
{
	const struct sock *sk = (const struct sock *)ctx->args[0];
	if (BPF_CORE_READ(sk, sk_protocol) == IPPROTO_TCP)
		pt_state(sk, (int)ctx->args[1], (int)ctx->args[2]);
	return 0;
}

SEC("tracepoint/sock/inet_sock_set_state")
int pt_connect_tp(struct trace_event_raw_inet_sock_set_state *ctx)
{
	if (ctx->protocol == IPPROTO_TCP)
		pt_state(ctx->skaddr, ctx->oldstate, ctx->newstate);
	return 0;
}
