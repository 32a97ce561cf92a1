"""Reports that are never lost: an fsynced journal and an in-order sender.

Every event (step change, heartbeat, info, final) gets the next `seq` of this
attempt and is appended, flushed and fsynced to a JSON-lines journal in the
work dir *before* anything is sent. A sender thread then delivers the journal
in order: while the server is unreachable it keeps the backlog and retries
with exponential backoff, and when the server answers again it sends the
backlog in as few requests as the limits allow. The server is idempotent on
`(attempt, seq)`, so a replay after a lost reply is harmless, and `severus
replay JOURNAL` can deliver a journal later from anywhere.

What is sent, and what a refusal does, is decided in one place, `Outbox`,
used by the sender thread and by `replay_journal` alike (PROTOCOL.md, Outbox):
- nothing is dropped: a post carries at most MAX_BATCH events and
  MAX_BATCH_BYTES bytes; a 413 halves the bytes per post (for good); any other
  4xx except 401/403/409 halves the batch until the refused event is alone,
  and an event refused alone is marked rejected in the journal (a line
  `{"rejected": seq, "status", "error", "message", "time"}`) while the rest go on;
  408/429 are "try later", like no answer;
- a run of consecutive heartbeats in the backlog is sent as its last one (the
  journal keeps them all); step, info and final events always go.

The sender also makes the heartbeats (every `server.heartbeat_s`, so long
stage-ins keep the job alive without the stages knowing) and acts on replies:
the first `command: kill` is acknowledged with an info event (`ack: "kill"`)
and handed to `on_stop`, later repeats are ignored; `409 attempt-superseded`
is handed to `on_stop`.
"""
import json
import logging
import math
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, List, NamedTuple, Optional, Tuple

from shared.errors import AttemptSuperseded, KilledByManager, lookup
from shared.events import MAX_BATCH, MAX_BATCH_BYTES, MAX_TAIL_LINES, Event
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
    batch: int = MAX_BATCH            # events per post
    batch_bytes: int = MAX_BATCH_BYTES  # bytes per post (the JSON body as sent)


class Journal:
    """Append-only JSON lines: a header line, then one event per line, each fsynced."""

    def __init__(self, path, job_id, attempt, server_url):
        self.path = Path(path)
        self.last_seq = 0
        if self.path.exists():
            header, events, _ = load_journal(self.path)
            if (header.get("job"), header.get("attempt")) != (job_id, attempt):
                raise ValueError(f"{self.path} belongs to job {header.get('job')} "
                                 f"attempt {header.get('attempt')}")
            # A restarted wrapper continues the numbering: seq stays unique per attempt.
            self.last_seq = max((e["seq"] for e in events), default=0)
            torn = _torn(self.path)
            self._fh = open(self.path, "a", encoding="utf-8")
            if torn:
                self._fh.write("\n")   # the next line must not be glued to a torn one
        else:
            self._fh = open(self.path, "a", encoding="utf-8")
            self._write({"journal": JOURNAL_FORMAT, "job": job_id, "attempt": attempt,
                         "server": server_url})

    def _write(self, obj):
        line = json.dumps(obj, separators=(",", ":"), default=str)
        if self._fh.closed:
            # Only a sender thread that outlived close() gets here: say so, do not crash it.
            log.error("journal %s already closed, not written: %s", self.path, line[:200])
            return line
        self._fh.write(line + "\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())
        return line

    def append(self, event: dict) -> dict:
        """Journal `event`; return it as the journal holds it (what gets sent)."""
        line = self._write(event)
        self.last_seq = event["seq"]
        return json.loads(line)

    def mark_rejected(self, record: dict):
        """A line saying the server refused the event `record["rejected"]`, with its reply."""
        self._write(record)

    def close(self):
        self._fh.close()


def _torn(path) -> bool:
    """True when the file's last line has no end (a power cut mid-write)."""
    with open(path, "rb") as fh:
        fh.seek(0, os.SEEK_END)
        if fh.tell() == 0:
            return False
        fh.seek(-1, os.SEEK_END)
        return fh.read(1) != b"\n"


class JournalContents(NamedTuple):
    header: dict
    events: List[dict]
    rejected: List[dict]     # {"rejected": seq, "status", "error", "message", "time"}, in order


def load_journal(path) -> JournalContents:
    """A journal's header, events and rejection marks; a torn line (power cut mid-write) is skipped."""
    header, events, rejected = {}, [], []
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh):
            try:
                obj = json.loads(line)
            except ValueError:
                log.warning("%s line %d is not JSON, skipped", path, n + 1)
                continue
            if n == 0 and isinstance(obj, dict) and "journal" in obj:
                header = obj
            elif isinstance(obj, dict) and "rejected" in obj:
                rejected.append(obj)
            elif isinstance(obj, dict) and "seq" in obj:
                events.append(obj)
    return JournalContents(header, events, rejected)


