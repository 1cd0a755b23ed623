"""Off-CPU time split 3:1 between two Python functions: `nap` sleeps three times
as long as `doze` in every round. Usage: sleeper.py SECONDS"""
import sys
import time


def nap():
    time.sleep(0.03)


def doze():
    time.sleep(0.01)


def main(seconds):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        nap()
        doze()


main(float(sys.argv[1]) if len(sys.argv) > 1 else 2.0)
