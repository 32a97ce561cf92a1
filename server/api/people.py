"""People: who am I, statistics per session and user and per site, and activities."""
from flask import Blueprint, jsonify

from .. import auth, counts
from .. import models as m
from .params import query_int, query_text

bp = Blueprint("people", __name__)


@bp.get("/me")
def me():
    principal = auth.current_principal()
    groups = [g.name for g in m.Group.select().join(m.UserGroup).where(m.UserGroup.user == principal.user)]
    return jsonify({"name": principal.user.name, "groups": sorted(groups),
                    "privileges": sorted(principal.privileges)})


@bp.get("/stats")
@auth.require("monitoring")
def stats():
    per_user = session_stats(query_text("user", 64))
    per_site = jobs_by_site()
    return jsonify({
        "sessions": per_user,
        "sites": [{"site": site, "jobs": jobs} for site, jobs in sorted(per_site.items())],
    })


def session_stats(user=None):
    """Jobs launched, events generated and total wct per session and user (counts.session_stats)."""
    return counts.session_stats(user)


def jobs_by_site():
    """{site: {status: number of jobs}}."""
    return counts.jobs_by_site()


def last_activities(user=None, limit=10):
    """The newest `limit` activities (of one user when named), newest first."""
    query = m.Activity.select(m.Activity, m.User).join(m.User, m.JOIN.LEFT_OUTER)
    if user:
        query = query.where(m.User.name == user)
    return query.order_by(m.Activity.time.desc(), m.Activity.id.desc()).limit(limit)


@bp.get("/activities")
@auth.require("monitoring")
def activities():
    rows = last_activities(query_text("user", 64), query_int("limit", 10, lo=1, hi=1000))
    return jsonify({"activities": [
        {"time": m.iso(a.time), "type": a.kind, "user": a.user.name if a.user_id else None,
         "session": a.session, "info": a.info, "ref": a.ref} for a in rows]})
