// SPDX-License-Identifier: GPL-2.0
/*
 * DNS latency (podtrace_dns_latency_seconds_*): UDP queries and responses seen by cgroup_skb,
 * matched by (cgroup, client port, DNS id).
 *
 * Egress: a UDP datagram to pt_dns_port with QR=0 is a query; its send time is remembered.
 * Ingress: a datagram from pt_dns_port with QR=1 and a remembered (port, id) is its answer.
 * The process name is taken at the query: a UDP send reaches cgroup_skb egress synchronously,
 * in the sender's context. Unanswered queries age out of the LRU map (a timeout is not a
 * latency). TCP/53 and DNS over TLS are not parsed.
 */
#include "podtrace_common.h"

/* The resolver port; the loader may override it (tests use a private port). */
const volatile __u16 pt_dns_port = 53;

struct pt_dns_key {
	__u64 cgroup_id;
	__u16 port;
	__u16 id;
	__u32 _pad;
};

struct pt_dns_start {
	__u64 ts;
	char comm[PT_COMM_LEN]; /* the querying task: egress of a UDP send runs in its context */
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, struct pt_dns_key);
	__type(value, struct pt_dns_start);
} dns_start SEC(".maps");

#define ETH_P_IP_BE 0x0008   /* htons(0x0800) */
#define ETH_P_IPV6_BE 0xDD86 /* htons(0x86DD) */

/* Offset of the UDP header, or -1 when the packet is not UDP. */
static __always_inline int pt_udp_offset(struct __sk_buff *skb)
{
	__u8 b[10];
	if (skb->protocol == ETH_P_IP_BE) {
		if (bpf_skb_load_bytes(skb, 0, b, 10))
			return -1;
		return b[9] == 17 ? (b[0] & 0xF) * 4 : -1;
	}
	if (skb->protocol == ETH_P_IPV6_BE) {
		if (bpf_skb_load_bytes(skb, 0, b, 8))
			return -1;
		return b[6] == 17 ? 40 : -1;
	}
	return -1;
}

struct pt_udp_dns {
	__u16 sport, dport, len, csum; /* UDP header, network order */
	__u16 id;                      /* DNS header */
	__u8 flags1;
};

static __always_inline int pt_dns(struct __sk_buff *skb, bool egress)
{
	__u64 cg = bpf_skb_cgroup_id(skb);
	struct pt_target *t = pt_tracked(cg, PT_PROBE_DNS);
	if (!t)
		return 1;
	int off = pt_udp_offset(skb);
	if (off < 0)
		return 1;
	struct pt_udp_dns h;
	if (bpf_skb_load_bytes(skb, off & 0x3F, &h, sizeof(h)))
		return 1;
	__u16 port = bpf_htons(pt_dns_port);
	bool is_response = h.flags1 & 0x80;
	struct pt_dns_key key = { .cgroup_id = cg, .id = h.id };
	if (egress && h.dport == port && !is_response) {
		key.port = h.sport;
		struct pt_dns_start start = { .ts = bpf_ktime_get_ns() };
		bpf_get_current_comm(start.comm, sizeof(start.comm));
		if (bpf_map_update_elem(&dns_start, &key, &start, BPF_ANY))
			pt_count_error(PT_ERR_INFLIGHT_FULL);
	} else if (!egress && h.sport == port && is_response) {
		key.port = h.dport;
		struct pt_dns_start *start = bpf_map_lookup_elem(&dns_start, &key);
		if (!start)
			return 1;
		struct pt_dns_start s = *start;
		bpf_map_delete_elem(&dns_start, &key);
		pt_hist_add(t, cg, s.comm, PT_PROBE_DNS, PT_OP_NONE, bpf_ktime_get_ns() - s.ts);
	}
	return 1;
}

SEC("cgroup_skb/egress")
int pt_dns_egress(struct __sk_buff *skb)
{
	return pt_dns(skb, true);
}

SEC("cgroup_skb/ingress")
int pt_dns_ingress(struct __sk_buff *skb)
{
	return pt_dns(skb, false);
}
