/* Calls clock_gettime in a tight loop for SECONDS: most samples land in the vDSO.
 * Build: gcc -O2 -g -fno-omit-frame-pointer -fno-optimize-sibling-calls
 * Usage: clock [SECONDS] (default 1) */
#include <stdlib.h>
#include <time.h>

__attribute__((noinline)) long read_clock_until(double end)
{
	struct timespec ts;
	long calls = 0;
	do {
		clock_gettime(CLOCK_MONOTONIC, &ts);
		calls++;
	} while (ts.tv_sec + ts.tv_nsec / 1e9 < end);
	return calls;
}

int main(int argc, char **argv)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	double end = ts.tv_sec + ts.tv_nsec / 1e9 + (argc > 1 ? atof(argv[1]) : 1.0);
	return read_clock_until(end) < 0;
}
