/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * The few kernel types the programs read, declared with preserve_access_index so
 * CO-RE relocates them against the running kernel's BTF: no vmlinux.h to generate
 * or carry.
 */
#ifndef FLAMEBPF_KERNEL_H
#define FLAMEBPF_KERNEL_H

#define PF_KTHREAD 0x00200000

struct task_struct {
	unsigned int flags;
	int pid;
	int tgid;
} __attribute__((preserve_access_index));

/* The kernel's pt_regs (the UAPI one, which bpf_perf_event.h brings, names its
 * fields differently); the ___k flavour keeps the names apart for CO-RE. */
struct pt_regs___k {
	unsigned long bp;
	unsigned long ip;
	unsigned long cs;
	unsigned long sp;
} __attribute__((preserve_access_index));

static __always_inline bool current_is_kthread(void)
{
	struct task_struct *task = (void *)bpf_get_current_task();
	return BPF_CORE_READ(task, flags) & PF_KTHREAD;
}

#endif
