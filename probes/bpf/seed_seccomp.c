// SPDX-License-Identifier: GPL-2.0 OR MIT
/*
 * seed_seccomp: the tail-call-vs-bpf2bpf article's CO-RE version of the kernel's
 * tracex5 sample (seed article tail-call-vs-bpf2bpf-en, "4. CO-RE Sample",
 * tracex5_kern.bpf.c), as the article wrote it: a kprobe on __seccomp_filter
 * tail-calls through a PROG_ARRAY indexed by the syscall number into one
 * program per syscall (write, read, open), each printing the call's arguments,
 * read from the seccomp_data that __seccomp_filter gets as its second argument,
 * with bpf_trace_printk; a syscall without a program falls through to the
 * kprobe's own line. The agent (probes/agent/src/seeds.rs) plays the article's
 * tracex5_user.c: it puts each program in `progs` at its syscall number,
 * attaches the kprobe, and reads the lines from tracefs.
 *
 * Where this differs from the article, and why:
 * - `progs` is a legacy "maps" section map (legacy_maps.h): aya 0.14 gives
 *   BTF-defined maps BTF ids that kernels without BTF refuse;
 * - no vmlinux.h: struct pt_regs and struct seccomp_data come from the UAPI
 *   headers (same layout; nothing here is CO-RE relocated, so the programs need
 *   no kernel BTF);
 * - the slots are x86_64's syscall numbers (read 0, write 1, open 2): the
 *   article's tracex5_user.c puts its programs at 3, 4 and 5, which are i386's
 *   read, write and open, and on x86_64 close, stat and fstat.
 *
 * What kernels make of it, as found by this case (harness/features.toml):
 * - up to 5.8 it prints what the article shows; from 5.9 x86_64 calls
 *   __secure_computing(NULL) (27d6b4d14f5c), so PARM2 is NULL, bpf_probe_read
 *   fails and zero-fills `sd`: no write or read line, "open(fd=0, ...)";
 * - from 6.9, with the interpreter (bpf_jit_enable=0), the kernel oopses in the
 *   open program: the interpreter's stack is sized for __seccomp_filter's own
 *   64 bytes (011832b97b31 undid the MAX_BPF_STACK a tail-calling program gets),
 *   and bpf_func_SYS__NR_open's deeper frame overruns it.
 */
#include <stdbool.h>
#include <linux/bpf.h>
#include <linux/ptrace.h>
#include <linux/seccomp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include "legacy_maps.h"

LEGACY_MAP(progs, BPF_MAP_TYPE_PROG_ARRAY, __u32, __u32, 1024);

SEC("kprobe/__seccomp_filter")
int BPF_KPROBE(__seccomp_filter, int this_syscall, const struct seccomp_data *sd, const bool recheck_after_trace)
{
	// Here, note that the eBPF program stack space is only 512 bytes. If it's too large, there will be an error. You can try adjusting it.
	char comm_name[30];
	bpf_get_current_comm(comm_name, sizeof(comm_name));
	// If the call fails, it will fall through directly
	bpf_tail_call(ctx, &progs, this_syscall);

	char fmt[] = "syscall=%d common=%s\n";
	bpf_trace_printk(fmt, sizeof(fmt), this_syscall, comm_name);
	return 0;
}

/* We jump here when syscall number == __NR_write */
SEC("kprobe/SYS__NR_write")
int bpf_func_SYS__NR_write(struct pt_regs *ctx)
{
	struct seccomp_data sd;
	bpf_probe_read(&sd, sizeof(sd), (void *)PT_REGS_PARM2(ctx));
	if (sd.args[2] > 0) {
		char fmt[] = "write(fd=%d, buf=%p, size=%d)\n";
		bpf_trace_printk(fmt, sizeof(fmt),
				 sd.args[0], sd.args[1], sd.args[2]);
	}
	return 0;
}

SEC("kprobe/SYS__NR_read")
int bpf_func_SYS__NR_read(struct pt_regs *ctx)
{
	struct seccomp_data sd;
	bpf_probe_read(&sd, sizeof(sd), (void *)PT_REGS_PARM2(ctx));
	if (sd.args[2] > 0 && sd.args[2] <= 1024) {
		char fmt[] = "read(fd=%d, buf=%p, size=%d)\n";
		bpf_trace_printk(fmt, sizeof(fmt),
				 sd.args[0], sd.args[1], sd.args[2]);
	}
	return 0;
}

SEC("kprobe/SYS__NR_open")
int bpf_func_SYS__NR_open(struct pt_regs *ctx)
{
	struct seccomp_data sd;
	bpf_probe_read(&sd, sizeof(sd), (void *)PT_REGS_PARM2(ctx));
	char fmt[] = "open(fd=%d, path=%p)\n";
	bpf_trace_printk(fmt, sizeof(fmt), sd.args[0], sd.args[1]);
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
