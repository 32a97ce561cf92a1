"""The SBK4 model (seed 000) as peewee models bound to `db.database`.

Floats are DOUBLE PRECISION (peewee's FloatField is a 4-byte REAL on
PostgreSQL: Unix seconds would round to minutes). Times are naive UTC datetimes, except `Job.heartbeat_at` (Unix seconds) so the
reaper can compare `heartbeat_at + k * heartbeat_s` with now in plain SQL on
both SQLite and PostgreSQL.
"""
import datetime
import json

import peewee as pw
from peewee import JOIN, Case, fn  # noqa: F401  (re-exported: queries elsewhere use m.fn, m.JOIN, m.Case)

from .db import database

PRIVILEGES = ("create-productions", "create-requests", "shifter-submission",
              "expert-submission", "monitoring")
# The seed's groups and what they grant; `sbk init-db` keeps these rows present.
GROUP_PRIVILEGES = {
    "webui": ("monitoring",),
    "FastProdMgr": ("monitoring", "create-productions", "create-requests"),
    "FullProdMgr": ("monitoring", "create-productions", "create-requests"),
    "Shift": ("monitoring", "shifter-submission"),
    "Developer": PRIVILEGES,
}
REQUEST_STATUSES = ("open", "valid", "running", "closed")
PRODUCTION_STATUSES = ("open", "closed")


def utcnow():
    return datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)


def iso(value):
    """A stored time as ISO 8601 UTC text (None stays None)."""
    if value is None:
        return None
    if isinstance(value, (int, float)):
        value = datetime.datetime.fromtimestamp(value, datetime.timezone.utc).replace(tzinfo=None)
    return value.isoformat(timespec="seconds") + "Z"


def get_or_404(model, condition, what):
    """The one row matching `condition`, or ApiError 404 naming `what`."""
    from .errors import not_found   # errors imports nothing from models; keep models import-light
    row = model.get_or_none(condition)
    if row is None:
        raise not_found(f"{what} does not exist")
    return row


class JSONField(pw.TextField):
    """JSON stored as text, the same on SQLite and PostgreSQL."""

    def db_value(self, value):
        return None if value is None else json.dumps(value, sort_keys=True, separators=(",", ":"))

    def python_value(self, value):
        return None if value is None else json.loads(value)


class BaseModel(pw.Model):
    class Meta:
        database = database
        legacy_table_names = False


class SchemaVersion(BaseModel):
    version = pw.IntegerField()
    applied_at = pw.DateTimeField(default=utcnow)


class User(BaseModel):
    name = pw.CharField(max_length=64, unique=True)
    # seed 000's "auto-sub": the user's confirmed submissions go to the batch system at once (migration 9)
    auto_sub = pw.BooleanField(default=True)
    created_at = pw.DateTimeField(default=utcnow)


class Group(BaseModel):
    name = pw.CharField(max_length=64, unique=True)


class GroupPrivilege(BaseModel):
    group = pw.ForeignKeyField(Group, on_delete="CASCADE")
    privilege = pw.CharField(max_length=32)

    class Meta:
        indexes = ((("group", "privilege"), True),)


class UserGroup(BaseModel):
    user = pw.ForeignKeyField(User, on_delete="CASCADE")
    group = pw.ForeignKeyField(Group, on_delete="CASCADE")

    class Meta:
        indexes = ((("user", "group"), True),)


class ApiToken(BaseModel):
    user = pw.ForeignKeyField(User, on_delete="CASCADE")
    token_hash = pw.CharField(max_length=64, unique=True)
    label = pw.CharField(max_length=64, default="")      # what the token is for, shown in lists (migration 9)
    expires_at = pw.DateTimeField(null=True)             # None: never (migration 9)
    created_at = pw.DateTimeField(default=utcnow)


class Session(BaseModel):
    name = pw.CharField(max_length=64, unique=True)
    description = pw.TextField(default="")
    payload_module = pw.CharField(max_length=64, default="generic")
    # the image its payloads run in (a directory image, as on CVMFS, or a SIF file); "": on the host,
    # unless the site requires a container (migration 11)
    container_image = pw.CharField(max_length=1024, default="")
    created_at = pw.DateTimeField(default=utcnow)


