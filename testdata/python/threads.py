"""Two threads, each spinning in a Python function of its own (`alpha`, `beta`),
while the main thread waits for them. Usage: threads.py SECONDS"""
import sys
import threading
import time


def alpha(seconds):
    end = time.monotonic() + seconds
    n = 0
    while time.monotonic() < end:
        n += 1


def beta(seconds):
    end = time.monotonic() + seconds
    n = 0
    while time.monotonic() < end:
        n += 1


seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 2.0
workers = [threading.Thread(target=f, args=(seconds,)) for f in (alpha, beta)]
for w in workers:
    w.start()
for w in workers:
    w.join()
