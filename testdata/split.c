/* A known 3:1 split of CPU time between two functions: heavy() does three times
 * the work of light() in every round, each in its own loop.
 *
 * gcc omits the frame pointer of leaf functions even with -fno-omit-frame-pointer,
 * which would hide main() from frame-pointer unwinding; the call to keep_frame()
 * makes heavy() and light() non-leaf so they keep their frames.
 * Build: gcc -O2 -g -fno-omit-frame-pointer -fno-optimize-sibling-calls
 * Usage: split [SECONDS]   run for SECONDS (default 2)
 *        split -n ROUNDS   do a fixed amount of work, then print on stderr
 *                          "split NS END" : the nanoseconds it took and the
 *                          CLOCK_REALTIME nanoseconds when it ended (benchmarks) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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
	if (argc > 2 && strcmp(argv[1], "-n") == 0) {
		long rounds = atol(argv[2]);
		long long start = ns(CLOCK_MONOTONIC);
		for (long r = 0; r < rounds; r++) {
			heavy(1000000);
			light(1000000);
		}
		long long took = ns(CLOCK_MONOTONIC) - start;
		fprintf(stderr, "split %lld %lld\n", took, ns(CLOCK_REALTIME));
		return 0;
	}
	double secs = argc > 1 ? atof(argv[1]) : 2.0;
	long long end = ns(CLOCK_MONOTONIC) + (long long)(secs * 1e9);
	while (ns(CLOCK_MONOTONIC) < end) {
		heavy(1000000);
		light(1000000);
	}
	return 0;
}
