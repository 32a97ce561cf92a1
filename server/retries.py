"""Automatic retries (seed 004: a failed run is put back in the queue and attempted later as a new run).

A request's retry policy: `max_attempts` (default 3; 1: no automatic retry) and `retry_backoff_s`
(default 600). When an attempt ends (the wrapper's final event, the reaper's 100, the batch poller's
end of a silent batch job: jobs._finish), `due_at` decides whether the job gets another attempt,
and when. It does when
- its code is retryable in the error table and blamed neither on the payload nor on the manager
  (shared/errors.py), and no manager killed the attempt (062, or a `kill` command it was sent:
  a killed wrapper may end 060 when the batch system's signal comes first);
- it was handed to a backend (a job run by hand has nobody to run its next attempt);
- it has attempts left: its attempt number is below the request's max_attempts (a manager's
  resubmits count as attempts too; a manager may always resubmit by hand).
The retry is due `retry_backoff_s` after the end, doubled for each earlier attempt, at most
MAX_BACKOFF_S. Until then the job keeps its final status, with `Job.retry_at` (Unix seconds) set.

`run_due` (the batch poller's thread of each serving process; `sbk poll` and `sbk reap` once)
claims each due job with one conditional UPDATE (still final, still due, same attempt), so of
two server processes only one retries it. The claim's transaction makes the new attempt
(`RETRY` in shared/lifecycle.py, the server's own resubmit: jobs.resubmit_job), at another site
when the failure was blamed on the site or its storage and one is allowed (the submission rules'
own marks: submissions.site_marks), else at the same site; the job is then submitted through
the backend its last attempt used. A manager's resubmit or kill cancels a scheduled retry
(jobs.resubmit_job, jobs.kill_job).

The claim commits the new prepared attempt before the backend is called, so it is a lease: the
prepared attempt keeps `retry_at` = claim + SUBMIT_LEASE_S until it is submitted. A process killed
in between leaves it so, and once the lease ends a poller claims the lease as it claimed the retry
and submits the attempt (no new attempt). A submission the backend refused ends the lease: the job
stays prepared, its message saying why, for a manager.
"""
import logging
import time

from shared import lifecycle
from shared import schema as s
from shared.errors import lookup
from shared.lifecycle import Trigger
from shared.states import Status

from . import db, search_text
from . import models as m
from .backends import BackendError
from .errors import ApiError

log = logging.getLogger("sbk.retries")

DEFAULT_MAX_ATTEMPTS = 3
DEFAULT_BACKOFF_S = 600.0
MAX_ATTEMPTS = 20
MAX_BACKOFF_S = 6 * 3600.0         # a doubled back-off stops growing here
NEVER = ("payload", "manager")     # blames never retried automatically: the job or a person decided
ELSEWHERE = ("site", "storage")    # blames that send the retry to another site when there is one
KILLED = 62
RETRYABLE_FROM = lifecycle.allowed_from(Trigger.RETRY)
DUE_PER_PASS = 200                 # jobs one pass retries; the next pass takes the rest
SUBMIT_LEASE_S = 600.0             # a claimed retry not submitted by then is submitted by another pass

# The request's settings of the policy, with their readers (production_requests.SETTINGS holds them).
POLICY = {
    "max_attempts": lambda d, k: s.integer(d, k, lo=1, hi=MAX_ATTEMPTS),
    "retry_backoff_s": lambda d, k: s.number(d, k, hi=MAX_BACKOFF_S),
}


def backoff(backoff_s, attempt):
    """Seconds between the end of attempt `attempt` and its automatic retry: doubling, capped."""
    return min(backoff_s * 2 ** max(attempt - 1, 0), MAX_BACKOFF_S)


def due_at(job, code, now=None):
    """When `job`, whose current attempt just ended with `code` (its status already set), is retried
    automatically, in Unix seconds; None when it is not (the module doc's rules)."""
    if code is None:
        return None
    entry = lookup(code)
    if not entry.retryable or entry.blame in NEVER or code == KILLED:
        return None
    if not job.backend or job.status not in RETRYABLE_FROM:
        return None
    policy = m.Request.select(m.Request.max_attempts, m.Request.retry_backoff_s).where(
        m.Request.id == job.request_id).tuples().first()
    if policy is None or job.attempt >= policy[0]:
        return None
    command = m.Attempt.select(m.Attempt.command).where(
        (m.Attempt.job == job.id) & (m.Attempt.number == job.attempt)).scalar()
    if command == "kill":
        return None
    return (time.time() if now is None else now) + backoff(policy[1], job.attempt)


