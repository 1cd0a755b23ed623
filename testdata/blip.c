/* A short-lived process: spins in blip_burn() for MILLISECONDS of CPU time, then
 * exits. Copies of it under other names are the many distinct binaries that come
 * and go on a busy machine.
 * Build: gcc -O2 -g -fno-omit-frame-pointer -fno-optimize-sibling-calls
 * Usage: blip [MILLISECONDS]   (default 20) */
#include <stdlib.h>
#include <time.h>

static volatile unsigned long sink;

__attribute__((noinline)) void keep_frame(void)
{
	__asm__ volatile("");
}

/* CPU time, not wall time: on a loaded machine the process is still sampled about
 * as often as its length says. */
__attribute__((noinline)) void blip_burn(double seconds)
{
	struct timespec ts;
	unsigned long x = sink;
	do {
		for (int i = 0; i < 20000; i++)
			x = x * 6364136223846793005UL + 1442695040888963407UL;
		keep_frame();
		clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
	} while (ts.tv_sec + ts.tv_nsec / 1e9 < seconds);
	sink = x;
}

int main(int argc, char **argv)
{
	blip_burn((argc > 1 ? atof(argv[1]) : 20) / 1000);
	return 0;
}
