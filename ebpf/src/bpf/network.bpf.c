// SPDX-License-Identifier: GPL-2.0
/*
 * Network bytes (podtrace_network_bytes_total{direction}): cgroup_skb egress/ingress.
 *
 * The programs are attached once, at the cgroup v2 root, and filter by the skb's socket cgroup
 * (bpf_skb_cgroup_id), not per pod cgroup: see the README's "eBPF probes" section for the
 * measurement behind that choice. skb->len is the L3 length (IP header included).
 * Ingress runs in softirq and egress often does too (ACKs, retransmits, TSQ), so the current
 * task is not reliably the socket's owner: these series carry process_name="other" rather than
 * a name that would be wrong for part of the bytes.
 */
#include "podtrace_common.h"

/* The byte counters of the tracked cgroups, keyed by cgroup id alone: the loader creates an
 * entry when it tracks a cgroup for networkBytes and deletes it at untrack, so that one lookup
 * is both the tracked check and the series (no `tracked` lookup, no 32-byte series key). One
 * value per CPU, no atomics; user space sums the CPUs. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 1024);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u64);
	__type(value, struct pt_net_counters);
} net_bytes SEC(".maps");

static __always_inline int pt_net(struct __sk_buff *skb, int dir)
{
	__u64 cg = bpf_skb_cgroup_id(skb);
	struct pt_net_counters *v = bpf_map_lookup_elem(&net_bytes, &cg);
	if (!v)
		return 1; /* not tracked for networkBytes */
	v->dir[dir].bytes += skb->len;
	v->dir[dir].events += 1;
	return 1; /* never drop: podtrace only observes */
}

SEC("cgroup_skb/egress")
int pt_net_egress(struct __sk_buff *skb)
{
	return pt_net(skb, PT_NET_SEND);
}

SEC("cgroup_skb/ingress")
int pt_net_ingress(struct __sk_buff *skb)
{
	return pt_net(skb, PT_NET_RECV);
}

/* --- Fallback where cgroup_skb cannot attach: the socket calls' tracepoints. They run in the
 * calling task's context (its cgroup, or its process with PT_FILTER_TGID, is the filter) and
 * count what the call moved: payload bytes of IPv4/IPv6 sockets, no headers, no
 * retransmissions, and MSG_PEEK not at all. The only network rung of the process filter. --- */
#define AF_INET 2
#define AF_INET6 10
#define MSG_PEEK 2

static __always_inline void pt_net_sock(struct sock *sk, int ret, int flags, int dir)
{
	if (ret <= 0 || (flags & MSG_PEEK))
		return;
	__u16 family = sk->__sk_common.skc_family; /* BTF pointer: a plain load */
	if (family != AF_INET && family != AF_INET6)
		return; /* unix sockets, netlink, ... */
	__u64 cg = pt_current_cgroup();
	struct pt_net_counters *v = bpf_map_lookup_elem(&net_bytes, &cg);
	if (!v)
		return;
	v->dir[dir].bytes += ret;
	v->dir[dir].events += 1;
}

SEC("tp_btf/sock_send_length")
int BPF_PROG(pt_net_send_btf, struct sock *sk, int ret, int flags)
{
	pt_net_sock(sk, ret, flags, PT_NET_SEND);
	return 0;
}

SEC("tp_btf/sock_recv_length")
int BPF_PROG(pt_net_recv_btf, struct sock *sk, int ret, int flags)
{
	pt_net_sock(sk, ret, flags, PT_NET_RECV);
	return 0;
}
