// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * flamebpf's BPF programs: the entry points, each a few lines that put the parts
 * together. The parts live in headers by concern:
 *   kernel.h     the kernel types read through CO-RE
 *   stats.h      the per-class sample accounting (stats map)
 *   filters.h    which samples are the capture's (targets, cgroups, comm, idle)
 *   scratch.h    per-CPU rooms: a whole stack, the walk's window and row cache
 *   unwind.h     --call-graph cfi: user stacks unwound with CFI tables
 *   python.h     CPython frames read from the sampled thread, after the native ones
 *   aggregate.h  the in-kernel aggregate: two map sets of stacks and counts
 *   dwarf_copy.h --call-graph dwarf: stack copies sent through a ring buffer
 *   offcpu.h     --off-cpu: the time threads wait, added to the aggregate
 * Shared with Rust: profile.h (structs and constants, through the skeleton).
 */
#include <stdbool.h>
#include <linux/bpf.h>
#include <linux/bpf_perf_event.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>

#include "profile.h"
#include "kernel.h"
#include "stats.h"
#include "filters.h"
#include "scratch.h"
#include "unwind.h"
#include "python.h"
#include "aggregate.h"
#include "dwarf_copy.h"
#include "offcpu.h"

/* Names the shared constants in BTF, so the skeleton generates them for Rust. */
enum flamebpf_limits *flamebpf_limits_type = 0;
enum flamebpf_cfa *flamebpf_cfa_type = 0;
enum flamebpf_mapping *flamebpf_mapping_type = 0;
enum flamebpf_process_flags *flamebpf_process_flags_type = 0;
enum flamebpf_sample_kind *flamebpf_sample_kind_type = 0;
enum flamebpf_py_model *flamebpf_py_model_type = 0;
struct py_stack_event *py_stack_event_type = 0;

/* The sampler: one perf event per CPU; each overflow adds the sample of the task
 * on that CPU to the in-kernel aggregate. */
SEC("perf_event")
int profile(struct bpf_perf_event_data *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct sample_key key = {};
	key.pid = id >> 32;
	key.tid = (__u32)id;
	if (!wanted(key.pid, key.tid, key.comm))
		return 0;
	if (!per_thread)
		key.tid = 0;
	count(STAT_SAMPLES);
	record(ctx, &key);
	return 0;
}

/* `--call-graph dwarf`: the same events, each sample sent to userspace with a copy
 * of the top of its user stack. */
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
	send_stack_copy(ctx, tgid, tid, comm);
	return 0;
}

/* exec_seen: when each process's last exec ended (CLOCK_MONOTONIC ns; ~0 from
 * its point of no return to its end, on kernels with sched_prepare_exec): all
 * the exec's tracking records are older than that. Userspace
 * writes a process's py_procs and process_maps entries from the tracking
 * records applied up to some time; an exec after that time means the entry
 * would describe the image the exec replaced, and the write is undone
 * (src/capture/exec_guard.rs): without this, a spawner's children lost a fifth
 * of their walks on a busy machine, where userspace runs behind. Written by
 * on_prepare_exec and on_exec, deleted by on_exit. Size: 16384 processes at
 * once; one that finds it full goes unguarded (its entry's staleness is bounded
 * by the records that follow). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32); /* tgid */
	__type(value, __u64);
	__uint(max_entries, 16384);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} exec_seen SEC(".maps");

/* Process tgid's image is replaced from now on: its tables and Python go, and
 * userspace is told not to write them again from what it read before. */
static __always_inline void end_image(__u32 tgid, __u64 when)
{
	bpf_map_update_elem(&exec_seen, &tgid, &when, BPF_ANY);
	if (unwind_cfi)
		bpf_map_delete_elem(&process_maps, &tgid);
	forget_python(tgid);
}

/*
 * The task tracepoints are raw ones, their task read through CO-RE: a tp_btf
 * program makes libbpf parse the kernel's whole BTF to find its target, 5 ms of
 * every start, where CO-RE relocates against the few types cached by userspace
 * (src/capture/core_btf.rs).
 */

/* Children of a target become targets, so `flamebpf record -- make` profiles the
 * whole build. Threads share the tgid and need no entry. Runs in the parent. */
