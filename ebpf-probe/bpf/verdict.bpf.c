/* Verdict's TC programs: Kubernetes NetworkPolicy enforcement on the host side of pod veths.
 *
 *   verdict_from_pod  tc ingress of the host veth = traffic leaving the pod  -> the pod's egress
 *   verdict_to_pod    tc egress  of the host veth = traffic entering the pod -> the pod's ingress
 *
 * Fail closed: a packet is judged or dropped, never passed unparsed.
 * - A pod's packets must come from its own addresses (`ifaces`, by the veth's ifindex), and
 *   packets into its veth must be for them: no pod can speak for another.
 * - A packet with no conntrack entry is judged as a new connection, whatever its TCP flags.
 *   Entries are created only by such a verdict, keyed by the judged packet's tuple (its sender
 *   is the initiator); a packet matching the reverse of an entry is a reply. Every entry carries
 *   the policy generation its decisions were taken under: under another generation they are
 *   taken again (a revoked allow ends the connection; an unchanged one is not logged again).
 * - Fragments: the first fragment must hold the whole transport header; its verdict is kept by
 *   (addresses, IP identification) and applied to the later fragments, which carry no ports. A
 *   later fragment without a first one, or one overlapping the TCP header, is dropped.
 * - IPv6 extension headers are walked to the transport header (at most MAX_EXT_HEADERS).
 * - A conntrack insert that fails still judges the packet (without remembering the decision).
 * Decisions of isolated pods are reported through the `events` ring buffer; drops taken before
 * any policy decision and lost events are counted in `stats`.
 *
 * Services: at verdict_from_pod a packet to a Service address has not been DNATed yet (kube-proxy
 * runs in netfilter after tc ingress). Its egress decision is deferred by a mark bit and taken in
 * verdict_to_pod, after DNAT, against the backend pod the connection actually reaches: on the
 * backend's veth when it is local, on the node's uplink (verdict_to_pod attached there at tc
 * egress) when it is on another node.
 *
 * Policy lookup (compiled by src/kernel/compile.rs from the policy engine): every rule of every
 * policy isolating (pod, direction) has a bit, in chunks of 64; per chunk, the peer selects a
 * mask of rules (any-peer rules under ANY_PEER and rules selecting the peer's identity in
 * peer_masks, rules admitting its address in cidr_masks), and the rules of that mask whose ports
 * match allow the connection; their policies' bits form the event's mask.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/pkt_cls.h>
#include <linux/tcp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "verdict.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define PIN_BY_NAME 1 /* LIBBPF_PIN_BY_NAME */

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct ep_key);
	__type(value, struct ep_val);
	__uint(pinning, PIN_BY_NAME);
} endpoints SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, struct pod_dir_key);
	__type(value, struct pod_dir_val);
	__uint(pinning, PIN_BY_NAME);
} pod_dirs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1048576);
	__type(key, struct peer_key);
	__type(value, struct mask_val);
	__uint(pinning, PIN_BY_NAME);
} peer_masks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 262144);
	__type(key, struct lpm_key);
	__type(value, struct mask_val);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, PIN_BY_NAME);
} cidr_masks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 262144);
	__type(key, __u32);
	__type(value, struct rule);
	__uint(pinning, PIN_BY_NAME);
} rules SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct named_key);
	__type(value, struct named_val);
	__uint(pinning, PIN_BY_NAME);
} named_ports SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, struct ep_key);
	__type(value, __u32);
	__uint(pinning, PIN_BY_NAME);
} service_ips SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 262144);
	__type(key, struct ct_key);
	__type(value, struct ct_val);
	__uint(pinning, PIN_BY_NAME);
} conntrack SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct config);
	__uint(pinning, PIN_BY_NAME);
} config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);
	__type(value, struct iface_val);
	__uint(pinning, PIN_BY_NAME);
} ifaces SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct frag_key);
	__type(value, struct frag_val);
	__uint(pinning, PIN_BY_NAME);
} frags SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, STATS);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, PIN_BY_NAME);
} stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 22);
	__uint(pinning, PIN_BY_NAME);
} events SEC(".maps");

