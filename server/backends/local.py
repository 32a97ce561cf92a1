"""`local`: a bounded pool of `severus run` processes on this machine (the embedded default).

The pool lives in the server process that made it: a gjid names that process
(`local:<pid>.<start time>:<uuid>`), so that after the process died (a restart of
`sbk serve`, a crash) any other can tell a queued job that will never start
(`lost`) from one another live process holds (`unknown`).
"""
import os
import signal
import subprocess
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Optional

from .base import (CANCELLED, COMPLETED, FAILED, LOST, PENDING, RUNNING, UNKNOWN, Backend, BackendError,
                   BatchState, Wrapper, make_sandbox, run_args, sandbox_wrapper)


@dataclass
class _LocalJob:
    """Mutable record of one process, guarded by the backend's lock."""
    argv: list
    cwd: str
    log: str
    proc: Optional[subprocess.Popen] = None
    state: str = PENDING
    reason: str = ""
    exit_code: Optional[int] = None
    cancel_requested: bool = field(default=False)


class LocalBackend(Backend):
    """At most `max_parallel` wrappers at once; the rest wait in submission order."""
    name = "local"

    def __init__(self, max_parallel: int = 2, wrapper: Wrapper = None, python: str = "python3",
                 env: Optional[dict] = None):
        if max_parallel < 1:
            raise BackendError(f"local backend: max_parallel must be at least 1, got {max_parallel}")
        self.wrapper = wrapper
        self.python = python
        self.env = env
        self.owner = process_identity(os.getpid())
        self._jobs = {}
        self._lock = threading.Lock()
        # The pool's threads are the slots: each waits on one process at a time.
        self._pool = ThreadPoolExecutor(max_workers=max_parallel, thread_name_prefix="severus-local")

    def submit(self, bunch):
        """Write the sandbox and queue one process per job; returns job_id -> `local:<uuid>`."""
        sandbox = make_sandbox(bunch, self.wrapper)
        argv = sandbox_wrapper(sandbox, self.wrapper, self.python)
        gjids = {}
        for index, job in enumerate(bunch.jobs):
            gjid = f"local:{self.owner}:{uuid.uuid4().hex}"
            record = _LocalJob(argv=argv + run_args(index), cwd=str(sandbox),
                               log=str(sandbox / f"job-{index}.out"))
            with self._lock:
                self._jobs[gjid] = record
            self._pool.submit(self._run, record)
            gjids[job.job_id] = gjid
        return gjids

    def _run(self, job):
        with self._lock:
            if job.cancel_requested:
                return
            try:
                with open(job.log, "ab") as out:
                    # Own session: cancel signals the wrapper and its payload, not us.
                    job.proc = subprocess.Popen(job.argv, cwd=job.cwd, stdout=out, stderr=subprocess.STDOUT,
                                                stdin=subprocess.DEVNULL, env=self.env, start_new_session=True)
            except OSError as exc:
                job.state, job.reason = FAILED, f"cannot start the wrapper: {exc}"
                return
            job.state = RUNNING
        code = job.proc.wait()
        with self._lock:
            job.exit_code = code if code >= 0 else None
            if job.cancel_requested:
                job.state, job.reason = CANCELLED, "cancelled on request (SIGTERM to the process group)"
            elif code == 0:
                job.state = COMPLETED
            elif code < 0:
                job.state, job.reason = FAILED, f"killed by signal {-code}"
            else:
                job.state, job.reason = FAILED, f"wrapper exited with {code}"

    def status(self, gjids):
        """States from this process's own records; another process's gjids are `unknown` while that
        process lives, `lost` once it is gone (its queue with it)."""
        with self._lock:
            return {g: _snapshot(self._jobs[g]) if g in self._jobs else _elsewhere(g) for g in gjids}

    def cancel(self, gjids):
        """Queued jobs never start; running ones get SIGTERM on their process group."""
        with self._lock:
            for gjid in gjids:
                job = self._jobs.get(gjid)
                if job is None or job.state not in (PENDING, RUNNING):
                    continue
                job.cancel_requested = True
                if job.proc is None:
                    job.state, job.reason = CANCELLED, "cancelled on request before it started"
                    continue
                try:
                    os.killpg(job.proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass   # it ended between the check and the signal

    def close(self):
        """Wait for the processes already started (used by tests and server shutdown)."""
        self._pool.shutdown(wait=True)


def _snapshot(job):
    return BatchState(job.state, job.reason, job.exit_code)


def _elsewhere(gjid):
    """The state of a gjid another server process queued."""
    _, owner, _ = (gjid.split(":") + ["", ""])[:3]
    if "." not in owner:   # not ours to judge (an older form of gjid)
        return BatchState(UNKNOWN, "not started by this server process")
    pid = owner.split(".", 1)[0]
    if pid.isdigit() and process_identity(int(pid)) == owner:
        return BatchState(UNKNOWN, f"held by the live server process {pid}")
    return BatchState(LOST, f"its server process ({pid}) is gone, and its queue with it")


def process_identity(pid):
    """`<pid>.<start time in clock ticks>`: a process, not just a number the kernel reuses (None: gone,
    a zombie included: a killed server whose parent went too may stay one where nobody reaps)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            raw = fh.read()
    except OSError:
        return None
    fields = raw[raw.rfind(b")") + 2:].split()
    if fields[0] in (b"Z", b"X"):
        return None
    return f"{pid}.{fields[19].decode()}"
