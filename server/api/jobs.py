"""Jobs: the job monitor's list, details, descriptions, reports, logs, kill and resubmit.

The job monitor's planner (filters, sorts, cursors, totals) lives in server/monitor.py, shared with the page.
"""
from flask import Blueprint, Response, jsonify, request

from shared import schema as s
from shared.events import parse_events

from .. import auth, db, jobs, metrics, monitor, removals
from .. import models as m
from ..errors import ApiError, not_found
from ..monitor import SUBMITTERS
from ..settings import base_url
from ..settings import settings
from .params import json_body, query_int, query_text

from . import schemas as S
from .endpoint import BACKEND_UNAVAILABLE, endpoint

bp = Blueprint("jobs", __name__)

MAX_PER_PAGE = 1000


@bp.get("/jobs")
@auth.require("monitoring")
@endpoint(
    "Job monitor query; deep pages by `after` (the previous page's `next`) rather than `page`",
    reply=S.JobPage, query=S.JobListQuery)
def list_jobs():
    sort = query_text("sort", 32) or "runnum"
    plan = monitor.monitor_query(sort)
    page = query_int("page", 1, lo=1, hi=10 ** 6)
    per_page = query_int("per_page", 50, lo=1, hi=MAX_PER_PAGE)
    after = monitor.after_cursor(sort)
    rows = monitor.job_rows(list(plan.cond) + ([after] if after is not None else []), plan.order(),
                            1 if after is not None else page, per_page)
    following = (monitor.summary_cursor(rows[-1], sort)
                 if len(rows) == per_page and sort.lstrip("-") in monitor.KEYSET_SORTS else None)
    return jsonify({"jobs": rows,
                    "total": plan.total, "total_is_estimate": plan.estimated,
                    "page": None if after is not None else page, "per_page": per_page, "next": following})


@bp.get("/jobs/<id:job_id>")
@auth.require("monitoring")
@endpoint("A job with history, outputs, logs, report, input, removals, times and retries", reply=S.Job)
def get_job(job_id):
    return jsonify(jobs.job_details(jobs.get_job(job_id)))


@bp.get("/jobs/<id:job_id>/description")
@auth.require(*SUBMITTERS)
@endpoint(
    "The job description, its token redacted (reading never voids the token of a copy already shipped)",
    reply=S.JobDescription, errors=((422, "the stored settings make no valid description"),))
def get_description(job_id):
    """The description with its token redacted: reading never breaks a shipped copy."""
    return jsonify(jobs.job_description(jobs.get_job(job_id), base_url()))


@bp.post("/jobs/<id:job_id>/token")
@auth.require(*SUBMITTERS)
@endpoint(
    "A new token for a prepared or submitted job (the old one gets 401; recorded as an activity); the "
    "description carrying it. 409 once the job started",
    reply=S.JobDescription, errors=((422, "the stored settings make no valid description"),))
def rotate_token(job_id):
    """A new token for a prepared or submitted job (recorded); the description that carries it."""
    return jsonify(jobs.rotate_token(job_id, auth.current_principal().user, base_url()))


@bp.get("/jobs/<id:job_id>/attempt")
@endpoint(
    "The fence, asked before stage-out and registration (job token): 409 attempt-superseded or "
    "attempt-ended when the attempt may write nothing more",
    reply=S.AttemptState, auth="job", errors=((409, "attempt-superseded or attempt-ended"),))
def get_attempt(job_id):
    """The fence: 200 while the token's attempt is current and the job runs, else 409."""
    return jsonify(jobs.attempt_state(job_id, auth.job_attempt(job_id)))


@bp.post("/jobs/<id:job_id>/removals")
@endpoint(
    "Files an attempt wrote and could not delete, for the server to delete (job token of any attempt of "
    "the job; only names of that job's outputs and logs)",
    body=S.RemovalIn, many=1000, reply=S.RemovalsFiled, auth="job")
def post_removals(job_id):
    """Files an attempt wrote and could not delete (any attempt of the job, superseded included)."""
    attempt = auth.job_attempt(job_id)
    items = removals.parse_items(json_body((dict, list)))
    with db.write_transaction():
        filed = removals.file_from_wrapper(jobs.get_job(job_id), attempt.number, items)
    return jsonify({"filed": filed, "asked": len(items)})


