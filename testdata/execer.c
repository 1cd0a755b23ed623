/* Works in before_exec() for a while, then execs the program it is given, so one
 * process runs two images: the unwinder must drop the first one's mappings and
 * learn the second's.
 * Build: gcc -O2 -g -fno-omit-frame-pointer -fno-optimize-sibling-calls
 * Usage: execer SECONDS PROGRAM [ARGS...] */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static volatile unsigned long sink;

__attribute__((noinline)) static void before_exec(double seconds)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	double until = ts.tv_sec + ts.tv_nsec / 1e9 + seconds, t;
	unsigned long x = sink;
	do {
		for (int i = 0; i < 20000; i++)
			x = x * 6364136223846793005UL + 1;
		clock_gettime(CLOCK_MONOTONIC, &ts);
		t = ts.tv_sec + ts.tv_nsec / 1e9;
	} while (t < until);
	sink = x;
}

int main(int argc, char **argv)
{
	if (argc < 3) {
		fprintf(stderr, "usage: execer SECONDS PROGRAM [ARGS...]\n");
		return 2;
	}
	before_exec(atof(argv[1]));
	execv(argv[2], argv + 2);
	perror("execv");
	return 127;
}
