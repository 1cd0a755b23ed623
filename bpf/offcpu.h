/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * `--off-cpu`: the time target threads spend off the CPU, added in nanoseconds to
 * the stack at which they left it, in the same aggregate as the samples.
 *
 * At sched_switch the thread leaving the CPU (`prev`, still current) has its
 * stacks kept and its wait begun in task storage; the thread coming in (`next`)
 * ends its wait, and the wait's time goes into the counts map under its stacks
 * with kind SAMPLE_OFF_CPU (blocked) and SAMPLE_RUNQUEUE (runnable, waiting for
 * a CPU: from its wakeup, or from the switch when it was preempted). Nothing per
 * switch crosses to userspace.
 *
 * Waits still going when userspace reads the aggregate are counted up to then
 * by a task iterator (flush_waits); the waits going when a capture starts are
 * begun by another (seed_waits), so a thread asleep throughout still shows.
 *
 * Off-CPU stacks are always kept by hash in the overflow maps, never in the
 * STACK_TRACE maps: a wait can outlive a continuous window, and at the window's
 * end flush_waits copies its stacks into the next set (a STACK_TRACE map cannot
 * be read from BPF).
 */
#ifndef FLAMEBPF_OFFCPU_H
#define FLAMEBPF_OFFCPU_H

const volatile __u64 off_cpu_min_ns = 0; /* --off-cpu-min */

/* One thread's wait, in its task storage. `since` is the first nanosecond of
 * the wait not counted yet (0: the thread is not waiting); claiming time moves
 * it atomically, so the switch-in and a flush on another CPU never count the
 * same nanoseconds twice. */
struct off_cpu_wait {
	__u64 start;  /* when the wait began */
	__u64 since;  /* counted up to here; 0: not waiting */
	__u64 woken;  /* when it turned runnable; 0: still blocked */
	__u32 set;    /* the map set its stacks are kept in */
	__u32 pad;
	struct sample_key key;
};

/* waits: each thread's current wait. Written at switch-out (on_switch) and by
 * seed_waits, ended at switch-in, marked by on_wakeup, flushed by flush_waits;
 * never read by userspace. Size: one entry per thread that ever waited while
 * the programs ran, freed with the thread. */
struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct off_cpu_wait);
} waits SEC(".maps");

/* The overflow map of a set. */
static __always_inline void *overflow_of(__u32 set)
{
	return set ? (void *)&overflow1 : (void *)&overflow0;
}

static __always_inline void *counts_of(__u32 set)
{
	return set ? (void *)&counts1 : (void *)&counts0;
}

/* The frames in what bpf_get_stack returned. */
static __always_inline __u32 frames(long len)
{
	return len > 0 ? (__u64)len / 8 : 0;
}

/* Keeps the first n frames of scratch room `room` by hash in set `set`'s overflow map;
 * returns the hash, 0 when lost. A new stack with Python frames of process
 * `py_pid` (0: none) is sent to be named. A function of its own, verified once,
 * rather than a loop inlined at each of its callers (which exceeds the
 * verifier's budget). */
__noinline __u64 keep_scratch(__u32 n, __u32 set, __u32 room, __u32 py_pid)
{
	struct room *s = room_of(room);
	if (!s)
		return 0;
	if (n > FLAMEBPF_MAX_DEPTH)
		n = FLAMEBPF_MAX_DEPTH;
	long err = 0;
	bool fresh;
	__u64 h = hash_frames(n, room);
	if (set)
		h = keep_cached(s, room, n, h, 1, &overflow1, &err, &fresh);
	else
		h = keep_cached(s, room, n, h, 0, &overflow0, &err, &fresh);
	if (h && fresh && py_pid)
		py_announce(room, py_pid, n);
	return h;
}

/* Keeps the first n frames of scratch by hash in set `set`; returns the key's
 * stack id (-STACK_HASHED, -EFAULT for no frames, -EEXIST when lost). */
static __always_inline __s32 keep_wait_stack(__u32 n, __u32 set, __u32 room, __u32 py_pid, __u64 *hash)
{
	*hash = 0;
	if (n == 0)
		return -FLAMEBPF_EFAULT;
	*hash = keep_scratch(n, set, room, py_pid);
	if (!*hash) {
		count(STAT_OFFCPU_STACK_LOST);
		return -FLAMEBPF_EEXIST;
	}
	return -FLAMEBPF_STACK_HASHED;
}

/* The current task's stacks at switch-out, kept in set `set`. The kernel stack
 * ends in __schedule; the user stack is unwound from the registers saved at
 * kernel entry, by CFI tables where the mode has them. */
