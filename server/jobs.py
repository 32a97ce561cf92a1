"""Jobs after preparation: descriptions and tokens, the fence, reports, kill, resubmit,
submission marks, reaping.

Every change of a job's status goes through the life-cycle table (shared/lifecycle.py)
and happens in a write transaction holding the job's row (FOR UPDATE on PostgreSQL,
the database write lock on SQLite), so an event, a kill, a resubmit and the reaper
never interleave on one job.
"""
import datetime
import functools
import hashlib
import json
import time

import peewee as pw

from shared import lifecycle
from shared.errors import lookup
from shared.events import TRANSFER_BYTES, TRANSFER_RATE, TRANSFER_TOTAL_BYTES
from shared.jobdesc import JobDescriptionError, parse_job_description
from shared.lifecycle import FINAL, Trigger
from shared.states import STEP_LABELS, Status, Step

from . import auth, db, removals, retries, sessions, splitting, stages
from . import models as m
from .errors import ApiError, conflict, not_found

REDACTED = "redacted"
SERVER_SEQ = 0   # seq of the events the server itself writes (wrappers count from 1)


def get_job(job_id):
    """The job, or 404."""
    return m.get_or_404(m.Job, m.Job.id == job_id, f"job {job_id}")


def _locked_job(job_id):
    job = db.for_update(m.Job.select().where(m.Job.id == job_id)).first()
    if job is None:
        raise not_found(f"job {job_id} does not exist")
    return job


def _current_attempt(job):
    return m.Attempt.get((m.Attempt.job == job.id) & (m.Attempt.number == job.attempt))


# The job monitor's view of a job: these columns, joined, in the order of job_summary's keys. A page
# reads them as plain tuples (job_summaries): building 5 joined peewee models per job and formatting
# their times cost ~3 ms of a 50-job page, the tuples well under 1 ms.
SUMMARY_COLUMNS = (
    m.Job.id, m.Job.runnum, m.Job.events, m.Job.status, m.Job.step, m.Job.message, m.Job.error_code,
    m.Site.name, m.User.name, m.Production.name, m.Job.request, m.Session.name, m.Request.parameters,
    m.Job.test, m.Job.log_to_db, m.Job.gjid, m.Job.backend, m.Job.attempt, m.Job.wct, m.Job.prepared_at,
    m.Job.submitted_at, m.Job.started_at, m.Job.finished_at, m.Job.heartbeat_at, m.Job.retry_at, m.Job.retries)
_PARAMETERS = next(i for i, c in enumerate(SUMMARY_COLUMNS) if c is m.Request.parameters)   # (`==` builds SQL)


@functools.lru_cache(maxsize=64)
def _summary_sql(sqlite, count):
    """The SQL of the summary rows of `count` job ids, the ids its parameters (one text per database and size)."""
    query = (m.Job.select(*SUMMARY_COLUMNS).join(m.Site).switch(m.Job).join(m.Production).switch(m.Job)
             .join(m.Session).switch(m.Job).join(m.Request).switch(m.Job).join(m.User, m.JOIN.LEFT_OUTER)
             .where(m.Job.id.in_(list(range(count)))))
    sql, params = query.sql()
    assert params == list(range(count)), "the ids must be the query's only parameters"
    return sql


def job_summaries(job_ids):
    """The summaries of these jobs (job_summary), in the order of `job_ids` (a job since deleted is left out)."""
    if not job_ids:
        return []
    cursor = m.database.execute_sql(_summary_sql(db.is_sqlite(), len(job_ids)), list(job_ids))
    by_id = {row[0]: row for row in cursor.fetchall()}
    parameters = {}   # by their stored text: a page's jobs share a few requests
    for row in by_id.values():
        if row[_PARAMETERS] not in parameters:
            parameters[row[_PARAMETERS]] = m.Request.parameters.python_value(row[_PARAMETERS])
    return [job_summary(by_id[i], parameters[by_id[i][_PARAMETERS]]) for i in job_ids if i in by_id]


