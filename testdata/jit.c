/* A JIT stand-in: copies a small loop (hand-assembled x86-64 with a frame pointer)
 * into fresh executable memory, writes /tmp/perf-PID.map naming it, and runs it for
 * SECONDS. With "foreign", the map is handed to another user (nobody), which a
 * profiler must not trust.
 * Build: gcc -O2 -g -fno-omit-frame-pointer -fno-optimize-sibling-calls
 * Usage: jit SECONDS [foreign] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

/* push rbp; mov rbp,rsp; mov rcx,rdi; xor eax,eax;
 * loop: add rax,1; dec rcx; jnz loop; pop rbp; ret */
static const unsigned char code[] = {
	0x55, 0x48, 0x89, 0xe5, 0x48, 0x89, 0xf9, 0x31, 0xc0,
	0x48, 0x83, 0xc0, 0x01, 0x48, 0xff, 0xc9, 0x75, 0xf7,
	0x5d, 0xc3,
};

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

__attribute__((noinline)) void run_jitted(long (*fn)(long), double secs)
{
	double end = now() + secs;
	long sum = 0;
	while (now() < end)
		sum += fn(1000000);
	if (sum == 42)
		puts("");
}

int main(int argc, char **argv)
{
	double secs = argc > 1 ? atof(argv[1]) : 1.0;
	int foreign = argc > 2 && strcmp(argv[2], "foreign") == 0;
	unsigned char *mem = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (mem == MAP_FAILED)
		return 1;
	memcpy(mem, code, sizeof(code));
	if (mprotect(mem, 4096, PROT_READ | PROT_EXEC))
		return 1;
	char path[64];
	snprintf(path, sizeof(path), "/tmp/perf-%d.map", getpid());
	FILE *map = fopen(path, "w");
	if (!map)
		return 1;
	fprintf(map, "%lx %zx jitted_loop\n", (unsigned long)mem, sizeof(code));
	fclose(map);
	if (foreign && chown(path, 65534, 65534))
		return 1;
	run_jitted((long (*)(long))mem, secs);
	unlink(path);
	return 0;
}
