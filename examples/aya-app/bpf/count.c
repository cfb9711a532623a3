// SPDX-License-Identifier: GPL-2.0 OR MIT
/*
 * count_udp: an XDP program that counts the IPv4 UDP datagrams sent to one
 * destination port and passes every packet on unchanged.
 *
 * The port is read from config[0] (host byte order; 0, the value before user
 * space writes it, counts nothing). The count is packets[0].
 *
 * Maps are defined in the legacy "maps" section, which aya reads without any
 * BTF type ids, so the object loads the same way on every kernel (5.10, 6.1,
 * 6.12 and older ones too). BTF-defined maps (SEC(".maps")) would work on 5.10+
 * as well.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

/* The first five fields of libbpf's old struct bpf_map_def, which aya reads. */
struct legacy_map_def {
	__u32 type;
	__u32 key_size;
	__u32 value_size;
	__u32 max_entries;
	__u32 map_flags;
};

struct legacy_map_def config SEC("maps") = {
	.type = BPF_MAP_TYPE_ARRAY,
	.key_size = sizeof(__u32),
	.value_size = sizeof(__u32),
	.max_entries = 1,
};

struct legacy_map_def packets SEC("maps") = {
	.type = BPF_MAP_TYPE_ARRAY,
	.key_size = sizeof(__u32),
	.value_size = sizeof(__u64),
	.max_entries = 1,
};

#define IP_FRAG_OFFSET_MASK 0x1fff

SEC("xdp")
int count_udp(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip;
	struct udphdr *udp;
	__u32 key = 0;
	__u32 *port;
	__u64 *count;

	/* lo carries an Ethernet header (all-zero addresses), as other devices do. */
	if ((void *)(eth + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_IP))
		return XDP_PASS;

	ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > data_end || ip->protocol != IPPROTO_UDP || ip->ihl < 5)
		return XDP_PASS;
	/* Only the first fragment carries the UDP header. */
	if (ip->frag_off & bpf_htons(IP_FRAG_OFFSET_MASK))
		return XDP_PASS;

	udp = (void *)ip + ip->ihl * 4;
	if ((void *)(udp + 1) > data_end)
		return XDP_PASS;

	port = bpf_map_lookup_elem(&config, &key);
	if (!port || *port == 0 || bpf_ntohs(udp->dest) != *port)
		return XDP_PASS;

	count = bpf_map_lookup_elem(&packets, &key);
	if (count)
		__sync_fetch_and_add(count, 1);
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