def _when(value):
    """A stored time as m.iso writes it, from the driver's value: PostgreSQL's datetime, SQLite's text
    ('YYYY-MM-DD HH:MM:SS[.ffffff]', peewee's format, cut here without parsing) or Unix seconds."""
    if value is None:
        return None
    if isinstance(value, str):
        if len(value) >= 19 and value[10] == " ":
            return f"{value[:10]}T{value[11:19]}Z"
        value = m.Job.prepared_at.python_value(value)
    return m.iso(value)


def job_summary(row, parameters):
    """The job as the job monitor lists it, from its row of SUMMARY_COLUMNS as the driver gives it
    and its request's parameters."""
    (job_id, runnum, events, status, step, message, error_code, site, user, production, request_id, session,
     _, test, log_to_db, gjid, backend, attempt, wct, prepared_at, submitted_at, started_at, finished_at,
     heartbeat_at, retry_at, retried) = row
    return {
        "id": job_id, "runnum": runnum, "events": events, "status": status, "step": step, "message": message,
        "error_code": error_code, "site": site, "user": user, "production": production, "request": request_id,
        "session": session, "parameters": parameters, "test": bool(test), "log_to_db": bool(log_to_db), "gjid": gjid, "backend": backend,
        "attempt": attempt, "wct": wct,
        "prepared_at": _when(prepared_at), "submitted_at": _when(submitted_at),
        "started_at": _when(started_at), "finished_at": _when(finished_at),
        "last_heartbeat": _when(heartbeat_at),
        # server/retries.py: when the server retries this final job (None: it will not); its automatic retries
        "retry_at": _when(retry_at), "retries": retried,
    }


def job_details(job):
    """The job with its history, outputs, log link and final report."""
    d = job_summaries([job.id])[0]
    d["history"] = [
        {"attempt": e.attempt, "seq": e.seq, "time": m.iso(e.time), "received_at": m.iso(e.received_at),
         "status": e.status, "kind": e.kind, "step": e.step, "message": e.message, "code": e.code,
         "metrics": e.metrics or {}, "tail": e.tail or []}
        # The server's own final event (seq 0) closes its attempt: it goes last.
        for e in sorted(m.Event.select().where(m.Event.job == job.id),
                        key=lambda e: (e.attempt, e.seq == SERVER_SEQ, e.seq))]
    d["outputs"] = [
        {"lfn": r.file.lfn, "size": r.file.size, "adler32": r.file.adler32, "site": r.site,
         "surl": r.surl, "attempt": r.attempt}
        for r in m.Replica.select(m.Replica, m.CatalogFile).join(m.CatalogFile)
        .where(m.Replica.job == job.id).order_by(m.CatalogFile.lfn)]
    logs = m.JobLog.select(m.JobLog.attempt, m.JobLog.size).where(m.JobLog.job == job.id)
    d["logs"] = [{"attempt": lg.attempt, "size": lg.size,
                  "url": f"/api/v1/jobs/{job.id}/log?attempt={lg.attempt}"} for lg in logs]
    d["log"] = d["logs"][-1]["url"] if d["logs"] else None
    d["report"] = job.report
    # the inputs the job was given: its own slice of a split request, or the request's input
    d["input"] = dict(splitting.job_input(job, job.request), split=job.input_paths is not None)
    d["removals"] = removals.job_removals(job.id)
    d["transfer_progress"] = transfer_progress(d["status"], d["attempt"], d["history"])
    d.update(job_times(job))
    d.update(retries.job_retry(job))
    if job.error_code is not None:
        d["error"] = lookup(job.error_code).to_dict()
    return d


def transfer_progress(status, attempt, history):
    """A staging job's copies as its last heartbeat (or step event) of the current attempt told
    them: {"bytes", "total_bytes" (None: unknown), "rate_mb_s", "step", "at"}; None when the job
    is not running or no copy was running then. Read from the stored events' metrics."""
    if status != Status.RUNNING.value:
        return None
    probes = [e for e in history if e["attempt"] == attempt and e["kind"] in ("heartbeat", "step")
              and e["seq"] != SERVER_SEQ]
    if not probes:
        return None
    last = max(probes, key=lambda e: e["seq"])
    metrics = last["metrics"]
    if TRANSFER_BYTES not in metrics:
        return None
    return {"bytes": int(metrics[TRANSFER_BYTES]), "total_bytes": int(metrics.get(TRANSFER_TOTAL_BYTES) or 0) or None,
            "rate_mb_s": metrics.get(TRANSFER_RATE), "step": last["step"], "at": last["time"]}


