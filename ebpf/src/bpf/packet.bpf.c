// SPDX-License-Identifier: GPL-2.0
/*
 * The packet probes, one program per direction: network bytes (podtrace_network_bytes_total),
 * DNS latency (podtrace_dns_latency_seconds_*) and TCP round-trip time (podtrace_rtt_seconds).
 *
 * cgroup_skb egress/ingress, attached by the loader at each tracked cgroup (not at the cgroup v2
 * root), so that the packets of untracked pods run no program at all. Each run looks the skb's
 * socket cgroup up once in `pkt_targets` (the probes enabled for it and its byte counters, one
 * value per CPU), then does what those probes ask:
 *
 *   networkBytes  skb->len (L3 length, IP header included) added to the direction's counter
 *   dns           a query to pt_dns_port remembered (egress), its answer timed (ingress)
 *   tcpRtt        ingress only: the socket's smoothed RTT (bpf_tcp_sock()->srtt_us >> 3), one
 *                 sample per received TCP segment (srtt moves when an ACK arrives)
 *
 * Ingress runs in softirq and egress often does too (ACKs, retransmits, TSQ), so the current
 * task is not reliably the socket's owner: network bytes and RTT carry process_name="other".
 * DNS takes the querying task's name at the query: a UDP send, and the first transmission of a
 * TCP write on an idle connection, reach egress synchronously, in the sender's context.
 *
 * Lower rungs, where cgroup_skb cannot attach (no CAP_NET_ADMIN, the process filter): the socket
 * calls' tracepoints (sock_send_length, sock_recv_length) in the caller's context count the
 * payload bytes of IPv4/IPv6 sockets (no headers, no retransmissions, MSG_PEEK not at all) and
 * sample the RTT of TCP sockets per call with the caller's process name; dns is not served.
 */
#include "podtrace_common.h"

/* The resolver port; the loader may override it (tests use a private port). */
const volatile __u16 pt_dns_port = 53;

#define IPPROTO_TCP 6
#define IPPROTO_UDP 17
#define AF_INET 2
#define AF_INET6 10
#define MSG_PEEK 2

#define PT_BIT(p) (1U << (p))

/* The tracked cgroups that want a packet probe: key cgroup id (or the process filter's key),
 * value the probes and the byte counters (struct pt_pkt_target), one per CPU. The loader
 * creates an entry when it tracks a cgroup for one of these probes and deletes it at untrack:
 * one lookup is both the tracked check and the counters (no 32-byte series key per packet). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 1024);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u64);
	__type(value, struct pt_pkt_target);
} pkt_targets SEC(".maps");

/* --- DNS, over UDP and TCP, matched by (cgroup, protocol, client port, DNS id) ---
 *
 * Egress: a UDP datagram or TCP segment to pt_dns_port whose DNS header has QR=0 is a query; its
 * send time is remembered. Ingress: one from pt_dns_port with QR=1 and a remembered (port, id)
 * is its answer. Over TCP a message starts with a 2-byte length (RFC 1035 4.2.2): in a segment
 * whose payload starts with a message, the DNS header is read after it, and the next message
 * is found from that length, up to PT_DNS_MAX_MSGS messages per segment (pipelined queries or
 * answers). Not seen: messages beyond those, and a message that starts in a segment which does
 * not itself start with a message (after a message split across segments).
 * bpf_skb_load_bytes reads the headers wherever they are (linear data or fragments).
 * Unanswered queries age out of the LRU map (a timeout is not a latency). DNS over TLS is not
 * parsed. */

struct pt_dns_key {
	__u64 cgroup_id;
	__u16 port; /* the client's port, network order */
	__u16 id;
	__u8 proto;
	__u8 _pad[3];
};

struct pt_dns_start {
	__u64 ts;
	char comm[PT_COMM_LEN]; /* the querying task (see above) */
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, struct pt_dns_key);
	__type(value, struct pt_dns_start);
} dns_start SEC(".maps");

#define ETH_P_IP_BE 0x0008   /* htons(0x0800) */
#define ETH_P_IPV6_BE 0xDD86 /* htons(0x86DD) */

/* Offset of the transport header and its protocol, or -1. */
static __always_inline int pt_l4(struct __sk_buff *skb, __u8 *proto)
{
	__u8 b[10];
	if (skb->protocol == ETH_P_IP_BE) {
		if (bpf_skb_load_bytes(skb, 0, b, 10))
			return -1;
		*proto = b[9];
		return (b[0] & 0xF) * 4;
	}
	if (skb->protocol == ETH_P_IPV6_BE) {
		if (bpf_skb_load_bytes(skb, 0, b, 8))
			return -1;
		*proto = b[6];
		return 40;
	}
	return -1;
}

