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
	/* Why a map update failed, besides a full map (E2BIG): a map without
	 * preallocation found no memory at hand, or the map was busy (an event
	 * in NMI while the same CPU updated it). */
	FLAMEBPF_ENOMEM = 12,
	FLAMEBPF_EBUSY = 16,
	/* The stack id a key holds for a stack kept by hash in the overflow map
	 * without a STACK_TRACE bucket (negated): user stacks unwound with CFI. */
	FLAMEBPF_STACK_HASHED = 4095,
	/* CFI tables: bits of a pc a page of the index covers. */
	FLAMEBPF_INDEX_SHIFT = 12,
	/* CFI mode: rows of one unwind_rows chunk, 1 << this (8 MiB). */
	FLAMEBPF_ROWS_CHUNK_SHIFT = 20,
	/* CFI mode: executable mappings kept per process (a power of two). */
	FLAMEBPF_MAX_MAPPINGS = 256,
};

/* `--call-graph cfi`: how a row of an unwind table finds the caller's frame. */
enum flamebpf_cfa {
	CFA_NONE = 0,        /* no CFI covers this pc: step with frame pointers */
	CFA_RSP = 1,         /* CFA = rsp + 8 * cfa_q */
	CFA_RBP = 2,         /* CFA = rbp + 8 * cfa_q */
	CFA_PLT = 3,         /* CFA = rsp + 8, plus 8 when (rip & 15) >= cfa_q */
	CFA_SIGNAL = 4,      /* sigreturn trampoline: the caller's registers are in
			      * the ucontext at rsp */
	CFA_END = 5,         /* the outermost frame: no return address */
	CFA_UNSUPPORTED = 6, /* a rule the unwinder does not evaluate */
};

/* One row of an object's unwind table: from `pc` up to the next row's pc.
 * Return addresses are always at CFA - 8 on x86-64. */
struct unwind_row {
	__u32 pc;    /* address minus the table's base */
	__u8 cfa;    /* enum flamebpf_cfa */
	__s8 rbp_q;  /* the caller's rbp is saved at CFA + 8 * rbp_q; 0: unchanged */
	__u16 cfa_q; /* CFA offset in 8-byte units (CFA_PLT: the threshold) */
};

/* How a process's executable mapping is unwound. */
enum flamebpf_mapping {
	MAPPING_TABLE = 1,      /* with the object's table */
	MAPPING_NO_TABLE = 2,   /* with frame pointers: the object has no CFI */
	MAPPING_NOT_LOADED = 3, /* with frame pointers, counted: the table is being
				 * built, or found no room */
};

/* One page of an object's address range in `unwind_index`: the rows that can
 * cover a pc in it are lo..=hi (relative to the object's first row). */
struct index_entry {
	__u32 lo;
	__u32 hi;
};

/* One executable mapping of a process, and where its object's table lies in
 * `unwind_rows`, with the page index over it in `unwind_index` (one entry per
 * page p = (pc + rel) >> FLAMEBPF_INDEX_SHIFT). */
struct exec_mapping {
	__u64 start;
	__u64 end;
	__s64 rel; /* pc + rel = pc relative to the table's base */
	__u32 rows_start;
	__u32 rows_len;
	__u32 index_start;
	__u32 index_len; /* pages */
	__u32 kind;      /* enum flamebpf_mapping */
	__u32 pad;
};

/* process_mappings.flags */
enum flamebpf_process_flags {
	/* the process maps an object named like python: its samples look for a
	 * CPython in py_procs (python.h); the others skip that lookup */
	PROCESS_MAY_RUN_PYTHON = 1,
};

/* A process's executable mappings, sorted by start. */
struct process_mappings {
	__u32 len;
	/* Changes whenever userspace writes the entry (never the same for two
	 * writes): rows cached under an older generation are not used. */
	__u32 gen;
	__u32 flags; /* enum flamebpf_process_flags */
	__u32 pad;
	struct exec_mapping m[FLAMEBPF_MAX_MAPPINGS];
};

/* What an entry of the counts map measures. */
enum flamebpf_sample_kind {
	SAMPLE_ON_CPU = 0,   /* samples of the perf event: where the thread ran */
	SAMPLE_OFF_CPU = 1,  /* --off-cpu: nanoseconds blocked (sleep, I/O, lock) */
	SAMPLE_RUNQUEUE = 2, /* --off-cpu: nanoseconds runnable, waiting for a CPU */
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
	__u32 kind; /* enum flamebpf_sample_kind */
	__u32 pad;
};