def job_times(job, now=None):
    """The current attempt's queue time (submitted -> started) and run time (started -> finished), in
    seconds; while it waits or runs, up to now. A job that ended without starting has only a queue time
    (up to its end); None before it was submitted or started.

    started_at is the first sign of the attempt running: the batch poller seeing its batch job start
    (batch-start; then up to one poll interval late) or the time of its wrapper's first report, whichever
    the server had first. A wrapper's first report may beat the backend's submitted mark (a fast job):
    the queue time is then 0, never negative.
    """
    now = m.utcnow() if now is None else now
    submitted, started, finished = job.submitted_at, job.started_at, job.finished_at

    def span(start, end):
        return None if start is None else round(max((end or now) - start, datetime.timedelta()).total_seconds(), 3)

    return {"queue_s": span(submitted, started or finished), "run_s": span(started, finished)}


def job_description(job, base_url, token=REDACTED):
    """The job description (CONTRACT §1) as a dict, validated by the wrapper's parser.

    A description is a credential only when `token` is given (mint_token's, at hand-off to a
    backend or an explicit rotation); any other read carries the token "redacted", so reading
    never breaks the copy already shipped in a batch sandbox.
    """
    req, prod = job.request, job.production
    sw, session = prod.software, job.session
    description = {
        "schema": 1,
        "job": {"id": job.id, "runnum": job.runnum, "attempt": job.attempt, "session": session.name,
                "production": prod.name, "request": req.id, "events": job.events, "test": job.test},
        "server": {"url": base_url.rstrip("/"), "token": token, "heartbeat_s": job.heartbeat_s},
        "software": {"name": sw.name, "version": sw.version, "revision": sw.revision, "workdir": sw.workdir,
                     "exe": sw.exe, **({"path": sw.path} if sw.path else {"lfn": sw.lfn, "adler32": sw.adler32})},
        "payload": {"module": session.payload_module, "parameters": dict(req.parameters),
                    "env": dict(sw.env)},
        "input": splitting.job_input(job, req),     # a split job's own slice (server/splitting.py)
        "output": {"lfn_dir": req.output_lfn, "sites": list(req.output_sites),
                   "patterns": list(req.output_patterns)},
        "log": {"to_db": job.log_to_db},
        "limits": {"max_wct_s": req.max_wct_s, "max_rss_mb": req.max_rss_mb, "stall_s": req.stall_s,
                   "cores": req.cores, "memory_mb": req.memory_mb},
    }
    if req.steps:                    # the request's chosen step templates, resolved (issue 15)
        del description["payload"]["module"]          # each step names its own
        description["payload"]["steps"] = sessions.resolved_steps(session, req.steps)
    if job.stage:                    # a follow-up stage's job: the stage's step and output (server/stages.py)
        stages.stage_payload(job, req, description)
    if session.container_image:      # else the site decides (its [container] required and image)
        description["container"] = {"image": session.container_image}
    try:
        parse_job_description(description)
    except JobDescriptionError as exc:
        # Stored settings that make no valid description: the manager must fix the request.
        raise ApiError(422, "invalid-description", f"job {job.id}: {exc}") from None
    return description


def mint_token(job):
    """A new token for the job's current attempt, replacing any earlier one (call inside the job's
    write transaction): when the attempt is handed to a backend, or rotated on a manager's request."""
    token = auth.new_token(auth.JOB_PREFIX)
    m.Attempt.update(token_hash=auth.hash_token(token)).where(
        (m.Attempt.job == job.id) & (m.Attempt.number == job.attempt)).execute()
    return token


def rotate_token(job_id, user, base_url):
    """A manager's explicit rotation: a new token for a job not yet started, recorded as an
    activity; returns the description carrying it. The copy already shipped then gets 401."""
    with db.write_transaction():
        job = _locked_job(job_id)
        if job.status not in (Status.PREPARED.value, Status.SUBMITTED.value):
            raise conflict("job-started", f"job {job_id} is {job.status}: only a prepared or submitted "
                                          "job's token can be rotated (a started attempt reports with it)")
        token = mint_token(job)
        m.Activity.create(user=user, kind="token-rotated", session=job.session.name,
                          info=f"job {job.id} (runnum {job.runnum}) attempt {job.attempt}: new token",
                          ref={"job": job.id, "attempt": job.attempt})
        return job_description(job, base_url, token)


