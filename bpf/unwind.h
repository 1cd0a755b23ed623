/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * `--call-graph cfi` (the default): user stacks unwound in the kernel with tables
 * built in userspace from each object's call frame information (.eh_frame,
 * .debug_frame), and with frame pointers where an object has none (JIT code) or
 * its table is not loaded yet.
 *
 * For each frame: a binary search in the process's executable mappings
 * (`process_maps`, written by userspace from the tracking records; a forked child
 * gets a copy of its parent's at once, an exec drops them) finds the mapping and
 * its object's table, the page index narrows the rows to a few, a binary search
 * finds the row, and the row gives the CFA, the return address (CFA - 8) and the
 * caller's rbp. (bpf_find_vma cannot serve here: with interrupts off it works
 * once per interrupt, and a stack crosses several objects.)
 */
#ifndef FLAMEBPF_UNWIND_H
#define FLAMEBPF_UNWIND_H

const volatile bool unwind_cfi = false; /* user stacks by CFI instead of bpf_get_stackid */

/* unwind_rows: the rows of every loaded object, each object's in one range of
 * row numbers, in chunks of 1 << FLAMEBPF_ROWS_CHUNK_SHIFT rows (8 MiB), each an
 * array of its own that userspace makes when the tables first need it: an array
 * is allocated and zeroed whole when it is made, and the 32 MiB the tables may
 * take were 8 ms of every start (src/capture/unwind.rs). Written through a mmap
 * of each chunk, read by find_row(). Size: --unwind-rows; an object that finds
 * no room is left out and its frames are stepped with frame pointers
 * (STAT_CFI_NOT_LOADED). */
struct rows_chunk {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__type(key, __u32);
	__type(value, struct unwind_row);
	__uint(max_entries, 1 << FLAMEBPF_ROWS_CHUNK_SHIFT);
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__type(key, __u32);
	__uint(max_entries, 1); /* resized by userspace: chunks */
	__array(values, struct rows_chunk);
} unwind_rows SEC(".maps");

/* Row `idx` of unwind_rows; NULL where its chunk is not made. Both lookups are
 * inlined by the verifier (every chunk has the same size). */
static __always_inline struct unwind_row *row_at(__u32 idx)
{
	__u32 chunk = idx >> FLAMEBPF_ROWS_CHUNK_SHIFT;
	void *rows = bpf_map_lookup_elem(&unwind_rows, &chunk);
	if (!rows)
		return NULL;
	__u32 at = idx & ((1 << FLAMEBPF_ROWS_CHUNK_SHIFT) - 1);
	return bpf_map_lookup_elem(rows, &at);
}

/* unwind_index: per object, for each page of its address range, the rows that
 * can cover a pc in it (struct index_entry). Same writer and reader; sized with
 * unwind_rows (an eighth of it). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__type(key, __u32);
	__type(value, struct index_entry);
	__uint(max_entries, 1); /* resized by userspace */
} unwind_index SEC(".maps");

/* process_maps: each process's executable mappings with their tables. Written
 * by userspace (src/capture/unwind.rs) when a process's mappings or tables
 * change, copied by on_fork to a new child, dropped by on_exec and by userspace
 * at exit; read by every walk. Size: 16384 processes (about 12 KiB each, taken
 * as they come); a process without an entry is walked with frame pointers
 * (STAT_CFI_NOT_LOADED). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32); /* tgid */
	__type(value, struct process_mappings);
	__uint(max_entries, 16384);
} process_maps SEC(".maps");

/* The state of one walk, on the program's stack. */
struct walk {
	__u64 pc;
	__u64 sp;
	__u64 bp;
	__u32 tgid;
	__u32 gen;      /* of the process's mappings */
	__u64 hash;     /* FNV-1a of the frames recorded (aggregate.h) */
	__u32 n;        /* frames recorded */
	__u8 exact;     /* pc is not a return address (the leaf, or after a signal) */
	__u8 outcome;   /* the STAT_CFI_* class once the walk ended, 0 while it goes */
	__u8 fell_back; /* a frame was stepped with frame pointers for want of a table */
	__u8 found;     /* `m` below holds the mapping of the last frame */
	__u8 have_row;  /* `row` below is the row of `row_pc` */
	__u32 win_len;  /* bytes of the stack in the room's window, from win_base */
	__u32 room;     /* the scratch room (scratch.h) of the running program */
	__u32 pad;
	__u64 win_base; /* 8-byte aligned */
	__u64 val;      /* what read_stack() read */
	__u64 ra;       /* what read_frame() read: the return address */
	__u64 nbp;      /* and the caller's rbp */
	__u64 row_pc;
	struct unwind_row row;
	struct exec_mapping m;
};

