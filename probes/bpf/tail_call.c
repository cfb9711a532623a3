// SPDX-License-Identifier: GPL-2.0 OR MIT
/*
 * tail_call: how far a tail-call chain through a PROG_ARRAY gets before the
 * kernel stops it, and what a tail call to an empty slot does.
 *
 * Protocol with the agent (probes/agent/src/cases.rs):
 *   jmp_table[CHAIN_SLOT] = chain_body (set by the agent; slot EMPTY_SLOT never set)
 *   counters[RUNS]        = executions of chain_entry + chain_body
 *                           (tail calls taken = RUNS - 1)
 *   counters[FELL]        = 1 once empty_slot ran past its failed tail call
 */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include "legacy_maps.h"

#define CHAIN_SLOT 0
#define EMPTY_SLOT 3
#define RUNS 0
#define FELL 1
/* Returned only after the failed tail call: proves execution fell through. */
#define FELL_THROUGH_RETVAL 0x5a

LEGACY_MAP(jmp_table, BPF_MAP_TYPE_PROG_ARRAY, __u32, __u32, 4);

LEGACY_MAP(counters, BPF_MAP_TYPE_ARRAY, __u32, __u64, 4);

static __always_inline void bump(__u32 idx)
{
	__u64 *v = bpf_map_lookup_elem(&counters, &idx);

	if (v)
		__sync_fetch_and_add(v, 1);
}

SEC("classifier")
int chain_entry(struct __sk_buff *skb)
{
	bump(RUNS);
	bpf_tail_call(skb, &jmp_table, CHAIN_SLOT);
	/* Only reached when slot CHAIN_SLOT is empty: the chain never started. */
	return 1;
}

SEC("classifier")
int chain_body(struct __sk_buff *skb)
{
	bump(RUNS);
	bpf_tail_call(skb, &jmp_table, CHAIN_SLOT);
	/* Reached when the kernel refuses the next tail call (the limit). */
	return TC_ACT_OK;
}

SEC("classifier")
int empty_slot(struct __sk_buff *skb)
{
	bump(RUNS);
	bpf_tail_call(skb, &jmp_table, EMPTY_SLOT);
	bump(FELL);
	return FELL_THROUGH_RETVAL;
}

char LICENSE[] SEC("license") = "GPL";