def attempt_state(job_id, attempt):
    """The fence a wrapper asks before it writes to an SE or registers: 409 unless its attempt is
    the job's current one and the job has not ended; else the attempt's pending command."""
    job = get_job(job_id)
    if job.attempt != attempt.number:
        raise conflict("attempt-superseded",
                       f"attempt {attempt.number} of job {job_id} was superseded by attempt {job.attempt}")
    if job.status in FINAL:
        raise conflict("attempt-ended", f"job {job_id} already ended ({job.status}, code {job.error_code}): "
                                        f"attempt {attempt.number} may write nothing more")
    command = attempt.command if attempt.command and attempt.command_delivered_at is None else None
    return {"job": job.id, "attempt": attempt.number, "status": job.status, "command": command,
            "last_seq": job.last_seq}


def record_events(job_id, attempt, events):
    """Store a wrapper's events idempotently and move the job; return the reply body."""
    for e in events:
        if e.attempt != attempt.number:
            raise ApiError(403, "forbidden",
                           f"this token is for attempt {attempt.number}, not attempt {e.attempt}")
    with db.write_transaction():
        job = _locked_job(job_id)
        if attempt.number != job.attempt:
            raise conflict("attempt-superseded",
                           f"attempt {attempt.number} of job {job_id} was superseded by attempt {job.attempt}")
        was_final = job.status in FINAL
        seqs = sorted({e.seq for e in events})
        known = set()
        for chunk in _chunks(seqs, 500):
            known.update(seq for (seq,) in m.Event.select(m.Event.seq).where(
                (m.Event.job == job.id) & (m.Event.attempt == attempt.number)
                & m.Event.seq.in_(chunk)).tuples())
        fresh = {}
        for e in events:
            if e.seq not in known:
                fresh.setdefault(e.seq, e)
        new = [fresh[seq] for seq in sorted(fresh)]
        _insert_events(job.id, new)
        _apply(job, new)
        job.save()
        for e in new:
            if e.kind == "final" and e.report and e.report.get("removals"):
                # what the wrapper could not delete itself (a dead SE), when it could not say so sooner
                removals.file_from_report(job, attempt.number, e.report)
        if job.status in FINAL and not was_final:
            note_site_activity(job.site_id, job.session_id)
        command = _pending_command(job, new)
    if job.status in FINAL and not was_final and not job.stage:
        stages.job_ended(job.request_id)
    return {"accepted": len(new), "duplicates": len(events) - len(new),
            "status": job.status, "command": command}


# A site's last activity is written at most this often: every job ending at a busy site would
# otherwise queue on the site's row, and a shifter reads the time to the minute anyway.
ACTIVITY_GRAIN = datetime.timedelta(seconds=10)


def note_site_activity(site_id, session_id, now=None):
    """A wrapper's final report came from the site: its last activity, and the session's there.

    A site's last activity (Site.last_activity, SiteSession.last_activity per session: the seed's
    site table) is the last time it did something for us: a submission to it
    (submissions._create_jobs writes that, with the last submission) or a job's final report from
    its wrapper (here, from record_events). Running reports are not counted: they take
    record_running, the hot path, which must stay one statement; nor are the ends the server
    decides (timeout, a dead batch job, a kill before the start): they are the site's silence, and
    counting them would make a dead site look alive. A plain UPDATE that matches nothing within
    ACTIVITY_GRAIN neither writes nor waits on the row (an upsert would lock it); a session without
    its row (jobs prepared before migration 8 made one per submission) leaves only the site's.
    """
    now = now or m.utcnow()
    stale = now - ACTIVITY_GRAIN
    m.Site.update(last_activity=now).where(
        (m.Site.id == site_id) & (m.Site.last_activity.is_null() | (m.Site.last_activity < stale))).execute()
    m.SiteSession.update(last_activity=now).where(
        (m.SiteSession.site == site_id) & (m.SiteSession.session == session_id)
        & (m.SiteSession.last_activity.is_null() | (m.SiteSession.last_activity < stale))).execute()