class JobParameter(BaseModel):
    """A session's job parameter (Analysis, Generator, ...) and its allowed values."""
    session = pw.ForeignKeyField(Session, backref="parameters", on_delete="CASCADE")
    name = pw.CharField(max_length=64)
    allowed = JSONField(default=list)     # empty: any value
    position = pw.IntegerField(default=0)

    class Meta:
        indexes = ((("session", "name"), True),)


class StepTemplate(BaseModel):
    """A session's named step (seed 001: a module instance): a request chooses a sequence of them and
    each job's description carries them resolved (`payload.steps`). Migration 14."""
    session = pw.ForeignKeyField(Session, backref="step_templates", on_delete="CASCADE")
    name = pw.CharField(max_length=64)
    module = pw.CharField(max_length=64)
    parameters = JSONField(default=dict)     # the module's default parameters; a request may override them
    args = JSONField(default=list)
    position = pw.IntegerField(default=0)
    created_at = pw.DateTimeField(default=utcnow)

    class Meta:
        indexes = ((("session", "name"), True),)


class Software(BaseModel):
    session = pw.ForeignKeyField(Session, backref="software", on_delete="CASCADE")
    name = pw.CharField(max_length=128)
    version = pw.CharField(max_length=64)
    revision = pw.IntegerField(default=0)
    lfn = pw.CharField(max_length=1024)          # the tarball; "" for a release in a shared area
    adler32 = pw.CharField(max_length=8)
    path = pw.CharField(max_length=1024, default="")   # a read-only shared area (CVMFS) instead (migration 11)
    workdir = pw.CharField(max_length=1024)
    exe = pw.CharField(max_length=1024)
    env = JSONField(default=dict)
    retired = pw.BooleanField(default=False)   # no new production may use it (migration 9)
    created_at = pw.DateTimeField(default=utcnow)

    class Meta:
        indexes = ((("session", "version", "revision"), True),)


class Production(BaseModel):
    name = pw.CharField(max_length=128, unique=True)
    session = pw.ForeignKeyField(Session, on_delete="CASCADE")
    software = pw.ForeignKeyField(Software)
    status = pw.CharField(max_length=16, default="open")
    is_test = pw.BooleanField(default=False)
    twin = pw.ForeignKeyField("self", null=True, on_delete="SET NULL")  # main <-> _test
    note = pw.CharField(max_length=255, default="")
    created_by = pw.ForeignKeyField(User, null=True)
    created_at = pw.DateTimeField(default=utcnow)


class Request(BaseModel):
    production = pw.ForeignKeyField(Production, backref="requests", on_delete="CASCADE")
    parameters = JSONField(default=dict)
    params_key = pw.CharField(max_length=2048)   # canonical JSON, for the 409 on duplicates
    priority = pw.IntegerField(default=0)
    min_runnum = pw.BigIntegerField(default=1)
    required_events = pw.BigIntegerField(default=0)
    events_per_job = pw.BigIntegerField(default=0)
    num_jobs = pw.IntegerField(default=0)
    event_time_s = pw.DoubleField(default=0.0)
    max_wct_s = pw.DoubleField(default=86400.0)
    max_rss_mb = pw.DoubleField(default=0.0)
    stall_s = pw.DoubleField(default=0.0)
    cores = pw.IntegerField(default=1)                  # per job, asked of the batch system (migration 10)
    memory_mb = pw.DoubleField(default=0.0)             # per job; 0: the batch system's default (migration 10)
    # the retry policy (server/retries.py, migration 12): attempts at most, including the first (1: no
    # automatic retry), and the wait before the first automatic retry, doubled for each one after
    max_attempts = pw.IntegerField(default=3)
    retry_backoff_s = pw.DoubleField(default=600.0)
    input_mode = pw.CharField(max_length=8, default="NONE")
    input_paths = JSONField(default=list)
    # seed 001's job splitting: each job gets the next N input files (0: not split; server/splitting.py,
    # migration 13)
    files_per_job = pw.IntegerField(default=0)
    output_lfn = pw.CharField(max_length=1024)
    output_abs = pw.CharField(max_length=1024, default="")
    output_sites = JSONField(default=list)
    output_patterns = JSONField(default=lambda: ["*.root"])
    # [{"template": name, "parameters": {...}}]: the session's step templates its jobs run, in order;
    # empty: the session's payload module alone (migration 14)
    steps = JSONField(default=list)
    # {"template", "condition", "fraction", "files_per_job", "patterns"}: the follow-up stage that runs
    # on the request's outputs once its condition holds (server/stages.py); {}: none (migration 15)
    followup = JSONField(default=dict)
    note = pw.CharField(max_length=255, default="")
    status = pw.CharField(max_length=16, default="open")
    test_request = pw.ForeignKeyField("self", null=True, on_delete="SET NULL")
    created_by = pw.ForeignKeyField(User, null=True)
    created_at = pw.DateTimeField(default=utcnow)

    class Meta:
        indexes = ((("production", "params_key"), True),)


