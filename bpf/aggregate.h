/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * The in-kernel aggregate: each sample's stacks are stored once and the sample is
 * counted under (pid, tid, comm, kernel stack, user stack). Two identical map sets
 * exist; `active_set` says which one fills, so the continuous daemon reads and
 * empties one while the other fills (a plain capture uses set 0 only and gets set 1
 * at minimal size). Userspace reads a set with src/capture/maps.rs.
 */
#ifndef FLAMEBPF_AGGREGATE_H
#define FLAMEBPF_AGGREGATE_H

/* Which map set samples go to; flipped by userspace through the mmap'd .bss. */
volatile __u32 active_set = 0;
/* Bumped by userspace before it empties a set (src/capture/sampler.rs): the
 * rooms' caches of stacks kept (scratch.h) hold for one turn of a set. */
volatile __u32 set_epoch[2] = {};
/* Whether set 1 is ever used (the continuous daemon): when not, the verifier
 * drops every path that adds to it, which halves its work on the sampler. */
const volatile bool two_sets = false;

/* The set samples go to now. */
static __always_inline __u32 current_set(void)
{
	return two_sets ? active_set : 0;
}

/*
 * One map set, n = 0 or 1:
 * stacksN: the stacks by id (bpf_get_stackid), leaf first, zero-padded. Written by
 *   record(); read by userspace for the ids the counts name, then emptied (by
 *   the daemon) at each drain. Size: --stack-map-size (16384 for record, 4096
 *   for continuous); a full or colliding bucket sends the stack to overflowN.
 * overflowN: stacks whose stacksN bucket held another stack, keyed by an FNV-1a
 *   hash of their addresses. Same writers, readers and size as stacksN; when full,
 *   the stack is lost (STAT_STACK_LOST).
 * countsN: samples and summed periods per sample_key. Written by record(), read
 *   and emptied by userspace. Size: --counts-map-size (65536 / 16384); when full,
 *   the sample is lost (STAT_COUNTS_FULL).
 */
#define MAP_SET(n)                                                              \
	struct {                                                                \
		__uint(type, BPF_MAP_TYPE_STACK_TRACE);                          \
		__uint(key_size, sizeof(__u32));                                 \
		__uint(value_size, FLAMEBPF_MAX_DEPTH * sizeof(__u64));          \
		__uint(max_entries, 16384); /* resized by userspace */           \
	} stacks##n SEC(".maps");                                               \
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

/* FNV-1a over a stack's addresses: what the overflow maps key stacks by. */
#define FNV_OFFSET 0xcbf29ce484222325ULL
#define FNV_PRIME 0x100000001b3ULL

/*
 * The loops over a whole stack are global functions around bpf_loop: the
 * verifier checks each callback once, where an inlined 127-step loop is
 * simulated step by step at every place it is inlined, and a loop in a global
 * function still once per step (a third of the sampler's load time went there).
 */

/* What the loops over a stack's frames carry from step to step. */
struct frames_loop {
	struct room *s;
	__u64 h;
	__u32 from;
};

static long zero_step(__u32 i, struct frames_loop *c)
{
	__u32 at = c->from + i;
	if (at >= FLAMEBPF_MAX_DEPTH)
		return 1;
	c->s->st.ips[at] = 0;
	return 0;
}

/* Zeroes the frames of room `room`'s stack from n on: a stack shorter than the
 * last one stored from that room must not carry its tail. */
__noinline int zero_tail(__u32 n, __u32 room)
{
	struct frames_loop c = {.s = room_of(room), .from = n};
	if (!c.s || n >= FLAMEBPF_MAX_DEPTH)
		return 0;
	bpf_loop(FLAMEBPF_MAX_DEPTH - n, zero_step, &c, 0);
	return 0;
}

static long hash_step(__u32 i, struct frames_loop *c)
{
	if (i >= FLAMEBPF_MAX_DEPTH)
		return 1;
	c->h = (c->h ^ c->s->st.ips[i]) * FNV_PRIME;
	return 0;
}

