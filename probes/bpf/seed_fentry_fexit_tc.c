// SPDX-License-Identifier: GPL-2.0 OR MIT
/*
 * seed_fentry_fexit_tc: the fentry/fexit-on-tc article's demo (seed article
 * fentry-fexit-on-tc-zh, "trace tc-bpf 程序的 demo"), as the article wrote it:
 * a tc program `dummy` that returns TC_ACT_OK, and fentry and fexit programs
 * attached to it that read each packet's sk_buff with CO-RE and send ICMP
 * packets' addresses, the probe type and (fexit) the verdict to user space
 * through a perf event array. The agent (probes/agent/src/seeds.rs) plays the
 * article's Go loader: it loads dummy, attaches it at clsact ingress on lo and
 * attaches the tracers to it (attach_prog_fd = dummy, attach_btf_id = its FUNC).
 *
 * Where this differs from the article, and why:
 * - `dummy` is in section "classifier", not "tc": aya 0.14 does not know the
 *   "tc" section name (it takes "classifier" for the same program type);
 * - the perf event array is a legacy "maps" section map (legacy_maps.h): aya
 *   0.14 gives BTF-defined maps BTF ids that kernels without BTF refuse;
 * - no vmlinux.h: struct sk_buff is declared below with preserve_access_index
 *   (only the fields read), ethhdr and iphdr come from the UAPI headers; CO-RE
 *   relocates every read against the running kernel's BTF as with vmlinux.h.
 */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include "legacy_maps.h"

/* The fields of the kernel's struct sk_buff the demo reads. */
struct sk_buff {
	unsigned char *head;
	__u16 mac_header;
	__u16 network_header;
} __attribute__((preserve_access_index));

enum probing_type {
	PROBE_TYPE_DEFAULT = 0,
	PROBE_TYPE_FENTRY,
	PROBE_TYPE_FEXIT,
	PROBE_TYPE_FREPLACE,
};

/* Mirrors `PacketEvent` decoding in probes/agent/src/seeds.rs. */
typedef struct event {
	__be32 saddr, daddr;
	__u8 probe_type;
	__u8 verdict;
	__u16 pad;
} __attribute__((packed)) event_t;

/* max_entries 0: the loader makes it one slot per CPU, as cilium/ebpf does. */
LEGACY_MAP(events, BPF_MAP_TYPE_PERF_EVENT_ARRAY, __u32, __u32, 0);

static __always_inline void
__handle_packet(void *ctx, struct iphdr *iph, enum probing_type type, int verdict)
{
	event_t ev = {};
	ev.saddr = BPF_CORE_READ(iph, saddr);
	ev.daddr = BPF_CORE_READ(iph, daddr);
	ev.probe_type = (__u8)type;
	ev.verdict = (__u8)verdict;

	bpf_perf_event_output(ctx, &events, BPF_F_CURRENT_CPU, &ev, sizeof(ev));
}

static __always_inline void
handle_tc(void *ctx, struct sk_buff *skb, enum probing_type type, int verdict)
{
	void *head = (void *)(long)BPF_CORE_READ(skb, head);
	__u16 l2_off = BPF_CORE_READ(skb, mac_header);
	__u16 l3_off = BPF_CORE_READ(skb, network_header);
	struct ethhdr *eth = head + l2_off;
	struct iphdr *iph = head + l3_off;

	if (BPF_CORE_READ(eth, h_proto) != bpf_htons(ETH_P_IP))
		return;

	if (BPF_CORE_READ(iph, protocol) != IPPROTO_ICMP)
		return;

	__handle_packet(ctx, iph, type, verdict);
}

SEC("fentry/tc")
int BPF_PROG(fentry_tc, struct sk_buff *skb)
{
	handle_tc(ctx, skb, PROBE_TYPE_FENTRY, 0);
	return 0;
}

SEC("fexit/tc")
int BPF_PROG(fexit_tc, struct sk_buff *skb, int verdict)
{
	handle_tc(ctx, skb, PROBE_TYPE_FEXIT, verdict);
	return 0;
}

SEC("classifier")
int dummy(struct __sk_buff *skb)
{
	return TC_ACT_OK;
}

/* Not in the article's excerpt, but bpf_perf_event_output and the probe reads
 * are GPL-only, so its full demo has one too. */
char LICENSE[] SEC("license") = "GPL";
