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

static __always_inline int pt_net(struct __sk_buff *skb, __u8 op)
{
	__u64 cg = bpf_skb_cgroup_id(skb);
	struct pt_target *t = pt_tracked(cg, PT_PROBE_NETWORK_BYTES);
	if (!t)
		return 1;
	char comm[PT_COMM_LEN] = {};
	pt_counter_add(t, cg, comm, PT_PROBE_NETWORK_BYTES, op, skb->len);
	return 1; /* never drop: podtrace only observes */
}

SEC("cgroup_skb/egress")
int pt_net_egress(struct __sk_buff *skb)
{
	return pt_net(skb, PT_OP_SEND);
}

SEC("cgroup_skb/ingress")
int pt_net_ingress(struct __sk_buff *skb)
{
	return pt_net(skb, PT_OP_RECV);
}
