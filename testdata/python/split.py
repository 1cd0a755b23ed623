"""A 3:1 split of CPU between two Python functions, each its own loop: `heavy`
runs three times as long as `light` in every round. Usage: split.py SECONDS"""
import sys
import time


def spin(seconds):
    end = time.perf_counter() + seconds
    n = 0
    while time.perf_counter() < end:
        n += 1
    return n


def heavy():
    return spin(0.03)


def light():
    return spin(0.01)


def main(seconds):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        heavy()
        light()


main(float(sys.argv[1]) if len(sys.argv) > 1 else 3.0)
