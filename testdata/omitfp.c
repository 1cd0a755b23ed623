/* Built WITHOUT frame pointers (-O2 -fomit-frame-pointer): a three-deep call chain
 * main → level1 → level2 → level3 above two leaves that split the CPU 3:1
 * (leaf_heavy does three times leaf_light's work). Frame-pointer unwinding breaks
 * here; DWARF unwinding from .eh_frame does not.
 * Build: gcc -O2 -g -fomit-frame-pointer -fno-optimize-sibling-calls -fasynchronous-unwind-tables
 * Usage: omitfp [SECONDS] (default 2) */
#include <stdlib.h>
#include <time.h>

static volatile unsigned long sink;

__attribute__((noinline)) void leaf_heavy(unsigned long n)
{
	unsigned long x = sink;
	for (unsigned long i = 0; i < 3 * n; i++)
		x = x * 6364136223846793005UL + 1442695040888963407UL;
	sink = x;
}

__attribute__((noinline)) void leaf_light(unsigned long n)
{
	unsigned long x = sink;
	for (unsigned long i = 0; i < n; i++)
		x = x * 6364136223846793005UL + 1442695040888963407UL;
	sink = x;
}

/* Locals on the stack and calls in between keep each level a real frame. */
__attribute__((noinline)) void level3(unsigned long n)
{
	volatile unsigned long pad[4] = {n, n, n, n};
	leaf_heavy(pad[0]);
	leaf_light(pad[1]);
}

__attribute__((noinline)) void level2(unsigned long n)
{
	volatile unsigned long pad[8] = {n};
	level3(pad[0]);
	sink += pad[1];
}

__attribute__((noinline)) void level1(unsigned long n)
{
	volatile unsigned long pad[16] = {n};
	level2(pad[0]);
	sink += pad[2];
}

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
	double end = now() + (argc > 1 ? atof(argv[1]) : 2.0);
	while (now() < end)
		level1(1000000);
	return 0;
}
