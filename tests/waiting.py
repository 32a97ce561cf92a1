"""Waiting in tests: poll a condition with a deadline (never a sleep as synchronisation)."""
import time


def poll(predicate, timeout=10.0, what="condition", interval=0.02):
    """Return `predicate()`'s first true value; fail the test when `timeout` passes first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}")
