/* A known 3:1 split of CPU time between two functions: heavy() does three times
 * the work of light() in every round, each in its own loop.
 *
 * gcc omits the frame pointer of leaf functions even with -fno-omit-frame-pointer,
 * which would hide main() from frame-pointer unwinding; the call to keep_frame()
 * makes heavy() and light() non-leaf so they keep their frames.
 * Build: gcc -O2 -g -fno-omit-frame-pointer -fno-optimize-sibling-calls
 * Usage: split [SECONDS] (default 2) */
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

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
	double secs = argc > 1 ? atof(argv[1]) : 2.0;
	double end = now() + secs;
	while (now() < end) {
		heavy(1000000);
		light(1000000);
	}
	return 0;
}
