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
 *
 * counters[0] counts executions of mix_sub (tail calls taken = count - 1).
 */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>

#define MIX_SLOT 0
#define BIG_SLOT 1
#define RUNS 0

struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, __u32);
} jmp_table SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

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

SEC("classifier")
int big_frame_entry(struct __sk_buff *skb)
{
	/* 40 x 8 = 320 bytes, every slot written through volatile so the
	 * compiler can neither drop nor shrink the frame. */
	volatile __u64 frame[40];
	int ret;

#pragma unroll
	for (int i = 0; i < 40; i++)
		frame[i] = skb->len + i;
	ret = mix_sub(skb, BIG_SLOT);
	return ret + (int)frame[0] + (int)frame[39];
}

char LICENSE[] SEC("license") = "GPL";
