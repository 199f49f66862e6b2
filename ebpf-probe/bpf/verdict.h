/* Structures and constants shared by verdict.bpf.c and the Rust loader (src/kernel/abi.rs).
 * Every struct here has a #[repr(C)] twin on the Rust side; keep them byte-identical. */
#ifndef VERDICT_H
#define VERDICT_H

#define RULES_PER_CHUNK 64 /* rules per mask word: peer and cidr masks are kept per chunk */
#define MAX_CHUNKS 32
#define MAX_RULES (RULES_PER_CHUNK * MAX_CHUNKS) /* rules per (pod, direction) */
#define MAX_POLICIES 512                         /* policies per (pod, direction) */
#define POLICY_WORDS (MAX_POLICIES / 64)         /* the event's mask of allowing policies */
#define MAX_PORTS 8                              /* port entries per rule */
#define MAX_IFACE_IPS 4                          /* addresses of the pod behind one veth */
#define MAX_EXT_HEADERS 8                        /* IPv6 extension headers walked */

/* peer_masks identity under which rules without peers (any peer) are stored */
#define ANY_PEER 0

#define DIR_INGRESS 0
#define DIR_EGRESS 1

/* endpoint flags */
#define EP_POD 1        /* a (non-host-network) pod of the cluster */
#define EP_HOST_LOCAL 2 /* an address of this node: kubelet probes come from here */

/* pod_dir flags */
#define PD_ISOLATED 1
#define PD_AUDIT 2
#define PD_FAIL_CLOSED 4 /* its policies could not be compiled or written: every connection denied */

/* conntrack flags */
#define CT_EGRESS_DECIDED 1
#define CT_EGRESS_DENIED 2
#define CT_INGRESS_DECIDED 4
#define CT_INGRESS_DENIED 8
#define CT_SERVICE 16 /* pre-DNAT entry of a connection to a Service address */

/* stats indexes: packets dropped before any policy decision, and events lost */
#define STAT_LOST_EVENTS 0   /* ring buffer full */
#define STAT_SPOOFED 1       /* from a pod with a source address that is not the pod's */
#define STAT_NOT_FOR_POD 2   /* into a pod's veth for an address that is not the pod's */
#define STAT_FRAGMENT 3      /* a later fragment whose first fragment was not seen (or was dropped) */
#define STAT_MALFORMED 4     /* headers too short, tiny or overlapping first fragments, too many IPv6 extension headers */
#define STAT_CT_FULL 5       /* judged without a conntrack entry (the insert failed) */
#define STAT_UNKNOWN_POD 6   /* a pod veth whose pod is not in the maps (dropped: fail closed) */
#define STATS 8

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
	__u64 table_version; /* which version of this pod's tables the keys below use */
	__u32 rule_base;     /* first rule in `rules` */
	__u32 n_rules;
	__u32 flags;
	__u32 identity; /* the pod's own identity (named ports of ingress rules) */
};

struct peer_key {
	__u32 local_id;
	__u16 dir;
	__u16 chunk;    /* rules chunk*64 .. chunk*64+63 */
	__u32 identity; /* ANY_PEER: rules without peers */
	__u32 version;  /* low 32 bits of table_version */
};

struct mask_val {
	__u64 mask;
};

struct lpm_key {
	__u32 prefixlen; /* 96 + the address prefix (local_id, dir, chunk, version come first) */
	__u32 local_id;
	__u16 dir;
	__u16 chunk;
	__u32 version;
	__u8 ip[16];
};

/* The pod behind a host veth (key: its ifindex): packets from it must come from these
 * addresses, packets into it must be for them. */
struct iface_val {
	__u8 ips[MAX_IFACE_IPS][16];
	__u32 n_ips;
	__u32 pad;
};

/* Fragments: the first fragment's verdict, for the later ones (which carry no ports). */
struct frag_key {
	__u8 src[16];
	__u8 dst[16];
	__u32 id;
	__u32 proto; /* IPv4: the protocol; IPv6: 0 (the identification alone names the packet) */
};

struct frag_val {
	__u64 seen;
	__u32 pass;
	__u32 pad;
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

/* Keyed by the initiator's tuple: entries are created only by a verdict on a packet of the
 * initiator; a packet matching the reverse of an entry is a reply. */
struct ct_val {
	__u64 last_seen;  /* refreshed at most once a second */
	__u64 generation; /* policy generation of the decisions: another generation re-judges them */
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
	__u64 policy_mask[POLICY_WORDS];
	__u8 src[16]; /* the connection's initiator */
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