/* 1 when a <= b, as a number rather than a branch: both below 2^63. Binary
 * searches built on it have no data-dependent branches, so the verifier walks
 * each once instead of every path through it (which exceeds its limit). */
static __always_inline __u64 at_or_below(__u64 a, __u64 b)
{
	__u64 le = ((b - a) >> 63) ^ 1;
	asm volatile("" : "+r"(le)); /* keep it arithmetic: no select, no branch */
	return le;
}

/*
 * The walk's steps are global functions: the verifier checks each once, on its
 * own, instead of once per path through every caller, which keeps the unwinder
 * far from its instruction limit.
 */

/* Makes w->m the mapping that holds `pc` (w->found = 0 when none does: anonymous
 * memory such as JIT code, or an address nothing maps). */
__noinline int enter_mapping(struct walk *w, __u64 pc)
{
	if (!w)
		return 0;
	if (w->found && pc >= w->m.start && pc < w->m.end)
		return 0;
	w->found = 0;
	struct process_mappings *pm = bpf_map_lookup_elem(&process_maps, &w->tgid);
	if (!pm)
		return 0;
	__u32 n = pm->len;
	if (n == 0 || n > FLAMEBPF_MAX_MAPPINGS)
		return 0;
	/* the last mapping that starts at or below pc: m[base] while n > 1 */
	__u32 base = 0;
	for (int k = 0; k < 9; k++) {
		if (n <= 1)
			break;
		__u32 half = n / 2;
		__u64 start = pm->m[(base + half) & (FLAMEBPF_MAX_MAPPINGS - 1)].start;
		base += at_or_below(start, pc) * half;
		n -= half;
	}
	struct exec_mapping *m = &pm->m[base & (FLAMEBPF_MAX_MAPPINGS - 1)];
	if (pc < m->start || pc >= m->end)
		return 0;
	w->m = *m;
	w->found = 1;
	return 0;
}

/* Makes w->row the row that covers `pc` in the current mapping's table
 * (CFA_NONE when none does). */
__noinline int find_row(struct walk *w, __u64 pc)
{
	if (!w)
		return 0;
	struct unwind_row *row = &w->row;
	row->cfa = CFA_NONE;
	w->row_pc = pc;
	w->have_row = 1;
	__s64 rel = (__s64)pc + w->m.rel;
	if (rel < 0 || rel > 0xffffffffLL)
		return 0;
	__u32 page = (__u64)rel >> FLAMEBPF_INDEX_SHIFT;
	if (page >= w->m.index_len)
		return 0;
	__u32 at = w->m.index_start + page;
	struct index_entry *e = bpf_map_lookup_elem(&unwind_index, &at);
	if (!e)
		return 0;
	__u32 lo = e->lo, hi = e->hi;
	if (hi < lo || hi >= w->m.rows_len)
		return 0;
	/* the last row at or below rel among rows lo..=hi; a page holds at most
	 * 4096 rows, so 13 halvings leave one */
	__u32 base = w->m.rows_start + lo;
	__u32 n = hi - lo + 1;
	for (int k = 0; k < 13; k++) {
		if (n <= 1)
			break;
		__u32 half = n / 2;
		__u32 idx = base + half;
		struct unwind_row *r = row_at(idx);
		if (!r)
			return 0;
		base += at_or_below(r->pc, (__u64)rel) * half;
		n -= half;
	}
	struct unwind_row *r = row_at(base);
	if (r && r->pc <= (__u64)rel)
		*row = *r;
	return 0;
}

/* Reads 8 bytes of the sampled stack at `addr` into w->val, from the window when
 * it holds them, else after copying the window anew from a little below `addr`
 * (the reads that follow are above it, bar a saved rbp just below a return
 * address). Returns 1 when the read succeeded. */
