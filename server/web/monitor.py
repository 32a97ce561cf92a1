"""The job monitor (seed 000's JOB MONITOR), a job's details with its kill and resubmit, its stored
log, and the error-codes legend. The queries and actions are server/monitor.py's, as for the API."""
from dataclasses import dataclass

from flask import Response, flash, redirect, render_template, request, url_for

from shared.errors import CODES, lookup

from .. import jobs, monitor
from .. import models as m
from ..api.params import query_int, query_text
from ..backends import BACKENDS
from ..errors import ApiError, bad_request
from . import bp
from .forms import Field, action, attempt, form_body
from .layout import can
from .logtext import log_members
from .signin import local_target

PER_PAGE_CHOICES = (10, 25, 50, 100)
# Auto-refresh of the table: (seconds, label); 0 is off.
REFRESH_CHOICES = ((0, "off"), (30, "30 s"), (60, "1 min"))
# The seed's status shortcuts in the filter form.
STATUS_SHORTCUTS = {"all": monitor.STATUSES, "none": (), "pending": ("prepared", "submitted", "running"),
                    "notdone": tuple(s for s in monitor.STATUSES if s != "done")}
RESUBMIT_FIELDS = (Field("backend"),)
# The page's sorts: keyset sorts an index serves in both directions (events has none: a sort of every
# job, 95-140 ms at 1M on SQLite; the API still sorts by it).
PAGE_SORTS = ("runnum", "id", "status", "site", "prepared_at")


@dataclass(frozen=True)
class Column:
    key: str
    label: str
    sort: str = ""      # the PAGE_SORTS key, empty when the column does not sort


def monitor_columns():
    """The job monitor's columns: fixed ones around the sessions' job parameters."""
    names = []
    for (name,) in m.JobParameter.select(m.JobParameter.name).order_by(
            m.JobParameter.position, m.JobParameter.id).tuples():
        if name not in names:
            names.append(name)
    return ([Column("runnum", "runnum", "runnum"), Column("events", "events")]
            + [Column(f"param-{n}", n) for n in names]
            + [Column("status", "Status", "status"), Column("step", "Step"), Column("gjid", "GJid"),
               Column("site", "Site", "site"), Column("user", "User"), Column("production", "Production"),
               Column("prepared", "Prepared", "prepared_at"), Column("wct", "wct (s)")])


def monitor_url(**changes):
    """The job monitor's URL with this request's query string, some parameters replaced (None drops one);
    the table fragment and the actions link back to the page through it."""
    args = request.args.to_dict(flat=False)
    for key, value in changes.items():
        args.pop(key, None)
        if value is not None:
            args[key] = value
    return url_for("web.job_monitor", **args)


def table_context():
    """What the job table shows (page and fragment): one keyset page and the links around it."""
    sort = query_text("sort", 32) or "-runnum"
    if sort.lstrip("-") not in PAGE_SORTS:
        raise bad_request(f"query parameter 'sort' must be one of {', '.join(PAGE_SORTS)} "
                          "(prefix - for descending)")
    plan = monitor.monitor_query(sort)
    per_page = query_int("per_page", 25, lo=1, hi=max(PER_PAGE_CHOICES))
    refresh = query_int("refresh", 0, lo=0, hi=3600)
    if refresh not in dict(REFRESH_CHOICES):
        raise bad_request(f"query parameter 'refresh' must be one of {', '.join(str(s) for s, _ in REFRESH_CHOICES)}")
    page = monitor.keyset_page(plan, per_page, after=query_text("after", 512),
                               at_end=request.args.get("end") == "1", label=query_int("page", 1, lo=1, hi=10 ** 9))
    columns = monitor_columns()
    shown = set(request.args.getlist("col")) if request.args.get("cols") else {c.key for c in columns}
    return dict(plan=plan, page=page, rows=page.rows, total=plan.total, estimated=plan.estimated,
                per_page=per_page, sort=sort, columns=columns, shown=shown, refresh=refresh,
                monitor_url=monitor_url, may=monitor.may, actor=can(*monitor.SUBMITTERS))


