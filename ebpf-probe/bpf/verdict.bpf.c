/* Verdict's TC programs: Kubernetes NetworkPolicy enforcement on the host side of pod veths.
 *
 *   verdict_from_pod  tc ingress of the host veth = traffic leaving the pod  -> the pod's egress
 *   verdict_to_pod    tc egress  of the host veth = traffic entering the pod -> the pod's ingress
 *
 * A new connection (TCP/SCTP: the first packet; UDP/ICMP: the first packet after the idle window)
 * is decided once per direction; conntrack (our own LRU map) lets established flows and replies
 * pass without re-evaluation. Decisions of isolated pods are reported through the `events` ring
 * buffer; a full ring buffer is counted in `stats[0]`.
 *
 * Services: at verdict_from_pod a packet to a Service address has not been DNATed yet (kube-proxy
 * runs in netfilter after tc ingress). Its egress decision is deferred by a mark bit and taken in
 * verdict_to_pod, after DNAT, against the backend pod the connection actually reaches: on the
 * backend's veth when it is local, on the node's uplink (verdict_to_pod attached there at tc
 * egress) when it is on another node.
 *
 * Policy lookup (compiled by src/kernel/compile.rs from the policy engine): every rule of every
 * policy isolating (pod, direction) has a bit; the peer selects a mask of rules (any-peer rules,
 * peer_masks by the peer's identity, cidr_masks by the peer's address), and the first rules of
 * that mask whose ports match allow the connection; their policies' bits form the event's mask.
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
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, PIN_BY_NAME);
} stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 22);
	__uint(pinning, PIN_BY_NAME);
} events SEC(".maps");

#define STAT_LOST_EVENTS 0

struct flow {
	struct ct_key key; /* addresses, ports, protocol */
	__u8 syn_only;     /* TCP SYN without ACK */
	__u8 is_tcp;
};

