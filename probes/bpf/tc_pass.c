// SPDX-License-Identifier: GPL-2.0 OR MIT
/*
 * tc_pass: the pass-through classifier the agent keeps on lo's clsact ingress
 * for the guest's life (kernels before 6.6, without TCX). The cases' tc
 * programs join it at its priority, in front of it (cls_bpf adds a filter at
 * the head of its list), so their verdict is the one taken; it is never reached
 * unless theirs says TC_ACT_UNSPEC, which none does.
 */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>

SEC("classifier")
int pass(struct __sk_buff *skb)
{
	return TC_ACT_UNSPEC;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