__noinline int read_stack(struct walk *w, __u64 addr)
{
	if (!w)
		return 0;
	struct room *s = room_of(w->room);
	if (!s)
		return 0;
	/* what the walk reads is aligned on any real stack; anything else is read
	 * on its own */
	if (addr & 7)
		return bpf_probe_read_user(&w->val, sizeof(w->val), (void *)addr) == 0;
	__u64 off = addr - w->win_base;
	if (addr < w->win_base || off + 8 > w->win_len) {
		/* from a little below addr, but not below its page, which may not be
		 * present (nothing here may fault a page in) */
		__u64 base = addr - 64;
		if ((base >> 12) != (addr >> 12))
			base = addr & ~4095ULL;
		__u64 len = STACK_WINDOW;
		if (bpf_probe_read_user(s->window, STACK_WINDOW, (void *)base) != 0) {
			/* near the end of the stack's mapping, which ends on a page
			 * boundary: up to the end of addr's page */
			len = ((addr | 4095) + 1) - base;
			/* checked on the register that is passed (the compiler would
			 * check a copy) */
			asm volatile("" : "+r"(len));
			if (len > STACK_WINDOW || len < 8)
				len = 8;
			asm volatile("" : "+r"(len));
			if (len > STACK_WINDOW || len < 8 ||
			    bpf_probe_read_user(s->window, len, (void *)base) != 0) {
				w->win_len = 0;
				return bpf_probe_read_user(&w->val, sizeof(w->val), (void *)addr) == 0;
			}
		}
		w->win_base = base;
		w->win_len = len;
		off = addr - base;
	}
	__u64 i = off >> 3;
	if (i >= WINDOW_WORDS)
		return 0;
	asm volatile("" : "+r"(i));
	w->val = s->window[i & (WINDOW_WORDS - 1)];
	return 1;
}

/* Reads a frame's return address (at cfa - 8) and, when bp_off is not 0, the
 * caller's saved rbp (at cfa + bp_off) into w->ra and w->nbp, refilling the window
 * once for both. The slow half of read_frame(). */
__noinline int read_frame_slow(struct walk *w, __u64 cfa, __s64 bp_off)
{
	if (!w)
		return 0;
	if (bp_off && !read_stack(w, cfa + bp_off))
		return 0;
	__u64 nbp = bp_off ? w->val : w->bp;
	if (!read_stack(w, cfa - 8))
		return 0;
	w->ra = w->val;
	w->nbp = nbp;
	return 1;
}

/* read_frame_slow() without a call when the window already holds both: a call
 * and its return cost more than the reads (every return is a return thunk on
 * kernels with return-stack mitigations). */
static __always_inline bool read_frame(struct walk *w, struct room *s, __u64 cfa, __s64 bp_off)
{
	/* word indexes into the window; below its base they wrap around to huge
	 * ones, so one unsigned compare bounds each. bp_off is a multiple of 8:
	 * cfa's alignment is both reads'. */
	__u64 a = (cfa - 8 - w->win_base) >> 3;
	__u64 b = bp_off ? (cfa + bp_off - w->win_base) >> 3 : a;
	__u64 words = w->win_len >> 3;
	if (!(cfa & 7) && a < words && b < words) {
		/* the masks restate the bounds for the verifier, which sees the
		 * compiler's merged check on a copy (and the compiler would drop
		 * them as redundant) */
		asm volatile("" : "+r"(a), "+r"(b));
		w->ra = s->window[a & (WINDOW_WORDS - 1)];
		w->nbp = bp_off ? s->window[b & (WINDOW_WORDS - 1)] : w->bp;
		return true;
	}
	return read_frame_slow(w, cfa, bp_off);
}

/* A signal frame: the interrupted rip, rsp and rbp from the ucontext at rsp
 * (uc_mcontext.gregs). Rare, so a call of its own. */
__noinline int read_signal(struct walk *w)
{
	if (!w)
		return 0;
	__u64 sp = w->sp;
	if (!read_stack(w, sp + 120))
		return 0;
	__u64 bp = w->val;
	if (!read_stack(w, sp + 160))
		return 0;
	__u64 nsp = w->val;
	if (!read_stack(w, sp + 168))
		return 0;
	w->pc = w->val;
	w->sp = nsp;
	w->bp = bp;
	w->exact = 1;
	return 1;
}

/* One frame: records the pc, finds the caller's pc, sp and bp. Returns 1 to end
 * the walk, with w->outcome set. */
