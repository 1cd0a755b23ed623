"""A fixed amount of Python work, 20 frames down, for slowdown benchmarks: it
prints `work WALL_NS CPU_NS` (its own wall and CPU time) to stderr. Usage:
work.py ROUNDS"""
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


def main(rounds):
    t = time.perf_counter_ns()
    c = time.process_time_ns()
    for _ in range(rounds):
        down(20, 10000)
    print(f"work {time.perf_counter_ns() - t} {time.process_time_ns() - c}", file=sys.stderr)


main(int(sys.argv[1]) if len(sys.argv) > 1 else 5000)