EVENT_FIELDS = (m.Event.job, m.Event.attempt, m.Event.seq, m.Event.time, m.Event.received_at, m.Event.status,
                m.Event.kind, m.Event.step, m.Event.message, m.Event.code, m.Event.metrics, m.Event.tail)


def _event_rows(job_id, new):
    """The database values of `new` events of a job, in EVENT_FIELDS order.

    Written out rather than through each field's db_value: twelve calls an event were a fifth
    of a 10-event post's CPU (bench_server). parse_event has typed every value already; the
    JSON columns are the one conversion left (tests/server/test_event_rows.py holds the two equal).
    """
    received = m.utcnow()
    return [[job_id, e.attempt, e.seq, e.time, received, e.status, e.kind, e.step, e.message, e.code,
             _to_json(dict(e.metrics)) if e.metrics else None, _to_json(list(e.tail)) if e.tail else None]
            for e in new]


# models.JSONField.db_value's json.dumps(value, sort_keys=True, separators=(",", ":")), its encoder
# made once rather than for every value (json.dumps makes one per call when given settings)
_to_json = json.JSONEncoder(sort_keys=True, separators=(",", ":")).encode


def _insert_events(job_id, new):
    """Store `new` events of a job with one multi-row INSERT per 200 (plain SQL: see record_running)."""
    p = db.database.param
    for chunk in _chunks(_event_rows(job_id, new), 200):
        db.database.execute_sql(
            f"INSERT INTO {m.Event._meta.table_name} ({', '.join(f.column_name for f in EVENT_FIELDS)}) VALUES "
            + ", ".join([f"({', '.join([p] * len(EVENT_FIELDS))})"] * len(chunk)), [v for row in chunk for v in row])


class _RunningJob:
    """The job columns _apply reads and writes for running events; `changed` holds what it set."""

    def __init__(self, **columns):
        self.__dict__.update(columns, changed={})

    def __setattr__(self, name, value):
        self.__dict__[name] = value
        self.changed[name] = value


def record_running(job_id, token_hash, events):
    """The common report, new running events of a job's current attempt, stored in plain SQL,
    atomically, if the token is that attempt's and no command waits for it; None: nothing done
    (the caller authenticates the token and takes record_events, the general path).

    Peewee builds SQL for the 28-column Job model at ~1 ms a statement: most of an
    event post's time (bench_server). Here one UPDATE checks the token and moves the job:
    it matches only while the token's attempt is current, the job is not final and
    every seq is above last_seq (so none is a duplicate), and its row lock orders
    concurrent reports of the job. The events are inserted only if it matched.
    """
    seqs = {e.seq for e in events}
    numbers = {e.attempt for e in events}
    if len(seqs) != len(events) or len(numbers) != 1 or any(e.status in FINAL or e.ack for e in events):
        return None
    new = sorted(events, key=lambda e: e.seq)
    # what the events set, every one of them new (the UPDATE's condition makes it so)
    job = _RunningJob(status=Status.RUNNING.value, last_seq=new[0].seq - 1, started_at=None)
    _apply(job, new)
    sqlite = db.is_sqlite()
    fields, move, reporting = _running_statement(tuple(job.changed), db.database.param, sqlite)
    number = numbers.pop()
    values = [f.db_value(v) for f, v in zip(fields, job.changed.values())]
    values += [job_id, number, new[0].seq, *reporting, job_id, number, token_hash]
    reply = {"accepted": len(new), "duplicates": 0, "status": Status.RUNNING.value, "command": None}
    if sqlite:
        # no UPDATE inside WITH in SQLite: two statements in one (in-process, cheap) transaction
        with db.write_transaction():
            if db.database.execute_sql(move, values).rowcount != 1:
                return None
            _insert_events(job_id, new)
        return reply
    # PostgreSQL: one statement, atomic by itself, instead of BEGIN, UPDATE, INSERT, COMMIT:
    # a quarter of the round trips. The events travel as one JSON array that the event
    # table's own row type reads (json_populate_recordset), so every column keeps its type.
    rows = json.dumps([dict(zip(_EVENT_COLUMNS, [v.isoformat() if isinstance(v, datetime.datetime) else v
                                                 for v in row[1:]])) for row in _event_rows(job_id, new)])
    stored = _execute_prepared(move, values + [rows])
    return reply if stored.rowcount == len(new) else None


