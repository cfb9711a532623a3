// The README's example object (and the check trials'): two socket filters, one
// every kernel takes and one that calls a helper 5.10 does not have.
//
// - count_packets: counts what it sees in an array map; plain BPF, accepted by
//   every kernel bpfmatrix knows.
// - stamp_tai: bpf_ktime_get_tai_ns() (helper 208), added in Linux 6.1 by
//   c8996c98f703 ("bpf: Add BPF-helper for accessing CLOCK_TAI"); 5.10's
//   verifier refuses it ("invalid func unknown#208").
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} packets SEC(".maps");

SEC("socket")
int count_packets(struct __sk_buff *skb)
{
	__u32 key = 0;
	__u64 *n = bpf_map_lookup_elem(&packets, &key);

	if (n)
		__sync_fetch_and_add(n, 1);
	return skb->len;
}

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} last_tai SEC(".maps");

SEC("socket")
int stamp_tai(struct __sk_buff *skb)
{
	__u32 key = 0;
	__u64 now = bpf_ktime_get_tai_ns();

	bpf_map_update_elem(&last_tai, &key, &now, BPF_ANY);
	return skb->len;
}

char LICENSE[] SEC("license") = "GPL";
