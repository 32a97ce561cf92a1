"""How slow this machine is right now, for timing bounds with room for a busy machine.

A bound that holds on an idle machine fails when several test runs share two cores, and a looser
constant would weaken it everywhere. Bounds add what the load adds to starting a process: a fresh
interpreter's start-up, measured at the test's own moment (milliseconds when idle, seconds when not).
"""
import subprocess
import sys
import time


def interpreter_startup_s(runs=3):
    """The slowest of `runs` start-ups of a Python interpreter importing what payloads import, in seconds."""
    slowest = 0.0
    for _ in range(runs):
        began = time.monotonic()
        subprocess.run([sys.executable, "-c", "import subprocess, os, time"], check=True, timeout=120)
        slowest = max(slowest, time.monotonic() - began)
    return slowest
