/* Produces tens of thousands of distinct stacks: each round walks a pseudo-random
 * path of DEPTH calls through 16 functions and spins briefly at the bottom, so
 * nearly every sample has a stack no other sample has. Used to size the stack map.
 * Build: gcc -O2 -g -fno-omit-frame-pointer -fno-optimize-sibling-calls
 * Usage: manystacks [SECONDS] (default 3) */
#include <stdlib.h>
#include <time.h>

#define DEPTH 6

static volatile unsigned long sink;
static unsigned long rng = 88172645463325252UL;

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

__attribute__((noinline)) void step(unsigned long path, int depth);

#define F(n)                                                      \
	__attribute__((noinline)) void f##n(unsigned long path, int depth) \
	{                                                         \
		step(path >> 4, depth - 1);                       \
		sink += n;                                        \
	}
F(0) F(1) F(2) F(3) F(4) F(5) F(6) F(7) F(8) F(9) F(10) F(11) F(12) F(13) F(14) F(15)

static void (*const table[16])(unsigned long, int) = {
	f0, f1, f2, f3, f4, f5, f6, f7, f8, f9, f10, f11, f12, f13, f14, f15,
};

__attribute__((noinline)) void step(unsigned long path, int depth)
{
	if (depth == 0) {
		unsigned long x = sink;
		for (int i = 0; i < 20000; i++)
			x = x * 6364136223846793005UL + 1;
		sink = x;
		return;
	}
	table[path & 15](path, depth);
	sink++;
}

int main(int argc, char **argv)
{
	double secs = argc > 1 ? atof(argv[1]) : 3.0;
	double end = now() + secs;
	while (now() < end) {
		rng ^= rng << 13;
		rng ^= rng >> 7;
		rng ^= rng << 17;
		step(rng, DEPTH);
	}
	return 0;
}
