/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * `--call-graph dwarf`: instead of aggregating, each sample is sent to userspace as
 * one record (struct dwarf_sample, profile.h) holding the user registers, the
 * kernel stack and a copy of the top of the user stack, which userspace unwinds
 * with the objects' call frame information (src/capture/dwarf.rs).
 */
#ifndef FLAMEBPF_DWARF_COPY_H
#define FLAMEBPF_DWARF_COPY_H

const volatile __u32 stack_bytes = FLAMEBPF_MAX_STACK_BYTES; /* user stack to copy */
const volatile __u64 ring_wakeup_bytes = 1 << 20;            /* wake the reader past this */

/* Names the record type in BTF, so the skeleton generates it for Rust. */
struct dwarf_sample *dwarf_sample_type = 0;

/* samples: one dwarf_sample per sample, written in place by send_stack_copy(),
 * read by userspace in arrival order. Size: --ringbuf-size (a power of two);
 * a sample that finds no room is counted in STAT_RINGBUF_FULL. */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4096); /* resized by userspace */
} samples SEC(".maps");

static long stack_end(struct task_struct *task, struct vm_area_struct *vma, __u64 *end)
{
	*end = vma->vm_end;
	return 0;
}

/* `room` is the record's stack space: a constant to the verifier. */
static __always_inline bool copy_len(struct dwarf_sample *rec, __u64 len, __u64 room)
{
	/* the compiler would drop the check below as implied, or check a copy of
	 * len and pass another: the verifier needs the passed one checked */
	asm volatile("" : "+r"(len));
	if (len > room || len == 0)
		return false;
	asm volatile("" : "+r"(len));
	if (len > FLAMEBPF_MAX_STACK_BYTES)
		return false;
	if (bpf_probe_read_user(rec->stack, len, (void *)rec->sp) != 0)
		return false;
	rec->stack_len = len;
	return true;
}

/* Copies up to `copy` bytes of the user stack from rec->sp, no further than the
 * end of the mapping that holds it (as perf does): a read that runs past that end
 * fails whole. The end comes from bpf_find_vma; where that fails (it works once
 * per interrupt, and not while the address space is locked), the end is found by
 * trying the page boundaries, which are the only places a mapping can end: a
 * binary search over them, so the copy still reaches the outermost frames. */
static __always_inline void copy_user_stack(struct dwarf_sample *rec, __u32 room)
{
	__u32 copy = room;
	__u64 end = 0;
	if (bpf_find_vma(bpf_get_current_task_btf(), rec->sp, stack_end, &end, 0) == 0 && end > rec->sp &&
	    end - rec->sp < copy)
		copy = end - rec->sp;
	if (copy_len(rec, copy, room))
		return;
	/* bytes to the end of sp's page, then whole pages */
	__u32 head = 4096 - (rec->sp & 4095);
	if (head >= copy) {
		if (!copy_len(rec, head, room))
			count(STAT_STACK_COPY_FAILED);
		return;
	}
	__u32 lo = 0, hi = (copy - head) / 4096;
	for (int i = 0; i < 5; i++) {
		if (lo >= hi)
			break;
		__u32 mid = (lo + hi + 1) / 2;
		if (copy_len(rec, head + mid * 4096, room))
			lo = mid;
		else
			hi = mid - 1;
	}
	/* a failed read zeroes the buffer, so the length found is read last */
	rec->stack_len = 0;
	if (!copy_len(rec, head + lo * 4096, room))
		count(STAT_STACK_COPY_FAILED);
}

/* Sends one sample's record. */
static __always_inline void send_stack_copy(struct bpf_perf_event_data *ctx, __u32 tgid, __u32 tid,
					    const char *comm)
{
	/* The record is written in place in the ring buffer: no staging copy. Its
	 * size is a constant to the verifier, since .rodata is frozen at load. */
	__u32 copy = stack_bytes;
	if (copy > FLAMEBPF_MAX_STACK_BYTES)
		copy = FLAMEBPF_MAX_STACK_BYTES;
	/* a kernel thread has no user stack: its record is the header alone (each
	 * size a constant of its own call, as the verifier wants it) */
	bool kthread = (ctx->regs.cs & 3) != 3 && current_is_kthread();
	struct dwarf_sample *rec;
	if (kthread)
		rec = bpf_ringbuf_reserve(&samples, __builtin_offsetof(struct dwarf_sample, stack), 0);
	else
		rec = bpf_ringbuf_reserve(&samples, __builtin_offsetof(struct dwarf_sample, stack) + copy, 0);
	if (!rec) {
		count(STAT_RINGBUF_FULL);
		return;
	}
	rec->time = bpf_ktime_get_ns();
	rec->period = ctx->sample_period;
	rec->pid = tgid;
	rec->tid = tid;
	rec->cpu = bpf_get_smp_processor_id();
	__builtin_memcpy(rec->comm, comm, FLAMEBPF_COMM_LEN);

	long klen = bpf_get_stack(ctx, rec->kernel_ips, sizeof(rec->kernel_ips), 0);
	rec->kernel_len = klen > 0 ? klen : 0;
	if (klen <= 0)
		count(STAT_KERNEL_STACK_ABSENT);

	rec->user_regs = 0;
	rec->stack_len = 0;
	rec->ip = rec->sp = rec->bp = 0;
	if (kthread) {
		count(STAT_USER_STACK_KTHREAD);
	} else {
		struct user_regs r;
		current_user_regs(ctx, &r);
		rec->ip = r.ip;
		rec->sp = r.sp;
		rec->bp = r.bp;
		rec->user_regs = 1;
		copy_user_stack(rec, copy);
	}

	/* Waking the reader is an interrupt of its own: only once a good part of the
	 * buffer waits; the reader also looks every tick. */
	__u64 waiting = bpf_ringbuf_query(&samples, BPF_RB_AVAIL_DATA);
	bpf_ringbuf_submit(rec, waiting > ring_wakeup_bytes ? BPF_RB_FORCE_WAKEUP : BPF_RB_NO_WAKEUP);
}

#endif