static __always_inline void keep_switch_stacks(void *ctx, struct sample_key *key, __u32 set)
{
	struct room *s = room_of(ROOM_TASK);
	if (!s)
		return;
	struct overflow_stack *st = &s->st;
	/* it starts with this program and the tracepoint's callers, which userspace
	 * cuts off at __schedule (their number depends on the probes attached) */
	long len = bpf_get_stack(ctx, st->ips, sizeof(st->ips), 0);
	key->kernel_stack_id = keep_wait_stack(frames(len), set, ROOM_TASK, 0, &key->kernel_stack_hash);
	if (current_is_kthread()) {
		key->user_stack_id = -FLAMEBPF_EFAULT;
		return;
	}
	__u32 n;
	__u32 py = 0;
	struct process_mappings *pm = unwind_cfi ? bpf_map_lookup_elem(&process_maps, &key->pid) : 0;
	if (pm) {
		__u32 gen = pm->gen;
		bool may_run_python = pm->flags & PROCESS_MAY_RUN_PYTHON;
		struct user_regs r;
		entry_user_regs(&r);
		__u8 outcome;
		__u64 h;
		n = unwind_user(ROOM_TASK, key->pid, gen, r.ip, r.sp, r.bp, &outcome, &h);
		/* a Python thread waits in the Python function that called */
		if (python_frames && may_run_python)
			py = python_stack(ROOM_TASK, key->pid, gen, &n, &h);
	} else if (unwind_cfi && in_execve()) {
		/* an exec past its point of no return (on_prepare_exec dropped the
		 * entry): the registers are the old image's, the memory the new one's */
		key->user_stack_id = -FLAMEBPF_EFAULT;
		return;
	} else {
		n = frames(bpf_get_stack(ctx, st->ips, sizeof(st->ips), BPF_F_USER_STACK));
	}
	key->user_stack_id = keep_wait_stack(n, set, ROOM_TASK, py ? key->pid : 0, &key->user_stack_hash);
}

/* Adds `ns` of kind `kind` under the wait's key to set `set`. */
static __always_inline bool add_wait(struct off_cpu_wait *w, __u32 set, __u32 kind, __u64 ns, __u64 waits)
{
	if (ns == 0 && waits == 0)
		return true;
	struct sample_key key = w->key;
	key.kind = kind;
	void *counts = counts_of(set);
	struct sample_value *val = bpf_map_lookup_elem(counts, &key);
	if (!val) {
		struct sample_value init = {};
		bpf_map_update_elem(counts, &key, &init, BPF_NOEXIST);
		val = bpf_map_lookup_elem(counts, &key);
		if (!val)
			return false;
	}
	__sync_fetch_and_add(&val->samples, waits);
	__sync_fetch_and_add(&val->weight, ns);
	return true;
}

/* Adds the time from `from` to `to` of a wait: blocked until it was woken,
 * runnable after. `waits` is 1 when this ends the wait. */
static __always_inline bool add_span(struct off_cpu_wait *w, __u32 set, __u64 from, __u64 to, __u64 waits)
{
	__u64 woken = w->woken;
	if (!woken || woken > to)
		woken = to;
	if (woken < from)
		woken = from;
	bool ok = add_wait(w, set, SAMPLE_OFF_CPU, woken - from, woken > from ? waits : 0);
	return add_wait(w, set, SAMPLE_RUNQUEUE, to - woken, woken > from ? 0 : waits) && ok;
}

/* Whether a thread leaving the CPU is the capture's: the sample filters, without
 * the idle task and, unless --include-idle, kernel threads (whose waits are
 * their normal state). */
static __always_inline bool wait_wanted(struct task_struct *prev, struct sample_key *key)
{
	if (key->tid == 0 || (prev->flags & PF_EXITING))
		return false;
	if (!include_idle && (prev->flags & PF_KTHREAD))
		return false;
	return belongs(key->pid, key->comm);
}

