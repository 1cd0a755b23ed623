/* Loads a library with dlopen() once it has run for a while, then spends its time
 * in it: hot_outer() -> hot_inner() of testdata/hotlib.c. The library's table
 * can only be built after the program started.
 * Build: gcc -O2 -g -fno-omit-frame-pointer -fno-optimize-sibling-calls -ldl
 * Usage: dlopen LIBRARY [SECONDS] (default 2) */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

__attribute__((noinline)) static void call_library(void (*outer)(double), double seconds)
{
	outer(seconds);
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "usage: dlopen LIBRARY [SECONDS]\n");
		return 2;
	}
	usleep(200 * 1000);
	void *lib = dlopen(argv[1], RTLD_NOW);
	if (!lib) {
		fprintf(stderr, "dlopen: %s\n", dlerror());
		return 1;
	}
	void (*outer)(double) = (void (*)(double))dlsym(lib, "hot_outer");
	if (!outer)
		return 1;
	call_library(outer, argc > 2 ? atof(argv[2]) : 2.0);
	return 0;
}
