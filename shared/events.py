"""The report message: what a wrapper sends to POST /jobs/<id>/events.

Every event carries its idempotency key `(attempt, seq)`: the wrapper numbers
events from 1 within an attempt and journals them before sending, so a replay
after a lost reply is harmless. A body is one event or a list of them.
"""
import json
from dataclasses import dataclass, field, asdict
from typing import Mapping, Optional, Tuple

from . import schema as s
from .errors import CODES
from .lifecycle import COMMANDS
from .states import Step, REPORTABLE_STATUSES

KINDS = ("step", "heartbeat", "final", "info")
MAX_BATCH = 1000
# A wrapper's events post carries at most this many bytes (the server takes more: SBK_MAX_BODY_BYTES);
# one event is at most ~660 KiB (a 256 KiB report, 100 tail lines of 4 KiB), so it always fits alone.
MAX_BATCH_BYTES = 1024 * 1024
MAX_REPORT_BYTES = 256 * 1024
MAX_TAIL_LINES = 100
# Metrics a running event's probe carries while copies run (a stage-in, a stage-out): the bytes the
# running copies have moved, their sizes (0: unknown) and their rate in MB/s since they began. The
# server's job view shows them (server/jobs.py transfer_progress); absent when no copy runs.
TRANSFER_BYTES, TRANSFER_TOTAL_BYTES, TRANSFER_RATE = "transfer_bytes", "transfer_total_bytes", "transfer_rate_mb_s"


@dataclass(frozen=True)
class Event:
    attempt: int
    seq: int
    time: float                     # the wrapper's clock, Unix seconds
    status: str                     # running | done | failed | sys-failed | timeout
    kind: str = "step"              # step | heartbeat | final | info
    step: Optional[str] = None      # RUNNING-01 ... RUNNING-07
    message: str = ""
    code: Optional[int] = None      # three-digit error code, finals only
    metrics: Mapping[str, float] = field(default_factory=dict)
    tail: Tuple[str, ...] = ()      # last lines of the payload's stdout
    report: Optional[Mapping] = None  # the final report (finals only)
    ack: Optional[str] = None       # a command from a reply that the wrapper acts on ("kill")

    @property
    def key(self):
        return (self.attempt, self.seq)

    def to_dict(self):
        d = asdict(self)
        d["tail"] = list(self.tail)
        return {k: v for k, v in d.items() if v not in (None, {}, [])}


def parse_events(body):
    """Validate one event or a list of events; raise SchemaError."""
    items = body if isinstance(body, list) else [body]
    if not items:
        raise s.SchemaError("an empty list of events")
    if len(items) > MAX_BATCH:
        raise s.SchemaError(f"more than {MAX_BATCH} events in one request")
    return [parse_event(item, f"[{n}]." if isinstance(body, list) else "")
            for n, item in enumerate(items)]


# parse_event's tables, built once: it runs for every event a server receives (the ingest hot path).
FIELDS = frozenset(("attempt", "seq", "time", "status", "kind", "step", "message", "code", "metrics", "tail",
                    "report", "ack"))
_STATUSES = frozenset(st.value for st in REPORTABLE_STATUSES)
_FINAL = frozenset(st.value for st in REPORTABLE_STATUSES if st.final)
_STEPS = frozenset(st.value for st in Step)


def parse_event(d, where=""):
    """One event, checked field by field in a fixed order (the first fault is the one named).

    A value of the common shape (a str of the table, an int or a float within its bounds) is taken
    as it is; anything else goes through shared/schema.py's reader, which accepts it or names the
    fault. The two take and refuse the same values (tests/test_shared.py, test_schema_parity.py).
    """
    if not isinstance(d, dict):
        raise s.SchemaError(f"event {where or ''}must be a JSON object".replace(" .", " "))
    if not FIELDS.issuperset(d):
        s.refuse_unknown(d, FIELDS, where)
    status = d.get("status")
    if type(status) is not str or status not in _STATUSES:
        status = s.text(d, "status", where)
        if status not in _STATUSES:
            raise s.SchemaError(f"'{where}status' must be one of running, done, failed, sys-failed, timeout")
    kind = d.get("kind", "step")
    if type(kind) is not str or kind not in KINDS:
        kind = s.text(d, "kind", where, default="step")
        if kind not in KINDS:
            raise s.SchemaError(f"'{where}kind' must be one of {', '.join(KINDS)}")
    step = d.get("step")
    if step is not None and (type(step) is not str or step not in _STEPS):   # a list or object: no hash
        raise s.SchemaError(f"'{where}step' must be one of RUNNING-01 ... RUNNING-07")
    code = d.get("code")
    if code is not None:
        code = s.integer(d, "code", where, hi=999)
        if code not in CODES:
            raise s.SchemaError(f"'{where}code' {code} is not a known error code")
    final = status in _FINAL
    if (kind == "final") != final:
        raise s.SchemaError(f"'{where}kind' final goes with a final status, and only with one")
    if final and code is None:
        raise s.SchemaError(f"'{where}code' is required with a final status")
    metrics = d.get("metrics") or {}
    if not isinstance(metrics, dict) or len(metrics) > 100:
        raise s.SchemaError(f"'{where}metrics' must be an object of at most 100 numbers")
    for k, v in metrics.items():
        # in bounds means finite too (NaN and infinities compare outside); bool is not exactly int
        if not ((type(v) is float or type(v) is int) and -1e18 <= v <= 1e18):
            s.number(metrics, k, f"{where}metrics.", lo=-1e18, hi=1e18)
    tail = s.text_list(d, "tail", where, default=(), max_items=MAX_TAIL_LINES, max_len=4096,
                       empty=True) if "tail" in d else ()
    report = d.get("report")
    if report is not None:
        if not isinstance(report, dict):
            raise s.SchemaError(f"'{where}report' must be an object")
        if len(json.dumps(report)) > MAX_REPORT_BYTES:
            raise s.SchemaError(f"'{where}report' is larger than {MAX_REPORT_BYTES} bytes")
    ack = d.get("ack")
    if ack is not None and ack not in COMMANDS:
        raise s.SchemaError(f"'{where}ack' must be one of {', '.join(COMMANDS)}")
    attempt = d.get("attempt")
    if not (type(attempt) is int and 1 <= attempt <= 100000):
        attempt = s.integer(d, "attempt", where, lo=1, hi=100000)
    seq = d.get("seq")
    if not (type(seq) is int and 1 <= seq <= s.MAX_INT):
        seq = s.integer(d, "seq", where, lo=1)
    time = d.get("time")
    if (type(time) is float or type(time) is int) and 0 <= time <= 1e11:
        time = float(time)
    else:
        time = s.number(d, "time", where, lo=0, hi=1e11)
    message = s.text(d, "message", where, default="", max_len=4096, empty=True) if "message" in d else ""
    return Event(attempt=attempt, seq=seq, time=time, status=status, kind=kind, step=step, message=message,
                 code=code, metrics=dict(metrics), tail=tail, report=report, ack=ack)
