/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * Which samples belong to the capture: the target processes (and their children),
 * a command name, a cgroup, the idle task, and the profiler itself. Settings are
 * `const volatile` globals set by userspace before load, so the verifier prunes
 * the filters a capture does not use.
 */
#ifndef FLAMEBPF_FILTERS_H
#define FLAMEBPF_FILTERS_H

const volatile bool filter_pids = false;  /* sample only tgids in `targets` */
const volatile bool follow_forks = false; /* children of targets become targets */
const volatile bool include_idle = false;
const volatile bool filter_comm = false; /* sample only threads named target_comm */
const volatile char target_comm[FLAMEBPF_COMM_LEN] = {};
const volatile bool filter_cgroup = false; /* sample only tasks under cgroups[0] */
const volatile __u32 exclude_tgid = 0;     /* leave this process out (the daemon itself) */
/* Keep the thread id in the counts key: only when an output shows threads
 * (--per-thread); otherwise a process's threads share its entries, and a
 * many-threaded process does not multiply them. */
const volatile bool per_thread = true;

/* targets: the processes (tgids) to sample when filter_pids is set. Written by
 * userspace (-p, the command's pid) and by on_fork/on_exit (children come and
 * go); read by wanted(). Size: 16384, fixed; a child that finds it full is
 * counted in STAT_TARGETS_FULL. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32); /* tgid */
	__type(value, __u8);
	__uint(max_entries, 16384);
} targets SEC(".maps");

/* cgroups: the one cgroup (v2 directory fd) of --cgroup. Written by userspace
 * before sampling, read by wanted(). Size: 1. */
struct {
	__uint(type, BPF_MAP_TYPE_CGROUP_ARRAY);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(__u32));
	__uint(max_entries, 1);
} cgroups SEC(".maps");

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

/* Whether the current thread (of process tgid) is the capture's, leaving the idle
 * task aside; fills in its comm. */
static __always_inline bool belongs(__u32 tgid, char *comm)
{
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

/* Whether a sample of this thread belongs to the capture; fills in its comm. */
static __always_inline bool wanted(__u32 tgid, __u32 tid, char *comm)
{
	if (tid == 0 && !include_idle) {
		count(STAT_IDLE_SKIPPED);
		return false;
	}
	return belongs(tgid, comm);
}

#endif
