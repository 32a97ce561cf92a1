"""Follow-up stages (issue 15; seeds 002 and 004): what runs after a request's jobs, and when.

A request may name a follow-up stage (`followup`): one of its session's step templates (typically a
`merge`, seed 002's merging of the Monte Carlo output) with a condition, evaluated by the server
whenever one of the request's jobs ends (seed 004's callback after each stage), and again at every
batch poll (for the ends the server itself decides: reaper, batch end, kill):

    all       every job of the request is done, and its required events (when it sets them) are
    fraction  at least `fraction` of its jobs are done and every other is final, none waiting for an
              automatic retry

When it holds, the server prepares the stage's jobs (`Job.stage` = the template's name): their
inputs are the request's registered outputs (the files matching its output patterns; not the logs),
`files_per_job` a job (0: all in one), their outputs under <output_lfn>/<stage> matching the stage's
`patterns`. Once per request: the request's row is locked while the condition is read, and a stage
that has jobs is not prepared again. The batch poller then submits them through the backend the
request's last job ran on, each job claimed by one server process (a conditional UPDATE).

A stage job's description is the request's, with the stage's template as its one step, LIST input
of its files and the stage's output directory and patterns (jobs.job_description asks stage_payload).
"""
import fnmatch
import logging
import posixpath
import time

import peewee as pw

from shared import schema as s
from shared.jobdesc import NAME_RE
from shared.lifecycle import FINAL
from shared.states import Status

from . import db, retries, search_text
from . import models as m
from .errors import bad_request
from .request_rules import check_steps

log = logging.getLogger("sbk.stages")

CONDITIONS = ("all", "fraction")
DEFAULT_PATTERNS = ("*.merged.*",)
MAX_FILES_PER_JOB = 10_000
FOLLOWUP_FIELDS = ("template", "condition", "fraction", "files_per_job", "patterns")


# ---------------------------------------------------------------- the request's setting

def read_followup(body, key):
    """A request's `followup`: {} (none), or {"template", "condition", "fraction", "files_per_job",
    "patterns"} with defaults filled in."""
    raw = body[key]
    if raw in (None, {}):
        return {}
    if not isinstance(raw, dict):
        raise s.SchemaError(f"'{key}' must be an object like {{\"template\": \"merge\", \"condition\": \"all\"}}")
    s.refuse_unknown(raw, FOLLOWUP_FIELDS, f"{key}.")
    condition = s.text(raw, "condition", f"{key}.", default="all")
    if condition not in CONDITIONS:
        raise s.SchemaError(f"'{key}.condition' must be one of {', '.join(CONDITIONS)}")
    fraction = s.number(raw, "fraction", f"{key}.", default=1.0 if condition == "all" else None, lo=0.0, hi=1.0) \
        if (condition == "fraction" or "fraction" in raw) else 1.0
    if condition == "fraction" and "fraction" not in raw:
        raise s.SchemaError(f"'{key}.fraction' is missing: condition fraction needs it (0 to 1)")
    return {"template": s.text(raw, "template", f"{key}.", pattern=NAME_RE, max_len=64),
            "condition": condition, "fraction": float(fraction),
            "files_per_job": s.integer(raw, "files_per_job", f"{key}.", default=0, hi=MAX_FILES_PER_JOB),
            "patterns": list(s.text_list(raw, "patterns", f"{key}.", default=DEFAULT_PATTERNS, max_items=100,
                                         pattern=r"[^/\x00]+", max_len=256))}


def check_followup(session, followup):
    """The stage's template is one of the session's (400)."""
    if followup:
        check_steps(session, [{"template": followup["template"], "parameters": {}}])


# ---------------------------------------------------------------- where a request's stage stands

def _main_counts(request_id):
    """{status: (jobs, events)} of the request's own jobs (not its stage's), and how many wait for a retry."""
    rows = (m.Job.select(m.Job.status, m.fn.COUNT(m.Job.id), m.fn.SUM(m.Job.events))
            .where((m.Job.request == request_id) & (m.Job.stage == "")).group_by(m.Job.status).tuples())
    counts = {status: (n, int(events or 0)) for status, n, events in rows}
    retry = getattr(m.Job, "retry_at", None)    # automatic retries (server/retries.py), when scheduled
    waiting = 0 if retry is None else m.Job.select().where(
        (m.Job.request == request_id) & (m.Job.stage == "") & retry.is_null(False)).count()
    return counts, waiting