#define NSEC_PER_SEC 1000000000ULL
#define DENIED (CT_EGRESS_DENIED | CT_INGRESS_DENIED)

#define FRAG_NONE 0
#define FRAG_FIRST 1
#define FRAG_LATER 2

#define PARSE_OK 0
#define PARSE_PASS 1 /* not IP, or neighbour discovery: not policy's business */
#define PARSE_DROP 2 /* malformed: dropped (STAT_MALFORMED) */

#define IPPROTO_AH_ 51
#define IPPROTO_HOPOPTS_ 0
#define IPPROTO_ROUTING_ 43
#define IPPROTO_FRAGMENT_ 44
#define IPPROTO_DSTOPTS_ 60

struct pkt {
	struct ct_key key; /* addresses, ports, protocol */
	__u32 frag_id;
	__u8 frag;     /* FRAG_* */
	__u8 syn_only; /* TCP SYN without ACK */
	__u8 is_tcp;
	__u8 v6;
};

static __always_inline void count(__u32 stat)
{
	__u64 *n = bpf_map_lookup_elem(&stats, &stat);
	if (n)
		__sync_fetch_and_add(n, 1);
}

static __always_inline int is_ext_header(__u8 proto)
{
	return proto == IPPROTO_HOPOPTS_ || proto == IPPROTO_ROUTING_ || proto == IPPROTO_DSTOPTS_ ||
	       proto == IPPROTO_AH_ || proto == IPPROTO_FRAGMENT_;
}

static __always_inline int parse(struct __sk_buff *skb, struct pkt *p)
{
	__u16 eth_proto;
	__u32 off, end, later_at = 0;
	__u8 proto;

	__builtin_memset(p, 0, sizeof(*p));
	if (bpf_skb_load_bytes(skb, 12, &eth_proto, sizeof(eth_proto)) < 0)
		return PARSE_PASS; /* shorter than an Ethernet header: no IP in it */
	if (eth_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr ip;
		__u16 frag_off;
		if (bpf_skb_load_bytes(skb, ETH_HLEN, &ip, sizeof(ip)) < 0 || ip.ihl < 5)
			return PARSE_DROP;
		p->key.src[10] = 0xff;
		p->key.src[11] = 0xff;
		__builtin_memcpy(&p->key.src[12], &ip.saddr, 4);
		p->key.dst[10] = 0xff;
		p->key.dst[11] = 0xff;
		__builtin_memcpy(&p->key.dst[12], &ip.daddr, 4);
		proto = ip.protocol;
		off = ETH_HLEN + ip.ihl * 4;
		/* A GSO packet larger than 64 KiB (BIG TCP) has no total length. */
		end = ip.tot_len ? ETH_HLEN + bpf_ntohs(ip.tot_len) : skb->len;
		frag_off = bpf_ntohs(ip.frag_off);
		p->frag_id = ip.id;
		if (frag_off & 0x1fff) {
			p->frag = FRAG_LATER;
			later_at = (frag_off & 0x1fff) * 8;
		} else if (frag_off & 0x2000) {
			p->frag = FRAG_FIRST;
		}
	} else if (eth_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr ip6;
		if (bpf_skb_load_bytes(skb, ETH_HLEN, &ip6, sizeof(ip6)) < 0)
			return PARSE_DROP;
		p->v6 = 1;
		__builtin_memcpy(p->key.src, &ip6.saddr, 16);
		__builtin_memcpy(p->key.dst, &ip6.daddr, 16);
		proto = ip6.nexthdr;
		off = ETH_HLEN + sizeof(struct ipv6hdr);
		end = ip6.payload_len ? off + bpf_ntohs(ip6.payload_len) : skb->len;
#pragma unroll
		for (int i = 0; i < MAX_EXT_HEADERS; i++) {
			__u8 h[8];
			if (!is_ext_header(proto) || p->frag == FRAG_LATER)
				break;
			if (bpf_skb_load_bytes(skb, off, h, sizeof(h)) < 0)
				return PARSE_DROP;
			if (proto == IPPROTO_FRAGMENT_) {
				__u16 fo = ((__u16)h[2] << 8) | h[3];
				__builtin_memcpy(&p->frag_id, &h[4], 4);
				if (fo & 0xfff8) {
					/* The headers after this one are in the first fragment only. */
					p->frag = FRAG_LATER;
					later_at = fo & 0xfff8;
				} else if (fo & 1) {
					p->frag = FRAG_FIRST;
				}
				off += 8;
			} else if (proto == IPPROTO_AH_) {
				off += ((__u32)h[1] + 2) * 4;
			} else {
				off += ((__u32)h[1] + 1) * 8;
			}
			proto = h[0];
		}
		if (p->frag != FRAG_LATER && is_ext_header(proto))
			return PARSE_DROP; /* a header chain longer than we walk */
		/* Neighbour discovery keeps the link alive whatever policies say. */
		if (proto == IPPROTO_ICMPV6 && p->frag == FRAG_NONE) {
			__u8 type;
			if (bpf_skb_load_bytes(skb, off, &type, 1) < 0)
				return PARSE_DROP;
			if (type >= 133 && type <= 137)
				return PARSE_PASS;
		}
	} else {
		return PARSE_PASS; /* ARP and the rest */
	}
	p->key.proto = proto;
	if (p->frag == FRAG_LATER) {
		/* A fragment rewriting the TCP header (flags, ports) of the first one (RFC 1858). */
		if (proto == IPPROTO_TCP && later_at < 20)
			return PARSE_DROP;
		return PARSE_OK;
	}
	if (proto == IPPROTO_TCP || proto == IPPROTO_UDP || proto == IPPROTO_SCTP) {
		/* The whole transport header, also in a first fragment (tiny fragments are refused). */
		__u32 need = proto == IPPROTO_TCP ? 20 : proto == IPPROTO_UDP ? 8 : 12;
		__u16 ports[2];
		if (off + need > end || bpf_skb_load_bytes(skb, off, ports, sizeof(ports)) < 0)
			return PARSE_DROP;
		p->key.sport = bpf_ntohs(ports[0]);
		p->key.dport = bpf_ntohs(ports[1]);
	}
	if (proto == IPPROTO_TCP) {
		__u8 flags;
		if (bpf_skb_load_bytes(skb, off + 13, &flags, 1) < 0)
			return PARSE_DROP;
		p->is_tcp = 1;
		p->syn_only = (flags & 0x12) == 0x02; /* SYN set, ACK clear */
	}
	return PARSE_OK;
}