def judge_late_hand_off(job_id, attempt):
    """A wrapper whose attempt ended before its backend's hand-off was recorded (a fast failure) was
    judged without a backend (due_at: nobody to run a retry); judge its end again now that it has one
    (inside the hand-off's transaction)."""
    job = m.Job.get_or_none((m.Job.id == job_id) & (m.Job.attempt == attempt))
    if job is None or job.status not in RETRYABLE_FROM or job.retry_at is not None:
        return
    due = due_at(job, job.error_code)
    if due is not None:
        m.Job.update(retry_at=due).where((m.Job.id == job_id) & (m.Job.attempt == attempt)
                                         & (m.Job.status == job.status) & m.Job.retry_at.is_null()).execute()


def retry_site(job, settings=None):
    """Where the next attempt of `job` (locked, final) runs: another site allowed for its production
    and session when its failure was blamed on the site or its storage, else its own. Among the
    others: those the job's backend has a site configuration for (when `settings` are given), the one
    with the fewest failures counted against its threshold first, then by name."""
    from . import batch, submissions   # (they import the job core, which imports this module)
    if lookup(job.error_code).blame not in ELSEWHERE:
        return job.site
    production = job.production
    main = production.twin if production.is_test else production
    # the submission rules' marks: enabled for the session, supported (main jobs only), allowed
    names = [mark["site"] for mark in submissions.site_marks(main)
             if mark["site"] != job.site.name and mark["enabled"] and mark["allowed"]
             and (mark["supported"] or job.test)]
    if settings is not None:   # a site the backend has no configuration to ship for is no target
        names = [name for name in names if _has_config(batch, name, settings)]
    sites = list(m.Site.select().where(m.Site.name.in_(names))) if names else []
    if not sites:
        return job.site
    return min(sites, key=lambda site: (submissions.recent_failures(site), site.name))


def _has_config(batch, name, settings):
    try:
        batch.site_config_text(name, settings)
        return True
    except BackendError:
        return False


def claim(job_id, attempt, now, settings=None):
    """Claim the due retry of `job_id`'s attempt `attempt` and start the new attempt (RETRY);
    return the new attempt's summary {"id", "attempt", "site", "from_site", "old_gjid"}, or None when another
    process claimed it first, or a manager resubmitted, killed or rescheduled it meanwhile."""
    from . import jobs
    with db.write_transaction():
        # The claim: one conditional UPDATE. Of two processes the second finds retry_at gone (its
        # UPDATE waits on the row and then re-reads it on PostgreSQL; SQLite runs one writer).
        claimed = m.Job.update(retry_at=None).where(
            (m.Job.id == job_id) & (m.Job.attempt == attempt) & m.Job.status.in_(RETRYABLE_FROM)
            & m.Job.retry_at.is_null(False) & (m.Job.retry_at <= now)).execute()
        if claimed != 1:
            return None
        job = db.for_update(m.Job.select().where(m.Job.id == job_id)).first()
        ended = job.site
        site = retry_site(job, settings)
        code = job.error_code
        jobs.resubmit_job(job_id, Trigger.RETRY)
        max_attempts = job.request.max_attempts
        message = (f"automatic retry {attempt + 1} of {max_attempts} after E{code:03d} at {ended.name}"
                   + (f", moved to {site.name}" if site.id != ended.id else ""))
        changes = {m.Job.retries: m.Job.retries + 1, m.Job.message: message, m.Job.retry_at: now + SUBMIT_LEASE_S}
        if site.id != ended.id:
            changes.update({m.Job.site: site.id, m.Job.search: search_text.job_text(
                job.production.name, job.user.name if job.user_id else None, job.request.parameters,
                site.name, job.runnum)})
        m.Job.update(changes).where(m.Job.id == job_id).execute()
        m.Activity.create(user=None, kind="job-retried", session=job.session.name,
                          info=f"Job {job.id} (runnum {job.runnum}): {message}",
                          ref={"job": job.id, "attempt": attempt + 1, "site": site.name, "code": code})
    return {"id": job_id, "attempt": attempt + 1, "site": site.name, "from_site": ended.name, "old_gjid": job.gjid}


def due_jobs(now, backends=None, limit=DUE_PER_PASS):
    """(job id, attempt, backend) of the retries due at `now`, the longest due first."""
    query = m.Job.select(m.Job.id, m.Job.attempt, m.Job.backend).where(
        m.Job.retry_at.is_null(False) & (m.Job.retry_at <= now) & m.Job.status.in_(RETRYABLE_FROM))
    if backends is not None:
        query = query.where(m.Job.backend.in_(list(backends)))
    return list(query.order_by(m.Job.retry_at).limit(limit).tuples())


def lapsed_leases(now, backends=None, limit=DUE_PER_PASS):
    """(job id, attempt, backend) of claimed retries whose process never submitted them."""
    query = m.Job.select(m.Job.id, m.Job.attempt, m.Job.backend).where(
        m.Job.retry_at.is_null(False) & (m.Job.retry_at <= now) & (m.Job.status == Status.PREPARED.value)
        & m.Job.backend.is_null(False))
    if backends is not None:
        query = query.where(m.Job.backend.in_(list(backends)))
    return list(query.order_by(m.Job.retry_at).limit(limit).tuples())


