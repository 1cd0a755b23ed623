/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * Python frames: CPython 3.11+ keeps its frames in a per-thread area on the heap,
 * not on the C stack, so no native unwinding sees them. After the CFI walk, a
 * sample of a process userspace found a readable CPython in (`py_procs`) reads the
 * sampled thread's frame chain and appends one word per Python frame to the user
 * stack (code object address, a fingerprint of its globals or with python_lines
 * the instruction it runs, flags: profile.h's PY_FRAME_BIT and PY_ENTRY_BIT);
 * the words enter the stack's hash like any frame, so the aggregate stays in the
 * kernel. Userspace names the code objects and puts each run of Python frames in
 * place of the native evaluation-loop frame that ran it (src/symbolize/python.rs).
 *
 * The thread state: the one in the interpreter's thread list whose thread_id
 * (pthread_self(), which is the thread's fs base on x86-64) is the sampled
 * thread's task->thread.fsbase; found once per thread and kept in `py_threads`,
 * checked again (one read) at every sample.
 *
 * Cost: 3.11+ keep a thread's frames one after another in its data stack, so a
 * window of PY_WINDOW bytes read once serves many frames; 3.10's frame objects,
 * and frames elsewhere (generators), are read one by one.
 */
#ifndef FLAMEBPF_PYTHON_H
#define FLAMEBPF_PYTHON_H

const volatile bool python_frames = false; /* read Python frames (cfi and fp modes) */
/* --lines: each frame's word says which instruction it runs, for userspace to
 * find its line (profile.h's PY_LINE_UNKNOWN); off, nothing more is read */
const volatile bool python_lines = false;
/* Bumped by userspace after it writes or deletes py_procs entries: the per-CPU
 * copies of entries (py_walk.proc) made before are not used. */
volatile __u32 py_gen = 0;

/* py_procs: the processes with a readable CPython and where to read it. Written
 * by userspace (src/capture/python.rs) when it finds one, deleted at exit; copied
 * to a forked child by on_fork, dropped by on_exec. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32); /* tgid */
	__type(value, struct py_process);
	__uint(max_entries, 4096);
} py_procs SEC(".maps");

/* py_threads: the thread state found for each thread id; an entry that no longer
 * holds the thread's fs base is searched for again. An odd value counts the
 * samples of a thread no list held ((count << 1) | 1). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, __u32); /* tid */
	__type(value, __u64);
	__uint(max_entries, 16384);
} py_threads SEC(".maps");

/* py_stacks: stacks with Python frames the aggregate did not hold yet, for
 * userspace to name their code objects at once (a short script is gone by the
 * end of the capture). */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
} py_stacks SEC(".maps");

#define PY_SLOTS 16 /* words[]: a power of two above PY_FRAME_OBJECT_BYTES / 8 */
/* 3.11+ keep a thread's frames one after the other in its data stack, each
 * caller below its callee: one read of the memory below a frame serves the
 * frames of many calls, where each read costs far more than its bytes. */
#define PY_WINDOW 2048
#define PY_WIN_WORDS (PY_WINDOW / 8)
#define PY_FRAME (1ULL << PY_FRAME_BIT)
#define PY_ENTRY (1ULL << PY_ENTRY_BIT)
#define PY_ADDR_MASK ((1ULL << 48) - 1)
#define PY_FNV_PRIME 0x100000001b3ULL /* aggregate.h's hash */
#define PY_RESEARCH 64 /* samples of a thread without a thread state per search */
#define PY_TSTATE_BYTES 256 /* of a thread state read at once */
#define PY_TSTATE_WORDS (PY_TSTATE_BYTES / 8)

/* One walk of a thread's Python frames: a per-CPU room of its own per scratch
 * room (scratch.h), off the 512-byte BPF stack. */
