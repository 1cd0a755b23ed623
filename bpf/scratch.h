/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * Per-CPU rooms for what does not fit the 512-byte BPF stack: one whole stack
 * (the overflow path copies a stack into it, the CFI walk writes its frames
 * there), the CFI walk's copy of the sampled stack and its cache of rows.
 *
 * A program that runs while another is half way through its room must not use
 * the same one. Programs nest on a CPU only across these contexts, so each has a
 * room of its own:
 *   ROOM_TASK  tp_btf programs (interrupts off) and samples of software events
 *              (the cpu-clock hrtimer): they never interrupt one another;
 *   ROOM_NMI   samples of hardware events, taken in NMI: they interrupt anything;
 *   ROOM_ITER  task iterators, which run with interrupts on.
 */
#ifndef FLAMEBPF_SCRATCH_H
#define FLAMEBPF_SCRATCH_H

enum flamebpf_room {
	ROOM_TASK = 0,
	ROOM_NMI = 1,
	ROOM_ITER = 2,
	ROOMS = 3,
};

/* The room of the sampling program: ROOM_NMI when its event is a hardware one.
 * Set by userspace before load. */
const volatile __u32 sample_room = ROOM_TASK;

/* A window of the sampled stack, copied in one read: frames lie close together,
 * so one copy serves many frames' reads, and each bpf_probe_read_user costs far
 * more than the bytes it copies. In 8-byte words: the return addresses and saved
 * registers the walk reads are 8-byte aligned, and a word is one load where an
 * unaligned 8 bytes are eight. */
#define STACK_WINDOW 1024
#define WINDOW_WORDS (STACK_WINDOW / 8)

/* The rows found lately, by (process, generation of its mappings, pc): most
 * samples walk through return addresses walked before, and a hit costs a few
 * loads where finding the mapping and the row costs two calls and two binary
 * searches. A direct-mapped cache; a process's entries go stale with the
 * generation of its mappings (process_mappings.gen). */
#define ROW_CACHE 512

struct row_cache_entry {
	__u64 pc;
	__u32 tgid;
	__u32 gen;
	struct unwind_row row;
};

/* The stacks this room kept lately, by hash: most samples repeat a stack kept
 * before, and a look in the overflow map for it misses the CPU's caches (about
 * a microsecond here, a fifth of a Python sample's BPF time) where this costs
 * two loads. A direct-mapped cache; an entry holds for one turn of one map set
 * (aggregate.h's set_epoch), since userspace empties a set between turns. */
#define SEEN_STACKS 1024

struct seen_stack {
	__u64 hash;
	__u32 set;
	__u32 epoch;
};

struct room {
	struct overflow_stack st;
	__u64 window[WINDOW_WORDS];
	struct row_cache_entry cache[ROW_CACHE];
	struct seen_stack seen[SEEN_STACKS];
};

/* scratch: ROOMS rooms per CPU (31 KiB each). Written and read within one run of
 * a program: keep_overflowed(), the CFI walk (unwind.h), the off-CPU stacks
 * (offcpu.h). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct room);
	__uint(max_entries, ROOMS);
} scratch SEC(".maps");

static __always_inline struct room *room_of(__u32 r)
{
	return bpf_map_lookup_elem(&scratch, &r);
}

#endif
