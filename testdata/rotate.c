/* Goes through 8 stack shapes in turn, each for PHASE seconds (descend 4 to 11
 * frames deep, then spin): a shape comes back every 8 phases and is absent in
 * between, which is what a window-by-window capture must keep naming right.
 * Build: gcc -O2 -g -fno-omit-frame-pointer -fno-optimize-sibling-calls
 * Usage: rotate [SECONDS] [PHASE] (default 4 and 0.25) */
#include <stdlib.h>
#include <time.h>

static volatile unsigned long sink;

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

__attribute__((noinline)) void spin(void)
{
	for (int i = 0; i < 20000; i++)
		sink += i;
}

__attribute__((noinline)) void descend(int depth)
{
	if (depth > 0)
		descend(depth - 1);
	else
		spin();
	sink++;
}

int main(int argc, char **argv)
{
	double seconds = argc > 1 ? atof(argv[1]) : 4.0;
	double phase = argc > 2 ? atof(argv[2]) : 0.25;
	double start = now(), t;
	while ((t = now() - start) < seconds)
		descend(4 + (int)(t / phase) % 8);
	return 0;
}
