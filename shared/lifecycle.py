"""The job life cycle (seed 003): every status, and what moves a job from one to another.

One table, TRANSITIONS, says for each trigger which statuses it may start
from and where it takes the job. The server applies every change of a job's
status through `move()`; nothing else decides whether a change is legal.

    prepared ──submit──► submitted ──report──► running ──finish──► done | failed | sys-failed | timeout
       │  ▲                  │                    │ ├──reap──────► timeout (100)
       │  │                  │                    │ └──batch-end─► sys-failed
       │  └──────resubmit────┴── from failed, sys-failed, timeout only
       └──kill──► sys-failed (062)      kill on submitted/running: the status stays,
                                        the attempt gets the `kill` command
    submitted ──batch-start──► running   the batch system started it (the batch poller saw it)
    failed | sys-failed | timeout ──retry──► prepared   the server's own resubmit: an automatic retry
                                                     (server/retries.py says when)

`batch-start` comes before the wrapper's first report, which then is a plain `report`
(running -> running).

A wrapper may report before its backend said "submitted" (a fast job), so
`report` and `finish` start from prepared too. A final status never changes
but by `resubmit` or `retry`, which start a new attempt.
"""
from enum import Enum

from .states import FINAL_STATUSES, Status

P, S, R = Status.PREPARED, Status.SUBMITTED, Status.RUNNING
DONE, FAILED, SYS_FAILED, TIMEOUT = Status.DONE, Status.FAILED, Status.SYS_FAILED, Status.TIMEOUT


class Trigger(str, Enum):
    SUBMIT = "submit"          # a backend took the job
    REPORT = "report"          # a running event of the current attempt
    FINISH = "finish"          # the current attempt's final event
    KILL = "kill"              # a manager's kill
    RESUBMIT = "resubmit"      # a manager's resubmit: a new attempt
    REAP = "reap"              # heartbeats lost (code 100)
    BATCH_END = "batch-end"    # the batch job ended without a final report
    BATCH_START = "batch-start"  # the batch system started the job's batch job (the poller saw it)
    RETRY = "retry"            # the server's own resubmit of a retryable failure: a new attempt

    def __str__(self):
        return self.value


# trigger -> {from status: the statuses it may go to}; a status absent is a refusal.
TRANSITIONS = {
    Trigger.SUBMIT: {P: {S}},
    Trigger.REPORT: {P: {R}, S: {R}, R: {R}},
    Trigger.FINISH: {P: FINAL_STATUSES, S: FINAL_STATUSES, R: FINAL_STATUSES},
    Trigger.KILL: {P: {SYS_FAILED}, S: {S}, R: {R}},
    Trigger.RESUBMIT: {FAILED: {P}, SYS_FAILED: {P}, TIMEOUT: {P}},
    Trigger.RETRY: {FAILED: {P}, SYS_FAILED: {P}, TIMEOUT: {P}},
    Trigger.REAP: {R: {TIMEOUT}},
    Trigger.BATCH_END: {S: {SYS_FAILED}, R: {SYS_FAILED}},
    Trigger.BATCH_START: {S: {R}},
}

# Commands a manager's action leaves for the attempt's wrapper; repeated in every reply
# to its reports until an event acknowledges it (`ack`) or the attempt ends.
COMMANDS = ("kill",)


class IllegalTransition(ValueError):
    """The trigger is not allowed from the job's status; the message says why, in one line."""

    def __init__(self, status, trigger):
        self.status, self.trigger = Status(status), Trigger(trigger)
        allowed = ", ".join(s.value for s in Status if s in TRANSITIONS[self.trigger])
        super().__init__(f"{self.trigger} is allowed only from {allowed}, and the job is {self.status}")


def allowed_from(trigger):
    """The statuses `trigger` may start from, as plain strings (for SQL conditions)."""
    return tuple(sorted(s.value for s in TRANSITIONS[Trigger(trigger)]))


def move(status, trigger, to=None):
    """The status a job in `status` goes to on `trigger` (`to` chooses among several, e.g. the
    final status a wrapper reports); raise IllegalTransition when the table has no such move."""
    targets = TRANSITIONS[Trigger(trigger)].get(Status(status))
    if targets is None:
        raise IllegalTransition(status, trigger)
    if to is None:
        if len(targets) != 1:
            raise ValueError(f"{trigger} from {status} needs a target among {sorted(t.value for t in targets)}")
        return next(iter(targets)).value
    if Status(to) not in targets:
        raise IllegalTransition(status, trigger)
    return Status(to).value


def may(status, trigger):
    """True when `trigger` is allowed from `status`."""
    return Status(status) in TRANSITIONS[Trigger(trigger)]


FINAL = frozenset(s.value for s in FINAL_STATUSES)
