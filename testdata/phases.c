/* Two phases one after the other: phase_one() for SECONDS/2, then phase_two() for
 * SECONDS/2. A time-ordered profile shows every phase_one sample before every
 * phase_two sample. Build: gcc -O2 -g -fno-omit-frame-pointer -fno-optimize-sibling-calls
 * Usage: phases [SECONDS] (default 1) */
#include <stdlib.h>
#include <time.h>

static volatile unsigned long sink;

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

__attribute__((noinline)) void phase_one(double until)
{
	unsigned long x = sink;
	while (now() < until)
		for (int i = 0; i < 10000; i++)
			x = x * 6364136223846793005UL + 1;
	sink = x;
}

__attribute__((noinline)) void phase_two(double until)
{
	unsigned long x = sink;
	while (now() < until)
		for (int i = 0; i < 10000; i++)
			x = x * 2862933555777941757UL + 3;
	sink = x;
}

int main(int argc, char **argv)
{
	double secs = argc > 1 ? atof(argv[1]) : 1.0;
	double start = now();
	phase_one(start + secs / 2);
	phase_two(start + secs);
	return 0;
}