struct py_walk {
	__u64 win[PY_WIN_WORDS]; /* a window of the frames' memory (3.11+) */
	__u64 words[PY_SLOTS]; /* a frame read on its own (PY_FRAME_BYTES of it,
			       * PY_FRAME_OBJECT_BYTES of 3.10's for lines) */
	__u64 tstate[PY_TSTATE_WORDS]; /* the start of a thread state */
	__u64 win_base;        /* where the window begins */
	__u64 win_len;         /* bytes of it read */
	__u64 f_code, f_prev, f_globals, f_flags, f_instr; /* the frame's fields */
	__u64 frame;           /* the next frame to read; 0 at the end */
	__u64 hash;            /* FNV-1a of the stack so far (aggregate.h) */
	__u64 fsbase;          /* the sampled thread's */
	__u64 ts;              /* the thread state searched for */
	__u32 n;               /* frames in the room's stack */
	__u32 room;
	__u32 last;            /* where the last Python frame went */
	__u32 written;         /* Python words written */
	__u32 run;             /* frames written since the last run began */
	__u16 off_previous, off_code, off_flag, off_globals, off_next, off_thread_id;
	__u16 off_instr, code_adaptive;
	__u8 model;
	__u8 outcome; /* a STAT_PY_* class once ended; 0 while it goes */
	__u8 pad2[2];
	/* The last sample's process and thread, kept between samples: a CPU
	 * mostly samples the same ones again, and these spare a look in py_procs
	 * and in py_threads, each a cache miss. The process's entry holds while
	 * its mappings (process_mappings.gen) and py_gen are the same; the thread
	 * state is checked at every sample, as py_threads' are. */
	struct py_process proc;
	__u32 proc_tgid;
	__u32 proc_gen;
	__u32 proc_py_gen;
	__u32 thread_tid;
	__u64 thread_ts;
	bool proc_none; /* proc_tgid runs no CPython flamebpf reads */
	__u8 pad3[7];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct py_walk);
	__uint(max_entries, ROOMS);
} py_scratch SEC(".maps");

static __always_inline int py_read(__u64 *dst, __u64 addr)
{
	return bpf_probe_read_user(dst, sizeof(*dst), (void *)addr);
}

/* Fills the window with up to PY_WINDOW bytes that end where frame f's first
 * PY_FRAME_BYTES do, from f's page on. Returns 1 when the window holds the
 * frame. */
__noinline int py_refill(struct py_walk *w, __u64 f)
{
	if (!w)
		return 0;
	__u64 end = f + PY_FRAME_BYTES;
	/* not below f's page: the data stack's first chunk begins on a page that
	 * often has nothing mapped below it, and a read that faults costs more
	 * than the frames below it would save (a 1-frame stack cost more than a
	 * 30-frame one); the frames of a lower page get a read of their own */
	__u64 base = end - PY_WINDOW;
	if (base < (f & ~4095ULL))
		base = f & ~4095ULL;
	__u64 len = end - base;
	/* checked on the register that is passed (the compiler would check a
	 * copy) */
	asm volatile("" : "+r"(len));
	if (len > PY_WINDOW || len < PY_FRAME_BYTES || bpf_probe_read_user(w->win, len, (void *)base)) {
		w->win_len = 0;
		return 0;
	}
	w->win_base = base;
	w->win_len = len;
	return 1;
}

/* Reads frame f's fields (code, previous, globals, the word holding the flag
 * and with python_lines the one holding the instruction) into w: from the
 * window where it holds them (3.11+), else on their own. Returns 1 when they
 * were read. */
static __always_inline int py_frame_fields(struct py_walk *w, __u64 f)
{
	/* the offsets were checked by userspace (below PY_FRAME_BYTES, 3.10's
	 * f_lasti below PY_FRAME_OBJECT_BYTES); the masks keep every index inside
	 * its array for the verifier */
	__u32 ip = (w->off_previous >> 3) & (PY_SLOTS - 1);
	__u32 ic = (w->off_code >> 3) & (PY_SLOTS - 1);
	__u32 ig = (w->off_globals >> 3) & (PY_SLOTS - 1);
	__u32 ifl = (w->off_flag >> 3) & (PY_SLOTS - 1);
	__u32 ii = (w->off_instr >> 3) & (PY_SLOTS - 1);
	/* 3.10's frames are objects of their own, anywhere on the heap */
	if (w->model != PY_MODEL_FRAME_OBJECTS && !(f & 7)) {
		__u64 rel = f - w->win_base;
		if (f < w->win_base || rel + PY_FRAME_BYTES > w->win_len) {
			if (!py_refill(w, f))
				goto alone;
			rel = f - w->win_base;
		}
		__u64 i = rel >> 3;
		w->f_code = w->win[(i + ic) & (PY_WIN_WORDS - 1)];
		w->f_prev = w->win[(i + ip) & (PY_WIN_WORDS - 1)];
		w->f_globals = w->win[(i + ig) & (PY_WIN_WORDS - 1)];
		w->f_flags = w->win[(i + ifl) & (PY_WIN_WORDS - 1)];
		if (python_lines)
			w->f_instr = w->win[(i + ii) & (PY_WIN_WORDS - 1)];
		return 1;
	}
alone:
	if (python_lines && w->model == PY_MODEL_FRAME_OBJECTS) {
		if (bpf_probe_read_user(w->words, PY_FRAME_OBJECT_BYTES, (void *)f))
			return 0;
	} else if (bpf_probe_read_user(w->words, PY_FRAME_BYTES, (void *)f)) {
		return 0;
	}
	w->f_code = w->words[ic];
	w->f_prev = w->words[ip];
	w->f_globals = w->words[ig];
	w->f_flags = w->words[ifl];
	if (python_lines)
		w->f_instr = w->words[ii];
	return 1;
}