SEC("raw_tp/sched_process_fork")
int BPF_PROG(on_fork, struct task_struct *parent, struct task_struct *child)
{
	__u32 ptgid = bpf_get_current_pid_tgid() >> 32;
	__u32 ctgid = BPF_CORE_READ(child, tgid);
	if (ptgid == ctgid)
		return 0;
	/* the child maps what its parent maps, and runs its Python, from its first
	 * sample (CFI mode: its tables; cfi and fp modes: its Python) */
	if (unwind_cfi) {
		struct process_mappings *pm = bpf_map_lookup_elem(&process_maps, &ptgid);
		if (pm)
			bpf_map_update_elem(&process_maps, &ctgid, pm, BPF_ANY);
	}
	if (python_frames) {
		struct py_process *py = bpf_map_lookup_elem(&py_procs, &ptgid);
		if (py)
			bpf_map_update_elem(&py_procs, &ctgid, py, BPF_ANY);
	}
	if (!follow_forks || !bpf_map_lookup_elem(&targets, &ptgid))
		return 0;
	__u8 one = 1;
	if (bpf_map_update_elem(&targets, &ctgid, &one, BPF_ANY))
		count(STAT_TARGETS_FULL);
	return 0;
}

/* A pid freed by a target's exit may be reused by an unrelated process; forget it
 * (and, in CFI mode, its mappings) when its last thread goes: threads that
 * outlive the thread group leader are still the target's. */
SEC("raw_tp/sched_process_exit")
int BPF_PROG(on_exit, struct task_struct *task)
{
	/* the exiting task is the current one */
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tgid = id >> 32;
	__u32 tid = (__u32)id;
	/* a thread id is soon another thread's (pid_max is often 32768): one
	 * marked as in no Python thread list would leave the next thread of that id
	 * unread for 63 samples of 64 */
	if (python_frames)
		bpf_map_delete_elem(&py_threads, &tid);
	/* do_exit counts the thread out of signal->live before this tracepoint */
	if (BPF_CORE_READ(task, signal, live.counter) != 0)
		return 0;
	if (follow_forks)
		bpf_map_delete_elem(&targets, &tgid);
	if (unwind_cfi)
		bpf_map_delete_elem(&process_maps, &tgid);
	forget_python(tgid);
	bpf_map_delete_elem(&exec_seen, &tgid);
	return 0;
}

/* An exec replaces every mapping; until userspace has read the new ones, the
 * process is walked with frame pointers rather than with stale tables (CFI
 * mode), and its Python, if it had one, is gone. */
SEC("raw_tp/sched_process_exec")
int BPF_PROG(on_exec, struct task_struct *task)
{
	/* the task exec'ing is the current one */
	end_image(bpf_get_current_pid_tgid() >> 32, bpf_ktime_get_ns());
	return 0;
}

/* An exec past its point of no return, before it replaces the mappings: from
 * here the process's memory is the new image's while its registers are still
 * the old one's, and samples in this window read the new image's memory with
 * the old tables and Python runtime (a fifth of the Python walks of a process
 * that spawns commands failed so). Kernels before 6.9 lack the tracepoint:
 * on_exec alone then ends them, a little later. */
SEC("raw_tp/sched_prepare_exec")
int BPF_PROG(on_prepare_exec, struct task_struct *task)
{
	/* until on_exec: any view userspace has is older */
	end_image(bpf_get_current_pid_tgid() >> 32, ~0ULL);
	return 0;
}

/* --off-cpu: each context switch ends the wait of the thread coming in and
 * begins the wait of the one going out (still the current task here). A thread
 * that leaves runnable (preempted, or yielding) waits for a CPU from the start. */
SEC("tp_btf/sched_switch")
int BPF_PROG(on_switch, bool preempt, struct task_struct *prev, struct task_struct *next)
{
	__u64 now = bpf_ktime_get_ns();
	begin_wait(ctx, prev, preempt || task_state(prev) == TASK_RUNNING, now);
	end_wait(next, now);
	return 0;
}

/* --off-cpu: a blocked thread turned runnable; it now waits for a CPU. */
SEC("tp_btf/sched_wakeup")
int BPF_PROG(on_wakeup, struct task_struct *p)
{
	mark_woken(p);
	return 0;
}

/* --off-cpu: run by userspace before it reads a map set: counts the waits still
 * going up to now. */
SEC("iter/task")
int flush_waits(struct bpf_iter__task *ctx)
{
	struct task_struct *task = ctx->task;
	if (task)
		flush_wait(task);
	return 0;
}

/* --off-cpu: run by userspace when sampling starts: begins the waits going then. */
SEC("iter/task")
int seed_waits(struct bpf_iter__task *ctx)
{
	struct task_struct *task = ctx->task;
	if (task)
		seed_wait(task);
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