# PostgreSQL parses and plans record_running's statement afresh for every post, ~0.17 ms of a
# one-event post's ~1 ms of server CPU (bench_server): each session prepares it once and then
# EXECUTEs it. Sessions are told apart by their connection object and backend pid (psycopg2's
# connections take no attribute or weak reference); the record is only a hint: a session without
# the statement gets it prepared on the spot, one that has it already is taken at its word.
_PREPARED = {}   # (id(connection), backend pid) -> names of the statements prepared in that session
_MISSING_STATEMENT, _DUPLICATE_STATEMENT = "26000", "42P05"


def _execute_prepared(sql, params):
    """`sql` (psycopg2's %s parameters) run as a prepared statement of this session; inside a
    transaction, where a failed EXECUTE would abort it, as it is."""
    if db.database.in_transaction():
        return db.database.execute_sql(sql, params)
    name, prepare = _prepared_form(sql)
    execute = f"EXECUTE {name} ({', '.join(['%s'] * len(params))})"
    conn = db.database.connection()
    key = (id(conn), conn.info.backend_pid)
    if len(_PREPARED) > 1000:   # sessions come and go (the pool's stale_timeout): forget the old
        _PREPARED.clear()
    known = _PREPARED.setdefault(key, set())
    if name in known:
        try:
            return db.database.execute_sql(execute, params)
        except pw.DatabaseError as exc:
            if getattr(getattr(exc, "orig", None), "pgcode", None) != _MISSING_STATEMENT:
                raise
    try:
        db.database.execute_sql(prepare)
    except pw.DatabaseError as exc:
        if getattr(getattr(exc, "orig", None), "pgcode", None) != _DUPLICATE_STATEMENT:
            raise
    known.add(name)
    return db.database.execute_sql(execute, params)


@functools.lru_cache(maxsize=64)
def _prepared_form(sql):
    """(a name for `sql`, its PREPARE with numbered parameters): the same in every process."""
    name = "sbk_" + hashlib.sha1(sql.encode()).hexdigest()[:16]
    parts = sql.split("%s")
    numbered = parts[0] + "".join(f"${n}{part}" for n, part in enumerate(parts[1:], 1))
    return name, f"PREPARE {name} AS {numbered}"


_EVENT_COLUMNS = [f.column_name for f in EVENT_FIELDS[1:]]


@functools.lru_cache(maxsize=64)
def _running_statement(names, p, sqlite):
    """(the Job fields of `names`, record_running's statement setting them, the reporting statuses).

    Built once for each set of columns _apply changes (a handful: heartbeats, steps, a first
    report): the SQL text of a statement costs more to make than the database takes to run it.
    SQLite's is the UPDATE; PostgreSQL's the UPDATE and the events' INSERT as one statement.
    """
    fields = tuple(getattr(m.Job, name) for name in names)
    # started_at is set once, by the first report
    sets = [f"{f.column_name} = COALESCE({f.column_name}, {p})" if f.name == "started_at"
            else f"{f.column_name} = {p}" for f in fields]
    reporting = lifecycle.allowed_from(Trigger.REPORT)
    move = (f"UPDATE {m.Job._meta.table_name} SET {', '.join(sets)} WHERE id = {p} AND attempt = {p} "
            f"AND last_seq < {p} AND status IN ({', '.join([p] * len(reporting))}) "
            f"AND EXISTS (SELECT 1 FROM {m.Attempt._meta.table_name} WHERE job_id = {p} AND number = {p} "
            f"AND token_hash = {p} AND (command IS NULL OR command_delivered_at IS NOT NULL))")
    if sqlite:
        return fields, move, reporting
    table = m.Event._meta.table_name
    return fields, (f"WITH moved AS ({move} RETURNING id) "
                     f"INSERT INTO {table} ({EVENT_FIELDS[0].column_name}, {', '.join(_EVENT_COLUMNS)}) "
                     f"SELECT moved.id, {', '.join('r.' + c for c in _EVENT_COLUMNS)} "
                     f"FROM moved, json_populate_recordset(NULL::{table}, {p}) r"), reporting


