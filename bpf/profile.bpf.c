// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * flamebpf's sampler. Attached to one perf event per CPU; each overflow records
 * the kernel and user stack of the task on that CPU and adds the sample (and its
 * period as weight) to an in-kernel aggregate keyed by process, thread, comm and
 * stacks. Userspace reads the maps once, at the end of the capture.
 *
 * Written against UAPI headers plus the few task_struct fields it reads, declared
 * with preserve_access_index so CO-RE relocates them against the running kernel's
 * BTF: no vmlinux.h to generate or carry.
 */
#include <stdbool.h>
#include <linux/bpf.h>
#include <linux/bpf_perf_event.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>

#include "profile.h"

#define EEXIST 17
#define EFAULT 14
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

/* Set by userspace before load. */
const volatile bool filter_pids = false;  /* sample only tgids in `targets` */
const volatile bool follow_forks = false; /* children of targets become targets */
const volatile bool include_idle = false;
const volatile bool filter_comm = false;  /* sample only threads named target_comm */
const volatile char target_comm[FLAMEBPF_COMM_LEN] = {};
const volatile bool filter_cgroup = false; /* sample only tasks under cgroups[0] */
const volatile __u32 exclude_tgid = 0; /* leave this process out (the daemon itself) */
const volatile __u32 stack_bytes = FLAMEBPF_MAX_STACK_BYTES; /* DWARF mode: user stack to copy */
const volatile __u64 ring_wakeup_bytes = 1 << 20; /* DWARF mode: wake the reader past this */

/* Which of the two map sets samples go to. Userspace flips it to read one set
 * while the other fills (continuous mode), so no sample is lost or counted twice at
 * a window's edge; a plain capture leaves it at 0. */
volatile __u32 active_set = 0;

/* One map set: the stacks, the overflow for colliding stacks, the counts. */
#define MAP_SET(n)                                                              \
	struct {                                                                \
		__uint(type, BPF_MAP_TYPE_STACK_TRACE);                          \
		__uint(key_size, sizeof(__u32));                                 \
		__uint(value_size, FLAMEBPF_MAX_DEPTH * sizeof(__u64));          \
		__uint(max_entries, 16384); /* resized by userspace */           \
	} stacks##n SEC(".maps");                                               \
	/* Where a stack goes when its bucket in stacks holds another stack: a \
	 * true hash table, so a collision there costs nothing. */              \
	struct {                                                                \
		__uint(type, BPF_MAP_TYPE_HASH);                                 \
		__type(key, __u64);                                              \
		__type(value, struct overflow_stack);                            \
		__uint(max_entries, 16384); /* resized by userspace */           \
	} overflow##n SEC(".maps");                                             \
	struct {                                                                \
		__uint(type, BPF_MAP_TYPE_HASH);                                 \
		__type(key, struct sample_key);                                  \
		__type(value, struct sample_value);                              \
		__uint(max_entries, 65536); /* resized by userspace */           \
	} counts##n SEC(".maps");

MAP_SET(0)
MAP_SET(1)

struct {
	__uint(type, BPF_MAP_TYPE_CGROUP_ARRAY);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(__u32));
	__uint(max_entries, 1);
} cgroups SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32); /* tgid */
	__type(value, __u8);
	__uint(max_entries, 16384);
} targets SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, enum flamebpf_stat); /* names the enum in BTF, so Rust gets it */
	__type(value, __u64);
	__uint(max_entries, STAT_MAX);
} stats SEC(".maps");

/* Names the record type in BTF, so the skeleton generates it for Rust. */
struct dwarf_sample *dwarf_sample_type = 0;

/* DWARF mode: one record per sample, unwound in userspace. */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4096); /* resized by userspace */
} samples SEC(".maps");

/* Scratch space for the overflow path: a whole stack does not fit the 512-byte
 * BPF stack. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct overflow_stack);
	__uint(max_entries, 1);
} scratch SEC(".maps");

static __always_inline void count(enum flamebpf_stat stat)
{
	__u64 *v = bpf_map_lookup_elem(&stats, &stat);
	if (v)
		*v += 1;
}

/* Keeps a stack whose STACK_TRACE bucket is taken: copies it with bpf_get_stack,
 * hashes it (FNV-1a over the addresses) and stores it under that hash.
 * Returns the hash, or 0 when the stack could not be kept. */