def read_journal(path) -> Tuple[dict, List[dict]]:
    """(header, events) of a journal: rejection marks are not events (load_journal has them)."""
    contents = load_journal(path)
    for mark in contents.rejected:
        log.warning("%s: the server rejected event %s (HTTP %s %s: %s)", path, mark.get("rejected"),
                    mark.get("status"), mark.get("error"), mark.get("message"))
    return contents.header, contents.events


# ---------------------------------------------------------------------- the sending rules

# Replies that mean "try again later", like no answer at all.
RETRY_LATER = (408, 429)
# Refusals of the token or the attempt: no later post can succeed (the callers stop).
STOPPING = (401, 403, 409)
# A connection cut while sending a body this big may be a server refusing it unread (an
# unanswered 413): the next posts are made smaller, down to this size, and nothing is dropped.
CUT_OFF_FLOOR_BYTES = 64 * 1024
_CUT_OFF = ("Broken pipe", "Connection reset", "Connection aborted",
            "closed connection without response")


def event_bytes(event) -> int:
    """The size of `event` in a post's body (the client's JSON: compact, ASCII)."""
    return len(json.dumps(event, separators=(",", ":")))


class Outbox:
    """The one implementation of "send these events under the rules".

    The caller owns the backlog (a list of event dicts in seq order) and loops:
    `batch = outbox.next_batch(backlog)`, `settled, reply = outbox.post(batch)`,
    then removes the first `settled` events of the backlog. The sender thread does
    that with a lock, backoff and heartbeats; `replay_journal` in a plain loop.
    """

    def __init__(self, client: ServerClient, job_id, *, max_events=MAX_BATCH,
                 max_bytes=MAX_BATCH_BYTES,
                 on_rejected: Callable[[dict], None] = lambda record: None, clock=time.time):
        self.client = client
        self.path = f"/jobs/{job_id}/events"
        self.max_events = max_events
        self.max_bytes = max_bytes            # lowered by a 413 (or a cut-off big post), for good
        self.on_rejected = on_rejected
        self.clock = clock
        self.accepted = self.duplicates = self.coalesced = 0
        self.rejected: List[dict] = []
        self._split = None                    # while isolating a refused event: events per post ...
        self._split_until = 0                 # ... up to this seq

    def coalesce(self, backlog: list) -> int:
        """Remove, in place, each heartbeat directly followed by another; return how many."""
        keep = [e for e, after in zip(backlog, backlog[1:] + [None])
                if not (e.get("kind") == "heartbeat" and after is not None
                        and after.get("kind") == "heartbeat")]
        dropped = len(backlog) - len(keep)
        if dropped:
            backlog[:] = keep
            self.coalesced += dropped
        return dropped

    def next_batch(self, backlog: list) -> list:
        """Coalesce `backlog`, then return its longest head within the limits (one event at least)."""
        self.coalesce(backlog)
        if self._split is not None and (not backlog or backlog[0]["seq"] > self._split_until):
            self._split = None
        most = min(self.max_events, self._split or self.max_events)
        batch, size = [], 2                   # "[" and "]"
        for event in backlog[:most]:
            grown = size + event_bytes(event) + (1 if batch else 0)
            if batch and grown > self.max_bytes:
                break
            batch.append(event)
            size = grown
        return batch

    def post(self, batch: list) -> Tuple[int, Optional[dict]]:
        """Post `batch`; return (how many of its first events are settled, the reply or None).

        Settled: acknowledged (the reply is then the server's) or rejected and marked.
        0 settled: the batch was split; build the next one. Raises ServerUnreachable
        (also for 408/429: retry later) and ServerRefused for 401/403/409 (stop).
        """
        try:
            reply = self.client.post(self.path, batch)
        except ServerUnreachable as exc:
            self._maybe_cut_off(batch, exc)
            raise
        except ServerRefused as exc:
            if exc.status in RETRY_LATER:
                raise ServerUnreachable(str(exc), exc.status) from None
            if exc.status in STOPPING:
                raise
            return self._refused(batch, exc), None
        reply = reply if isinstance(reply, dict) else {}
        self.accepted += int(reply.get("accepted") or 0)
        self.duplicates += int(reply.get("duplicates") or 0)
        return len(batch), reply

    def _refused(self, batch, exc) -> int:
        first, last = batch[0]["seq"], batch[-1]["seq"]
        if len(batch) > 1:
            if exc.status == 413:
                size = len(json.dumps(batch, separators=(",", ":")))
                self.max_bytes = min(self.max_bytes, size // 2)
                log.warning("server refused %d event(s) (seq %s-%s, %d bytes) as too large: "
                            "at most %d bytes per post from now on", len(batch), first, last,
                            size, self.max_bytes)
            else:
                self._split, self._split_until = max(1, len(batch) // 2), last
                log.warning("server refused %d event(s) (seq %s-%s): %s; splitting to find "
                            "the refused one(s)", len(batch), first, last, exc)
            return 0
        record = {"rejected": first, "status": exc.status, "error": exc.error,
                  "message": exc.message, "time": round(self.clock(), 3)}
        log.error("server rejected event %s (%s): marked in the journal, the rest go on",
                  first, exc)
        self.rejected.append(record)
        self.on_rejected(record)
        return 1

    def _maybe_cut_off(self, batch, exc):
        if len(batch) < 2 or not any(text in str(exc) for text in _CUT_OFF):
            return
        size = len(json.dumps(batch, separators=(",", ":")))
        if size > CUT_OFF_FLOOR_BYTES:
            self.max_bytes = max(CUT_OFF_FLOOR_BYTES, min(self.max_bytes, size // 2))
            log.warning("connection cut while posting %d bytes (%s): at most %d bytes per post "
                        "from now on", size, exc, self.max_bytes)


def _finite_metrics(metrics):
    """Numbers the events schema takes (a NaN or an infinity would make the event malformed)."""
    return {k: v for k, v in metrics.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)
            and math.isfinite(v) and abs(v) <= 1e18}


def _clean(text):
    """A string the events schema takes: no NUL, at most 4096 characters."""
    return text.replace("\x00", "\ufffd")[:4096]


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
        self._cond = threading.Condition(threading.RLock())
        self.outbox = Outbox(client, desc.job.id, max_events=self.config.batch,
                             max_bytes=self.config.batch_bytes, on_rejected=self._mark_rejected,
                             clock=clock)
        self.superseded = False      # the server refused this attempt (409)
        self.refused: Optional[str] = None   # a permanent refusal (401/403): sending stopped
        self.command: Optional[str] = None
        self.sent = 0                # events the server acknowledged
        self.step_name: Optional[str] = None
        self.final_seq: Optional[int] = None
        self.final_delivered = False  # the server acknowledged the final event
        self._pending: List[dict] = []
        self._closing = False
        self._close_at = float("inf")
        self._next_heartbeat = time.monotonic() + self.config.heartbeat_s
        self._thread = threading.Thread(target=self._run, name="severus-sender", daemon=True)

    # ------------------------------------------------------------------ events

    def start(self):
        self._thread.start()
        return self

    def _emit(self, status, kind, message="", code=None, report=None, with_probe=True, ack=None,
              sample=None):
        # `sample`: (metrics, tail) of the event's own, else the probe's now (with_probe) or none.
        metrics, tail = sample if sample is not None else (self.probe() if with_probe else ({}, []))
        with self._cond:
            event = Event(attempt=self.desc.job.attempt, seq=self.journal.last_seq + 1,
                          time=round(self.clock(), 3), status=str(status), kind=kind,
                          step=self.step_name, message=_clean(message), code=code,
                          metrics=_finite_metrics(metrics),
                          tail=tuple(_clean(line) for line in tail[-MAX_TAIL_LINES:]),
                          report=report, ack=ack).to_dict()
            event = self.journal.append(event)
            if kind == "final":
                self.final_seq = event["seq"]
            if not (self.superseded or self.refused):
                self._pending.append(event)
            self._next_heartbeat = time.monotonic() + self.config.heartbeat_s
            self._cond.notify_all()
        return event

    def step(self, step: Step, message=""):
        """A step change: also a heartbeat (metrics and stdout tail)."""
        self.step_name = str(step)
        return self._emit(Status.RUNNING, "step", message or step.label)

    def info(self, message, metrics=None, tail=None):
        """A fact for the job's history (access mode, fallback SE used, ...); a payload step's end
        carries that step's own metrics and stdout tail."""
        if metrics is None and tail is None:
            return self._emit(Status.RUNNING, "info", message, with_probe=False)
        return self._emit(Status.RUNNING, "info", message, sample=(metrics or {}, list(tail or ())))

    def heartbeat(self):
        return self._emit(Status.RUNNING, "heartbeat", "")

    def final(self, code, message, report):
        """The final event: status from the error table, the report attached."""
        return self._emit(lookup(code).status, "final", message, code=code, report=report)

    # ------------------------------------------------------------------ delivery

    def close(self, deadline_s=None) -> bool:
        """Wait until every event is sent or `deadline_s` passed.

        True when the server acknowledged the final event (accepted or duplicate); without a
        final event, when every event was acknowledged. A rejected final is not delivered.
        """
        if deadline_s is None:
            deadline_s = self.config.final_deadline_s
        with self._cond:
            self._closing = True
            self._close_at = time.monotonic() + deadline_s
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(deadline_s + self.client.timeout + 1)
        with self._cond:
            if self.final_seq is not None:
                delivered = self.final_delivered
            else:
                delivered = not (self._pending or self.outbox.rejected or self.superseded
                                 or self.refused)
            self.journal.close()
        return delivered

    @property
    def backlog(self):
        with self._cond:
            return len(self._pending)

    @property
    def rejected(self) -> List[dict]:
        """The rejection marks of this run (also in the journal)."""
        return list(self.outbox.rejected)

    def _mark_rejected(self, record):
        with self._cond:
            self.journal.mark_rejected(record)

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
                    return self.outbox.next_batch(self._pending)
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
                settled, reply = self.outbox.post(batch)
            except ServerUnreachable as exc:
                log.info("server unreachable (%s); %d event(s) kept, retry in %.0f s",
                         exc, self.backlog, delay)
                retry_at = time.monotonic() + delay
                delay = min(delay * 2, self.config.backoff_max_s)
                continue
            except ServerRefused as exc:
                self._stopped(exc)
                continue
            # The server answered: a split batch or a rejection goes on at once.
            delay, retry_at = self.config.backoff_s, 0.0
            with self._cond:
                del self._pending[:settled]
                if reply is not None:
                    self.sent += settled
                    if self.final_seq is not None and any(
                            e["seq"] == self.final_seq for e in batch[:settled]):
                        self.final_delivered = True
                self._cond.notify_all()
            if reply is not None:
                self._command(reply.get("command"))

    def _command(self, command):
        """The first kill: acknowledged with an event, then the job is stopped; repeats ignored."""
        if command != "kill":
            return
        with self._cond:
            if self.command is not None:
                return
            self.command = command
            acknowledge = self.final_seq is None    # after the final the attempt is over anyway
        log.warning("the server asked to kill this job")
        if acknowledge:
            self._emit(Status.RUNNING, "info", "kill command received", with_probe=False, ack="kill")
        self.on_stop(KilledByManager("kill command from the server"))

    def _stopped(self, exc):
        """401/403/409: no post of this attempt can succeed; the journal keeps everything."""
        if exc.status == 409:
            log.error("attempt superseded: %s", exc)
            with self._cond:
                self.superseded = True
                self._pending.clear()
                self._cond.notify_all()
            self.on_stop(AttemptSuperseded(exc.message or "the server refused this attempt"))
        else:
            log.error("server refused our token: %s", exc)
            with self._cond:
                self.refused = str(exc)
                self._pending.clear()
                self._cond.notify_all()


@dataclass
class ReplayResult:
    """What `replay_journal` did."""
    accepted: int = 0            # events the server did not have
    duplicates: int = 0          # events it had already
    coalesced: int = 0           # heartbeats not sent (a later one of the same run was)
    rejected: List[dict] = field(default_factory=list)   # rejection marks of this replay
    final_seq: Optional[int] = None
    final_delivered: bool = False

    @property
    def delivered(self) -> bool:
        """The server holds the final event (or, without one, every event was acknowledged)."""
        return self.final_delivered if self.final_seq is not None else not self.rejected


def replay_journal(path, client: ServerClient, job_id=None, *, max_events=MAX_BATCH,
                   max_bytes=MAX_BATCH_BYTES) -> ReplayResult:
    """Deliver a journal's events under the Outbox rules; raise ServerError if that cannot go on.

    Every event is sent again, also those the journal marks rejected (a server fixed or with
    a larger limit may take them; the server is idempotent). A new rejection is marked in the
    journal, unless the same mark (seq, status, error) is already there.
    """
    path = Path(path)
    header, events, marks = load_journal(path)
    job_id = job_id or header.get("job")
    if not job_id:
        raise ValueError(f"{path} has no journal header: give the job id")
    known = {(m.get("rejected"), m.get("status"), m.get("error")) for m in marks}

    def mark(record):
        if (record["rejected"], record["status"], record["error"]) in known:
            return
        try:
            torn = _torn(path)
            with open(path, "a", encoding="utf-8") as fh:
                fh.write(("\n" if torn else "") + json.dumps(record, separators=(",", ":")) + "\n")
                fh.flush()
                os.fsync(fh.fileno())
        except OSError as exc:
            log.warning("cannot mark the rejection of event %s in %s: %s",
                        record["rejected"], path, exc)

    outbox = Outbox(client, job_id, max_events=max_events, max_bytes=max_bytes, on_rejected=mark)
    result = ReplayResult()
    finals = [e["seq"] for e in events if e.get("kind") == "final"]
    result.final_seq = finals[-1] if finals else None
    backlog = list(events)
    while backlog:
        batch = outbox.next_batch(backlog)
        settled, reply = outbox.post(batch)
        if reply is not None and any(e["seq"] == result.final_seq for e in batch[:settled]):
            result.final_delivered = True
        del backlog[:settled]
    result.accepted, result.duplicates = outbox.accepted, outbox.duplicates
    result.coalesced, result.rejected = outbox.coalesced, list(outbox.rejected)
    return result