def _chunks(items, size):
    for i in range(0, len(items), size):
        yield items[i:i + size]


def _apply(job, new_events):
    """Move the job along `new_events` (sorted by seq); a final status never changes."""
    now = time.time()
    for e in new_events:
        if job.status in FINAL:
            return
        if e.status in FINAL:
            _finish(job, lifecycle.move(job.status, Trigger.FINISH, e.status), e.code, e.message,
                    step=e.step, report=e.report, wct=e.metrics.get("wct_s"))
        elif e.seq > job.last_seq:
            job.status = lifecycle.move(job.status, Trigger.REPORT)
            if e.step:
                job.step = e.step
                job.message = e.message or STEP_LABELS[Step(e.step)]
            elif e.message and e.kind != "heartbeat":
                job.message = e.message
            if job.started_at is None:
                job.started_at = datetime.datetime.fromtimestamp(e.time, datetime.timezone.utc).replace(tzinfo=None) \
                    if e.time else m.utcnow()
        job.last_seq = max(job.last_seq, e.seq)
    if job.status not in FINAL:
        job.heartbeat_at = now


def _finish(job, status, code, message, step=None, report=None, wct=None):
    job.status = status
    job.error_code = code
    job.message = message or lookup(code).message
    job.step = step or job.step
    job.finished_at = m.utcnow()
    if report is not None:
        job.report = report
    if wct is None and report:
        wct = report.get("wct_s")
    if wct is None and job.started_at is not None:
        wct = (job.finished_at - job.started_at).total_seconds()
    job.wct = float(wct) if isinstance(wct, (int, float)) else None
    job.retry_at = retries.due_at(job, code)   # every end of an attempt passes here: the automatic retry


def _pending_command(job, new_events):
    """The current attempt's command while no event acknowledged it (`ack`) and the job runs:
    repeated in every reply, so a lost reply loses nothing. `new_events` may hold the ack."""
    if job.status in FINAL:
        return None
    attempt = db.for_update(m.Attempt.select().where(
        (m.Attempt.job == job.id) & (m.Attempt.number == job.attempt))).first()
    if attempt is None or attempt.command is None or attempt.command_delivered_at is not None:
        return None
    if any(e.ack == attempt.command for e in new_events):
        attempt.command_delivered_at = m.utcnow()
        attempt.save(only=[m.Attempt.command_delivered_at])
        return None
    return attempt.command


def _server_final(job, status, code, message):
    """Finish `job` on the server's own decision, with an event in its history."""
    _finish(job, status, code, message)
    job.save()
    m.Event.insert(job=job.id, attempt=job.attempt, seq=SERVER_SEQ, time=time.time(),
                   status=status, kind="final", code=code, message=job.message).on_conflict_ignore().execute()


def kill_job(job_id):
    """Kill a job: a prepared one ends now (062); a submitted or running one's attempt gets `kill`,
    repeated in replies until the wrapper acknowledges it; a final one is refused (409)."""
    with db.write_transaction():
        job = _locked_job(job_id)
        if job.status in FINAL and job.retry_at is not None:   # ended, waiting for its automatic retry
            job.retry_at = None
            job.save(only=[m.Job.retry_at])
            return {"id": job.id, "status": job.status, "command": None, "retry_cancelled": True}
        try:
            status = lifecycle.move(job.status, Trigger.KILL)
        except lifecycle.IllegalTransition as exc:
            raise conflict("job-final", f"job {job_id} cannot be killed: {exc}") from None
        if status != job.status:   # never handed out: it ends here
            _server_final(job, status, 62, "killed on a manager's request before it started")
            return {"id": job.id, "status": job.status, "command": None}
        m.Attempt.update(command="kill", command_delivered_at=None).where(
            (m.Attempt.job == job.id) & (m.Attempt.number == job.attempt)).execute()
    return {"id": job.id, "status": job.status, "command": "kill", "attempt": job.attempt}


