"""Recursion: fib(N) again and again, so most samples are N frames deep in fib.
Usage: fib.py SECONDS [N]"""
import sys
import time


def fib(n):
    if n < 2:
        return n
    return fib(n - 1) + fib(n - 2)


def main(seconds, n):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        fib(n)


main(float(sys.argv[1]) if len(sys.argv) > 1 else 2.0, int(sys.argv[2]) if len(sys.argv) > 2 else 22)