static __always_inline void reverse(const struct ct_key *k, struct ct_key *r)
{
	__builtin_memcpy(r->src, k->dst, 16);
	__builtin_memcpy(r->dst, k->src, 16);
	r->sport = k->dport;
	r->dport = k->sport;
	r->proto = k->proto;
	r->pad[0] = r->pad[1] = r->pad[2] = 0;
}

static __always_inline int same_ip(const __u8 *a, const __u8 *b)
{
	__u64 a0, a1, b0, b1;
	__builtin_memcpy(&a0, a, 8);
	__builtin_memcpy(&a1, a + 8, 8);
	__builtin_memcpy(&b0, b, 8);
	__builtin_memcpy(&b1, b + 8, 8);
	return a0 == b0 && a1 == b1;
}

/* Whether `ip` is an address of the pod behind the veth `iface`. */
static __always_inline int pod_owns(const struct iface_val *iface, const __u8 *ip)
{
#pragma unroll
	for (int i = 0; i < MAX_IFACE_IPS; i++) {
		if (i < iface->n_ips && same_ip(iface->ips[i], ip))
			return 1;
	}
	return 0;
}

static __always_inline int port_matches(const struct rule *r, __u8 proto, __u16 dport, __u32 dest_identity)
{
	if (r->n_ports == 0)
		return 1;
	for (int j = 0; j < MAX_PORTS; j++) {
		if (j >= r->n_ports)
			break;
		const struct port_range *p = &r->ports[j];
		if (p->proto != proto)
			continue;
		if (p->named) {
			struct named_key nk = {.identity = dest_identity, .name_id = p->lo, .proto = proto};
			struct named_val *nv;
			if (dest_identity == 0)
				continue;
			nv = bpf_map_lookup_elem(&named_ports, &nk);
			if (nv && nv->port == dport)
				return 1;
		} else if (dport >= p->lo && dport <= p->hi) {
			return 1;
		}
	}
	return 0;
}