class Site(BaseModel):
    name = pw.CharField(max_length=64, unique=True)
    description = pw.TextField(default="")
    threshold_prepared = pw.IntegerField(default=0)    # 0: no limit
    threshold_running = pw.IntegerField(default=0)
    threshold_failed = pw.IntegerField(default=0)
    bunch_size = pw.IntegerField(default=50)
    se = JSONField(default=dict)                        # from site_configs/<SITE>.toml
    last_activity = pw.DateTimeField(null=True)         # jobs.note_site_activity says what counts
    last_submission = pw.DateTimeField(null=True)
    # a shifter's "reset site": failed jobs that ended before it no longer count against threshold_failed
    failed_reset_at = pw.DateTimeField(null=True)       # migration 9
    created_at = pw.DateTimeField(default=utcnow)


class SiteSession(BaseModel):
    """A site's switches for a session (the seed's "disable | unsupport", submissions._eligible_site)
    and its last activity for the session (jobs.note_site_activity); no row: enabled and supported."""
    site = pw.ForeignKeyField(Site, backref="sessions", on_delete="CASCADE")
    session = pw.ForeignKeyField(Session, on_delete="CASCADE")
    enabled = pw.BooleanField(default=True)
    supported = pw.BooleanField(default=True)
    last_activity = pw.DateTimeField(null=True)         # migration 8

    class Meta:
        indexes = ((("site", "session"), True),)


class SiteProduction(BaseModel):
    site = pw.ForeignKeyField(Site, backref="productions", on_delete="CASCADE")
    production = pw.ForeignKeyField(Production, on_delete="CASCADE")
    allowed = pw.BooleanField(default=True)
    last_submission = pw.DateTimeField(null=True)
    last_submitted_by = pw.ForeignKeyField(User, null=True)

    class Meta:
        indexes = ((("site", "production"), True),)


class SiteCheck(BaseModel):
    """One node's `severus check --report`; the history is kept, the site shows the newest (highest id)."""
    site = pw.ForeignKeyField(Site, backref="checks", on_delete="CASCADE")
    node = pw.CharField(max_length=255)                 # the reporting node's hostname
    status = pw.CharField(max_length=8)                 # OK | WARNING | CRITICAL | UNKNOWN, the worst check
    checks = JSONField(default=list)                    # the `checks` list of `severus check --json`
    wrapper_version = pw.CharField(max_length=64, default="")
    reported_by = pw.ForeignKeyField(User, null=True, on_delete="SET NULL")
    created_at = pw.DateTimeField(default=utcnow)


