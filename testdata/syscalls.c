/* Spends most of its time in the kernel: read_zero() reads /dev/zero into a
 * buffer with the raw `syscall` instruction, so the sampled user frame under the
 * kernel frames is read_zero itself (glibc's read wrapper has no frame pointer and
 * would hide its caller). The buffer on its stack gives read_zero a frame.
 * Build: gcc -O2 -g -fno-omit-frame-pointer -fno-optimize-sibling-calls
 * Usage: syscalls [SECONDS] (default 2) */
#include <fcntl.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <time.h>

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

__attribute__((noinline)) long read_zero(int fd, int rounds)
{
	char buf[65536];
	long total = 0;
	for (int i = 0; i < rounds; i++) {
		long ret;
		__asm__ volatile("syscall"
				 : "=a"(ret)
				 : "0"((long)SYS_read), "D"((long)fd), "S"(buf), "d"(sizeof(buf))
				 : "rcx", "r11", "memory");
		total += ret;
	}
	return total + buf[100];
}

int main(int argc, char **argv)
{
	double secs = argc > 1 ? atof(argv[1]) : 2.0;
	int fd = open("/dev/zero", O_RDONLY);
	if (fd < 0)
		return 1;
	double end = now() + secs;
	long total = 0;
	while (now() < end)
		total += read_zero(fd, 100);
	return total < 0;
}