struct sample_value {
	__u64 samples; /* off-CPU: waits */
	/* Sum of the perf event's sample period: nanoseconds for cpu-clock,
	 * events for counting events; off-CPU: nanoseconds waited. */
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
	/* CFI mode: each user stack walked ends in exactly one of these. */
	STAT_CFI_COMPLETE,    /* reached the outermost frame */
	STAT_CFI_TRUNCATED,   /* cut at FLAMEBPF_MAX_DEPTH frames */
	STAT_CFI_NOT_LOADED,  /* stepped with frame pointers through an object whose
			       * table was not loaded yet (or a process whose
			       * mappings were not known yet) */
	STAT_CFI_UNSUPPORTED, /* stopped at a rule the unwinder does not evaluate */
	STAT_CFI_STOPPED,     /* stopped early: unreadable memory, a frame pointer
			       * chain that led nowhere, an address no mapping covers */
	/* --off-cpu: each wait of a target thread (from leaving the CPU to running
	 * again) ends in exactly one of COUNTED, SHORT, LOST, COUNTS_FULL, or is
	 * still going (a continuous window's end counts its time so far). */
	STAT_OFFCPU_WAITS,       /* waits begun (or found going at the start) */
	STAT_OFFCPU_COUNTED,     /* added to the aggregate */
	STAT_OFFCPU_SHORT,       /* shorter than --off-cpu-min: left out */
	STAT_OFFCPU_LOST,        /* no room to remember the wait, or its end missed */
	STAT_OFFCPU_COUNTS_FULL, /* counts map full: the wait's time lost */
	STAT_OFFCPU_STACK_LOST,  /* a wait's stack not kept (overflow map full);
				  * the wait is counted under [lost stack] */
	/* A sample's stack or count lost for another reason than a full map
	 * (those are STAT_STACK_LOST and STAT_COUNTS_FULL): */
	STAT_STACK_NOMEM,  /* a new overflow entry found no memory at hand */
	STAT_STACK_BUSY,   /* the overflow map was busy (update in NMI) */
	STAT_COUNTS_NOMEM, /* a new counts entry found no memory at hand */
	STAT_COUNTS_BUSY,  /* the counts map was busy (update in NMI) */
	/* Python (bpf/python.h): each sample of a process with a readable
	 * CPython ends in exactly one of WALKED, TRUNCATED, STOPPED, NO_THREAD. */
	STAT_PY_WALKED,    /* its Python frames were read to the first one */
	STAT_PY_TRUNCATED, /* cut where the stack was full (FLAMEBPF_MAX_DEPTH) */
	STAT_PY_STOPPED,   /* a frame or the thread list could not be read */
	STAT_PY_NO_THREAD, /* no thread state for the sampled thread (a thread
			    * Python does not know, or one not started yet) */
	STAT_PY_RING_FULL, /* a new stack with Python frames not sent to be named
			    * (its frames may show as [unknown]) */
	STAT_USER_STACK_EXEC, /* in an exec past its point of no return: the old
			       * image's stack is gone (CFI mode) */
	STAT_MAX,
};

/* Python (bpf/python.h): how a version's frame chain says where each run of
 * the evaluation loop (one native _PyEval_EvalFrameDefault frame) begins. */
enum flamebpf_py_model {
	PY_MODEL_FRAME_OBJECTS = 1, /* 3.10: PyFrameObject chain, one run each */
	PY_MODEL_IS_ENTRY = 2,      /* 3.11: the run's first frame has is_entry */
	PY_MODEL_CSTACK = 3,        /* 3.12+: a frame owned by the C stack (owner
				     * 3) lies below each run's first frame */
	/* frame_flag's value for a frame owned by the C stack (3.12+) */
	PY_OWNED_BY_CSTACK = 3,
	/* cframe_frame when the thread state points at the frame itself */
	PY_NO_CFRAME = 0xffff,
	/* bytes of a frame read at once: every offset used lies below */
	PY_FRAME_BYTES = 72,
	/* 3.10 with python_lines: f_lasti lies past PY_FRAME_BYTES, inside the
	 * (far larger) frame object */
	PY_FRAME_OBJECT_BYTES = 104,
	/* the most threads of one interpreter searched for the sampled one */
	PY_MAX_THREADS = 64,
	/* A Python frame in a user stack: bit 63 set (no user address has it),
	 * bit 62 set on the first frame of a run of the evaluation loop, bits
	 * 48-61 a fingerprint of the frame's globals (a code object freed and
	 * another of another module made at its address are two frames), the
	 * code object's address in the low 48 bits. Code 0 with bit 62: an empty
	 * run. With python_lines, bits 48-61 hold instead the index of the
	 * instruction the frame runs, in code units, plus one (0: not begun),
	 * PY_LINE_UNKNOWN where it does not fit or makes no sense: stacks that
	 * differ only by line are different stacks, as perf's are. */
	PY_FRAME_BIT = 63,
	PY_ENTRY_BIT = 62,
	PY_GLOBALS_SHIFT = 48,
	PY_GLOBALS_MASK = 0x3fff,
	PY_LINE_UNKNOWN = 0x3fff,
};

/* Where a process's CPython keeps what the Python walk reads: the address of
 * `_PyRuntime` and the offsets of the running version (src/capture/python.rs,
 * from symbolizer::python's layouts and 3.13's _Py_DebugOffsets). */
struct py_process {
	__u64 runtime;          /* address of _PyRuntime */
	__u16 interp_head;      /* _PyRuntimeState.interpreters.head */
	__u16 threads_head;     /* PyInterpreterState.threads.head */
	__u16 tstate_next;      /* PyThreadState.next */
	__u16 tstate_thread_id; /* PyThreadState.thread_id: pthread_self(), the
				 * thread's fs base */
	__u16 tstate_frame;     /* .frame (3.10), .cframe (3.11, 3.12),
				 * .current_frame (3.13) */
	__u16 cframe_frame;     /* _PyCFrame.current_frame, or PY_NO_CFRAME */
	__u16 frame_previous;   /* f_back (3.10), previous */
	__u16 frame_code;       /* f_code, f_executable (3.13) */
	__u16 frame_flag;       /* is_entry (3.11), owner (3.12+) */
	__u16 frame_globals;    /* f_globals: its dict tells code objects that
				 * took turns at one address apart */
	__u16 frame_instr;      /* python_lines: f_lasti (3.10, an int in code
				 * units), prev_instr (3.11, 3.12), instr_ptr */
	__u16 code_adaptive;    /* python_lines: co_code_adaptive, where the
				 * instruction pointers point into (3.11+) */
	__u8 model;             /* enum flamebpf_py_model */
	__u8 pad[7];
};

/* Sent when a sample's stack with Python frames is not in the aggregate yet:
 * userspace names its code objects while the process lives. */
struct py_stack_event {
	__u32 pid;
	__u32 n; /* frames of `st` used */
	struct overflow_stack st;
};

#endif