static __always_inline int parse(struct __sk_buff *skb, struct flow *f)
{
	__u16 eth_proto;
	__u32 l4_off;
	__u8 proto;

	__builtin_memset(f, 0, sizeof(*f));
	if (bpf_skb_load_bytes(skb, 12, &eth_proto, sizeof(eth_proto)) < 0)
		return -1;
	if (eth_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr ip;
		if (bpf_skb_load_bytes(skb, ETH_HLEN, &ip, sizeof(ip)) < 0)
			return -1;
		f->key.src[10] = 0xff;
		f->key.src[11] = 0xff;
		__builtin_memcpy(&f->key.src[12], &ip.saddr, 4);
		f->key.dst[10] = 0xff;
		f->key.dst[11] = 0xff;
		__builtin_memcpy(&f->key.dst[12], &ip.daddr, 4);
		proto = ip.protocol;
		l4_off = ETH_HLEN + ip.ihl * 4;
		if (ip.frag_off & bpf_htons(0x1fff))
			return -1; /* non-first fragment: no ports; pass it */
	} else if (eth_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr ip6;
		if (bpf_skb_load_bytes(skb, ETH_HLEN, &ip6, sizeof(ip6)) < 0)
			return -1;
		__builtin_memcpy(f->key.src, &ip6.saddr, 16);
		__builtin_memcpy(f->key.dst, &ip6.daddr, 16);
		proto = ip6.nexthdr;
		l4_off = ETH_HLEN + sizeof(struct ipv6hdr);
		/* Neighbour discovery keeps the link alive whatever policies say. */
		if (proto == IPPROTO_ICMPV6) {
			__u8 type;
			if (bpf_skb_load_bytes(skb, l4_off, &type, 1) < 0)
				return -1;
			if (type >= 133 && type <= 137)
				return -1;
		}
	} else {
		return -1; /* ARP and the rest: not policy's business */
	}
	f->key.proto = proto;
	if (proto == IPPROTO_TCP || proto == IPPROTO_UDP || proto == IPPROTO_SCTP) {
		__u16 ports[2];
		if (bpf_skb_load_bytes(skb, l4_off, ports, sizeof(ports)) < 0)
			return -1;
		f->key.sport = bpf_ntohs(ports[0]);
		f->key.dport = bpf_ntohs(ports[1]);
	}
	if (proto == IPPROTO_TCP) {
		__u8 flags;
		if (bpf_skb_load_bytes(skb, l4_off + 13, &flags, 1) < 0)
			return -1;
		f->is_tcp = 1;
		f->syn_only = (flags & 0x12) == 0x02; /* SYN set, ACK clear */
	}
	return 0;
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

struct rule_loop_ctx {
	__u64 mask;
	__u64 policy_mask;
	__u32 rule_base;
	__u32 n_rules;
	__u32 dest_identity;
	__u16 dport;
	__u8 proto;
	__u8 pad;
};

static long rule_cb(__u64 i, void *data)
{
	struct rule_loop_ctx *c = data;
	struct rule *r;
	__u32 idx;

	if (i >= c->n_rules)
		return 1;
	if (!(c->mask & (1ULL << (i & 63))))
		return 0;
	idx = c->rule_base + (__u32)i;
	r = bpf_map_lookup_elem(&rules, &idx);
	if (r && port_matches(r, c->proto, c->dport, c->dest_identity))
		c->policy_mask |= 1ULL << (r->policy_idx & 63);
	return 0;
}

struct decision {
	__u64 policy_mask;
	__u64 table_version;
	__u8 isolated;
	__u8 allowed;
	__u8 reason;
	__u8 audit;
};

/* Decides one direction for the enforced local pod against `peer`. */
static __always_inline void decide(struct decision *d, __u32 local_id, __u32 dir, const __u8 *peer_ip,
				   const struct ep_val *peer, __u32 dest_identity, __u8 proto, __u16 dport,
				   const struct config *cfg)
{
	struct pod_dir_key pk = {.local_id = local_id, .dir = dir};
	struct pod_dir_val *pd = bpf_map_lookup_elem(&pod_dirs, &pk);
	__u64 mask;
	__u32 version;

	__builtin_memset(d, 0, sizeof(*d));
	d->allowed = 1;
	if (!pd || !(pd->flags & PD_ISOLATED))
		return;
	d->isolated = 1;
	d->audit = (pd->flags & PD_AUDIT) ? 1 : 0;
	d->table_version = pd->table_version;
	if (dir == DIR_INGRESS && peer && (peer->flags & EP_HOST_LOCAL)) {
		d->reason = REASON_NODE_LOCAL;
		return;
	}
	if (dir == DIR_INGRESS)
		dest_identity = pd->identity;
	version = (__u32)pd->table_version;
	mask = pd->any_peer_mask;
	if (peer && (peer->flags & EP_POD)) {
		struct peer_key key = {.local_id = local_id, .dir = dir, .identity = peer->identity, .version = version};
		struct mask_val *m = bpf_map_lookup_elem(&peer_masks, &key);
		if (m)
			mask |= m->mask;
	}
	if (!(peer && (peer->flags & EP_POD)) || cfg->calico) {
		struct lpm_key key = {.prefixlen = 96 + 128, .local_id = local_id, .dir = dir, .version = version};
		struct mask_val *m;
		__builtin_memcpy(key.ip, peer_ip, 16);
		m = bpf_map_lookup_elem(&cidr_masks, &key);
		if (m)
			mask |= m->mask;
	}
	struct rule_loop_ctx c = {
		.mask = mask,
		.rule_base = pd->rule_base,
		.n_rules = pd->n_rules,
		.dest_identity = dest_identity,
		.dport = dport,
		.proto = proto,
	};
	/* bpf_loop: the verifier checks the body once, not MAX_RULES times. */
	bpf_loop(MAX_RULES, rule_cb, &c, 0);
	d->policy_mask = c.policy_mask;
	if (d->policy_mask) {
		d->reason = REASON_ALLOWED_BY_POLICY;
	} else {
		d->allowed = 0;
		d->reason = REASON_NO_RULE_MATCHED;
	}
}

static __always_inline void report(const struct flow *f, __u32 local_id, __u32 dir, const struct decision *d,
				   const struct config *cfg)
{
	struct verdict_event *e;
	if (!d->isolated)
		return; /* allowed by default: nothing to log */
	e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		__u32 k = STAT_LOST_EVENTS;
		__u64 *lost = bpf_map_lookup_elem(&stats, &k);
		if (lost)
			__sync_fetch_and_add(lost, 1);
		return;
	}
	e->ts_ns = bpf_ktime_get_ns();
	e->generation = cfg->generation;
	e->table_version = d->table_version;
	e->policy_mask = d->policy_mask;
	__builtin_memcpy(e->src, f->key.src, 16);
	__builtin_memcpy(e->dst, f->key.dst, 16);
	e->sport = f->key.sport;
	e->dport = f->key.dport;
	e->local_id = local_id;
	e->proto = f->key.proto;
	e->dir = dir;
	e->allowed = d->allowed;
	e->reason = d->reason;
	e->audit = d->audit;
	e->pad[0] = e->pad[1] = e->pad[2] = 0;
	bpf_ringbuf_submit(e, 0);
}