static __always_inline __u64 keep_overflowed(struct bpf_perf_event_data *ctx, void *overflow_stacks, __u64 flags)
{
	__u32 zero = 0;
	struct overflow_stack *st = bpf_map_lookup_elem(&scratch, &zero);
	if (!st)
		return 0;
	long len = bpf_get_stack(ctx, st->ips, sizeof(st->ips), flags);
	if (len <= 0)
		return 0;
	__u32 n = len / sizeof(__u64);
	__u64 h = 0xcbf29ce484222325ULL;
	for (__u32 i = 0; i < FLAMEBPF_MAX_DEPTH; i++) {
		if (i >= n) {
			st->ips[i] = 0; /* the tail left over from the previous use */
			continue;
		}
		h = (h ^ st->ips[i]) * 0x100000001b3ULL;
	}
	if (h == 0)
		h = 1;
	if (bpf_map_lookup_elem(overflow_stacks, &h))
		return h;
	if (bpf_map_update_elem(overflow_stacks, &h, st, BPF_NOEXIST) == 0)
		return h;
	/* Another CPU may have stored the same stack in between. */
	if (bpf_map_lookup_elem(overflow_stacks, &h))
		return h;
	return 0;
}

static __always_inline __s32 stack_id(struct bpf_perf_event_data *ctx, void *stacks, void *overflow_stacks,
				       __u64 flags, __u64 *hash)
{
	__s32 id = bpf_get_stackid(ctx, stacks, flags);
	*hash = 0;
	if (id == -EEXIST) {
		*hash = keep_overflowed(ctx, overflow_stacks, flags);
		count(*hash ? STAT_STACK_OVERFLOWED : STAT_STACK_LOST);
	} else if (id < 0 && id != -EFAULT) {
		/* -ENOMEM: the stack map's free list is empty. */
		count(STAT_STACK_LOST);
	}
	return id;
}

static __always_inline bool comm_matches(const char *comm)
{
	for (int i = 0; i < FLAMEBPF_COMM_LEN; i++) {
		if (comm[i] != target_comm[i])
			return false;
		if (comm[i] == 0)
			return true;
	}
	return true;
}

/* Adds the sample to one map set; inlined twice, so each copy sees constant maps. */
static __always_inline void record(struct bpf_perf_event_data *ctx, struct sample_key *key, void *stacks,
				   void *overflow_stacks, void *counts)
{
	key->kernel_stack_id = stack_id(ctx, stacks, overflow_stacks, 0, &key->kernel_stack_hash);
	if (key->kernel_stack_id == -EFAULT)
		count(STAT_KERNEL_STACK_ABSENT);

	key->user_stack_id = stack_id(ctx, stacks, overflow_stacks, BPF_F_USER_STACK, &key->user_stack_hash);
	if (key->user_stack_id == -EFAULT) {
		struct task_struct *task = (void *)bpf_get_current_task();
		if (BPF_CORE_READ(task, flags) & PF_KTHREAD)
			count(STAT_USER_STACK_KTHREAD);
		else
			count(STAT_USER_STACK_FAULT);
	}

	__u64 period = ctx->sample_period;
	struct sample_value *val = bpf_map_lookup_elem(counts, key);
	if (!val) {
		struct sample_value init = {};
		/* EEXIST: another CPU added the key in between, which is fine */
		bpf_map_update_elem(counts, key, &init, BPF_NOEXIST);
		val = bpf_map_lookup_elem(counts, key);
		if (!val) {
			count(STAT_COUNTS_FULL);
			return;
		}
	}
	__sync_fetch_and_add(&val->samples, 1);
	__sync_fetch_and_add(&val->weight, period);
}

/* The filters both programs apply; false when the sample is not a target's. */
static __always_inline bool wanted(__u32 tgid, __u32 tid, char *comm)
{
	if (tid == 0 && !include_idle) {
		count(STAT_IDLE_SKIPPED);
		return false;
	}
	if (filter_pids && !bpf_map_lookup_elem(&targets, &tgid))
		return false;
	if (exclude_tgid && tgid == exclude_tgid)
		return false;
	if (filter_cgroup && bpf_current_task_under_cgroup(&cgroups, 0) != 1)
		return false;
	bpf_get_current_comm(comm, FLAMEBPF_COMM_LEN);
	if (filter_comm && !comm_matches(comm))
		return false;
	return true;
}

/* `--call-graph dwarf`: sends registers and a copy of the top of the user stack
 * to userspace, which unwinds it with the objects' call frame information. */
