/* Runs a library's burn() for a while, unloads it, loads another library in its
 * place (usually at the same address: the loader reuses the hole) and runs that
 * one's: one address space, one generation, two objects at one address over time.
 * Build: gcc -O2 -g -fno-omit-frame-pointer -fno-optimize-sibling-calls
 * Usage: reload SECONDS LIBRARY... */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv)
{
	if (argc < 3) {
		fprintf(stderr, "usage: reload SECONDS LIBRARY...\n");
		return 2;
	}
	double seconds = atof(argv[1]);
	for (int i = 2; i < argc; i++) {
		void *lib = dlopen(argv[i], RTLD_NOW | RTLD_LOCAL);
		if (!lib) {
			fprintf(stderr, "dlopen: %s\n", dlerror());
			return 1;
		}
		void (*burn)(double) = (void (*)(double))dlsym(lib, "burn");
		if (!burn)
			return 1;
		/* the address says whether the libraries shared one */
		printf("%s %p\n", argv[i], (void *)burn);
		fflush(stdout);
		burn(seconds);
		dlclose(lib);
	}
	return 0;
}
