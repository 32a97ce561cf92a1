"""Home: who you are, your auto-sub switch, your sessions' statistics with the job graph per session, and
your last activities (seed 000's HOME). Counts come from the job counters (server/counts.py)."""
import dataclasses

from flask import flash, g, redirect, render_template, request, url_for

from .. import people
from ..api.params import query_int
from . import bp
from .charts import site_status_chart
from .forms import Field, action, attempt, form_body

AUTO_SUB_FIELDS = (Field("auto_sub", "bool"),)


def session_chart():
    """Every user's jobs by status, one bar a session."""
    return dataclasses.replace(site_status_chart(people.session_jobs()), title="Jobs by status for each session")


def render_home(error=None):
    user = g.principal.user
    limit = query_int("last", 10, lo=1, hi=1000)
    activities = [(a, activity_link(a)) for a in people.last_activities(user.name, limit)]
    return render_template("home.html", stats=people.session_stats(user.name), activities=activities,
                           limit=limit, groups=people.user_groups(user), privileges=sorted(g.principal.privileges),
                           chart=session_chart(), error=error)


@bp.get("/")
def home():
    return render_home()


@bp.post("/home/auto-sub")
@action(*people.SUBMITTERS)
def set_auto_sub():
    """The auto-sub switch: the same core as PATCH /me, with the same body."""
    _, error = attempt(people.update_me, g.principal, form_body(AUTO_SUB_FIELDS))
    if request.headers.get("HX-Request"):   # htmx swaps the switch alone
        return render_template("_auto_sub.html", error=error), error.status_code if error else 200
    if error:
        return render_home(error), error.status_code
    flash(f"auto-sub {'enabled' if g.principal.user.auto_sub else 'disabled'}")
    return redirect(url_for("web.home"))


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
