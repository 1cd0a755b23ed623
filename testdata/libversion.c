/* One version of a shared library, for the upgrade test: built twice, with
 * -DHOT=hot_v1 and -DHOT=hot_v2, so the two files have the same layout (the two
 * names are as long) and differ in the name at each address, as a library does
 * from one package version to the next.
 * Build: gcc -O2 -g -fno-omit-frame-pointer -fno-optimize-sibling-calls -shared
 *        -fPIC -DHOT=hot_v1 -Wl,-soname,libversion.so */
#include <time.h>

#ifndef HOT
#error "build with -DHOT=name"
#endif

static volatile unsigned long sink;

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

__attribute__((noinline)) void HOT(double until)
{
	unsigned long x = sink;
	while (now() < until)
		for (int i = 0; i < 20000; i++)
			x = x * 6364136223846793005UL + 1442695040888963407UL;
	sink = x;
}

/* What programs call, the same in every version. */
__attribute__((noinline)) void burn(double seconds)
{
	HOT(now() + seconds);
	sink++;
}