/* Up to this many DNS messages are read from one TCP segment (pipelined queries or answers,
 * RFC 7766 6.2.1.1): each is found from the previous one's 2-byte length. A bounded loop the
 * verifier walks once per iteration; later messages of a longer segment are not seen. */
#define PT_DNS_MAX_MSGS 8

/* One DNS message whose header starts at `dns`: a query (egress) remembered, or an answer
 * (ingress) timed against its query. Returns false when the header cannot be read (no payload,
 * or the segment ends before it). */
static __always_inline bool pt_dns_msg(struct __sk_buff *skb, __u64 cg, __u8 proto, __u16 port,
				       __u32 dns, bool egress)
{
	__u8 h[3]; /* DNS id (network order), then the byte with QR */
	if (bpf_skb_load_bytes(skb, dns, h, sizeof(h)))
		return false;
	bool is_response = h[2] & 0x80;
	struct pt_dns_key key = { .cgroup_id = cg, .port = port, .proto = proto };
	__builtin_memcpy(&key.id, h, 2);
	if (egress) {
		if (is_response)
			return true;
		struct pt_dns_start start = { .ts = bpf_ktime_get_ns() };
		bpf_get_current_comm(start.comm, sizeof(start.comm));
		if (bpf_map_update_elem(&dns_start, &key, &start, BPF_ANY))
			pt_count_error(PT_ERR_INFLIGHT_FULL);
		return true;
	}
	if (!is_response)
		return true;
	struct pt_dns_start *start = bpf_map_lookup_elem(&dns_start, &key);
	if (!start)
		return true;
	struct pt_dns_start s = *start;
	if (bpf_map_delete_elem(&dns_start, &key))
		return true; /* a duplicate response on the other CPU took it */
	__u64 now = bpf_ktime_get_ns();
	pt_hist_add(cg, s.comm, PT_PROBE_DNS, PT_OP_NONE, now - s.ts, now);
	return true;
}

static __always_inline void pt_dns(struct __sk_buff *skb, __u64 cg, bool egress)
{
	__u8 proto = 0;
	int off = pt_l4(skb, &proto);
	if (off < 0 || (proto != IPPROTO_UDP && proto != IPPROTO_TCP))
		return;
	__u16 ports[2]; /* source, destination (network order): the same place in UDP and TCP */
	if (bpf_skb_load_bytes(skb, off, ports, sizeof(ports)))
		return;
	__u16 port = bpf_htons(pt_dns_port);
	if (egress ? ports[1] != port : ports[0] != port)
		return; /* not to (egress) or from (ingress) the resolver */
	__u16 client = egress ? ports[0] : ports[1];
	if (proto == IPPROTO_UDP) {
		pt_dns_msg(skb, cg, proto, client, off + 8 /* after the UDP header */, egress);
		return;
	}
	__u8 doff;
	if (bpf_skb_load_bytes(skb, off + 12, &doff, 1))
		return;
	__u32 msg = off + (doff >> 4) * 4; /* the first length prefix, after the TCP header */
	for (int i = 0; i < PT_DNS_MAX_MSGS; i++) {
		__u16 len;
		if (bpf_skb_load_bytes(skb, msg, &len, sizeof(len)))
			break; /* no payload (a handshake or an ACK), or the end of the segment */
		if (!pt_dns_msg(skb, cg, proto, client, msg + 2, egress))
			break;
		msg += 2 + bpf_ntohs(len);
	}
}

/* An RTT sample in microseconds. jiffies order the CPUs' latest values: cheaper than a clock
 * read, and a tie within a tick is between two equally recent samples. */
static __always_inline void pt_rtt_sample(__u64 cg, const char *comm, __u32 srtt_us)
{
	if (srtt_us) /* 0: no RTT measured yet (a listener, a handshake in progress) */
		pt_hist_add(cg, comm, PT_PROBE_TCP_RTT, PT_OP_NONE, (__u64)srtt_us * 1000,
			    bpf_jiffies64());
}

static const char pt_other[PT_COMM_LEN]; /* all zero: process_name="other" */

