"""The pages: home, job monitor, job detail and log, productions, requests, sites, charts."""
from dataclasses import dataclass

from flask import Response, g, render_template, request, url_for
from werkzeug.datastructures import MultiDict

from shared.errors import CODES, lookup

from .. import jobs
from .. import models as m
from ..api.jobs import STATUSES, job_rows, monitor_query
from ..api.params import query_int, query_text
from ..api.people import jobs_by_site, last_activities, session_stats
from ..api.productions import get_production, production_dict
from ..api.requests import get_request, request_dict
from ..api.sites import get_site, site_dict
from ..errors import ApiError, as_api_error
from . import bp, charts
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


@bp.app_template_filter("num")
def format_count(value):
    return "-" if value is None else f"{value:,}"


@bp.app_template_filter("seconds")
def format_seconds(value):
    return "-" if value is None else f"{value:.2f}"


@bp.app_template_filter("when")
def format_time(value):
    """A stored time as 'YYYY-MM-DD HH:MM:SS' UTC."""
    if value is None:
        return "-"
    text = m.iso(value) if not isinstance(value, str) else value
    return text.replace("T", " ").rstrip("Z")


@bp.app_template_global()
def url_with(**changes):
    """This page's URL with some query parameters replaced (None drops one)."""
    args = MultiDict(request.args)
    for key, value in changes.items():
        args.poplist(key)
        if value is not None:
            args.setlist(key, value if isinstance(value, (list, tuple)) else [value])
    return url_for(request.endpoint, **(request.view_args or {}), **args.to_dict(flat=False))


@bp.errorhandler(Exception)
def error_page(error):
    """Every failure under the pages as an HTML page with the API's status and one sentence."""
    api_error = as_api_error(error)
    return render_template("error.html", error=api_error), api_error.status_code


@bp.get("/")
def home():
    user = g.principal.user
    limit = query_int("last", 10, lo=1, hi=1000)
    activities = [(a, activity_link(a)) for a in last_activities(user.name, limit)]
    groups = sorted(x.name for x in m.Group.select().join(m.UserGroup).where(m.UserGroup.user == user))
    return render_template("home.html", stats=session_stats(user.name), activities=activities, limit=limit,
                           groups=groups, privileges=sorted(g.principal.privileges))


def activity_link(activity):
    """Where an activity's "view details" goes: its jobs in the monitor, its request or production."""
    ref = activity.ref or {}
    if activity.kind == "job-submission" and ref.get("runnums"):
        runnums = [n for pair in ref["runnums"] for n in pair]
        return url_for("web.job_monitor", production=ref.get("production"), request=ref.get("request"),
                       runnum_from=min(runnums), runnum_to=max(runnums))
    if ref.get("request"):
        return url_for("web.request_detail", request_id=ref["request"])
    if ref.get("production"):
        return url_for("web.production_detail", name=ref["production"])
    return None


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


@bp.get("/productions")
def productions():
    show_test = request.args.get("test") == "1"
    query = m.Production.select().order_by(m.Production.name)
    if not show_test:
        query = query.where(m.Production.is_test == False)  # noqa: E712  (peewee builds SQL from ==)
    return render_template("productions.html", productions=[production_dict(p) for p in query],
                           show_test=show_test)


@bp.get("/productions/<name>")
def production_detail(name):
    production = get_production(name)
    requests = m.Request.select().where(m.Request.production == production).order_by(m.Request.id)
    return render_template("production.html", production=production_dict(production),
                           requests=[request_dict(r) for r in requests])


@bp.get("/requests/<id:request_id>")
def request_detail(request_id):
    return render_template("request.html", req=request_dict(get_request(request_id)))


@bp.get("/sites")
def sites():
    per_site = jobs_by_site()
    return render_template("sites.html", sites=[(site_dict(s), per_site.get(s.name, {}))
                                                for s in m.Site.select().order_by(m.Site.name)])


@bp.get("/sites/<name>")
def site_detail(name):
    site = get_site(name)
    per_production = {p: (n, int(e or 0)) for p, n, e in (
        m.Job.select(m.Job.production, m.fn.COUNT(m.Job.id), m.fn.SUM(m.Job.events))
        .where(m.Job.site == site).group_by(m.Job.production).tuples())}
    productions = {p.name: p.id for p in m.Production.select(m.Production.id, m.Production.name)}
    return render_template("site.html", site=site_dict(site, full=True), per_production=per_production,
                           production_ids=productions)


@bp.get("/charts")
def charts_page():
    days = query_int("days", 30, lo=1, hi=366)
    return render_template("charts.html", days=days,
                           status_chart=charts.site_status_chart(jobs_by_site()),
                           events_chart=charts.events_chart(charts.events_by_day(days)))