/* FNV-1a of the first n frames of room `room`'s stack. */
__noinline __u64 hash_frames(__u32 n, __u32 room)
{
	struct frames_loop c = {.s = room_of(room), .h = FNV_OFFSET};
	if (!c.s)
		return c.h;
	if (n > FLAMEBPF_MAX_DEPTH)
		n = FLAMEBPF_MAX_DEPTH;
	bpf_loop(n, hash_step, &c, 0);
	return c.h;
}

/* Stores the first n addresses of room `room`'s stack under `h`, their hash, in
 * an overflow map. Returns the hash, or 0 when the stack could not be kept;
 * *fresh says whether this call stored it. */
static __always_inline __u64 keep_hashed(struct room *s, __u32 room, __u32 n, __u64 h, void *overflow_stacks,
					  long *err, bool *fresh)
{
	/* never 0 (which says "not kept"), without a branch on the hash: a
	 * condition would make the verifier track the hash's every step through
	 * the walk, and prune none of its states */
	h |= 1;
	*fresh = false;
	/* most samples repeat a stack already kept */
	if (bpf_map_lookup_elem(overflow_stacks, &h))
		return h;
	/* a new one is stored whole */
	zero_tail(n, room);
	*err = bpf_map_update_elem(overflow_stacks, &h, &s->st, BPF_NOEXIST);
	if (*err == 0) {
		*fresh = true;
		return h;
	}
	/* Another CPU may have stored the same stack in between. */
	if (bpf_map_lookup_elem(overflow_stacks, &h))
		return h;
	return 0;
}

/* The room's cache entry for a stack of hash h (h | 1, as kept). */
static __always_inline struct seen_stack *seen_slot(struct room *s, __u64 h)
{
	return &s->seen[(h >> 1) & (SEEN_STACKS - 1)];
}

/* Whether room s kept the stack of hash h (h | 1) in set `set` this turn. */
static __always_inline bool seen_before(struct room *s, __u64 h, __u32 set)
{
	struct seen_stack *e = seen_slot(s, h);
	return e->hash == h && e->set == set && e->epoch == set_epoch[set & 1];
}

/* Notes that room s kept the stack of hash h in set `set`. */
static __always_inline void note_seen(struct room *s, __u64 h, __u32 set)
{
	struct seen_stack *e = seen_slot(s, h);
	e->hash = h;
	e->set = set;
	e->epoch = set_epoch[set & 1];
}

/* keep_hashed() through room s's cache of the stacks it kept in set `set` this
 * turn: a stack seen before costs no look in the map. */
static __always_inline __u64 keep_cached(struct room *s, __u32 room, __u32 n, __u64 h, __u32 set,
					  void *overflow_stacks, long *err, bool *fresh)
{
	h |= 1;
	*fresh = false;
	if (seen_before(s, h, set))
		return h;
	h = keep_hashed(s, room, n, h, overflow_stacks, err, fresh);
	if (h)
		note_seen(s, h, set);
	return h;
}

/* Counts a sample's stack that could not be kept, by why. */
static __always_inline void count_stack_lost(long err)
{
	if (err == -FLAMEBPF_ENOMEM)
		count(STAT_STACK_NOMEM);
	else if (err == -FLAMEBPF_EBUSY)
		count(STAT_STACK_BUSY);
	else
		count(STAT_STACK_LOST);
}

/* keep_hashed() of a stack whose hash is not known yet. */
static __always_inline __u64 keep_by_hash(struct room *s, __u32 room, __u32 n, void *overflow_stacks, long *err)
{
	bool fresh;
	return keep_hashed(s, room, n, hash_frames(n, room), overflow_stacks, err, &fresh);
}

/* Keeps a stack whose STACK_TRACE bucket is taken: copies it with bpf_get_stack
 * and keeps it by hash. */