/* Takes (or reuses) the decision of `dir` for the connection; returns TC_ACT_SHOT to drop. */
static __always_inline int enforce(struct __sk_buff *skb, struct flow *f, struct ct_val *ct, __u32 dir,
				   const struct config *cfg, __u64 now)
{
	__u32 decided = dir == DIR_EGRESS ? CT_EGRESS_DECIDED : CT_INGRESS_DECIDED;
	__u32 denied = dir == DIR_EGRESS ? CT_EGRESS_DENIED : CT_INGRESS_DENIED;
	struct ep_key k;
	struct ep_val *enforced, *peer;
	const __u8 *peer_ip;
	struct decision d;

	/* A denial is reconsidered when policy has changed since; an allow stands (established
	 * connections keep working across policy updates). */
	if ((ct->flags & decided) && (!(ct->flags & denied) || ct->generation == cfg->generation))
		return (ct->flags & denied) ? TC_ACT_SHOT : TC_ACT_OK;
	if (f->is_tcp && !f->syn_only)
		return TC_ACT_OK; /* mid-stream packet of a connection we never saw start */

	__builtin_memcpy(k.ip, dir == DIR_EGRESS ? f->key.src : f->key.dst, 16);
	enforced = bpf_map_lookup_elem(&endpoints, &k);
	if (!enforced || !enforced->local_id) {
		ct->flags |= decided;
		return TC_ACT_OK;
	}
	__u32 local_id = enforced->local_id;
	__u32 enforced_identity = enforced->identity;
	peer_ip = dir == DIR_EGRESS ? f->key.dst : f->key.src;
	__builtin_memcpy(k.ip, peer_ip, 16);
	peer = bpf_map_lookup_elem(&endpoints, &k);
	/* For egress the destination is the peer: its named ports. */
	__u32 dest_identity = dir == DIR_EGRESS ? (peer && (peer->flags & EP_POD) ? peer->identity : 0) : enforced_identity;
	decide(&d, local_id, dir, peer_ip, peer, dest_identity, f->key.proto, f->key.dport, cfg);
	report(f, local_id, dir, &d, cfg);
	ct->flags = (ct->flags & ~denied) | decided;
	ct->generation = cfg->generation;
	if (!d.allowed) {
		ct->flags |= denied;
		if (!d.audit)
			return TC_ACT_SHOT;
		ct->flags &= ~denied; /* audit: the connection proceeds and is treated as allowed */
	}
	return TC_ACT_OK;
}

