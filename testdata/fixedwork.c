/* A fixed amount of CPU work for overhead benchmarks: ROUNDS rounds of the 3:1
 * heavy/light loops of split.c. Prints, on stderr, the nanoseconds the work took
 * and the CLOCK_REALTIME nanoseconds at which it ended, so a benchmark can time
 * the job itself and what a profiler does after it.
 * Build: gcc -O2 -g -fno-omit-frame-pointer -fno-optimize-sibling-calls
 * Usage: fixedwork [ROUNDS] (default 2000) */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static volatile unsigned long sink;

__attribute__((noinline)) void keep_frame(void)
{
	__asm__ volatile("");
}

__attribute__((noinline)) void heavy(unsigned long n)
{
	unsigned long x = sink;
	for (unsigned long i = 0; i < 3 * n; i++)
		x = x * 6364136223846793005UL + 1442695040888963407UL;
	sink = x;
	keep_frame();
}

__attribute__((noinline)) void light(unsigned long n)
{
	unsigned long x = sink;
	for (unsigned long i = 0; i < n; i++)
		x = x * 6364136223846793005UL + 1442695040888963407UL;
	sink = x;
	keep_frame();
}

static long long ns(clockid_t clock)
{
	struct timespec ts;
	clock_gettime(clock, &ts);
	return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

int main(int argc, char **argv)
{
	long rounds = argc > 1 ? atol(argv[1]) : 2000;
	long long start = ns(CLOCK_MONOTONIC);
	for (long r = 0; r < rounds; r++) {
		heavy(1000000);
		light(1000000);
	}
	long long took = ns(CLOCK_MONOTONIC) - start;
	fprintf(stderr, "fixedwork %lld %lld\n", took, ns(CLOCK_REALTIME));
	return 0;
}
