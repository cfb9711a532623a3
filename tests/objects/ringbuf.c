// A program whose map type is newer than 4.16: BPF_MAP_TYPE_RINGBUF, added in
// Linux 5.8 by 457f44363a88 ("bpf: Implement BPF ring buffer and verifier
// support for it"). A kernel before 5.8 cannot create the map, so bpfmatrix
// reports the map's refusal against the program that uses it.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4096);
} lengths SEC(".maps");

SEC("socket")
int report_length(struct __sk_buff *skb)
{
	__u32 len = skb->len;

	bpf_ringbuf_output(&lengths, &len, sizeof(len), 0);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