@bp.post("/jobs/<id:job_id>/events")
@endpoint(
    "A wrapper's events (job token); shared/events.py reads them",
    body=S.Event, many=1000, body_validated=False, reply=S.EventsReply, auth="job")
def post_events(job_id):
    token = auth.job_token()
    try:
        events = parse_events(json_body((dict, list)))
    except (ApiError, s.SchemaError):
        auth.job_attempt(job_id)   # a bad token hears so before a bad body does
        raise
    # The common report checks the token inside its one statement; anything else, and a
    # token it did not take, is authenticated first and goes the general way.
    reply = jobs.record_running(job_id, auth.hash_token(token), events)
    if reply is None:
        reply = jobs.record_events(job_id, auth.job_attempt(job_id), events)
    metrics.EVENTS_RECEIVED.inc(reply["accepted"])
    return jsonify(reply)


@bp.post("/jobs/<id:job_id>/kill")
@auth.require(*SUBMITTERS)
@endpoint(
    "Kill a prepared, submitted or running job, or cancel a final job's scheduled automatic retry "
    "(`retry_cancelled`; 409 otherwise)",
    reply=S.KillReply)
def kill(job_id):
    return jsonify(monitor.kill(job_id))


def _optional_body():
    return json_body() if request.get_data(cache=True) else {}


@bp.post("/jobs/<id:job_id>/resubmit")
@auth.require(*SUBMITTERS)
@endpoint(
    "New attempt for a failed, sys-failed or timeout job (409 otherwise); with `backend`, submitted again",
    body=S.Resubmit, body_required=False, reply=S.ResubmitOne,
    errors=(BACKEND_UNAVAILABLE,))
def resubmit(job_id):
    return jsonify(monitor.resubmit(job_id, _optional_body()))


@bp.post("/jobs/resubmit")
@auth.require(*SUBMITTERS)
@endpoint(
    "Resubmit the failed, sys-failed and timeout jobs matching the job monitor's filters (at least one)",
    body=S.Resubmit, body_required=False, query=S.JobQuery, reply=S.ResubmitMany,
    errors=(BACKEND_UNAVAILABLE,))
def resubmit_many():
    """Resubmit the failed, sys-failed and timeout jobs that match the job monitor's filters (query string)."""
    return jsonify(monitor.resubmit_matching(_optional_body()))


@bp.put("/jobs/<id:job_id>/log")
@endpoint(
    "Upload the log tarball (job token)",
    body="gzip", body_validated=False, query=S.LogQuery, reply=S.LogStored, auth="job")
def put_log(job_id):
    attempt = auth.job_attempt(job_id)
    number = query_int("attempt", attempt.number, lo=1, hi=100_000)
    if number != attempt.number:
        raise ApiError(403, "forbidden", f"this token is for attempt {attempt.number}, not {number}")
    limit = settings().max_log_bytes
    data = request.get_data(cache=False)
    if len(data) > limit:
        raise ApiError(413, "too-large", f"the log is larger than {limit} bytes")
    with db.write_transaction():
        job = jobs.get_job(job_id)
        if job.attempt != attempt.number:
            raise ApiError(409, "attempt-superseded", f"attempt {attempt.number} of job {job_id} was superseded")
        m.JobLog.insert(job=job_id, attempt=attempt.number, data=data, size=len(data),
                        created_at=m.utcnow()).on_conflict(
            conflict_target=[m.JobLog.job, m.JobLog.attempt],
            update={m.JobLog.data: data, m.JobLog.size: len(data), m.JobLog.created_at: m.utcnow()}).execute()
    return jsonify({"stored": len(data)})


@bp.get("/jobs/<id:job_id>/log")
@auth.require("monitoring")
@endpoint("Download the log tarball", query=S.LogQuery, reply="gzip")
def get_log(job_id):
    job = jobs.get_job(job_id)
    query = m.JobLog.select().where(m.JobLog.job == job.id)
    number = query_int("attempt", lo=1, hi=100_000)
    if number is not None:
        query = query.where(m.JobLog.attempt == number)
    row = query.order_by(m.JobLog.attempt.desc()).first()
    if row is None:
        raise not_found(f"job {job_id} has no log stored" + (f" for attempt {number}" if number else ""))
    return Response(bytes(row.data), mimetype="application/gzip", headers={
        "Content-Disposition": f"attachment; filename=job-{job.runnum}-{row.attempt}.tgz"})
