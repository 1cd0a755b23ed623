"""A 3:1 split of CPU between two lines of one function: in every round the
`# heavy` line runs three times the iterations of the `# light` line, the same
bytecode each. Usage: lines.py SECONDS"""
import sys
import time


def work(seconds):
    end = time.monotonic() + seconds
    x = 0
    while time.monotonic() < end:
        for i in range(30000): x += i * i  # heavy
        for i in range(10000): x += i * i  # light
    return x


work(float(sys.argv[1]) if len(sys.argv) > 1 else 3.0)