/* The allowing policies of the decision being taken (per CPU: a program runs to its end on
 * one CPU), kept off the 512-byte stack. */
struct scratch_val {
	__u64 policy_mask[POLICY_WORDS];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct scratch_val);
} scratch SEC(".maps");

static __always_inline struct scratch_val *get_scratch(void)
{
	__u32 zero = 0;
	return bpf_map_lookup_elem(&scratch, &zero);
}

struct rule_loop_ctx {
	__u64 mask; /* rules of the current chunk the peer selects */
	__u8 ip[16];
	__u32 local_id;
	__u32 dir;
	__u32 version;
	__u32 rule_base;
	__u32 n_rules;
	__u32 dest_identity;
	__u32 peer_identity; /* 0: the peer is not a pod */
	__u32 use_cidr;
	__u16 dport;
	__u8 proto;
	__u8 any; /* some rule matched */
};

/* The rules of chunk `chunk` the peer selects. */
static __always_inline __u64 chunk_mask(struct rule_loop_ctx *c, __u16 chunk)
{
	struct peer_key key = {.local_id = c->local_id, .dir = c->dir, .chunk = chunk, .identity = ANY_PEER,
			       .version = c->version};
	struct mask_val *m = bpf_map_lookup_elem(&peer_masks, &key);
	__u64 mask = m ? m->mask : 0;
	if (c->peer_identity) {
		key.identity = c->peer_identity;
		m = bpf_map_lookup_elem(&peer_masks, &key);
		if (m)
			mask |= m->mask;
	}
	if (c->use_cidr) {
		struct lpm_key lk = {.prefixlen = 96 + 128, .local_id = c->local_id, .dir = c->dir, .chunk = chunk,
				     .version = c->version};
		__builtin_memcpy(lk.ip, c->ip, 16);
		m = bpf_map_lookup_elem(&cidr_masks, &lk);
		if (m)
			mask |= m->mask;
	}
	return mask;
}

static long rule_cb(__u64 i, void *data)
{
	struct rule_loop_ctx *c = data;
	struct rule *r;
	__u32 idx;

	if (i >= c->n_rules)
		return 1;
	if ((i & 63) == 0)
		c->mask = chunk_mask(c, (__u16)(i >> 6));
	if (!(c->mask & (1ULL << (i & 63))))
		return 0;
	idx = c->rule_base + (__u32)i;
	r = bpf_map_lookup_elem(&rules, &idx);
	if (r && port_matches(r, c->proto, c->dport, c->dest_identity)) {
		struct scratch_val *s = get_scratch();
		if (s)
			s->policy_mask[(r->policy_idx >> 6) & (POLICY_WORDS - 1)] |= 1ULL << (r->policy_idx & 63);
		c->any = 1;
	}
	return 0;
}

/* One direction's decision; its allowing policies are in `scratch`. */
struct decision {
	__u64 table_version;
	__u32 local_id;
	__u8 isolated;
	__u8 allowed;
	__u8 reason;
	__u8 audit;
};

/* Decides direction `dir` of the connection `k` (the initiator's tuple) for its local pod.
 * Returns 0 when that side is not a pod enforced here (nothing decided). A global function: the
 * verifier checks it once, not at every call. */
