"""A script that runs for 300 ms in `brief`, then exits."""
import time


def brief():
    end = time.monotonic() + 0.3
    n = 0
    while time.monotonic() < end:
        n += 1


brief()