static __always_inline int pt_pkt(struct __sk_buff *skb, int dir)
{
	__u64 cg = bpf_skb_cgroup_id(skb);
	struct pt_pkt_target *t = bpf_map_lookup_elem(&pkt_targets, &cg);
	if (!t)
		return 1; /* not tracked for a packet probe */
	__u32 probes = t->probes;
	if (probes & PT_BIT(PT_PROBE_NETWORK_BYTES)) {
		t->dir[dir].bytes += skb->len; /* per-CPU value: no atomic needed */
		t->dir[dir].events += 1;
	}
	if (probes & PT_BIT(PT_PROBE_DNS))
		pt_dns(skb, cg, dir == PT_NET_SEND);
	if (dir == PT_NET_RECV && (probes & PT_BIT(PT_PROBE_TCP_RTT))) {
		struct bpf_sock *sk = skb->sk;
		struct bpf_tcp_sock *tp = sk ? bpf_tcp_sock(sk) : NULL;
		if (tp)
			pt_rtt_sample(cg, pt_other, tp->srtt_us >> 3);
	}
	return 1; /* never drop: podtrace only observes */
}

SEC("cgroup_skb/egress")
int pt_pkt_egress(struct __sk_buff *skb)
{
	return pt_pkt(skb, PT_NET_SEND);
}

SEC("cgroup_skb/ingress")
int pt_pkt_ingress(struct __sk_buff *skb)
{
	return pt_pkt(skb, PT_NET_RECV);
}

/* --- Lower rungs: the socket calls, in the calling task's context (its cgroup, or its process
 * with PT_FILTER_TGID, is the filter). `btf`: sk is a BTF pointer (tp_btf: plain loads and
 * bpf_skc_to_tcp_sock), else CO-RE reads; a constant after inlining. --- */
static __always_inline void pt_sock(struct sock *sk, int ret, int flags, int dir, bool btf)
{
	if (ret <= 0 || !sk)
		return;
	__u64 cg = pt_current_cgroup();
	struct pt_pkt_target *t = bpf_map_lookup_elem(&pkt_targets, &cg);
	if (!t)
		return;
	__u16 family = btf ? sk->__sk_common.skc_family : BPF_CORE_READ(sk, __sk_common.skc_family);
	if (family != AF_INET && family != AF_INET6)
		return; /* unix sockets, netlink, ... */
	if ((t->probes & PT_BIT(PT_PROBE_NETWORK_BYTES)) && !(flags & MSG_PEEK)) {
		t->dir[dir].bytes += ret;
		t->dir[dir].events += 1;
	}
	if (!(t->probes & PT_BIT(PT_PROBE_TCP_RTT)))
		return;
	__u32 srtt_us;
	if (btf) {
		struct tcp_sock *tp = bpf_skc_to_tcp_sock(sk);
		if (!tp)
			return;
		srtt_us = tp->srtt_us >> 3;
	} else {
		if (BPF_CORE_READ(sk, sk_protocol) != IPPROTO_TCP)
			return;
		srtt_us = BPF_CORE_READ((struct tcp_sock *)sk, srtt_us) >> 3;
	}
	char comm[PT_COMM_LEN];
	bpf_get_current_comm(comm, sizeof(comm));
	pt_rtt_sample(cg, comm, srtt_us);
}

SEC("tp_btf/sock_send_length")
int BPF_PROG(pt_sock_send_btf, struct sock *sk, int ret, int flags)
{
	pt_sock(sk, ret, flags, PT_NET_SEND, true);
	return 0;
}

SEC("tp_btf/sock_recv_length")
int BPF_PROG(pt_sock_recv_btf, struct sock *sk, int ret, int flags)
{
	pt_sock(sk, ret, flags, PT_NET_RECV, true);
	return 0;
}

SEC("raw_tracepoint/sock_send_length")
int pt_sock_send_raw(struct bpf_raw_tracepoint_args *ctx)
{
	pt_sock((struct sock *)ctx->args[0], (int)ctx->args[1], (int)ctx->args[2], PT_NET_SEND,
		false);
	return 0;
}

SEC("raw_tracepoint/sock_recv_length")
int pt_sock_recv_raw(struct bpf_raw_tracepoint_args *ctx)
{
	pt_sock((struct sock *)ctx->args[0], (int)ctx->args[1], (int)ctx->args[2], PT_NET_RECV,
		false);
	return 0;
}

SEC("tracepoint/sock/sock_send_length")
int pt_sock_send_tp(struct trace_event_raw_sock_msg_length *ctx)
{
	pt_sock(ctx->sk, ctx->ret, ctx->flags, PT_NET_SEND, false);
	return 0;
}

SEC("tracepoint/sock/sock_recv_length")
int pt_sock_recv_tp(struct trace_event_raw_sock_msg_length *ctx)
{
	pt_sock(ctx->sk, ctx->ret, ctx->flags, PT_NET_RECV, false);
	return 0;
}