def render_monitor(error=None, status=200):
    production = request.args.get("production")
    requests = m.Request.select(m.Request, m.Production).join(m.Production).order_by(m.Request.id)
    if production:
        requests = requests.where(m.Production.name == production)
    parameters = monitor.parameter_choices()
    chosen_params = {name: set(request.args.getlist(monitor.PARAM_PREFIX + name)) for name, _ in parameters}
    return render_template(
        "jobs.html", **table_context(), error=error,
        per_page_choices=PER_PAGE_CHOICES, refresh_choices=REFRESH_CHOICES, statuses=monitor.STATUSES,
        shortcuts=STATUS_SHORTCUTS, parameters=parameters, chosen_params=chosen_params,
        chosen_statuses=set(request.args.getlist("status")), chosen_sites=set(request.args.getlist("site")),
        users=[u.name for u in m.User.select(m.User.name).order_by(m.User.name)],
        productions=[p.name for p in m.Production.select(m.Production.name).order_by(m.Production.name)],
        # every code the table knows: a DISTINCT over the jobs would read all of them (1M: ~0.5 s)
        requests=list(requests), codes=[(c, lookup(c).message) for c in sorted(CODES)],
        backends=sorted(BACKENDS),
        sites=[s.name for s in m.Site.select(m.Site.name).order_by(m.Site.name)]), status


@bp.get("/jobs")
def job_monitor():
    return render_monitor()


@bp.get("/jobs/table")
def job_table():
    """The table alone (total, rows, pager): what the auto-refresh reloads."""
    return render_template("_jobs_table.html", **table_context())


@bp.post("/jobs/resubmit")
@action(*monitor.SUBMITTERS)
def resubmit_matching():
    """The monitor's 'Resubmit the failed jobs matching these filters' (filters in the query string)."""
    reply, error = attempt(monitor.resubmit_matching, form_body(RESUBMIT_FIELDS))
    if error is not None:
        return render_monitor(error, error.status_code)
    refused = f", {len(reply['refused'])} refused" if reply["refused"] else ""
    flash(f"{reply['total']} failed jobs resubmitted{refused}.")
    return redirect(monitor_url())


def render_job(job_id, error=None, status=200):
    details = jobs.job_details(jobs.get_job(job_id))
    log = m.JobLog.select().where(m.JobLog.job == job_id).order_by(m.JobLog.attempt.desc()).first()
    members = log_members(bytes(log.data)) if log is not None else []
    return render_template("job.html", job=details, transfers=(details["report"] or {}).get("transfers", []),
                           log=log, members=members, error=error, may=monitor.may,
                           actor=can(*monitor.SUBMITTERS), backends=sorted(BACKENDS)), status


@bp.get("/jobs/<id:job_id>")
def job_detail(job_id):
    return render_job(job_id)


def _after_action(job_id, reply, error, done):
    """Back where the button was (`next`, this site only) with a flash; a refusal: the job's page with its reason."""
    if error is not None:
        return render_job(job_id, error, error.status_code)
    flash(done(reply))
    return redirect(local_target(request.form.get("next")) if request.form.get("next")
                    else url_for("web.job_detail", job_id=job_id))


@bp.post("/jobs/<id:job_id>/kill")
@action(*monitor.SUBMITTERS)
def kill_job(job_id):
    jobs.get_job(job_id)   # 404 before anything
    reply, error = attempt(monitor.kill, job_id)
    return _after_action(job_id, reply, error, lambda r: (
        f"Job {job_id}: kill sent to attempt {r['attempt']}." if r.get("command") == "kill"
        else f"Job {job_id} killed before it started."))


@bp.post("/jobs/<id:job_id>/resubmit")
@action(*monitor.SUBMITTERS)
def resubmit_job(job_id):
    jobs.get_job(job_id)
    reply, error = attempt(monitor.resubmit, job_id, form_body(RESUBMIT_FIELDS))
    return _after_action(job_id, reply, error, lambda r: f"Job {job_id} resubmitted: attempt {r['attempt']}.")


@bp.get("/jobs/<id:job_id>/log/<id:attempt>")
def job_log(job_id, attempt):
    row = m.JobLog.get_or_none((m.JobLog.job == job_id) & (m.JobLog.attempt == attempt))
    if row is None:
        raise ApiError(404, "not-found", f"job {job_id} has no log stored for attempt {attempt}")
    runnum = jobs.get_job(job_id).runnum
    return Response(bytes(row.data), mimetype="application/gzip", headers={
        "Content-Disposition": f"attachment; filename=job-{runnum}-{attempt}.tgz"})


@bp.get("/error-codes")
def error_codes():
    """The legend of the three-digit codes (shared/errors.py's one table, as GET /api/v1/error-codes)."""
    return render_template("error_codes.html", codes=[CODES[c] for c in sorted(CODES)])
