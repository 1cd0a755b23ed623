"""A Python stack deeper than a sample can hold: `down` recurses DEPTH times, then
spins. Usage: deep.py SECONDS DEPTH"""
import sys
import time


def down(n, end):
    if n == 0:
        x = 0
        while time.monotonic() < end:
            x += 1
        return x
    return down(n - 1, end)


down(int(sys.argv[2]) if len(sys.argv) > 2 else 200, time.monotonic() + float(sys.argv[1]) if len(sys.argv) > 1 else 2.0)
