"""A Python job that runs until killed, 20 frames down, and every 100 ms prints
`MONOTONIC_NS CALLS` (CLOCK_MONOTONIC and the calls done so far) to stdout: a
benchmark reads its throughput while a profiler attaches and detaches.
Usage: steady.py"""
import sys
import time


def leaf(n):
    x = 0
    for i in range(n):
        x += i * i
    return x


def down(depth, n):
    if depth == 0:
        return leaf(n)
    return down(depth - 1, n)


def main():
    calls = 0
    next_report = time.monotonic_ns()
    while True:
        down(20, 2000)
        calls += 1
        now = time.monotonic_ns()
        if now >= next_report:
            print(now, calls, flush=True)
            next_report = now + 100_000_000


main()
