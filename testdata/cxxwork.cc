// C++ names for the symbolizer: a method of a class template in a namespace (the
// mangled name must come out demangled), a helper that is always inlined (it
// must appear as a frame of its own, marked inlined), two overloads of one
// function and a function template (short names drop their parameter lists and
// return types; --full-names keeps them). Runs for SECONDS (default 1).
// Build: g++ -O2 -g -fno-omit-frame-pointer -fno-optimize-sibling-calls
#include <cstdlib>
#include <ctime>

static volatile unsigned long sink;

extern "C" __attribute__((noinline)) void keep_frame() { __asm__ volatile(""); }

static inline __attribute__((always_inline)) unsigned long mix_step(unsigned long x)
{
	for (int i = 0; i < 1000; i++)
		x = x * 6364136223846793005UL + 1442695040888963407UL;
	return x;
}

namespace demo {
template <typename T> struct Worker {
	__attribute__((noinline)) T spin(T n)
	{
		T x = sink;
		for (T i = 0; i < n; i++)
			x = x * 2862933555777941757UL + 3037000493UL;
		keep_frame();
		return x;
	}
};
} // namespace demo

__attribute__((noinline)) unsigned long with_inlined(unsigned long n)
{
	unsigned long x = sink;
	for (unsigned long i = 0; i < n; i++)
		x = mix_step(x);
	keep_frame();
	return x;
}

namespace demo {
__attribute__((noinline)) unsigned long burn(unsigned long n)
{
	unsigned long x = sink;
	for (unsigned long i = 0; i < n; i++)
		x = x * 6364136223846793005UL + 1;
	keep_frame();
	return x;
}

__attribute__((noinline)) unsigned long burn(double n)
{
	return burn((unsigned long)n);
}

template <typename T> __attribute__((noinline)) T twice(T n)
{
	keep_frame();
	return burn(n) + burn(n);
}
} // namespace demo

static double now()
{
	timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
	double end = now() + (argc > 1 ? atof(argv[1]) : 1.0);
	demo::Worker<unsigned long> w;
	while (now() < end) {
		sink += w.spin(1000000);
		sink += with_inlined(1000);
		sink += demo::burn(300000.0);
		sink += demo::twice<unsigned long>(150000);
	}
	return 0;
}
