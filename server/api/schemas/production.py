"""Sessions (parameters, software, step templates), productions, requests and submissions."""
from typing import Any, Dict, List, Literal, Optional, Union

from pydantic import ConfigDict, Field

from shared.schema import MAX_INT

from .base import BACKEND, INPUT_MODE, Body, Int, Name, Query, Reply, Str
from .jobs import BatchReply


class ParameterIn(Body):
    """Replacing the allowed values of a defined parameter: 409 value-in-use when a request of the session
    has a value left out (an empty list allows any value)."""
    name: str
    allowed: List[str] = None


class SessionIn(Body):
    name: str = Name()
    description: str = None
    payload_module: str = Name(default=None)
    container_image: str = Field(None, description="the image the session's payloads run in "
                                                             "(absolute path; empty or absent: the site decides)")
    parameters: List[ParameterIn] = None


class SessionPatch(Body):
    description: str = None
    payload_module: str = None
    container_image: str = None


class StepTemplateIn(Body):
    """A step template: a module instance with default parameters and arguments."""
    name: str
    module: str
    parameters: Dict[str, str] = None
    args: List[str] = None


class SoftwareFields(Body):
    """A release is a tarball (lfn + adler32) or a read-only shared area (path, as on CVMFS): 400 for both."""
    lfn: str = None
    adler32: str = None
    path: str = None
    env: Dict[str, str] = None


class SoftwareIn(SoftwareFields):
    name: str
    version: str
    revision: int = Int(default=None)
    workdir: str
    exe: str


class SoftwarePatch(SoftwareFields):
    name: str = None
    version: str = None
    revision: int = Int(default=None)
    workdir: str = None
    exe: str = None
    retired: bool = None


class Software(Reply):
    id: int
    session: str
    name: str
    version: str
    revision: int
    lfn: Optional[str]
    adler32: Optional[str]
    path: Optional[str]
    workdir: str
    exe: str
    env: Dict[str, str]
    retired: bool
    created_at: Optional[str]


class Parameter(Reply):
    name: str
    allowed: List[str]


class StepTemplate(Reply):
    name: str
    module: str
    parameters: Dict[str, str]
    args: List[str]


class Session(Reply):
    name: str
    description: Optional[str]
    payload_module: Optional[str]
    container_image: Optional[str]
    created_at: Optional[str]
    parameters: List[Parameter]
    software: List[Software]
    steps: List[StepTemplate]


class Sessions(Reply):
    sessions: List[Session]


# ---------------------------------------------------------------------- productions

class ProductionIn(Body):
    name: str = Name(123, description="at most 123 characters: its twin is <name>_test")
    session: str = Str(64)
    version: str = Str(64)
    revision: Optional[int] = Int(0, 2 ** 31 - 1, default=None, description="none: the newest not retired")
    note: str = Str(255, default=None)


class ProductionPatch(Body):
    """A production's status is its _test twin's too (400 on the twin itself)."""
    status: Literal["open", "closed"] = None
    note: str = Str(255, default=None)


class ProductionQuery(Query):
    session: Optional[str] = Str(64, default=None)
    status: Optional[str] = Str(16, default=None)


class SoftwareRef(Reply):
    id: int
    name: str
    version: str
    revision: int


class Production(Reply):
    name: str
    session: str
    status: str
    test: bool
    twin: Optional[str]
    software: SoftwareRef
    note: Optional[str]
    requests: Dict[str, int] = Field(description="status: requests")
    jobs: Dict[str, int] = Field(description="status: jobs")
    created_by: Optional[str]
    created_at: Optional[str]


class Productions(Reply):
    productions: List[Production]


# ---------------------------------------------------------------------- requests

class StepChoice(Body):
    template: str
    parameters: Dict[str, str] = None


class Followup(Body):
    """The follow-up stage run on the request's outputs once its condition holds (null or {}: none)."""
    template: str = None
    condition: Literal["all", "fraction"] = None
    fraction: float = Field(None, ge=0, le=1)
    files_per_job: int = Int(default=None)
    patterns: List[str] = None


class RequestSettings(Body):
    """Settings other than note and priority change only while the request is open. output_sites: known
    sites only. The test request's directories: `same_output_dirs` true shares the request's; otherwise
    test_output_lfn / test_output_abs, or by default the request's with the production's name segment renamed
    to the twin's (400 when there is none), never the request's own."""
    priority: int = Int(0, 1000, default=None)
    min_runnum: int = Int(1, 2 ** 62, default=None)
    required_events: int = Int(0, 10 ** 15, default=None)
    events_per_job: int = Int(0, 10 ** 12, default=None)
    num_jobs: int = Int(0, 10 ** 7, default=None)
    event_time_s: float = Field(None, ge=0, le=1e7)
    max_wct_s: float = Field(None, ge=1, le=30 * 86400)
    max_rss_mb: float = Field(None, ge=0, le=1024 * 1024)
    stall_s: float = Field(None, ge=0, le=30 * 86400)
    cores: int = Int(1, 1024, default=None)
    memory_mb: float = Field(None, ge=0, le=1024 * 1024)
    input_mode: INPUT_MODE = None
    input_paths: List[str] = Field(None, max_length=10000)
    files_per_job: int = Int(0, 10000, default=None, description=(
        "each job gets the next N input files of a LIST or DIR request, the last the rest (0: not split)"))
    output_lfn: str = Str(1024, default=None)
    output_abs: str = Str(1024, default=None)
    output_sites: List[str] = Field(None, max_length=100)
    output_patterns: List[str] = Field(None, max_length=100)
    note: str = Str(255, default=None)
    steps: List[Union[str, StepChoice]] = Field(None, max_length=20, description=(
        "the session's step templates the jobs run, in order: names, or a name with parameter overrides"))
    followup: Optional[Followup] = None
    max_attempts: int = Int(1, 20, default=None, description="the retry policy (server/retries.py): "
                                                                       "attempts at most (1: no automatic retry)")
    retry_backoff_s: float = Field(None, ge=0, le=21600, description="the first back-off (doubling)")
    test_output_lfn: str = None
    test_output_abs: str = None
    same_output_dirs: bool = None


