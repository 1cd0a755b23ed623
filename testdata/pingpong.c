/* Two threads bouncing one byte over a pair of pipes: every round trip blocks
 * each thread once in read(), so the job is nearly all context switches and
 * wake-ups, the worst case for an off-CPU profiler (its sched_switch program
 * runs at every switch). ping() writes to the first pipe and waits on the
 * second; pong() answers.
 *
 * Build: gcc -O2 -g -fno-omit-frame-pointer -pthread
 * Usage: pingpong [-c CPU] ROUND_TRIPS
 *   -c CPU   pin both threads to CPU (every round trip is then two direct
 *            switches on one CPU, no cross-CPU wake-up)
 * Prints on stdout, once done:
 *   pingpong round_trips=N elapsed_ns=NS round_trips_per_s=R csw=C csw_per_s=S
 * elapsed_ns is CLOCK_MONOTONIC from the first write to the last read; csw the
 * process's context switches (voluntary and not, both threads) in that time. */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

static int to_pong[2], to_ping[2];
static long round_trips;

static long long now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static long long csw(void)
{
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	return (long long)ru.ru_nvcsw + ru.ru_nivcsw;
}

static void die(const char *what)
{
	fprintf(stderr, "pingpong: %s: %s\n", what, strerror(errno));
	exit(1);
}

__attribute__((noinline)) static void send_byte(int fd, char c)
{
	if (write(fd, &c, 1) != 1)
		die("write");
}

__attribute__((noinline)) static char recv_byte(int fd)
{
	char c;
	if (read(fd, &c, 1) != 1)
		die("read");
	return c;
}

__attribute__((noinline)) void *pong(void *arg)
{
	(void)arg;
	for (long i = 0; i < round_trips; i++)
		send_byte(to_ping[1], recv_byte(to_pong[0]) + 1);
	return NULL;
}

__attribute__((noinline)) void ping(void)
{
	char c = 0;
	for (long i = 0; i < round_trips; i++) {
		send_byte(to_pong[1], c);
		c = recv_byte(to_ping[0]);
	}
}

int main(int argc, char **argv)
{
	int cpu = -1, opt;
	while ((opt = getopt(argc, argv, "c:")) != -1) {
		if (opt == 'c') {
			cpu = atoi(optarg);
		} else {
			fprintf(stderr, "usage: pingpong [-c CPU] ROUND_TRIPS\n");
			return 2;
		}
	}
	if (optind >= argc || (round_trips = atol(argv[optind])) <= 0) {
		fprintf(stderr, "usage: pingpong [-c CPU] ROUND_TRIPS\n");
		return 2;
	}
	if (cpu >= 0) {
		cpu_set_t set;
		CPU_ZERO(&set);
		CPU_SET(cpu, &set);
		if (sched_setaffinity(0, sizeof(set), &set))
			die("sched_setaffinity");
	}
	if (pipe(to_pong) || pipe(to_ping))
		die("pipe");
	pthread_t t;
	int err = pthread_create(&t, NULL, pong, NULL); /* inherits the affinity */
	if (err) {
		errno = err;
		die("pthread_create");
	}
	long long c0 = csw(), t0 = now_ns();
	ping();
	long long t1 = now_ns(), c1 = csw();
	pthread_join(t, NULL);
	double s = (t1 - t0) / 1e9;
	printf("pingpong round_trips=%ld elapsed_ns=%lld round_trips_per_s=%.0f csw=%lld csw_per_s=%.0f\n",
	       round_trips, t1 - t0, round_trips / s, c1 - c0, (c1 - c0) / s);
	return 0;
}
