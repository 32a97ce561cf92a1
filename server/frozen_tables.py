"""The tables each migration creates, frozen as they were when it was written (server/migrations.py).

A migration must make the same tables in a new database as it made in the first one: built from
today's models it would hide a column changed since, and an old database upgraded would differ
from a new one. The server's code never queries these classes: they give peewee the DDL (CREATE
TABLE, the declared indexes), and tests write rows through them as that version's server did (the
defaults are its models' own, kept on the Python side: peewee writes none in CREATE TABLE). JSON
columns are the TEXT the models' JSONField stores. A change of a table is a new migration with its
own frozen columns, never an edit here.
"""
import peewee as pw

from .db import database
from .models import utcnow


class Frozen(pw.Model):
    class Meta:
        database = database
        legacy_table_names = False   # GroupPrivilege -> group_privilege, as the models


# Migration 1: the SBK4 model (seed 000) as of schema version 2 (server/models.py at da42af5^).

class SchemaVersion(Frozen):
    version = pw.IntegerField()
    applied_at = pw.DateTimeField(default=utcnow)


class User(Frozen):
    name = pw.CharField(max_length=64, unique=True)
    created_at = pw.DateTimeField(default=utcnow)


class Group(Frozen):
    name = pw.CharField(max_length=64, unique=True)


class GroupPrivilege(Frozen):
    group = pw.ForeignKeyField(Group, on_delete="CASCADE")
    privilege = pw.CharField(max_length=32)

    class Meta:
        indexes = ((("group", "privilege"), True),)


class UserGroup(Frozen):
    user = pw.ForeignKeyField(User, on_delete="CASCADE")
    group = pw.ForeignKeyField(Group, on_delete="CASCADE")

    class Meta:
        indexes = ((("user", "group"), True),)


class ApiToken(Frozen):
    user = pw.ForeignKeyField(User, on_delete="CASCADE")
    token_hash = pw.CharField(max_length=64, unique=True)
    created_at = pw.DateTimeField(default=utcnow)


class Session(Frozen):
    name = pw.CharField(max_length=64, unique=True)
    description = pw.TextField(default="")
    payload_module = pw.CharField(max_length=64, default="generic")
    created_at = pw.DateTimeField(default=utcnow)


class JobParameter(Frozen):
    session = pw.ForeignKeyField(Session, backref="parameters", on_delete="CASCADE")
    name = pw.CharField(max_length=64)
    allowed = pw.TextField(default="[]")
    position = pw.IntegerField(default=0)

    class Meta:
        indexes = ((("session", "name"), True),)


class Software(Frozen):
    session = pw.ForeignKeyField(Session, backref="software", on_delete="CASCADE")
    name = pw.CharField(max_length=128)
    version = pw.CharField(max_length=64)
    revision = pw.IntegerField(default=0)
    lfn = pw.CharField(max_length=1024)
    adler32 = pw.CharField(max_length=8)
    workdir = pw.CharField(max_length=1024)
    exe = pw.CharField(max_length=1024)
    env = pw.TextField(default="{}")
    created_at = pw.DateTimeField(default=utcnow)

    class Meta:
        indexes = ((("session", "version", "revision"), True),)


class Production(Frozen):
    name = pw.CharField(max_length=128, unique=True)
    session = pw.ForeignKeyField(Session, on_delete="CASCADE")
    software = pw.ForeignKeyField(Software)
    status = pw.CharField(max_length=16, default="open")
    is_test = pw.BooleanField(default=False)
    twin = pw.ForeignKeyField("self", null=True, on_delete="SET NULL")
    note = pw.CharField(max_length=255, default="")
    created_by = pw.ForeignKeyField(User, null=True)
    created_at = pw.DateTimeField(default=utcnow)


