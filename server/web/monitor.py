"""The job monitor (seed 000's JOB MONITOR), a job's details and its stored log."""
from dataclasses import dataclass

from flask import Response, render_template, request

from shared.errors import CODES, lookup

from .. import jobs
from .. import models as m
from ..api.jobs import STATUSES, job_rows, monitor_query
from ..api.params import query_int, query_text
from ..errors import ApiError
from . import bp
from .logtext import log_members

PER_PAGE_CHOICES = (10, 25, 50, 100)
# The seed's status shortcuts in the filter form.
STATUS_SHORTCUTS = {"all": STATUSES, "none": (), "pending": ("prepared", "submitted", "running"),
                    "notdone": tuple(s for s in STATUSES if s != "done")}


@dataclass(frozen=True)
class Column:
    key: str
    label: str
    sort: str = ""      # the SORTS key, empty when the column does not sort


def monitor_columns():
    """The job monitor's columns: fixed ones around the sessions' job parameters."""
    names = []
    for (name,) in m.JobParameter.select(m.JobParameter.name).order_by(
            m.JobParameter.position, m.JobParameter.id).tuples():
        if name not in names:
            names.append(name)
    return ([Column("runnum", "runnum", "runnum"), Column("events", "events", "events")]
            + [Column(f"param-{n}", n) for n in names]
            + [Column("status", "Status", "status"), Column("step", "Step"), Column("gjid", "GJid"),
               Column("site", "Site", "site"), Column("user", "User"), Column("production", "Production"),
               Column("prepared", "Prepared", "prepared_at"), Column("wct", "wct (s)", "wct")])


@bp.get("/jobs")
def job_monitor():
    sort = query_text("sort", 32) or "-runnum"
    cond, order, total, estimated = monitor_query(sort)
    page = query_int("page", 1, lo=1, hi=10 ** 6)
    per_page = query_int("per_page", 25, lo=1, hi=max(PER_PAGE_CHOICES))
    rows = job_rows(cond, order, page, per_page)
    columns = monitor_columns()
    shown = set(request.args.getlist("col")) if request.args.get("cols") else {c.key for c in columns}
    production = request.args.get("production")
    requests = m.Request.select(m.Request, m.Production).join(m.Production).order_by(m.Request.id)
    if production:
        requests = requests.where(m.Production.name == production)
    # every code the table knows: a DISTINCT over the jobs would read all of them (1M: ~0.5 s)
    codes = sorted(CODES)
    return render_template(
        "jobs.html", rows=rows, total=total, estimated=estimated, page=page, per_page=per_page, sort=sort,
        pages=max((total + per_page - 1) // per_page, 1), columns=columns, shown=shown,
        per_page_choices=PER_PAGE_CHOICES, statuses=STATUSES, shortcuts=STATUS_SHORTCUTS,
        chosen_statuses=set(request.args.getlist("status")), chosen_sites=set(request.args.getlist("site")),
        users=[u.name for u in m.User.select(m.User.name).order_by(m.User.name)],
        productions=[p.name for p in m.Production.select(m.Production.name).order_by(m.Production.name)],
        requests=list(requests), codes=[(c, lookup(c).message) for c in codes],
        sites=[s.name for s in m.Site.select(m.Site.name).order_by(m.Site.name)])


@bp.get("/jobs/<id:job_id>")
def job_detail(job_id):
    details = jobs.job_details(jobs.get_job(job_id))
    log = m.JobLog.select().where(m.JobLog.job == job_id).order_by(m.JobLog.attempt.desc()).first()
    members = log_members(bytes(log.data)) if log is not None else []
    return render_template("job.html", job=details, transfers=(details["report"] or {}).get("transfers", []),
                           log=log, members=members)


@bp.get("/jobs/<id:job_id>/log/<int:attempt>")
def job_log(job_id, attempt):
    row = m.JobLog.get_or_none((m.JobLog.job == job_id) & (m.JobLog.attempt == attempt))
    if row is None:
        raise ApiError(404, "not-found", f"job {job_id} has no log stored for attempt {attempt}")
    runnum = jobs.get_job(job_id).runnum
    return Response(bytes(row.data), mimetype="application/gzip", headers={
        "Content-Disposition": f"attachment; filename=job-{runnum}-{attempt}.tgz"})
