/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * The few kernel types the programs read, declared with preserve_access_index so
 * CO-RE relocates them against the running kernel's BTF: no vmlinux.h to generate
 * or carry.
 */
#ifndef FLAMEBPF_KERNEL_H
#define FLAMEBPF_KERNEL_H

#define PF_EXITING 0x00000004
#define PF_KTHREAD 0x00200000
#define TASK_RUNNING 0

struct signal_struct {
	struct {
		int counter;
	} live; /* threads not yet exited (an atomic_t) */
} __attribute__((preserve_access_index));

/* The fs base of a task: where glibc's thread control block, pthread_self(),
 * lies (CPython's thread state is found from it). Set at clone (CLONE_SETTLS)
 * and kept there across switches. */
struct thread_struct {
	unsigned long fsbase;
} __attribute__((preserve_access_index));

/* One type per kernel struct: libbpf searches the kernel's 100,000+ types once
 * for each local type (flavours count apart), 2 ms a search at every start. */
struct task_struct {
	unsigned int __state; /* 0: runnable (5.14+; the programs need 5.17's bpf_loop) */
	struct signal_struct *signal;
	unsigned int flags;
	int on_cpu;
	int pid;
	int tgid;
	char comm[16];
	struct thread_struct thread;
} __attribute__((preserve_access_index));

static __always_inline long task_state(struct task_struct *t)
{
	return BPF_CORE_READ(t, __state);
}

/* What a task iterator program is handed: one task at a time, then NULL. */
struct bpf_iter_meta {
	void *seq;
	__u64 session_id;
	__u64 seq_num;
} __attribute__((preserve_access_index));

struct bpf_iter__task {
	struct bpf_iter_meta *meta;
	struct task_struct *task;
} __attribute__((preserve_access_index));

/* The kernel's pt_regs (the UAPI one, which bpf_perf_event.h brings, names its
 * fields differently); the ___k flavour keeps the names apart for CO-RE. */
struct pt_regs___k {
	unsigned long orig_ax; /* the system call of a task in the kernel */
	unsigned long bp;
	unsigned long ip;
	unsigned long cs;
	unsigned long sp;
} __attribute__((preserve_access_index));

/* What the CFI unwinder reads of a mapping: where it is, what file it maps (the
 * device and inode the unwind tables are keyed by), and whether it is the vDSO. */
struct super_block {
	unsigned int s_dev;
} __attribute__((preserve_access_index));

struct inode {
	unsigned long i_ino;
	struct super_block *i_sb;
} __attribute__((preserve_access_index));

struct file {
	struct inode *f_inode;
} __attribute__((preserve_access_index));

struct mm_struct {
	struct {
		void *vdso;
	} context;
} __attribute__((preserve_access_index));

struct vm_area_struct {
	unsigned long vm_start;
	unsigned long vm_end;
	struct mm_struct *vm_mm;
	unsigned long vm_pgoff;
	struct file *vm_file;
} __attribute__((preserve_access_index));

/* The user registers of the sampled task: the sample's, or, when the sample hit
 * the kernel, the user state saved at kernel entry. */
struct user_regs {
	__u64 ip;
	__u64 sp;
	__u64 bp;
};

/* Whether the current task, sampled in the kernel, is inside execve or
 * execveat (x86-64 system call numbers). */
static __always_inline bool in_execve(void)
{
	struct pt_regs___k *regs = (void *)bpf_task_pt_regs(bpf_get_current_task_btf());
	long nr = BPF_CORE_READ(regs, orig_ax);
	return nr == 59 || nr == 322;
}

/* The user state the current task saved when it entered the kernel. */
static __always_inline void entry_user_regs(struct user_regs *r)
{
	struct pt_regs___k *regs = (void *)bpf_task_pt_regs(bpf_get_current_task_btf());
	r->ip = BPF_CORE_READ(regs, ip);
	r->sp = BPF_CORE_READ(regs, sp);
	r->bp = BPF_CORE_READ(regs, bp);
}

static __always_inline void current_user_regs(struct bpf_perf_event_data *ctx, struct user_regs *r)
{
	if ((ctx->regs.cs & 3) == 3) {
		r->ip = ctx->regs.rip;
		r->sp = ctx->regs.rsp;
		r->bp = ctx->regs.rbp;
	} else {
		entry_user_regs(r);
	}
}

static __always_inline bool current_is_kthread(void)
{
	struct task_struct *task = (void *)bpf_get_current_task();
	return BPF_CORE_READ(task, flags) & PF_KTHREAD;
}

#endif
