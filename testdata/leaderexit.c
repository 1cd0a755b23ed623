// The thread group leader exits first (pthread_exit) and a thread outlives it
// by a second: its samples are the command's as much as the leader's were.
#include <pthread.h>
#include <time.h>

static volatile unsigned long sink;

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

__attribute__((noinline)) void spin(double secs)
{
	double end = now() + secs;
	while (now() < end)
		sink++;
}

__attribute__((noinline)) static void *outlive(void *arg)
{
	(void)arg;
	spin(1.2);
	return NULL;
}

__attribute__((noinline)) void leader_work(void)
{
	spin(0.2);
}

int main(void)
{
	pthread_t t;
	pthread_create(&t, NULL, outlive, NULL);
	leader_work();
	pthread_exit(NULL);
}
