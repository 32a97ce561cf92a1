"""Reports that are never lost: an fsynced journal and an in-order sender.

Every event (step change, heartbeat, info, final) gets the next `seq` of this
attempt and is appended, flushed and fsynced to a JSON-lines journal in the
work dir *before* anything is sent. A sender thread then delivers the journal
in order: while the server is unreachable it keeps the backlog and retries
with exponential backoff, and when the server answers again it sends the whole
backlog in one request (the events route takes a list). The server is
idempotent on `(attempt, seq)`, so a replay after a lost reply is harmless, and
`severus replay JOURNAL` can deliver a journal later from anywhere.

The sender also makes the heartbeats (every `server.heartbeat_s`, so long
stage-ins keep the job alive without the stages knowing) and acts on replies:
`command: kill` and `409 attempt-superseded` are handed to `on_stop`.
"""
import json
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Optional, Tuple

from shared.errors import AttemptSuperseded, KilledByManager, lookup
from shared.events import MAX_BATCH, MAX_TAIL_LINES, Event
from shared.states import Status, Step

from .client import ServerClient, ServerRefused, ServerUnreachable

log = logging.getLogger("severus.report")

JOURNAL_NAME = "severus-journal.jsonl"
JOURNAL_FORMAT = 1
HEARTBEAT_TAIL_LINES = 20


@dataclass(frozen=True)
class SenderConfig:
    """Timings of the sender; the heartbeat period comes from the job description."""
    heartbeat_s: float = 300.0
    backoff_s: float = 1.0            # first wait after a failed send, doubled each time
    backoff_max_s: float = 60.0
    final_deadline_s: float = 300.0   # how long the final report is retried before giving up
    batch: int = MAX_BATCH


class Journal:
    """Append-only JSON lines: a header line, then one event per line, each fsynced."""

    def __init__(self, path, job_id, attempt, server_url):
        self.path = Path(path)
        self.last_seq = 0
        if self.path.exists():
            header, events = read_journal(self.path)
            if (header.get("job"), header.get("attempt")) != (job_id, attempt):
                raise ValueError(f"{self.path} belongs to job {header.get('job')} "
                                 f"attempt {header.get('attempt')}")
            # A restarted wrapper continues the numbering: seq stays unique per attempt.
            self.last_seq = max((e["seq"] for e in events), default=0)
            self._fh = open(self.path, "a", encoding="utf-8")
        else:
            self._fh = open(self.path, "a", encoding="utf-8")
            self._write({"journal": JOURNAL_FORMAT, "job": job_id, "attempt": attempt,
                         "server": server_url})

    def _write(self, obj):
        self._fh.write(json.dumps(obj, separators=(",", ":"), default=str) + "\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def append(self, event: dict):
        self._write(event)
        self.last_seq = event["seq"]

    def close(self):
        self._fh.close()


def read_journal(path) -> Tuple[dict, List[dict]]:
    """(header, events) of a journal; a torn last line (power cut mid-write) is skipped."""
    header, events = {}, []
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh):
            try:
                obj = json.loads(line)
            except ValueError:
                log.warning("%s line %d is not JSON, skipped", path, n + 1)
                continue
            if n == 0 and "journal" in obj:
                header = obj
            elif isinstance(obj, dict) and "seq" in obj:
                events.append(obj)
    return header, events


def _no_probe():
    return {}, []


