"""Bytes moved by the running copies: what heartbeats carry, and the stall watch.

Every copy a stage makes through `copy_with_retries` is watched (`watched`): a thread reads
how many bytes it has moved (its implementation's `progress_probe`: the local file's size for
a download, gfal2's monitor callback or the command's written bytes for an upload) every
`poll_s`, hands the figure to the job's `Progress` (heartbeats read it) and, when the figure
has not changed for `[transfer] stall_s`, ends the copy as a cancel would (process group
killed, gfal2 copy cancelled, local destination removed: wrapper/transfer/timeouts.py) and
makes its error a TransferError "timeout" naming the stall. A copy whose bytes cannot be
measured is never called stalled; its size-based timeout still bounds it.
"""
import itertools
import threading
import time
from contextlib import contextmanager

from shared.events import TRANSFER_BYTES as BYTES, TRANSFER_RATE as RATE, TRANSFER_TOTAL_BYTES as TOTAL
from .errors import TransferError


class Progress:
    """The bytes of the job's running copies (thread-safe): `metrics()` for heartbeats."""

    def __init__(self, clock=time.monotonic):
        self.clock = clock
        self._lock = threading.Lock()
        self._ids = itertools.count()
        self._copies = {}   # id -> [began, moved, total]

    def begin(self, total):
        """A copy of `total` bytes (None: unknown) starts; its id."""
        with self._lock:
            key = next(self._ids)
            self._copies[key] = [self.clock(), 0, total or 0]
        return key

    def moved(self, key, nbytes):
        with self._lock:
            if key in self._copies:
                self._copies[key][1] = nbytes

    def end(self, key):
        with self._lock:
            self._copies.pop(key, None)

    def metrics(self):
        """{transfer_bytes, transfer_total_bytes, transfer_rate_mb_s} of the copies running now;
        {} when none runs."""
        with self._lock:
            copies = [list(c) for c in self._copies.values()]
        if not copies:
            return {}
        now = self.clock()
        rate = sum(moved / max(now - began, 1e-3) for began, moved, _ in copies)
        return {BYTES: sum(c[1] for c in copies), TOTAL: sum(c[2] for c in copies),
                RATE: round(rate / 1e6, 3)}


class StallWatch:
    """Whether a copy stalled: its byte count unchanged for `stall_s` (0: never). A count of
    None (not measurable) never stalls."""

    def __init__(self, stall_s, clock=time.monotonic):
        self.stall_s, self.clock = stall_s, clock
        self.last = None
        self.since = clock()

    def seen(self, nbytes):
        """Record the count now; True when it has not changed for stall_s."""
        now = self.clock()
        if nbytes is None or nbytes != self.last:
            self.last, self.since = nbytes, now
            return False
        return bool(self.stall_s) and now - self.since >= self.stall_s

    def describe(self, total):
        moved = 0 if self.last is None else self.last
        of = f" of {total}" if total else ""
        return f"stalled: no bytes moved for {self.stall_s:g} s (at {moved}{of} bytes; [transfer] stall_s)"


class EitherEvent:
    """Set when the job's cancel or the copy's own stall is: what the copy is handed as its cancel."""

    def __init__(self, first, second):
        self.events = [e for e in (first, second) if e is not None]

    def is_set(self):
        return any(e.is_set() for e in self.events)

    def wait(self, timeout=None):
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.is_set():
            left = 0.05 if deadline is None else min(0.05, deadline - time.monotonic())
            if left <= 0:
                break
            self.events[-1].wait(left)
        return self.is_set()


def poll_interval(stall_s):
    """How often a copy's bytes are read: often enough to notice a stall within a tenth of stall_s."""
    return min(1.0, max(0.05, (stall_s or 10.0) / 10))


@contextmanager
def watched(what, probe, total, stall_s, progress=None, cancel=None, clock=time.monotonic):
    """Watch one copy made inside the block, which is handed the copy's cancel (yielded): set on
    the job's `cancel`, or when `probe()` (bytes moved, None when not measurable) has not changed
    for `stall_s`. A copy that raised after a stall raises TransferError("timeout") naming it."""
    stalled = threading.Event()
    finished = threading.Event()
    watch = StallWatch(stall_s, clock)
    key = progress.begin(total) if progress is not None else None
    interval = poll_interval(stall_s)

    def run():
        while not finished.wait(interval):
            try:
                nbytes = probe()
            except OSError:
                nbytes = None
            if nbytes is not None and progress is not None:
                progress.moved(key, nbytes)
            if watch.seen(nbytes):
                stalled.set()
                return

    thread = threading.Thread(target=run, name="severus-copy-watch", daemon=True)
    thread.start()
    try:
        yield EitherEvent(cancel, stalled)
    except TransferError as exc:
        if stalled.is_set() and not (cancel is not None and cancel.is_set()):
            raise TransferError("timeout", f"{what}: {watch.describe(total)}") from exc
        raise
    finally:
        finished.set()
        thread.join()
        if progress is not None:
            progress.end(key)