SEC("perf_event")
int profile_dwarf(struct bpf_perf_event_data *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tgid = id >> 32;
	__u32 tid = (__u32)id;
	char comm[FLAMEBPF_COMM_LEN];
	if (!wanted(tgid, tid, comm))
		return 0;
	count(STAT_SAMPLES);

	/* The record is written in place in the ring buffer: no staging copy. Its
	 * size is a constant to the verifier, since .rodata is frozen at load. */
	__u32 copy = stack_bytes;
	if (copy > FLAMEBPF_MAX_STACK_BYTES)
		copy = FLAMEBPF_MAX_STACK_BYTES;
	struct dwarf_sample *rec =
		bpf_ringbuf_reserve(&samples, __builtin_offsetof(struct dwarf_sample, stack) + copy, 0);
	if (!rec) {
		count(STAT_RINGBUF_FULL);
		return 0;
	}
	rec->time = bpf_ktime_get_ns();
	rec->period = ctx->sample_period;
	rec->pid = tgid;
	rec->tid = tid;
	rec->cpu = bpf_get_smp_processor_id();
	__builtin_memcpy(rec->comm, comm, FLAMEBPF_COMM_LEN);

	long klen = bpf_get_stack(ctx, rec->kernel_ips, sizeof(rec->kernel_ips), 0);
	rec->kernel_len = klen > 0 ? klen : 0;
	if (klen <= 0)
		count(STAT_KERNEL_STACK_ABSENT);

	struct task_struct *task = (void *)bpf_get_current_task();
	rec->user_regs = 0;
	rec->stack_len = 0;
	rec->ip = rec->sp = rec->bp = 0;
	if (BPF_CORE_READ(task, flags) & PF_KTHREAD) {
		count(STAT_USER_STACK_KTHREAD);
	} else {
		if ((ctx->regs.cs & 3) == 3) {
			rec->ip = ctx->regs.rip;
			rec->sp = ctx->regs.rsp;
			rec->bp = ctx->regs.rbp;
		} else {
			/* in the kernel: the user state saved at kernel entry */
			struct pt_regs___k *regs = (void *)bpf_task_pt_regs(bpf_get_current_task_btf());
			rec->ip = BPF_CORE_READ(regs, ip);
			rec->sp = BPF_CORE_READ(regs, sp);
			rec->bp = BPF_CORE_READ(regs, bp);
		}
		rec->user_regs = 1;
		/* A read that runs past the end of the stack mapping fails whole: try
		 * shorter copies until one fits. */
		__u32 len = copy;
		for (int i = 0; i < 8; i++) {
			if (len > copy)
				len = copy;
			if (len == 0)
				break;
			if (bpf_probe_read_user(rec->stack, len, (void *)rec->sp) == 0) {
				rec->stack_len = len;
				break;
			}
			len >>= 1;
		}
		if (rec->stack_len == 0)
			count(STAT_STACK_COPY_FAILED);
	}

	/* Waking the reader is an interrupt of its own: only once a good part of the
	 * buffer waits; the reader also looks every tick. */
	__u64 waiting = bpf_ringbuf_query(&samples, BPF_RB_AVAIL_DATA);
	bpf_ringbuf_submit(rec, waiting > ring_wakeup_bytes ? BPF_RB_FORCE_WAKEUP : BPF_RB_NO_WAKEUP);
	return 0;
}

SEC("perf_event")
int profile(struct bpf_perf_event_data *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tgid = id >> 32;
	__u32 tid = (__u32)id;

	struct sample_key key = {};
	key.pid = tgid;
	key.tid = tid;
	if (!wanted(tgid, tid, key.comm))
		return 0;

	count(STAT_SAMPLES);
	if (active_set)
		record(ctx, &key, &stacks1, &overflow1, &counts1);
	else
		record(ctx, &key, &stacks0, &overflow0, &counts0);
	return 0;
}

/* Children of a target become targets, so `flamebpf record -- make` profiles the
 * whole build. Threads share the tgid and need no entry. */
SEC("tp_btf/sched_process_fork")
int BPF_PROG(on_fork, struct task_struct *parent, struct task_struct *child)
{
	if (!follow_forks)
		return 0;
	__u32 ptgid = parent->tgid;
	__u32 ctgid = child->tgid;
	if (ptgid == ctgid || !bpf_map_lookup_elem(&targets, &ptgid))
		return 0;
	__u8 one = 1;
	if (bpf_map_update_elem(&targets, &ctgid, &one, BPF_ANY))
		count(STAT_TARGETS_FULL);
	return 0;
}

/* A pid freed by a target's exit may be reused by an unrelated process; forget it
 * when the thread group leader goes. */
SEC("tp_btf/sched_process_exit")
int BPF_PROG(on_exit, struct task_struct *task)
{
	if (!follow_forks)
		return 0;
	__u32 tgid = task->tgid;
	if (task->pid == task->tgid)
		bpf_map_delete_elem(&targets, &tgid);
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
