"""Jobs (the monitor's list, a job, events, the fence, removals, kill, resubmit, logs) and the file catalog."""
from typing import Any, Dict, List, Literal, Optional

from pydantic import Field

from .base import BACKEND, COMMAND, INPUT_MODE, STATUS, Body, ErrorCode, Int, Query, Reply, Str


class JobQuery(Query):
    """The job monitor's filters (server/monitor.py). `param.<Name>=v1,v2` (not listed: its name is the
    parameter's) keeps the jobs whose job parameter <Name> has one of the values; a name no session
    defines is a 400."""
    user: Optional[str] = Str(64, default=None)
    production: Optional[str] = Field(None, description="names, comma-separated")
    request: Optional[str] = Field(None, description="ids, comma-separated")
    runnum_from: Optional[int] = Int(default=None)
    runnum_to: Optional[int] = Int(default=None)
    status: Optional[str] = Field(None, description="statuses, comma-separated")
    error_code: Optional[int] = Int(0, 999, default=None)
    site: Optional[str] = Field(None, description="names, comma-separated")
    last: Optional[int] = Int(1, 100_000, default=None)
    older_than_hours: Optional[float] = Field(None, ge=0, le=1e6)
    prepared_from: Optional[str] = Str(64, default=None, description="ISO 8601 date or time")
    prepared_to: Optional[str] = Str(64, default=None, description="ISO 8601 date or time")
    q: Optional[str] = Str(128, default=None)
    retried: Optional[str] = Str(8, default=None, description="true: the jobs the server retried automatically "
                                                               "at least once; false: the others")


class JobListQuery(JobQuery):
    sort: Optional[str] = Str(32, default=None)
    page: Optional[int] = Int(1, 10 ** 6, default=None)
    per_page: Optional[int] = Int(1, 1000, default=None)
    after: Optional[str] = Str(256, default=None, description="the previous page's `next` (keyset paging: sorts "
                                                              "on runnum, id, status, site, prepared_at, events)")


class JobSummary(Reply):
    """A job as the job monitor lists it (server/jobs.py job_summary)."""
    id: int
    runnum: int
    events: int
    status: STATUS
    step: Optional[str]
    message: Optional[str]
    error_code: Optional[int]
    site: str
    user: Optional[str]
    production: str
    request: int
    session: str
    parameters: Dict[str, str]
    test: bool
    log_to_db: bool
    gjid: Optional[str]
    backend: Optional[str]
    attempt: int
    wct: Optional[float]
    prepared_at: Optional[str]
    submitted_at: Optional[str]
    started_at: Optional[str]
    finished_at: Optional[str]
    last_heartbeat: Optional[str]
    # server/retries.py: when the server retries this final job (null: it will not); its automatic retries
    retry_at: Optional[str]
    retries: int


class JobPage(Reply):
    jobs: List[JobSummary]
    # exact up to 10,000 matches on PostgreSQL, 100,000 on SQLite (1,000 for a text term in over 10,000
    # jobs), then an estimate: exact counts of 100k+ rows cost 20-100+ ms, over budget
    total: int
    total_is_estimate: bool
    page: Optional[int]
    per_page: int
    next: Optional[str] = Field(description="pass it as `after` for the following page (null: the last page)")


class HistoryEvent(Reply):
    attempt: int
    seq: int
    time: Optional[str]
    received_at: Optional[str]
    status: str
    kind: str
    step: Optional[str]
    message: Optional[str]
    code: Optional[int]
    metrics: Dict[str, float]
    tail: List[str]


class JobOutput(Reply):
    lfn: str
    size: int
    adler32: str
    site: str
    surl: str
    attempt: Optional[int]


class JobLogLink(Reply):
    attempt: int
    size: int
    url: str


class JobInput(Reply):
    mode: INPUT_MODE
    paths: List[str]
    split: bool


class Removal(Reply):
    id: int
    attempt: Optional[int]
    site: str
    surl: str
    reason: Optional[str]
    state: Literal["pending", "done", "kept", "manual"]
    tries: int
    last_error: Optional[str]
    created_at: Optional[str]
    done_at: Optional[str]


class AttemptInfo(Reply):
    number: int
    automatic: bool
    created_at: Optional[str]