class Reporter:
    """Journals events and delivers them in order from a sender thread."""

    def __init__(self, desc, client: ServerClient, workdir, *,
                 config: Optional[SenderConfig] = None,
                 on_stop: Callable[[Exception], None] = lambda exc: None,
                 probe: Callable[[], Tuple[dict, list]] = _no_probe,
                 clock=time.time):
        self.desc = desc
        self.client = client
        self.config = config or SenderConfig(heartbeat_s=desc.server.heartbeat_s)
        self.on_stop = on_stop
        self.probe = probe           # () -> (metrics, last stdout lines); set by the runner
        self.clock = clock
        self.journal = Journal(Path(workdir) / JOURNAL_NAME, desc.job.id, desc.job.attempt,
                               desc.server.url)
        self.path = f"/jobs/{desc.job.id}/events"
        self.superseded = False      # the server refused this attempt (409)
        self.refused: Optional[str] = None   # a permanent refusal (401/403): sending stopped
        self.command: Optional[str] = None
        self.sent = 0
        self.step_name: Optional[str] = None
        self._pending: List[dict] = []
        self._cond = threading.Condition(threading.RLock())
        self._closing = False
        self._close_at = float("inf")
        self._next_heartbeat = time.monotonic() + self.config.heartbeat_s
        self._thread = threading.Thread(target=self._run, name="severus-sender", daemon=True)

    # ------------------------------------------------------------------ events

    def start(self):
        self._thread.start()
        return self

    def _emit(self, status, kind, message="", code=None, report=None, with_probe=True):
        metrics, tail = self.probe() if with_probe else ({}, [])
        with self._cond:
            event = Event(attempt=self.desc.job.attempt, seq=self.journal.last_seq + 1,
                          time=round(self.clock(), 3), status=str(status), kind=kind,
                          step=self.step_name, message=message[:4096], code=code,
                          metrics={k: v for k, v in metrics.items()
                                   if isinstance(v, (int, float)) and not isinstance(v, bool)},
                          tail=tuple(line[:4096] for line in tail[-MAX_TAIL_LINES:]),
                          report=report).to_dict()
            self.journal.append(event)
            if not (self.superseded or self.refused):
                self._pending.append(event)
            self._next_heartbeat = time.monotonic() + self.config.heartbeat_s
            self._cond.notify_all()
        return event

    def step(self, step: Step, message=""):
        """A step change: also a heartbeat (metrics and stdout tail)."""
        self.step_name = str(step)
        return self._emit(Status.RUNNING, "step", message or step.label)

    def info(self, message):
        """A fact for the job's history (access mode, fallback SE used, ...)."""
        return self._emit(Status.RUNNING, "info", message, with_probe=False)

    def heartbeat(self):
        return self._emit(Status.RUNNING, "heartbeat", "")

    def final(self, code, message, report):
        """The final event: status from the error table, the report attached."""
        return self._emit(lookup(code).status, "final", message, code=code, report=report)

    # ------------------------------------------------------------------ delivery

    def close(self, deadline_s=None) -> bool:
        """Wait until every event is delivered or `deadline_s` passed; True when all arrived."""
        if deadline_s is None:
            deadline_s = self.config.final_deadline_s
        with self._cond:
            self._closing = True
            self._close_at = time.monotonic() + deadline_s
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(deadline_s + self.client.timeout + 1)
        with self._cond:
            delivered = not self._pending and not self.superseded and not self.refused
        self.journal.close()
        return delivered

    @property
    def backlog(self):
        with self._cond:
            return len(self._pending)

    def _next_batch(self, retry_at):
        """Block until there is something to send (or heartbeat to make); None = stop."""
        with self._cond:
            while True:
                now = time.monotonic()
                if self.superseded or self.refused:
                    return None
                if self._closing and (not self._pending or now >= self._close_at):
                    return None
                if not self._closing and now >= self._next_heartbeat:
                    self.heartbeat()
                    continue
                if self._pending and now >= retry_at:
                    return list(self._pending[:self.config.batch])
                wake = self._close_at if self._closing else self._next_heartbeat
                if self._pending:
                    wake = min(wake, retry_at)
                self._cond.wait(max(0.0, wake - now))

    def _run(self):
        delay, retry_at = self.config.backoff_s, 0.0
        while True:
            batch = self._next_batch(retry_at)
            if batch is None:
                return
            try:
                reply = self.client.post(self.path, batch)
            except ServerUnreachable as exc:
                log.info("server unreachable (%s); %d event(s) kept, retry in %.0f s",
                         exc, self.backlog, delay)
                retry_at = time.monotonic() + delay
                delay = min(delay * 2, self.config.backoff_max_s)
                continue
            except ServerRefused as exc:
                self._refused(exc, batch)
                continue
            delay, retry_at = self.config.backoff_s, 0.0
            with self._cond:
                del self._pending[:len(batch)]
                self.sent += len(batch)
                self._cond.notify_all()
            command = reply.get("command") if isinstance(reply, dict) else None
            if command == "kill" and self.command is None:
                self.command = command
                log.warning("the server asked to kill this job")
                self.on_stop(KilledByManager("kill command from the server"))

    def _refused(self, exc, batch):
        if exc.status == 409:
            log.error("attempt superseded: %s", exc)
            with self._cond:
                self.superseded = True
                self._pending.clear()
                self._cond.notify_all()
            self.on_stop(AttemptSuperseded(exc.message or "the server refused this attempt"))
        elif exc.status in (401, 403):
            # The token will not get better: stop sending, the journal keeps everything.
            log.error("server refused our token: %s", exc)
            with self._cond:
                self.refused = str(exc)
                self._pending.clear()
                self._cond.notify_all()
        else:
            # A batch the server cannot take (bad schema, too big) must not block the rest.
            log.error("server refused %d event(s) (seq %s-%s): %s", len(batch),
                      batch[0]["seq"], batch[-1]["seq"], exc)
            with self._cond:
                del self._pending[:len(batch)]
                self._cond.notify_all()


def replay_journal(path, client: ServerClient, job_id=None, batch=MAX_BATCH):
    """Deliver a journal's events (in order, in batches); return (accepted, duplicates)."""
    header, events = read_journal(path)
    job_id = job_id or header.get("job")
    if not job_id:
        raise ValueError(f"{path} has no journal header: give the job id")
    accepted = duplicates = 0
    for start in range(0, len(events), batch):
        reply = client.post(f"/jobs/{job_id}/events", events[start:start + batch]) or {}
        accepted += int(reply.get("accepted", 0))
        duplicates += int(reply.get("duplicates", 0))
    return accepted, duplicates
