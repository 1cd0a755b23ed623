/* Forks 20 children in a row; each burns about 100 ms in child_work() and exits
 * before the next starts. A profiler that reads /proc at the end finds none of them.
 * Build: gcc -O2 -g -fno-omit-frame-pointer -fno-optimize-sibling-calls
 * Usage: forker [CHILDREN] (default 20) */
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static volatile unsigned long sink;

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

__attribute__((noinline)) void keep_frame(void)
{
	__asm__ volatile("");
}

__attribute__((noinline)) void child_work(double secs)
{
	double end = now() + secs;
	unsigned long x = sink;
	while (now() < end)
		for (int i = 0; i < 100000; i++)
			x = x * 6364136223846793005UL + 1442695040888963407UL;
	sink = x;
	keep_frame();
}

int main(int argc, char **argv)
{
	int children = argc > 1 ? atoi(argv[1]) : 20;
	for (int i = 0; i < children; i++) {
		pid_t pid = fork();
		if (pid == 0) {
			child_work(0.1);
			_exit(0);
		}
		waitpid(pid, NULL, 0);
	}
	return 0;
}