/* Switch-out: `prev` is the current task. */
static __always_inline void begin_wait(void *ctx, struct task_struct *prev, bool runnable, __u64 now)
{
	struct sample_key key = {};
	key.pid = prev->tgid;
	key.tid = prev->pid;
	if (!wait_wanted(prev, &key))
		return;
	if (!per_thread)
		key.tid = 0;
	count(STAT_OFFCPU_WAITS);
	struct off_cpu_wait *w = bpf_task_storage_get(&waits, prev, 0, BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (!w) {
		count(STAT_OFFCPU_LOST);
		return;
	}
	/* a wait never ended (its switch-in ran before the programs were attached,
	 * or was skipped) is lost rather than counted to now */
	if (__sync_lock_test_and_set(&w->since, 0))
		count(STAT_OFFCPU_LOST);
	__u32 set = current_set();
	keep_switch_stacks(ctx, &key, set);
	w->key = key;
	w->set = set;
	w->start = now;
	w->woken = runnable ? now : 0;
	w->since = now;
}

/* Switch-in: ends `next`'s wait. */
static __always_inline void end_wait(struct task_struct *next, __u64 now)
{
	struct off_cpu_wait *w = bpf_task_storage_get(&waits, next, 0, 0);
	if (!w)
		return;
	__u64 since = __sync_lock_test_and_set(&w->since, 0);
	if (!since || now < since)
		return;
	if (now - w->start < off_cpu_min_ns) {
		count(STAT_OFFCPU_SHORT);
		return;
	}
	if (add_span(w, w->set, since, now, 1))
		count(STAT_OFFCPU_COUNTED);
	else
		count(STAT_OFFCPU_COUNTS_FULL);
}

/* A blocked thread turned runnable: the rest of its wait is run-queue time. */
static __always_inline void mark_woken(struct task_struct *p)
{
	struct off_cpu_wait *w = bpf_task_storage_get(&waits, p, 0, 0);
	if (w && w->since && !w->woken)
		w->woken = bpf_ktime_get_ns();
}

/* flush_waits: counts the time of a wait still going, up to now. At the end of
 * a capture (`final`) the wait ends there; at the end of a continuous window its
 * stacks move to the set now active, where the rest of it will be counted. */
const volatile bool flush_final = false;

static __always_inline void flush_wait(struct task_struct *task)
{
	struct off_cpu_wait *w = bpf_task_storage_get(&waits, task, 0, 0);
	if (!w)
		return;
	__u64 since = w->since;
	if (!since)
		return;
	__u64 now = bpf_ktime_get_ns();
	__u32 old = w->set;
	__u32 set = current_set();
	if (flush_final) {
		if (__sync_val_compare_and_swap(&w->since, since, 0) != since)
			return;
		if (now - w->start < off_cpu_min_ns)
			count(STAT_OFFCPU_SHORT);
		else if (add_span(w, old, since, now, 1))
			count(STAT_OFFCPU_COUNTED);
		else
			count(STAT_OFFCPU_COUNTS_FULL);
		return;
	}
	if (set != old) {
		/* the stacks go first, so a switch-in that sees the new set finds them */
		__u64 hashes[2] = {w->key.kernel_stack_hash, w->key.user_stack_hash};
		for (int i = 0; i < 2; i++) {
			if (!hashes[i])
				continue;
			struct overflow_stack *s = bpf_map_lookup_elem(overflow_of(old), &hashes[i]);
			if (!s || bpf_map_update_elem(overflow_of(set), &hashes[i], s, BPF_ANY))
				count(STAT_OFFCPU_STACK_LOST);
		}
	}
	/* short waits so far wait for their end: the minimum is the whole wait's */
	if (now - w->start < off_cpu_min_ns) {
		w->set = set;
		return;
	}
	if (__sync_val_compare_and_swap(&w->since, since, now) != since)
		return;
	if (!add_span(w, old, since, now, 0))
		count(STAT_OFFCPU_COUNTS_FULL);
	if (w->woken)
		w->woken = now;
	w->set = set;
}

/* seed_waits: a target thread off the CPU when the capture starts begins its
 * wait then, with the kernel stack it sleeps in. Its user stack cannot be read
 * from here (another task's memory), so it is left empty. */
static __always_inline void seed_wait(struct task_struct *task)
{
	if (task->on_cpu)
		return;
	struct sample_key key = {};
	key.pid = task->tgid;
	key.tid = task->pid;
	if (key.tid == 0 || (task->flags & PF_EXITING))
		return;
	if (!include_idle && (task->flags & PF_KTHREAD))
		return;
	if (filter_pids && !bpf_map_lookup_elem(&targets, &key.pid))
		return;
	if (exclude_tgid && key.pid == exclude_tgid)
		return;
	/* no helper tells another task's cgroup here: a --cgroup capture starts
	 * with the waits that begin after it */
	if (filter_cgroup)
		return;
	bpf_probe_read_kernel_str(key.comm, sizeof(key.comm), task->comm);
	if (filter_comm && !comm_matches(key.comm))
		return;
	if (!per_thread)
		key.tid = 0;
	struct off_cpu_wait *w = bpf_task_storage_get(&waits, task, 0, BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (!w || w->since)
		return;
	count(STAT_OFFCPU_WAITS);
	struct room *s = room_of(ROOM_ITER);
	if (!s)
		return;
	__u32 set = current_set();
	long len = bpf_get_task_stack(task, s->st.ips, sizeof(s->st.ips), 0);
	key.kernel_stack_id = keep_wait_stack(frames(len), set, ROOM_ITER, 0, &key.kernel_stack_hash);
	key.user_stack_id = -FLAMEBPF_EFAULT;
	__u64 now = bpf_ktime_get_ns();
	w->key = key;
	w->set = set;
	w->start = now;
	w->woken = task_state(task) == TASK_RUNNING ? now : 0;
	w->since = now;
}

#endif
