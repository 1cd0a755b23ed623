/* Takes fresh page faults in a known 3:1 ratio: every round, fault_a() touches
 * three times as many new anonymous pages as fault_b(). Each maps its own region,
 * writes one byte per page (one minor fault each) and unmaps it.
 * Build: gcc -O2 -g -fno-omit-frame-pointer -fno-optimize-sibling-calls
 * Usage: faults [ROUNDS] (default 2000) */
#include <stdlib.h>
#include <sys/mman.h>

#define PAGE 4096

/* Not a leaf (it calls mmap/munmap), so it keeps its frame pointer and the
 * faulting store is attributed under main. */
__attribute__((noinline)) void fault_a(int pages)
{
	char *p = mmap(NULL, (size_t)pages * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		exit(1);
	madvise(p, (size_t)pages * PAGE, MADV_NOHUGEPAGE);
	for (int i = 0; i < pages; i++)
		((volatile char *)p)[(size_t)i * PAGE] = 1;
	munmap(p, (size_t)pages * PAGE);
}

__attribute__((noinline)) void fault_b(int pages)
{
	char *p = mmap(NULL, (size_t)pages * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		exit(1);
	madvise(p, (size_t)pages * PAGE, MADV_NOHUGEPAGE);
	for (int i = 0; i < pages; i++)
		((volatile char *)p)[(size_t)i * PAGE] = 1;
	munmap(p, (size_t)pages * PAGE);
}

int main(int argc, char **argv)
{
	long rounds = argc > 1 ? atol(argv[1]) : 2000;
	for (long r = 0; r < rounds; r++) {
		fault_a(300);
		fault_b(100);
	}
	return 0;
}