static __always_inline struct ct_val *track(struct flow *f, const struct config *cfg, __u64 now, int *reply)
{
	struct ct_key rev;
	struct ct_val *ct;

	*reply = 0;
	reverse(&f->key, &rev);
	ct = bpf_map_lookup_elem(&conntrack, &rev);
	if (ct && !(ct->flags & (CT_EGRESS_DENIED | CT_INGRESS_DENIED))) {
		ct->last_seen = now;
		*reply = 1;
		return ct;
	}
	ct = bpf_map_lookup_elem(&conntrack, &f->key);
	if (ct) {
		int idle = !f->is_tcp && f->key.proto != IPPROTO_SCTP && now - ct->last_seen > cfg->idle_ns;
		int reused = f->syn_only && now - ct->last_seen > 60ULL * 1000000000ULL;
		if (idle || reused)
			ct->flags = 0; /* a new connection on the same 5-tuple */
		ct->last_seen = now;
		return ct;
	}
	if (f->is_tcp && !f->syn_only)
		return 0;
	struct ct_val fresh = {.last_seen = now, .generation = cfg->generation};
	bpf_map_update_elem(&conntrack, &f->key, &fresh, BPF_ANY);
	return bpf_map_lookup_elem(&conntrack, &f->key);
}

static __always_inline struct config *get_config(void)
{
	__u32 zero = 0;
	return bpf_map_lookup_elem(&config, &zero);
}

SEC("classifier")
int verdict_from_pod(struct __sk_buff *skb)
{
	struct flow f;
	struct config *cfg = get_config();
	int reply;
	__u64 now = bpf_ktime_get_ns();

	if (!cfg || parse(skb, &f) < 0)
		return TC_ACT_OK;
	struct ep_key dk;
	__builtin_memcpy(dk.ip, f.key.dst, 16);
	if (bpf_map_lookup_elem(&service_ips, &dk)) {
		/* Judge after DNAT, against the backend (verdict_to_pod). Remember the pre-DNAT tuple so
		 * the replies, de-NATed back to the Service address, are recognised. */
		struct ct_val *svc = bpf_map_lookup_elem(&conntrack, &f.key);
		if (!svc) {
			struct ct_val fresh = {.last_seen = now, .generation = cfg->generation, .flags = CT_SERVICE};
			bpf_map_update_elem(&conntrack, &f.key, &fresh, BPF_ANY);
		} else {
			svc->last_seen = now;
		}
		skb->mark |= MARK_DEFER_EGRESS;
		return TC_ACT_OK;
	}
	struct ct_val *ct = track(&f, cfg, now, &reply);
	if (!ct || reply)
		return TC_ACT_OK;
	return enforce(skb, &f, ct, DIR_EGRESS, cfg, now);
}

SEC("classifier")
int verdict_to_pod(struct __sk_buff *skb)
{
	struct flow f;
	struct config *cfg = get_config();
	int reply;
	__u64 now = bpf_ktime_get_ns();

	if (!cfg || parse(skb, &f) < 0)
		return TC_ACT_OK;
	if (!(skb->mark & MARK_DEFER_EGRESS)) {
		/* On a node uplink only deferred Service traffic is ours to judge. */
		struct ep_key dk;
		__builtin_memcpy(dk.ip, f.key.dst, 16);
		struct ep_val *dst = bpf_map_lookup_elem(&endpoints, &dk);
		if (!dst || !dst->local_id)
			return TC_ACT_OK;
	}
	struct ct_val *ct = track(&f, cfg, now, &reply);
	if (!ct || reply)
		return TC_ACT_OK;
	if (skb->mark & MARK_DEFER_EGRESS) {
		skb->mark &= ~MARK_DEFER_EGRESS;
		if (enforce(skb, &f, ct, DIR_EGRESS, cfg, now) == TC_ACT_SHOT)
			return TC_ACT_SHOT;
	}
	return enforce(skb, &f, ct, DIR_INGRESS, cfg, now);
}
