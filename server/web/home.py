"""Home: who you are, your sessions' statistics and your last activities (seed 000's HOME)."""
from flask import g, render_template, url_for

from .. import models as m
from ..api.params import query_int
from ..api.people import last_activities, session_stats
from . import bp


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
