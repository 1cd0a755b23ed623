"""A thread that runs `true` again and again through subprocess, as build and
test drivers do: many samples fall in the children between their fork (or
vfork) and their exec, where they run the parent's image and its Python frames.
Usage: spawner.py SECONDS"""
import subprocess
import sys
import threading
import time


def spawn_all(seconds):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        subprocess.run(["true"])


def main():
    t = threading.Thread(target=spawn_all, args=(float(sys.argv[1]),))
    t.start()
    t.join()


main()
