/*
 * DNS latency (podtrace_dns_latency_seconds_*): queries and responses over UDP and TCP seen by
 * cgroup_skb, matched by (cgroup, protocol, client port, DNS id).
 *
 * Egress: a UDP datagram or TCP segment to pt_dns_port whose DNS header has QR=0 is a query; its
 * send time is remembered. Ingress: one from pt_dns_port with QR=1 and a remembered (port, id)
 * is its answer. Over TCP a message starts with a 2-byte length (RFC 1035 4.2.2): in a segment
 * whose payload starts with a message, the DNS header is read after it, and the next message
 * is found from that length, up to PT_DNS_MAX_MSGS messages per segment (pipelined queries or
 * answers). Not seen: messages beyond those, and a message that starts in a segment which does
 * not itself start with a message (after a message split across segments).
 * bpf_skb_load_bytes reads the headers wherever they are (linear data or fragments). The
 * process name is taken at the query: a UDP send, and the first transmission of a TCP write
 * on an idle connection, reach cgroup_skb egress synchronously, in the sender's context.
 * Unanswered queries age out of the LRU map (a timeout is not a latency). DNS over TLS is not
 * parsed.
 */
#include "podtrace_common.h"

/* The resolver port; the loader may override it (tests use a private port). */
const volatile __u16 pt_dns_port = 53;

#define IPPROTO_TCP 6
#define IPPROTO_UDP 17

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

static __always_inline int pt_dns(struct __sk_buff *skb, bool egress)
{
	__u64 cg = bpf_skb_cgroup_id(skb);
	struct pt_target *t = pt_tracked(cg, PT_PROBE_DNS);
	if (!t)
		return 1;
	__u8 proto = 0;
	int off = pt_l4(skb, &proto);
	if (off < 0 || (proto != IPPROTO_UDP && proto != IPPROTO_TCP))
		return 1;
	__u16 ports[2]; /* source, destination (network order): the same place in UDP and TCP */
	if (bpf_skb_load_bytes(skb, off, ports, sizeof(ports)))
		return 1;
	__u16 port = bpf_htons(pt_dns_port);
	if (egress ? ports[1] != port : ports[0] != port)
		return 1; /* not to (egress) or from (ingress) the resolver */
	__u16 client = egress ? ports[0] : ports[1];
	if (proto == IPPROTO_UDP) {
		pt_dns_msg(skb, cg, proto, client, off + 8 /* after the UDP header */, egress);
		return 1;
	}
	__u8 doff;
	if (bpf_skb_load_bytes(skb, off + 12, &doff, 1))
		return 1;
	__u32 msg = off + (doff >> 4) * 4; /* the first length prefix, after the TCP header */
	for (int i = 0; i < PT_DNS_MAX_MSGS; i++) {
		__u16 len;
		if (bpf_skb_load_bytes(skb, msg, &len, sizeof(len)))
			break; /* no payload (a handshake or an ACK), or the end of the segment */
		if (!pt_dns_msg(skb, cg, proto, client, msg + 2, egress))
			break;
		msg += 2 + bpf_ntohs(len);
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