static __always_inline __u64 keep_overflowed(struct bpf_perf_event_data *ctx, void *overflow_stacks, __u64 flags)
{
	long err = 0;
	struct room *s = room_of(sample_room);
	if (!s)
		return 0;
	long len = bpf_get_stack(ctx, s->st.ips, sizeof(s->st.ips), flags);
	__u64 h = len > 0 ? keep_by_hash(s, sample_room, len / sizeof(__u64), overflow_stacks, &err) : 0;
	if (h)
		count(STAT_STACK_OVERFLOWED);
	else
		count_stack_lost(err);
	return h;
}

static __always_inline __s32 stack_id(struct bpf_perf_event_data *ctx, void *stacks, void *overflow_stacks,
				       __u64 flags, __u64 *hash)
{
	__s32 id = bpf_get_stackid(ctx, stacks, flags);
	*hash = 0;
	if (id == -FLAMEBPF_EEXIST) {
		*hash = keep_overflowed(ctx, overflow_stacks, flags);
	} else if (id < 0 && id != -FLAMEBPF_EFAULT) {
		/* -ENOMEM: the stack map's free list is empty: it is full. */
		count(STAT_STACK_LOST);
	}
	return id;
}

/* Keeps room s's user stack of n frames, hash h, in set `set`; one with py
 * Python frames, new to the map, goes to userspace to be named while its process
 * lives. Returns the key's stack id. */
static __always_inline __s32 keep_user_stack(struct room *s, __u32 tgid, __u32 n, __u64 h, __u32 py, __u32 set,
					      void *overflow_stacks, __u64 *hash)
{
	long err = 0;
	bool fresh;
	*hash = keep_cached(s, sample_room, n, h, set, overflow_stacks, &err, &fresh);
	if (!*hash) {
		count_stack_lost(err);
		return -FLAMEBPF_EEXIST;
	}
	if (py && fresh)
		py_announce(sample_room, tgid, n);
	return -FLAMEBPF_STACK_HASHED;
}

/* `--call-graph cfi`: unwinds the user stack with the unwind tables and keeps it
 * by hash; returns the key's stack id (-FLAMEBPF_STACK_HASHED when kept). A
 * process whose mappings are not known yet is walked with frame pointers by the
 * kernel, as in fp mode, and counted. */
static __always_inline __s32 cfi_stack(struct bpf_perf_event_data *ctx, __u32 tgid, void *stacks,
				       void *overflow_stacks, __u32 set, __u64 *hash, bool *exec_gone)
{
	*hash = 0;
	/* a sample in user mode is no kernel thread's: skip the task read */
	if ((ctx->regs.cs & 3) != 3 && current_is_kthread())
		return -FLAMEBPF_EFAULT;
	struct process_mappings *pm = bpf_map_lookup_elem(&process_maps, &tgid);
	if (!pm) {
		/* an exec past its point of no return (on_prepare_exec dropped the
		 * entry): the registers are the old image's and the memory the new
		 * one's, so any walk reads another program's memory */
		if ((ctx->regs.cs & 3) != 3 && in_execve()) {
			*exec_gone = true;
			return -FLAMEBPF_EFAULT;
		}
		count(STAT_CFI_NOT_LOADED);
		return stack_id(ctx, stacks, overflow_stacks, BPF_F_USER_STACK, hash);
	}
	__u32 gen = pm->gen;
	bool may_run_python = pm->flags & PROCESS_MAY_RUN_PYTHON;
	struct user_regs r;
	current_user_regs(ctx, &r);
	__u8 outcome;
	__u64 h;
	__u32 n = unwind_user(sample_room, tgid, gen, r.ip, r.sp, r.bp, &outcome, &h);
	count(outcome);
	/* Python frames after the native ones (python.h); a process that maps no
	 * python is spared the py_procs lookup */
	__u32 py = python_frames && may_run_python ? python_stack(sample_room, tgid, gen, &n, &h) : 0;
	struct room *s = room_of(sample_room);
	if (!s || n == 0) {
		count(STAT_STACK_LOST);
		return -FLAMEBPF_EEXIST;
	}
	return keep_user_stack(s, tgid, n, h, py, set, overflow_stacks, hash);
}