__noinline int judge(const struct ct_key *k, __u32 dir, struct decision *d)
{
	struct ep_key ek;
	struct ep_val *enforced, *peer;
	__u32 zero = 0;
	struct config *cfg = bpf_map_lookup_elem(&config, &zero);
	struct scratch_val *s = get_scratch();

	if (!k || !d || !s)
		return 0;
	const __u8 *peer_ip = dir == DIR_EGRESS ? k->dst : k->src;
	__builtin_memset(d, 0, sizeof(*d));
	d->allowed = 1;
#pragma unroll
	for (int w = 0; w < POLICY_WORDS; w++)
		s->policy_mask[w] = 0;
	__builtin_memcpy(ek.ip, dir == DIR_EGRESS ? k->src : k->dst, 16);
	enforced = bpf_map_lookup_elem(&endpoints, &ek);
	if (!enforced || !enforced->local_id || !cfg)
		return 0;
	d->local_id = enforced->local_id;
	struct pod_dir_key pk = {.local_id = enforced->local_id, .dir = dir};
	struct pod_dir_val *pd = bpf_map_lookup_elem(&pod_dirs, &pk);
	if (!pd || !(pd->flags & PD_ISOLATED))
		return 1;
	d->isolated = 1;
	d->audit = (pd->flags & PD_AUDIT) ? 1 : 0;
	d->table_version = pd->table_version;
	__builtin_memcpy(ek.ip, peer_ip, 16);
	peer = bpf_map_lookup_elem(&endpoints, &ek);
	if (dir == DIR_INGRESS && peer && (peer->flags & EP_HOST_LOCAL)) {
		d->reason = REASON_NODE_LOCAL;
		return 1;
	}
	if (pd->flags & PD_FAIL_CLOSED) {
		d->allowed = 0;
		d->reason = REASON_NO_RULE_MATCHED;
		return 1;
	}
	int peer_is_pod = peer && (peer->flags & EP_POD);
	struct rule_loop_ctx c = {
		.local_id = enforced->local_id,
		.dir = dir,
		.version = (__u32)pd->table_version,
		.rule_base = pd->rule_base,
		.n_rules = pd->n_rules,
		/* Named ports are the destination's: the pod itself for ingress, the peer for egress. */
		.dest_identity = dir == DIR_INGRESS ? pd->identity : (peer_is_pod ? peer->identity : 0),
		.peer_identity = peer_is_pod ? peer->identity : 0,
		.use_cidr = !peer_is_pod || cfg->calico,
		.dport = k->dport,
		.proto = k->proto,
	};
	__builtin_memcpy(c.ip, peer_ip, 16);
	/* bpf_loop: the verifier checks the body once, not MAX_RULES times. */
	bpf_loop(MAX_RULES, rule_cb, &c, 0);
	if (c.any) {
		d->reason = REASON_ALLOWED_BY_POLICY;
	} else {
		d->allowed = 0;
		d->reason = REASON_NO_RULE_MATCHED;
	}
	return 1;
}

static __always_inline void report(const struct ct_key *k, __u32 dir, const struct decision *d,
				   const struct config *cfg)
{
	struct verdict_event *e;
	struct scratch_val *s = get_scratch();
	if (!d->isolated || !s)
		return; /* allowed by default: nothing to log */
	e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		count(STAT_LOST_EVENTS);
		return;
	}
	e->ts_ns = bpf_ktime_get_ns();
	e->generation = cfg->generation;
	e->table_version = d->table_version;
#pragma unroll
	for (int w = 0; w < POLICY_WORDS; w++)
		e->policy_mask[w] = s->policy_mask[w];
	__builtin_memcpy(e->src, k->src, 16);
	__builtin_memcpy(e->dst, k->dst, 16);
	e->sport = k->sport;
	e->dport = k->dport;
	e->local_id = d->local_id;
	e->proto = k->proto;
	e->dir = dir;
	e->allowed = d->allowed;
	e->reason = d->reason;
	e->audit = d->audit;
	e->pad[0] = e->pad[1] = e->pad[2] = 0;
	bpf_ringbuf_submit(e, 0);
}

static __always_inline __u32 decided_bit(__u32 dir)
{
	return dir == DIR_EGRESS ? CT_EGRESS_DECIDED : CT_INGRESS_DECIDED;
}

static __always_inline __u32 denied_bit(__u32 dir)
{
	return dir == DIR_EGRESS ? CT_EGRESS_DENIED : CT_INGRESS_DENIED;
}

/* Takes direction `dir`'s decision for the connection `k` into `flags` (reported only when
 * `quiet_if_same` is 0 or the outcome differs from the one `flags` held). */
