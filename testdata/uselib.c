/* Spends its time in libversion.so's burn() (testdata/libversion.c), whichever
 * version the dynamic loader finds.
 * Build: gcc -O2 -g -fno-omit-frame-pointer -L DIR -lversion -Wl,-rpath,DIR
 * Usage: uselib [SECONDS]   (default 1.5) */
#include <stdlib.h>

void burn(double seconds);

int main(int argc, char **argv)
{
	burn(argc > 1 ? atof(argv[1]) : 1.5);
	return 0;
}
