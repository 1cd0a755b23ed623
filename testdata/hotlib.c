/* A library loaded with dlopen() after its program started (testdata/dlopen.c),
 * built like distribution libraries: -O2 -fomit-frame-pointer, CFI only.
 * Build: gcc -O2 -g -fomit-frame-pointer -fno-optimize-sibling-calls -shared -fPIC */
#include <time.h>

static volatile unsigned long sink;

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

__attribute__((noinline)) void hot_inner(double until)
{
	unsigned long x = sink;
	while (now() < until)
		for (int i = 0; i < 20000; i++)
			x = x * 6364136223846793005UL + 1442695040888963407UL;
	sink = x;
}

__attribute__((noinline)) void hot_outer(double seconds)
{
	hot_inner(now() + seconds);
	sink++;
}
