"""Liveness: time out running jobs whose heartbeats stopped (code 100); and the
housekeeping thread that works off removal requests (`Cleaner`).

A job the batch poller made running (batch-start) has no report yet: its silence is counted
from the batch start (jobs.start_batch_job sets heartbeat_at), so its wrapper gets the same
heartbeat_multiple x heartbeat_s for its first report as between any two.

`sbk reap` and `sbk cleanup` run one pass (for a cron); `sbk serve` runs `Reaper`
and `Cleaner` as daemon threads. Under gunicorn only the master's thread reaps, so workers never race
each other (and a race would be harmless: each job is reaped in its own
transaction, re-checked under its row lock).
"""
import logging
import threading

from . import db, jobs, removals

log = logging.getLogger("sbk.reaper")


def reap_once(multiple):
    """One pass; return the ids of the jobs timed out."""
    with db.connection():
        reaped = jobs.reap(multiple)
    if reaped:
        log.info("timed out %d silent job(s): %s", len(reaped), reaped[:20])
    return reaped


class Reaper:
    """A daemon thread calling reap_once every `interval_s` until stop() (subclasses change run_once)."""
    thread_name = "sbk-reaper"

    def __init__(self, multiple, interval_s):
        self.multiple = multiple
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=self.thread_name, daemon=True)

    def start(self):
        self._thread.start()
        return self

    def stop(self):
        self._stop.set()
        self._thread.join(timeout=10)

    def run_once(self):
        reap_once(self.multiple)

    def _run(self):
        while not self._stop.wait(self.interval_s):
            try:
                self.run_once()
            except Exception:   # a database hiccup must not end liveness checks for good
                log.exception("%s pass failed; trying again in %.0f s", self.thread_name, self.interval_s)


class Cleaner(Reaper):
    """The removal requests' thread of `sbk serve`: one removals.cleanup_once every interval."""
    thread_name = "sbk-cleaner"

    def __init__(self, interval_s, timeout_s):
        super().__init__(None, interval_s)
        self.timeout_s = timeout_s

    def run_once(self):
        removals.cleanup_once(timeout_s=self.timeout_s)