class RequestIn(RequestSettings):
    production: str
    from_: Optional[int] = Field(None, alias="from", ge=1, le=MAX_INT, description="copy this request's settings")
    parameters: Dict[str, str] = None


class RequestPatch(RequestSettings):
    status: Literal["open", "valid", "running", "closed"] = None


class RequestQuery(Query):
    production: Optional[str] = Str(128, default=None)
    status: Optional[str] = Str(16, default=None)
    limit: Optional[int] = Int(1, 10000, default=None)


class StageState(Reply):
    template: str
    condition: str
    fraction: float
    state: str
    jobs: Dict[str, int]
    waiting_for: str


class Request(Reply):
    id: int
    production: str
    parameters: Dict[str, str]
    status: str
    test_request: Optional[int]
    created_by: Optional[str]
    created_at: Optional[str]
    priority: int
    min_runnum: int
    required_events: int
    events_per_job: int
    num_jobs: int
    event_time_s: float
    max_wct_s: float
    max_rss_mb: float
    stall_s: float
    cores: int
    memory_mb: float
    input_mode: INPUT_MODE
    input_paths: List[str]
    files_per_job: int
    output_lfn: Optional[str]
    output_abs: Optional[str]
    output_sites: List[str]
    output_patterns: List[str]
    note: Optional[str]
    steps: List[Union[str, Dict[str, Any]]]
    followup: Optional[Dict[str, Any]]
    max_attempts: int
    retry_backoff_s: float
    test_output_lfn: Optional[str]
    test_output_abs: Optional[str]
    same_output_dirs: Optional[bool]
    jobs: Dict[str, int] = Field(description="status: jobs")
    stage: Optional[StageState]


class Requests(Reply):
    requests: List[Request]


class RequestDeleted(Reply):
    deleted: List[int]
    test_request_kept: Optional[int] = Field(description="the test request stays when it has jobs")


# ---------------------------------------------------------------------- submissions

class SubmissionBulk(Body):
    """A bulk names its request, or (test bulks only) the job parameters of a test request, created if
    missing; input_mode, input_paths and output_sites are that new request's and go only with `parameters`.
    `runs` may be left out on a split request's bulk: one job per pending slice."""
    request: Optional[int] = Int(1, default=None)
    parameters: Optional[Dict[str, str]] = None
    test: bool = None
    sites: List[str]
    runs: Optional[int] = Int(default=None)
    events: int = Int()
    log_to_db: bool = None
    input_mode: INPUT_MODE = None
    input_paths: List[str] = None
    output_sites: List[str] = None
    # server/splitting.py reads it (its messages name the element); the document says its shape
    split: Any = Field(None, description=(
        "a LIST request split by hand: each element (LFNs of the request's input) one job's inputs"),
        json_schema_extra=lambda schema: (schema.pop("default", None), schema.update(
            {"type": "array", "minItems": 1, "maxItems": 10000,
             "items": {"type": "array", "minItems": 1, "items": {"type": "string"}}})))
    repeat_slices: bool = Field(None, description="a split request: make jobs for slices already "
                                                            "given to jobs again (default: only the others)")


class Submission(Body):
    production: str
    dry_run: bool = None
    override_thresholds: bool = None
    backend: Optional[BACKEND] = None
    bulks: List[SubmissionBulk]


class PlanRow(Reply):
    site: str
    jobs: int
    first_runnum: int
    last_runnum: int
    events: int
    events_per_job: int
    bunches: int


class PlanSplit(Reply):
    by: str
    files_per_job: Optional[int]
    input_files: int
    slices: int
    left: int
    files_already_given: int
    repeat_slices: bool
    first_slices: List[List[str]]


class PlanSet(Reply):
    set: int
    request: Optional[int]
    production: str
    test: bool
    request_state: str = Field(description="exists, would be created (dry run) or created")
    parameters: Dict[str, str]
    input_mode: str
    input_paths: List[str]
    output_lfn: Optional[str]
    output_abs: Optional[str]
    output_sites: List[str]
    log_to_db: bool
    rows: List[PlanRow]
    split: Optional[PlanSplit]
    jobs: int
    events: int


class Plan(BatchReply):
    """The plan of a dry run (200), or the jobs prepared (201) and, with `backend`, submitted."""
    production: str
    software: str
    software_lfn: Optional[str]
    sets: List[PlanSet]
    refusals: List[str]
    total_jobs: int
    total_events: int
    dry_run: bool
    job_ids: List[int]