static __always_inline long step_once(struct walk *w, struct room *s)
{
	__u32 n = w->n;
	if (n >= FLAMEBPF_MAX_DEPTH) {
		w->outcome = STAT_CFI_TRUNCATED;
		return 1;
	}
	s->st.ips[n] = w->pc;
	w->n = n + 1;
	w->hash = (w->hash ^ w->pc) * 0x100000001b3ULL;

	__u64 lookup = w->exact ? w->pc : w->pc - 1;
	struct unwind_row row = {};
	__u32 slot = ((__u32)(lookup ^ (lookup >> 17)) ^ (w->tgid << 11)) * 0x9E3779B1u >> 23;
	struct row_cache_entry *ce = &s->cache[slot & (ROW_CACHE - 1)];
	if (ce->pc == lookup && ce->tgid == w->tgid && ce->gen == w->gen) {
		row = ce->row;
	} else {
		if (!w->found || lookup < w->m.start || lookup >= w->m.end)
			enter_mapping(w, lookup);
		if (w->found) {
			if (w->m.kind == MAPPING_TABLE) {
				/* a recursion returns to the same pc frame after frame */
				if (!w->have_row || w->row_pc != lookup)
					find_row(w, lookup);
				row = w->row;
				ce->pc = lookup;
				ce->tgid = w->tgid;
				ce->gen = w->gen;
				ce->row = row;
			} else if (w->m.kind == MAPPING_NOT_LOADED) {
				w->fell_back = 1;
			}
		}
	}

	__u64 cfa;
	__s64 bp_off = (__s64)row.rbp_q * 8; /* 0: rbp unchanged */
	switch (row.cfa) {
	case CFA_END:
		w->outcome = STAT_CFI_COMPLETE;
		return 1;
	case CFA_UNSUPPORTED:
		w->outcome = STAT_CFI_UNSUPPORTED;
		return 1;
	case CFA_SIGNAL:
		if (!read_signal(w)) {
			w->outcome = STAT_CFI_STOPPED;
			return 1;
		}
		return 0;
	case CFA_RSP:
		cfa = w->sp + (__u64)row.cfa_q * 8;
		break;
	case CFA_RBP:
		cfa = w->bp + (__u64)row.cfa_q * 8;
		break;
	case CFA_PLT:
		cfa = w->sp + 8 + ((w->pc & 15) >= row.cfa_q ? 8 : 0);
		break;
	default:
		/* frame pointers: rbp points at the saved rbp, the return address
		 * above it: CFA = rbp + 16, rbp saved at CFA - 16 */
		if (w->bp == 0) {
			w->outcome = STAT_CFI_COMPLETE;
			return 1;
		}
		cfa = w->bp + 16;
		bp_off = -16;
		break;
	}
	/* the stack grows down: a caller's frame lies above its callee's */
	if (cfa <= w->sp || !read_frame(w, s, cfa, bp_off)) {
		w->outcome = STAT_CFI_STOPPED;
		return 1;
	}
	if (w->ra == 0) {
		w->outcome = STAT_CFI_COMPLETE;
		return 1;
	}
	w->pc = w->ra;
	w->sp = cfa;
	w->bp = w->nbp;
	w->exact = 0;
	return 0;
}

/* Four frames: a global function, which the verifier checks once, on its own;
 * as bpf_loop's callback body it was simulated iteration after iteration until
 * its states converged, in each program that walks (half the default mode's
 * load time, two thirds of --off-cpu's). Four frames a call keep the calls per
 * frame where two frames per callback had them (each call and return costs
 * about a frame's own work: returns go through a thunk on kernels with
 * return-stack mitigations). */
__noinline int step_four(struct walk *w)
{
	if (!w)
		return 1;
	struct room *s = room_of(w->room);
	if (!s) {
		w->outcome = STAT_CFI_STOPPED;
		return 1;
	}
	if (step_once(w, s))
		return 1;
	if (step_once(w, s))
		return 1;
	if (step_once(w, s))
		return 1;
	return step_once(w, s);
}

/* bpf_loop's callback: returns 0 or 1, as bpf_loop requires. */
static long unwind_step(__u32 i, struct walk *w)
{
	return step_four(w) ? 1 : 0;
}

/* Unwinds the current task's user stack from (ip, sp, bp) into the stack of
 * scratch room `room`; returns the number of frames, with how the walk ended (a STAT_CFI_*
 * class) in *outcome and the frames' FNV-1a hash in *hash. */
static __always_inline __u32 unwind_user(__u32 room, __u32 tgid, __u32 gen, __u64 ip, __u64 sp,
					 __u64 bp, __u8 *outcome, __u64 *hash)
{
	struct walk w = {};
	w.room = room;
	w.hash = 0xcbf29ce484222325ULL;
	w.tgid = tgid;
	w.gen = gen;
	w.pc = ip;
	w.sp = sp;
	w.bp = bp;
	w.exact = 1;
	bpf_loop(FLAMEBPF_MAX_DEPTH / 4 + 1, unwind_step, &w, 0);
	__u8 o = w.outcome ? w.outcome : STAT_CFI_TRUNCATED;
	if (w.fell_back && o != STAT_CFI_UNSUPPORTED)
		o = STAT_CFI_NOT_LOADED;
	*outcome = o;
	*hash = w.hash;
	return w.n;
}

#endif