class TransferProgress(Reply):
    """A running job's copies as its last heartbeat told them (server/jobs.py transfer_progress)."""
    bytes: int
    total_bytes: Optional[int] = Field(description="null: unknown")
    rate_mb_s: Optional[float]
    step: Optional[str]
    at: Optional[str]


class Job(JobSummary):
    """A job with its history, outputs, logs, report, input, removals, times and retries."""
    history: List[HistoryEvent]
    outputs: List[JobOutput]
    logs: List[JobLogLink]
    log: Optional[str] = Field(description="the newest log's URL")
    report: Optional[Dict[str, Any]]
    input: JobInput
    removals: List[Removal]
    transfer_progress: Optional[TransferProgress] = Field(None, description="null: the job is not running or "
                                                                            "no copy was running")
    queue_s: Optional[float]
    run_s: Optional[float]
    max_attempts: int
    attempts: List[AttemptInfo]
    error: Optional[ErrorCode] = Field(None, description="the error code's entry, when the job has one")


class EventsReply(Reply):
    accepted: int
    duplicates: int
    status: STATUS
    command: COMMAND = Field(description="repeated in every reply until an event acknowledges it (`ack`) or "
                                         "the attempt ends")


class AttemptState(Reply):
    """The fence: 200 only for the current attempt of a job that has not ended (409 otherwise)."""
    job: int
    attempt: int
    status: STATUS
    last_seq: int
    command: COMMAND


class RemovalIn(Body):
    site: str
    surl: str
    lfn: str = None
    reason: str = Str(255, default=None)


class RemovalsFiled(Reply):
    filed: int
    asked: int


class Resubmit(Body):
    backend: Optional[BACKEND] = None
    dry_run: bool = None


class KillReply(Reply):
    id: int
    status: STATUS
    command: COMMAND
    attempt: Optional[int] = None
    retry_cancelled: Optional[bool] = None
    cancelled: Optional[str] = Field(None, description="the batch job cancelled (null: cancelling failed)")
    cancel_error: Optional[str] = None


class SubmittedBunch(Reply):
    site: str
    jobs: List[int]
    gjids: List[str]


class BunchError(Reply):
    site: str
    jobs: List[int]
    error: str


class Refused(Reply):
    id: int
    error: str
    message: str


class ResubmittedJob(Reply):
    id: int
    status: STATUS
    attempt: int


class BatchReply(Reply):
    """What a backend did with the jobs (when a `backend` was given)."""
    backend: Optional[str] = None
    submitted: Optional[Dict[str, str]] = Field(None, description="job id: batch job id")
    bunches: Optional[List[SubmittedBunch]] = None
    errors: Optional[List[BunchError]] = None


class ResubmitOne(ResubmittedJob, BatchReply):
    pass


class ResubmitMany(BatchReply):
    total: int
    dry_run: Optional[bool] = None
    jobs: Optional[List[int]] = Field(None, description="a dry run's job ids")
    resubmitted: Optional[List[ResubmittedJob]] = None
    refused: Optional[List[Refused]] = None


class LogQuery(Query):
    attempt: Optional[int] = Int(1, 100_000, default=None)


class LogStored(Reply):
    stored: int


# ---------------------------------------------------------------------- the file catalog

class Replica(Body):
    lfn: str = Str(1024)
    site: str = Str(64)
    surl: str = Str(2048)
    size: int = Int()
    adler32: str = Field(pattern="^[0-9a-f]{8}$")


class ReplicaAt(Reply):
    site: str
    surl: str


class CatalogFile(Reply):
    lfn: str
    size: int
    adler32: str
    replicas: List[ReplicaAt]


class CatalogFiles(Reply):
    files: List[CatalogFile]
    created: Optional[int] = Field(None, description="how many replicas were new")


class Registered(Reply):
    """One replica: its file; a list: {files, created}."""
    lfn: Optional[str] = None
    size: Optional[int] = None
    adler32: Optional[str] = None
    replicas: Optional[List[ReplicaAt]] = None
    files: Optional[List[CatalogFile]] = None
    created: Optional[int] = Field(None, description="how many replicas were new")


class LfnQuery(Query):
    lfn: Optional[str] = Str(1024, default=None)


class ReplicaQuery(LfnQuery):
    site: Optional[str] = Str(64, default=None)


class DirQuery(Query):
    dir: Optional[str] = Str(1024, default=None)


class LfnSite(Reply):
    lfn: str
    site: str


class ReplicaDeleted(Reply):
    deleted: LfnSite