class Request(Frozen):
    production = pw.ForeignKeyField(Production, backref="requests", on_delete="CASCADE")
    parameters = pw.TextField(default="{}")
    params_key = pw.CharField(max_length=2048)
    priority = pw.IntegerField(default=0)
    min_runnum = pw.BigIntegerField(default=1)
    required_events = pw.BigIntegerField(default=0)
    events_per_job = pw.BigIntegerField(default=0)
    num_jobs = pw.IntegerField(default=0)
    event_time_s = pw.DoubleField(default=0.0)
    max_wct_s = pw.DoubleField(default=86400.0)
    max_rss_mb = pw.DoubleField(default=0.0)
    stall_s = pw.DoubleField(default=0.0)
    input_mode = pw.CharField(max_length=8, default="NONE")
    input_paths = pw.TextField(default="[]")
    output_lfn = pw.CharField(max_length=1024)
    output_abs = pw.CharField(max_length=1024, default="")
    output_sites = pw.TextField(default="[]")
    output_patterns = pw.TextField(default='["*.root"]')
    note = pw.CharField(max_length=255, default="")
    status = pw.CharField(max_length=16, default="open")
    test_request = pw.ForeignKeyField("self", null=True, on_delete="SET NULL")
    created_by = pw.ForeignKeyField(User, null=True)
    created_at = pw.DateTimeField(default=utcnow)

    class Meta:
        indexes = ((("production", "params_key"), True),)


class Site(Frozen):
    name = pw.CharField(max_length=64, unique=True)
    description = pw.TextField(default="")
    threshold_prepared = pw.IntegerField(default=0)
    threshold_running = pw.IntegerField(default=0)
    threshold_failed = pw.IntegerField(default=0)
    bunch_size = pw.IntegerField(default=50)
    se = pw.TextField(default="{}")
    last_activity = pw.DateTimeField(null=True)
    last_submission = pw.DateTimeField(null=True)
    created_at = pw.DateTimeField(default=utcnow)


class SiteSession(Frozen):
    site = pw.ForeignKeyField(Site, backref="sessions", on_delete="CASCADE")
    session = pw.ForeignKeyField(Session, on_delete="CASCADE")
    enabled = pw.BooleanField(default=True)
    supported = pw.BooleanField(default=True)

    class Meta:
        indexes = ((("site", "session"), True),)


class SiteProduction(Frozen):
    site = pw.ForeignKeyField(Site, backref="productions", on_delete="CASCADE")
    production = pw.ForeignKeyField(Production, on_delete="CASCADE")
    allowed = pw.BooleanField(default=True)
    last_submission = pw.DateTimeField(null=True)
    last_submitted_by = pw.ForeignKeyField(User, null=True)

    class Meta:
        indexes = ((("site", "production"), True),)


class Job(Frozen):
    runnum = pw.BigIntegerField(unique=True)
    events = pw.BigIntegerField()
    request = pw.ForeignKeyField(Request, on_delete="CASCADE")
    production = pw.ForeignKeyField(Production, on_delete="CASCADE")
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
    attempt = pw.IntegerField(default=1)
    last_seq = pw.BigIntegerField(default=0)
    heartbeat_s = pw.DoubleField(default=300.0)
    heartbeat_at = pw.DoubleField(null=True)
    wct = pw.DoubleField(null=True)
    report = pw.TextField(null=True)
    search = pw.CharField(max_length=1024, default="")
    prepared_at = pw.DateTimeField(default=utcnow)
    submitted_at = pw.DateTimeField(null=True)
    started_at = pw.DateTimeField(null=True)
    finished_at = pw.DateTimeField(null=True)

    class Meta:
        indexes = (
            (("status", "runnum"), False),
            (("site", "runnum"), False),
            (("site", "status", "runnum"), False),
            (("production", "status", "runnum"), False),
            (("request", "runnum"), False),
            (("user", "runnum"), False),
            (("error_code", "runnum"), False),
            (("prepared_at",), False),
            (("status", "heartbeat_at"), False),
        )


class Attempt(Frozen):
    job = pw.ForeignKeyField(Job, backref="attempts", on_delete="CASCADE")
    number = pw.IntegerField()
    token_hash = pw.CharField(max_length=64, null=True, unique=True)
    command = pw.CharField(max_length=16, null=True)
    command_delivered_at = pw.DateTimeField(null=True)
    created_at = pw.DateTimeField(default=utcnow)

    class Meta:
        indexes = ((("job", "number"), True),)


class Event(Frozen):
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
    metrics = pw.TextField(null=True)
    tail = pw.TextField(null=True)

    class Meta:
        indexes = ((("job", "attempt", "seq"), True),)


