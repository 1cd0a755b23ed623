"""A C extension called from Python: hashlib's SHA-256 over a large buffer, so
most samples are in native code under `hash_loop`. Usage: hashing.py SECONDS"""
import hashlib
import sys
import time

DATA = bytes(range(256)) * 4096  # 1 MiB


def hash_loop(seconds):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        hashlib.sha256(DATA).digest()


hash_loop(float(sys.argv[1]) if len(sys.argv) > 1 else 2.0)
