/* A comparator called through glibc's qsort (built without frame pointers): with
 * frame pointers the chain main → sort_round → qsort → compare_slow is broken at
 * qsort; DWARF unwinding keeps it whole. compare_slow does some work per call so
 * most samples land in it.
 * Build: gcc -O2 -g -fno-omit-frame-pointer -fno-optimize-sibling-calls
 * Usage: qsortcmp [SECONDS] (default 2) */
#include <stdlib.h>
#include <time.h>

#define N 20000

static volatile unsigned long sink;
static int data[N];

__attribute__((noinline)) int compare_slow(const void *a, const void *b)
{
	unsigned long x = sink;
	for (int i = 0; i < 200; i++)
		x = x * 6364136223846793005UL + 1;
	sink = x;
	int l = *(const int *)a, r = *(const int *)b;
	return (l > r) - (l < r);
}

__attribute__((noinline)) void sort_round(unsigned seed)
{
	for (int i = 0; i < N; i++)
		data[i] = (int)((seed = seed * 1103515245 + 12345) >> 8);
	qsort(data, N, sizeof(int), compare_slow);
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
	unsigned seed = 1;
	while (now() < end)
		sort_round(seed++);
	return 0;
}