class Job(BaseModel):
    runnum = pw.BigIntegerField(unique=True)
    events = pw.BigIntegerField()
    request = pw.ForeignKeyField(Request, on_delete="CASCADE")
    production = pw.ForeignKeyField(Production, on_delete="CASCADE")   # denormalised: filters
    session = pw.ForeignKeyField(Session, on_delete="CASCADE")
    site = pw.ForeignKeyField(Site)
    user = pw.ForeignKeyField(User, null=True)
    test = pw.BooleanField(default=False)
    log_to_db = pw.BooleanField(default=False)
    status = pw.CharField(max_length=16, default="prepared")
    step = pw.CharField(max_length=16, null=True)
    message = pw.CharField(max_length=4096, default="")
    error_code = pw.IntegerField(null=True)
    gjid = pw.CharField(max_length=256, null=True)
    backend = pw.CharField(max_length=32, null=True)
    attempt = pw.IntegerField(default=1)          # the current attempt number
    last_seq = pw.BigIntegerField(default=0)      # highest seq applied in this attempt
    heartbeat_s = pw.DoubleField(default=300.0)
    heartbeat_at = pw.DoubleField(null=True)       # Unix seconds of the last sign of life (report or batch start)
    wct = pw.DoubleField(null=True)
    report = JSONField(null=True)
    # the job's own input slice, a list of LFNs (server/splitting.py, migration 13); None: its request's input
    input_paths = JSONField(null=True)
    # the follow-up stage (a step template's name) this job runs for its request; "": one of the
    # request's own jobs (migration 15, server/stages.py)
    stage = pw.CharField(max_length=64, default="")
    # lower-case text for `q`; migration 3 indexes it for substring search (pg_trgm GIN, SQLite FTS5 trigram)
    search = pw.CharField(max_length=1024, default="")
    prepared_at = pw.DateTimeField(default=utcnow)
    submitted_at = pw.DateTimeField(null=True)
    started_at = pw.DateTimeField(null=True)
    finished_at = pw.DateTimeField(null=True)
    # server/retries.py (migration 12): when the server retries this final job (Unix seconds; None: it
    # will not), and how many of its attempts the server started on its own (the monitor's "retried")
    retry_at = pw.DoubleField(null=True)
    retries = pw.IntegerField(default=0)

    class Meta:
        # The job monitor filters by one of these and pages by runnum: an index
        # ending in runnum serves both without a sort (INFRA.md: 37 ms -> < 1 ms).
        # On PostgreSQL migration 5 makes those ending in runnum hold the job id too.
        indexes = (
            (("status", "runnum"), False),
            (("site", "runnum"), False),
            (("site", "status", "runnum"), False),
            (("production", "status", "runnum"), False),
            (("request", "runnum"), False),
            (("user", "runnum"), False),
            (("error_code", "runnum"), False),
            (("user", "error_code", "runnum"), False),   # migration 3: user + error code was 56 ms on SQLite
            (("gjid",), False),                          # migration 3: `q` matches gjid exactly
            (("prepared_at",), False),
            (("status", "heartbeat_at"), False),
            # migration 6: the counts and sums of the request, site and charts pages read an index
            # alone (1M jobs, SQLite: a request's counts 450 ms, a site's 780 ms, the chart 220 ms)
            (("request", "status"), False),
            (("site", "production", "events"), False),
            (("status", "finished_at", "events"), False),
            (("retry_at",), False),                      # migration 12: the due retries
        )


class JobCount(BaseModel):
    """How many jobs (and their events and wct) each request has at each site per user and status.

    Kept by database triggers on the job table (migration 9): every change of a job, by any path
    (peewee, raw SQL, a bulk insert), moves it from one row to another in the same transaction, so
    the pages' counts cost a read of this small table, not of the jobs. user_id 0: no user.
    Plain integer columns, not foreign keys: the triggers write them, and 0 names no row.
    """
    request_id = pw.IntegerField()
    production_id = pw.IntegerField()     # the request's, kept beside it: a production's counts sum its rows
    site_id = pw.IntegerField()
    user_id = pw.IntegerField()
    status = pw.CharField(max_length=16)
    jobs = pw.BigIntegerField(default=0)
    events = pw.BigIntegerField(default=0)
    wct = pw.DoubleField(default=0.0)

    class Meta:
        indexes = ((("request_id", "site_id", "user_id", "status"), True), (("production_id",), False),
                   (("site_id",), False))


# SQLite's substring index of Job.search: an FTS5 trigram table with Job as external
# content, kept in step by triggers (migration 3).
JOB_SEARCH_FTS = "jobs_fts"