def condition_holds(req, counts, waiting):
    """Whether the request's follow-up stage may start: (bool, why not as a short phrase)."""
    rule = req.followup
    total = sum(n for n, _ in counts.values())
    done, done_events = counts.get(Status.DONE.value, (0, 0))
    if total == 0:
        return False, "no jobs yet"
    if waiting:
        return False, f"{waiting} job(s) wait for an automatic retry"
    final = sum(n for status, (n, _) in counts.items() if status in FINAL)
    if final < total:
        return False, f"{total - final} of {total} jobs not finished"
    if rule["condition"] == "all":
        if done < total:
            return False, f"{total - done} of {total} jobs not done"
        if req.required_events and done_events < req.required_events:
            return False, f"{done_events} of the {req.required_events} required events done"
        return True, ""
    if done < rule["fraction"] * total:
        return False, f"{done} of {total} jobs done, {rule['fraction']:g} needed"
    return True, ""


def stage_state(req):
    """What the request page and `sbk request show` say of its stage: None without one."""
    rule = req.followup
    if not rule:
        return None
    state = {"template": rule["template"], "condition": rule["condition"], "fraction": rule["fraction"],
             "files_per_job": rule["files_per_job"], "patterns": rule["patterns"]}
    jobs = dict(m.Job.select(m.Job.status, m.fn.COUNT(m.Job.id)).where(
        (m.Job.request == req.id) & (m.Job.stage == rule["template"])).group_by(m.Job.status).tuples())
    if jobs:
        state.update(state="done" if set(jobs) == {"done"} else "started", jobs=jobs, waiting_for="")
    else:
        holds, why = condition_holds(req, *_main_counts(req.id))
        state.update(state="due" if holds else "waiting", jobs={}, waiting_for=why)
    return state


# ---------------------------------------------------------------- preparing the stage's jobs

def after_job_end(request_id):
    """A job of the request ended: prepare its follow-up stage if the condition now holds. Returns
    the ids of the stage's new jobs ([] when none were made)."""
    from .submissions import SUBMIT_LOCK_KEY
    with db.connection():
        if not _due(m.Request.get_or_none(m.Request.id == request_id)):
            return []       # the common case, decided without a lock
    with db.write_transaction():
        # Runnums are taken under the submissions' lock, then the request's row: in that order, as a
        # submission does, so the two cannot deadlock. Two jobs ending at once: the second finds the
        # stage's jobs made.
        db.advisory_lock(SUBMIT_LOCK_KEY)
        req = db.for_update(m.Request.select().where(m.Request.id == request_id)).first()
        return _prepare(req) if _due(req) else []


def job_ended(request_id):
    """after_job_end for the wrapper's final report: a failure here is logged, never the wrapper's
    (its report is stored; the next batch poll evaluates the stage again)."""
    try:
        return after_job_end(request_id)
    except Exception:
        log.exception("request %d: its follow-up stage could not be evaluated", request_id)
        return []


def _due(req):
    """The request has a follow-up stage, without jobs yet, whose condition holds."""
    if req is None or not req.followup:
        return False
    if m.Job.select().where((m.Job.request == req.id) & (m.Job.stage == req.followup["template"])).exists():
        return False
    return condition_holds(req, *_main_counts(req.id))[0]


def _outputs(req):
    """The registered outputs of the request's done jobs that match its output patterns, by LFN."""
    rows = (m.CatalogFile.select(m.CatalogFile.lfn).join(m.Replica).join(m.Job)
            .where((m.Job.request == req.id) & (m.Job.stage == "") & (m.Job.status == Status.DONE.value))
            .distinct().order_by(m.CatalogFile.lfn).tuples())
    return [lfn for (lfn,) in rows
            if any(fnmatch.fnmatchcase(posixpath.basename(lfn), p) for p in req.output_patterns)]


def _prepare(req):
    from .submissions import _Runnums
    rule = req.followup
    files = _outputs(req)
    if not files:
        log.warning("request %d: its follow-up stage %s has no registered outputs to take", req.id, rule["template"])
        return []
    size = rule["files_per_job"] or len(files)
    slices = [files[i:i + size] for i in range(0, len(files), size)]
    first, last = _Runnums().block(req, len(slices))
    last_job = (m.Job.select(m.Job.site, m.Job.backend, m.Job.heartbeat_s, m.Job.test, m.Job.user)
                .where((m.Job.request == req.id) & (m.Job.stage == "")).order_by(m.Job.finished_at.desc(nulls="LAST")).first())
    prod, now = req.production, m.utcnow()
    # where the outputs are: the request's first output site (a known site: request_rules checks it)
    site = m.Site.get_or_none(m.Site.name == (req.output_sites or [None])[0]) or last_job.site
    user = last_job.user if last_job.user_id else None
    rows = [{"runnum": runnum, "events": 0, "request": req.id, "production": prod.id, "session": prod.session_id,
             "site": site.id, "user": user.id if user else None, "test": last_job.test, "log_to_db": False,
             "status": Status.PREPARED.value, "heartbeat_s": last_job.heartbeat_s, "prepared_at": now,
             "backend": None, "stage": rule["template"], "input_paths": chunk,
             "message": f"follow-up stage {rule['template']} of request {req.id}",
             "search": search_text.job_text(prod.name, user.name if user else None, req.parameters, site.name,
                                            runnum)}
            for runnum, chunk in zip(range(first, last + 1), slices)]
    m.Job.insert_many(rows).execute()
    ids = [j for (j,) in m.Job.select(m.Job.id).where(m.Job.runnum.between(first, last))
           .order_by(m.Job.runnum).tuples()]
    m.Attempt.insert_many([{"job": j, "number": 1} for j in ids]).execute()
    log.info("request %d: follow-up stage %s prepared as %d job(s) over %d file(s)", req.id, rule["template"],
             len(ids), len(files))
    return ids


