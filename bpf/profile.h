/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * Structs and constants shared by the BPF programs and the Rust side. Rust gets
 * both through the generated skeleton's `types` module (src/capture/skel.rs): the
 * constants are an enum so that they reach BTF; nothing is copied by hand.
 */
#ifndef FLAMEBPF_PROFILE_H
#define FLAMEBPF_PROFILE_H

enum flamebpf_limits {
	FLAMEBPF_COMM_LEN = 16,
	/* The deepest stack bpf_get_stackid can record with the default
	 * kernel.perf_event_max_stack (127). */
	FLAMEBPF_MAX_DEPTH = 127,
	/* The most user stack a DWARF-mode sample copies: perf's limit too. Records
	 * are written in place in the ring buffer, so only its size bounds them. */
	FLAMEBPF_MAX_STACK_BYTES = 65528,
	/* The errno values bpf_get_stackid returns (negated) that the key keeps:
	 * the stack's bucket holds another stack / there is no such stack. */
	FLAMEBPF_EEXIST = 17,
	FLAMEBPF_EFAULT = 14,
};

/* A sample's identity in the counts map: who ran, and where. */
struct sample_key {
	__u32 pid; /* thread group id: the process */
	__u32 tid;
	char comm[FLAMEBPF_COMM_LEN];
	/* >= 0: id in the `stacks` STACK_TRACE map; < 0: -errno of bpf_get_stackid. */
	__s32 kernel_stack_id;
	__s32 user_stack_id;
	/* When the id is -EEXIST (bucket taken by another stack), the stack went
	 * to `overflow_stacks` under this hash instead; 0 when it did not. */
	__u64 kernel_stack_hash;
	__u64 user_stack_hash;
};

struct sample_value {
	__u64 samples;
	/* Sum of the perf event's sample period: nanoseconds for cpu-clock,
	 * events for counting events. */
	__u64 weight;
};

/* A stack kept in `overflow_stacks`: the unused tail is zero, like the
 * values of a STACK_TRACE map. */
struct overflow_stack {
	__u64 ips[FLAMEBPF_MAX_DEPTH];
};

/* One sample of `--call-graph dwarf`: registers and a copy of the top of the user
 * stack, for unwinding in userspace, plus the kernel stack. A record holds
 * `stack_bytes` of stack, of which the first `stack_len` were copied. */
struct dwarf_sample {
	__u64 time; /* CLOCK_MONOTONIC ns */
	__u64 period;
	__u64 ip; /* user registers at the sample (or at kernel entry) */
	__u64 sp;
	__u64 bp;
	__u32 pid;
	__u32 tid;
	__u32 cpu;
	__u32 kernel_len; /* bytes of kernel_ips */
	__u32 user_regs; /* 0: a kernel thread, no user state */
	__u32 stack_len; /* bytes of stack copied from sp */
	char comm[FLAMEBPF_COMM_LEN];
	__u64 kernel_ips[FLAMEBPF_MAX_DEPTH];
	__u8 stack[FLAMEBPF_MAX_STACK_BYTES];
};

/* Indices of the per-CPU `stats` array: every sample the program sees for a
 * target ends up counted in STAT_SAMPLES and then in the classes below. */
enum flamebpf_stat {
	STAT_SAMPLES = 0,         /* samples of the targets */
	STAT_IDLE_SKIPPED,        /* idle task samples left out (no --include-idle) */
	STAT_KERNEL_STACK_ABSENT, /* sampled in user mode: no kernel stack */
	STAT_USER_STACK_KTHREAD,  /* kernel thread: no user stack exists */
	STAT_USER_STACK_FAULT,    /* user stack unreadable */
	STAT_STACK_OVERFLOWED,    /* bucket collision, stack kept in the overflow map */
	STAT_STACK_LOST,          /* collision and overflow map full: stack lost */
	STAT_COUNTS_FULL,         /* counts map full: sample lost */
	STAT_TARGETS_FULL,        /* a forked child could not be added to the target set */
	STAT_RINGBUF_FULL,        /* DWARF mode: the ring buffer had no room for a sample */
	STAT_STACK_COPY_FAILED,   /* DWARF mode: no byte of the user stack could be read */
	STAT_MAX,
};

#endif