/* python_lines: bits 48-61 of a frame's word, the index of the instruction it
 * runs plus one (profile.h). 3.10's f_lasti is that index already (-1 before the
 * first); 3.11+ point at the instruction (3.11, 3.12: at the one before the
 * first before it begins). */
static __always_inline __u64 py_instr_field(struct py_walk *w, __u64 code)
{
	__s64 index;
	if (w->model == PY_MODEL_FRAME_OBJECTS)
		index = (__s32)(w->f_instr >> ((w->off_instr & 7) * 8));
	else
		index = (__s64)(w->f_instr - code - w->code_adaptive) >> 1;
	if (index < -1 || index + 1 >= PY_LINE_UNKNOWN)
		return PY_LINE_UNKNOWN;
	return index + 1;
}

/* One Python frame: reads it, appends its word to room s's stack. Returns 1 to
 * end the walk. */
static __always_inline int py_step(struct py_walk *w, struct room *s)
{
	__u64 f = w->frame;
	if (f == 0) {
		w->outcome = STAT_PY_WALKED;
		return 1;
	}
	if (!py_frame_fields(w, f)) {
		w->outcome = STAT_PY_STOPPED;
		return 1;
	}
	__u64 code = w->f_code;
	w->frame = w->f_prev;
	__u8 flag = w->f_flags >> ((w->off_flag & 7) * 8);
	__u64 g = w->f_globals;
	__u64 tag = python_lines ? py_instr_field(w, code) : ((g >> 4) ^ (g >> 18)) & PY_GLOBALS_MASK;
	__u64 word = PY_FRAME | (code & PY_ADDR_MASK) | (tag << PY_GLOBALS_SHIFT);
	if (w->model == PY_MODEL_CSTACK && flag == PY_OWNED_BY_CSTACK) {
		/* the frame below a run: the run's first frame is the last one
		 * written, or, when the run has none yet, an empty run is said */
		if (w->run) {
			__u32 last = w->last;
			if (last < FLAMEBPF_MAX_DEPTH) {
				__u64 v = s->st.ips[last];
				/* the hash took the word without the flag: take it again */
				w->hash = (w->hash ^ (v | PY_ENTRY)) * PY_FNV_PRIME;
				s->st.ips[last] = v | PY_ENTRY;
			}
			w->run = 0;
			return 0;
		}
		word = PY_FRAME | PY_ENTRY;
	} else if (w->model == PY_MODEL_FRAME_OBJECTS || (w->model == PY_MODEL_IS_ENTRY && flag)) {
		word |= PY_ENTRY;
	}
	__u32 n = w->n;
	if (n >= FLAMEBPF_MAX_DEPTH) {
		w->outcome = STAT_PY_TRUNCATED;
		return 1;
	}
	s->st.ips[n] = word;
	w->hash = (w->hash ^ word) * PY_FNV_PRIME;
	w->last = n;
	w->n = n + 1;
	w->written++;
	w->run = (word & PY_ENTRY) ? 0 : w->run + 1;
	return 0;
}

/* bpf_loop's context for the loops over a walk: it must be on the stack. */
struct py_find {
	struct py_walk *w;
};

/* Four frames: a global function, which the verifier checks once; four a call
 * keep the calls (and the room's lookup) per frame few, as unwind.h's
 * step_four() does. */
__noinline int py_step_four(struct py_walk *w)
{
	if (!w)
		return 1;
	struct room *s = room_of(w->room);
	if (!s) {
		w->outcome = STAT_PY_STOPPED;
		return 1;
	}
	if (py_step(w, s))
		return 1;
	if (py_step(w, s))
		return 1;
	if (py_step(w, s))
		return 1;
	return py_step(w, s);
}

static long py_walk_step(__u32 i, struct py_find *c)
{
	return py_step_four(c->w) ? 1 : 0;
}

/* The walk: up to a stack's worth of frames. bpf_loop's callback is verified
 * once, where a loop was verified step by step. */
