"""People: who am I, statistics per session and user and per site, and activities."""
from flask import Blueprint, jsonify

from .. import auth
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
    per_user = m.Job.select(m.Session.name, m.User.name, m.fn.COUNT(m.Job.id), m.fn.SUM(m.Job.events),
                            m.fn.SUM(m.Job.wct)).join(m.Session).switch(m.Job).join(m.User, m.JOIN.LEFT_OUTER)
    user = query_text("user", 64)
    if user:
        per_user = per_user.where(m.User.name == user)
    per_user = per_user.group_by(m.Session.name, m.User.name).order_by(m.Session.name, m.User.name)
    per_site = {}
    for site, status, count in (m.Job.select(m.Site.name, m.Job.status, m.fn.COUNT(m.Job.id)).join(m.Site)
                                .group_by(m.Site.name, m.Job.status).tuples()):
        per_site.setdefault(site, {})[status] = count
    return jsonify({
        "sessions": [{"session": session, "user": name, "jobs": jobs, "events": int(events or 0),
                      "wct": float(wct or 0.0)} for session, name, jobs, events, wct in per_user.tuples()],
        "sites": [{"site": site, "jobs": counts} for site, counts in sorted(per_site.items())],
    })


@bp.get("/activities")
@auth.require("monitoring")
def activities():
    query = m.Activity.select(m.Activity, m.User).join(m.User, m.JOIN.LEFT_OUTER)
    user = query_text("user", 64)
    if user:
        query = query.where(m.User.name == user)
    limit = query_int("limit", 10, lo=1, hi=1000)
    rows = query.order_by(m.Activity.time.desc(), m.Activity.id.desc()).limit(limit)
    return jsonify({"activities": [
        {"time": m.iso(a.time), "type": a.kind, "user": a.user.name if a.user_id else None,
         "session": a.session, "info": a.info, "ref": a.ref} for a in rows]})