class Attempt(BaseModel):
    job = pw.ForeignKeyField(Job, backref="attempts", on_delete="CASCADE")
    number = pw.IntegerField()
    # minted when the attempt is handed to a backend (or by an explicit rotation), never by a read
    token_hash = pw.CharField(max_length=64, null=True, unique=True)
    command = pw.CharField(max_length=16, null=True)     # a manager's command for the wrapper: kill
    # when an event of the attempt acknowledged the command (`ack`); until then every reply repeats it
    command_delivered_at = pw.DateTimeField(null=True)
    automatic = pw.BooleanField(default=False)           # started by the server's retry (migration 12)
    created_at = pw.DateTimeField(default=utcnow)

    class Meta:
        indexes = ((("job", "number"), True),)


class Event(BaseModel):
    job = pw.ForeignKeyField(Job, on_delete="CASCADE")
    attempt = pw.IntegerField()
    seq = pw.BigIntegerField()
    time = pw.DoubleField()
    received_at = pw.DateTimeField(default=utcnow)
    status = pw.CharField(max_length=16)
    kind = pw.CharField(max_length=16)
    step = pw.CharField(max_length=16, null=True)
    message = pw.TextField(default="")
    code = pw.IntegerField(null=True)
    metrics = JSONField(null=True)
    tail = JSONField(null=True)

    class Meta:
        indexes = ((("job", "attempt", "seq"), True),)


class CatalogFile(BaseModel):
    lfn = pw.CharField(max_length=1024, unique=True)
    size = pw.BigIntegerField()
    adler32 = pw.CharField(max_length=8)
    created_at = pw.DateTimeField(default=utcnow)


class Replica(BaseModel):
    file = pw.ForeignKeyField(CatalogFile, backref="replicas", on_delete="CASCADE")
    site = pw.CharField(max_length=64)
    surl = pw.CharField(max_length=2048)
    job = pw.ForeignKeyField(Job, null=True, on_delete="SET NULL")   # who registered it
    attempt = pw.IntegerField(null=True)
    created_at = pw.DateTimeField(default=utcnow)

    class Meta:
        indexes = ((("file", "site"), True),)


class Removal(BaseModel):
    """A file on an SE that no catalog entry names and that must go: an attempt could not delete
    what it wrote (a dead SE), or a newer attempt's registration replaced it (DIRAC's removal
    request). The server deletes it (`sbk cleanup`, the cleaner thread), never while a replica
    names it."""
    job = pw.ForeignKeyField(Job, null=True, on_delete="SET NULL")
    attempt = pw.IntegerField(null=True)
    site = pw.CharField(max_length=64)
    surl = pw.CharField(max_length=2048)
    reason = pw.CharField(max_length=255, default="")
    state = pw.CharField(max_length=16, default="pending")   # pending | done | kept | manual
    tries = pw.IntegerField(default=0)
    last_error = pw.TextField(default="")
    next_try_at = pw.DoubleField(default=0.0)      # Unix seconds; also the claim of a running pass
    created_at = pw.DateTimeField(default=utcnow)
    done_at = pw.DateTimeField(null=True)

    class Meta:
        # migration 7 indexes surl (by hash on PostgreSQL), as it does Replica.surl
        indexes = ((("state", "next_try_at"), False), (("job",), False))


class JobLog(BaseModel):
    job = pw.ForeignKeyField(Job, on_delete="CASCADE")
    attempt = pw.IntegerField()
    data = pw.BlobField()
    size = pw.IntegerField()
    created_at = pw.DateTimeField(default=utcnow)

    class Meta:
        indexes = ((("job", "attempt"), True),)


class Activity(BaseModel):
    user = pw.ForeignKeyField(User, null=True, on_delete="SET NULL")
    kind = pw.CharField(max_length=32)      # job-submission | production-created | request-created
    session = pw.CharField(max_length=64, default="")
    info = pw.TextField(default="")
    ref = JSONField(default=dict)
    time = pw.DateTimeField(default=utcnow, index=True)


ALL_MODELS = (SchemaVersion, User, Group, GroupPrivilege, UserGroup, ApiToken, Session, StepTemplate,
              JobParameter, Software, Production, Request, Site, SiteSession, SiteProduction,
              Job, JobCount, Attempt, Event, CatalogFile, Replica, Removal, JobLog, Activity)
