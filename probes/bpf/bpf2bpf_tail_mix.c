// SPDX-License-Identifier: GPL-2.0 OR MIT
/*
 * bpf2bpf_tail_mix: bpf-to-bpf calls alone, and mixed with tail calls.
 *
 *   control_entry   calls a __noinline subprogram, no tail call; returns
 *                   control_sub(skb->len) = len * 3 + 7 (199 for a 64-byte frame).
 *   mix_entry       its __noinline subprogram mix_sub counts and tail-calls
 *                   jmp_table[0] (the agent puts mix_entry there: a self chain).
 *   big_frame_entry as mix_entry, but keeps a 320-byte frame live across the
 *                   call into the tail-calling subprogram (agent puts it in
 *                   jmp_table[1]).
 *   frame224_entry  the same with 224 bytes (7 x 32: under the 256-byte limit
 *                   after the verifier rounds frames up to 32), jmp_table[2].
 *   frame240_entry  the same with 240 bytes, which the verifier rounds up to
 *                   256: at the limit, jmp_table[3].
 *
 * counters[0] counts executions of mix_sub (tail calls taken = count - 1).
 */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include "legacy_maps.h"

#define MIX_SLOT 0
#define BIG_SLOT 1
#define F224_SLOT 2
#define F240_SLOT 3
#define RUNS 0

LEGACY_MAP(jmp_table, BPF_MAP_TYPE_PROG_ARRAY, __u32, __u32, 4);

LEGACY_MAP(counters, BPF_MAP_TYPE_ARRAY, __u32, __u64, 4);

static __noinline int control_sub(__u32 len)
{
	/* Opaque enough that the call cannot be folded away. */
	return (int)(len * 3 + 7);
}

SEC("classifier")
int control_entry(struct __sk_buff *skb)
{
	return control_sub(skb->len);
}

static __noinline int mix_sub(struct __sk_buff *skb, __u32 slot)
{
	__u32 idx = RUNS;
	__u64 *v = bpf_map_lookup_elem(&counters, &idx);

	if (v)
		__sync_fetch_and_add(v, 1);
	bpf_tail_call(skb, &jmp_table, slot);
	return 1;
}

SEC("classifier")
int mix_entry(struct __sk_buff *skb)
{
	/* Reached at the end of the chain, when the tail call is refused. */
	return mix_sub(skb, MIX_SLOT) == 1 ? TC_ACT_OK : 3;
}

/* A caller whose frame holds WORDS x 8 bytes live across the call into the
 * tail-calling subprogram; every slot is written through volatile so the
 * compiler can neither drop nor shrink the frame. */
#define FRAME_ENTRY(name, WORDS, SLOT)                        \
	SEC("classifier")                                     \
	int name(struct __sk_buff *skb)                       \
	{                                                     \
		volatile __u64 frame[WORDS];                  \
		int ret;                                      \
		_Pragma("unroll")                             \
		for (int i = 0; i < WORDS; i++)               \
			frame[i] = skb->len + i;              \
		ret = mix_sub(skb, SLOT);                     \
		return ret + (int)frame[0] + (int)frame[WORDS - 1]; \
	}

FRAME_ENTRY(big_frame_entry, 40, BIG_SLOT)
FRAME_ENTRY(frame224_entry, 28, F224_SLOT)
FRAME_ENTRY(frame240_entry, 30, F240_SLOT)

char LICENSE[] SEC("license") = "GPL";
