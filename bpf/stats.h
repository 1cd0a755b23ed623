/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * The accounting of every sample: one per-CPU counter per `enum flamebpf_stat`
 * class (profile.h). Userspace sums the CPUs into its `Stats` type
 * (src/capture/stats.rs) for the summary line, the windows and /metrics.
 */
#ifndef FLAMEBPF_STATS_H
#define FLAMEBPF_STATS_H

/* stats: holds a counter per class and CPU; written by every program through
 * count(), read (never reset) by userspace, which subtracts readings to get a
 * window's share. Size: STAT_MAX, fixed. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, enum flamebpf_stat); /* names the enum in BTF, so Rust gets it */
	__type(value, __u64);
	__uint(max_entries, STAT_MAX);
} stats SEC(".maps");

static __always_inline void count(enum flamebpf_stat stat)
{
	__u64 *v = bpf_map_lookup_elem(&stats, &stat);
	if (v)
		*v += 1;
}

#endif
