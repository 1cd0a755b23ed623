// Off-CPU ground truth: each mode waits in a known way and prints what it
// measured itself (CLOCK_MONOTONIC), so a test can hold the profile to it.
//
//   offcpu split ROUNDS   two threads in lockstep: `wait_long` sleeps 300 ms a
//                         round, `wait_short` 100 ms; prints each one's total
//   offcpu pipe ROUNDS    two threads bounce a byte over a pair of pipes
//   offcpu mutex ROUNDS   two threads take turns holding a mutex for 20 ms of
//                         spinning; `take_lock` is where each waits for it
//   offcpu wall MS        a thread named `wallthread` spins 20 ms, sleeps 20 ms,
//                         for MS milliseconds; prints its own lifetime
//   offcpu sleep SECS     sleeps in `sleep_long`
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>

static long long now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

// The system call made here, inlined into the function that sleeps, rather than
// in the C library, which is built without frame pointers: a frame-pointer walk
// from the kernel then still sees that function.
static inline __attribute__((always_inline)) long raw_nanosleep(struct timespec *ts)
{
	long ret;
	asm volatile("syscall"
		     : "=a"(ret)
		     : "a"(35 /* nanosleep */), "D"(ts), "S"(ts)
		     : "rcx", "r11", "memory");
	return ret;
}

static inline __attribute__((always_inline)) void sleep_ms(long ms)
{
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
	while (raw_nanosleep(&ts))
		;
}

static volatile unsigned long sink;

__attribute__((noinline)) void spin_ms(long ms)
{
	long long end = now_ns() + ms * 1000000LL;
	while (now_ns() < end)
		sink++;
}

static int rounds;
static pthread_barrier_t barrier;

__attribute__((noinline)) long long wait_long(void)
{
	long long t = now_ns();
	sleep_ms(300);
	return now_ns() - t;
}

__attribute__((noinline)) long long wait_short(void)
{
	long long t = now_ns();
	sleep_ms(100);
	return now_ns() - t;
}

static void *split_thread(void *arg)
{
	int is_long = arg != NULL;
	long long waited = 0;
	/* A thread's first wait is where the profiler makes room for its wait
	 * state, which can fail with interrupts off (counted as "not followed");
	 * let that be a wait no test measures. */
	sleep_ms(1);
	pthread_barrier_wait(&barrier);
	for (int i = 0; i < rounds; i++) {
		waited += is_long ? wait_long() : wait_short();
		pthread_barrier_wait(&barrier);
	}
	printf("%s %lld\n", is_long ? "wait_long_ns" : "wait_short_ns", waited);
	return NULL;
}

static int to_pong[2], to_ping[2];

__attribute__((noinline)) void ping(void)
{
	char c = 0;
	for (int i = 0; i < rounds; i++) {
		if (write(to_pong[1], &c, 1) != 1 || read(to_ping[0], &c, 1) != 1)
			exit(1);
	}
}

__attribute__((noinline)) static void *pong(void *arg)
{
	char c;
	(void)arg;
	for (int i = 0; i < rounds; i++) {
		if (read(to_pong[0], &c, 1) != 1 || write(to_ping[1], &c, 1) != 1)
			exit(1);
	}
	return NULL;
}

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

__attribute__((noinline)) void take_lock(void)
{
	pthread_mutex_lock(&lock);
}

static void *mutex_thread(void *arg)
{
	(void)arg;
	for (int i = 0; i < rounds; i++) {
		take_lock();
		spin_ms(20);
		pthread_mutex_unlock(&lock);
		// let the other thread in before taking it again
		sched_yield();
	}
	return NULL;
}

static long wall_ms;

static void *wall_thread(void *arg)
{
	(void)arg;
	prctl(PR_SET_NAME, "wallthread");
	long long start = now_ns();
	while (now_ns() - start < wall_ms * 1000000LL) {
		spin_ms(20);
		sleep_ms(20);
	}
	printf("wallthread_ns %lld\n", now_ns() - start);
	return NULL;
}

__attribute__((noinline)) void sleep_long(long secs)
{
	sleep_ms(secs * 1000);
}

int main(int argc, char **argv)
{
	if (argc != 3) {
		fprintf(stderr, "usage: offcpu split|pipe|mutex|wall|sleep N\n");
		return 2;
	}
	long n = atol(argv[2]);
	rounds = (int)n;
	pthread_t a, b;
	if (!strcmp(argv[1], "split")) {
		pthread_barrier_init(&barrier, NULL, 2);
		pthread_create(&a, NULL, split_thread, (void *)1);
		pthread_create(&b, NULL, split_thread, NULL);
		pthread_join(a, NULL);
		pthread_join(b, NULL);
	} else if (!strcmp(argv[1], "pipe")) {
		if (pipe(to_pong) || pipe(to_ping))
			return 1;
		pthread_create(&a, NULL, pong, NULL);
		ping();
		pthread_join(a, NULL);
	} else if (!strcmp(argv[1], "mutex")) {
		pthread_create(&a, NULL, mutex_thread, NULL);
		pthread_create(&b, NULL, mutex_thread, NULL);
		pthread_join(a, NULL);
		pthread_join(b, NULL);
	} else if (!strcmp(argv[1], "wall")) {
		wall_ms = n;
		pthread_create(&a, NULL, wall_thread, NULL);
		pthread_join(a, NULL);
	} else if (!strcmp(argv[1], "sleep")) {
		sleep_long(n);
	} else {
		return 2;
	}
	fflush(stdout);
	return 0;
}
