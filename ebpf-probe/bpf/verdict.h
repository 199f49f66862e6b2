/* Structures and constants shared by verdict.bpf.c and the Rust loader (src/kernel/abi.rs).
 * Every struct here has a #[repr(C)] twin on the Rust side; keep them byte-identical. */
#ifndef VERDICT_H
#define VERDICT_H

#define MAX_RULES 64 /* rules per (pod, direction): one bit each in a u64 mask */
#define MAX_PORTS 8  /* port entries per rule */

#define DIR_INGRESS 0
#define DIR_EGRESS 1

/* endpoint flags */
#define EP_POD 1        /* a (non-host-network) pod of the cluster */
#define EP_HOST_LOCAL 2 /* an address of this node: kubelet probes come from here */

/* pod_dir flags */
#define PD_ISOLATED 1
#define PD_AUDIT 2

/* conntrack flags */
#define CT_EGRESS_DECIDED 1
#define CT_EGRESS_DENIED 2
#define CT_INGRESS_DECIDED 4
#define CT_INGRESS_DENIED 8
#define CT_SERVICE 16 /* pre-DNAT entry of a connection to a Service address */

/* event reasons (src/kernel/abi.rs maps them to verdict_policy::Reason) */
#define REASON_ALLOWED_BY_POLICY 1
#define REASON_NODE_LOCAL 2
#define REASON_NO_RULE_MATCHED 3

/* skb->mark bit: egress decision deferred to after kube-proxy's DNAT */
#define MARK_DEFER_EGRESS 0x10000000

struct ep_key {
	__u8 ip[16]; /* IPv4 as ::ffff:a.b.c.d */
};

struct ep_val {
	__u32 identity; /* class of pods with equal namespace, labels and named ports; 0 if not a pod */
	__u32 local_id; /* non-zero for a pod enforced on this node */
	__u32 flags;
	__u32 pad;
};

struct pod_dir_key {
	__u32 local_id;
	__u32 dir;
};

struct pod_dir_val {
	__u64 any_peer_mask; /* rules without peers */
	__u64 table_version; /* which version of this pod's tables the keys below use */
	__u32 rule_base;     /* first rule in `rules` */
	__u32 n_rules;
	__u32 flags;
	__u32 identity; /* the pod's own identity (named ports of ingress rules) */
};

struct peer_key {
	__u32 local_id;
	__u32 dir;
	__u32 identity;
	__u32 version; /* low 32 bits of table_version */
};

struct mask_val {
	__u64 mask;
};

struct lpm_key {
	__u32 prefixlen; /* 96 + the address prefix (local_id, dir, version come first) */
	__u32 local_id;
	__u32 dir;
	__u32 version;
	__u8 ip[16];
};

struct port_range {
	__u8 proto;
	__u8 named; /* lo is a name id, resolved through named_ports */
	__u16 lo;
	__u16 hi;
	__u16 pad;
};

struct rule {
	__u32 policy_idx; /* index into this (pod, direction)'s policy list: bit of the event mask */
	__u32 n_ports;    /* 0: every port and protocol */
	struct port_range ports[MAX_PORTS];
};

struct named_key {
	__u32 identity;
	__u32 name_id;
	__u32 proto;
	__u32 pad;
};

struct named_val {
	__u32 port;
	__u32 pad;
};

struct ct_key {
	__u8 src[16];
	__u8 dst[16];
	__u16 sport;
	__u16 dport;
	__u8 proto;
	__u8 pad[3];
};

struct ct_val {
	__u64 last_seen;
	__u64 generation; /* policy generation of the last decision */
	__u32 flags;
	__u32 pad;
};

struct config {
	__u64 generation;
	__u64 idle_ns;  /* UDP/ICMP connection idle window */
	__u32 calico;   /* ipBlock matches pod IPs */
	__u32 pad;
};

struct verdict_event {
	__u64 ts_ns; /* bpf_ktime_get_ns */
	__u64 generation;
	__u64 table_version;
	__u64 policy_mask;
	__u8 src[16];
	__u8 dst[16];
	__u16 sport;
	__u16 dport;
	__u32 local_id;
	__u8 proto;
	__u8 dir;
	__u8 allowed;
	__u8 reason;
	__u8 audit;
	__u8 pad[3];
};

#endif