__noinline __u32 decide_dir(const struct ct_key *k, __u32 dir, __u32 flags, int quiet_if_same)
{
	struct decision d;
	__u32 zero = 0;
	struct config *cfg = bpf_map_lookup_elem(&config, &zero);
	if (!cfg || !k)
		return flags | decided_bit(dir) | denied_bit(dir);
	__u32 was_denied = flags & denied_bit(dir);
	flags = (flags & ~denied_bit(dir)) | decided_bit(dir);
	if (!judge(k, dir, &d))
		return flags;
	/* Audit: the connection proceeds and is treated as allowed (the deny is logged). */
	__u32 now_denied = (!d.allowed && !d.audit) ? denied_bit(dir) : 0;
	if (!quiet_if_same || !was_denied != !now_denied)
		report(k, dir, &d, cfg);
	return flags | now_denied;
}

/* Takes the decisions of `want` this entry lacks, and re-takes those of another generation.
 * Returns the entry's flags. */
__noinline __u32 settle(const struct ct_key *k, struct ct_val *ct, __u32 want)
{
	__u32 zero = 0;
	struct config *cfg = bpf_map_lookup_elem(&config, &zero);
	if (!cfg || !k || !ct)
		return DENIED;
	__u32 flags = ct->flags;
	if (ct->generation != cfg->generation) {
		if (!(flags & CT_SERVICE)) {
			if (flags & CT_EGRESS_DECIDED)
				flags = decide_dir(k, DIR_EGRESS, flags, 1);
			if (flags & CT_INGRESS_DECIDED)
				flags = decide_dir(k, DIR_INGRESS, flags, 1);
		}
		ct->generation = cfg->generation;
	}
	if ((want & CT_EGRESS_DECIDED) && !(flags & CT_EGRESS_DECIDED))
		flags = decide_dir(k, DIR_EGRESS, flags, 0);
	/* An egress denial ends it: the ingress side never sees the packet. */
	if ((want & CT_INGRESS_DECIDED) && !(flags & CT_INGRESS_DECIDED) && !(flags & CT_EGRESS_DENIED))
		flags = decide_dir(k, DIR_INGRESS, flags, 0);
	if (flags != ct->flags)
		ct->flags = flags;
	return flags;
}

static __always_inline void touch(struct ct_val *ct, __u64 now)
{
	/* At most one write a second: the established path stays read-only. */
	if (now - ct->last_seen > NSEC_PER_SEC)
		ct->last_seen = now;
}

/* Whether a packet from the initiator starts a new connection on an existing entry's tuple
 * (logged as one): UDP/ICMP after the idle window, a TCP SYN after 60 s. */
static __always_inline int starts_over(const struct pkt *p, const struct ct_val *ct, const struct config *cfg, __u64 now)
{
	if (!p->is_tcp && p->key.proto != IPPROTO_SCTP)
		return now - ct->last_seen > cfg->idle_ns;
	return p->syn_only && now - ct->last_seen > 60 * NSEC_PER_SEC;
}

/* The established path, kept to one or two hash lookups: an unfragmented packet of a connection
 * decided under the current policy generation for everything this hook needs (`want`), or a
 * reply to one. Returns TC_ACT_OK, or -1 for the full path (new connections, other generations,
 * denials, Service entries, fragments, a tuple starting over). */
static __always_inline int current(const struct pkt *p, struct ct_val *ct, __u32 want,
				   const struct config *cfg, __u64 now)
{
	if (!ct || ct->generation != cfg->generation || (ct->flags & (DENIED | CT_SERVICE)) ||
	    (ct->flags & want) != want || starts_over(p, ct, cfg, now))
		return 0;
	touch(ct, now);
	return 1;
}

static __always_inline int established(const struct pkt *p, __u32 want, const struct config *cfg, __u64 now)
{
	if (p->frag != FRAG_NONE)
		return -1;
	struct ct_val *ct = bpf_map_lookup_elem(&conntrack, &p->key);
	if (ct)
		return current(p, ct, want, cfg, now) ? TC_ACT_OK : -1;
	struct ct_key rev;
	reverse(&p->key, &rev);
	ct = bpf_map_lookup_elem(&conntrack, &rev);
	return current(p, ct, 0, cfg, now) ? TC_ACT_OK : -1;
}

