/* The bundled demo workload: a toy "log processor" with a few recognisable phases
 * (read, parse, checksum, compress), so its flame graph shows several user
 * functions and a kernel read path. Runs for SECONDS (default 3).
 * Build: gcc -O2 -g -fno-omit-frame-pointer -fno-optimize-sibling-calls */
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>

static volatile unsigned long sink;
static char buf[1 << 16];

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

__attribute__((noinline)) unsigned long parse_line(const char *p, size_t n)
{
	unsigned long fields = 0;
	for (size_t i = 0; i < n; i++)
		fields += p[i] == ' ' || p[i] == ',';
	keep_frame();
	return fields;
}

__attribute__((noinline)) unsigned long parse(void)
{
	unsigned long fields = 0;
	for (size_t off = 0; off + 128 <= sizeof(buf); off += 128)
		fields += parse_line(buf + off, 128);
	return fields;
}

__attribute__((noinline)) unsigned long checksum(void)
{
	unsigned long h = 1469598103934665603UL;
	for (size_t i = 0; i < sizeof(buf); i++)
		h = (h ^ (unsigned char)buf[i]) * 1099511628211UL;
	keep_frame();
	return h;
}

__attribute__((noinline)) unsigned long compress_block(size_t off)
{
	unsigned long runs = 0;
	for (size_t i = off + 1; i < off + 4096; i++)
		runs += buf[i] == buf[i - 1];
	keep_frame();
	return runs;
}

__attribute__((noinline)) unsigned long compress(void)
{
	unsigned long runs = 0;
	for (int round = 0; round < 3; round++)
		for (size_t off = 0; off + 4096 <= sizeof(buf); off += 4096)
			runs += compress_block(off);
	return runs;
}

/* The raw syscall keeps this function's frame under the kernel's read path
 * (glibc's wrapper has no frame pointer and would hide it). */
__attribute__((noinline)) long read_input(int fd)
{
	long ret;
	__asm__ volatile("syscall"
			 : "=a"(ret)
			 : "0"((long)SYS_read), "D"((long)fd), "S"(buf), "d"(sizeof(buf))
			 : "rcx", "r11", "memory");
	keep_frame();
	return ret;
}

int main(int argc, char **argv)
{
	double secs = argc > 1 ? atof(argv[1]) : 3.0;
	int in = open("/dev/zero", O_RDONLY);
	double end = now() + secs;
	while (now() < end) {
		for (int i = 0; i < 30; i++)
			sink += read_input(in);
		for (size_t i = 0; i < sizeof(buf); i++)
			buf[i] = "abc, def ghi,jk"[i % 15];
		sink += parse();
		sink += checksum();
		sink += compress();
	}
	return 0;
}