def resubmit_job(job_id, trigger=Trigger.RESUBMIT):
    """Start a new attempt of a failed, sys-failed or timed-out job (409 otherwise): the job is
    prepared again, with no token until it is handed to a backend, and the old attempt's token
    gets 409 on every report, fence and registration. A manager's resubmit cancels a scheduled
    automatic retry; `trigger` RETRY is that retry (server/retries.py)."""
    with db.write_transaction():
        job = _locked_job(job_id)
        try:
            job.status = lifecycle.move(job.status, trigger)
        except lifecycle.IllegalTransition as exc:
            raise conflict("not-resubmittable", f"job {job_id} cannot be resubmitted: {exc}") from None
        job.attempt += 1
        m.Attempt.create(job=job.id, number=job.attempt, automatic=trigger == Trigger.RETRY)
        for field in ("step", "error_code", "gjid", "heartbeat_at", "wct", "report",
                      "submitted_at", "started_at", "finished_at", "retry_at"):
            setattr(job, field, None)
        job.message, job.last_seq = "", 0
        job.prepared_at = m.utcnow()
        job.save()
    return {"id": job.id, "status": job.status, "attempt": job.attempt}


def mark_submitted(job_id, gjid=None, backend=None):
    """A backend handed the job to a batch system: prepared -> submitted (for backends)."""
    with db.write_transaction():
        job = _locked_job(job_id)
        try:
            job.status = lifecycle.move(job.status, Trigger.SUBMIT)
        except lifecycle.IllegalTransition as exc:
            raise conflict("not-prepared", f"job {job_id} cannot be marked submitted: {exc}") from None
        job.gjid, job.backend = gjid, backend
        job.submitted_at = m.utcnow()
        job.save()
    return job


def end_batch_job(job_id, attempt, gjid, code, message):
    """The batch job `gjid` of this attempt died before its wrapper's final report: sys-failed `code`.

    Returns True when the job was changed (False: it finished, moved on, or was resubmitted meanwhile).
    """
    with db.write_transaction():
        job = _locked_job(job_id)
        if not lifecycle.may(job.status, Trigger.BATCH_END) or job.attempt != attempt or job.gjid != gjid:
            return False
        _server_final(job, lifecycle.move(job.status, Trigger.BATCH_END), code, message)
    return True


BATCH_STARTED = "the batch job started; no report from its wrapper yet"


def start_batch_job(job_id, attempt, gjid, now=None):
    """The batch system started the batch job `gjid` of this attempt before its wrapper reported
    (the poller saw it): submitted -> running (batch-start), started now.

    Its heartbeat clock starts now too: the reaper gives the wrapper heartbeat_multiple x heartbeat_s
    from the batch start for its first report, as it gives every running job between two reports.
    One conditional UPDATE (still submitted, same attempt and gjid), so a wrapper's report or final
    event, a kill or a resubmit that got there first keeps the job as it made it, and nothing moves
    back. True when the job was moved.
    """
    now = time.time() if now is None else now
    started = datetime.datetime.fromtimestamp(now, datetime.timezone.utc).replace(tzinfo=None)
    moved = 0
    with db.write_transaction():
        for status in lifecycle.allowed_from(Trigger.BATCH_START):
            moved += m.Job.update(status=lifecycle.move(status, Trigger.BATCH_START), started_at=started,
                                  heartbeat_at=now, message=BATCH_STARTED).where(
                (m.Job.id == job_id) & (m.Job.attempt == attempt) & (m.Job.gjid == gjid)
                & (m.Job.status == status)).execute()
    return moved > 0


def reap(multiple, now=None):
    """Mark running jobs silent for more than `multiple` x heartbeat_s as timeout 100; return their ids."""
    now = time.time() if now is None else now
    silent = ((m.Job.status == Status.RUNNING.value)
              & (m.Job.heartbeat_at + m.Job.heartbeat_s * multiple < now))
    reaped = []
    for (job_id,) in m.Job.select(m.Job.id).where(silent).tuples():
        with db.write_transaction():
            job = db.for_update(m.Job.select().where((m.Job.id == job_id) & silent)).first()
            if job is None:   # a report arrived meanwhile
                continue
            _server_final(job, lifecycle.move(job.status, Trigger.REAP), 100,
                          f"no report for {now - job.heartbeat_at:.0f} s (heartbeat every {job.heartbeat_s:g} s)"
                          + ("; its wrapper never reported after the batch job started" if job.last_seq == 0 else ""))
            reaped.append(job_id)
    return reaped