/* `--call-graph fp`: the kernel walks the user stack by frame pointers; a
 * process that runs CPython has that walk copied into the room, its Python
 * frames added after, and is kept by hash as in cfi mode. */
static __always_inline __s32 fp_stack(struct bpf_perf_event_data *ctx, __u32 tgid, void *stacks,
				      void *overflow_stacks, __u32 set, __u64 *hash)
{
	if (!python_frames || !py_process_of(sample_room, tgid, 0))
		return stack_id(ctx, stacks, overflow_stacks, BPF_F_USER_STACK, hash);
	*hash = 0;
	struct room *s = room_of(sample_room);
	if (!s) {
		count(STAT_STACK_LOST);
		return -FLAMEBPF_EEXIST;
	}
	long len = bpf_get_stack(ctx, s->st.ips, sizeof(s->st.ips), BPF_F_USER_STACK);
	if (len <= 0)
		return -FLAMEBPF_EFAULT;
	__u32 n = len / sizeof(__u64);
	__u64 h = hash_frames(n, sample_room);
	__u32 py = python_stack(sample_room, tgid, 0, &n, &h);
	return keep_user_stack(s, tgid, n, h, py, set, overflow_stacks, hash);
}

/* Adds the sample to one map set; inlined twice, so each copy sees constant maps. */
static __always_inline void record_in(struct bpf_perf_event_data *ctx, struct sample_key *key, __u32 set,
				      void *stacks, void *overflow_stacks, void *counts)
{
	/* a sample in user mode has no kernel stack: no need to ask for it */
	if ((ctx->regs.cs & 3) == 3) {
		key->kernel_stack_id = -FLAMEBPF_EFAULT;
		key->kernel_stack_hash = 0;
	} else {
		key->kernel_stack_id = stack_id(ctx, stacks, overflow_stacks, 0, &key->kernel_stack_hash);
	}
	if (key->kernel_stack_id == -FLAMEBPF_EFAULT)
		count(STAT_KERNEL_STACK_ABSENT);

	bool exec_gone = false;
	if (unwind_cfi)
		key->user_stack_id =
			cfi_stack(ctx, key->pid, stacks, overflow_stacks, set, &key->user_stack_hash, &exec_gone);
	else
		key->user_stack_id = fp_stack(ctx, key->pid, stacks, overflow_stacks, set, &key->user_stack_hash);
	if (exec_gone)
		count(STAT_USER_STACK_EXEC);
	else if (key->user_stack_id == -FLAMEBPF_EFAULT)
		count(current_is_kthread() ? STAT_USER_STACK_KTHREAD : STAT_USER_STACK_FAULT);

	__u64 period = ctx->sample_period;
	struct sample_value *val = bpf_map_lookup_elem(counts, key);
	if (!val) {
		struct sample_value init = {};
		/* EEXIST: another CPU added the key in between, which is fine */
		long err = bpf_map_update_elem(counts, key, &init, BPF_NOEXIST);
		val = bpf_map_lookup_elem(counts, key);
		if (!val) {
			if (err == -FLAMEBPF_ENOMEM)
				count(STAT_COUNTS_NOMEM);
			else if (err == -FLAMEBPF_EBUSY)
				count(STAT_COUNTS_BUSY);
			else
				count(STAT_COUNTS_FULL);
			return;
		}
	}
	__sync_fetch_and_add(&val->samples, 1);
	__sync_fetch_and_add(&val->weight, period);
}

/* Adds the sample to the active map set. */
static __always_inline void record(struct bpf_perf_event_data *ctx, struct sample_key *key)
{
	if (current_set())
		record_in(ctx, key, 1, &stacks1, &overflow1, &counts1);
	else
		record_in(ctx, key, 0, &stacks0, &overflow0, &counts0);
}

#endif
