// SPDX-License-Identifier: GPL-2.0 OR MIT
/*
 * seed_tcpconn: the tail-call notes' demo ("bpf_tail_call() 例子一则", seed
 * article tail-call-notes-zh), as the article wrote it: kprobes on tcp_connect
 * (outgoing connections) and inet_csk_complete_hashdance (accepted ones) put
 * the sock in a per-CPU array and tail-call handle_new_connection, which reads
 * its addresses and ports with CO-RE and sends them to user space through a
 * perf event array. The agent (probes/agent/src/seeds.rs) plays the article's
 * Go loader with aya.
 *
 * Where this differs from the article, and why:
 * - maps in the legacy "maps" section (legacy_maps.h), not BTF-defined ones:
 *   aya 0.14 gives BTF-defined maps BTF ids that a kernel without BTF refuses;
 * - no vmlinux.h: the two kernel structs read are declared below with
 *   preserve_access_index, only the fields read, so CO-RE relocates them
 *   against the running kernel's BTF exactly as it would vmlinux.h's.
 * Everything else (names, sections, the tail call, the event layout) is the
 * article's, including the section name's "hanle" typo: handle_new_connection
 * is only ever tail-called, never attached, so its section names nothing.
 *
 * BPF_CORE_READ calls bpf_probe_read_kernel (5.5+); on older kernels aya
 * rewrites it to bpf_probe_read, as libbpf and cilium/ebpf do, so 5.4 runs the
 * demo as the article's loader would. Without kernel BTF (before 5.4) the CO-RE
 * reads cannot be relocated: the agent says so rather than run them.
 */
#include <linux/bpf.h>
#include <linux/ptrace.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include "legacy_maps.h"

/* The fields of the kernel's struct sock_common the demo reads (names as in
 * include/net/sock.h; the real layout comes from the kernel's BTF). */
struct sock_common {
	__be32 skc_daddr;
	__be32 skc_rcv_saddr;
	__be16 skc_dport;
	__u16 skc_num;
} __attribute__((preserve_access_index));

struct sock {
	struct sock_common __sk_common;
} __attribute__((preserve_access_index));

LEGACY_MAP(progs, BPF_MAP_TYPE_PROG_ARRAY, __u32, __u32, 1);

LEGACY_MAP(socks, BPF_MAP_TYPE_PERCPU_ARRAY, __u32, __u64, 1);

/* Mirrors `ConnEvent` decoding in probes/agent/src/seeds.rs. */
typedef struct event {
	__be32 saddr, daddr;
	__be16 sport, dport;
} __attribute__((packed)) event_t;

/* max_entries 0: the loader makes it one slot per CPU, as cilium/ebpf does. */
LEGACY_MAP(events, BPF_MAP_TYPE_PERF_EVENT_ARRAY, __u32, __u32, 0);

SEC("kprobe/hanle_new_connection")
int handle_new_connection(void *ctx)
{
	__u32 key = 0;
	struct sock **skp = bpf_map_lookup_elem(&socks, &key);
	if (!skp)
		return 0;

	/* A per-CPU array has no delete (-EINVAL): kept as the article has it. */
	bpf_map_delete_elem(&socks, &key);

	struct sock *sk = *skp;
	event_t ev = {};
	ev.saddr = BPF_CORE_READ(sk, __sk_common.skc_rcv_saddr);
	ev.daddr = BPF_CORE_READ(sk, __sk_common.skc_daddr);
	ev.sport = BPF_CORE_READ(sk, __sk_common.skc_num);
	ev.dport = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));

	bpf_perf_event_output(ctx, &events, BPF_F_CURRENT_CPU, &ev, sizeof(ev));

	return 0;
}

SEC("kprobe/tcp_connect")
int k_tcp_connect(struct pt_regs *ctx)
{
	struct sock *sk;
	sk = (typeof(sk))PT_REGS_PARM1(ctx);

	__u32 key = 0;
	bpf_map_update_elem(&socks, &key, &sk, BPF_ANY);

	bpf_tail_call_static(ctx, &progs, 0);

	return 0;
}

SEC("kprobe/inet_csk_complete_hashdance")
int k_icsk_complete_hashdance(struct pt_regs *ctx)
{
	struct sock *sk;
	sk = (typeof(sk))PT_REGS_PARM2(ctx);

	__u32 key = 0;
	bpf_map_update_elem(&socks, &key, &sk, BPF_ANY);

	bpf_tail_call_static(ctx, &progs, 0);

	return 0;
}

/* Not in the article's excerpt, but its helpers are GPL-only, so its full demo
 * has one too. */
char LICENSE[] SEC("license") = "GPL";