class CatalogFile(Frozen):
    lfn = pw.CharField(max_length=1024, unique=True)
    size = pw.BigIntegerField()
    adler32 = pw.CharField(max_length=8)
    created_at = pw.DateTimeField(default=utcnow)


class Replica(Frozen):
    file = pw.ForeignKeyField(CatalogFile, backref="replicas", on_delete="CASCADE")
    site = pw.CharField(max_length=64)
    surl = pw.CharField(max_length=2048)
    job = pw.ForeignKeyField(Job, null=True, on_delete="SET NULL")
    attempt = pw.IntegerField(null=True)
    created_at = pw.DateTimeField(default=utcnow)

    class Meta:
        indexes = ((("file", "site"), True),)


class JobLog(Frozen):
    job = pw.ForeignKeyField(Job, on_delete="CASCADE")
    attempt = pw.IntegerField()
    data = pw.BlobField()
    size = pw.IntegerField()
    created_at = pw.DateTimeField(default=utcnow)

    class Meta:
        indexes = ((("job", "attempt"), True),)


class Activity(Frozen):
    user = pw.ForeignKeyField(User, null=True, on_delete="SET NULL")
    kind = pw.CharField(max_length=32)
    session = pw.CharField(max_length=64, default="")
    info = pw.TextField(default="")
    ref = pw.TextField(default="{}")
    time = pw.DateTimeField(default=utcnow, index=True)


V1 = (SchemaVersion, User, Group, GroupPrivilege, UserGroup, ApiToken, Session, JobParameter, Software,
      Production, Request, Site, SiteSession, SiteProduction, Job, Attempt, Event, CatalogFile, Replica,
      JobLog, Activity)


# Migration 4: node check results.

class SiteCheck(Frozen):
    site = pw.ForeignKeyField(Site, on_delete="CASCADE")
    node = pw.CharField(max_length=255)
    status = pw.CharField(max_length=8)
    checks = pw.TextField(default="[]")
    wrapper_version = pw.CharField(max_length=64, default="")
    reported_by = pw.ForeignKeyField(User, null=True, on_delete="SET NULL")
    created_at = pw.DateTimeField(default=utcnow)


# Migration 7: removal requests.

class Removal(Frozen):
    job = pw.ForeignKeyField(Job, null=True, on_delete="SET NULL")
    attempt = pw.IntegerField(null=True)
    site = pw.CharField(max_length=64)
    surl = pw.CharField(max_length=2048)
    reason = pw.CharField(max_length=255, default="")
    state = pw.CharField(max_length=16, default="pending")
    tries = pw.IntegerField(default=0)
    last_error = pw.TextField(default="")
    next_try_at = pw.DoubleField(default=0.0)
    created_at = pw.DateTimeField(default=utcnow)
    done_at = pw.DateTimeField(null=True)

    class Meta:
        indexes = ((("state", "next_try_at"), False), (("job",), False))


# Migration 9: the job counters (plain integer columns: the triggers write them, 0 names no user).

class JobCount(Frozen):
    request_id = pw.IntegerField()
    production_id = pw.IntegerField()
    site_id = pw.IntegerField()
    user_id = pw.IntegerField()
    status = pw.CharField(max_length=16)
    jobs = pw.BigIntegerField(default=0)
    events = pw.BigIntegerField(default=0)
    wct = pw.DoubleField(default=0.0)

    class Meta:
        indexes = ((("request_id", "site_id", "user_id", "status"), True), (("production_id",), False),
                   (("site_id",), False))


# Migration 14: sessions' step templates.

class StepTemplate(Frozen):
    session = pw.ForeignKeyField(Session, on_delete="CASCADE")
    name = pw.CharField(max_length=64)
    module = pw.CharField(max_length=64)
    parameters = pw.TextField(default="{}")
    args = pw.TextField(default="[]")
    position = pw.IntegerField(default=0)
    created_at = pw.DateTimeField(default=utcnow)

    class Meta:
        indexes = ((("session", "name"), True),)


def columns(table, **fields):
    """A frozen model of `table` holding only `fields`: the columns as a later migration adds them
    (NOT NULL ones with their default, which ALTER TABLE needs for the rows already there)."""
    meta = type("Meta", (), {"table_name": table})
    return type(f"Frozen_{table}", (Frozen,), {"Meta": meta, "__module__": __name__, **fields})