/* The conntrack step of a hook deciding `want` (CT_*_DECIDED bits) for new connections.
 * Returns TC_ACT_OK or TC_ACT_SHOT. */
static __always_inline int conn(struct pkt *p, __u32 want, const struct config *cfg, __u64 now)
{
	struct ct_key rev;
	struct ct_val *fwd = bpf_map_lookup_elem(&conntrack, &p->key);
	struct ct_val *back = 0;

	if (!fwd || (fwd->flags & DENIED)) {
		reverse(&p->key, &rev);
		back = bpf_map_lookup_elem(&conntrack, &rev);
		if (back && !(back->flags & DENIED) && !starts_over(p, back, cfg, now)) {
			/* A reply. Its connection's decisions hold only under their generation. */
			if (settle(&rev, back, 0) & DENIED)
				return TC_ACT_SHOT;
			touch(back, now);
			return TC_ACT_OK;
		}
	}
	if (fwd) {
		if (starts_over(p, fwd, cfg, now)) {
			fwd->flags &= CT_SERVICE;
			fwd->generation = cfg->generation;
		}
		__u32 flags = settle(&p->key, fwd, want);
		touch(fwd, now);
		return (flags & DENIED) ? TC_ACT_SHOT : TC_ACT_OK;
	}
	/* New: this packet's sender is the initiator, whatever its flags. */
	struct ct_val fresh = {.last_seen = now, .generation = cfg->generation};
	if (bpf_map_update_elem(&conntrack, &p->key, &fresh, BPF_NOEXIST) == 0)
		fwd = bpf_map_lookup_elem(&conntrack, &p->key);
	if (!fwd) {
		/* No entry to remember the decision in: judge this packet alone. */
		count(STAT_CT_FULL);
		return (settle(&p->key, &fresh, want) & DENIED) ? TC_ACT_SHOT : TC_ACT_OK;
	}
	__u32 flags = settle(&p->key, fwd, want);
	if (back && !(flags & DENIED))
		/* The denied entry of the other way was this connection's reply misjudged as a
		 * connection of its own (its entry had been evicted): the allowed one replaces it. */
		bpf_map_delete_elem(&conntrack, &rev);
	return (flags & DENIED) ? TC_ACT_SHOT : TC_ACT_OK;
}

static __always_inline void frag_key_of(const struct pkt *p, struct frag_key *fk)
{
	__builtin_memcpy(fk->src, p->key.src, 16);
	__builtin_memcpy(fk->dst, p->key.dst, 16);
	fk->id = p->frag_id;
	/* IPv4 names a datagram by (addresses, protocol, id); IPv6 by (addresses, id). */
	fk->proto = p->v6 ? 0 : p->key.proto;
}

/* A later fragment gets its first fragment's verdict; without one it is dropped. */
static __always_inline int later_fragment(const struct pkt *p)
{
	struct frag_key fk;
	frag_key_of(p, &fk);
	struct frag_val *v = bpf_map_lookup_elem(&frags, &fk);
	if (v && v->pass)
		return TC_ACT_OK;
	count(STAT_FRAGMENT);
	return TC_ACT_SHOT;
}

static __always_inline int remember_first_fragment(const struct pkt *p, int act, __u64 now)
{
	if (p->frag == FRAG_FIRST) {
		struct frag_key fk;
		struct frag_val v = {.seen = now, .pass = act == TC_ACT_OK};
		frag_key_of(p, &fk);
		bpf_map_update_elem(&frags, &fk, &v, BPF_ANY);
	}
	return act;
}

static __always_inline struct config *get_config(void)
{
	__u32 zero = 0;
	return bpf_map_lookup_elem(&config, &zero);
}

/* The parse outcome as a TC action, counting drops; -1: go on. */
static __always_inline int parsed(struct __sk_buff *skb, struct pkt *p)
{
	int r = parse(skb, p);
	if (r == PARSE_PASS)
		return TC_ACT_OK;
	if (r == PARSE_DROP) {
		count(STAT_MALFORMED);
		return TC_ACT_SHOT;
	}
	return -1;
}

