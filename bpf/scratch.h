/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * Per-CPU room for one whole stack, which does not fit the 512-byte BPF stack:
 * the overflow path copies a stack into it, the CFI walk writes its frames there.
 */
#ifndef FLAMEBPF_SCRATCH_H
#define FLAMEBPF_SCRATCH_H

/* scratch: one stack per CPU for the overflow path, since a whole stack does not
 * fit the 512-byte BPF stack. Written and read by keep_overflowed() and the CFI
 * walk (unwind.h), within one sample. Size: 1 per CPU. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct overflow_stack);
	__uint(max_entries, 1);
} scratch SEC(".maps");

#endif
