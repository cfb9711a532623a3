// SPDX-License-Identifier: GPL-2.0 OR MIT
/*
 * fentry_tc: a tc classifier whose verdict is configured at run time, traced
 * by fentry and fexit programs attached to it (attach_prog_fd = tc_verdict).
 *
 *   verdict_cfg[0] = the verdict tc_verdict returns (set by the agent)
 *   obs[0]         = struct observation below (read and reset by the agent)
 */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include "legacy_maps.h"
#include <bpf/bpf_core_read.h>

#define VERDICT_BUCKETS 8

/* Mirrors `Observation` in probes/agent/src/cases.rs: keep them in step. */
struct observation {
	__u64 fentry_hits;
	__u64 fexit_hits;
	/* skb->len as fentry read it (CO-RE relocated against the kernel BTF). */
	__u64 fentry_skb_len;
	/* fexit hits per returned verdict 0..7; other values go to other_hits. */
	__u64 by_verdict[VERDICT_BUCKETS];
	__u64 other_hits;
	/* ctx[1] of the last fexit, sign-extended from int. */
	__s64 last_ret;
};

LEGACY_MAP(verdict_cfg, BPF_MAP_TYPE_ARRAY, __u32, __u32, 1);

LEGACY_MAP(obs, BPF_MAP_TYPE_ARRAY, __u32, struct observation, 1);

/* The traced function's argument is the kernel's sk_buff, not __sk_buff. */
struct sk_buff {
	unsigned int len;
} __attribute__((preserve_access_index));

SEC("classifier")
int tc_verdict(struct __sk_buff *skb)
{
	__u32 k = 0;
	__u32 *v = bpf_map_lookup_elem(&verdict_cfg, &k);

	return v ? (int)*v : TC_ACT_OK;
}

SEC("fentry/tc_verdict")
int fentry_tc(unsigned long long *ctx)
{
	struct sk_buff *skb = (struct sk_buff *)ctx[0];
	struct observation *o;
	unsigned int len = 0;
	__u32 k = 0;

	o = bpf_map_lookup_elem(&obs, &k);
	if (!o)
		return 0;
	__sync_fetch_and_add(&o->fentry_hits, 1);
	if (!bpf_core_read(&len, sizeof(len), &skb->len))
		o->fentry_skb_len = len;
	return 0;
}

SEC("fexit/tc_verdict")
int fexit_tc(unsigned long long *ctx)
{
	/* ctx[1] is the return value: bpf_get_func_ret() only exists from 5.17. */
	__s64 ret = (int)ctx[1];
	struct observation *o;
	__u32 k = 0;

	o = bpf_map_lookup_elem(&obs, &k);
	if (!o)
		return 0;
	__sync_fetch_and_add(&o->fexit_hits, 1);
	/* The mask restates the bound for verifiers that lose it in the compare. */
	if ((__u64)ret < VERDICT_BUCKETS)
		__sync_fetch_and_add(&o->by_verdict[(__u32)ret & (VERDICT_BUCKETS - 1)], 1);
	else
		__sync_fetch_and_add(&o->other_hits, 1);
	o->last_ret = ret;
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