__noinline int py_walk_frames(struct py_walk *w)
{
	struct py_find c = {.w = w};
	bpf_loop(FLAMEBPF_MAX_DEPTH / 4 + 1, py_walk_step, &c, 0);
	return 0;
}

/* Finds the thread state whose thread_id is w->fsbase in the interpreter's list
 * that begins at w->ts; leaves it in w->ts (0 when none is). */
/* One thread state of the list: 1 (end) when it is the sampled thread's or the
 * list ends. bpf_loop's callback: verified once, where a 64-step loop was
 * verified step by step (a seventh of the sampler's load). */

static long py_find_step(__u32 i, struct py_find *c)
{
	struct py_walk *w = c->w;
	__u64 ts = w->ts;
	__u64 id = 0;
	if (ts == 0 || py_read(&id, ts + w->off_thread_id)) {
		w->ts = 0;
		return 1;
	}
	if (id == w->fsbase)
		return 1;
	if (py_read(&w->ts, ts + w->off_next)) {
		w->ts = 0;
		return 1;
	}
	return 0;
}

/* Finds the thread state whose thread_id is w->fsbase in the interpreter's list
 * that begins at w->ts; leaves it in w->ts (0 when none is). */
__noinline int py_find_thread(struct py_walk *w)
{
	if (!w)
		return 0;
	struct py_find c = {.w = w};
	long steps = bpf_loop(PY_MAX_THREADS, py_find_step, &c, 0);
	/* the list went on past PY_MAX_THREADS without it */
	if (steps >= PY_MAX_THREADS)
		w->ts = 0;
	return 0;
}

/* The sampled thread's first (innermost) Python frame; 0 when it has none. */
/* Reads thread state ts's thread_id and frame field into *id and *frame: in one
 * read where both lie in its first PY_TSTATE_BYTES (each read costs far more
 * than its bytes). Returns 0 when both were read. */
static __always_inline int py_read_tstate(struct py_walk *w, struct py_process *p, __u64 ts, __u64 *id,
					  __u64 *frame)
{
	__u64 a = p->tstate_thread_id, b = p->tstate_frame;
	__u64 len = (a > b ? a : b) + 8;
	if ((a & 7) || (b & 7) || len > PY_TSTATE_BYTES)
		return py_read(id, ts + a) || py_read(frame, ts + b);
	/* checked on the register that is passed */
	asm volatile("" : "+r"(len));
	if (len > PY_TSTATE_BYTES || len < 8 || bpf_probe_read_user(w->tstate, len, (void *)ts))
		return 1;
	*id = w->tstate[(a >> 3) & (PY_TSTATE_WORDS - 1)];
	*frame = w->tstate[(b >> 3) & (PY_TSTATE_WORDS - 1)];
	return 0;
}

/* The sampled thread's first (innermost) Python frame; 0 when it has none. */
static __always_inline __u64 py_first_frame(struct py_walk *w, struct py_process *p, __u32 tid)
{
	__u64 ts = 0;
	__u64 id = 0;
	__u64 frame = 0;
	bool have_frame = false;
	/* the thread this CPU sampled last, most often the same one */
	if (w->thread_tid == tid && w->thread_ts && !py_read_tstate(w, p, w->thread_ts, &id, &frame) &&
	    id == w->fsbase) {
		ts = w->thread_ts;
		have_frame = true;
	}
	if (!ts) {
		__u64 *cached = bpf_map_lookup_elem(&py_threads, &tid);
		if (cached) {
			ts = *cached;
			if (ts & 1) {
				/* a thread found in no list lately (a native thread
				 * of a Python process): searched again every
				 * PY_RESEARCH samples, not at each (a search reads
				 * every thread state), and at the 1st, 2nd, 4th, ...
				 * before: a thread sampled as it starts is listed
				 * before it sets its thread_id, and was unread for
				 * 64 samples */
				__u64 misses = ts >> 1;
				*cached = ((misses + 1) << 1) | 1;
				if ((misses % PY_RESEARCH) && (misses & (misses - 1))) {
					w->outcome = STAT_PY_NO_THREAD;
					return 0;
				}
				ts = 0;
			} else if (py_read_tstate(w, p, ts, &id, &frame) || id != w->fsbase) {
				ts = 0;
			} else {
				have_frame = true;
			}
		}
		if (!ts) {
			__u64 interp = 0;
			if (py_read(&interp, p->runtime + p->interp_head) || !interp ||
			    py_read(&w->ts, interp + p->threads_head)) {
				w->outcome = STAT_PY_STOPPED;
				return 0;
			}
			py_find_thread(w);
			ts = w->ts;
			if (!ts) {
				if (!cached) {
					__u64 miss = (1 << 1) | 1;
					bpf_map_update_elem(&py_threads, &tid, &miss, BPF_ANY);
				}
				w->outcome = STAT_PY_NO_THREAD;
				return 0;
			}
			bpf_map_update_elem(&py_threads, &tid, &ts, BPF_ANY);
		}
		w->thread_tid = tid;
		w->thread_ts = ts;
	}
	if (!have_frame && py_read(&frame, ts + p->tstate_frame)) {
		w->outcome = STAT_PY_STOPPED;
		return 0;
	}
	if (frame && p->cframe_frame != PY_NO_CFRAME && py_read(&frame, frame + p->cframe_frame)) {
		w->outcome = STAT_PY_STOPPED;
		return 0;
	}
	if (!frame)
		w->outcome = STAT_PY_WALKED;
	return frame;
}