def stage_payload(job, req, description):
    """A stage job's description, from its request's: the stage's template as its one step, the
    stage's output directory and patterns (its files are its input slice: splitting.job_input)."""
    from .sessions import resolved_steps
    rule = req.followup
    description["payload"].pop("module", None)
    description["payload"]["steps"] = resolved_steps(job.session, [{"template": job.stage, "parameters": {}}])
    description["output"].update(lfn_dir=f"{req.output_lfn.rstrip('/')}/{job.stage}",
                                 patterns=list(rule.get("patterns") or DEFAULT_PATTERNS) if rule else list(DEFAULT_PATTERNS))
    return description


def submit_due(settings, base_url, backends=None):
    """Submit the prepared stage jobs (the batch poller calls this): each claimed by this process, then
    handed to the backend of its request's last job (only those of `backends`, when given). Returns
    the ids submitted."""
    from . import batch
    if not base_url:      # a cron's `sbk poll` without SBK_PUBLIC_URL: the descriptions would name no server
        log.warning("follow-up stage jobs may be due but no server URL is known for their descriptions: "
                    "set SBK_PUBLIC_URL")
        return []
    with db.connection():
        due = list(m.Job.select(m.Job.id, m.Job.request).where(
            (m.Job.stage != "") & (m.Job.status == Status.PREPARED.value) & m.Job.gjid.is_null()
            & m.Job.backend.is_null()).order_by(m.Job.id).limit(1000).tuples())
    by_backend = {}
    for job_id, request_id in due:
        name = _backend_of(request_id)
        if not name or (backends is not None and name not in backends):
            continue
        with db.write_transaction():
            # the claim is a lease (server/retries.py): killed before the hand-off, the job is
            # submitted by a later poll once it lapses, not left prepared and claimed for good
            claimed = m.Job.update(backend=name, retry_at=time.time() + retries.SUBMIT_LEASE_S).where(
                (m.Job.id == job_id) & m.Job.backend.is_null() & (m.Job.status == Status.PREPARED.value)).execute()
        if claimed:
            by_backend.setdefault(name, []).append(job_id)
    submitted = []
    for name, ids in by_backend.items():
        reply = batch.submit_jobs(ids, name, base_url, settings)
        submitted.extend(reply["submitted"])
        for error in reply.get("errors", []):
            log.warning("follow-up stage jobs not submitted through %s: %s", name, error)
        # a refused bunch stays prepared: unclaimed, the next poll tries again
        left = [j for j in ids if j not in reply["submitted"]]
        if left:
            with db.write_transaction():
                m.Job.update(backend=None, retry_at=None).where(m.Job.id.in_(left) & (m.Job.status == Status.PREPARED.value)
                                                 & m.Job.gjid.is_null()).execute()
    return submitted


def _backend_of(request_id):
    last = (m.Job.select(m.Job.backend).where((m.Job.request == request_id) & (m.Job.stage == "")
                                              & m.Job.backend.is_null(False))
            .order_by(m.Job.finished_at.desc(nulls="LAST")).first())
    return last.backend if last else None


def run_due(settings, base_url, backends=None):
    """The poller's pass: prepare the stages whose condition holds (ends the server decided), then
    submit what is prepared (through `backends` only, when given)."""
    with db.connection():
        # only the requests whose stage has no jobs yet (one indexed EXISTS each): a stage started
        # or done is not looked at again at every poll
        staged = m.Job.select(m.Job.id).where((m.Job.request == m.Request.id) & (m.Job.stage != ""))
        waiting = [r for (r,) in m.Request.select(m.Request.id).where(
            (m.Request.followup != {}) & ~pw.fn.EXISTS(staged)).tuples()]
    for request_id in waiting:
        try:
            after_job_end(request_id)
        except Exception:      # one request's trouble must not stop the others' stages
            log.exception("request %d: its follow-up stage could not be prepared", request_id)
    return submit_due(settings, base_url, backends)
