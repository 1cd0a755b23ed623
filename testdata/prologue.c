/* Keeps samples landing on every instruction of framed(), a function with a
 * prologue and an epilogue (callee-saved registers pushed, stack space reserved)
 * and no frame pointer: each instruction has its own CFA rule, and a sample at
 * any of them must unwind to main.
 * Build: gcc -O2 -g -fomit-frame-pointer -fno-optimize-sibling-calls -fno-inline
 * Usage: prologue [SECONDS] (default 2) */
#include <stdlib.h>
#include <time.h>

static volatile long sink;

__attribute__((noinline)) long callee(long x)
{
	return x * 3 + sink;
}

/* Called through a pointer the compiler cannot see through, so values live
 * across the calls sit in callee-saved registers that the prologue pushes. */
static long (*volatile call)(long) = callee;

/* Short, called in a tight loop: its prologue and epilogue are a good share of
 * its instructions. */
__attribute__((noinline)) long framed(long x)
{
	long a = call(x);
	long b = call(x + a);
	long c = call(b - x);
	return a ^ b ^ c ^ x;
}

__attribute__((noinline)) static long loop(double until)
{
	long s = 0;
	struct timespec ts;
	do {
		for (int i = 0; i < 100000; i++)
			s += framed(i);
		clock_gettime(CLOCK_MONOTONIC, &ts);
	} while (ts.tv_sec + ts.tv_nsec / 1e9 < until);
	return s;
}

int main(int argc, char **argv)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	double seconds = argc > 1 ? atof(argv[1]) : 2.0;
	sink = loop(ts.tv_sec + ts.tv_nsec / 1e9 + seconds);
	return 0;
}