def claim_lease(job_id, attempt, now):
    """Take over a lapsed lease (one conditional UPDATE, as the claim); the attempt's summary or None."""
    with db.write_transaction():
        claimed = m.Job.update(retry_at=now + SUBMIT_LEASE_S).where(
            (m.Job.id == job_id) & (m.Job.attempt == attempt) & (m.Job.status == Status.PREPARED.value)
            & m.Job.retry_at.is_null(False) & (m.Job.retry_at <= now)).execute()
        if claimed != 1:
            return None
        job = m.Job.select(m.Job.site).where(m.Job.id == job_id).first()
        return {"id": job_id, "attempt": attempt, "site": job.site.name, "from_site": job.site.name,
                "old_gjid": None}


def run_due(settings, base_url, now=None, backends=None):
    """Start the due retries (claimed one by one) and submit each backend's new attempts in one call.

    Returns {"retried": [claim summaries], "errors": [{"site", "jobs", "error"}]}: a job whose
    submission failed stays prepared, its message saying why (a manager submits it).
    """
    from . import batch
    now = time.time() if now is None else now
    reply = {"retried": [], "errors": []}
    if not base_url:
        if due_jobs(now, backends, limit=1):
            log.warning("retries are due but no server URL is known for their job descriptions: set SBK_PUBLIC_URL")
        return reply
    by_backend = {}
    for job_id, attempt, backend in due_jobs(now, backends):
        started = claim(job_id, attempt, now, settings)
        if started is not None:
            reply["retried"].append(started)
            by_backend.setdefault(backend, []).append(job_id)
    for job_id, attempt, backend in lapsed_leases(now, backends):
        started = claim_lease(job_id, attempt, now)
        if started is not None:
            log.warning("job %d: attempt %d was claimed for a retry and never submitted; submitting it", job_id, attempt)
            reply["retried"].append(started)
            by_backend.setdefault(backend, []).append(job_id)
    for backend, ids in by_backend.items():
        # A timed-out attempt's batch job may still run (its heartbeats lost, not its node): stopped, as
        # a manager's resubmit stops it; a batch job that ended is left alone by every backend's cancel.
        old = [r["old_gjid"] for r in reply["retried"] if r["id"] in ids and r["old_gjid"]]
        batch.cancel(backend, old, settings)
        try:
            submitted = batch.submit_jobs(ids, backend, base_url, settings)
        except ApiError as exc:   # 503: the backend cannot be built in this process
            submitted = {"errors": [{"site": "", "jobs": ids, "error": exc.message}]}
        for error in submitted["errors"]:
            reply["errors"].append(error)
            with db.write_transaction():
                m.Job.update(message=f"automatic retry not submitted to {backend}: {error['error']}"[:4096],
                             retry_at=None).where(
                    m.Job.id.in_(error["jobs"]) & (m.Job.status == Status.PREPARED.value)).execute()
    if reply["retried"]:
        log.info("retried %d job(s) automatically: %s", len(reply["retried"]),
                 [r["id"] for r in reply["retried"]][:20])
    return reply


def one_shot(settings, backends=None):
    """The due retries of a one-shot command (`sbk poll [--backend]`, `sbk reap`), as a line: those of
    every backend (or of `backends`) but `local`, whose processes belong to the serving process that
    starts them (its poller retries those). The descriptions get SBK_PUBLIC_URL."""
    from .backends import BACKENDS
    backends = [b for b in (backends or BACKENDS) if b != "local"]
    with db.connection():
        if not settings.public_url:
            due = len(due_jobs(time.time(), backends))
            return "retried 0 job(s)" + (f"; {due} due, left waiting: set SBK_PUBLIC_URL, the URL their "
                                          "descriptions name" if due else "")
        reply = run_due(settings, settings.public_url, backends=backends)
    ids = [r["id"] for r in reply["retried"]]
    failed = sorted({j for e in reply["errors"] for j in e["jobs"]})
    return (f"retried {len(ids)} job(s)" + (f": {' '.join(map(str, ids))}" if ids else "")
            + (f"; not submitted, left prepared: {' '.join(map(str, failed))}" if failed else ""))


def job_retry(job):
    """What `GET /jobs/<id>` and `sbk job` show of a job's retries: when the next one is due, how many
    the server made, the policy's limit, and each attempt (automatic or not)."""
    return {"retry_at": m.iso(job.retry_at), "retries": job.retries, "max_attempts": job.request.max_attempts,
            "attempts": [{"number": a.number, "automatic": a.automatic, "created_at": m.iso(a.created_at)}
                         for a in m.Attempt.select(m.Attempt.number, m.Attempt.automatic, m.Attempt.created_at)
                         .where(m.Attempt.job == job.id).order_by(m.Attempt.number)]}
