"""Job statuses and the wrapper's running steps (CONTRACT §5)."""
from enum import Enum


class Status(str, Enum):
    PREPARED = "prepared"
    SUBMITTED = "submitted"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    SYS_FAILED = "sys-failed"
    TIMEOUT = "timeout"

    def __str__(self):
        return self.value

    @property
    def final(self):
        return self in FINAL_STATUSES


FINAL_STATUSES = frozenset({Status.DONE, Status.FAILED, Status.SYS_FAILED, Status.TIMEOUT})
ALL_STATUSES = tuple(Status)
# A wrapper may report these; `prepared`/`submitted` belong to the server.
REPORTABLE_STATUSES = frozenset({Status.RUNNING}) | FINAL_STATUSES


class Step(str, Enum):
    """What a running job is doing; shown as "RUNNING-02 copying software"."""
    NODE_CHECKS = "RUNNING-01"
    SOFTWARE = "RUNNING-02"
    INPUTS = "RUNNING-03"
    PAYLOAD = "RUNNING-04"
    OUTPUTS = "RUNNING-05"
    REGISTER = "RUNNING-06"
    LOG = "RUNNING-07"

    def __str__(self):
        return self.value

    @property
    def label(self):
        return STEP_LABELS[self]


STEP_LABELS = {
    Step.NODE_CHECKS: "node checks",
    Step.SOFTWARE: "copying software",
    Step.INPUTS: "copying input files",
    Step.PAYLOAD: "executing payload",
    Step.OUTPUTS: "copying output files",
    Step.REGISTER: "registering outputs",
    Step.LOG: "uploading log",
}