/* Process tgid runs no CPython any more (it exited or exec'd): its entry goes,
 * and the rooms' copies of it with py_gen (fp mode has no mapping generation to
 * tell them apart). */
static __always_inline void forget_python(__u32 tgid)
{
	if (python_frames && bpf_map_delete_elem(&py_procs, &tgid) == 0)
		__sync_fetch_and_add(&py_gen, 1);
}

/* Room `room`'s walk, holding the CPython of process tgid (whose mappings are of
 * generation gen), or NULL when it runs none that flamebpf reads. The room
 * keeps the answer, a NULL too, while tgid, gen and py_gen stay: a CPU mostly
 * samples the process it sampled last, and a native one then costs no look in
 * py_procs. */
static __always_inline struct py_walk *py_process_of(__u32 room, __u32 tgid, __u32 gen)
{
	struct py_walk *w = bpf_map_lookup_elem(&py_scratch, &room);
	if (!w)
		return NULL;
	__u32 pyg = py_gen;
	if (w->proc_tgid != tgid || w->proc_gen != gen || w->proc_py_gen != pyg) {
		struct py_process *e = bpf_map_lookup_elem(&py_procs, &tgid);
		w->proc_tgid = tgid;
		w->proc_gen = gen;
		w->proc_py_gen = pyg;
		w->proc_none = !e;
		if (e)
			w->proc = *e;
	}
	return w->proc_none ? NULL : w;
}

/* Appends the sampled thread's Python frames to the `n` frames of room `room`'s
 * stack whose hash is *hash; returns the Python words written (0 for a process
 * without Python), with *n and *hash brought up to date. */
static __always_inline __u32 python_stack(__u32 room, __u32 tgid, __u32 gen, __u32 *n, __u64 *hash)
{
	struct py_walk *w = py_process_of(room, tgid, gen);
	if (!w)
		return 0;
	struct py_process *p = &w->proc;
	struct task_struct *task = (void *)bpf_get_current_task();
	w->fsbase = BPF_CORE_READ(task, thread.fsbase);
	w->outcome = 0;
	w->model = p->model;
	w->off_previous = p->frame_previous;
	w->off_code = p->frame_code;
	w->off_flag = p->frame_flag;
	w->off_globals = p->frame_globals;
	w->off_instr = p->frame_instr;
	w->code_adaptive = p->code_adaptive;
	w->off_next = p->tstate_next;
	w->off_thread_id = p->tstate_thread_id;
	w->frame = py_first_frame(w, p, (__u32)bpf_get_current_pid_tgid());
	w->n = *n;
	w->hash = *hash;
	w->room = room;
	w->written = 0;
	/* the frames have moved on since the last sample */
	w->win_len = 0;
	w->win_base = 0;
	w->run = 0;
	w->last = FLAMEBPF_MAX_DEPTH;
	if (w->frame)
		py_walk_frames(w);
	count(w->outcome ? w->outcome : STAT_PY_TRUNCATED);
	*n = w->n;
	*hash = w->hash;
	return w->written;
}

/* Sends a stack with Python frames that the aggregate just stored to userspace,
 * which names its code objects. */
static __always_inline void py_announce(__u32 room, __u32 tgid, __u32 n)
{
	struct room *s = room_of(room);
	if (!s)
		return;
	struct py_stack_event *e = bpf_ringbuf_reserve(&py_stacks, sizeof(*e), 0);
	if (!e) {
		count(STAT_PY_RING_FULL);
		return;
	}
	e->pid = tgid;
	e->n = n;
	bpf_probe_read_kernel(&e->st, sizeof(e->st), &s->st);
	bpf_ringbuf_submit(e, 0);
}

#endif