static __always_inline int endpoint_is_local(const __u8 *ip)
{
	struct ep_key k;
	__builtin_memcpy(k.ip, ip, 16);
	struct ep_val *e = bpf_map_lookup_elem(&endpoints, &k);
	return e && e->local_id;
}

SEC("classifier")
int verdict_from_pod(struct __sk_buff *skb)
{
	struct pkt p;
	struct config *cfg = get_config();
	__u64 now = bpf_ktime_get_ns();
	__u32 ifindex = skb->ifindex;
	int act;

	act = parsed(skb, &p);
	if (act >= 0)
		return act;
	/* Only this veth's pod speaks through it. */
	struct iface_val *iface = bpf_map_lookup_elem(&ifaces, &ifindex);
	if (!iface || !cfg) {
		count(STAT_UNKNOWN_POD);
		return TC_ACT_SHOT;
	}
	if (!pod_owns(iface, p.key.src)) {
		count(STAT_SPOOFED);
		return TC_ACT_SHOT;
	}
	if (established(&p, CT_EGRESS_DECIDED, cfg, now) == TC_ACT_OK)
		return TC_ACT_OK;
	struct ep_key dk;
	__builtin_memcpy(dk.ip, p.key.dst, 16);
	int to_service = bpf_map_lookup_elem(&service_ips, &dk) != 0;
	if (to_service)
		skb->mark |= MARK_DEFER_EGRESS;
	if (p.frag == FRAG_LATER)
		return later_fragment(&p);
	if (to_service) {
		/* Judge after DNAT, against the backend (verdict_to_pod). Remember the pre-DNAT tuple so
		 * the replies, de-NATed back to the Service address, are recognised. */
		struct ct_val *svc = bpf_map_lookup_elem(&conntrack, &p.key);
		if (!svc) {
			struct ct_val fresh = {.last_seen = now, .generation = cfg->generation, .flags = CT_SERVICE};
			bpf_map_update_elem(&conntrack, &p.key, &fresh, BPF_ANY);
		} else {
			touch(svc, now);
		}
		return remember_first_fragment(&p, TC_ACT_OK, now);
	}
	if (!endpoint_is_local(p.key.src)) {
		count(STAT_UNKNOWN_POD);
		return TC_ACT_SHOT;
	}
	return remember_first_fragment(&p, conn(&p, CT_EGRESS_DECIDED, cfg, now), now);
}

SEC("classifier")
int verdict_to_pod(struct __sk_buff *skb)
{
	struct pkt p;
	struct config *cfg = get_config();
	__u64 now = bpf_ktime_get_ns();
	__u32 ifindex = skb->ifindex;
	__u32 deferred = skb->mark & MARK_DEFER_EGRESS;
	__u32 want = CT_INGRESS_DECIDED;
	int act;

	act = parsed(skb, &p);
	if (act >= 0)
		return act;
	if (!cfg)
		return TC_ACT_SHOT;
	struct iface_val *iface = bpf_map_lookup_elem(&ifaces, &ifindex);
	if (iface) {
		/* A pod's veth: only packets for the pod go in. */
		if (!pod_owns(iface, p.key.dst)) {
			count(STAT_NOT_FOR_POD);
			return TC_ACT_SHOT;
		}
		if (!deferred && established(&p, want, cfg, now) == TC_ACT_OK)
			return TC_ACT_OK;
		if (!endpoint_is_local(p.key.dst)) {
			count(STAT_UNKNOWN_POD);
			return TC_ACT_SHOT;
		}
	} else if (!deferred) {
		/* A node uplink: only deferred Service traffic is ours to judge. */
		return TC_ACT_OK;
	}
	if (p.frag == FRAG_LATER)
		return later_fragment(&p);
	if (deferred) {
		skb->mark &= ~MARK_DEFER_EGRESS;
		want |= CT_EGRESS_DECIDED;
	}
	return remember_first_fragment(&p, conn(&p, want, cfg, now), now);
}
