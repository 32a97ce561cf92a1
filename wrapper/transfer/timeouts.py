"""How every copy ends by its deadline whatever the tool does, and at once on a cancel.

gfal2 and POSIX copies run on a worker thread (`CopyWorker`) that `run_bounded` gives up at
the deadline or when the job's `cancel` (a threading.Event) is set: the gfal2 copy is cancelled,
a POSIX one stops at its next block, or whenever a read or open stuck in the kernel returns.
A worker given up goes on until its tool lets go, then removes its local destinations; a new
copy to one of them waits for it, and the exit waits for abandoned gfal2 copies (a copy still
inside XrdCl when the process exits aborts it). Commands are killed with their process group
(wrapper/transfer/commands.py). The deadline itself is the site's size-based timeout
(`TransferConfig.timeout_for`, applied by `copy_with_retries`).
"""
import atexit
import os
import threading
import time

from .errors import TransferError

CANCEL_POLL_S = 0.05   # how often a copy's wait looks at its cancel (an Event cannot wake another wait)
_BUSY_DESTINATIONS = {}              # local path -> the abandoned CopyWorker still writing it
_ABANDONED_WORKERS = set()           # CopyWorkers given up and still running
_CANCELLERS = []                     # threads in gfal2_cancel (it returns when the copy ends)


def _await_abandoned_copies():
    """At exit, wait for abandoned gfal2 copies to end (XrdCl gives up after 2 x
    XRD_REQUESTTIMEOUT at most): a copy still inside XrdCl when the process exits aborts it
    (SIGABRT, seen here). An abandoned POSIX copy may be stuck in the kernel for good: it is
    not waited for, its local destinations are removed (its thread dies with the process)."""
    bound = 2 * float(os.environ.get("XRD_REQUESTTIMEOUT") or 60) + 10
    deadline = time.monotonic() + bound
    for worker in list(_ABANDONED_WORKERS):
        if worker.await_at_exit:
            worker.done.wait(max(0.0, deadline - time.monotonic()))
    for thread in list(_CANCELLERS):
        thread.join(max(0.0, deadline - time.monotonic()))
    for worker in list(_ABANDONED_WORKERS):
        worker.remove_destinations()


atexit.register(_await_abandoned_copies)


def copies_left_behind():
    """How many abandoned gfal2 copies the exit would wait for (see _await_abandoned_copies)."""
    return sum(1 for worker in list(_ABANDONED_WORKERS) if worker.await_at_exit)


def check_cancel(cancel, what):
    """Raise TransferError("cancelled") when `cancel` is set: nothing is started then."""
    if cancel is not None and cancel.is_set():
        raise TransferError("cancelled", f"{what}: cancelled before it started")


def _wait(event, deadline, cancel):
    """Wait for `event` until `deadline` (time.monotonic()) or `cancel` is set; whether `event`
    is set. Without a cancel, one wait; with one, waits of CANCEL_POLL_S at most (an ended copy
    still wakes it at once)."""
    while True:
        remaining = deadline - time.monotonic()
        if cancel is None:
            return event.wait(max(0.0, remaining))
        if event.wait(max(0.0, min(CANCEL_POLL_S, remaining))):
            return True
        if cancel.is_set() or remaining <= CANCEL_POLL_S:
            return event.is_set()


def run_bounded(what, timeout, destinations, cancel, start):
    """Run a copy on a worker thread (`start(destinations)` makes a started CopyWorker) and
    return its value or raise its error; by `timeout`, or at once when `cancel` is set, the
    copy is abandoned instead, its local `destinations` removed, and TransferError "timeout"
    or "cancelled" raised. An abandoned worker goes on until its tool lets go (gfal2: XrdCl's
    own timeout; POSIX: the next block, or whenever a read stuck in the kernel returns), then
    removes its destinations; until then a new copy to one of them waits (two writers must
    never share a file)."""
    began = time.monotonic()
    deadline = began + timeout
    limit = f"not done within its size-based timeout of {timeout:.1f} s"
    destinations = [os.path.abspath(d) for d in destinations]
    for dst in destinations:
        busy = _BUSY_DESTINATIONS.get(dst)
        if busy is not None and not _wait(busy.done, deadline, cancel):
            if cancel is not None and cancel.is_set():
                raise TransferError("cancelled", f"{what}: cancelled while an abandoned copy to {dst} still hung")
            raise TransferError("timeout", f"{what}: {limit}: an abandoned copy to {dst} still hangs")
    worker = start(destinations)
    if not _wait(worker.done, deadline, cancel) and worker.abandon():
        for dst in destinations:
            _remove_quietly(dst)   # at once: what the worker still writes, it writes nameless
        if cancel is not None and cancel.is_set():
            raise TransferError("cancelled", f"{what}: cancelled after {time.monotonic() - began:.1f} s")
        raise TransferError("timeout", f"{what}: {limit} (given up)")
    if worker.error is not None:
        raise worker.error
    return worker.value


class CopyWorker:
    """One copy, `work(stop)`, on a thread of its own, which the caller may stop waiting for
    (`abandon`). `stop` is set on abandon: a copy that looks at it ends early. Subclasses say
    how to interrupt their tool (`_interrupt`) and what to do when the copy has ended (`_ended`)."""
    await_at_exit = False   # whether the process must let an abandoned copy end before it exits
    thread_name = "severus-copy"

    def __init__(self, work, destinations):
        self.work, self.destinations = work, destinations
        self.value = self.error = None
        self.abandoned = False
        self.stop = threading.Event()
        self.done = threading.Event()
        self._lock = threading.Lock()
        threading.Thread(target=self._run, name=self.thread_name, daemon=True).start()

    def _call(self):
        return self.work(self.stop)

    def _interrupt(self):
        """Make the copy end soon after it was abandoned; `stop` is set already."""

    def _ended(self, abandoned):
        """The copy has ended (on the worker's thread, under the lock)."""

    def _run(self):
        try:
            self.value = self._call()
        except Exception as exc:   # handed to the caller's thread, which classifies it
            self.error = exc
        with self._lock:
            if self.abandoned:
                self.remove_destinations()
                _ABANDONED_WORKERS.discard(self)
            self._ended(self.abandoned)
            self.done.set()

    def remove_destinations(self):
        for path in self.destinations:
            _remove_quietly(path)
            if _BUSY_DESTINATIONS.get(path) is self:
                del _BUSY_DESTINATIONS[path]

    def abandon(self):
        """Stop the copy and stop waiting for it; False when it has ended meanwhile."""
        with self._lock:
            if self.done.is_set():
                return False
            self.abandoned = True
            self.stop.set()
            _ABANDONED_WORKERS.add(self)
            for path in self.destinations:
                _BUSY_DESTINATIONS[path] = self
        self._interrupt()
        return True


def start_canceller(cancel, name):
    """`cancel()` on a thread of its own that the exit waits for: gfal2_cancel returns only
    when the copy it cancels has ended."""
    def run():
        try:
            cancel()
        finally:
            _CANCELLERS.remove(threading.current_thread())
    canceller = threading.Thread(target=run, name=name, daemon=True)
    _CANCELLERS.append(canceller)
    canceller.start()


def _remove_quietly(path):
    """Remove a file if it can be (cleanup that must not raise: a worker's last act, say)."""
    try:
        os.unlink(path)
    except OSError:
        pass
