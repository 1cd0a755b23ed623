// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * Names kernel addresses in the kernel itself: a syscall program, run on demand
 * by userspace (src/symbolize/kernel_symbols.rs), formats each address of a batch
 * with bpf_snprintf's %pS, which looks it up in the kernel's own symbol table
 * (vmlinux, modules, BPF programs). Reading /proc/kallsyms instead has the kernel
 * format every one of its 100,000+ lines for the few hundred addresses a capture
 * samples: a third of a short capture's CPU.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#define BATCH 256      /* addresses per run */
#define NAME_LEN 256   /* bytes of one formatted name, NUL included */

/* A run's questions and answers, in the mmap'd .bss: userspace writes `len`
 * addresses, runs the program and reads names[i], "name+0xoff/0xsize [module]",
 * or "0x<address>" when no symbol holds the address. */
__u32 len;
__u64 addrs[BATCH];
char names[BATCH][NAME_LEN];

static long name_one(__u32 i, void *unused)
{
	if (i >= BATCH)
		return 1;
	__u64 arg = addrs[i];
	bpf_snprintf(names[i], NAME_LEN, "%pS", &arg, sizeof(arg));
	return 0;
}

SEC("syscall")
int name_addrs(void *ctx)
{
	__u32 n = len;
	if (n > BATCH)
		n = BATCH;
	bpf_loop(n, name_one, 0, 0);
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
