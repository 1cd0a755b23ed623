/* A stack about twenty frames deep through code built without frame pointers
 * (-O2 -fomit-frame-pointer): descend() recurses DEPTH times, then spins in
 * spin(). What the unwinders' cost is measured on.
 * Build: gcc -O2 -g -fomit-frame-pointer -fno-optimize-sibling-calls
 * Usage: deep [SECONDS] [DEPTH] (defaults 5 and 17) */
#include <stdlib.h>
#include <time.h>

static volatile unsigned long sink;

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

__attribute__((noinline)) void spin(double until)
{
	unsigned long x = sink;
	while (now() < until)
		for (int i = 0; i < 20000; i++)
			x = x * 6364136223846793005UL + 1442695040888963407UL;
	sink = x;
}

__attribute__((noinline)) void descend(int depth, double until)
{
	if (depth > 0)
		descend(depth - 1, until);
	else
		spin(until);
	sink++; /* not a tail call: each level keeps its frame */
}

int main(int argc, char **argv)
{
	double seconds = argc > 1 ? atof(argv[1]) : 5.0;
	int depth = argc > 2 ? atoi(argv[2]) : 17;
	descend(depth, now() + seconds);
	return 0;
}
